/**
 * A ledger commit on PostgreSQL whose connection is cut while PostgreSQL holds it: the client sees a
 * failure, PostgreSQL commits the statement once the lock it waited for is released. The group's
 * write-behind records (reads) are kept for the retry; re-sent as they were, they were stored twice.
 * The retry now asks the store whether the in-doubt group landed, and drops its records if so. The
 * store is reached through a TCP forwarder the test cuts (test/helpers/tcp-forwarder.ts).
 */
import { generateKeyPairSync } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditAppendInput } from '../../src/governance/audit.ts';
import { createAuditLedger, verifyLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import { startTcpForwarder } from '../helpers/tcp-forwarder.ts';
import { PG_URL, pgListening } from './engines.ts';

const schema = 'ledger_h_doubt';
const keys = generateKeyPairSync('ed25519');
const read = (n: number): AuditAppendInput => ({
  event: 'executed',
  call_id: `read-${n}`,
  tool: 'get_sift_score',
  principal: { id: 'analyst@corp.test', kind: 'user', role: 'analyst' },
});

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.skipIf(!pgListening)('PostgreSQL ledger commit in doubt', () => {
  it('write-behind records of a commit that landed after its connection was cut are stored once', async () => {
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    closers.push(() => admin.end());
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.query(`CREATE SCHEMA ${schema}`);
    closers.push(() => admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));

    const target = new URL(PG_URL);
    const forwarder = await startTcpForwarder({ host: target.hostname, port: Number(target.port || 5432) });
    closers.push(() => forwarder.close());
    const viaForwarder = new URL(PG_URL);
    viaForwarder.port = String(forwarder.port);
    const db = openPostgresDatabase(viaForwarder.toString(), { schema, poolSize: 2, lockTimeoutMs: 0 });
    closers.push(() => db.close());
    const engine = await openPostgresLedgerStore({ sql: db });
    const log = createAuditLedger({
      engine,
      writer: 'replica-a',
      redactor: createRedactor({ hashKey: 'k' }),
      signer: createCheckpointSigner(keys.privateKey),
      retryMs: 50,
    });
    closers.push(() => log.close());
    await log.append(read(0));

    // The test holds the writer's head: PostgreSQL holds the next commit mid-way.
    await admin.query('BEGIN');
    await admin.query(`SELECT 1 FROM ${schema}.audit_writers WHERE writer = 'replica-a' FOR UPDATE`);
    for (let n = 1; n <= 3; n += 1) log.enqueue(read(n));
    const flushed = log.flush();
    const blocked = async () =>
      (
        await admin.query<{ pid: number }>(
          'SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))',
        )
      ).rows;
    await until(async () => (await blocked()).length > 0);
    const [held] = await blocked();
    forwarder.cut();
    await flushed;
    expect(log.health().ok).toBe(false);

    // Released, PostgreSQL commits the group although its client is gone.
    await admin.query('COMMIT');
    await until(
      async () =>
        (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [held!.pid])).rows.length === 0,
    );
    forwarder.restore();
    await until(async () => log.health().ok);
    await log.flush();

    const { rows } = await admin.query<{ body: string }>(
      `SELECT body FROM ${schema}.audit_records WHERE writer = 'replica-a' ORDER BY seq`,
    );
    const calls = rows.map((r) => (JSON.parse(r.body) as { call_id: string }).call_id);
    expect(calls).toEqual(['read-0', 'read-1', 'read-2', 'read-3']);
    expect(await verifyLedger(engine, createCheckpointVerifier(keys.publicKey))).toMatchObject({ ok: true });
  });
});
