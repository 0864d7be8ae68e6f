/**
 * An outbox effect that ran but whose completion was lost (its replica was killed between the
 * upstream write and the commit) runs again with the same idempotency key, so the upstream
 * deduplicates the second write: suppress_user's Segment messages keep their messageIds. Found by
 * test/e2e/fleet-kill.test.ts, where a per-call key sent a second suppression after a SIGKILL.
 */
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { SCORE_ENTITY, SCORE_READ_EVENT } from '../../src/outbox/propagate.ts';
import { databasePath } from '../../src/store/store.ts';
import { decisionBody, outboxEnv, sign, type OutboxEnv } from './helpers.ts';

let env: OutboxEnv | undefined;
afterAll(async () => {
  await env?.close();
});

describe('an effect run again after its completion was lost', () => {
  it('writes upstream with the same idempotency key (Segment keeps one suppression)', async () => {
    env = await outboxEnv({
      config: {
        approvals: { tools: { suppress_user: 'none' } },
        automation: { rules: { block: ['suppress'], watch: [], accept: [] } },
      },
    });
    const { sift, segment } = env.sandbox;
    const user = 'fg_rerun_1';
    const { time } = await sift.consoleApplyDecision({
      decisionId: 'block_user_payment_abuse',
      userId: user,
    });
    const body = decisionBody(user, 'block_user_payment_abuse', time);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const first = segment.eventsFor(user).map((m) => m.messageId);
    expect(first).toHaveLength(2);

    // The crash: the writes reached Segment, the `done` never reached the store.
    const db = new DatabaseSync(databasePath(env.config));
    expect(
      db
        .prepare("UPDATE outbox_effects SET state = 'pending', next_attempt_at = 0 WHERE state = 'done'")
        .run().changes,
    ).toBe(1);
    db.close();
    const duplicatesBefore = segment.duplicates;
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    expect(segment.duplicates - duplicatesBefore).toBe(2);
    expect(segment.eventsFor(user).map((m) => m.messageId)).toEqual(first);
  });

  it.each([
    ['the time Sift computed the score', true],
    ["the effect's idempotency key, when Sift gives no score time", false],
  ])('a score sync and score event run again keep their messageIds (keyed by %s)', async (_, times) => {
    await env?.close();
    env = await outboxEnv({
      config: { automation: { score_trigger: { effects: ['segment_score', 'track'] } } },
    });
    const { segment } = env.sandbox;
    env.sandbox.sift.setScoreTimes(times);
    const user = 'sandbox-high-risk';
    await env.automation.store.enqueue({
      entityType: SCORE_ENTITY,
      entityId: user,
      decisionId: SCORE_READ_EVENT,
      time: Date.now(),
    });
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const first = segment.eventsFor(user).map((m) => m.messageId);
    expect(first).toHaveLength(2);

    const db = new DatabaseSync(databasePath(env.config));
    expect(
      db
        .prepare("UPDATE outbox_effects SET state = 'pending', next_attempt_at = 0 WHERE state = 'done'")
        .run().changes,
    ).toBe(2);
    db.close();
    const duplicatesBefore = segment.duplicates;
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    expect(segment.duplicates - duplicatesBefore).toBe(2);
    expect(segment.eventsFor(user).map((m) => m.messageId)).toEqual(first);
    expect(segment.profile(user)).toMatchObject({ sift_score: 94, fraud_routing_tier: 'blocked' });
  });
});
