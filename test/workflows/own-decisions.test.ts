/**
 * fraudgate's own decisions propagate (issue 9 item 3): Sift sends no webhook for a decision applied
 * through its API, so a BLOCK applied through fraudgate (here: an approved `apply_decision`) must
 * enqueue the same effects a decision webhook would — Segment traits, the Salesforce decision field,
 * suppression — exactly once, without echoing back into another decision.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { outboxEnv, type OutboxEnv } from '../outbox/helpers.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };

let env: TestEnv | undefined;
let automation: OutboxEnv | undefined;
afterEach(async () => {
  await automation?.close();
  await env?.close();
  env = undefined;
  automation = undefined;
});

describe('a decision applied through fraudgate', () => {
  it('an approved BLOCK reaches Segment and Salesforce through the outbox, exactly once', async () => {
    env = await setup();
    const user = 'sandbox-high-risk';
    const call = await env.callTool('apply_decision', {
      user_id: user,
      decision_id: 'block_user_payment_abuse',
      description: 'chargeback ring confirmed',
    });
    expect(call.error.code).toBe('APPROVAL_PENDING');
    await env.runtime.desk.decide(String(call.error.approval_id), { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    // A second sweep (another replica, a restart) must not enqueue it again.
    await env.runtime.pipeline.processApprovals();
    // One decision event (the score the approval's evidence read is a score-trigger event of its own).
    const decisions = (await env.runtime.outbox.unrouted(10)).filter((e) => e.entityType === 'user');
    expect(decisions).toHaveLength(1);

    // The worker of `serve --http` (here: an automation on the same data dir and emulators).
    automation = await outboxEnv({
      dataDir: env.dataDir,
      sandbox: env.sandbox,
      config: { approvals: { tools: { suppress_user: 'none' } } },
    });
    expect(await automation.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    const effects = (await automation.automation.store.list({ limit: 100 })).filter(
      (e) => e.entityKey === `user:${user}`,
    );
    expect(new Set(effects.map((e) => e.eventId)).size).toBe(1);
    expect(effects.map((e) => e.effect).sort()).toEqual(['case', 'salesforce', 'segment', 'suppress']);
    expect(effects.every((e) => e.state === 'done')).toBe(true);

    expect(env.sandbox.segment.profile(user)).toMatchObject({
      fraud_decision: 'block',
      suppressed_for_fraud: true,
    });
    const account = env.sandbox.salesforce.demo?.accounts[user];
    expect(env.sandbox.salesforce.records('Account').find((a) => a.Id === account)?.Sift_Decision__c).toBe(
      'Blocked',
    );
    // No echo: running the effects applied no further decision, so nothing new waits in the outbox.
    expect(await automation.automation.store.unrouted(10)).toHaveLength(0);
    const applied = env.sandbox.sift.journal.filter(
      (j) => j.method === 'POST' && j.path.includes('/decisions'),
    );
    expect(applied).toHaveLength(1);
  });
});
