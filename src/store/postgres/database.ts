/**
 * The PostgreSQL engine: a small pool per process, every table in one schema (`store_postgres.schema`).
 *
 * A lost connection must never crash a replica: `pg` emits 'error' on idle pooled clients and on
 * checked-out clients when the server goes away (a restart, a failover, `pg_terminate_backend`),
 * and an 'error' event without a listener kills the process. The pool and every client we check out
 * get a listener that logs; the failed query rejects as usual, and the pool replaces the connection
 * on the next checkout, so work resumes by itself when the server is back. Such failures reach callers
 * as a retryable `StoreUnavailableError` (not the driver's error, which would surface as INTERNAL):
 * the call may simply be made again once the server answers. So do statements the server gives up
 * on: every session has a statement, lock and idle-in-transaction timeout (`store_postgres.*`), so
 * a held lock or a stuck server refuses calls (retryable) instead of hanging them.
 */
import pg from 'pg';
import { StoreUnavailableError } from '../../errors.ts';
import type { QueryOptions, SqlDatabase, SqlExecutor, SqlValue } from '../sql.ts';
import { NETWORK_FAILURE } from '../../network-errors.ts';

export interface PostgresOptions {
  schema: string;
  poolSize?: number;
  /** Called (rate-limited by the caller if it likes) when a connection fails outside a query. */
  onConnectionError?: (error: Error) => void;
  /** A connection attempt gives up after this long (default 5 s). */
  connectTimeoutMs?: number;
  /**
   * How long work may wait for one of the pool's connections to come free before it is refused as
   * retryable (default 60 s). Only a pool held by work that itself waits for the pool would wait this
   * long; a busy pool serves its queue in arrival order well within it.
   */
  queueTimeoutMs?: number;
  /**
   * Server-side bounds on every session of the pool (0 turns one off), so a stuck statement is
   * refused as retryable instead of hanging the call that waits on it: a statement runs at most
   * `statementTimeoutMs` (default 30 s), waits for a lock at most `lockTimeoutMs` (default 10 s),
   * and a transaction left idle (its holder stalled or gone) is ended after
   * `idleInTransactionTimeoutMs` (default 60 s), releasing its locks. Work that is long on
   * purpose (migrations, retention, the audit scan) lifts them for its own transaction.
   */
  statementTimeoutMs?: number;
  lockTimeoutMs?: number;
  idleInTransactionTimeoutMs?: number;
}

export const POSTGRES_TIMEOUT_DEFAULTS = {
  statementTimeoutMs: 30_000,
  lockTimeoutMs: 10_000,
  idleInTransactionTimeoutMs: 60_000,
} as const;

/**
 * At most `size` holders of a pooled connection at once; the others queue in arrival order. pg-pool
 * queues too, but counts the time in its queue against `connectionTimeoutMillis`, so a burst wider
 * than the pool (an outbox batch of `automation.batch_size` effects, several statements each) failed
 * with "timeout exceeded when trying to connect" although PostgreSQL was fine. With this gate in
 * front, pg-pool's timeout measures only connecting, and a burst waits its turn instead. `fail` ends
 * every wait at once: while connecting fails, queued work is refused now, not after a connect
 * timeout per pool slot.
 */
