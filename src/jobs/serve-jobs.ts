/**
 * The jobs `serve` runs (stdio and HTTP alike), their default schedules and their config keys
 * (`jobs.<name>`): the one list `serve` registers and `fraudgate jobs` shows. The one-off commands
 * (`sync scores`, `sync feedback`, `sync leads`, `outbox work`) stay for operators who schedule them by hand.
 *
 * Not here: the outbox worker. Every HTTP replica drains the outbox at once (effects are leased row
 * by row, `automation.lease_ms`), so a dead replica's share moves on within that lease instead of
 * waiting for a job lease to expire.
 */
import type { Config, JobSettings } from '../config.ts';
import { pruneLedger } from '../governance/audit-ledger.ts';
import type { Runtime } from '../runtime.ts';
import { runLeadWatcherOnce } from '../sync/lead-watcher.ts';
import { createAutomationPipeline, createLifecyclePoller } from '../sync/lifecycle-poller.ts';
import { runScoreSync } from '../sync/score-sync.ts';
import type { AnyTool } from '../tool.ts';
import type { Job, JobRunner, JobSchedule } from './job-runner.ts';

export type JobName = Exclude<keyof Config['jobs'], 'lease_ttl_ms'>;

export interface PlannedJob {
  name: JobName;
  enabled: boolean;
  schedule: JobSchedule;
  /** Why a job is off when its own `enabled` is not the reason. */
  off_because?: string;
}

const DEFAULT_SCORE_SYNC_AT = '02:00';

function scheduleOf(settings: JobSettings, fallback: JobSchedule): JobSchedule {
  if (settings.every_ms !== undefined) return { every_ms: settings.every_ms };
  if (settings.daily_at !== undefined) return { daily_at: settings.daily_at };
  return fallback;
}

/** Every job `serve` knows, with its effective schedule: configured, else its default. */
export function plannedJobs(config: Config): PlannedJob[] {
  const jobs = config.jobs;
  const plan = (name: JobName, fallback: JobSchedule, offBecause?: string): PlannedJob => ({
    name,
    enabled: jobs[name].enabled && offBecause === undefined,
    schedule: scheduleOf(jobs[name], fallback),
    ...(offBecause ? { off_because: offBecause } : {}),
  });
  return [
    plan('approval_sweep', { every_ms: Math.max(1000, config.approvals.poll_ms * 4) }),
    plan('lifecycle_feedback', { every_ms: config.feedback.poll_interval_ms }),
    plan('lead_watcher', { every_ms: config.leads.poll_interval_ms }),
    plan('score_sync', { daily_at: DEFAULT_SCORE_SYNC_AT }),
    plan(
      'audit_retention',
      { every_ms: 3_600_000 },
      config.audit.retention_days > 0 ? undefined : 'audit.retention_days is 0: keep everything',
    ),
  ];
}

/** Register every enabled job of `plannedJobs` on `runner`, running against the `serve` runtime. */
export function registerServeJobs(runner: JobRunner, runtime: Runtime, tools: readonly AnyTool[]): void {
  const { config, logger } = runtime;
  const runs: Record<JobName, Job['run']> = {
    approval_sweep: () => runtime.pipeline.processApprovals(),
    lifecycle_feedback: (() => {
      // Built on first use: a replica that never wins the lease never builds the automation pipeline.
      let poller: ReturnType<typeof createLifecyclePoller> | undefined;
      return async ({ signal }) => {
        poller ??= createLifecyclePoller({
          pipeline: createAutomationPipeline(runtime, tools),
          salesforce: runtime.clients.salesforce,
          state: runtime.store.syncState,
          config,
          logger,
        });
        const result = await poller.pollOnce(signal);
        if (result.events.length > 0)
          logger.info('lifecycle feedback poll', { scanned: result.scanned, events: result.events.length });
        if (result.deferred) throw new Error('an upstream failure stopped the poll early; it resumes there');
      };
    })(),
    lead_watcher: (() => {
      let pipeline: ReturnType<typeof createAutomationPipeline> | undefined;
      return async ({ signal }) => {
        pipeline ??= createAutomationPipeline(runtime, tools);
        const result = await runLeadWatcherOnce({
          pipeline,
          salesforce: runtime.clients.salesforce,
          state: runtime.store.syncState,
          config,
          logger,
          signal,
        });
        if (result.leads.length > 0)
          logger.info('lead watcher poll', { scanned: result.scanned, leads: result.leads.length });
        if (result.deferred) throw new Error('an upstream failure stopped the poll early; it resumes there');
      };
    })(),
    score_sync: async ({ signal }) => {
      const summary = await runScoreSync(
        {
          sift: runtime.clients.sift,
          salesforce: runtime.clients.salesforce,
          state: runtime.store.syncState,
          config,
          logger,
        },
        { signal },
      );
      logger.info('score sync', { run_id: summary.run_id, ...summary.counters });
      // Recorded as failed so the job retries within minutes (the run resumes at its checkpoint).
      if (summary.interrupted)
        throw new Error(`run ${summary.run_id} interrupted; it resumes at the next run`);
      const { accounts, failed } = summary.counters;
      // A retry is a whole new run (this one is finished): worth it when nothing got through (an
      // outage), not for a few accounts Salesforce or Sift refuse, which would re-read every account
      // every few minutes. Those wait for the next scheduled run (each is logged above).
      if (failed > 0 && failed === accounts)
        throw new Error(`run ${summary.run_id}: all ${failed} accounts failed; it runs again in minutes`);
      if (failed > 0)
        logger.warn('score sync: some accounts failed; the next scheduled run tries them again', {
          run_id: summary.run_id,
          failed,
        });
    },
    audit_retention: async () => {
      if (!runtime.ledgerEngine) return;
      const cutoff = new Date(Date.now() - config.audit.retention_days * 86_400_000);
      const { records } = await pruneLedger(runtime.ledgerEngine, cutoff);
      if (records > 0) logger.info('audit retention pruned records', { records });
    },
  };
  for (const job of plannedJobs(config)) {
    if (job.enabled) runner.register({ name: job.name, schedule: job.schedule, run: runs[job.name] });
  }
}
