/**
 * stdio start-up order (src/transports/stdio.ts): `initialize` is answered while the runtime
 * opens, every other message waits for it, a configuration error is refused before anything is
 * answered, and a runtime that cannot open ends the process with one line and exit 1 without
 * answering any call. A message handler that throws is reported to onerror and the next line still
 * arrives.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpeningGate, StdioTransport } from '../../src/transports/stdio.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-stdio-start-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `fraudgate serve` over stdio as a client transport that also reports the exit code and stderr. */
function spawnServe(env: Record<string, string>) {
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn(process.execPath, [CLI, 'serve'], {
    env: { PATH: process.env.PATH ?? '', HOME: dir, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('exit', (code) => setImmediate(() => resolve({ code, stderr }))),
  );
  const buffer = new ReadBuffer();
  /** Every message the server wrote, in order (answers to raw lines too, which the client ignores). */
  const received: JSONRPCMessage[] = [];
  const transport: Transport = {
    async start() {
      child.stdout.on('data', (chunk: Buffer) => {
        buffer.append(chunk);
        for (let message = buffer.readMessage(); message; message = buffer.readMessage()) {
          received.push(message);
          transport.onmessage?.(message);
        }
      });
      child.on('exit', () => transport.onclose?.());
    },
    async send(message: JSONRPCMessage) {
      child.stdin.write(serializeMessage(message));
    },
    async close() {
      child.stdin.end();
    },
  };
  return {
    transport,
    exited,
    received,
    /** Write one line to the server's stdin as it is, bypassing the client. */
    writeLine: (line: string) => child.stdin.write(`${line}\n`),
    kill: () => child.kill(),
  };
}

describe('fraudgate serve over stdio, start-up', { timeout: 90_000 }, () => {
  it('answers initialize while the store opens; when it cannot, no call is answered and it exits 1 with one line', async () => {
    writeFileSync(
      join(dir, 'pg.json'),
      JSON.stringify({
        store: 'postgres',
        store_postgres: { startup_timeout_ms: 3_000 },
        rate_limits: { store: 'memory' },
      }),
    );
    const serve = spawnServe({
      FRAUDGATE_DATA_DIR: join(dir, 'pg-data'),
      FRAUDGATE_CONFIG: join(dir, 'pg.json'),
      FRAUDGATE_POSTGRES_URL: 'postgres://fraudgate:hunter2@127.0.0.1:1/fraudgate',
      FRAUDGATE_AUDIT_KEY: 'k',
    });
    const client = new Client({ name: 'stdio-start', version: '0' });
    try {
      // The handshake does not wait for the store, which retries for 3 s before giving up.
      await client.connect(serve.transport);
      expect(client.getServerVersion()?.name).toBe('fraudgate');
      await expect(client.listTools()).rejects.toThrow(/closed/i);
      const { code, stderr } = await serve.exited;
      expect(code).toBe(1);
      expect(stderr.trim().split('\n').at(-1)).toMatch(
        /^fraudgate: PostgreSQL at 127\.0\.0\.1:1 does not answer \(ECONNREFUSED\): .*FRAUDGATE_POSTGRES_URL/,
      );
      expect(stderr).not.toContain('hunter2');
      expect(stderr).not.toMatch(/^\s+at /m);
    } finally {
      serve.kill();
    }
  });

  it('refuses a configuration error before answering initialize: live mode without FRAUDGATE_DATA_KEY', async () => {
    const serve = spawnServe({
      FRAUDGATE_DATA_DIR: join(dir, 'live-data'),
      SIFT_API_KEY: 'sift-key',
      SIFT_ACCOUNT_ID: 'acct',
      SEGMENT_WRITE_KEY: 'write-key',
      SEGMENT_PROFILE_TOKEN: 'profile-token',
      SEGMENT_SPACE_ID: 'space',
      SALESFORCE_CLIENT_ID: 'client-id',
      SALESFORCE_CLIENT_SECRET: 'client-secret',
      FRAUDGATE_AUDIT_SIGNING_KEY: generateKeyPairSync('ed25519')
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString(),
    });
    const client = new Client({ name: 'stdio-start', version: '0' });
    try {
      await expect(client.connect(serve.transport)).rejects.toThrow(/closed/i);
      const { code, stderr } = await serve.exited;
      expect(code).toBe(1);
      expect(stderr.trim().split('\n')).toHaveLength(1);
      expect(stderr).toMatch(/^fraudgate: .*FRAUDGATE_DATA_KEY/);
    } finally {
      serve.kill();
    }
  });
});

describe('fraudgate serve over stdio, malformed requests', { timeout: 90_000 }, () => {
  it('answers a request that fails the JSON-RPC schema with an error for its id instead of dropping it', async () => {
    const serve = spawnServe({
      FRAUDGATE_DATA_DIR: join(dir, 'malformed-data'),
      FRAUDGATE_LOG_LEVEL: 'warn',
    });
    const client = new Client({ name: 'stdio-malformed', version: '0' });
    try {
      await client.connect(serve.transport);
      const params = { name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } };
      const lines: [number, unknown, RegExp][] = [
        [9, { ...params, _meta: null }, /params\._meta must be an object/],
        [10, { ...params, _meta: 'x' }, /params\._meta must be an object/],
        [
          11,
          { ...params, _meta: { progressToken: 1.5 } },
          /params\._meta\.progressToken must be a string or an integer/,
        ],
        [
          12,
          { ...params, _meta: { progressToken: {} } },
          /params\._meta\.progressToken must be a string or an integer/,
        ],
      ];
      for (const [id, p] of lines)
        serve.writeLine(JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: p }));
      // Not a request (no method): Invalid Request, for its id.
      serve.writeLine(JSON.stringify({ jsonrpc: '2.0', id: 'no-method' }));
      // The server still answers ordinary calls afterwards.
      expect((await client.listTools()).tools.length).toBeGreaterThan(0);
      const answerTo = async (id: number | string) => {
        for (;;) {
          const answer = serve.received.find((m) => 'id' in m && m.id === id);
          if (answer) return answer as { error?: { code: number; message: string } };
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      for (const [id, , message] of lines) {
        const answer = await answerTo(id);
        expect(answer.error?.code).toBe(-32602);
        expect(answer.error?.message).toMatch(message);
      }
      expect((await answerTo('no-method')).error?.code).toBe(-32600);
    } finally {
      await client.close().catch(() => {});
      serve.kill();
    }
  });
});

describe('fraudgate serve over stdio, refused calls', { timeout: 90_000 }, () => {
  it('refused calls past rate_limits.refusals are counted, and closing stdin writes their one summary line', async () => {
    const configFile = join(dir, 'refusals.json');
    writeFileSync(
      configFile,
      JSON.stringify({ rate_limits: { refusals: { capacity: 2, per_minute: 0.001 } } }),
    );
    const serve = spawnServe({
      FRAUDGATE_DATA_DIR: join(dir, 'refusals-data'),
      FRAUDGATE_CONFIG: configFile,
      FRAUDGATE_LOG_LEVEL: 'info',
    });
    const client = new Client({ name: 'stdio-refusals', version: '0' });
    try {
      await client.connect(serve.transport);
      // 20 calls refused (no user_id): two get their line, 18 are counted.
      for (let i = 0; i < 20; i += 1) {
        const result = await client.callTool({ name: 'get_sift_score', arguments: {} });
        expect(result.isError).toBe(true);
      }
      await serve.transport.close();
      const { code, stderr } = await serve.exited;
      expect(code).toBe(0);
      const lines = stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.filter((l) => l.msg === 'tool call')).toHaveLength(2);
      const summaries = lines.filter((l) => l.msg === 'log lines over budget');
      expect(summaries).toHaveLength(1);
      // Past the refusal budget the calls are answered RATE_LIMITED (over the refusal budget).
      expect(summaries[0]).toMatchObject({ count: 18, by_outcome: { RATE_LIMITED: 18 } });
    } finally {
      await client.close().catch(() => {});
      serve.kill();
    }
  });
});

