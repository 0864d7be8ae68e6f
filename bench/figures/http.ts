/**
 * MCP over Streamable HTTP, 16 sessions: 16 real SDK clients, each calling `get_sift_score` in a
 * loop, against `fraudgate serve --http` (in process: auth, Host/Origin checks, sessions, metrics,
 * logging, the pipeline; rate limits raised out of the way) and against a bare SDK Streamable HTTP
 * server (bench/baselines/bare-http-server.ts). The figure is calls/s; p50 and p99 latency beside it.
 *
 * The clients run in a load generator process of their own (./http-load-generator.ts), one
 * process for both sides, the same code and the same client count for each. With the clients in
 * the servers' process, every latency also held the clients' own work: on this 2-core machine the
 * clients' fetch, stream and JSON/zod/ajv parsing were about as much CPU as the server, in the same
 * heap, so the young-generation collections their allocations caused (10–20 ms each, every
 * ~100 ms) stopped the server with all 16 calls in flight, and most of the slowest 2% of calls
 * overlapped one. A server in production does not share its event loop or heap with its clients;
 * measured that way, the tail is the server's. The emulated Sift upstream stays in the servers'
 * process, shared by both sides as before.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { quantile, type Figure, type Measurement } from '../harness.ts';
import { startBareHttpServer } from '../baselines/bare-http-server.ts';
import { openBenchRuntime } from './bench-runtime.ts';
import type { GeneratorAnswer, GeneratorRequest } from './http-load-generator.ts';
import { startHttpServer } from '../../src/transports/http.ts';

const SESSIONS = 16;
const TOKEN = 'bench-dev-token-0123456789abcdef';

/** The load generator process: one request at a time, each answered by one message. */
function startGenerator() {
  const child: ChildProcess = fork(join(import.meta.dirname, 'http-load-generator.ts'), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ask = (request: GeneratorRequest) =>
    new Promise<GeneratorAnswer>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`load generator exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (answer: GeneratorAnswer) => {
        child.off('exit', onExit);
        if (answer.type === 'error') reject(new Error(`load generator: ${answer.message}`));
        else resolve(answer);
      });
      child.send(request);
    });
  return {
    ask,
    async close() {
      if (child.connected) await ask({ type: 'close' });
      await exited;
    },
  };
}

function measurement(answer: GeneratorAnswer): Measurement {
  if (answer.type !== 'ran') throw new Error(`unexpected answer ${answer.type}`);
  const { latencies, seconds } = answer;
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
    const calls = quick ? 40 : 150;
    const bench = await openBenchRuntime();
    const handle = await startHttpServer(bench.runtime, { port: 0, devToken: TOKEN });
    const bare = await startBareHttpServer({
      baseUrl: bench.config.sift.base_url,
      apiKey: bench.sandbox.secrets.siftApiKey ?? '',
    });
    const generator = startGenerator();
    await generator.ask({
      type: 'connect',
      side: 'fraudgate',
      url: handle.mcpUrl,
      token: TOKEN,
      sessions: SESSIONS,
    });
    await generator.ask({ type: 'connect', side: 'baseline', url: bare.url, sessions: SESSIONS });
    return {
      fraudgate: async () => measurement(await generator.ask({ type: 'run', side: 'fraudgate', calls })),
      baseline: async () => measurement(await generator.ask({ type: 'run', side: 'baseline', calls })),
      async close() {
        await generator.close();
        await bare.close();
        await handle.close();
        await bench.close();
      },
    };
  },
};
