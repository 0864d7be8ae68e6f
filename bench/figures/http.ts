/**
 * MCP over Streamable HTTP, 16 sessions: 16 real SDK clients, each calling `get_sift_score` in a
 * loop, against `fraudgate serve --http` (in process: auth, Host/Origin checks, sessions, metrics,
 * logging, the pipeline; rate limits raised out of the way) and against a bare SDK Streamable HTTP
 * server (bench/baselines/bare-http-server.ts). The figure is calls/s; p50 and p99 latency beside it.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { quantile, type Figure, type Measurement } from '../harness.ts';
import { startBareHttpServer } from '../baselines/bare-http-server.ts';
import { openBenchRuntime } from './bench-runtime.ts';
import { startHttpServer } from '../../src/transports/http.ts';

const SESSIONS = 16;
const TOKEN = 'bench-dev-token-0123456789abcdef';

async function connectAll(url: string, token?: string): Promise<Client[]> {
  return Promise.all(
    Array.from({ length: SESSIONS }, async () => {
      const client = new Client({ name: 'bench', version: '0' });
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
      await client.listTools();
      return client;
    }),
  );
}

async function load(clients: Client[], callsPerSession: number): Promise<Measurement> {
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < callsPerSession; i += 1) {
        const t = performance.now();
        const r = await client.callTool({
          name: 'get_sift_score',
          arguments: { user_id: 'sandbox-high-risk' },
        });
        latencies.push(performance.now() - t);
        if (r.isError) throw new Error(`get_sift_score failed: ${JSON.stringify(r.content)}`);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const p50 = quantile(latencies, 0.5);
  const p99 = quantile(latencies, 0.99);
  return { value: latencies.length / seconds, extra: { p50_ms: p50, p99_ms: p99, p99_over_p50: p99 / p50 } };
}

export const http: Figure = {
  id: 'http_calls_per_s',
  title: 'HTTP, 16 sessions, calls/s',
  unit: 'calls/s',
  better: 'higher',
  baseline: 'bare SDK Streamable HTTP (stateful)',
  target: '≥ 1.0× baseline, p99 ≤ 2× p50',
  met: (r) => r.ratio !== null && r.ratio >= 1 && (r.fraudgate.extra.p99_over_p50 ?? Infinity) <= 2,
  async open({ quick }) {
    const callsPerSession = quick ? 40 : 150;
    const bench = await openBenchRuntime();
    const handle = await startHttpServer(bench.runtime, { port: 0, devToken: TOKEN });
    const bare = await startBareHttpServer({
      baseUrl: bench.config.sift.base_url,
      apiKey: bench.sandbox.secrets.siftApiKey ?? '',
    });
    const governed = await connectAll(handle.mcpUrl, TOKEN);
    const baseline = await connectAll(bare.url);
    return {
      fraudgate: () => load(governed, callsPerSession),
      baseline: () => load(baseline, callsPerSession),
      async close() {
        await Promise.all([...governed, ...baseline].map((c) => c.close()));
        await bare.close();
        await handle.close();
        await bench.close();
      },
    };
  },
};
