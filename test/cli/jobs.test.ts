/**
 * `fraudgate jobs [--json]` through the real command: the fleet view of what replicas recorded in
 * the store — each job's schedule (configured or default), last run with its replica and outcome,
 * next run, last error, and the replica holding the job's lease now; off jobs say why.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import type { JobView } from '../../src/cli/jobs.ts';
import { createJobRunner } from '../../src/jobs/job-runner.ts';
import { silentLogger } from '../../src/logger.ts';
import { openStore } from '../../src/store/store.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const dir = mkdtempSync(join(tmpdir(), 'fraudgate-jobs-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        timeout: 90_000,
        env: { PATH: process.env.PATH ?? '', HOME: dir, FRAUDGATE_DATA_DIR: join(dir, 'data') },
      },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ).stdin?.end();
  });
}

describe('fraudgate jobs', { timeout: 120_000 }, () => {
  it('shows every job with schedule, last and next run, last error and current holder', async () => {
    const config = { ...DEFAULTS, data_dir: join(dir, 'data') };
    const store = await openStore(config, {});
    let t = Date.parse('2026-11-30T10:00:00Z');
    const runner = createJobRunner({ store, replicaId: 'host-a:8787', logger: silentLogger, now: () => t });
    runner.register({
      name: 'lifecycle_feedback',
      schedule: { every_ms: 60_000 },
      run: async () => {
        throw new Error('Salesforce answered 503');
      },
    });
    runner.register({ name: 'approval_sweep', schedule: { every_ms: 1000 }, run: async () => {} });
    await runner.tick();
    t += 60_000;
    expect(await runner.tick()).toEqual(['lifecycle_feedback', 'approval_sweep']);
    await runner.close();
    // Another replica is running the sweep right now.
    await store.leases.acquire('approval_sweep', 'host-b:8787', 30_000);
    await store.jobs.started('approval_sweep', 'host-b:8787', Date.now());
    await store.close();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ jobs: { score_sync: { daily_at: '03:30' } } }));

    const json = await cli(['jobs', '--json', '--config', join(dir, 'config.json')]);
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const views = JSON.parse(json.stdout) as JobView[];
    const byName = Object.fromEntries(views.map((v) => [v.name, v]));
    expect(Object.keys(byName)).toEqual([
      'approval_sweep',
      'lifecycle_feedback',
      'lead_watcher',
      'score_sync',
      'audit_retention',
    ]);
    expect(byName.lifecycle_feedback).toMatchObject({
      enabled: true,
      schedule: 'every 1 min',
      last_run: {
        started_at: '2026-11-30T10:01:00.000Z',
        status: 'failed',
        replica: 'host-a:8787',
        duration_ms: 0,
      },
      // Retried after min(schedule, 5 min).
      next_run_at: '2026-11-30T10:02:00.000Z',
      last_error: 'Salesforce answered 503',
      holder: null,
      runs: 1,
    });
    expect(byName.approval_sweep).toMatchObject({
      schedule: 'every 1 s',
      holder: 'host-b:8787',
      last_run: { status: 'running', replica: 'host-b:8787', finished_at: null },
    });
    expect(byName.score_sync).toMatchObject({ schedule: 'daily at 03:30 UTC', last_run: null, runs: 0 });
    expect(byName.audit_retention).toMatchObject({
      enabled: false,
      off_because: 'audit.retention_days is 0: keep everything',
      next_run_at: null,
    });

    const text = await cli(['jobs', '--config', join(dir, 'config.json')]);
    expect(text.code).toBe(0);
    const lines = text.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^JOB\s+SCHEDULE\s+LAST RUN\s+NEXT RUN\s+HOLDER\s+LAST ERROR$/);
    expect(lines.find((l) => l.startsWith('lifecycle_feedback'))).toMatch(
      /every 1 min\s+2026-11-30T10:01:00.000Z failed 0 ms on host-a:8787\s+2026-11-30T10:02:00.000Z\s+-\s+Salesforce answered 503/,
    );
    expect(lines.find((l) => l.startsWith('approval_sweep'))).toContain('host-b:8787');
    expect(lines.find((l) => l.startsWith('audit_retention'))).toContain(
      'off (audit.retention_days is 0: keep everything)',
    );
  });

  it('refuses arguments as a usage error', async () => {
    const run = await cli(['jobs', 'list']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('jobs takes no arguments');
  });
});
