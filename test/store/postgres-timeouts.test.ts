/**
 * A PostgreSQL store that hangs instead of failing. Another session holding the ledger's writer
 * row (`SELECT … FROM audit_writers FOR UPDATE`, a stuck migration, a stalled transaction) used to
 * leave audited calls waiting for ever while `/readyz` said ready. Every session now has a lock and
 * statement timeout (store_postgres.*): the append is refused as retryable within the bound, the
 * ledger reports itself unhealthy, and it recovers by itself once the lock is released. A commit
 * that hangs where no timeout applies makes the ledger unhealthy after `commitStallMs`.
 */
import { generateKeyPairSync } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditAppendInput } from '../../src/governance/audit.ts';
import { createAuditLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { StoreUnavailableError } from '../../src/errors.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openPostgresDatabase, type PostgresOptions } from '../../src/store/postgres/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';
import { PG_URL, pgListening } from './engines.ts';

const keys = generateKeyPairSync('ed25519');
const entry = (n: number): AuditAppendInput => ({
  event: 'executed',
  call_id: `c-${n}`,
  tool: 'get_sift_score',
  principal: { id: 'analyst@corp.test', kind: 'user', role: 'analyst' },
});

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function fixture(schema: string, options: Partial<PostgresOptions>, commitStallMs?: number) {
  const db: SqlDatabase = openPostgresDatabase(PG_URL, { schema, poolSize: 4, ...options });
  await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await db.execute(`CREATE SCHEMA ${schema}`);
  const engine = await openPostgresLedgerStore({ sql: db });
  const log = createAuditLedger({
    engine,
    writer: 'replica-a',
    redactor: createRedactor({ hashKey: 'k' }),
    signer: createCheckpointSigner(keys.privateKey),
    retryMs: 100,
    ...(commitStallMs === undefined ? {} : { commitStallMs }),
  });
  const locker = new pg.Client({ connectionString: PG_URL });
  await locker.connect();
  cleanups.push(async () => {
    await log.close().catch(() => undefined);
    await locker.end().catch(() => undefined);
    await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await db.close();
  });
  await log.append(entry(1));
  const lockWriters = async () => {
    await locker.query('BEGIN');
    await locker.query(`SELECT * FROM ${schema}.audit_writers FOR UPDATE`);
  };
  return { db, log, locker, lockWriters };
}

/** What `promise` did within `ms`: its value, its error, or nothing yet. */
const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([
    promise.then(
      (value) => ({ settled: 'resolved' as const, value }),
      (error: unknown) => ({ settled: 'rejected' as const, error }),
    ),
    new Promise<{ settled: 'pending' }>((resolve) => setTimeout(() => resolve({ settled: 'pending' }), ms)),
  ]);

const until = async (check: () => boolean, ms: number) => {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  return check();
};

describe.skipIf(!pgListening)('PostgreSQL store that hangs', () => {
  it('an append behind a held writer lock is refused within the lock timeout, the ledger unhealthy, then recovers', async () => {
    const { log, locker, lockWriters } = await fixture('ledger_h_lock', { lockTimeoutMs: 300 });
    await lockWriters();
    const started = Date.now();
    const outcome = await within(log.append(entry(2)), 5_000);
    expect(outcome.settled).toBe('rejected');
    expect(Date.now() - started).toBeLessThan(3_000);
    const error = (outcome as { error: { retryable?: boolean } }).error;
    expect(error.retryable).toBe(true);
    expect(log.health().ok).toBe(false);
    expect(() => log.assertWritable()).toThrow(/refuses calls/);

    await locker.query('ROLLBACK');
    expect(await until(() => log.health().ok, 5_000)).toBe(true);
    expect((await log.append(entry(3))).seq).toBeGreaterThan(1);
  });

  it('a commit hanging past commitStallMs makes the ledger unhealthy while it waits, healthy once it lands', async () => {
    // No lock timeout: only the stall bound can notice.
    const { log, locker, lockWriters } = await fixture('ledger_h_stall', { lockTimeoutMs: 0 }, 300);
    await lockWriters();
    const append = log.append(entry(2));
    expect((await within(append, 1_000)).settled).toBe('pending');
    expect(log.health()).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/in flight for more than 300 ms/),
    });
    await locker.query('ROLLBACK');
    expect((await append).seq).toBe(2);
    expect(log.health().ok).toBe(true);
  });

  it('a statement past the statement timeout is refused as the store unavailable, and its connection kept', async () => {
    const db = openPostgresDatabase(PG_URL, {
      schema: 'ledger_h_stmt',
      poolSize: 1,
      statementTimeoutMs: 200,
    });
    cleanups.push(() => db.close());
    const [{ pid } = { pid: 0 }] = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    await expect(db.query('SELECT pg_sleep(2)')).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(
      db.transaction(async (tx) => {
        await tx.query('SELECT pg_sleep(2)');
      }),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).toEqual([{ pid }]);
  });
});
