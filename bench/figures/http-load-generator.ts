/**
 * The HTTP figure's load generator, run as its own `node` process (bench/figures/http.ts forks it):
 * a server under test does not share its event loop, heap or garbage collector with its clients.
 * One generator serves both sides, with the same code: on `connect` it opens `sessions` real SDK
 * clients (`StreamableHTTPClientTransport`) to a URL; on `run` each of them calls `get_sift_score`
 * in a loop, and the latencies (ms, measured here, around `callTool`) go back to the parent as JSON.
 *
 * Messages from the parent: {type:'connect', side, url, token?, sessions}, {type:'run', side, calls},
 * {type:'close'}. Answers: {type:'connected'}, {type:'ran', latencies, seconds}, {type:'closed'},
 * or {type:'error', message}.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { callScores } from './load.ts';

export type GeneratorRequest =
  | { type: 'connect'; side: string; url: string; token?: string; sessions: number }
  | { type: 'run'; side: string; calls: number }
  | { type: 'close' };

export type GeneratorAnswer =
  | { type: 'connected' }
  | { type: 'ran'; latencies: number[]; seconds: number }
  | { type: 'closed' }
  | { type: 'error'; message: string };

const sides = new Map<string, Client[]>();

async function connect(url: string, token: string | undefined, sessions: number): Promise<Client[]> {
  return Promise.all(
    Array.from({ length: sessions }, async () => {
      const client = new Client({ name: 'bench', version: '0' });
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
      await client.listTools();
      return client;
    }),
  );
}

async function run(clients: Client[], callsPerSession: number) {
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(clients.map((client) => callScores(client, callsPerSession, latencies)));
  return { latencies, seconds: (performance.now() - start) / 1000 };
}

async function handle(request: GeneratorRequest): Promise<GeneratorAnswer> {
  switch (request.type) {
    case 'connect':
      sides.set(request.side, await connect(request.url, request.token, request.sessions));
      return { type: 'connected' };
    case 'run': {
      const clients = sides.get(request.side);
      if (!clients) throw new Error(`no clients for ${request.side}`);
      return { type: 'ran', ...(await run(clients, request.calls)) };
    }
    case 'close':
      await Promise.all([...sides.values()].flat().map((c) => c.close()));
      sides.clear();
      return { type: 'closed' };
  }
}

process.on('message', (request: GeneratorRequest) => {
  handle(request)
    .catch((error: unknown): GeneratorAnswer => ({
      type: 'error',
      message: error instanceof Error ? error.message : String(error),
    }))
    .then((answer) => {
      process.send?.(answer);
      if (answer.type === 'closed') process.disconnect();
    })
    .catch(() => process.exit(1));
});
