/**
 * End to end: `serve` restarted under its replica id settles at start-up the approvals its previous
 * process died executing, without waiting for an approval sweep (turned off here, as on a replica
 * that does not hold the sweep's lease); another replica's claim is left to the 10-minute rule. A
 * stdio server (its id carries its pid) settles what a killed sibling on its data dir left, never
 * what a paused (SIGSTOP) one is running.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliEnv, connectServe } from '../helpers/cli.ts';

const REPLICA = 'replica-restart-e2e';

let dataDir: string;
const startServe = () =>
  connectServe(
    'restart-recovery-test',
    cliEnv(dataDir, {
      FRAUDGATE_ANALYST: 'e2e.analyst@example.com',
      FRAUDGATE_CONFIG: join(dataDir, 'config.json'),
      FRAUDGATE_REPLICA_ID: REPLICA,
    }),
  );

async function requestLabel(client: Client, abuseType: string): Promise<string> {
  const result = (await client.callTool({
    name: 'apply_label',
    arguments: { user_id: 'sandbox-high-risk', is_bad: true, abuse_type: abuseType, description: 'e2e' },
  })) as CallToolResult;
  const block = result.content[0];
  const body = block?.type === 'text' ? (JSON.parse(block.text) as { error?: { approval_id?: string } }) : {};
  return String(body.error?.approval_id);
}

const stateOf = (id: string) => {
  const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
  // The server may be writing (its start-up recovery, the heartbeat): wait for its lock, do not fail.
  db.exec('PRAGMA busy_timeout = 10000');
  try {
    return (db.prepare('SELECT state FROM approvals WHERE id = ?').get(id) as { state: string }).state;
  } finally {
    db.close();
  }
};

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-restart-'));
  writeFileSync(
    join(dataDir, 'config.json'),
    JSON.stringify({ approvals: { wait_ms: 0 }, jobs: { approval_sweep: { enabled: false } } }),
  );
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('serve restarted under its replica id', () => {
  it(
    'settles at start-up what its previous process died executing, and only that',
    { timeout: 120_000 },
    async () => {
      const first = await startServe();
      const [ours, theirs] = [
        await requestLabel(first, 'payment_abuse'),
        await requestLabel(first, 'account_abuse'),
      ];
      await first.close();
      // What the previous process, killed mid-call moments ago, and a live other replica leave behind.
      const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
      db.exec('PRAGMA busy_timeout = 10000');
      const claim = db.prepare(
        "UPDATE approvals SET state = 'executing', executed_at = ?, executed_by = ? WHERE id = ?",
      );
      claim.run(new Date().toISOString(), REPLICA, ours);
      claim.run(new Date().toISOString(), 'another-replica', theirs);
      db.close();

      const second = await startServe();
      try {
        // No sweep runs here: only the start-up recovery can move it.
        for (let tries = 0; tries < 300 && stateOf(ours) === 'executing'; tries++) await sleep(100);
        expect(stateOf(ours)).toBe('executed');
        expect(stateOf(theirs)).toBe('executing');
      } finally {
        await second.close();
      }
    },
  );
});

describe('serve on stdio without a replica id (its id carries its pid)', () => {
  let pidDataDir: string;
  beforeAll(() => {
    pidDataDir = mkdtempSync(join(tmpdir(), 'fraudgate-restart-pid-'));
    writeFileSync(
      join(pidDataDir, 'config.json'),
      JSON.stringify({ approvals: { wait_ms: 0 }, jobs: { approval_sweep: { enabled: false } } }),
    );
  });
  afterAll(() => rmSync(pidDataDir, { recursive: true, force: true }));

  const startPidServe = () =>
    connectServe(
      'restart-recovery-pid-test',
      cliEnv(pidDataDir, {
        FRAUDGATE_ANALYST: 'e2e.analyst@example.com',
        FRAUDGATE_CONFIG: join(pidDataDir, 'config.json'),
      }),
    );
  const open = () => {
    const db = new DatabaseSync(join(pidDataDir, 'fraudgate.db'));
    db.exec('PRAGMA busy_timeout = 10000');
    return db;
  };
  const stateIn = (id: string) => {
    const db = open();
    try {
      return (db.prepare('SELECT state FROM approvals WHERE id = ?').get(id) as { state: string }).state;
    } finally {
      db.close();
    }
  };

  /** `serve` on stdio in a child process this test can signal (connectServe's, with its pid). */
  const spawnPidServe = async () => {
    const client = new Client({ name: 'restart-recovery-pid-test', version: '0.0.0' });
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLI, 'serve'],
      env: cliEnv(pidDataDir, {
        FRAUDGATE_ANALYST: 'e2e.analyst@example.com',
        FRAUDGATE_CONFIG: join(pidDataDir, 'config.json'),
      }),
      stderr: 'ignore',
    });
    await client.connect(transport);
    const pid = transport.pid!;
    const replicaId = `${hostname()}:stdio:${pid}`;
    // It answers initialize while the store opens: wait until it holds its id (its row is written).
    const rowOf = () => {
      const db = open();
      try {
        return db.prepare('SELECT nonce FROM replica_instances WHERE replica_id = ?').get(replicaId);
      } finally {
        db.close();
      }
    };
    for (let tries = 0; tries < 300 && !rowOf(); tries++) await sleep(100);
    expect(rowOf()).toBeDefined();
    const closed = new Promise<void>((resolve) => {
      transport.onclose = () => resolve();
    });
    return { client, pid, replicaId, closed };
  };

  it(
    "settles at start-up what a killed stdio server of this host left executing, not a paused one's",
    { timeout: 120_000 },
    async () => {
      const first = await startPidServe();
      const [dead, paused, elsewhere] = [
        await requestLabel(first, 'payment_abuse'),
        await requestLabel(first, 'account_abuse'),
        await requestLabel(first, 'promotion_abuse'),
      ];
      await first.close();
      // Two stdio servers on this data dir, each executing a call; and a process of another host,
      // which is not this host's to judge.
      const [killed, stopped] = [await spawnPidServe(), await spawnPidServe()];
      const elsewhereId = 'another-host:stdio:2147483003';
      const db = open();
      const at = Date.now();
      const claim = db.prepare(
        "UPDATE approvals SET state = 'executing', executed_at = ?, executed_by = ? WHERE id = ?",
      );
      for (const [approval, id] of [
        [dead, killed.replicaId],
        [paused, stopped.replicaId],
        [elsewhere, elsewhereId],
      ] as const) {
        claim.run(new Date(at).toISOString(), id, approval);
      }
      db.prepare(
        'INSERT INTO replica_instances (replica_id, nonce, started_at, heartbeat_at, beats) VALUES (?, ?, ?, ?, 7)',
      ).run(elsewhereId, `nonce-${elsewhereId}`, at, at);
      db.close();
      // One is killed mid-call (its row stays, no longer beating); the other is paused (Ctrl-Z, a
      // debugger): alive, though it beats no more than the killed one.
      process.kill(killed.pid, 'SIGKILL');
      await killed.closed;
      process.kill(stopped.pid, 'SIGSTOP');

      let second: Client | undefined;
      try {
        second = await startPidServe();
        // No sweep runs here, and the claims are fresh: only the start-up recovery can move them.
        for (let tries = 0; tries < 300 && stateIn(dead) === 'executing'; tries++) await sleep(100);
        expect(stateIn(dead)).toBe('executed');
        // Past the heartbeat window (10 beats of 500 ms) in which a still counter once meant "dead".
        await sleep(6_000);
        expect(stateIn(paused)).toBe('executing');
        expect(stateIn(elsewhere)).toBe('executing');
        const rowIds = () => {
          const rows = open();
          try {
            return (
              rows.prepare('SELECT replica_id FROM replica_instances').all() as { replica_id: string }[]
            )
              .map((r) => r.replica_id)
              .filter((id) => [killed.replicaId, stopped.replicaId, elsewhereId].includes(id))
              .sort();
          } finally {
            rows.close();
          }
        };
        // The killed one's row is deleted once its claims are settled; the paused one keeps its own.
        for (let tries = 0; tries < 100 && rowIds().includes(killed.replicaId); tries++) await sleep(100);
        expect(rowIds()).toEqual([elsewhereId, stopped.replicaId].sort());

        // Resumed, it carries on: it still holds its id (a few beats later) and answers.
        process.kill(stopped.pid, 'SIGCONT');
        await sleep(2_000);
        await stopped.client.ping();
        expect(rowIds()).toEqual([elsewhereId, stopped.replicaId].sort());
        expect(stateIn(paused)).toBe('executing');
      } finally {
        process.kill(stopped.pid, 'SIGCONT');
        await stopped.client.close();
        await second?.close();
      }
    },
  );
});
