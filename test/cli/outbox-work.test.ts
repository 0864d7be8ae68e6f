/**
 * `fraudgate outbox work --once` through the real command (live mode, against the emulators): it
 * does what is due and exits, leaving an effect that waits out a backoff to a later run, with one
 * summary line on stderr; exit 1 only when an effect failed for good.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NewEffect } from '../../src/store/outbox-store.ts';
import { liveWorkerEnv, outboxEnv, type OutboxEnv } from '../outbox/helpers.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
/** A cold start of the CLI takes seconds on a loaded machine; the old `--once` held on for 10 minutes. */
const HANG = 90_000;

let env: OutboxEnv;
let configFile: string;
beforeAll(async () => {
  env = await outboxEnv();
  configFile = join(env.dataDir, 'worker-config.json');
  writeFileSync(configFile, JSON.stringify({ automation: { poll_ms: 20 } }));
});
afterAll(async () => {
  await env?.close();
});

function workOnce(): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'outbox', 'work', '--once'],
      { timeout: HANG, env: liveWorkerEnv(env, configFile) },
      (error, _stdout, stderr) => {
        const e = error as (Error & { code?: number; killed?: boolean }) | null;
        resolve({ code: e ? (e.killed ? null : (e.code ?? 1)) : 0, stderr });
      },
    ).stdin?.end();
  });
}

async function enqueue(user: string, effect: NewEffect) {
  await env.automation.store.enqueueRouted(
    { entityType: 'user', entityId: user, decisionId: 'watch_user_payment_abuse', time: Date.now() },
    [effect],
  );
}

describe('outbox work --once', { timeout: 2 * HANG }, () => {
  it('runs what is due, leaves an effect backing off for later, says so in one line and exits 0', async () => {
    const { sift } = env.sandbox;
    await enqueue('fg_once_backoff', {
      effect: 'segment',
      tool: 'sync_decision_to_segment',
      args: { user_id: 'fg_once_backoff' },
    });
    // As a failed attempt leaves it: pending, next try in an hour.
    const [leased] = await env.automation.store.claim('earlier-worker', 1, 30_000);
    const later = Date.now() + 3_600_000;
    await env.automation.store.retry(leased!.id, 'earlier-worker', later, 'UPSTREAM_ERROR: 503', true);
    await sift.consoleApplyDecision({ decisionId: 'watch_user_payment_abuse', userId: 'fg_once_due' });
    await enqueue('fg_once_due', {
      effect: 'segment',
      tool: 'sync_decision_to_segment',
      args: { user_id: 'fg_once_due' },
    });

    const run = await workOnce();
    expect(run.code).toBe(0);
    const until = new Date(later).toISOString().slice(0, 19).replace('T', ' ');
    expect(run.stderr.trim().split('\n').at(-1)).toBe(
      `fraudgate: outbox work --once: done 1, deferred 1 until ${until} UTC, failed 0`,
    );
    expect(await env.automation.store.get(leased!.id)).toMatchObject({ state: 'pending', attempts: 1 });
  });

  it('exits 1 when an effect failed for good, naming where to look', async () => {
    // Arguments the tool refuses: a final error, so a dead letter at once.
    await enqueue('fg_once_dead', { effect: 'segment', tool: 'sync_decision_to_segment', args: {} });
    const run = await workOnce();
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').at(-1)).toMatch(
      /^fraudgate: outbox work --once: done 0, deferred 1 until .* UTC, failed 1 \(fraudgate outbox list\)$/,
    );
  });
});
