/**
 * A governed read against the bare SDK: `get_sift_score` through a real MCP client over the SDK's
 * in-memory transport, (a) fraudgate's server and full pipeline (authorize, validate, rate limit,
 * audit record) and (b) a bare `McpServer` tool making the same undici call
 * (bench/baselines/bare-read-server.ts). Same emulator, same process; calls are sequential, so
 * the figure is latency, p50 per repetition.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { quantile, type Figure, type Measurement } from '../harness.ts';
import { createBareReadServer } from '../baselines/bare-read-server.ts';
import { openBenchRuntime } from './bench-runtime.ts';
import { callScores } from './load.ts';
import { silentLogger } from '../../src/logger.ts';
import { createMcpServer } from '../../src/server.ts';

async function connect(server: McpServer): Promise<Client> {
  const client = new Client({ name: 'bench', version: '0' });
  const [a, b] = InMemoryTransport.createLinkedPair();
  await server.connect(b);
  await client.connect(a);
  await client.listTools();
  return client;
}

/** Sequential `get_sift_score` calls: p50 latency, with p99 and calls/s beside it (also the ledger figure's read). */
export async function timeCalls(client: Client, calls: number): Promise<Measurement> {
  const latencies: number[] = [];
  const start = performance.now();
  await callScores(client, calls, latencies);
  const seconds = (performance.now() - start) / 1000;
  return {
    value: quantile(latencies, 0.5),
    extra: { p99_ms: quantile(latencies, 0.99), calls_per_s: calls / seconds },
  };
}

export const read: Figure = {
  id: 'read_p50_ms',
  title: 'governed read `get_sift_score`, in-process MCP, p50',
  unit: 'ms',
  better: 'lower',
  baseline: 'bare McpServer tool, same undici call',
  target: '≤ 1.10× baseline',
  met: (r) => r.ratio !== null && r.ratio <= 1.1,
  async open({ quick }) {
    const calls = quick ? 200 : 1000;
    const bench = await openBenchRuntime();
    const governed = await connect(
      createMcpServer({
        pipeline: bench.runtime.pipeline,
        principal: { id: 'bench@example.com', kind: 'user', role: 'analyst' },
        logger: silentLogger,
      }),
    );
    const bare = createBareReadServer({
      baseUrl: bench.config.sift.base_url,
      apiKey: bench.sandbox.secrets.siftApiKey ?? '',
    });
    const bareClient = await connect(bare.server);
    // The harness warms each side with one run, but fraudgate's larger code keeps getting faster
    // (JIT) well past it, so the side timed first paid for its own warm-up (as the ledger's read
    // figure found). Both sides warm alike, in turns, before the timed rounds.
    for (let i = 0; i < 5; i += 1) {
      await timeCalls(governed, calls);
      await timeCalls(bareClient, calls);
    }
    return {
      fraudgate: () => timeCalls(governed, calls),
      baseline: () => timeCalls(bareClient, calls),
      async close() {
        await governed.close();
        await bareClient.close();
        await bare.close();
        await bench.close();
      },
    };
  },
};
