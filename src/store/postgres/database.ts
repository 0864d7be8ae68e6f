/**
 * The PostgreSQL engine: a small pool per process, every table in one schema (`store_postgres.schema`).
 *
 * A lost connection must never crash a replica: `pg` emits 'error' on idle pooled clients and on
 * checked-out clients when the server goes away (a restart, a failover, `pg_terminate_backend`),
 * and an 'error' event without a listener kills the process. The pool and every client we check out
 * get a listener that logs; the failed query rejects as usual, and the pool replaces the connection
 * on the next checkout, so work resumes by itself when the server is back. Such failures reach callers
 * as a retryable `StoreUnavailableError` (not the driver's error, which would surface as INTERNAL):
 * the call may simply be made again once the server answers.
 */
import pg from 'pg';
import { StoreUnavailableError } from '../../errors.ts';
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

/** Connection-level errno codes: the server is not there, or the connection broke. */
const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);
/**
 * SQLSTATEs that say the server or the session went away, not that the statement was wrong: class
 * 08 (connection exception), 57P01–57P03 (admin/crash shutdown — what `pg_terminate_backend` and a
 * restart send — and cannot connect now), 53300 (too many connections).
 */
const CONNECTION_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/;
/** What node-postgres says (no code) when a pooled connection died or no connection came in time. */
const CONNECTION_MESSAGE =
  /timeout exceeded when trying to connect|Connection terminated|is not queryable|connection error|Connection closed/i;

/** Whether `error` means "PostgreSQL is unreachable or dropped us" (try again later) rather than a bad query. */
export function isConnectionFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { code, errors } = error as { code?: unknown; errors?: { code?: unknown }[] };
  const codes = [code, ...(errors ?? []).map((e) => e.code)].filter((c) => typeof c === 'string');
  if (codes.some((c) => CONNECTION_ERRNOS.has(c) || CONNECTION_SQLSTATE.test(c))) return true;
  return CONNECTION_MESSAGE.test(error.message);
}

/** Runs `fn`; a connection failure becomes a retryable StoreUnavailableError, anything else is rethrown as is. */
export async function guarded<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw isConnectionFailure(error) ? new StoreUnavailableError(error) : error;
  }
}

/**
 * Every connection of `pool` gets an 'error' listener for its whole life. pg-pool listens only on
 * idle clients, so a checked-out client whose server goes away (a restart, a failover,
 * `pg_terminate_backend`) would emit an unhandled 'error' and end the process. Nothing more is
 * needed here: the pool's 'error' (`onError`) reports idle ones, and the query in flight (or the
 * next one) fails on a checked-out one; the pool drops dead clients when they are released.
 */
export function watchConnections(pool: pg.Pool, onError: (error: Error) => void): void {
  pool.on('error', onError);
  pool.on('connect', (client) => client.on('error', () => undefined));
}

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
  watchConnections(pool, onError);

  const executorOn = (client: pg.PoolClient, depth: number): SqlExecutor => ({
    engine: 'postgres',
    query: async <T>(sql: string, params: readonly SqlValue[] = []) =>
      guarded(async () => (await client.query(sql, params as SqlValue[])).rows as T[]),
    execute: (sql, params = []) =>
      guarded(async () => (await client.query(sql, params as SqlValue[])).rowCount ?? 0),
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
      guarded(async () => (await pool.query(sql, params as SqlValue[])).rows as T[]),
    execute: (sql, params = []) =>
      guarded(async () => (await pool.query(sql, params as SqlValue[])).rowCount ?? 0),
    async transaction(fn) {
      const client = await guarded(() => pool.connect());
      let broken = false;
      try {
        await guarded(() => client.query('BEGIN'));
        const out = await fn(executorOn(client, 0));
        await guarded(() => client.query('COMMIT'));
        return out;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw error;
      } finally {
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
