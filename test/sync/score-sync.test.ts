/**
 * `fraudgate sync scores` against the real emulators and a real SQLite checkpoint: only changed
 * fields written, ~N/200 composite calls, Tasks only above the delta, dry run, Sift budget and
 * 429s (a long Retry-After ends the run, a stop cuts a pause short), resume after a crash
 * (in-process seam and a SIGKILLed CLI), no writes after a stop, JSON progress lines.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { silentLogger } from '../../src/logger.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import type { SyncStateStore } from '../../src/store/sync-state-store.ts';
import { runScoreSync, SimulatedCrashError, type ScoreSyncOptions } from '../../src/sync/score-sync.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';
import { testSigningKeyPem } from '../helpers/audit.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
/** The child runs live mode (against the emulators), which needs a checkpoint signing key. */
const SIGNING_KEY = testSigningKeyPem();

let env: TestEnv | undefined;
let state: SyncStateStore | undefined;

afterEach(async () => {
  state = undefined;
  await env?.close();
  env = undefined;
});

/**
 * `n` linked accounts, all with Sift score 0.5 (50, band medium). By i % 3: 0 already in sync;
 * 1 stored 45 (score changes by 5: no Task); 2 stored 10/low (moves by 40: a Task).
 */
function seed(sandbox: Sandbox, n: number) {
  for (let i = 0; i < n; i += 1) {
    const user = `bulk-${String(i).padStart(4, '0')}`;
    sandbox.sift.setScore(user, 'payment_abuse', 0.5);
    const kind = i % 3;
    sandbox.salesforce.insert('Account', {
      Name: `Bulk ${i}`,
      Sift_User_Id__c: user,
      Sift_Score__c: kind === 0 ? 50 : kind === 1 ? 45 : 10,
      Sift_Risk_Band__c: kind === 2 ? 'low' : 'medium',
    });
  }
}

async function start(n: number) {
  const sandbox = await startSandbox(DEFAULTS, { seed: false });
  seed(sandbox, n);
  // A generous Sift budget: these tests are about correctness; the budget has its own test.
  env = await setup({ sandbox, config: { score_sync: { sift_budget_per_minute: 120_000, concurrency: 8 } } });
  state = env.runtime.store.syncState;
  const e = env;
  const originalClose = e.close;
  e.close = async () => {
    await originalClose();
    await sandbox.close();
  };
  return { env: e, state };
}

const sync = (e: TestEnv, s: SyncStateStore, options: ScoreSyncOptions = {}, config = e.config) =>
  runScoreSync(
    {
      sift: e.runtime.clients.sift,
      salesforce: e.runtime.clients.salesforce,
      state: s,
      config,
      logger: silentLogger,
    },
    options,
  );

const compositeUpdates = (e: TestEnv) =>
  e.sandbox.salesforce.requests('PATCH', '/services/data/:version/composite/sobjects');
const compositeCreates = (e: TestEnv) =>
  e.sandbox.salesforce.requests('POST', '/services/data/:version/composite/sobjects');

