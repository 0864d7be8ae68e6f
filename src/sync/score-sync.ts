/**
 * `fraudgate sync scores`: for every Account with a Sift user id, read the current Sift score and
 * write back only the risk fields that changed (score 0–100, risk band; the field names are
 * `mapping.salesforce_fields`: `Sift_User_Id__c`, `Sift_Score__c`, `Sift_Risk_Band__c` by default),
 * ≤200 records per sObject Collections call; a Task goes to the owner when the score moved by more
 * than `score_sync.task_threshold_delta`.
 *
 * Resumable: accounts are walked by keyset (`Id > cursor ORDER BY Id`), and after every batch the
 * cursor and counters are checkpointed in SQLite. An interrupted run (SIGINT, crash) leaves the run
 * open; the next invocation continues it. Tasks are the one non-idempotent write, so each is
 * recorded as an intent before the create call and as created after it; an intent left by a crash
 * is reconciled by looking for the movement's marker in the Task subject before creating anything.
 * Within a batch, Tasks are written before the score update so a crash between the two cannot lose
 * the movement that justified the Task.
 *
 * A Task is keyed by its account and score movement (`10->80`), not by run: an account whose update
 * Salesforce keeps rejecting (a validation rule) shows the same movement to every later run, and
 * gets no second Task. The ledger entry goes once the account's score is in Salesforce, so a later
 * movement, even the same one again, gets its own. A per-account failure is counted and logged and
 * the run goes on: the next scheduled run tries that account again.
 *
 * Sift calls run `concurrency` at a time behind a token bucket of `sift_budget_per_minute`; a
 * rate-limit answer pauses the whole bucket (Retry-After when given) and the account is retried. A
 * Retry-After over `MAX_SIFT_PAUSE_MS` ends the run as interrupted instead (its next run resumes at
 * the checkpoint): a run must not sit on its job lease for an hour. The signal cuts every wait short,
 * and is checked again right before the batch's Task creates and its score update, so a run that
 * lost its job lease writes nothing more.
 */
