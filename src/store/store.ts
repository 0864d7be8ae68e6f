/**
 * `openStore`: the one place durable state is opened. Behind it, one interface per kind of state
 * (approvals, identities, sync state, the outbox, job leases and job runs; the audit ledger and the session
 * registries add theirs the same way), on the engine the `store` setting names:
 *
 * - `sqlite` (default): `fraudgate.db` in the data directory; one host (the server, the CLI and
 *   extra `outbox work` processes share the file).
 * - `postgres`: FRAUDGATE_POSTGRES_URL, tables in `store_postgres.schema`; any number of replicas.
 *
 * Migrations (src/store/migrations.ts) are applied before `openStore` resolves. A PostgreSQL server
 * that is unreachable at start-up is retried for `store_postgres.startup_timeout_ms`; then
 * `openStore` rejects with a message naming the server (never the credentials) and what to check.
 *
 * Open one store per process and pass it around: the runtime, the automation worker, the console
 * and the CLI commands all take it.
 */
import { join } from 'node:path';
import type { Config, Secrets } from '../config.ts';
import { DATABASE_FILE } from '../data-dir.ts';
import { StartupError } from '../startup.ts';
import { FraudgateError, ERROR_CODES } from '../errors.ts';
import { createApprovalStore, type ApprovalStore } from './approval-store.ts';
import { KEY_CHECK_CONTEXT, type FieldCipher } from './field-crypto.ts';
import { createIdentityStore, type IdentityStore } from './identity-store.ts';
import { createJobStateStore, type JobStateStore } from './job-state-store.ts';
import { createLeaseStore, type LeaseStore } from './lease-store.ts';
import { sealLegacyPlaintext } from './legacy-sealing.ts';
import { migrate } from './migrations.ts';
import { sealedValuesProblem } from './reseal.ts';
import { createOutboxStore, type OutboxQueue, type OutboxStore } from './outbox-store.ts';
import type { SqlDatabase, SqlExecutor, StoreEngine } from './sql.ts';
import { createReplicaInstanceStore, type ReplicaInstanceStore } from './replica-instance-store.ts';
import { openSqliteDatabase } from './sqlite/database.ts';
import { sqliteOutboxQueue } from './sqlite/outbox-queue.ts';
import { createSyncStateStore, type SyncStateStore } from './sync-state-store.ts';

/** Every kind of state, bound to one executor (the database, or one transaction). */
export interface StateStores {
  approvals: ApprovalStore;
  identities: IdentityStore;
  syncState: SyncStateStore;
  outbox: OutboxStore;
  leases: LeaseStore;
  /** Background jobs' schedules and last runs, the fleet view (src/jobs/). */
  jobs: JobStateStore;
  /** Which process holds each replica id (src/replica-registration.ts). */
  replicas: ReplicaInstanceStore;
  /** The raw executor, for state modules built on top (e.g. the audit ledger: `createX(tx.sql)`). */
  sql: SqlExecutor;
}

export interface Store extends StateStores {
  readonly engine: StoreEngine;
  /** Where it lives, for messages: the SQLite path, or the PostgreSQL URL without credentials. */
  readonly location: string;
  /**
   * Run `fn` in one transaction with every state interface bound to it: all of its changes commit
   * together or not at all (e.g. an approval transition and its audit record).
   */
  transaction<T>(fn: (tx: StateStores) => Promise<T>): Promise<T>;
  /** Resolves when the database answers; rejects with the reason otherwise (readiness). */
  ping(): Promise<void>;
  /** False once `close` was called: a synchronous check for caches that skip the database. */
  isOpen(): boolean;
  close(): Promise<void>;
}

export const databasePath = (config: Pick<Config, 'data_dir'>) => join(config.data_dir, DATABASE_FILE);

export interface OpenStoreOptions {
  /** Told about connection failures outside a query (the connection is replaced on next use). */
  onConnectionError?: (error: Error) => void;
  /** Told before each retry while the database is unreachable at start-up. */
  onWaiting?: (message: string) => void;
  /**
   * Seals the outbox's personal fields (src/store/field-crypto.ts). Every store opened from
   * configuration has one (`openConfiguredStore`); without it rows are written plain.
   */
  cipher?: FieldCipher;
}

function bind(
  db: SqlExecutor,
  config: Pick<Config, 'identity'>,
  queue: OutboxQueue,
  scope: 'database' | 'transaction',
  cipher: FieldCipher | undefined,
): StateStores {
  return {
    approvals: createApprovalStore(db),
    identities: createIdentityStore(db, config.identity),
    syncState: createSyncStateStore(db),
    // Group commit only at the top: inside a transaction the caller's commit is the one that counts.
    outbox: createOutboxStore(db, queue, {
      groupCommit: scope === 'database',
      ...(cipher ? { cipher } : {}),
    }),
    leases: createLeaseStore(db),
    jobs: createJobStateStore(db),
    replicas: createReplicaInstanceStore(db),
    sql: db,
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Ping until it answers or `timeoutMs` has passed; then a message that names the server and what to check. */
async function waitUntilReachable(
  db: SqlDatabase,
  location: string,
  timeoutMs: number,
  onWaiting: (message: string) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await db.ping();
      return;
    } catch (error) {
      const e = error as { code?: string; errors?: { code?: string }[]; message?: string };
      const reason = e.code ?? e.errors?.[0]?.code ?? (e.message || 'no answer');
      if (Date.now() >= deadline) {
        await db.close().catch(() => undefined);
        throw new StartupError(
          'FRAUDGATE_POSTGRES_URL',
          `PostgreSQL at ${location} does not answer (${reason}): retried for ${Math.round(timeoutMs / 1000)} s; ` +
            'start it or fix FRAUDGATE_POSTGRES_URL (host, port, database, user, password; store is postgres; ' +
            'store_postgres.startup_timeout_ms sets how long to wait)',
          { cause: error },
        );
      }
      onWaiting(`PostgreSQL at ${location} does not answer (${reason}); retrying (attempt ${attempt})`);
      await sleep(Math.min(2_000, 250 * 2 ** Math.min(attempt, 3), Math.max(0, deadline - Date.now())));
    }
  }
}