describe('score sync', () => {
  it('writes only changed fields in ≤200-record batches and Tasks only above the delta', async () => {
    const { env, state } = await start(450);
    env.sandbox.salesforce.clearJournal();
    const summary = await sync(env, state);
    expect(summary.counters).toMatchObject({
      accounts: 450,
      changed: 300,
      unchanged: 150,
      tasks: 150,
      failed: 0,
      skipped: 0,
      sift_calls: 450,
    });
    // 300 changed records in three pages → three composite updates (~N/200), one Task create per page.
    const updates = compositeUpdates(env);
    expect(updates).toHaveLength(3);
    const records = updates.flatMap((r) => (r.body as { records: Record<string, unknown>[] }).records);
    expect(records).toHaveLength(300);
    const small = records.filter((r) => !('Sift_Risk_Band__c' in r));
    expect(small).toHaveLength(150);
    expect(
      small.every(
        (r) => r.Sift_Score__c === 50 && Object.keys(r).sort().join() === 'Sift_Score__c,attributes,id',
      ),
    ).toBe(true);
    expect(records.filter((r) => r.Sift_Risk_Band__c === 'medium')).toHaveLength(150);
    expect(compositeCreates(env)).toHaveLength(3);
    const tasks = env.sandbox.salesforce.records('Task');
    expect(tasks).toHaveLength(150);
    expect(new Set(tasks.map((t) => t.WhatId)).size).toBe(150);
    expect(tasks[0]).toMatchObject({
      Status: 'Not Started',
      Priority: 'High',
      OwnerId: env.sandbox.salesforce.integrationUserId,
    });
    // Salesforce calls: 1 count + 3 pages + 3 updates + 3 Task creates.
    expect(summary.counters.salesforce_calls).toBe(10);
    expect(summary.salesforce_api_usage_delta).toBe(10);
    const accounts = env.sandbox.salesforce.records('Account');
    expect(accounts.every((a) => a.Sift_Score__c === 50 && a.Sift_Risk_Band__c === 'medium')).toBe(true);

    // A second run finds nothing to do and creates no Task.
    env.sandbox.salesforce.clearJournal();
    const again = await sync(env, state);
    expect(again.resumed).toBe(false);
    expect(again.counters).toMatchObject({ accounts: 450, changed: 0, tasks: 0 });
    expect(compositeUpdates(env)).toHaveLength(0);
    expect(env.sandbox.salesforce.records('Task')).toHaveLength(150);
  });

  it('reads and writes the Sift fields under the names mapping.salesforce_fields gives them', async () => {
    const fields = { sift_user_id: 'Sift_Id__c', score: 'Sift_Risk_Score__c', risk_band: 'Sift_Band__c' };
    const sandbox = await startSandbox(DEFAULTS, { seed: false });
    for (const name of Object.values(fields)) {
      sandbox.salesforce.addCustomField('Account', {
        name,
        type: name === fields.score ? 'double' : 'string',
        length: 255,
      });
    }
    sandbox.sift.setScore('remapped-1', 'payment_abuse', 0.9);
    sandbox.sift.setScore('remapped-2', 'payment_abuse', 0.5);
    const moved = sandbox.salesforce.insert('Account', {
      Name: 'Moved',
      Sift_Id__c: 'remapped-1',
      Sift_Risk_Score__c: 10,
      Sift_Band__c: 'low',
    });
    const same = sandbox.salesforce.insert('Account', {
      Name: 'Same',
      Sift_Id__c: 'remapped-2',
      Sift_Risk_Score__c: 50,
      Sift_Band__c: 'medium',
    });
    env = await setup({ sandbox, config: { mapping: { salesforce_fields: fields } } });
    const e = env;
    const originalClose = e.close;
    e.close = async () => {
      await originalClose();
      await sandbox.close();
    };
    const dry = await sync(e, e.runtime.store.syncState, { dryRun: true });
    expect(dry.planned).toEqual([
      expect.objectContaining({
        account_id: moved.Id,
        sift_user_id: 'remapped-1',
        fields: { Sift_Risk_Score__c: 90, Sift_Band__c: 'critical' },
        previous: { score: 10, band: 'low' },
        task: true,
      }),
    ]);
    const summary = await sync(e, e.runtime.store.syncState);
    expect(summary.counters).toMatchObject({ accounts: 2, changed: 1, unchanged: 1, tasks: 1, failed: 0 });
    const accounts = e.sandbox.salesforce.records('Account');
    expect(accounts.find((a) => a.Id === moved.Id)).toMatchObject({
      Sift_Risk_Score__c: 90,
      Sift_Band__c: 'critical',
    });
    expect(accounts.find((a) => a.Id === same.Id)).toMatchObject({ Sift_Risk_Score__c: 50 });
    expect(String(e.sandbox.salesforce.records('Task')[0]?.Description)).toContain('Sift user remapped-1');
  });

  it('dry run reads everything and writes nothing, not even the checkpoint', async () => {
    const { env, state } = await start(60);
    env.sandbox.salesforce.clearJournal();
    const summary = await sync(env, state, { dryRun: true });
    expect(summary.dry_run).toBe(true);
    expect(summary.counters).toMatchObject({ accounts: 60, changed: 40, tasks: 20 });
    expect(summary.planned).toHaveLength(40);
    expect(summary.planned?.filter((p) => p.task)).toHaveLength(20);
    expect(
      env.sandbox.salesforce.journal.filter((r) => r.method !== 'GET' && !r.path.includes('oauth2')),
    ).toEqual([]);
    expect(env.sandbox.salesforce.records('Task')).toHaveLength(0);
    expect(await state.openRun()).toBeUndefined();
  });

  it('resumes after a crash mid-batch without duplicate Tasks, and after a graceful stop', async () => {
    const { env, state } = await start(450);
    // Crash in batch 2 right after Salesforce created its Tasks, before the ledger and the score update.
    await expect(sync(env, state, { crashAfterTasksInBatch: 2 })).rejects.toBeInstanceOf(SimulatedCrashError);
    expect((await state.openRun())?.cursor).not.toBe('');
    const tasksAfterCrash = env.sandbox.salesforce.records('Task').length;
    expect(tasksAfterCrash).toBe(66 + 67);

    const resumed = await sync(env, state);
    expect(resumed.resumed).toBe(true);
    expect(resumed.counters).toMatchObject({ accounts: 450, changed: 300, tasks: 150, failed: 0 });
    const tasks = env.sandbox.salesforce.records('Task');
    expect(tasks).toHaveLength(150);
    expect(new Set(tasks.map((t) => t.WhatId)).size).toBe(150);
    expect(await state.openRun()).toBeUndefined();
  });

  it('a graceful stop after K batches leaves a checkpoint the next run continues from', async () => {
    const { env, state } = await start(450);
    const first = await sync(env, state, { stopAfterBatches: 1 });
    expect(first).toMatchObject({ interrupted: true, counters: { accounts: 200 } });
    env.sandbox.sift.clearJournal();
    const second = await sync(env, state);
    expect(second).toMatchObject({
      resumed: true,
      interrupted: false,
      counters: { accounts: 450, tasks: 150 },
    });
    // Only the remaining 250 were scored again.
    expect(env.sandbox.sift.journal.filter((r) => r.path.includes('/score'))).toHaveLength(250);
    expect(env.sandbox.salesforce.records('Task')).toHaveLength(150);
  });

  it('a stop that comes while the Tasks are written keeps the score update from being written', async () => {
    const { env, state } = await start(30);
    const stop = new AbortController();
    // The signal aborts (the job lease was lost) right as Salesforce takes the batch's Task create.
    env.sandbox.salesforce.onWrite(() => {
      if (compositeCreates(env).length > 0) stop.abort(new Error('job lease lost'));
    });
    env.sandbox.salesforce.clearJournal();
    const first = await sync(env, state, { signal: stop.signal });
    expect(first).toMatchObject({ interrupted: true, counters: { accounts: 0 } });
    expect(compositeCreates(env)).toHaveLength(1);
    expect(compositeUpdates(env)).toHaveLength(0);
    expect(env.sandbox.salesforce.records('Task')).toHaveLength(10);

    // The next run redoes the batch: the scores land, the Tasks are not created again.
    const second = await sync(env, state);
    expect(second).toMatchObject({
      resumed: true,
      interrupted: false,
      counters: { accounts: 30, changed: 20 },
    });
    expect(compositeUpdates(env)).toHaveLength(1);
    expect(env.sandbox.salesforce.records('Task')).toHaveLength(10);
  });

  it('a Sift Retry-After too long to wait out ends the run interrupted; the next run resumes', async () => {
    const { env, state } = await start(30);
    env.sandbox.sift.rateLimit(1, { httpStatus: 429, retryAfterSeconds: 3600 });
    env.sandbox.salesforce.clearJournal();
    const first = await sync(env, state);
    expect(first).toMatchObject({ interrupted: true, counters: { accounts: 0, failed: 0 } });
    expect([...compositeCreates(env), ...compositeUpdates(env)]).toEqual([]);
    expect(await state.openRun()).toMatchObject({ id: first.run_id, cursor: '' });

    const second = await sync(env, state);
    expect(second).toMatchObject({
      run_id: first.run_id,
      resumed: true,
      interrupted: false,
      counters: { accounts: 30, changed: 20, tasks: 10, failed: 0 },
    });
  });

  it('a stop cuts a Sift pause short', async () => {
    const { env, state } = await start(30);
    // Under the cap: waited out, unless the run is told to stop (longer than the test's timeout).
    env.sandbox.sift.rateLimit(1, { httpStatus: 429, retryAfterSeconds: 50 });
    env.sandbox.sift.clearJournal();
    const stop = new AbortController();
    const run = sync(env, state, { signal: stop.signal });
    await vi.waitFor(() => expect(env.sandbox.sift.journal.some((r) => r.status === 429)).toBe(true));
    stop.abort(new Error('fraudgate is shutting down'));
    expect(await run).toMatchObject({ interrupted: true, counters: { accounts: 0 } });
    expect(compositeUpdates(env)).toEqual([]);
  });

  it('respects the Sift budget and rides out 429s without failing', async () => {
    const { env, state } = await start(60);
    env.sandbox.sift.rateLimit(25, { httpStatus: 429 });
    const config = {
      ...env.config,
      score_sync: { ...env.config.score_sync, concurrency: 4, sift_budget_per_minute: 1_800 },
    };
    const started = Date.now();
    const summary = await sync(env, state, {}, config);
    expect(summary.counters).toMatchObject({ accounts: 60, changed: 40, failed: 0 });
    // 60 calls at 30/s with a burst of 4 take ≥ ~1.9 s; the 429s add pauses on top.
    expect(Date.now() - started).toBeGreaterThan(1_800);
    expect(env.sandbox.sift.journal.filter((r) => r.path.includes('/score')).length).toBeGreaterThanOrEqual(
      85,
    );
  });
});

