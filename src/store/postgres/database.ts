/**
 * The PostgreSQL engine: a small pool per process, every table in one schema (`store_postgres.schema`).
 *
 * A lost connection must never crash a replica: `pg` emits 'error' on idle pooled clients and on
 * checked-out clients when the server goes away (a restart, a failover, `pg_terminate_backend`),
 * and an 'error' event without a listener kills the process. The pool and every client we check out
 * get a listener that logs; the failed query rejects as usual, and the pool replaces the connection
 * on the next checkout, so work resumes by itself when the server is back.
 */
import pg from 'pg';
import type { SqlDatabase, SqlExecutor, SqlValue } from '../sql.ts';

export interface PostgresOptions {
  schema: string;
  poolSize?: number;
  /** Called (rate-limited by the caller if it likes) when a connection fails outside a query. */
  onConnectionError?: (error: Error) => void;
  /** A connection attempt gives up after this long (default 5 s). */
  connectTimeoutMs?: number;
}

const INT8_OID = 20;

/** BIGINT as a JS number: our BIGINTs are epoch milliseconds, ids and counts, all below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export function isValidSchemaName(schema: string): boolean {
  return /^[a-z_][a-z0-9_]{0,62}$/.test(schema);
}

/** host:port of a connection string, without user, password or database, for messages and logs. */
export function describePostgresUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || 5432}`;
  } catch {
    return 'FRAUDGATE_POSTGRES_URL (not a valid URL)';
  }
}

export function openPostgresDatabase(connectionString: string, options: PostgresOptions): SqlDatabase {
  const { schema } = options;
  if (!isValidSchemaName(schema)) throw new Error(`invalid schema name ${schema}`);
  const onError = options.onConnectionError ?? (() => undefined);
  const pool = new pg.Pool({
    connectionString,
    max: options.poolSize ?? 8,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    options: `-c search_path=${schema}`,
    types,
  });
  pool.on('error', onError);

  const executorOn = (client: pg.PoolClient, depth: number): SqlExecutor => ({
    engine: 'postgres',
    query: async <T>(sql: string, params: readonly SqlValue[] = []) =>
      (await client.query(sql, params as SqlValue[])).rows as T[],
    execute: async (sql, params = []) => (await client.query(sql, params as SqlValue[])).rowCount ?? 0,
    async transaction(fn) {
      const name = `sp_${depth + 1}`;
      await client.query(`SAVEPOINT ${name}`);
      try {
        const out = await fn(executorOn(client, depth + 1));
        await client.query(`RELEASE SAVEPOINT ${name}`);
        return out;
      } catch (error) {
        await client.query(`ROLLBACK TO SAVEPOINT ${name}`).catch(() => undefined);
        throw error;
      }
    },
  });

  return {
    engine: 'postgres',
    query: async <T>(sql: string, params: readonly SqlValue[] = []) =>
      (await pool.query(sql, params as SqlValue[])).rows as T[],
    execute: async (sql, params = []) => (await pool.query(sql, params as SqlValue[])).rowCount ?? 0,
    async transaction(fn) {
      const client = await pool.connect();
      client.on('error', onError);
      let broken = false;
      try {
        await client.query('BEGIN');
        const out = await fn(executorOn(client, 0));
        await client.query('COMMIT');
        return out;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw error;
      } finally {
        client.removeListener('error', onError);
        // A client whose connection died must not go back into the pool.
        client.release(broken ? true : undefined);
      }
    },
    async executeScript(sql) {
      await pool.query(sql);
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    async close() {
      await pool.end();
    },
  };
}
