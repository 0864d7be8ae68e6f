/**
 * `fraudgate sync scores [--dry-run]`, `fraudgate sync feedback [--once]` and `fraudgate sync leads
 * [--once]`: the scheduled jobs of issues 5 and 9, run by hand, from cron or a supervisor. Progress
 * goes to stderr (a bar on a terminal, JSON lines otherwise, so a scheduler's log stays parseable);
 * the summary goes to stdout (one JSON line per poll for feedback and leads). SIGINT stops at the
 * next safe point with everything so far checkpointed: scores before the current batch's writes (the
 * next run reads that batch again, without a second Task), feedback and leads after the current poll.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { subcommand } from './usage.ts';
import { createLogger } from '../logger.ts';
import { openRuntime } from '../runtime.ts';
import { resolveUpstreams } from '../sandbox/sandbox.ts';
import {
  createAutomationPipeline,
  createLifecyclePoller,
  type PollResult,
} from '../sync/lifecycle-poller.ts';
import { runLeadWatcherOnce, type LeadWatchResult } from '../sync/lead-watcher.ts';
import { runEvery } from '../sync/record-watch.ts';
import { runScoreSync, type ScoreSyncProgress, type ScoreSyncSummary } from '../sync/score-sync.ts';
import type { AnyTool } from '../tool.ts';

function progressWriter(tty: boolean) {
  let last = 0;
  return (p: ScoreSyncProgress) => {
    if (!tty) {
      process.stderr.write(JSON.stringify({ type: 'progress', ...p }) + '\n');
      return;
    }
    // Redraw at most ~10 times a second; the final state is always drawn.
    if (Date.now() - last < 100 && p.done < p.total) return;
    last = Date.now();
    const width = 30;
    const ratio = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
    const filled = Math.round(ratio * width);
    process.stderr.write(
      `\r[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${p.done}/${p.total} accounts  ` +
        `changed ${p.changed}  tasks ${p.tasks}  failed ${p.failed}`,
    );
  };
}

function humanSummary(s: ScoreSyncSummary): string {
  const c = s.counters;
  const rate = s.elapsed_ms > 0 ? Math.round((c.accounts / s.elapsed_ms) * 1000) : c.accounts;
  return [
    `${s.dry_run ? 'dry run' : s.interrupted ? 'interrupted (rerun to resume)' : 'done'}: run ${s.run_id}${s.resumed ? ' (resumed)' : ''}`,
    `  accounts ${c.accounts}, ${s.dry_run ? 'would change' : 'changed'} ${c.changed}, unchanged ${c.unchanged}, ` +
      `skipped ${c.skipped}, failed ${c.failed}, ${s.dry_run ? 'would create' : 'tasks'} ${c.tasks}`,
    `  API calls: Sift ${c.sift_calls}, Salesforce ${c.salesforce_calls}` +
      (s.salesforce_api_usage_delta === undefined
        ? ''
        : ` (Sforce-Limit-Info delta ${s.salesforce_api_usage_delta})`),
    `  ${(s.elapsed_ms / 1000).toFixed(1)} s, ${rate} accounts/s`,
  ].join('\n');
}

export async function runSyncCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
  tools: readonly AnyTool[],
): Promise<number> {
  const what = subcommand('sync', args[0], ['scores', 'feedback', 'leads']);
  const logger = createLogger();
  const { config, secrets, sandbox } = await resolveUpstreams(loaded.config, loaded.secrets);
  const runtime = await openRuntime({ config, secrets, tools, logger });
  const state = runtime.store.syncState;
  const stop = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts += 1;
    // First Ctrl-C: stop at the next safe point (the checkpoint holds). Second: leave now (it still holds).
    if (interrupts > 1) process.exit(130);
    process.stderr.write('\nfraudgate: stopping at the next safe point (Ctrl-C again to quit now)\n');
    stop.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    const tty = process.stderr.isTTY === true;
    if (what === 'scores') {
      const summary = await runScoreSync(
        { sift: runtime.clients.sift, salesforce: runtime.clients.salesforce, state, config, logger },
        { dryRun: values['dry-run'] === true, signal: stop.signal, onProgress: progressWriter(tty) },
      );
      if (tty) process.stderr.write('\n');
      if (summary.planned) {
        for (const change of summary.planned)
          process.stdout.write(JSON.stringify({ type: 'would_change', ...change }) + '\n');
      }
      const { planned: _planned, ...rest } = summary;
      process.stdout.write(
        (process.stdout.isTTY ? humanSummary(summary) : JSON.stringify({ type: 'summary', ...rest })) + '\n',
      );
      return summary.interrupted ? 130 : summary.counters.failed > 0 ? 1 : 0;
    }
    if (what === 'leads') {
      const deps = {
        pipeline: createAutomationPipeline(runtime, tools),
        salesforce: runtime.clients.salesforce,
        state,
        config,
        logger,
        signal: stop.signal,
      };
      const report = (r: LeadWatchResult) =>
        process.stdout.write(JSON.stringify({ type: 'poll', ...r }) + '\n');
      if (values.once === true) {
        report(await runLeadWatcherOnce(deps));
        return 0;
      }
      await runEvery(
        config.leads.poll_interval_ms,
        stop.signal,
        async () => {
          report(await runLeadWatcherOnce(deps));
        },
        (error) =>
          logger.error('lead watcher poll failed', {
            error: error instanceof Error ? error.message : String(error),
          }),
      );
      return 0;
    }
    const poller = createLifecyclePoller({
      pipeline: createAutomationPipeline(runtime, tools),
      salesforce: runtime.clients.salesforce,
      state,
      config,
      logger,
    });
    const report = (r: PollResult) => {
      const line = {
        type: 'poll',
        scanned: r.scanned,
        baseline: r.baseline,
        deferred: r.deferred,
        watermark: r.watermark,
        events: r.events,
      };
      process.stdout.write(JSON.stringify(line) + '\n');
    };
    if (values.once === true) {
      report(await poller.pollOnce());
      return 0;
    }
    // Approved feedback (e.g. a BLOCK a human approved) executes here too, not only in `serve`.
    runtime.startApprovalSweep();
    await poller.run(stop.signal, report);
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await runtime.close();
    await sandbox?.close();
  }
}
