/**
 * The job runner: background work (approval sweep, lifecycle poller, score sync, audit retention,
 * watchers) that runs inside `serve` once across the fleet, whichever replicas are up.
 *
 * `runner.register({ name, schedule, run })`, then `start()`. Every `tick_ms` the runner looks at the
 * jobs it believes are due; for each it reads the job's row (src/store/job-state-store.ts) and, when
 * it is due fleet-wide, takes the job's lease (src/store/lease-store.ts, ttl ≤ 30 s), runs it while a
 * heartbeat renews the lease every ttl/3, records the outcome and the next due time, and lets the
 * lease go. A replica that finds the lease held, or the job already run by another replica, waits
 * for the next due time: each run happens on exactly one replica.
 *
 * - A holder that dies stops renewing; after the ttl another replica takes the lease and, the job
 *   being still due (its row was never marked finished), runs it.
 * - A restarted replica with the same replica id (FRAUDGATE_REPLICA_ID) is its lease's holder
 *   already, so it takes it back at once.
 * - A heartbeat that finds the lease taken by someone else aborts the run's signal: a job must stop
 *   at its next safe point when `ctx.signal` aborts (the next run resumes: jobs are idempotent).
 * - So does a lease this replica cannot renew (the store unreachable, renewals failing or hanging):
 *   once it went unrenewed for two thirds of the ttl, the run is aborted, a third of the ttl before
 *   another replica could take the lease, so two replicas never run one job at once. A single
 *   failed renewal is retried at the next beat (every sixth of the ttl) and does not stop the run.
 * - A store that fails (connection lost, database restarting) never crashes the process: the tick
 *   logs (once a minute per job) and tries again at the next tick.
 *
 * Schedules (keep them simple): `{ every_ms }` — due that long after the previous run started (or at
 * once after it finished, if it ran longer); `{ daily_at: 'HH:MM' }` — once a day at that UTC time.
 * A failed run is retried after `min(schedule, 5 min)`. A new job's first run is one interval after
 * it is first registered (daily: the next HH:MM); the time is stored, so restarts neither skip nor
 * repeat a run. Changing a job's schedule (config) re-times it at once.
 */
import type { Logger } from '../logger.ts';
import type { JobStateStore } from '../store/job-state-store.ts';
import type { LeaseStore } from '../store/lease-store.ts';

export type JobSchedule = { every_ms: number } | { daily_at: string };

export interface JobContext {
  /**
   * Aborted when the runner closes, the lease was lost, or it could not be renewed in time: stop at
   * the next safe point, and write nothing after it.
   */
  signal: AbortSignal;
  /** The replica running it (the lease holder). */
  replicaId: string;
}

export interface Job {
  /** snake_case, unique in the fleet; the lease and the row are named after it. */
  name: string;
  schedule: JobSchedule;
  run(ctx: JobContext): Promise<void>;
}

export interface JobRunnerOptions {
  store: { leases: LeaseStore; jobs: JobStateStore };
  /** The lease holder id: `replicaIdFor(config, …)` (stable across restarts). */
  replicaId: string;
  logger: Logger;
  /** Lease length; the heartbeat renews every third of it. Default 15 s; at most 30 s. */
  leaseTtlMs?: number;
  /** How often due jobs are looked at. Default 1 s. */
  tickMs?: number;
  /** Makes an error safe to store and show (the audit redactor); default: as is. */
  redact?: (text: string) => string;
  now?: () => number;
}

export interface JobRunner {
  /** Add a job (before or after `start`); a second job with the same name is refused. */
  register(job: Job): void;
  /** Tick in the background every `tickMs`. */
  start(): void;
  /**
   * Look at every job once and run the due ones this replica can lease; resolves with the names of
   * the jobs it ran, once they finish (the tests' seam; the background loop does not wait).
   */
  tick(): Promise<string[]>;
  /** Stop ticking, abort running jobs, wait for them (bounded) and release their leases. */
  close(): Promise<void>;
}

export const MAX_LEASE_TTL_MS = 30_000;
const RETRY_FAILED_AFTER_MS = 5 * 60_000;
const ERROR_TEXT_LIMIT = 500;
const CLOSE_WAIT_MS = 10_000;

const DAILY_AT = /^([01]\d|2[0-3]):([0-5]\d)$/;

/** Refuses a schedule that cannot run; the config schema checks the same before start-up. */
export function checkSchedule(schedule: JobSchedule): void {
  if ('every_ms' in schedule) {
    if (!Number.isInteger(schedule.every_ms) || schedule.every_ms <= 0)
      throw new Error(`every_ms must be a positive integer, got ${schedule.every_ms}`);
  } else if (!DAILY_AT.test(schedule.daily_at)) {
    throw new Error(`daily_at must be HH:MM (UTC, 24 h), got ${JSON.stringify(schedule.daily_at)}`);
  }
}

