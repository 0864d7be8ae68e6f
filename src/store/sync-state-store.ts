/**
 * Durable state of the two sync jobs, in the store (the SQLite file or PostgreSQL):
 *
 * - the watchers' watermarks (the lifecycle poller's AccountHistory, the Lead watcher's Leads), so a
 *   restart continues exactly where it stopped;
 * - the score sync's run checkpoint (keyset cursor + counters) and its Task ledger, so an
 *   interrupted run resumes without redoing finished batches, and no run (a resumed one, a retry,
 *   tomorrow's) creates a second Task for the same score movement of an account.
 *
 * - the record watchers' handled sets (the lifecycle poller's history rows, the Lead watcher's
 *   Leads): a watcher re-reads an overlap window behind its watermark, because Salesforce stamps
 *   whole seconds and a transaction may commit after a later-stamped one, and skips what it handled.
 *
 * Every multi-row change is one transaction: the watermark never moves without the records it covers.
 * (`lifecycle_seen`, the per-Account status of the value-polling poller before history, is no longer read.)
 * The score sync runs under a job lease (one process in the fleet at a time); should two processes
 * still start a run at the same instant, `createRun` makes them share the one open run and its ledger.
 */
import type { Migration } from './migrations.ts';
import { placeholders, type SqlExecutor } from './sql.ts';

/** Workflows range (200–249, see migrations.ts); 13 is the core range's (it replaces core table 3's ledger). */
export const SYNC_STATE_MIGRATIONS: Migration[] = [
  {
    version: 13,
    name: 'score-sync Task ledger keyed by account and score movement',
    // score_sync_tasks (run, account) is left in place, no longer written: a replica of the previous
    // version may still run during a rolling upgrade.
    sqlite: `CREATE TABLE score_sync_task_ledger (
  account_id TEXT PRIMARY KEY, movement TEXT NOT NULL, run_id TEXT NOT NULL, state TEXT NOT NULL, task_id TEXT
);`,
    postgres: `CREATE TABLE score_sync_task_ledger (
  account_id TEXT PRIMARY KEY, movement TEXT NOT NULL, run_id TEXT NOT NULL, state TEXT NOT NULL, task_id TEXT
);`,
  },
  {
    version: 200,
    name: 'records handled by the watchers (history rows, Leads)',
    sqlite: `CREATE TABLE sync_handled (
  watcher TEXT NOT NULL, record_id TEXT NOT NULL, stamped_at TEXT NOT NULL, PRIMARY KEY (watcher, record_id)
);
CREATE INDEX sync_handled_age ON sync_handled (watcher, stamped_at);`,
    postgres: `CREATE TABLE sync_handled (
  watcher TEXT NOT NULL, record_id TEXT NOT NULL, stamped_at TEXT NOT NULL, PRIMARY KEY (watcher, record_id)
);
CREATE INDEX sync_handled_age ON sync_handled (watcher, stamped_at);`,
  },
];

/** One record a watcher handled, with the time Salesforce stamped it (ISO-8601 UTC, `Z`). */
export interface HandledRecord {
  id: string;
  stampedAt: string;
}

/** A watcher's position in `ORDER BY CreatedDate, Id`: the latest record it handled. */
export interface Watermark {
  /** ISO-8601 UTC (`2024-05-01T12:00:00.000Z`). */
  modstamp: string;
  id: string;
}

/** Counters of a score-sync run; cumulative across resumes. */
export interface ScoreSyncCounters {
  accounts: number;
  changed: number;
  tasks: number;
  unchanged: number;
  skipped: number;
  failed: number;
  sift_calls: number;
  salesforce_calls: number;
}

export interface ScoreSyncRun {
  id: string;
  started_at: string;
  /** Last Account Id fully handled (keyset cursor); '' before the first batch. */
  cursor: string;
  state: 'running' | 'done';
  counters: ScoreSyncCounters;
}

/**
 * The owner Task for an account's pending score movement (`10->80`: Salesforce's score → Sift's):
 * `intent` is written before the create call, `created` after it. One entry per account; it lasts
 * until the account's new score is in Salesforce, so a movement whose update keeps failing gets one
 * Task however many runs retry it.
 */
