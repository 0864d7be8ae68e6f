/**
 * The jobs `serve` registers: their schedules from `jobs.<name>` (defaults, overrides, bad keys
 * refused naming the field), and the wiring through a real runtime — the approval sweep job
 * executes an approved action nobody waits for, on the replica that holds its lease; the score sync
 * job with an account Salesforce refuses to update creates its Task once and waits for its next
 * scheduled run instead of re-reading every account every few minutes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULTS, loadConfig, mergeConfig, type Config } from '../../src/config.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { createJobRunner, nextDailyRun } from '../../src/jobs/job-runner.ts';
import { plannedJobs, registerServeJobs } from '../../src/jobs/serve-jobs.ts';
import { silentLogger } from '../../src/logger.ts';
import { startSandbox } from '../../src/sandbox/sandbox.ts';
import { tools } from '../../tools/index.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

function configFrom(file: unknown): Config {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-jobs-config-'));
  try {
    writeFileSync(join(dir, 'config.json'), JSON.stringify(file));
    return loadConfig({ configFile: join(dir, 'config.json') }, { HOME: dir }, dir).config;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function issuesOf(file: unknown): string[] {
  try {
    configFrom(file);
  } catch (error) {
    if (error instanceof InvalidInputError) return error.issues.map((i) => `${i.field}: ${i.message}`);
    throw error;
  }
  return [];
}

describe('serve jobs: schedules', () => {
  it('defaults, overrides and off switches', () => {
    const byName = (config: Config) => Object.fromEntries(plannedJobs(config).map((j) => [j.name, j]));
    const defaults = byName(DEFAULTS);
    expect(defaults.approval_sweep).toMatchObject({ enabled: true, schedule: { every_ms: 1000 } });
    expect(defaults.lifecycle_feedback).toMatchObject({ enabled: true, schedule: { every_ms: 60_000 } });
    expect(defaults.score_sync).toMatchObject({ enabled: true, schedule: { daily_at: '02:00' } });
    expect(defaults.audit_retention).toMatchObject({ enabled: false, schedule: { every_ms: 3_600_000 } });

    const tuned = byName(
      configFrom({
        audit: { retention_days: 30 },
        jobs: { score_sync: { every_ms: 21_600_000 }, lifecycle_feedback: { enabled: false } },
      }),
    );
    expect(tuned.score_sync).toMatchObject({ enabled: true, schedule: { every_ms: 21_600_000 } });
    expect(tuned.lifecycle_feedback?.enabled).toBe(false);
    expect(tuned.audit_retention).toMatchObject({ enabled: true, schedule: { every_ms: 3_600_000 } });
  });

  it('refuses both schedules at once, a bad time of day and an unknown job, naming the field', () => {
    expect(issuesOf({ jobs: { score_sync: { every_ms: 1000, daily_at: '02:00' } } })).toEqual([
      expect.stringMatching(/^jobs\.score_sync\.daily_at: set every_ms or daily_at, not both/),
    ]);
    expect(issuesOf({ jobs: { score_sync: { daily_at: '2am' } } })).toEqual([
      expect.stringMatching(/^jobs\.score_sync\.daily_at: a UTC time of day as HH:MM/),
    ]);
    expect(issuesOf({ jobs: { lead_wacher: { enabled: true } } })).toEqual([
      expect.stringMatching(/^jobs: .*lead_wacher/),
    ]);
    expect(issuesOf({ jobs: { lease_ttl_ms: 60_000 } })).toEqual([
      expect.stringMatching(/^jobs\.lease_ttl_ms: /),
    ]);
  });
});

describe('serve jobs: through a runtime', () => {
  it('the approval sweep job executes an approved action nobody waits for', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'chargebacks on three cards',
    });
    const approvalId = String(result.error.approval_id);
    await env.runtime.desk.decide(approvalId, {
      approve: true,
      approver: { id: 'ola.approver@example.com', kind: 'user', role: 'approver' },
    });
    const config: Config = mergeConfig(env.runtime.config, {
      jobs: { lifecycle_feedback: { enabled: false }, score_sync: { enabled: false } },
    });
    let t = Date.now();
    const runner = createJobRunner({
      store: env.runtime.store,
      replicaId: 'replica-a',
      logger: silentLogger,
      now: () => t,
    });
    registerServeJobs(runner, { ...env.runtime, config }, tools);
    expect(await runner.tick()).toEqual([]);
    expect((await env.runtime.approvals.get(approvalId))?.state).toBe('approved');
    t += 1000;
    expect(await runner.tick()).toEqual(['approval_sweep']);
    expect((await env.runtime.approvals.get(approvalId))?.state).toBe('executed');
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    expect(await env.runtime.store.jobs.get('approval_sweep')).toMatchObject({
      last_holder: 'replica-a',
      last_status: 'ok',
    });
    await runner.close();
  });

  /**
   * `n` linked accounts stored at 10 whose Sift score is 0.8 (each a movement over the Task
   * threshold); the `locked` one's score may not change (an org validation rule). Only the score
   * sync job is on; `at` moves the runner's clock.
   */
  async function scoreSyncJob(n: number, lockedIndex: number) {
    const sandbox = await startSandbox(DEFAULTS, { seed: false });
    const accounts = Array.from({ length: n }, (_, i) => {
      sandbox.sift.setScore(`sync-${i}`, 'payment_abuse', 0.8);
      return sandbox.salesforce.insert('Account', {
        Name: `Sync ${i}`,
        Sift_User_Id__c: `sync-${i}`,
        Sift_Score__c: 10,
        Sift_Risk_Band__c: 'low',
      });
    });
    const locked = accounts[lockedIndex]!.Id;
    sandbox.salesforce.addValidationRule('Account', (record) =>
      record.Id === locked && record.Sift_Score__c !== 10
        ? 'Sift score is locked for this account'
        : undefined,
    );
    env = await setup({ sandbox });
    const e = env;
    const originalClose = e.close;
    e.close = async () => {
      await originalClose();
      await sandbox.close();
    };
    const config: Config = mergeConfig(e.runtime.config, {
      jobs: {
        approval_sweep: { enabled: false },
        lifecycle_feedback: { enabled: false },
        lead_watcher: { enabled: false },
      },
    });
    const clock = { t: Date.parse('2026-11-30T12:00:00.000Z') };
    const runner = createJobRunner({
      store: e.runtime.store,
      replicaId: 'replica-a',
      logger: silentLogger,
      now: () => clock.t,
    });
    registerServeJobs(runner, { ...e.runtime, config }, tools);
    expect(await runner.tick()).toEqual([]);
    return {
      env: e,
      accounts,
      locked,
      runner,
      clock,
      scoreReads: () => sandbox.sift.requests('GET', '/v205/users/:id/score').length,
      tasksOf: (id: string) => sandbox.salesforce.records('Task').filter((task) => task.WhatId === id),
      job: () => e.runtime.store.jobs.get('score_sync'),
    };
  }

  it('score sync: an account Salesforce refuses gets one Task, and the job waits for its next day', async () => {
    const { env, accounts, locked, runner, clock, scoreReads, tasksOf, job } = await scoreSyncJob(6, 2);
    for (let day = 1; day <= 3; day++) {
      clock.t = nextDailyRun('02:00', clock.t);
      const readsBefore = scoreReads();
      expect(await runner.tick()).toEqual(['score_sync']);
      expect(scoreReads() - readsBefore).toBe(accounts.length);
      expect(await job()).toMatchObject({ last_status: 'ok', runs: day });
      // Minutes later: not due again, so no account is read again.
      for (let minutes = 5; minutes <= 15; minutes += 5) {
        clock.t += 5 * 60_000;
        expect(await runner.tick()).toEqual([]);
      }
      expect(scoreReads() - readsBefore).toBe(accounts.length);
    }
    expect(tasksOf(locked)).toHaveLength(1);
    expect(String(tasksOf(locked)[0]!.Subject)).toMatch(
      /^Sift score moved 10 → 80: Sync 2 \[fraudgate:score 10->80\]$/,
    );
    const byId = new Map(env.sandbox.salesforce.records('Account').map((a) => [a.Id, a]));
    expect(byId.get(locked)?.Sift_Score__c).toBe(10);
    for (const account of accounts.filter((a) => a.Id !== locked)) {
      expect(byId.get(account.Id)?.Sift_Score__c).toBe(80);
      expect(tasksOf(account.Id)).toHaveLength(1);
    }
    await runner.close();
  });

  it('score sync: a run in which every account failed is retried within minutes, without a second Task', async () => {
    const { locked, runner, clock, scoreReads, tasksOf, job } = await scoreSyncJob(1, 0);
    clock.t = nextDailyRun('02:00', clock.t);
    expect(await runner.tick()).toEqual(['score_sync']);
    const failed = await job();
    expect(failed).toMatchObject({ last_status: 'failed', next_run_at: clock.t + 5 * 60_000 });
    expect(failed!.last_error).toMatch(/all 1 accounts failed/);
    clock.t = failed!.next_run_at;
    expect(await runner.tick()).toEqual(['score_sync']);
    expect(scoreReads()).toBe(2);
    expect(tasksOf(locked)).toHaveLength(1);
    await runner.close();
  });
});
