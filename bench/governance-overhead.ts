/**
 * What governance costs per call: the same Sift score read, N times, (a) straight through the Sift
 * client and (b) through a real MCP client, the server and the full pipeline (authorize, validate,
 * rate limit, audit record with fsync). Both run side by side against the same emulator, in
 * alternating blocks so machine noise hits both; the figure that matters is the ratio.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { tools } from '../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config } from '../src/config.ts';
import { silentLogger } from '../src/logger.ts';
import { openRuntime } from '../src/runtime.ts';
import { startSandbox } from '../src/sandbox/sandbox.ts';
import { createMcpServer } from '../src/server.ts';

export interface OverheadResult {
  calls: number;
  direct_ms_median: number;
  governed_ms_median: number;
  direct_calls_per_s: number;
  governed_calls_per_s: number;
  /** governed median latency / direct median latency. */
  latency_ratio: number;
  added_ms_median: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

export async function measureGovernanceOverhead(calls = 400, block = 50): Promise<OverheadResult> {
  const sandbox = await startSandbox(DEFAULTS);
  const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-'));
  let config: Config = mergeConfig(DEFAULTS, {
    rate_limits: { read: { capacity: 1_000_000, per_minute: 1_000_000 } },
  });
  config = { ...config, ...sandbox.config, data_dir: dataDir, mode: 'sandbox' };
  const runtime = await openRuntime({
    config,
    secrets: { ...sandbox.secrets, auditKey: 'bench' },
    tools,
    logger: silentLogger,
  });
  const server = createMcpServer({
    pipeline: runtime.pipeline,
    principal: { id: 'bench@example.com', kind: 'user', role: 'analyst' },
    logger: silentLogger,
  });
  const client = new Client({ name: 'bench', version: '0' });
  const [a, b] = InMemoryTransport.createLinkedPair();
  await server.connect(b);
  await client.connect(a);

  const direct: number[] = [];
  const governed: number[] = [];
  let directTotal = 0;
  let governedTotal = 0;
  // Warm-up: connections, JIT, SQLite pages.
  for (let i = 0; i < 20; i++) {
    await runtime.clients.sift.getUserScore('sandbox-high-risk');
    await client.callTool({ name: 'get_sift_score', arguments: { user_id: 'sandbox-high-risk' } });
  }
  for (let done = 0; done < calls; done += block) {
    let t0 = performance.now();
    for (let i = 0; i < block; i++) {
      const s = performance.now();
      await runtime.clients.sift.getUserScore('sandbox-high-risk');
      direct.push(performance.now() - s);
    }
    directTotal += performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < block; i++) {
      const s = performance.now();
      const r = await client.callTool({
        name: 'get_sift_score',
        arguments: { user_id: 'sandbox-high-risk' },
      });
      if (r.isError) throw new Error(`governed call failed: ${JSON.stringify(r.content)}`);
      governed.push(performance.now() - s);
    }
    governedTotal += performance.now() - t0;
  }
  await client.close();
  await runtime.close();
  await sandbox.close();
  rmSync(dataDir, { recursive: true, force: true });
  const dm = median(direct);
  const gm = median(governed);
  return {
    calls,
    direct_ms_median: +dm.toFixed(3),
    governed_ms_median: +gm.toFixed(3),
    direct_calls_per_s: Math.round((calls / directTotal) * 1000),
    governed_calls_per_s: Math.round((calls / governedTotal) * 1000),
    latency_ratio: +(gm / dm).toFixed(2),
    added_ms_median: +(gm - dm).toFixed(3),
  };
}

if (import.meta.main) {
  const result = await measureGovernanceOverhead(Number(process.env.BENCH_CALLS ?? 400));
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}
