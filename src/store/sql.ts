/**
 * The one seam between the state modules and the two database engines. State code (approvals,
 * identities, sync state, leases, and whatever the audit ledger and the session registry add) is
 * written once against `SqlExecutor`; `src/store/sqlite/database.ts` and
 * `src/store/postgres/database.ts` implement it.
 *
 * Placeholders are `$1, $2, …` on both engines (SQLite receives them as `?1, ?2, …`), so one
 * statement serves both wherever the dialects agree (upserts with `ON CONFLICT`, `RETURNING`,
 * partial indexes). Integers come back as JS numbers on both engines (PostgreSQL BIGINT included:
 * ours are epoch milliseconds and counts).
 *
 * Transactions: `transaction(fn)` runs `fn` with an executor bound to the transaction, commits when
 * it resolves and rolls back when it throws; nested calls become savepoints. Inside `fn`, use only
 * the executor it receives: on SQLite the process has one connection, and a statement sent through
 * the outer executor waits until the transaction ends (it would deadlock). This is how the audit
 * ledger appends its record in the same transaction as the approval or outbox transition it records:
 * `store.transaction(async (tx) => { await tx.approvals.transition(…); await ledgerOn(tx.sql).append(…) })`.
 */

export type SqlValue = string | number | null;
export type SqlRow = Record<string, unknown>;

export type StoreEngine = 'sqlite' | 'postgres';

export interface QueryOptions {
  /**
   * PostgreSQL: prepare the statement under this name on each connection the first time it runs
   * there, so later runs skip parsing and planning (a hot statement's server CPU; the audit
   * ledger's group commit). One name, one text. SQLite ignores it (its executor caches anyway).
   */
  prepareAs?: string;
}

export interface SqlExecutor {
  readonly engine: StoreEngine;
  /** The rows a statement returns (SELECT, or anything with RETURNING). */
  query<T = SqlRow>(sql: string, params?: readonly SqlValue[], options?: QueryOptions): Promise<T[]>;
  /** Run a statement; resolves to the number of rows it changed. */
  execute(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /** Run `fn` in a transaction (a savepoint when already inside one); see the module comment. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
}

/** A connection (SQLite) or pool (PostgreSQL) with its lifecycle. */
export interface SqlDatabase extends SqlExecutor {
  /** Several statements without parameters (migrations). */
  executeScript(sql: string): Promise<void>;
  /** Resolves when the database answers a trivial query; rejects with the reason otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** `?, ?, ?` style lists are engine-specific; this builds `$k, $k+1, …` for `n` values from `start`. */
export function placeholders(n: number, start = 1): string {
  return Array.from({ length: n }, (_, i) => `$${start + i}`).join(', ');
}
