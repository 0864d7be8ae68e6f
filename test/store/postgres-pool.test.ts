/**
 * Work wider than the PostgreSQL pool queues for it instead of failing (src/store/postgres/database.ts):
 * with one connection and a 200 ms connect timeout, thirty transactions that each hold the
 * connection for 50 ms all commit, in turn — pg-pool alone counted the wait in its queue against the
 * connect timeout and refused most of them. Work that waits for the pool while holding all of it
 * is refused as retryable after the queue bound instead of hanging, and while the server cannot be
 * reached, queued work is refused with the same retryable error.
 */
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, StoreUnavailableError } from '../../src/errors.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';
import { PG_URL, pgListening } from './engines.ts';

/** Nothing needs tables here: the statements only hold the connection. */
const schema = 'fg_fleet_pool';
const opened: SqlDatabase[] = [];
afterAll(async () => {
  for (const db of opened) await db.close();
});

function open(url: string, options: { queueTimeoutMs?: number; connectTimeoutMs?: number } = {}) {
  const db = openPostgresDatabase(url, { schema, poolSize: 1, connectTimeoutMs: 200, ...options });
  opened.push(db);
  return db;
}

describe.skipIf(!pgListening)('PostgreSQL pool queue', () => {
  it('thirty transactions on a one-connection pool all commit, none refused', async () => {
    const db = open(PG_URL);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) =>
        db.transaction(async (tx) => {
          await tx.query('SELECT pg_sleep(0.05)');
          return (await tx.query<{ n: number }>('SELECT $1::int AS n', [i]))[0]?.n;
        }),
      ),
    );
    expect(outcomes.filter((o) => o.status === 'rejected').map((o) => String(o.reason))).toEqual([]);
    expect(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : undefined))).toEqual(
      Array.from({ length: 30 }, (_, i) => i),
    );
  });

  it('work waiting for a pool it holds itself is refused as retryable after the queue bound', async () => {
    const db = open(PG_URL, { queueTimeoutMs: 300 });
    const nested = db.transaction(async () => db.query('SELECT 1'));
    await expect(nested).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(nested).rejects.toMatchObject({ code: ERROR_CODES.UPSTREAM_ERROR, retryable: true });
    // The pool is whole again afterwards.
    expect(await db.query<{ one: number }>('SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });
});

describe('PostgreSQL pool queue, server unreachable', () => {
  it('queued work is refused as a retryable StoreUnavailableError', async () => {
    // A port that accepts nothing: a listener closed again.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const db = open(`postgres://postgres@127.0.0.1:${port}/postgres`);
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => db.query('SELECT 1')));
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      if (outcome.status === 'rejected') {
        expect(outcome.reason).toBeInstanceOf(StoreUnavailableError);
        expect(outcome.reason).toMatchObject({ retryable: true, data: { dependency: 'store' } });
      }
    }
  });
});
