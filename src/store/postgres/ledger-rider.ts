/**
 * A write that rides on the audit ledger's group commit (PostgreSQL): one statement, so one round
 * trip and one durable commit, in which the ledger's compare-and-set on its writer's head, its
 * records and the rider's own rows all commit together, or none of them do.
 *
 * The webhook intake uses it (src/store/postgres/outbox-queue.ts): a group of new events and their
 * receipt records, which otherwise take a transaction of six round trips. The rider is handed to
 * `AuditLog.appendManyIn` in place of a transaction; the PostgreSQL ledger store
 * (audit-ledger-store.ts) recognises it in `commitIn`, chains the records from the head it already
 * knows, and sends its commit statement with the rider's SQL added. Anything else that tries to use
 * it as a transaction is refused, and nothing is sent: the caller then takes the transaction way.
 */
import type { SqlExecutor, SqlValue } from '../sql.ts';

/** The rider's part of the ledger's commit statement. */
export interface LedgerRiderSql {
  /** Prepared-statement name of the combined statement (one name, one text). */
  name: string;
  /**
   * Further CTEs (`name AS (…)`, comma-separated), run for each row of `won` (one when the commit
   * won). Their parameters are numbered from $15. An error in them fails the whole statement.
   */
  then: string;
  /** $15, $16, … */
  params: SqlValue[];
}

/**
 * What became of the statement: `unsent` (the ledger never sent it), `committed`, `lost` (the
 * writer's head had moved: nothing written), `failed` (an error: nothing written when PostgreSQL
 * refused the statement, unknown when the connection failed).
 */
export type LedgerRiderOutcome = 'unsent' | 'committed' | 'lost' | 'failed';

export interface LedgerRider extends SqlExecutor {
  readonly rider: LedgerRiderSql;
  /** The database it must commit on: the ledger's own, or it is not sent. */
  readonly db: SqlExecutor;
  outcome: LedgerRiderOutcome;
}

const RIDER = Symbol('fraudgate.ledgerRider');

/** A rider on `db` for one ledger commit. */
export function createLedgerRider(db: SqlExecutor, rider: LedgerRiderSql): LedgerRider {
  const refuse = () =>
    Promise.reject(new Error('a ledger rider is one statement, sent by the ledger, not a transaction'));
  return {
    [RIDER]: true,
    engine: 'postgres',
    rider,
    db,
    outcome: 'unsent',
    query: refuse,
    execute: refuse,
    transaction: refuse,
  } as LedgerRider;
}

export function isLedgerRider(tx: SqlExecutor): tx is LedgerRider {
  return (tx as { [RIDER]?: boolean })[RIDER] === true;
}