export function describeSchedule(schedule: JobSchedule): string {
  if ('daily_at' in schedule) return `daily at ${schedule.daily_at} UTC`;
  const ms = schedule.every_ms;
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['min', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `every ${ms / size} ${unit}`;
  }
  return `every ${ms} ms`;
}

/** The first time strictly after `after` that the schedule names (daily: the next HH:MM UTC). */
export function nextDailyRun(dailyAt: string, after: number): number {
  const [, hh, mm] = DAILY_AT.exec(dailyAt)!;
  const day = new Date(after);
  const at = Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate(), Number(hh), Number(mm));
  return at > after ? at : at + 86_400_000;
}

function nextRun(schedule: JobSchedule, startedAt: number, finishedAt: number): number {
  if ('daily_at' in schedule) return nextDailyRun(schedule.daily_at, finishedAt);
  return Math.max(startedAt + schedule.every_ms, finishedAt);
}

function scheduleLength(schedule: JobSchedule): number {
  return 'every_ms' in schedule ? schedule.every_ms : 86_400_000;
}

export function createJobRunner(options: JobRunnerOptions): JobRunner {
  const { store, replicaId } = options;
  const logger = options.logger.child({ component: 'jobs' });
  const now = options.now ?? Date.now;
  const ttl = Math.min(options.leaseTtlMs ?? 15_000, MAX_LEASE_TTL_MS);
  const tickMs = options.tickMs ?? 1000;
  const redact = options.redact ?? ((text: string) => text);

  interface Entry {
    job: Job;
    schedule: string;
    registered: boolean;
    /** When this replica next looks at the job (its belief of `next_run_at`). */
    dueAt: number;
    running?: { controller: AbortController; done: Promise<void> };
  }
  const entries = new Map<string, Entry>();
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<string[]> | undefined;
  let closed = false;

  const lastWarning = new Map<string, number>();
  /** One warning per job and minute: a store that is down for an hour must not flood the log. */
  const warn = (job: string, msg: string, error: unknown) => {
    const at = now();
    if (at - (lastWarning.get(job) ?? -Infinity) < 60_000) return;
    lastWarning.set(job, at);
    logger.warn(msg, { job, error: redact(errorText(error)) });
  };

  function errorText(error: unknown): string {
    const text = error instanceof Error ? error.message || error.name : String(error);
    return text.length > ERROR_TEXT_LIMIT ? text.slice(0, ERROR_TEXT_LIMIT) + '…' : text;
  }

  /** Runs the job under its lease, ours since `leasedAt` (the time the acquire was sent with). */
  async function runLeased(entry: Entry, controller: AbortController, leasedAt: number): Promise<void> {
    const { job } = entry;
    /** Set when the lease may be someone else's: the run stops and records nothing. */
    let lost = false;
    const stop = (message: string, reason: string) => {
      if (lost) return;
      lost = true;
      logger.warn(message, { job: job.name });
      controller.abort(new Error(reason));
    };
    // A renewal sent at T keeps the lease until T + ttl: confirmed is the latest such T.
    let confirmedAt = leasedAt;
    let sentAt = leasedAt;
    let renewing = false;
    const renewEvery = ttl / 3;
    const stopAfter = ttl - ttl / 3;
    const heartbeat = setInterval(
      () => {
        if (lost) return;
        const at = now();
        if (at - confirmedAt >= stopAfter) {
          stop(
            'job lease not renewed in time (store unavailable?); stopping the run before another replica may take it over',
            'job lease could not be renewed',
          );
          return;
        }
        if (renewing || at - sentAt < renewEvery) return;
        renewing = true;
        sentAt = at;
        store.leases.acquire(job.name, replicaId, ttl, at).then(
          (held) => {
            renewing = false;
            if (held) confirmedAt = Math.max(confirmedAt, at);
            else stop('job lease taken over by another replica; stopping the run', 'job lease lost');
          },
          (error: unknown) => {
            renewing = false;
            sentAt = -Infinity; // try again at the next beat
            warn(job.name, 'job lease renewal failed; retrying', error);
          },
        );
      },
      Math.max(10, Math.floor(ttl / 6)),
    );
    heartbeat.unref();
    const startedAt = now();
    let failure: string | null = null;
    try {
      await store.jobs.started(job.name, replicaId, startedAt);
      await job.run({ signal: controller.signal, replicaId });
    } catch (error) {
      failure = redact(errorText(error));
      logger.warn('job failed; it runs again at its next time', { job: job.name, error: failure });
    } finally {
      clearInterval(heartbeat);
    }
    const finishedAt = now();
    const regular = nextRun(job.schedule, startedAt, finishedAt);
    const next =
      failure === null
        ? regular
        : Math.min(regular, finishedAt + Math.min(RETRY_FAILED_AFTER_MS, scheduleLength(job.schedule)));
    entry.dueAt = next;
    try {
      if (!lost) {
        await store.jobs.finished(job.name, {
          at: finishedAt,
          durationMs: finishedAt - startedAt,
          error: failure,
          nextRunAt: next,
        });
      }
    } catch (error) {
      // Not recorded: the job stays due and runs once more (jobs are idempotent).
      warn(job.name, 'job outcome not recorded (store unavailable); it will run again', error);
      entry.dueAt = now() + tickMs;
    }
    if (!lost) {
      await store.leases
        .release(job.name, replicaId)
        .catch((error: unknown) => warn(job.name, 'job lease not released; it expires by itself', error));
    }
  }

  /**
   * Decide and, when due and leased, start the job; resolves with the started run (boxed: an async
   * function returning a bare promise would wait for it), or undefined.
   */
  async function consider(entry: Entry): Promise<{ done: Promise<void> } | undefined> {
    const { job } = entry;
    if (entry.running || closed || now() < entry.dueAt) return undefined;
    let leasedAt: number;
    try {
      if (!entry.registered) {
        const first =
          'daily_at' in job.schedule
            ? nextDailyRun(job.schedule.daily_at, now())
            : now() + job.schedule.every_ms;
        const state = await store.jobs.register(job.name, entry.schedule, first);
        entry.registered = true;
        entry.dueAt = state.next_run_at;
        if (now() < entry.dueAt) return undefined;
      }
      const state = await store.jobs.get(job.name);
      if (state && now() < state.next_run_at) {
        entry.dueAt = state.next_run_at;
        return undefined;
      }
      leasedAt = now();
      if (!(await store.leases.acquire(job.name, replicaId, ttl, leasedAt))) {
        // Another replica is running it: look again after a tick (it will have moved next_run_at).
        entry.dueAt = now() + tickMs;
        return undefined;
      }
      // The previous holder may have finished between our read and our lease: read again under it.
      const fresh = await store.jobs.get(job.name);
      if (closed || (fresh && now() < fresh.next_run_at)) {
        entry.dueAt = fresh?.next_run_at ?? now() + tickMs;
        await store.leases.release(job.name, replicaId);
        return undefined;
      }
    } catch (error) {
      warn(job.name, 'job store unavailable; retrying at the next tick', error);
      entry.dueAt = now() + tickMs;
      return undefined;
    }
    const controller = new AbortController();
    const done = runLeased(entry, controller, leasedAt).finally(() => {
      entry.running = undefined;
    });
    entry.running = { controller, done };
    return { done };
  }

  async function tickOnce(): Promise<string[]> {
    const started: { name: string; done: Promise<void> }[] = [];
    for (const entry of entries.values()) {
      const run = await consider(entry);
      if (run) started.push({ name: entry.job.name, done: run.done });
    }
    await Promise.all(started.map((s) => s.done));
    return started.map((s) => s.name);
  }

  return {
    register(job) {
      if (entries.has(job.name)) throw new Error(`job ${job.name} is registered twice`);
      checkSchedule(job.schedule);
      entries.set(job.name, { job, schedule: describeSchedule(job.schedule), registered: false, dueAt: 0 });
    },
    start() {
      if (timer || closed) return;
      timer = setInterval(() => {
        // The background loop does not wait for runs: a long score sync must not hold up the sweep.
        if (ticking) return;
        const current = (async () => {
          const names: string[] = [];
          for (const entry of entries.values()) if (await consider(entry)) names.push(entry.job.name);
          return names;
        })();
        ticking = current;
        void current.finally(() => {
          ticking = undefined;
        });
      }, tickMs);
      timer.unref();
    },
    tick: tickOnce,
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await ticking?.catch(() => undefined);
      const runs = [...entries.values()].flatMap((e) => (e.running ? [e.running] : []));
      for (const run of runs) run.controller.abort(new Error('fraudgate is shutting down'));
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(runs.map((r) => r.done)),
        new Promise((resolve) => {
          bound = setTimeout(resolve, CLOSE_WAIT_MS);
          bound.unref();
        }),
      ]);
      clearTimeout(bound);
    },
  };
}