describe('the opening gate', () => {
  it('passes the handshake and ping at once, holds everything else in order until open()', async () => {
    const server = new McpServer({ name: 'gated', version: '0' });
    const order: string[] = [];
    server.registerTool('first', { description: 'first' }, () => {
      order.push('first');
      return { content: [{ type: 'text', text: 'first' }] };
    });
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    const gate = new OpeningGate(serverSide);
    await server.connect(gate);
    const client = new Client({ name: 'gate-test', version: '0' });
    await client.connect(clientSide);
    await gate.handshakeAnswered;
    await client.ping();

    let answered = 0;
    const call = client.callTool({ name: 'first', arguments: {} }).then((result) => {
      answered += 1;
      return result;
    });
    const list = client.listTools().then((r) => {
      order.push('list');
      answered += 1;
      return r;
    });
    // Several turns of the event loop: the ping above went through them; these are held.
    for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
    await client.ping();
    expect(answered).toBe(0);

    gate.open();
    expect((await list).tools.map((t) => t.name)).toEqual(['first']);
    expect((await call).isError).toBeFalsy();
    expect(order).toEqual(['first', 'list']);
    await client.close();
  });
});

describe('the stdio transport', () => {
  it("reports a message handler's throw to onerror and still delivers the next line", async () => {
    const stdin = new PassThrough();
    const transport = new StdioTransport(stdin, new PassThrough());
    const delivered: unknown[] = [];
    const errors: Error[] = [];
    transport.onmessage = (message) => {
      delivered.push('id' in message ? message.id : undefined);
      if (delivered.length === 1) throw new Error('handler failed');
    };
    transport.onerror = (error) => errors.push(error);
    await transport.start();
    const ping = (id: number) => JSON.stringify({ jsonrpc: '2.0', id, method: 'ping' }) + '\n';
    // Both lines in one chunk: the throw must not lose the second.
    stdin.write(ping(1) + ping(2));
    await new Promise((resolve) => setImmediate(resolve));
    expect(delivered).toEqual([1, 2]);
    expect(errors.map((e) => e.message)).toEqual(['handler failed']);
    await transport.close();
  });
});
