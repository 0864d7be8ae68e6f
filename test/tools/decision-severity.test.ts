/**
 * The user-level decision state synced to Segment and Salesforce is the most severe current decision
 * across abuse types: a later ACCEPT for one abuse type never clears a BLOCK standing for another,
 * whether the sync is called by an agent (MCP client) or driven by a decision webhook (outbox).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';
import { decisionBody, outboxEnv, sign, type OutboxEnv } from '../outbox/helpers.ts';

let env: TestEnv | undefined;
let outbox: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  await outbox?.close();
  env = undefined;
  outbox = undefined;
});

/** sandbox-blocked carries a payment_abuse BLOCK; a reviewer then accepts the account (account_abuse). */
const BLOCKED = 'sandbox-blocked';
const LATER_ACCEPT = 'looks_ok_account_abuse';

function blockedContact(sandbox: TestEnv['sandbox']) {
  const id = sandbox.salesforce.demo?.contacts[BLOCKED];
  return sandbox.salesforce.records('Contact').find((r) => r.Id === id);
}

describe('decision sync: the most severe current decision governs the user', () => {
  it('a later ACCEPT for another abuse type leaves Segment and Salesforce blocked', async () => {
    env = await setup();
    await env.sandbox.sift.consoleApplyDecision({ decisionId: LATER_ACCEPT, userId: BLOCKED });

    const segment = await env.callTool('sync_decision_to_segment', { user_id: BLOCKED });
    expect(segment.error).toBeUndefined();
    expect(segment.output.decision).toMatchObject({
      decision_id: 'block_user_payment_abuse',
      abuse_type: 'payment_abuse',
      category: 'block',
    });
    expect(env.sandbox.segment.profile(BLOCKED)).toMatchObject({
      fraud_decision: 'block',
      fraud_blocked: true,
      fraud_decision_id: 'block_user_payment_abuse',
    });

    const salesforce = await env.callTool('sync_decision_to_salesforce', { user_id: BLOCKED });
    expect(salesforce.error).toBeUndefined();
    expect(salesforce.output).toMatchObject({ salesforce_value: 'Blocked' });
    expect(blockedContact(env.sandbox)?.Sift_Decision__c).toBe('Blocked');
  });

  it('abuse_type reports that abuse type but never lowers the blocked state written', async () => {
    env = await setup();
    await env.sandbox.sift.consoleApplyDecision({ decisionId: LATER_ACCEPT, userId: BLOCKED });
    for (const abuseType of ['account_abuse', 'promotion_abuse']) {
      const segment = await env.callTool('sync_decision_to_segment', {
        user_id: BLOCKED,
        abuse_type: abuseType,
      });
      expect(segment.output.traits_written).toMatchObject({ fraud_blocked: true, fraud_decision: 'block' });
      const salesforce = await env.callTool('sync_decision_to_salesforce', {
        user_id: BLOCKED,
        abuse_type: abuseType,
      });
      expect(salesforce.output).toMatchObject({ salesforce_value: 'Blocked' });
      expect(blockedContact(env.sandbox)?.Sift_Decision__c).toBe('Blocked');
    }
    const reported = await env.callTool('sync_decision_to_segment', {
      user_id: BLOCKED,
      abuse_type: 'account_abuse',
    });
    expect(reported.output.abuse_type_decision).toMatchObject({
      decision_id: LATER_ACCEPT,
      category: 'accept',
    });
    expect(env.sandbox.segment.profile(BLOCKED)).toMatchObject({ fraud_blocked: true });
  });

  it('the webhook-driven outbox writes the same: the ACCEPT webhook keeps the user blocked', async () => {
    outbox = await outboxEnv({ config: { automation: { rules: { accept: ['segment', 'salesforce'] } } } });
    const { time } = await outbox.sandbox.sift.consoleApplyDecision({
      decisionId: LATER_ACCEPT,
      userId: BLOCKED,
    });
    const body = decisionBody(BLOCKED, LATER_ACCEPT, time);
    expect((await outbox.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await outbox.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);

    const effects = await outbox.automation.store.list({ limit: 10 });
    expect(effects.map((e) => [e.tool, e.state]).sort()).toEqual([
      ['sync_decision_to_salesforce', 'done'],
      ['sync_decision_to_segment', 'done'],
    ]);
    expect(outbox.sandbox.segment.profile(BLOCKED)).toMatchObject({
      fraud_decision: 'block',
      fraud_blocked: true,
    });
    expect(blockedContact(outbox.sandbox)?.Sift_Decision__c).toBe('Blocked');
  });
});