describe('fraudgate sync scores (CLI)', () => {
  let dataDir = '';
  afterEach(() => {
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  function runCli(sandbox: Sandbox, args: string[], onStderrLine?: (line: string) => void) {
    const child = spawn(process.execPath, [CLI, 'sync', ...args], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: dataDir,
        FRAUDGATE_DATA_DIR: dataDir,
        FRAUDGATE_CONFIG: join(dataDir, 'config.json'),
        FRAUDGATE_LOG_LEVEL: 'error',
        SIFT_BASE_URL: sandbox.config.sift.base_url,
        SIFT_ACCOUNT_ID: sandbox.config.sift.account_id,
        SIFT_API_KEY: sandbox.secrets.siftApiKey,
        FRAUDGATE_AUDIT_SIGNING_KEY: SIGNING_KEY,
        FRAUDGATE_DATA_KEY: 'a'.repeat(64),
        SEGMENT_HOST: sandbox.config.segment.host,
        SEGMENT_PROFILE_BASE_URL: sandbox.config.segment.profile_base_url,
        SEGMENT_SPACE_ID: sandbox.config.segment.space_id,
        SEGMENT_WRITE_KEY: sandbox.secrets.segmentWriteKey,
        SEGMENT_PROFILE_TOKEN: sandbox.secrets.segmentProfileToken,
        SALESFORCE_LOGIN_URL: sandbox.config.salesforce.login_url,
        SALESFORCE_CLIENT_ID: sandbox.secrets.salesforceClientId,
        SALESFORCE_CLIENT_SECRET: sandbox.secrets.salesforceClientSecret,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => {
      const before = stderr.length;
      stderr += c.toString();
      for (const line of stderr.slice(before).split('\n')) if (line) onStderrLine?.(line);
    });
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    return { child, done, out: () => stdout, err: () => stderr };
  }

  it('prints JSON progress lines when not on a terminal, survives SIGKILL and resumes without duplicate Tasks', async () => {
    const sandbox = await startSandbox(DEFAULTS, { seed: false });
    try {
      seed(sandbox, 450);
      dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-sync-'));
      // A slow budget (≈4 s a batch) so the kill lands mid-run, after the first checkpoint.
      writeFileSync(
        join(dataDir, 'config.json'),
        JSON.stringify({ score_sync: { sift_budget_per_minute: 3_000, concurrency: 4 } }),
      );
      let killed = false;
      const first = runCli(sandbox, ['scores'], (line) => {
        if (!killed && line.startsWith('{"type":"progress"')) {
          killed = true;
          first.child.kill('SIGKILL');
        }
      });
      expect((await first.done).signal).toBe('SIGKILL');
      const progress = JSON.parse(first.err().split('\n')[0] ?? '') as Record<string, unknown>;
      expect(progress).toMatchObject({ type: 'progress', done: 200, total: 450 });
      const tasksBefore = sandbox.salesforce.records('Task').length;
      expect(tasksBefore).toBeGreaterThanOrEqual(66);

      writeFileSync(join(dataDir, 'config.json'), JSON.stringify({ score_sync: { concurrency: 8 } }));
      const second = runCli(sandbox, ['scores']);
      expect((await second.done).code).toBe(0);
      const lines = second
        .err()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.every((l) => l.type === 'progress')).toBe(true);
      expect(lines.at(-1)).toMatchObject({ done: 450, total: 450 });
      const summary = JSON.parse(second.out().trim().split('\n').at(-1) ?? '') as Record<string, unknown>;
      expect(summary).toMatchObject({
        type: 'summary',
        resumed: true,
        counters: { accounts: 450, tasks: 150 },
      });
      const tasks = sandbox.salesforce.records('Task');
      expect(tasks).toHaveLength(150);
      expect(new Set(tasks.map((t) => t.WhatId)).size).toBe(150);
    } finally {
      await sandbox.close();
    }
  }, 60_000);
});
