/**
 * The fleet view of background jobs (src/jobs/): per job, its schedule as last registered, when it
 * is next due, and how its last run went (who ran it, when, how long, the error). Every replica
 * reads and writes the same rows, so `fraudgate jobs` on any of them shows the whole fleet, and a
 * job that ran on replica A is not due again on replica B until its next time.
 *
 * Who runs a job is decided by its lease (lease-store.ts), not here: these rows are only written by
 * the lease holder, and a lost write only means the job runs once more (every job is idempotent).
 */
import type { Migration } from './migrations.ts';
import type { SqlExecutor } from './sql.ts';

export interface JobState {
  name: string;
  /** The schedule as text (`every 60000 ms`, `daily at 02:00 UTC`), as the last replica registered it. */
  schedule: string;
  /** Epoch ms. */
  next_run_at: number;
  last_started_at: number | null;
  last_finished_at: number | null;
  last_duration_ms: number | null;
  /** `ok` or `failed`; null before the first run ends. */
  last_status: 'ok' | 'failed' | null;
  /** Redacted and bounded; null when the last run succeeded. */
  last_error: string | null;
  /** The replica that ran (or is running) the job last. */
  last_holder: string | null;
  runs: number;
}

export interface JobStateStore {
  /**
   * Record the job's schedule; the first registration sets when it is first due. A changed schedule
   * (config edit) takes effect at once: `next_run_at` is replaced; an unchanged one keeps the stored
   * time, so restarts neither skip nor repeat a run.
   */
  register(name: string, schedule: string, nextRunAt: number): Promise<JobState>;
  get(name: string): Promise<JobState | undefined>;
  list(): Promise<JobState[]>;
  started(name: string, holder: string, at: number): Promise<void>;
  finished(
    name: string,
    run: { at: number; durationMs: number; error: string | null; nextRunAt: number },
  ): Promise<void>;
}

/** Workflows range (200–249, see migrations.ts); jobs use 230–239 so the watchers' 200s stay free. */
export const JOB_MIGRATIONS: Migration[] = [
  {
    version: 230,
    name: 'job schedules and last runs',
    sqlite: `
CREATE TABLE job_runs (
  name TEXT PRIMARY KEY, schedule TEXT NOT NULL, next_run_at INTEGER NOT NULL, last_started_at INTEGER,
  last_finished_at INTEGER, last_duration_ms INTEGER, last_status TEXT, last_error TEXT, last_holder TEXT,
  runs INTEGER NOT NULL DEFAULT 0
);`,
    postgres: `
CREATE TABLE job_runs (
  name TEXT PRIMARY KEY, schedule TEXT NOT NULL, next_run_at BIGINT NOT NULL, last_started_at BIGINT,
  last_finished_at BIGINT, last_duration_ms BIGINT, last_status TEXT, last_error TEXT, last_holder TEXT,
  runs INTEGER NOT NULL DEFAULT 0
);`,
  },
];

const COLUMNS =
  'name, schedule, next_run_at, last_started_at, last_finished_at, last_duration_ms, last_status, last_error, last_holder, runs';

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function toState(row: Record<string, unknown>): JobState {
  return {
    name: String(row.name),
    schedule: String(row.schedule),
    next_run_at: Number(row.next_run_at),
    last_started_at: num(row.last_started_at),
    last_finished_at: num(row.last_finished_at),
    last_duration_ms: num(row.last_duration_ms),
    last_status: (row.last_status as JobState['last_status']) ?? null,
    last_error: (row.last_error as string | null) ?? null,
    last_holder: (row.last_holder as string | null) ?? null,
    runs: Number(row.runs),
  };
}

export function createJobStateStore(db: SqlExecutor): JobStateStore {
  return {
    async register(name, schedule, nextRunAt) {
      const [row] = await db.query(
        `INSERT INTO job_runs (name, schedule, next_run_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET schedule = excluded.schedule,
           next_run_at = CASE WHEN job_runs.schedule = excluded.schedule THEN job_runs.next_run_at
                              ELSE excluded.next_run_at END
         RETURNING ${COLUMNS}`,
        [name, schedule, nextRunAt],
      );
      return toState(row!);
    },
    async get(name) {
      const [row] = await db.query(`SELECT ${COLUMNS} FROM job_runs WHERE name = $1`, [name]);
      return row ? toState(row) : undefined;
    },
    async list() {
      return (await db.query(`SELECT ${COLUMNS} FROM job_runs ORDER BY name`)).map(toState);
    },
    async started(name, holder, at) {
      await db.execute('UPDATE job_runs SET last_started_at = $2, last_holder = $3 WHERE name = $1', [
        name,
        at,
        holder,
      ]);
    },
    async finished(name, run) {
      await db.execute(
        `UPDATE job_runs SET last_finished_at = $2, last_duration_ms = $3, last_status = $4, last_error = $5,
           next_run_at = $6, runs = runs + 1 WHERE name = $1`,
        [name, run.at, run.durationMs, run.error === null ? 'ok' : 'failed', run.error, run.nextRunAt],
      );
    },
  };
}
