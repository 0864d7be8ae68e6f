/**
 * The outbox pauses while a dependency is down, without spending attempts (issue 8 item 6): with the
 * Sift emulator stopped (connections refused), effects fail more often than `max_attempts` allows,
 * yet none spends an attempt or becomes a dead letter; once Sift listens again on the same port the
 * running worker resumes by itself and every effect runs. A 500 or a reset still counts (worker.test.ts, exactly-once.test.ts).
 * The same for the audit ledger that cannot write (intent records failing, injected): a retryable
 * UPSTREAM_ERROR naming the ledger, never an attempt spent.
 * The pause is per upstream: Salesforce refusing connections holds back Salesforce effects only
 * (one probe per doubling pause), while Segment and Sift effects keep flowing, even with a stream
 * of Segment messages answered by Sift.
 */
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { databasePath } from '../../src/store/store.ts';
import { startSiftEmulator, type SiftEmulator } from '../../src/sandbox/sift-emulator.ts';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { outboxEnv, startSegmentIntake, type OutboxEnv } from './helpers.ts';

const USERS = ['sandbox-watch', 'sandbox-high-risk', 'fg_pause_3'];
const MAX_ATTEMPTS = 4;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The effects once nothing is pending or leased (or after 20 s). */
async function settledEffects(store: OutboxEnv['automation']['store']) {
  const busy = async () => {
    const s = await store.stats();
    return s.pending + s.leased > 0;
  };
  for (let i = 0; i < 400 && (await busy()); i += 1) await sleep(50);
  return store.list({ limit: 100 });
}

/** One Segment sync per user of a Sift "watch" decision. */
async function enqueueWatchSyncs(store: OutboxEnv['automation']['store']) {
  for (const user of USERS) {
    await store.enqueueRouted(
      { entityType: 'user', entityId: user, decisionId: 'watch_user_payment_abuse', time: Date.now() },
      [{ effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: user } }],
    );
  }
}

let env: OutboxEnv | undefined;
let restarted: SiftEmulator | undefined;
let intake: { url: string; close(): Promise<void> } | undefined;
afterEach(async () => {
  await intake?.close();
  intake = undefined;
  await env?.automation.worker.stop();
  await env?.close();
  await restarted?.close();
  env = undefined;
  restarted = undefined;
});