function createGate(size: number, queueTimeoutMs: number) {
  let free = size;
  const queue: { grant: () => void; refuse: (error: Error) => void }[] = [];
  return {
    acquire(): Promise<void> {
      if (free > 0 && queue.length === 0) {
        free -= 1;
        return Promise.resolve();
      }
      return new Promise<void>((resolve, reject) => {
        const entry = {
          grant: () => {
            clearTimeout(timer);
            resolve();
          },
          refuse: (error: Error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        const timer = setTimeout(() => {
          const at = queue.indexOf(entry);
          if (at >= 0) queue.splice(at, 1);
          reject(
            new StoreUnavailableError(
              new Error(`no PostgreSQL connection of the pool came free in ${queueTimeoutMs} ms`),
            ),
          );
        }, queueTimeoutMs);
        timer.unref();
        queue.push(entry);
      });
    },
    release(): void {
      const next = queue.shift();
      if (next) next.grant();
      else free += 1;
    },
    fail(error: Error): void {
      for (const entry of queue.splice(0)) entry.refuse(error);
    },
  };
}

const INT8_OID = 20;

/** BIGINT as a JS number: our BIGINTs are epoch milliseconds, ids and counts, all below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/**
 * SQLSTATEs that say the server or the session went away, not that the statement was wrong: class
 * 08 (connection exception), 57P01–57P03 (admin/crash shutdown — what `pg_terminate_backend` and a
 * restart send — and cannot connect now), 53300 (too many connections).
 */
const CONNECTION_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/;
/** What node-postgres says (no code) when a pooled connection died or no connection came in time. */
const CONNECTION_MESSAGE =
  /timeout exceeded when trying to connect|Connection terminated|is not queryable|connection error|Connection closed/i;

/**
 * SQLSTATEs of a statement the server gave up on, the session intact: 57014 (query_canceled: the
 * statement timeout, or a cancel) and 55P03 (lock_not_available: the lock timeout). The statement
 * (and its transaction) did nothing; the same work may succeed once the holder lets go.
 */
const GAVE_UP_SQLSTATE = new Set(['57014', '55P03']);

/** Whether `error` is the server refusing a statement that ran or waited too long (see {@link GAVE_UP_SQLSTATE}). */
export function isTimeoutRefusal(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return error instanceof Error && typeof code === 'string' && GAVE_UP_SQLSTATE.has(code);
}

/** Whether `error` means "PostgreSQL is unreachable or dropped us" (try again later) rather than a bad query. */
export function isConnectionFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { code, errors } = error as { code?: unknown; errors?: { code?: unknown }[] };
  const codes = [code, ...(errors ?? []).map((e) => e.code)].filter((c) => typeof c === 'string');
  if (codes.some((c) => NETWORK_FAILURE.has(c) || CONNECTION_SQLSTATE.test(c))) return true;
  return CONNECTION_MESSAGE.test(error.message);
}

/**
 * Runs `fn`; a connection failure or a statement the server gave up on (a timeout) becomes a
 * retryable StoreUnavailableError, anything else is rethrown as is.
 */
export async function guarded<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw isConnectionFailure(error) || isTimeoutRefusal(error) ? new StoreUnavailableError(error) : error;
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

/** pg's query config: named (prepared once per connection, by pg) when `options.prepareAs` asks. */
function statement(
  sql: string,
  params: readonly SqlValue[],
  options: QueryOptions | undefined,
): pg.QueryConfig {
  const values = params as SqlValue[];
  return options?.prepareAs ? { name: options.prepareAs, text: sql, values } : { text: sql, values };
}

export function openPostgresDatabase(connectionString: string, options: PostgresOptions): SqlDatabase {
  const { schema } = options;
  if (!isValidSchemaName(schema)) throw new Error(`invalid schema name ${schema}`);
  const onError = options.onConnectionError ?? (() => undefined);
  const poolSize = options.poolSize ?? 8;
  const pool = new pg.Pool({
    connectionString,
    max: poolSize,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    options: `-c search_path=${schema}`,
    types,
    statement_timeout: options.statementTimeoutMs ?? POSTGRES_TIMEOUT_DEFAULTS.statementTimeoutMs,
    lock_timeout: options.lockTimeoutMs ?? POSTGRES_TIMEOUT_DEFAULTS.lockTimeoutMs,
    idle_in_transaction_session_timeout:
      options.idleInTransactionTimeoutMs ?? POSTGRES_TIMEOUT_DEFAULTS.idleInTransactionTimeoutMs,
    // A server that vanished without a FIN (a failover, a dropped route) is noticed by TCP instead
    // of leaving a query waiting on a dead socket.
    keepAlive: true,
  });
  watchConnections(pool, onError);
  const gate = createGate(poolSize, options.queueTimeoutMs ?? 60_000);

  /**
   * A connection of the pool for `fn`, through the gate. A failure to connect refuses the queue too
   * (the server is unreachable now) and is a StoreUnavailableError unless `rawConnectErrors` (the
   * start-up ping reports the driver's code); a failure on one connection (a terminated backend)
   * refuses only its own work, and that connection is dropped, not returned to the pool.
   */
  async function withClient<T>(
    fn: (client: pg.PoolClient, markBroken: () => void) => Promise<T>,
    rawConnectErrors = false,
  ): Promise<T> {
    await gate.acquire();
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      gate.release();
      if (!isConnectionFailure(error)) throw error;
      const unavailable = new StoreUnavailableError(error);
      gate.fail(unavailable);
      throw rawConnectErrors ? error : unavailable;
    }
    let broken = false;
    try {
      return await fn(client, () => {
        broken = true;
      });
    } catch (error) {
      // A statement the server timed out leaves its session usable; a lost connection does not.
      const cause = error instanceof StoreUnavailableError ? error.cause : error;
      if (
        !isTimeoutRefusal(cause) &&
        (error instanceof StoreUnavailableError || isConnectionFailure(error))
      ) {
        broken = true;
      }
      throw error;
    } finally {
      client.release(broken ? true : undefined);
      gate.release();
    }
  }

  const executorOn = (client: pg.PoolClient, depth: number): SqlExecutor => ({
    engine: 'postgres',
    query: async <T>(sql: string, params: readonly SqlValue[] = [], options?: QueryOptions) =>
      guarded(async () => (await client.query(statement(sql, params, options))).rows as T[]),
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
    query: <T>(sql: string, params: readonly SqlValue[] = [], options?: QueryOptions) =>
      withClient((client) =>
        guarded(async () => (await client.query(statement(sql, params, options))).rows as T[]),
      ),
    execute: (sql, params = []) =>
      withClient((client) =>
        guarded(async () => (await client.query(sql, params as SqlValue[])).rowCount ?? 0),
      ),
    transaction: (fn) =>
      withClient(async (client, markBroken) => {
        try {
          await guarded(() => client.query('BEGIN'));
          const out = await fn(executorOn(client, 0));
          await guarded(() => client.query('COMMIT'));
          return out;
        } catch (error) {
          // A ROLLBACK that fails means the connection is gone.
          await client.query('ROLLBACK').catch(markBroken);
          throw error;
        }
      }),
    async executeScript(sql) {
      await withClient((client) => client.query(sql), true);
    },
    async ping() {
      await withClient((client) => client.query('SELECT 1'), true);
    },
    async close() {
      await pool.end();
    },
  };
}