import { randomUUID } from 'node:crypto';
import type { SalesforceClient, SalesforceRecord, SiftClient } from '../clients/types.ts';
import { soqlQuote } from '../clients/salesforce-client.ts';
import { riskBandFor, type Config, type RiskBand } from '../config.ts';
import { ERROR_CODES, FraudgateError, UpstreamError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import {
  EMPTY_COUNTERS,
  type ScoreSyncCounters,
  type ScoreSyncRun,
  type SyncStateStore,
} from '../store/sync-state-store.ts';

/** One account's planned change (what `--dry-run` prints). */
export interface ScoreChange {
  account_id: string;
  sift_user_id: string;
  /** Only the fields that differ, by their API names (`mapping.salesforce_fields` score and risk band). */
  fields: Record<string, number | RiskBand>;
  previous: { score: number | null; band: string | null };
  task: boolean;
}

export interface ScoreSyncProgress {
  run_id: string;
  done: number;
  total: number;
  changed: number;
  tasks: number;
  failed: number;
}

export interface ScoreSyncSummary {
  run_id: string;
  dry_run: boolean;
  resumed: boolean;
  /** True when stopped (signal) before the end; rerun to continue. */
  interrupted: boolean;
  counters: ScoreSyncCounters;
  /** `Sforce-Limit-Info` used-count delta over this invocation, when Salesforce reported it. */
  salesforce_api_usage_delta?: number;
  elapsed_ms: number;
  /** Dry run only: every change that a real run would make. */
  planned?: ScoreChange[];
}

export interface ScoreSyncDeps {
  sift: SiftClient;
  salesforce: SalesforceClient;
  state: SyncStateStore;
  config: Pick<Config, 'score_sync' | 'risk_bands' | 'mapping'>;
  logger: Logger;
  now?: () => Date;
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface ScoreSyncOptions {
  dryRun?: boolean;
  /**
   * Stop: the current batch ends before its writes (its reads are redone by the next run), the
   * checkpoint stays at the last finished batch, and the run returns interrupted.
   */
  signal?: AbortSignal;
  onProgress?: (progress: ScoreSyncProgress) => void;
  /** Test seam: throw after this many Task creations in a batch's write phase (simulated crash). */
  crashAfterTasksInBatch?: number;
  /** Test seam: stop (as if interrupted) after this many checkpointed batches. */
  stopAfterBatches?: number;
}

/** Thrown by the `crashAfterTasksInBatch` seam: stands for a process dying mid-batch. */
export class SimulatedCrashError extends Error {}

interface TaskCandidate {
  account: AccountRow;
  /** `old->new` (Salesforce's score → Sift's): with the account, the Task's dedupe key. */
  movement: string;
  task: SalesforceRecord;
}

/** The Sift fields are read under their mapped names, so the row only types the standard ones. */
type AccountRow = SalesforceRecord & {
  Id: string;
  Name?: string | null;
  OwnerId?: string | null;
};

const MAX_SCORE_ATTEMPTS = 8;
/** The longest Sift pause a run waits out; a longer Retry-After ends the run (it resumes next time). */
const MAX_SIFT_PAUSE_MS = 60_000;

const abortableSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

/** An async token bucket shared by all workers; `pause` stops every taker (a 429 is account-wide). */
function createBucket(
  perMinute: number,
  capacity: number,
  sleep: (ms: number, signal: AbortSignal) => Promise<void>,
  signal: AbortSignal,
) {
  const perMs = perMinute / 60_000;
  let tokens = capacity;
  let updated = Date.now();
  let pausedUntil = 0;
  return {
    /** A token, or false once `signal` aborted (the run is stopping). */
    async take(): Promise<boolean> {
      for (;;) {
        if (signal.aborted) return false;
        const now = Date.now();
        tokens = Math.min(capacity, tokens + (now - updated) * perMs);
        updated = now;
        if (now < pausedUntil) {
          await sleep(pausedUntil - now, signal);
        } else if (tokens >= 1) {
          tokens -= 1;
          return true;
        } else {
          await sleep(Math.ceil((1 - tokens) / perMs), signal);
        }
      }
    },
    pause(ms: number): void {
      pausedUntil = Math.max(pausedUntil, Date.now() + ms);
      tokens = 0;
    },
  };
}

/** The score synced for an account: the configured abuse type's, else the riskiest. */
function pickScore(
  scores: Partial<Record<string, { score: number }>>,
  abuseType: string | undefined,
): number | undefined {
  if (abuseType) return scores[abuseType]?.score;
  const values = Object.values(scores).flatMap((s) => (s ? [s.score] : []));
  return values.length > 0 ? Math.max(...values) : undefined;
}

/** In the Task subject, so a crash between the create call and the ledger can be reconciled. */
const taskMarker = (movement: string) => `[fraudgate:score ${movement}]`;
const TASK_MARKER_PREFIX = '[fraudgate:score ';
const SUBJECT_MAX = 255;

/** A score result that stops the run: the signal aborted, or Sift asked for a pause too long to wait. */
type ScoreResult = number | 'skip' | 'fail' | 'halted';

export async function runScoreSync(
  deps: ScoreSyncDeps,
  options: ScoreSyncOptions = {},
): Promise<ScoreSyncSummary> {
  const { sift, salesforce, state, logger } = deps;
  const settings = deps.config.score_sync;
  const now = deps.now ?? (() => new Date());
  const sleep = deps.sleep ?? abortableSleep;
  const dryRun = options.dryRun === true;
  const started = Date.now();
  // The run stops on the caller's signal, or on its own (a Sift pause too long to wait out).
  const giveUp = new AbortController();
  const halt = options.signal ? AbortSignal.any([options.signal, giveUp.signal]) : giveUp.signal;
  const bucket = createBucket(settings.sift_budget_per_minute, settings.concurrency, sleep, halt);

  // A dry run never touches the checkpoint: it reads from the start and writes nothing anywhere.
  const open = dryRun ? undefined : await state.openRun();
  const run: ScoreSyncRun =
    open ??
    (dryRun
      ? {
          id: `dry-${randomUUID()}`,
          started_at: now().toISOString(),
          cursor: '',
          state: 'running',
          counters: { ...EMPTY_COUNTERS },
        }
      : await state.createRun(randomUUID(), now().toISOString()));
  const counters: ScoreSyncCounters = { ...run.counters };
  let cursor = run.cursor;
  const planned: ScoreChange[] = [];

  const sfCall = async <T>(fn: () => Promise<T>, calls = 1): Promise<T> => {
    counters.salesforce_calls += calls;
    return fn();
  };

  const names = deps.config.mapping.salesforce_fields;
  const siftUserIdOf = (account: AccountRow) => String(account[names.sift_user_id]);
  const filter = `${names.sift_user_id} != null`;
  const countPage = await sfCall(() =>
    salesforce.queryPage({ soql: `SELECT count() FROM Account WHERE ${filter}` }),
  );
  const total = countPage.totalSize;
  const usageBefore = salesforce.apiUsage()?.used;

  async function fetchScore(account: AccountRow): Promise<ScoreResult> {
    for (let attempt = 1; ; attempt += 1) {
      if (!(await bucket.take())) return 'halted';
      counters.sift_calls += 1;
      try {
        const score = await sift.getUserScore(siftUserIdOf(account), { signal: halt });
        return pickScore(score.scores, settings.abuse_type) ?? 'skip';
      } catch (error) {
        if (halt.aborted) return 'halted';
        if (error instanceof FraudgateError && error.code === ERROR_CODES.NOT_FOUND) return 'skip';
        const retryable = error instanceof FraudgateError && error.retryable;
        if (!retryable || attempt >= MAX_SCORE_ATTEMPTS) {
          logger.warn('score sync: Sift score failed', {
            account_id: account.Id,
            code: error instanceof FraudgateError ? error.code : 'INTERNAL',
          });
          return 'fail';
        }
        const retryAfter = error instanceof UpstreamError ? error.retryAfterMs : undefined;
        if (retryAfter !== undefined && retryAfter > MAX_SIFT_PAUSE_MS) {
          logger.warn(
            'score sync: Sift asked for a long pause; the run stops here and resumes at its next run',
            {
              retry_after_s: Math.ceil(retryAfter / 1000),
            },
          );
          giveUp.abort(new Error('Sift asked for a pause longer than the score sync waits'));
          return 'halted';
        }
        // Slow everyone down, not just this worker: the budget is per Sift account.
        bucket.pause(retryAfter ?? Math.min(10_000, 250 * 2 ** attempt));
      }
    }
  }

  async function scoresFor(accounts: AccountRow[]): Promise<Map<string, ScoreResult>> {
    const out = new Map<string, ScoreResult>();
    let next = 0;
    const worker = async () => {
      while (next < accounts.length && !halt.aborted) {
        const account = accounts[next++]!;
        out.set(account.Id, await fetchScore(account));
      }
    };
    await Promise.all(Array.from({ length: Math.min(settings.concurrency, accounts.length) }, worker));
    return out;
  }

  function taskFor(account: AccountRow, change: ScoreChange, newScore: number, movement: string) {
    const due = new Date(now().getTime() + settings.task_due_days * 86_400_000).toISOString().slice(0, 10);
    const previous = change.previous.score ?? 0;
    const head = `Sift score moved ${previous} → ${newScore}: `;
    const marker = ` ${taskMarker(movement)}`;
    // The name gives way, never the marker: a cut marker would make a crashed create look undone.
    const name = (account.Name ?? account.Id).slice(0, SUBJECT_MAX - head.length - marker.length);
    return {
      Subject: `${head}${name}${marker}`,
      WhatId: account.Id,
      // A queue cannot own a Task (§6), so a queue-owned account's Task stays with the integration user.
      ...(account.OwnerId?.startsWith('005') ? { OwnerId: account.OwnerId } : {}),
      ActivityDate: due,
      Priority: newScore > previous ? 'High' : 'Normal',
      Status: 'Not Started',
      Description:
        `Sift user ${siftUserIdOf(account)}: score ${previous} → ${newScore} ` +
        `(band ${change.previous.band ?? 'none'} → ${change.fields[names.risk_band] ?? change.previous.band ?? 'none'}). ` +
        'Created by fraudgate sync scores.',
    };
  }

  /**
   * Tasks for this batch: skip the movements that have theirs already (this run's or an earlier
   * run's), reconcile intents a crash left, create the rest. Counts the Tasks of this run.
   */
  async function writeTasks(candidates: TaskCandidate[], batch: number) {
    const ledger = await state.tasks(candidates.map((c) => c.account.Id));
    const entryOf = (c: TaskCandidate) => {
      const entry = ledger.get(c.account.Id);
      return entry?.movement === c.movement ? entry : undefined;
    };
    const leftover = candidates.filter((c) => entryOf(c)?.state === 'intent');
    if (leftover.length > 0) {
      const found = await sfCall(() =>
        salesforce.query<{ Id: string; WhatId: string; Subject: string | null }>(
          `SELECT Id, WhatId, Subject FROM Task WHERE WhatId IN (${leftover.map((c) => soqlQuote(c.account.Id)).join(', ')}) ` +
            `AND Subject LIKE ${soqlQuote(`%${TASK_MARKER_PREFIX}%`)}`,
        ),
      );
      for (const task of found) {
        const candidate = leftover.find(
          (c) => c.account.Id === task.WhatId && task.Subject?.includes(taskMarker(c.movement)),
        );
        const entry = candidate && entryOf(candidate);
        if (!candidate || !entry) continue;
        await state.recordTaskCreated(candidate.account.Id, candidate.movement, task.Id);
        ledger.set(candidate.account.Id, { ...entry, state: 'created', task_id: task.Id });
      }
    }
    const todo = candidates.filter((c) => entryOf(c)?.state !== 'created');
    await state.recordTaskIntents(
      run.id,
      todo.map((c) => ({ accountId: c.account.Id, movement: c.movement })),
    );
    // A Task an earlier run created for the same movement is not this run's.
    let created = candidates.filter((c) => {
      const entry = entryOf(c);
      return entry?.state === 'created' && entry.run_id === run.id;
    }).length;
    if (todo.length > 0) {
      const results = await sfCall(
        () =>
          salesforce.createMany(
            'Task',
            todo.map((c) => c.task),
          ),
        Math.ceil(todo.length / 200),
      );
      for (const [i, result] of results.entries()) {
        const candidate = todo[i];
        if (!candidate) continue;
        if (result.success) {
          await state.recordTaskCreated(candidate.account.Id, candidate.movement, result.id);
          created += 1;
          if (options.crashAfterTasksInBatch !== undefined && batch === options.crashAfterTasksInBatch) {
            throw new SimulatedCrashError(`simulated crash after creating Tasks in batch ${batch}`);
          }
        } else {
          logger.warn('score sync: Task not created', {
            account_id: candidate.account.Id,
            codes: result.errors.map((e) => e.statusCode),
          });
        }
      }
    }
    return created;
  }

  let batch = 0;
  let interrupted = false;
  for (;;) {
    if (
      options.signal?.aborted ||
      (options.stopAfterBatches !== undefined && batch >= options.stopAfterBatches)
    ) {
      interrupted = true;
      break;
    }
    const soql =
      `SELECT Id, Name, OwnerId, ${names.sift_user_id}, ${names.score}, ${names.risk_band} FROM Account ` +
      `WHERE ${filter}${cursor ? ` AND Id > ${soqlQuote(cursor)}` : ''} ORDER BY Id ASC LIMIT ${settings.batch_size}`;
    const accounts = await sfCall(() => salesforce.query<AccountRow>(soql));
    if (accounts.length === 0) break;
    batch += 1;

    const scores = await scoresFor(accounts);
    if (halt.aborted) {
      // Nothing of this batch is written or checkpointed: the next run reads it again.
      interrupted = true;
      break;
    }
    const updates: (SalesforceRecord & { Id: string })[] = [];
    const taskCandidates: TaskCandidate[] = [];
    /** Accounts whose score Salesforce holds already: no movement of theirs is pending. */
    const landed: string[] = [];
    let changed = 0;
    for (const account of accounts) {
      const result = scores.get(account.Id);
      if (result === 'skip' || result === undefined) {
        counters.skipped += 1;
        continue;
      }
      // ('halted' only with the signal aborted, which ended the batch above.)
      if (result === 'fail' || result === 'halted') {
        counters.failed += 1;
        continue;
      }
      const newScore = Math.round(result * 100);
      const band = riskBandFor(result, deps.config.risk_bands);
      const stored = account[names.score];
      const oldScore = typeof stored === 'number' ? stored : null;
      const storedBand = account[names.risk_band];
      const oldBand = typeof storedBand === 'string' ? storedBand : null;
      const fields: ScoreChange['fields'] = {};
      if (oldScore !== newScore) fields[names.score] = newScore;
      if (oldBand !== band) fields[names.risk_band] = band;
      if (Object.keys(fields).length === 0) {
        counters.unchanged += 1;
        landed.push(account.Id);
        continue;
      }
      const task = oldScore !== null && Math.abs(newScore - oldScore) > settings.task_threshold_delta;
      const change: ScoreChange = {
        account_id: account.Id,
        sift_user_id: siftUserIdOf(account),
        fields,
        previous: { score: oldScore, band: oldBand },
        task,
      };
      changed += 1;
      if (dryRun) planned.push(change);
      updates.push({ Id: account.Id, ...fields });
      if (task) {
        const movement = `${oldScore}->${newScore}`;
        taskCandidates.push({ account, movement, task: taskFor(account, change, newScore, movement) });
      }
    }

    let tasks = taskCandidates.length;
    if (!dryRun) {
      // Checked right before each write: a run that lost its job lease must not write on.
      if (halt.aborted) {
        interrupted = true;
        break;
      }
      tasks = taskCandidates.length > 0 ? await writeTasks(taskCandidates, batch) : 0;
      if (updates.length > 0) {
        if (halt.aborted) {
          // The Tasks are in the ledger: the next run redoes this batch without a second one.
          interrupted = true;
          break;
        }
        const results = await sfCall(
          () => salesforce.updateMany('Account', updates),
          Math.ceil(updates.length / 200),
        );
        for (const [i, result] of results.entries()) {
          const update = updates[i];
          if (!update) continue;
          if (result.success) {
            landed.push(update.Id);
            continue;
          }
          changed -= 1;
          counters.failed += 1;
          logger.warn('score sync: account not updated; the next run tries again', {
            account_id: update.Id,
            codes: result.errors.map((e) => e.statusCode),
          });
        }
      }
      if (landed.length > 0) await state.forgetTasks(landed);
    }
    counters.accounts += accounts.length;
    counters.changed += changed;
    counters.tasks += tasks;
    cursor = accounts.at(-1)!.Id;
    if (!dryRun) await state.checkpoint(run.id, cursor, counters);
    options.onProgress?.({
      run_id: run.id,
      done: counters.accounts,
      total,
      changed: counters.changed,
      tasks: counters.tasks,
      failed: counters.failed,
    });
    if (accounts.length < settings.batch_size) break;
  }

  if (!dryRun && !interrupted) await state.finishRun(run.id, counters);
  const usageAfter = salesforce.apiUsage()?.used;
  return {
    run_id: run.id,
    dry_run: dryRun,
    resumed: open !== undefined,
    interrupted,
    counters,
    ...(usageBefore !== undefined && usageAfter !== undefined
      ? { salesforce_api_usage_delta: usageAfter - usageBefore + 1 }
      : {}),
    elapsed_ms: Date.now() - started,
    ...(dryRun ? { planned } : {}),
  };
}