describe('outbox pause', { timeout: 60_000 }, () => {
  it('a stopped upstream pauses the queue without spending attempts; it resumes by itself when back', async () => {
    // backoff 20 ms … 400 ms (helpers.ts): the pause doubles per failed probe, up to 400 ms here.
    env = await outboxEnv({ config: { automation: { max_attempts: MAX_ATTEMPTS } } });
    const { store, worker } = env.automation;
    const port = env.sandbox.sift.port;
    await env.sandbox.sift.close();
    await enqueueWatchSyncs(store);

    // Sift refuses connections for several pauses: more failures than max_attempts would allow.
    for (let i = 0; i < 14; i += 1) {
      await worker.tick();
      await sleep(450);
    }
    const failures = (await env.auditRecords()).filter(
      (r) => r.tool === 'sync_decision_to_segment' && r.event === 'failed',
    );
    // Enough failures to dead-letter every effect without the pause.
    expect(failures.length).toBeGreaterThanOrEqual(USERS.length * MAX_ATTEMPTS);
    const waiting = await store.list({ limit: 100 });
    expect(waiting).toHaveLength(USERS.length);
    for (const effect of waiting) expect(effect).toMatchObject({ state: 'pending', attempts: 0 });
    expect(waiting.some((e) => e.lastError?.startsWith('UPSTREAM_ERROR'))).toBe(true);
    expect((await store.stats()).dead).toBe(0);

    // Sift is back on the same address: the background worker resumes on its own.
    restarted = await startSiftEmulator({ port });
    worker.start();
    const settled = await settledEffects(store);
    expect(settled.map((e) => e.state)).toEqual(USERS.map(() => 'done'));
    expect(settled.every((e) => e.attempts === 0)).toBe(true);
    expect(restarted.journal.length).toBeGreaterThanOrEqual(USERS.length);
    expect(env.sandbox.segment.profile('sandbox-watch')?.fraud_decision).toBe('watch');
  });

  it('an audit ledger that cannot write pauses the queue without spending attempts; it resumes when the ledger writes', async () => {
    env = await outboxEnv({ config: { automation: { max_attempts: MAX_ATTEMPTS } } });
    const { store, worker } = env.automation;
    // A full disk, say: every intent record fails to insert, so no effect may run.
    const db = new DatabaseSync(databasePath(env.config));
    db.exec(`CREATE TRIGGER fail_intent BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"intent"%'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    await enqueueWatchSyncs(store);
    for (let i = 0; i < 10; i += 1) {
      await worker.tick();
      await sleep(450);
    }
    const waiting = await store.list({ limit: 100 });
    expect(waiting).toHaveLength(USERS.length);
    for (const effect of waiting) expect(effect).toMatchObject({ state: 'pending', attempts: 0 });
    // Refused by the ledger (its intent record failed, or it refuses calls until a commit succeeds).
    expect(waiting.some((e) => /^UPSTREAM_ERROR: The audit (log|ledger)/.test(e.lastError ?? ''))).toBe(true);
    expect((await store.stats()).dead).toBe(0);
    expect(env.sandbox.segment.profile('sandbox-watch')?.fraud_decision).toBeUndefined();

    db.exec('DROP TRIGGER fail_intent');
    db.close();
    worker.start();
    const settled = await settledEffects(store);
    expect(settled.map((e) => e.state)).toEqual(USERS.map(() => 'done'));
    expect(settled.every((e) => e.attempts === 0)).toBe(true);
    const intents = (await env.auditRecords()).filter(
      (r) => r.tool === 'sync_decision_to_segment' && r.event === 'intent',
    );
    expect(intents).toHaveLength(USERS.length);
  });

  it('Salesforce refusing connections pauses only Salesforce effects; newer Segment and Sift effects run meanwhile', async () => {
    // backoff 20 ms … 30 s: the Salesforce pause doubles per failed probe, so over a few seconds it
    // probes about log2(elapsed / 20 ms) times, however often other services' effects succeed.
    env = await outboxEnv({
      config: { automation: { max_attempts: MAX_ATTEMPTS, backoff_max_ms: 30_000 } },
    });
    const { store, worker } = env.automation;
    await env.sandbox.salesforce.close();
    intake = await startSegmentIntake(env, 'segment-secret');
    const salesforceUsers = Array.from({ length: 20 }, (_, i) => `fg_pause_sf_${i}`);
    for (const user of salesforceUsers) {
      await store.enqueueRouted(
        {
          entityType: 'user',
          entityId: user,
          decisionId: 'block_user_payment_abuse',
          time: Date.now() - 60_000,
        },
        [{ effect: 'salesforce', tool: 'sync_decision_to_salesforce', args: { user_id: user } }],
      );
    }
    const salesforceFailures = async () =>
      (await env!.auditRecords()).filter(
        (r) => r.tool === 'sync_decision_to_salesforce' && r.event === 'failed',
      ).length;
    const started = Date.now();
    worker.start();
    for (let i = 0; i < 100 && (await salesforceFailures()) === 0; i += 1) await sleep(50);

    // Salesforce is paused now; a newer decision synced to Segment runs regardless.
    await store.enqueueRouted(
      {
        entityType: 'user',
        entityId: 'sandbox-watch',
        decisionId: 'watch_user_payment_abuse',
        time: Date.now(),
      },
      [{ effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'sandbox-watch' } }],
    );
    const segmentState = async () =>
      (await store.list({ limit: 100 })).find((e) => e.effect === 'segment')?.state;
    for (let i = 0; i < 30 && (await segmentState()) !== 'done'; i += 1) await sleep(50);
    expect(await segmentState()).toBe('done');

    // A stream of Segment messages, each a send_sift_event effect that Sift answers: their success
    // says nothing about Salesforce, so the Salesforce effects stay paused.
    let sent = 0;
    while (Date.now() - started < 4_000) {
      const delivery = await sendSegmentWebhook(
        intake.url,
        { type: 'track', messageId: `pause-stream-${sent}`, userId: 'sandbox-watch', event: 'Signed In' },
        { secret: 'segment-secret' },
      );
      expect(delivery.status).toBe(200);
      sent += 1;
      await sleep(100);
    }
    const elapsed = Date.now() - started;
    await worker.stop();

    const effects = await store.list({ limit: 1000 });
    const siftEvents = effects.filter((e) => e.effect === 'sift_event');
    // The stream's Sift events ran while Salesforce was down (the last few may still be queued).
    expect(siftEvents.filter((e) => e.state === 'done').length).toBeGreaterThanOrEqual(sent - 3);
    const salesforce = effects.filter((e) => e.effect === 'salesforce');
    expect(salesforce).toHaveLength(salesforceUsers.length);
    for (const effect of salesforce) expect(effect).toMatchObject({ state: 'pending', attempts: 0 });
    // Each effect fails once before the pause is known, then one probe per doubling pause.
    expect(await salesforceFailures()).toBeLessThanOrEqual(
      salesforceUsers.length + Math.ceil(Math.log2(elapsed / 20)) + 3,
    );
  });
});
