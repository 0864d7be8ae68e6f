/**
 * Durable state of the two sync jobs, in the same SQLite file as approvals (`databasePath(config)`):
 *
 * - the lifecycle poller's watermark `(SystemModstamp, Id)` and the last status it saw per Account,
 *   so a restart continues exactly where it stopped and a re-read record never fires twice;
 * - the score sync's run checkpoint (keyset cursor + counters) and its Task ledger, so an
 *   interrupted run resumes without redoing finished batches or creating a Task twice.
 *
 * Every multi-row change is one transaction: the watermark never moves without the status it covers.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

/** A position in `ORDER BY SystemModstamp, Id`: everything at or before it has been handled. */
export interface Watermark {
  /** ISO-8601 as Salesforce returns it (`2024-05-01T12:00:00.000+0000`). */
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

/** One owner Task of a run: `intent` is written before the create call, `created` after it. */
export interface TaskLedgerEntry {
  account_id: string;
  state: 'intent' | 'created';
  task_id?: string;
}

export interface SyncStateStore {
  getWatermark(name: string): Watermark | undefined;
  /** Statuses last seen for these accounts (absent: never seen). */
  seenStatuses(accountIds: string[]): Map<string, string | null>;
  /** Atomically: record the statuses seen and move the watermark. */
  advance(name: string, watermark: Watermark, seen: { accountId: string; status: string | null }[]): void;

  /** The unfinished run, if any (there is at most one). */
  openRun(): ScoreSyncRun | undefined;
  createRun(id: string, startedAt: string): ScoreSyncRun;
  /** Atomically: move the cursor and store the counters after a batch. */
  checkpoint(runId: string, cursor: string, counters: ScoreSyncCounters): void;
  finishRun(runId: string, counters: ScoreSyncCounters): void;
  tasks(runId: string, accountIds: string[]): Map<string, TaskLedgerEntry>;
  recordTaskIntents(runId: string, accountIds: string[]): void;
  recordTaskCreated(runId: string, accountId: string, taskId: string): void;
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sync_watermarks (
  name TEXT PRIMARY KEY,
  modstamp TEXT NOT NULL,
  last_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lifecycle_seen (
  account_id TEXT PRIMARY KEY,
  status TEXT
);
CREATE TABLE IF NOT EXISTS score_sync_runs (
  id TEXT PRIMARY KEY,
  started_at TEXT NOT NULL,
  cursor TEXT NOT NULL,
  state TEXT NOT NULL,
  counters TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS score_sync_tasks (
  run_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  state TEXT NOT NULL,
  task_id TEXT,
  PRIMARY KEY (run_id, account_id)
);
`;

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

/** Open (and create if needed) the sync state at `path`, usually `databasePath(config)`. */
export function openSqliteSyncStateStore(path: string): SyncStateStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  db.exec(SCHEMA);

  const transaction = (fn: () => void) => {
    db.exec('BEGIN IMMEDIATE');
    try {
      fn();
      db.exec('COMMIT');
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
  };
  const placeholders = (n: number) => Array.from({ length: n }, () => '?').join(', ');

  const upsertWatermark = db.prepare(
    `INSERT INTO sync_watermarks (name, modstamp, last_id) VALUES (?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET modstamp = excluded.modstamp, last_id = excluded.last_id`,
  );
  const upsertSeen = db.prepare(
    `INSERT INTO lifecycle_seen (account_id, status) VALUES (?, ?)
     ON CONFLICT(account_id) DO UPDATE SET status = excluded.status`,
  );

  return {
    getWatermark(name) {
      const row = db.prepare('SELECT modstamp, last_id FROM sync_watermarks WHERE name = ?').get(name) as
        { modstamp: string; last_id: string } | undefined;
      return row ? { modstamp: row.modstamp, id: row.last_id } : undefined;
    },
    seenStatuses(accountIds) {
      const out = new Map<string, string | null>();
      // SQLite caps bound parameters; pages are ≤2000 ids, so chunk well below the limit.
      for (let i = 0; i < accountIds.length; i += 500) {
        const chunk = accountIds.slice(i, i + 500);
        const rows = db
          .prepare(
            `SELECT account_id, status FROM lifecycle_seen WHERE account_id IN (${placeholders(chunk.length)})`,
          )
          .all(...chunk) as unknown as { account_id: string; status: string | null }[];
        for (const row of rows) out.set(row.account_id, row.status);
      }
      return out;
    },
    advance(name, watermark, seen) {
      transaction(() => {
        for (const s of seen) upsertSeen.run(s.accountId, s.status);
        upsertWatermark.run(name, watermark.modstamp, watermark.id);
      });
    },

    openRun() {
      const row = db
        .prepare(`SELECT * FROM score_sync_runs WHERE state = 'running' ORDER BY started_at DESC LIMIT 1`)
        .get() as RunRow | undefined;
      return row ? runFromRow(row) : undefined;
    },
    createRun(id, startedAt) {
      db.prepare(
        `INSERT INTO score_sync_runs (id, started_at, cursor, state, counters) VALUES (?, ?, '', 'running', ?)`,
      ).run(id, startedAt, JSON.stringify(EMPTY_COUNTERS));
      return { id, started_at: startedAt, cursor: '', state: 'running', counters: { ...EMPTY_COUNTERS } };
    },
    checkpoint(runId, cursor, counters) {
      db.prepare('UPDATE score_sync_runs SET cursor = ?, counters = ? WHERE id = ?').run(
        cursor,
        JSON.stringify(counters),
        runId,
      );
    },
    finishRun(runId, counters) {
      db.prepare(`UPDATE score_sync_runs SET state = 'done', counters = ? WHERE id = ?`).run(
        JSON.stringify(counters),
        runId,
      );
    },
    tasks(runId, accountIds) {
      const out = new Map<string, TaskLedgerEntry>();
      for (let i = 0; i < accountIds.length; i += 500) {
        const chunk = accountIds.slice(i, i + 500);
        const rows = db
          .prepare(
            `SELECT account_id, state, task_id FROM score_sync_tasks WHERE run_id = ? AND account_id IN (${placeholders(chunk.length)})`,
          )
          .all(runId, ...chunk) as unknown as { account_id: string; state: string; task_id: string | null }[];
        for (const row of rows) {
          out.set(row.account_id, {
            account_id: row.account_id,
            state: row.state === 'created' ? 'created' : 'intent',
            ...(row.task_id ? { task_id: row.task_id } : {}),
          });
        }
      }
      return out;
    },
    recordTaskIntents(runId, accountIds) {
      const insert = db.prepare(
        `INSERT OR IGNORE INTO score_sync_tasks (run_id, account_id, state) VALUES (?, ?, 'intent')`,
      );
      transaction(() => {
        for (const id of accountIds) insert.run(runId, id);
      });
    },
    recordTaskCreated(runId, accountId, taskId) {
      db.prepare(
        `UPDATE score_sync_tasks SET state = 'created', task_id = ? WHERE run_id = ? AND account_id = ?`,
      ).run(taskId, runId, accountId);
    },
    close() {
      if (db.isOpen) db.close();
    },
  };
}