const KEY_CHECK_VALUE = 'fraudgate data key check';

/**
 * Refuse a data key other than the one this database was sealed with, at start-up, instead of
 * failing on each sealed row later. The first start with a key stores a known value sealed under
 * it; replicas share that row, and of several starting at once the first insert wins (the others
 * insert nothing and check against it).
 */
export async function checkDataKey(db: SqlExecutor, cipher: FieldCipher, now = Date.now()): Promise<void> {
  const refuse = () =>
    new StartupError(
      'FRAUDGATE_DATA_KEY',
      'FRAUDGATE_DATA_KEY differs from the key this database was sealed with: its sealed approvals and outbox ' +
        'effects would not open. Start with the original key (every replica needs the same one; the sandbox ' +
        'keeps its key in data.key in the data directory), or, while rotating, set the original key as ' +
        'FRAUDGATE_DATA_KEY_PREVIOUS until `fraudgate data-key status` shows nothing under it.',
    );
  const [existing] = await db.query<{ sealed: string }>('SELECT sealed FROM key_check WHERE id = 1');
  // A database sealed before the check existed (migration 32) has no check value yet: the first key
  // must not become it unless the rows already sealed open under it.
  if (existing === undefined && (await sealedValuesProblem(db, cipher)) !== undefined) throw refuse();
  // Sealed and inserted only when absent: of several replicas starting at once the first insert wins.
  const insertAndRead = async () => {
    await db.execute(
      'INSERT INTO key_check (id, sealed, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING',
      [cipher.seal(KEY_CHECK_VALUE, KEY_CHECK_CONTEXT), now],
    );
    const [inserted] = await db.query<{ sealed: string }>('SELECT sealed FROM key_check WHERE id = 1');
    return inserted;
  };
  const row = existing ?? (await insertAndRead());
  const opens = () => {
    try {
      return row !== undefined && cipher.open(row.sealed, KEY_CHECK_CONTEXT) === KEY_CHECK_VALUE;
    } catch {
      return false;
    }
  };
  if (!opens()) throw refuse();
}

export async function openStore(
  config: Pick<Config, 'store' | 'store_postgres' | 'data_dir' | 'identity'>,
  secrets: Pick<Secrets, 'postgresUrl'>,
  options: OpenStoreOptions = {},
): Promise<Store> {
  let db: SqlDatabase;
  /** Where the replica heartbeat runs, when not on `db` (see below). */
  let heartbeatDb: SqlDatabase | undefined;
  let location: string;
  let queue: OutboxQueue = sqliteOutboxQueue;
  if (config.store === 'postgres') {
    if (!secrets.postgresUrl) {
      throw new FraudgateError(
        ERROR_CODES.INVALID_INPUT,
        'FRAUDGATE_POSTGRES_URL is required when store is postgres.',
      );
    }
    // Loaded only here: a single-host deployment never loads the PostgreSQL driver.
    const [{ describePostgresUrl, openPostgresDatabase }, { createPostgresOutboxQueue }] = await Promise.all([
      import('./postgres/database.ts'),
      import('./postgres/outbox-queue.ts'),
    ]);
    queue = createPostgresOutboxQueue();
    location = describePostgresUrl(secrets.postgresUrl);
    const postgresOptions = {
      schema: config.store_postgres.schema,
      poolSize: config.store_postgres.pool_size,
      statementTimeoutMs: config.store_postgres.statement_timeout_ms,
      lockTimeoutMs: config.store_postgres.lock_timeout_ms,
      idleInTransactionTimeoutMs: config.store_postgres.idle_in_transaction_timeout_ms,
      ...(options.onConnectionError ? { onConnectionError: options.onConnectionError } : {}),
    };
    db = openPostgresDatabase(secrets.postgresUrl, postgresOptions);
    await waitUntilReachable(
      db,
      location,
      config.store_postgres.startup_timeout_ms,
      options.onWaiting ?? (() => undefined),
    );
    // The replica registration's own connection (src/replica-registration.ts), made on first use
    // (by `serve` only). Behind the pool's queue, a pool saturated by calls would hold a live
    // replica's heartbeat back for up to a minute, and a twin starting meanwhile would take its id.
    heartbeatDb = openPostgresDatabase(secrets.postgresUrl, { ...postgresOptions, poolSize: 1 });
  } else {
    location = databasePath(config);
    db = openSqliteDatabase(location);
  }
  try {
    await migrate(db, { schema: config.store_postgres.schema });
    if (options.cipher) {
      await checkDataKey(db, options.cipher);
      // Rows from before sealing (listed by migration 33) sealed once, under the checked key;
      // plain text in a sealed column is refused after that.
      await sealLegacyPlaintext(db, options.cipher);
    }
  } catch (error) {
    await Promise.all([db.close(), heartbeatDb?.close()]).catch(() => undefined);
    throw error;
  }
  let open = true;
  return {
    ...bind(db, config, queue, 'database', options.cipher),
    replicas: createReplicaInstanceStore(heartbeatDb ?? db),
    engine: db.engine,
    location,
    transaction: (fn) => db.transaction((tx) => fn(bind(tx, config, queue, 'transaction', options.cipher))),
    ping: () => db.ping(),
    isOpen: () => open,
    close: async () => {
      open = false;
      await Promise.all([db.close(), heartbeatDb?.close()]);
    },
  };
}