export interface TaskLedgerEntry {
  account_id: string;
  movement: string;
  /** The run that recorded the intent (a later run's dedupe is not a Task of its own). */
  run_id: string;
  state: 'intent' | 'created';
  task_id?: string;
}

export interface SyncStateStore {
  getWatermark(name: string): Promise<Watermark | undefined>;
  /** Which of these records the watcher has handled already. */
  handled(watcher: string, ids: string[]): Promise<Set<string>>;
  /**
   * Atomically: remember these records as handled, move the watcher's watermark to `watermark`
   * (the caller passes the later of the old one and the records'), and forget handled records
   * stamped before `forgetBefore` (older than the overlap window: never read again).
   */
  markHandled(
    watcher: string,
    watermark: Watermark,
    records: HandledRecord[],
    forgetBefore?: string,
  ): Promise<void>;

  /** The unfinished run, if any (there is at most one). */
  openRun(): Promise<ScoreSyncRun | undefined>;
  /** Start a run, or join the one another process started meanwhile (at most one is open). */
  createRun(id: string, startedAt: string): Promise<ScoreSyncRun>;
  /** Atomically: move the cursor and store the counters after a batch. */
  checkpoint(runId: string, cursor: string, counters: ScoreSyncCounters): Promise<void>;
  finishRun(runId: string, counters: ScoreSyncCounters): Promise<void>;
  /** The Task ledger entries of these accounts (whatever movement they are for). */
  tasks(accountIds: string[]): Promise<Map<string, TaskLedgerEntry>>;
  /**
   * Record the intent to create a Task for each account's movement: an entry for another movement
   * is replaced; one for the same movement is kept if created, else taken over by `runId`.
   */
  recordTaskIntents(runId: string, intents: { accountId: string; movement: string }[]): Promise<void>;
  recordTaskCreated(accountId: string, movement: string, taskId: string): Promise<void>;
  /** Drop the entries of accounts whose score Salesforce now holds: their movement is done. */
  forgetTasks(accountIds: string[]): Promise<void>;
}

export const EMPTY_COUNTERS: ScoreSyncCounters = {
  accounts: 0,
  changed: 0,
  tasks: 0,
  unchanged: 0,
  skipped: 0,
  failed: 0,
  sift_calls: 0,
  salesforce_calls: 0,
};

interface RunRow {
  id: string;
  started_at: string;
  cursor: string;
  state: string;
  counters: string;
}

const runFromRow = (row: RunRow): ScoreSyncRun => ({
  id: row.id,
  started_at: row.started_at,
  cursor: row.cursor,
  state: row.state === 'done' ? 'done' : 'running',
  counters: { ...EMPTY_COUNTERS, ...(JSON.parse(row.counters) as Partial<ScoreSyncCounters>) },
});

/** SQLite caps bound parameters; pages are ≤2000 ids, so queries go in chunks well below the limit. */
const CHUNK = 500;

