/**
 * The SQLite engine: one `node:sqlite` connection per process on the file in the data directory,
 * WAL (the CLI reads while the server writes) and `synchronous = FULL` (an acknowledged webhook or
 * approval survives a power cut). `node:sqlite` is synchronous underneath; the async interface is a
 * thin wrapper so state code is written once for both engines.
 *
 * One connection means an open transaction would swallow any statement another caller sends while
 * the transaction awaits: statements outside a transaction therefore wait while one is open, and
 * transactions queue one after the other (BEGIN IMMEDIATE also keeps other processes out). Other
 * processes on the same file (the CLI, `outbox work`) wait for the file lock (busy_timeout).
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type { SqlDatabase, SqlExecutor, SqlValue } from '../sql.ts';

/** `$1` → `?1`: SQLite numbers parameters the same way, so positional binding keeps working. */
const toSqlite = (sql: string) => sql.replace(/\$(\d+)/g, '?$1');

/** `undefined` (an absent optional field) is stored as NULL. */
const bind = (params: readonly SqlValue[]) => params.map((p) => p ?? null) as SQLInputValue[];

/**
 * One connection per file per process, shared by every `openSqliteDatabase` of that file (the
 * runtime, the automation and a test's second handle): two connections in one process would
 * deadlock, since a busy wait for the file lock blocks the very event loop the lock holder needs.
 */
interface Connection {
  db: DatabaseSync;
  statements: Map<string, StatementSync>;
  /** Transactions (and statements sent while one is open) run one after another through this queue. */
  queue: Promise<unknown>;
  inTransaction: boolean;
  savepoints: number;
  refs: number;
}

const connections = new Map<string, Connection>();

function connect(path: string): Connection {
  const key = path === ':memory:' ? undefined : resolve(path);
  const existing = key === undefined ? undefined : connections.get(key);
  if (existing) {
    existing.refs += 1;
    return existing;
  }
  if (key !== undefined) mkdirSync(dirname(key), { recursive: true });
  const db = new DatabaseSync(key ?? ':memory:');
  // busy_timeout: a writer in another process (CLI, `outbox work`) makes us wait, not fail.
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;');
  const connection: Connection = {
    db,
    statements: new Map(),
    queue: Promise.resolve(),
    inTransaction: false,
    savepoints: 0,
    refs: 1,
  };
  if (key !== undefined) connections.set(key, connection);
  return connection;
}

/**
 * `PRAGMA data_version` of this process's connection to the file at `path` (undefined while none is
 * open). It changes when another connection (another process, or the ledger's worker thread)
 * commits to the file, never for this connection's own commits: a cheap way to notice other
 * processes' writes (approval-watch.ts). Synchronous and outside the transaction queue: it reads no
 * table, so an open transaction does not matter.
 */
export function sqliteDataVersion(path: string): number | undefined {
  if (path === ':memory:') return undefined;
  const c = connections.get(resolve(path));
  if (!c || !c.db.isOpen) return undefined;
  let statement = c.statements.get(DATA_VERSION);
  if (!statement) {
    statement = c.db.prepare(DATA_VERSION);
    c.statements.set(DATA_VERSION, statement);
  }
  return Number((statement.get() as { data_version: number | bigint }).data_version);
}
const DATA_VERSION = 'PRAGMA data_version';

export function openSqliteDatabase(path: string): SqlDatabase {
  const c = connect(path);
  const { db } = c;
  const prepare = (sql: string) => {
    let statement = c.statements.get(sql);
    if (!statement) {
      statement = db.prepare(toSqlite(sql));
      c.statements.set(sql, statement);
    }
    return statement;
  };
  const querySync = <T>(sql: string, params: readonly SqlValue[] = []) =>
    prepare(sql).all(...bind(params)) as T[];
  const executeSync = (sql: string, params: readonly SqlValue[] = []) =>
    Number(prepare(sql).run(...bind(params)).changes);

  /** An executor bound to the open transaction; nested transactions are savepoints. */
  const inside: SqlExecutor = {
    engine: 'sqlite',
    query: async (sql, params) => querySync(sql, params),
    execute: async (sql, params) => executeSync(sql, params),
    async transaction(fn) {
      const name = `sp_${++c.savepoints}`;
      db.exec(`SAVEPOINT ${name}`);
      try {
        const out = await fn(inside);
        db.exec(`RELEASE ${name}`);
        return out;
      } catch (error) {
        db.exec(`ROLLBACK TO ${name}; RELEASE ${name}`);
        throw error;
      }
    },
  };

  /** Runs after every queued transaction (and the one in progress) has finished. */
  const afterTransactions = <T>(fn: () => T): Promise<T> => {
    const run = c.queue.then(fn, fn);
    c.queue = run.catch(() => undefined);
    return run;
  };

  let closed = false;
  // The connection is shared (refcounted), so closing this handle may leave it open for others: a
  // closed handle must still refuse, as a closed database would, instead of quietly answering.
  const ensureOpen = () => {
    if (closed) throw new Error('the SQLite store handle is closed');
  };
  const database: SqlDatabase = {
    engine: 'sqlite',
    async query(sql, params) {
      ensureOpen();
      return c.inTransaction ? afterTransactions(() => querySync(sql, params)) : querySync(sql, params);
    },
    async execute(sql, params) {
      ensureOpen();
      return c.inTransaction ? afterTransactions(() => executeSync(sql, params)) : executeSync(sql, params);
    },
    transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      if (closed) return Promise.reject(new Error('the SQLite store handle is closed'));
      const run = c.queue.then(async () => {
        // IMMEDIATE takes the write lock up front, so two processes never both read the same due rows.
        db.exec('BEGIN IMMEDIATE');
        c.inTransaction = true;
        try {
          const out = await fn(inside);
          db.exec('COMMIT');
          return out;
        } catch (error) {
          if (db.isTransaction) db.exec('ROLLBACK');
          throw error;
        } finally {
          c.inTransaction = false;
        }
      });
      c.queue = run.catch(() => undefined);
      return run;
    },
    async executeScript(sql) {
      ensureOpen();
      await afterTransactions(() => db.exec(sql));
    },
    async ping() {
      await database.query('SELECT 1');
    },
    async close() {
      if (closed) return;
      closed = true;
      await c.queue;
      c.refs -= 1;
      if (c.refs > 0) return;
      for (const [key, value] of connections) if (value === c) connections.delete(key);
      if (db.isOpen) db.close();
    },
  };
  return database;
}
