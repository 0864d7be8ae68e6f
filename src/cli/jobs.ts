/**
 * `fraudgate jobs [--json]`: the fleet view of the background jobs `serve` runs. It reads the store
 * every replica writes (job rows and leases), so any replica — or an operator's shell on the same
 * store — sees which job ran where and when, when it runs next, its last error and who holds it now.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { describeSchedule } from '../jobs/job-runner.ts';
import { plannedJobs } from '../jobs/serve-jobs.ts';
import { createLogger } from '../logger.ts';
import type { JobState } from '../store/job-state-store.ts';
import { openStore } from '../store/store.ts';
import { UsageError } from './usage.ts';

/** One job as `--json` prints it; times are ISO-8601 (UTC), absent ones null. */
export interface JobView {
  name: string;
  enabled: boolean;
  /** Why it is off, when that is not its own `enabled: false`. */
  off_because?: string;
  schedule: string;
  last_run: {
    started_at: string;
    finished_at: string | null;
    duration_ms: number | null;
    status: 'ok' | 'failed' | 'running' | null;
    replica: string | null;
  } | null;
  next_run_at: string | null;
  last_error: string | null;
  /** The replica holding the job's lease now (running it), else null. */
  holder: string | null;
  runs: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export async function runJobsCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  if (args.length > 0)
    throw new UsageError([{ field: 'command', message: `unexpected '${args[0]}': jobs takes no arguments` }]);
  const logger = createLogger({ level: 'warn' });
  // No field cipher: job rows and leases hold no personal fields, so no data key is needed to read them.
  const store = await openStore(loaded.config, loaded.secrets, {
    onWaiting: (message) => logger.warn(message),
  });
  try {
    const rows = new Map((await store.jobs.list()).map((row) => [row.name, row]));
    const planned = plannedJobs(loaded.config);
    // Jobs another build registered (or this config no longer plans) still show, from their rows.
    const names = [...new Set([...planned.map((p) => p.name as string), ...rows.keys()])];
    const now = Date.now();
    const views: JobView[] = [];
    for (const name of names) {
      const plan = planned.find((p) => p.name === name);
      const row: JobState | undefined = rows.get(name);
      const lease = await store.leases.get(name);
      const holder = lease && lease.expires_at > now ? lease.holder : null;
      const enabled = plan ? plan.enabled : true;
      const running = holder !== null && (row?.last_finished_at ?? -1) < (row?.last_started_at ?? -1);
      views.push({
        name,
        enabled,
        ...(plan?.off_because ? { off_because: plan.off_because } : {}),
        schedule: plan ? describeSchedule(plan.schedule) : (row?.schedule ?? '?'),
        last_run:
          row?.last_started_at == null
            ? null
            : {
                started_at: iso(row.last_started_at)!,
                finished_at: running ? null : iso(row.last_finished_at),
                duration_ms: running ? null : row.last_duration_ms,
                status: running ? 'running' : row.last_status,
                replica: row.last_holder,
              },
        next_run_at: enabled && row ? iso(row.next_run_at) : null,
        last_error: row?.last_error ?? null,
        holder,
        runs: row?.runs ?? 0,
      });
    }
    if (values.json) {
      process.stdout.write(JSON.stringify(views, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(table(views) + '\n');
    return 0;
  } finally {
    await store.close();
  }
}

function table(views: JobView[]): string {
  const header = ['JOB', 'SCHEDULE', 'LAST RUN', 'NEXT RUN', 'HOLDER', 'LAST ERROR'];
  const rows = views.map((v) => [
    v.name,
    v.enabled ? v.schedule : `off (${v.off_because ?? 'jobs.' + v.name + '.enabled is false'})`,
    v.last_run
      ? `${v.last_run.started_at} ${v.last_run.status ?? ''}` +
        `${v.last_run.duration_ms === null ? '' : ` ${v.last_run.duration_ms} ms`}` +
        `${v.last_run.replica ? ` on ${v.last_run.replica}` : ''}`
      : 'never',
    v.next_run_at ?? (v.enabled ? 'when serve starts' : '-'),
    v.holder ?? '-',
    v.last_error ?? '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
