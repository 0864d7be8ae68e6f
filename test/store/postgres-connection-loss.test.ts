/**
 * A PostgreSQL connection that goes away (pg_terminate_backend, as a restart or failover does)
 * reaches callers as a retryable StoreUnavailableError — never the driver's raw error, which the
 * pipeline would answer as INTERNAL and the outbox would dead-letter at once — and the next call
 * works again on a fresh connection. A wrong statement is still the driver's own error.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, StoreUnavailableError } from '../../src/errors.ts';
import { isConnectionFailure, openPostgresDatabase } from '../../src/store/postgres/database.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from './engines.ts';

const schema = uniqueSchema();
const db = pgListening ? openPostgresDatabase(PG_URL, { schema, poolSize: 2 }) : undefined;

afterAll(async () => {
  if (!db) return;
  await db.close();
  await dropSchema(schema);
});

/** Terminate every other backend of this schema's pool (they carry `search_path=<schema>` in their options). */
async function terminateBackends(): Promise<number> {
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()
         AND backend_type = 'client backend' AND query LIKE '%-- ' || $1 || '%'`,
      [schema],
    );
    for (const { pid } of rows) await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    return rows.length;
  } finally {
    await admin.end();
  }
}

describe.skipIf(!db)('PostgreSQL connection loss', () => {
  it('is a retryable StoreUnavailableError, and the next call succeeds', async () => {
    const database = db!;
    await database.executeScript(`CREATE SCHEMA IF NOT EXISTS ${schema}; CREATE TABLE ${schema}.t (n INT)`);
    // A transaction holds its connection: the test finds it by the comment in its last statement.
    let failure: unknown;
    await database
      .transaction(async (tx) => {
        await tx.execute(`INSERT INTO t VALUES (1) -- ${schema}`);
        expect(await terminateBackends()).toBeGreaterThan(0);
        await tx.query('SELECT n FROM t');
      })
      .catch((error: unknown) => {
        failure = error;
      });
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    expect(failure).toMatchObject({ code: ERROR_CODES.UPSTREAM_ERROR, retryable: true });
    // Nothing of the broken transaction was kept, and the pool serves the next call.
    expect(await database.query('SELECT n FROM t')).toEqual([]);

    await expect(database.query('SELECT no_such_column FROM t')).rejects.toMatchObject({ code: '42703' });
  });

  it('tells connection failures from statement errors', () => {
    const withCode = (code: string) => Object.assign(new Error('x'), { code });
    expect(isConnectionFailure(withCode('57P01'))).toBe(true);
    expect(isConnectionFailure(withCode('08006'))).toBe(true);
    expect(isConnectionFailure(withCode('ECONNREFUSED'))).toBe(true);
    expect(isConnectionFailure(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isConnectionFailure(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isConnectionFailure(withCode('23505'))).toBe(false);
    expect(isConnectionFailure(withCode('42P01'))).toBe(false);
    expect(isConnectionFailure('57P01')).toBe(false);
  });
});
