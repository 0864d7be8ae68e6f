/**
 * The approver sees the truth of the call, and an approval only runs on the truth it was given:
 *
 * - evidence is for the call's own abuse type, target and system (not the user's riskiest score),
 *   with a one-sentence effect and readable times; suppression evidence carries the score, band,
 *   current decision and current suppression state;
 * - if the band, decision, label or suppression state changes between approval and execution,
 *   nothing reaches the upstream and a new approval with the new evidence replaces the old (audited).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/tool.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const APPROVER: Principal = { id: 'ola.approver@example.com', kind: 'user', role: 'approver' };
const labelPosts = (e: TestEnv) => e.sandbox.sift.requests('POST', '/v205/users/:id/labels');
const auditOf = (e: TestEnv) => storedAuditRecords(e.config, e.runtime.audit);

async function pendingEvidence(e: TestEnv, tool: string, args: Record<string, unknown>) {
  const result = await e.callTool(tool, args);
  expect(result.error.code).toBe('APPROVAL_PENDING');
  const approval = (await e.runtime.approvals.get(String(result.error.approval_id)))!;
  return { id: approval.id, evidence: approval.evidence };
}

describe('evidence for the call itself', () => {
  it("apply_label for account_abuse shows account_abuse's score, not the riskier payment_abuse one, and says what approving does", async () => {
    env = await setup();
    const { evidence } = await pendingEvidence(env, 'apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'account_abuse',
      description: 'fake accounts from one device',
    });
    expect(evidence).toMatchObject({
      system: 'sift',
      user_id: 'sandbox-high-risk',
      abuse_type: 'account_abuse',
      score: { sift_score: 71, risk_band: 'high' },
      current_label: null,
      basis: { risk_band: 'high', decision_id: null, label: null },
    });
    expect(evidence.effect).toBe(
      "Label sandbox-high-risk as BAD (fraudulent) for account_abuse in Sift; this trains Sift's model and can change what happens to the customer.",
    );
    expect(evidence.other_scores).toEqual([
      { abuse_type: 'payment_abuse', sift_score: 94, risk_band: 'critical' },
    ]);
  });

  it('apply_decision shows the decision for its abuse type with a readable time, never a raw epoch', async () => {
    env = await setup();
    const { evidence } = await pendingEvidence(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    expect(evidence).toMatchObject({
      abuse_type: 'payment_abuse',
      score: { sift_score: 62, risk_band: 'high' },
      current_decision: {
        category: 'watch',
        decided: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/),
      },
    });
    expect(String(evidence.effect)).toMatch(
      /^Apply the BLOCK decision ".+" to sandbox-watch for payment_abuse in Sift/,
    );
    // No epoch numbers anywhere in what the approver reads.
    expect(JSON.stringify(evidence)).not.toMatch(/\b1\d{9,12}\b/);
  });

  it('suppress_user shows score, band, current decision and current suppression state, for Segment', async () => {
    env = await setup();
    const watch = await pendingEvidence(env, 'suppress_user', {
      user_id: 'sandbox-watch',
      reason: 'promo abuse',
    });
    expect(watch.evidence).toMatchObject({
      system: 'segment',
      score: { sift_score: 62, risk_band: 'high' },
      current_decision: { category: 'watch' },
      currently_suppressed: false,
      segment_profile_exists: true,
      basis: { suppressed: false },
    });
    expect(String(watch.evidence.effect)).toMatch(/^Stop marketing to sandbox-watch/);
    const blocked = await pendingEvidence(env, 'suppress_user', {
      user_id: 'sandbox-blocked',
      reason: 'lift it',
      suppressed: false,
    });
    expect(blocked.evidence).toMatchObject({
      currently_suppressed: true,
      current_decision: { category: 'block' },
    });
    expect(String(blocked.evidence.effect)).toMatch(/^Resume marketing to sandbox-blocked/);
  });
});

describe('stale evidence means re-approval', () => {
  const LABEL = {
    user_id: 'sandbox-high-risk',
    is_bad: true,
    abuse_type: 'payment_abuse',
    description: 'card testing from one device',
  };

  it('a band change after approval: nothing reaches Sift, a new approval with the new evidence replaces it, audited', async () => {
    env = await setup();
    const first = await pendingEvidence(env, 'apply_label', LABEL);
    await env.runtime.desk.decide(first.id, { approve: true, approver: APPROVER });
    env.sandbox.sift.setScore('sandbox-high-risk', 'payment_abuse', 0.4); // critical → medium
    await env.runtime.pipeline.processApprovals();

    expect(labelPosts(env)).toHaveLength(0);
    const old = (await env.runtime.approvals.get(first.id))!;
    expect(old).toMatchObject({ state: 'failed', error: { code: 'CONFLICT' } });
    expect(old.error?.message).toContain('risk_band: critical → medium');
    const [replacement] = await env.runtime.approvals.list({ states: ['pending'] });
    expect(replacement).toMatchObject({ tool: 'apply_label', args: LABEL, mode: old.mode });
    expect(replacement?.evidence).toMatchObject({ score: { risk_band: 'medium', sift_score: 40 } });
    expect(old.error?.message).toContain(replacement!.id);
    const events = (await auditOf(env)).map((r) => [r.event, r.approval_id]);
    expect(events).toContainEqual(['evidence_changed', first.id]);
    expect(events).toContainEqual(['approval_requested', replacement!.id]);
    // The agent calling again gets the replacement, not a third approval.
    expect((await env.callTool('apply_label', LABEL)).error.approval_id).toBe(replacement!.id);

    await env.runtime.desk.decide(replacement!.id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(labelPosts(env)).toHaveLength(1);
    expect((await env.runtime.approvals.get(replacement!.id))?.state).toBe('executed');
  });

  it('a decision applied meanwhile stops an approved suppression; the waiting call moves on to the replacement', async () => {
    env = await setup({ config: { approvals: { wait_ms: 20_000 } } });
    const e = env;
    const call = e.callTool('suppress_user', { user_id: 'sandbox-high-risk', reason: 'promo abuse ring' });
    const pendingId = async (except?: string) => {
      for (let i = 0; i < 500; i++) {
        const found = (await e.runtime.approvals.list({ states: ['pending'] })).find((a) => a.id !== except);
        if (found) return found.id;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('no pending approval');
    };
    const firstId = await pendingId();
    await e.sandbox.sift.consoleApplyDecision({
      decisionId: 'block_user_payment_abuse',
      userId: 'sandbox-high-risk',
    });
    await e.runtime.desk.decide(firstId, { approve: true, approver: APPROVER });
    const secondId = await pendingId(firstId);
    expect(e.sandbox.segment.eventsFor('sandbox-high-risk')).toHaveLength(0);
    expect((await e.runtime.approvals.get(firstId))?.error?.message).toMatch(
      /decision_id: none → block_user_payment_abuse/,
    );
    expect((await e.runtime.approvals.get(secondId))?.evidence).toMatchObject({
      current_decision: { category: 'block' },
    });

    await e.runtime.desk.decide(secondId, { approve: true, approver: APPROVER });
    const result = await call;
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({ user_id: 'sandbox-high-risk', suppressed: true });
    expect(e.sandbox.segment.profile('sandbox-high-risk')).toMatchObject({ suppressed_for_fraud: true });
  });

  it('evidence that cannot be re-read fails closed: nothing reaches Sift', async () => {
    env = await setup();
    const first = await pendingEvidence(env, 'apply_label', LABEL);
    await env.runtime.desk.decide(first.id, { approve: true, approver: APPROVER });
    env.sandbox.sift.rateLimit(20);
    await env.runtime.pipeline.processApprovals();
    env.sandbox.sift.faults.clear();
    expect(labelPosts(env)).toHaveLength(0);
    expect(await env.runtime.approvals.get(first.id)).toMatchObject({ state: 'failed' });
    expect((await env.runtime.approvals.get(first.id))?.error?.message).toContain('could not be re-checked');
  });
});
