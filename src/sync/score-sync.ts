/**
 * `fraudgate sync scores`: for every Account with a `Sift_User_Id__c`, read the current Sift score
 * and write back only the risk fields that changed (`Sift_Score__c` 0–100, `Sift_Risk_Band__c`),
 * ≤200 records per sObject Collections call; a Task goes to the owner when the score moved by more
 * than `score_sync.task_threshold_delta`.
 *
 * Resumable: accounts are walked by keyset (`Id > cursor ORDER BY Id`), and after every batch the
 * cursor and counters are checkpointed in SQLite. An interrupted run (SIGINT, crash) leaves the run
 * open; the next invocation continues it. Tasks are the one non-idempotent write, so each is
 * recorded as an intent before the create call and as created after it; an intent left by a crash
 * is reconciled by looking for the run's marker in the Task subject before creating anything.
 * Within a batch, Tasks are written before the score update so a crash between the two cannot lose
 * the movement that justified the Task.
 *
 * Sift calls run `concurrency` at a time behind a token bucket of `sift_budget_per_minute`; a
 * rate-limit answer pauses the whole bucket (Retry-After when given) and the account is retried.
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
  /** Only the fields that differ. */
  fields: { Sift_Score__c?: number; Sift_Risk_Band__c?: RiskBand };
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
  config: Pick<Config, 'score_sync' | 'risk_bands'>;
  logger: Logger;
  now?: () => Date;
  sleep?: (ms: number) => Promise<void>;
}

export interface ScoreSyncOptions {
  dryRun?: boolean;
  /** Graceful stop: the current batch finishes and is checkpointed, then the run returns interrupted. */
  signal?: AbortSignal;
  onProgress?: (progress: ScoreSyncProgress) => void;
  /** Test seam: throw after this many Task creations in a batch's write phase (simulated crash). */
  crashAfterTasksInBatch?: number;
  /** Test seam: stop (as if interrupted) after this many checkpointed batches. */
  stopAfterBatches?: number;
}

/** Thrown by the `crashAfterTasksInBatch` seam: stands for a process dying mid-batch. */
export class SimulatedCrashError extends Error {}

type AccountRow = SalesforceRecord & {
  Id: string;
  Name?: string | null;
  OwnerId?: string | null;
  Sift_User_Id__c: string;
  Sift_Score__c?: number | null;
  Sift_Risk_Band__c?: string | null;
};

const MAX_SCORE_ATTEMPTS = 8;

