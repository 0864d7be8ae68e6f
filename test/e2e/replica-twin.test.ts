/**
 * End to end: two live `serve --http` processes never share a replica id. The second started under
 * the id of a running one (one SQLite data dir) refuses, exits 1 and says which setting to change,
 * while the first keeps serving. A replica SIGKILLed mid-execution and started again at once under
 * its id still starts (within the heartbeat expiry) and settles what it died executing; one stopped
 * cleanly lets its id go. One paused (SIGSTOP) past the expiry while another took its id over exits
 * as soon as it runs again. Under the default id host:port, the refusal also says that the port
 * may be in use (two servers started on it at once both pass the port probe).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, describe, expect, it } from 'vitest';
import { twinMessage } from '../../src/replica-registration.ts';
import { CLI } from '../helpers/cli.ts';

const REPLICA = 'twin-e2e';
const TOKEN = 'replica-twin-dev-token-0123456789abcdef';
const home = mkdtempSync(join(tmpdir(), 'fraudgate-twin-'));
const dataDir = join(home, 'data');
const children: ChildProcess[] = [];

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  /** The MCP URL once it listens; undefined when the process exited first. */
  mcpUrl: Promise<string | undefined>;
  exited: Promise<number | null>;
  stderr: () => string;
}

/** `serve --http` under REPLICA on any free port, or without a replica id (default host:port) on `port`. */
function start(port?: number): Started {
  writeFileSync(
    join(home, 'config.json'),
    JSON.stringify({ approvals: { wait_ms: 0 }, jobs: { approval_sweep: { enabled: false } } }),
  );
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--http', '--sandbox', '--port', String(port ?? 0), '--data-dir', dataDir],
    {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        FRAUDGATE_CONFIG: join(home, 'config.json'),
        FRAUDGATE_DEV_TOKEN: TOKEN,
        FRAUDGATE_LOG_LEVEL: 'warn',
        ...(port === undefined ? { FRAUDGATE_REPLICA_ID: REPLICA } : {}),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  children.push(child);
  let log = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const mcpUrl = new Promise<string | undefined>((resolve) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      const match = /MCP endpoint \(Streamable HTTP\): (http:\/\/\S+\/mcp)/.exec(log);
      if (match?.[1]) resolve(match[1]);
    });
    void exited.then(() => resolve(undefined));
  });
  return { child, mcpUrl, exited, stderr: () => log };
}

const query = <T>(sql: string, ...params: string[]): T | undefined => {
  const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
  try {
    return db.prepare(sql).get(...params) as T | undefined;
  } finally {
    db.close();
  }
};
const beatsOf = () =>
  query<{ beats: number }>('SELECT beats FROM replica_instances WHERE replica_id = ?', REPLICA)?.beats;

async function requestLabel(mcpUrl: string): Promise<string> {
  const client = new Client({ name: 'replica-twin', version: '0' });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
    }),
  );
  try {
    const result = (await client.callTool({
      name: 'apply_label',
      arguments: {
        user_id: 'sandbox-high-risk',
        is_bad: true,
        abuse_type: 'payment_abuse',
        description: 'e2e',
      },
    })) as CallToolResult;
    const block = result.content[0];
    const body =
      block?.type === 'text' ? (JSON.parse(block.text) as { error?: { approval_id?: string } }) : {};
    return String(body.error?.approval_id);
  } finally {
    await client.close();
  }
}

