/**
 * A call waiting for an approval wakes when an approver decides on another replica, on both store
 * engines: PostgreSQL (two runtimes with their own data dirs on one schema: NOTIFY/LISTEN) and
 * SQLite (two runtimes on one database file in one process: the in-process signal; and the real
 * `fraudgate approvals approve` in another process on the same data dir: the cross-process watch).
 * The poll interval is far longer than the test's time limit, so only the wake-up can finish the call.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import { ANALYST, setup, type DeepPartial, type TestEnv } from '../helpers/setup.ts';
import { dropSchema, pgListening, PG_URL, uniqueSchema } from '../store/engines.ts';

const LABEL = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'chargebacks on three cards',
};
const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };
/** Ten minutes between polls and a two-minute wait: without a wake-up the SDK's 30 s timeout ends the call. */
const WAITING: DeepPartial<Config> = { approvals: { wait_ms: 120_000, poll_ms: 600_000 } };

/** What replicas share on `store: postgres`: the database and the data key that seals approvals. */
const REPLICA_SECRETS = { postgresUrl: PG_URL, dataKey: 'ab'.repeat(32) };

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function waitingCallDecidedOn(a: TestEnv, b: TestEnv) {
  expect(a.runtime.approvals).not.toBe(b.runtime.approvals);
  const pending = a.callTool('apply_label', LABEL);
  let approvalId: string | undefined;
  for (let i = 0; i < 500 && !approvalId; i++) {
    await new Promise((r) => setTimeout(r, 20));
    approvalId = (await b.runtime.approvals.list({ states: ['pending'] }))[0]?.id;
  }
  expect(approvalId).toBeDefined();
  await b.runtime.desk.decide(approvalId!, { approve: true, approver: APPROVER });
  const result = await pending;
  expect(result.isError).toBe(false);
  expect(result.output).toMatchObject({ user_id: 'sandbox-high-risk', analyst: ANALYST.id });
  expect(a.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
  expect((await b.runtime.approvals.get(approvalId!))?.state).toBe('executed');
}

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const APPROVER_KEY = 'wake-approver-key-0123456789abcdef';

/** `fraudgate approvals approve ID` in its own process on `dataDir`, with the approver's own key. */
async function approveWithCli(dataDir: string, approvalId: string) {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-wake-cli-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const configFile = join(dir, 'config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      auth: {
        key_hashes: [
          {
            sha256: createHash('sha256').update(APPROVER_KEY).digest('hex'),
            principal: APPROVER.id,
            kind: 'user',
            role: 'approver',
          },
        ],
      },
    }),
  );
  return promisify(execFile)(process.execPath, [CLI, 'approvals', 'approve', approvalId], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      FRAUDGATE_DATA_DIR: dataDir,
      FRAUDGATE_CONFIG: configFile,
      FRAUDGATE_AUDIT_KEY: 'test-audit-key',
      FRAUDGATE_APPROVER_TOKEN: APPROVER_KEY,
    },
  });
}

describe('approval wake-ups', { timeout: 60_000 }, () => {
  it('SQLite: a decision by the approvals CLI in another process wakes the call waiting in this one', async () => {
    const a = await setup({ config: WAITING });
    cleanups.push(() => a.close());
    const pending = a.callTool('apply_label', LABEL);
    let approvalId: string | undefined;
    for (let i = 0; i < 500 && !approvalId; i++) {
      await new Promise((r) => setTimeout(r, 20));
      approvalId = (await a.runtime.approvals.list({ states: ['pending'] }))[0]?.id;
    }
    expect(approvalId).toBeDefined();
    const approved = await approveWithCli(a.dataDir, approvalId!);
    expect(approved.stdout).toContain(`Approved ${approvalId}`);
    // Nothing in this process decided or swept: only the watch can have woken the call.
    const result = await pending;
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({ user_id: 'sandbox-high-risk', analyst: ANALYST.id });
    expect(a.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    expect(await a.runtime.approvals.get(approvalId!)).toMatchObject({
      state: 'executed',
      decided_by: APPROVER.id,
    });
  });

  it('SQLite: a decision by another runtime on the same database wakes the waiting call', async () => {
    const a = await setup({ config: WAITING });
    cleanups.push(() => a.close());
    const b = await setup({ config: WAITING, sandbox: a.sandbox, dataDir: a.dataDir });
    cleanups.push(() => b.close());
    await waitingCallDecidedOn(a, b);
  });

  it.skipIf(!pgListening)(
    'PostgreSQL: a decision on replica B wakes the call waiting on replica A',
    async () => {
      const schema = uniqueSchema();
      cleanups.push(() => dropSchema(schema));
      const config: DeepPartial<Config> = {
        ...WAITING,
        store: 'postgres',
        store_postgres: { schema, startup_timeout_ms: 5_000 },
      };
      const a = await setup({ config, secrets: REPLICA_SECRETS });
      cleanups.push(() => a.close());
      // Replica B: its own data dir, the same PostgreSQL schema.
      const b = await setup({ config, secrets: REPLICA_SECRETS, sandbox: a.sandbox });
      cleanups.push(() => b.close());
      await waitingCallDecidedOn(a, b);
    },
  );
});