/** The sync state on one executor (the database, or a transaction). */
export function createSyncStateStore(db: SqlExecutor): SyncStateStore {
  return {
    async getWatermark(name) {
      const [row] = await db.query<{ modstamp: string; last_id: string }>(
        'SELECT modstamp, last_id FROM sync_watermarks WHERE name = $1',
        [name],
      );
      return row ? { modstamp: row.modstamp, id: row.last_id } : undefined;
    },
    async handled(watcher, ids) {
      const out = new Set<string>();
      for (let i = 0; i < ids.length; i += CHUNK) {
        const chunk = ids.slice(i, i + CHUNK);
        const rows = await db.query<{ record_id: string }>(
          `SELECT record_id FROM sync_handled WHERE watcher = $1 AND record_id IN (${placeholders(chunk.length, 2)})`,
          [watcher, ...chunk],
        );
        for (const row of rows) out.add(row.record_id);
      }
      return out;
    },
    async markHandled(watcher, watermark, records, forgetBefore) {
      await db.transaction(async (tx) => {
        for (const r of records) {
          await tx.execute(
            `INSERT INTO sync_handled (watcher, record_id, stamped_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
            [watcher, r.id, r.stampedAt],
          );
        }
        if (forgetBefore !== undefined) {
          await tx.execute('DELETE FROM sync_handled WHERE watcher = $1 AND stamped_at < $2', [
            watcher,
            forgetBefore,
          ]);
        }
        await tx.execute(
          `INSERT INTO sync_watermarks (name, modstamp, last_id) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO UPDATE SET modstamp = excluded.modstamp, last_id = excluded.last_id`,
          [watcher, watermark.modstamp, watermark.id],
        );
      });
    },

    async openRun() {
      const [row] = await db.query<RunRow>(
        `SELECT * FROM score_sync_runs WHERE state = 'running' ORDER BY started_at DESC, id LIMIT 1`,
      );
      return row ? runFromRow(row) : undefined;
    },
    async createRun(id, startedAt) {
      // The partial unique index (one running run) makes a concurrent second insert a no-op.
      await db.execute(
        `INSERT INTO score_sync_runs (id, started_at, cursor, state, counters) VALUES ($1, $2, '', 'running', $3)
         ON CONFLICT DO NOTHING`,
        [id, startedAt, JSON.stringify(EMPTY_COUNTERS)],
      );
      const [row] = await db.query<RunRow>(`SELECT * FROM score_sync_runs WHERE state = 'running' LIMIT 1`);
      if (!row) throw new Error('score-sync run could not be started');
      return runFromRow(row);
    },
    async checkpoint(runId, cursor, counters) {
      await db.execute('UPDATE score_sync_runs SET cursor = $1, counters = $2 WHERE id = $3', [
        cursor,
        JSON.stringify(counters),
        runId,
      ]);
    },
    async finishRun(runId, counters) {
      await db.execute(`UPDATE score_sync_runs SET state = 'done', counters = $1 WHERE id = $2`, [
        JSON.stringify(counters),
        runId,
      ]);
    },
    async tasks(accountIds) {
      const out = new Map<string, TaskLedgerEntry>();
      for (let i = 0; i < accountIds.length; i += CHUNK) {
        const chunk = accountIds.slice(i, i + CHUNK);
        const rows = await db.query<{
          account_id: string;
          movement: string;
          run_id: string;
          state: string;
          task_id: string | null;
        }>(
          `SELECT account_id, movement, run_id, state, task_id FROM score_sync_task_ledger
           WHERE account_id IN (${placeholders(chunk.length, 1)})`,
          chunk,
        );
        for (const row of rows) {
          out.set(row.account_id, {
            account_id: row.account_id,
            movement: row.movement,
            run_id: row.run_id,
            state: row.state === 'created' ? 'created' : 'intent',
            ...(row.task_id ? { task_id: row.task_id } : {}),
          });
        }
      }
      return out;
    },
    async recordTaskIntents(runId, intents) {
      await db.transaction(async (tx) => {
        for (const { accountId, movement } of intents) {
          await tx.execute(
            `INSERT INTO score_sync_task_ledger (account_id, movement, run_id, state) VALUES ($1, $2, $3, 'intent')
             ON CONFLICT (account_id) DO UPDATE SET movement = excluded.movement, run_id = excluded.run_id,
               state = 'intent', task_id = NULL
             WHERE score_sync_task_ledger.movement <> excluded.movement OR score_sync_task_ledger.state = 'intent'`,
            [accountId, movement, runId],
          );
        }
      });
    },
    async recordTaskCreated(accountId, movement, taskId) {
      await db.execute(
        `UPDATE score_sync_task_ledger SET state = 'created', task_id = $1 WHERE account_id = $2 AND movement = $3`,
        [taskId, accountId, movement],
      );
    },
    async forgetTasks(accountIds) {
      for (let i = 0; i < accountIds.length; i += CHUNK) {
        const chunk = accountIds.slice(i, i + CHUNK);
        await db.execute(
          `DELETE FROM score_sync_task_ledger WHERE account_id IN (${placeholders(chunk.length, 1)})`,
          chunk,
        );
      }
    },
  };
}