/** An async token bucket shared by all workers; `pause` stops every taker (a 429 is account-wide). */
function createBucket(perMinute: number, capacity: number, sleep: (ms: number) => Promise<void>) {
  const perMs = perMinute / 60_000;
  let tokens = capacity;
  let updated = Date.now();
  let pausedUntil = 0;
  return {
    async take(): Promise<void> {
      for (;;) {
        const now = Date.now();
        tokens = Math.min(capacity, tokens + (now - updated) * perMs);
        updated = now;
        if (now < pausedUntil) {
          await sleep(pausedUntil - now);
        } else if (tokens >= 1) {
          tokens -= 1;
          return;
        } else {
          await sleep(Math.ceil((1 - tokens) / perMs));
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

const taskMarker = (runId: string) => `[fraudgate:${runId}]`;

export async function runScoreSync(
  deps: ScoreSyncDeps,
  options: ScoreSyncOptions = {},
): Promise<ScoreSyncSummary> {
  const { sift, salesforce, state, logger } = deps;
  const settings = deps.config.score_sync;
  const now = deps.now ?? (() => new Date());
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const dryRun = options.dryRun === true;
  const started = Date.now();
  const bucket = createBucket(settings.sift_budget_per_minute, settings.concurrency, sleep);

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

  const filter = 'Sift_User_Id__c != null';
  const countPage = await sfCall(() =>
    salesforce.queryPage({ soql: `SELECT count() FROM Account WHERE ${filter}` }),
  );
  const total = countPage.totalSize;
  const usageBefore = salesforce.apiUsage()?.used;

  async function fetchScore(account: AccountRow): Promise<number | 'skip' | 'fail'> {
    for (let attempt = 1; ; attempt += 1) {
      await bucket.take();
      counters.sift_calls += 1;
      try {
        const score = await sift.getUserScore(account.Sift_User_Id__c);
        return pickScore(score.scores, settings.abuse_type) ?? 'skip';
      } catch (error) {
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
        // Slow everyone down, not just this worker: the budget is per Sift account.
        bucket.pause(retryAfter ?? Math.min(10_000, 250 * 2 ** attempt));
      }
    }
  }

  async function scoresFor(accounts: AccountRow[]): Promise<Map<string, number | 'skip' | 'fail'>> {
    const out = new Map<string, number | 'skip' | 'fail'>();
    let next = 0;
    const worker = async () => {
      while (next < accounts.length) {
        const account = accounts[next++]!;
        out.set(account.Id, await fetchScore(account));
      }
    };
    await Promise.all(Array.from({ length: Math.min(settings.concurrency, accounts.length) }, worker));
    return out;
  }

  function taskFor(account: AccountRow, change: ScoreChange, newScore: number): SalesforceRecord {
    const due = new Date(now().getTime() + settings.task_due_days * 86_400_000).toISOString().slice(0, 10);
    const previous = change.previous.score ?? 0;
    return {
      Subject:
        `Sift score moved ${previous} → ${newScore}: ${account.Name ?? account.Id} ${taskMarker(run.id)}`.slice(
          0,
          255,
        ),
      WhatId: account.Id,
      // A queue cannot own a Task (§6), so a queue-owned account's Task stays with the integration user.
      ...(account.OwnerId?.startsWith('005') ? { OwnerId: account.OwnerId } : {}),
      ActivityDate: due,
      Priority: newScore > previous ? 'High' : 'Normal',
      Status: 'Not Started',
      Description:
        `Sift user ${account.Sift_User_Id__c}: score ${previous} → ${newScore} ` +
        `(band ${change.previous.band ?? 'none'} → ${change.fields.Sift_Risk_Band__c ?? change.previous.band ?? 'none'}). ` +
        'Created by fraudgate sync scores.',
    };
  }

  /** Tasks for this batch: skip those already created by this run, reconcile crashed intents, create the rest. */
  async function writeTasks(candidates: { account: AccountRow; task: SalesforceRecord }[], batch: number) {
    const ids = candidates.map((c) => c.account.Id);
    const ledger = await state.tasks(run.id, ids);
    const leftover = [...ledger.values()].filter((e) => e.state === 'intent').map((e) => e.account_id);
    if (leftover.length > 0) {
      const found = await sfCall(() =>
        salesforce.query<{ Id: string; WhatId: string }>(
          `SELECT Id, WhatId FROM Task WHERE WhatId IN (${leftover.map(soqlQuote).join(', ')}) ` +
            `AND Subject LIKE ${soqlQuote(`%${taskMarker(run.id)}%`)}`,
        ),
      );
      for (const task of found) {
        await state.recordTaskCreated(run.id, task.WhatId, task.Id);
        ledger.set(task.WhatId, { account_id: task.WhatId, state: 'created', task_id: task.Id });
      }
    }
    const todo = candidates.filter((c) => ledger.get(c.account.Id)?.state !== 'created');
    await state.recordTaskIntents(
      run.id,
      todo.map((c) => c.account.Id),
    );
    let created = candidates.length - todo.length;
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
          await state.recordTaskCreated(run.id, candidate.account.Id, result.id);
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
      'SELECT Id, Name, OwnerId, Sift_User_Id__c, Sift_Score__c, Sift_Risk_Band__c FROM Account ' +
      `WHERE ${filter}${cursor ? ` AND Id > ${soqlQuote(cursor)}` : ''} ORDER BY Id ASC LIMIT ${settings.batch_size}`;
    const accounts = await sfCall(() => salesforce.query<AccountRow>(soql));
    if (accounts.length === 0) break;
    batch += 1;

    const scores = await scoresFor(accounts);
    const updates: (SalesforceRecord & { Id: string })[] = [];
    const taskCandidates: { account: AccountRow; task: SalesforceRecord }[] = [];
    let changed = 0;
    for (const account of accounts) {
      const result = scores.get(account.Id);
      if (result === 'skip' || result === undefined) {
        counters.skipped += 1;
        continue;
      }
      if (result === 'fail') {
        counters.failed += 1;
        continue;
      }
      const newScore = Math.round(result * 100);
      const band = riskBandFor(result, deps.config.risk_bands);
      const oldScore = typeof account.Sift_Score__c === 'number' ? account.Sift_Score__c : null;
      const fields: ScoreChange['fields'] = {};
      if (oldScore !== newScore) fields.Sift_Score__c = newScore;
      if ((account.Sift_Risk_Band__c ?? null) !== band) fields.Sift_Risk_Band__c = band;
      if (Object.keys(fields).length === 0) {
        counters.unchanged += 1;
        continue;
      }
      const task = oldScore !== null && Math.abs(newScore - oldScore) > settings.task_threshold_delta;
      const change: ScoreChange = {
        account_id: account.Id,
        sift_user_id: account.Sift_User_Id__c,
        fields,
        previous: { score: oldScore, band: account.Sift_Risk_Band__c ?? null },
        task,
      };
      changed += 1;
      if (dryRun) planned.push(change);
      updates.push({ Id: account.Id, ...fields });
      if (task) taskCandidates.push({ account, task: taskFor(account, change, newScore) });
    }

    let tasks = taskCandidates.length;
    if (!dryRun) {
      tasks = taskCandidates.length > 0 ? await writeTasks(taskCandidates, batch) : 0;
      if (updates.length > 0) {
        const results = await sfCall(
          () => salesforce.updateMany('Account', updates),
          Math.ceil(updates.length / 200),
        );
        const failures = results.filter((r) => !r.success).length;
        changed -= failures;
        counters.failed += failures;
      }
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