describe('serve under a replica id another process holds', () => {
  it(
    'a live twin is refused; a SIGKILLed replica restarted at once starts and recovers',
    { timeout: 120_000 },
    async () => {
      const first = start();
      const firstUrl = await first.mcpUrl;
      expect(firstUrl, first.stderr()).toBeDefined();

      const twin = start();
      // Resolves with its URL should it start serving, as soon as it does.
      expect(await twin.mcpUrl, twin.stderr()).toBeUndefined();
      expect(await twin.exited).toBe(1);
      expect(twin.stderr()).toContain(`fraudgate: ${twinMessage(REPLICA)}\n`);
      // The first serves on, and still holds the id (it keeps beating).
      expect((await fetch(firstUrl!.replace(/\/mcp$/, '/healthz'))).status).toBe(200);
      const beats = beatsOf()!;
      await sleep(1_500);
      expect(beatsOf()!).toBeGreaterThan(beats);

      // Killed mid-execution: its claim under the id is left behind, its row still fresh.
      const approval = await requestLabel(firstUrl!);
      first.child.kill('SIGKILL');
      await first.exited;
      const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
      db.prepare(
        "UPDATE approvals SET state = 'executing', executed_at = ?, executed_by = ? WHERE id = ?",
      ).run(new Date().toISOString(), REPLICA, approval);
      db.close();

      const began = Date.now();
      const restarted = start();
      const restartedUrl = await restarted.mcpUrl;
      expect(restartedUrl, restarted.stderr()).toBeDefined();
      process.stderr.write(`replica-twin: restarted after SIGKILL in ${Date.now() - began} ms\n`);
      const stateOf = () =>
        query<{ state: string }>('SELECT state FROM approvals WHERE id = ?', approval)?.state;
      for (let tries = 0; tries < 300 && stateOf() === 'executing'; tries++) await sleep(100);
      expect(stateOf()).toBe('executed');

      // Stopped cleanly, it lets the id go: the next start does not wait.
      restarted.child.kill('SIGTERM');
      expect(await restarted.exited).toBe(0);
      expect(beatsOf()).toBeUndefined();
    },
  );

  it(
    'a replica stopped past the expiry whose id was taken over exits at its next heartbeat',
    { timeout: 120_000 },
    async () => {
      const paused = start();
      expect(await paused.mcpUrl, paused.stderr()).toBeDefined();
      paused.child.kill('SIGSTOP');
      // It beats no more: the next start under its id takes it over, as after a SIGKILL.
      const next = start();
      try {
        expect(await next.mcpUrl, next.stderr()).toBeDefined();
        paused.child.kill('SIGCONT');
        expect(await paused.exited).toBe(1);
        expect(paused.stderr()).toContain(
          `replica id ${REPLICA} was taken over by another process (this one stopped beating for over 5000 ms`,
        );
        // The new holder serves on and keeps the id.
        const beats = beatsOf()!;
        await sleep(1_000);
        expect(beatsOf()!).toBeGreaterThan(beats);
      } finally {
        next.child.kill('SIGTERM');
        await next.exited;
      }
    },
  );

  it(
    'under the default host:port id, a twin refusal also says the port may be in use by a server starting at once',
    { timeout: 120_000 },
    async () => {
      // The data dir's schema, from a replica that keeps running meanwhile.
      const other = start();
      expect(await other.mcpUrl, other.stderr()).toBeDefined();
      const port = await new Promise<number>((resolve) => {
        const probe = createServer().listen(0, '127.0.0.1', () => {
          const { port: free } = probe.address() as AddressInfo;
          probe.close(() => resolve(free));
        });
      });
      // Another serve on that port, started at the same moment: it passed the port probe, has not
      // bound yet, and holds (and beats) the default id host:port.
      const id = `${hostname()}:${port}`;
      const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
      db.exec('PRAGMA busy_timeout = 10000');
      db.prepare(
        'INSERT INTO replica_instances (replica_id, nonce, started_at, heartbeat_at, beats) VALUES (?, ?, ?, ?, 0)',
      ).run(id, 'starting-at-once', Date.now(), Date.now());
      const beat = db.prepare('UPDATE replica_instances SET beats = beats + 1 WHERE replica_id = ?');
      const beating = setInterval(() => beat.run(id), 100);
      try {
        const second = start(port);
        expect(await second.mcpUrl, second.stderr()).toBeUndefined();
        expect(await second.exited).toBe(1);
        expect(second.stderr()).toContain(
          `fraudgate: ${twinMessage(id)}; as this id is the default host:port, port ${port} may also be in use`,
        );
      } finally {
        clearInterval(beating);
        db.prepare('DELETE FROM replica_instances WHERE replica_id = ?').run(id);
        db.close();
        other.child.kill('SIGTERM');
        await other.exited;
      }
    },
  );
});
