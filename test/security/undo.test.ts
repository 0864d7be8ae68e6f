/**
 * Undo: every executed destructive action can be reversed within the window by `undo_action`, a
 * governed tool with its own approval, restoring the emulator's prior state; the audit links the
 * undo to the action it reverses.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/tool.ts';
import { argsHashOf } from '../helpers/approvals.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { approvalPolicyVersion } from '../../src/governance/policy.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const APPROVER: Principal = { id: 'ola.approver@example.com', kind: 'user', role: 'approver' };
const REASON = { reason: 'applied to the wrong user' };

/** Request a destructive call, have a second person approve it, and let the server run it. */
async function approvedAndRun(e: TestEnv, tool: string, args: Record<string, unknown>): Promise<string> {
  const result = await e.callTool(tool, args);
  expect(result.error.code).toBe('APPROVAL_PENDING');
  const id = String(result.error.approval_id);
  await e.runtime.desk.decide(id, { approve: true, approver: APPROVER });
  await e.runtime.pipeline.processApprovals();
  expect((await e.runtime.approvals.get(id))?.state).toBe('executed');
  return id;
}

const audit = (e: TestEnv) => storedAuditRecords(e.config, e.runtime.audit);

describe('undo_action restores the prior state of each destructive tool', () => {
  it('apply_label → the label is removed again (there was none); the undo needed its own approval; audit links both', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'card testing',
    });
    expect(env.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();

    const undo = await env.callTool('undo_action', { approval_id: id, ...REASON });
    expect(undo.error.code).toBe('APPROVAL_PENDING');
    const undoId = String(undo.error.approval_id);
    // Nothing happens before a human approves the undo.
    expect(env.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();
    const pending = (await env.runtime.approvals.get(undoId))!;
    expect(pending.mode).toBe('four_eyes');
    expect(pending.evidence.effect).toBe(
      `Undo apply_label ${id} on sift_user:sandbox-high-risk: remove the payment_abuse label from sandbox-high-risk in Sift (it had none before).`,
    );
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('executed');
    expect(env.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeUndefined();

    const linked = (await audit(env)).filter((r) => r.tool === 'undo_action' && r.event === 'executed');
    expect(linked).toHaveLength(1);
    expect(linked[0]).toMatchObject({ target: `approval:${id}`, approval_id: undoId });
  });

  it('remove_label → the removed label is back', async () => {
    env = await setup();
    await env.runtime.clients.sift.addLabel('sandbox-watch', {
      isBad: false,
      abuseType: 'payment_abuse',
      description: 'verified customer',
      source: 'test',
      analyst: 'someone@example.com',
    });
    const id = await approvedAndRun(env, 'remove_label', {
      user_id: 'sandbox-watch',
      abuse_type: 'payment_abuse',
      reason: 'stale label',
    });
    expect(env.sandbox.sift.labels('sandbox-watch').payment_abuse).toBeUndefined();
    await approvedAndRun(env, 'undo_action', { approval_id: id, ...REASON });
    expect(env.sandbox.sift.labels('sandbox-watch').payment_abuse).toMatchObject({ is_bad: false });
  });

  it('apply_decision → the earlier decision is in force again', async () => {
    env = await setup();
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('watch_user_payment_abuse');
    const id = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('block_user_payment_abuse');
    await approvedAndRun(env, 'undo_action', { approval_id: id, ...REASON });
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('watch_user_payment_abuse');
  });

  it('suppress_user → marketing resumes (the user was not suppressed before)', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'suppress_user', {
      user_id: 'sandbox-watch',
      reason: 'promo abuse',
    });
    expect(env.sandbox.segment.profile('sandbox-watch')).toMatchObject({ suppressed_for_fraud: true });
    await approvedAndRun(env, 'undo_action', { approval_id: id, ...REASON });
    expect(env.sandbox.segment.profile('sandbox-watch')).toMatchObject({ suppressed_for_fraud: false });
  });
});

describe('an undo counts against the budget of what it re-applies', () => {
  it('undoing the lift of a BLOCK re-applies a BLOCK: under a spent apply_decision:block budget it waits, still approved', async () => {
    env = await setup({ config: { budgets: { limits: { 'apply_decision:block': { max_effects: 1 } } } } });
    const decision = () => env!.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id;
    await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const lifted = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'looks_ok_payment_abuse',
      description: 'verified customer',
    });
    expect(decision()).toBe('looks_ok_payment_abuse');

    const undo = await env.callTool('undo_action', { approval_id: lifted, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.callTool('get_approval_status', { approval_id: undoId })).output).toMatchObject({
      state: 'approved',
    });
    expect(decision()).toBe('looks_ok_payment_abuse');
    expect((await env.runtime.budgets.activePauses()).map((p) => p.budget_key)).toEqual([
      'apply_decision:block',
    ]);

    await env.runtime.budgets.lift(ANALYST.id, 'apply_decision:block', APPROVER);
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('executed');
    expect(decision()).toBe('block_user_payment_abuse');
  });

  it('undoing the lift of a suppression re-suppresses: under a spent suppress_user budget it waits', async () => {
    env = await setup({ config: { budgets: { limits: { suppress_user: { max_effects: 2 } } } } });
    await approvedAndRun(env, 'suppress_user', { user_id: 'sandbox-watch', reason: 'promo abuse' });
    const resumed = await approvedAndRun(env, 'suppress_user', {
      user_id: 'sandbox-watch',
      reason: 'cleared by review',
      suppressed: false,
    });
    expect(env.sandbox.segment.profile('sandbox-watch')).toMatchObject({ suppressed_for_fraud: false });

    const undo = await env.callTool('undo_action', { approval_id: resumed, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('approved');
    expect(env.sandbox.segment.profile('sandbox-watch')).toMatchObject({ suppressed_for_fraud: false });
    expect((await env.runtime.budgets.activePauses()).map((p) => p.budget_key)).toEqual(['suppress_user']);
  });
});

describe("an undo that re-applies a BLOCK carries the BLOCK's approval floor", () => {
  /** sandbox-blocked's BLOCK lifted by an approved ACCEPT: undoing that ACCEPT re-applies the BLOCK. */
  async function liftedBlock(e: TestEnv): Promise<string> {
    expect(e.sandbox.sift.decisionsOf('sandbox-blocked').payment_abuse?.id).toBe('block_user_payment_abuse');
    return approvedAndRun(e, 'apply_decision', {
      user_id: 'sandbox-blocked',
      decision_id: 'looks_ok_payment_abuse',
      description: 'false positive, lifting the block',
    });
  }
  const decision = (e: TestEnv) => e.sandbox.sift.decisionsOf('sandbox-blocked').payment_abuse?.id;

  it('undo that re-applies a BLOCK needs approval even when undo_action is none; fraudgate://policy shows it', async () => {
    env = await setup({ config: { approvals: { tools: { undo_action: 'none' } } } });
    const lifted = await liftedBlock(env);

    const undo = await env.callTool('undo_action', { approval_id: lifted, ...REASON });
    expect(undo.error?.code).toBe('APPROVAL_PENDING');
    expect((await env.runtime.approvals.get(String(undo.error.approval_id)))?.mode).toBe('four_eyes');
    expect(decision(env)).toBe('looks_ok_payment_abuse');

    const read = await env.client.readResource({ uri: 'fraudgate://policy' });
    const policy = JSON.parse(String((read.contents[0] as { text: string }).text)) as {
      tools: { name: string; approval: string; per_call?: Record<string, unknown> }[];
    };
    expect(policy.tools.find((t) => t.name === 'undo_action')).toMatchObject({
      approval: 'none',
      per_call: { 'undo_action:block': { approval: 'four_eyes', self_approval: false } },
    });
  });

  it('opting undo_action in to self-confirmation does not let the requester re-apply a BLOCK; a label undo still confirms', async () => {
    const asked: string[] = [];
    env = await setup({
      // The label undo removes the label: remove_label is opted in to self-confirmation too.
      config: {
        approvals: {
          tools: { undo_action: 'confirm', remove_label: 'confirm' },
          self_approval: ['undo_action', 'remove_label'],
        },
      },
      elicit: (message) => {
        asked.push(message);
        return { action: 'accept', content: { confirm: true } };
      },
    });
    const lifted = await liftedBlock(env);
    const undo = await env.callTool('undo_action', { approval_id: lifted, ...REASON });
    expect(undo.error?.code).toBe('APPROVAL_PENDING');
    expect(asked).toHaveLength(0);
    expect(decision(env)).toBe('looks_ok_payment_abuse');
    await expect(
      env.runtime.desk.decide(String(undo.error.approval_id), {
        approve: true,
        approver: { ...ANALYST, role: 'approver' },
      }),
    ).rejects.toThrow(/another approver/);

    const labelled = await approvedAndRun(env, 'apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'card testing',
    });
    const labelUndo = await env.callTool('undo_action', { approval_id: labelled, ...REASON });
    expect(labelUndo.isError).toBe(false);
    expect(asked).toHaveLength(1);
    expect(env.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeUndefined();
  });
});

describe('an undo needs at least the approval of the call it re-applies', () => {
  const SAME_PERSON: Principal = { id: ' Ana.Analyst@Example.com', kind: 'user', role: 'approver' };
  const decideAs = (e: TestEnv, id: string, approver: Principal) =>
    e.runtime.desk.decide(id, { approve: true, approver });
  /** An executed un-suppression of sandbox-watch: undoing it re-suppresses. */
  async function unsuppressed(e: TestEnv): Promise<string> {
    await approvedAndRun(e, 'suppress_user', { user_id: 'sandbox-watch', reason: 'promo abuse' });
    return approvedAndRun(e, 'suppress_user', {
      user_id: 'sandbox-watch',
      reason: 'cleared by review',
      suppressed: false,
    });
  }
  const suppressed = (e: TestEnv) => e.sandbox.segment.profile('sandbox-watch')?.suppressed_for_fraud;

  it('suppress_user four_eyes: undoing an un-suppression under undo_action confirm is four_eyes; only another approver approves', async () => {
    const asked: string[] = [];
    env = await setup({
      config: {
        approvals: {
          tools: { undo_action: 'confirm', suppress_user: 'four_eyes' },
          self_approval: ['undo_action', 'suppress_user'],
        },
      },
      elicit: (message) => {
        asked.push(message);
        return { action: 'accept', content: { confirm: true } };
      },
    });
    const resumed = await unsuppressed(env);

    const undo = await env.callTool('undo_action', { approval_id: resumed, ...REASON });
    expect(undo.error?.code).toBe('APPROVAL_PENDING');
    expect(asked).toHaveLength(0);
    const undoId = String(undo.error.approval_id);
    expect((await env.runtime.approvals.get(undoId))?.mode).toBe('four_eyes');
    await expect(decideAs(env, undoId, { ...ANALYST, role: 'approver' })).rejects.toThrow(/another approver/);
    await expect(decideAs(env, undoId, SAME_PERSON)).rejects.toThrow(/another approver/);
    expect(suppressed(env)).toBe(false);

    await decideAs(env, undoId, APPROVER);
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('executed');
    expect(suppressed(env)).toBe(true);

    // fraudgate://policy states the rule.
    const read = await env.client.readResource({ uri: 'fraudgate://policy' });
    const policy = JSON.parse(String((read.contents[0] as { text: string }).text)) as {
      tools: { name: string; approval_rule?: string }[];
    };
    expect(policy.tools.find((t) => t.name === 'undo_action')?.approval_rule).toMatch(
      /stricter of this and what the call it re-applies needs \(apply_label, remove_label, apply_decision, suppress_user/,
    );
  });

  it('apply_label four_eyes: an undo that puts a removed label back is four_eyes under undo_action approval', async () => {
    env = await setup({
      config: {
        approvals: {
          tools: { undo_action: 'approval', apply_label: 'four_eyes' },
          self_approval: ['undo_action', 'remove_label'],
        },
      },
    });
    await env.runtime.clients.sift.addLabel('sandbox-watch', {
      isBad: true,
      abuseType: 'payment_abuse',
      description: 'card testing',
      source: 'test',
      analyst: 'someone@example.com',
    });
    const removed = await approvedAndRun(env, 'remove_label', {
      user_id: 'sandbox-watch',
      abuse_type: 'payment_abuse',
      reason: 'stale label',
    });
    const undo = await env.callTool('undo_action', { approval_id: removed, ...REASON });
    expect(undo.error?.code).toBe('APPROVAL_PENDING');
    const undoId = String(undo.error.approval_id);
    expect((await env.runtime.approvals.get(undoId))?.mode).toBe('four_eyes');
    await expect(decideAs(env, undoId, { ...ANALYST, role: 'approver' })).rejects.toThrow(/another approver/);
    await decideAs(env, undoId, APPROVER);
    await env.runtime.pipeline.processApprovals();
    expect(env.sandbox.sift.labels('sandbox-watch').payment_abuse).toMatchObject({ is_bad: true });
  });

  it('apply_decision:watch four_eyes: an undo that re-applies a WATCH is four_eyes under undo_action approval', async () => {
    env = await setup({
      config: {
        approvals: {
          tools: { undo_action: 'approval', 'apply_decision:watch': 'four_eyes' },
          self_approval: ['undo_action', 'apply_decision'],
        },
      },
    });
    const blocked = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const undo = await env.callTool('undo_action', { approval_id: blocked, ...REASON });
    const undoId = String(undo.error.approval_id);
    expect((await env.runtime.approvals.get(undoId))?.mode).toBe('four_eyes');
  });

  it("a re-applied tool weaker than undo_action keeps undo_action's mode; opted in on both, the requester may approve", async () => {
    env = await setup({
      config: {
        approvals: {
          tools: { undo_action: 'approval', suppress_user: 'confirm' },
          self_approval: ['undo_action', 'suppress_user'],
        },
      },
    });
    const resumed = await unsuppressed(env);
    const undo = await env.callTool('undo_action', { approval_id: resumed, ...REASON });
    expect(undo.error?.code).toBe('APPROVAL_PENDING');
    const undoId = String(undo.error.approval_id);
    expect((await env.runtime.approvals.get(undoId))?.mode).toBe('approval');
    await decideAs(env, undoId, { ...ANALYST, role: 'approver' });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('executed');
    expect(suppressed(env)).toBe(true);
  });

  it('suppress_user tightened to four_eyes while an undo that re-suppresses waits: the requester can no longer approve it', async () => {
    const approvals = (suppress: 'approval' | 'four_eyes') => ({
      tools: { undo_action: 'approval' as const, suppress_user: suppress },
      self_approval: ['undo_action', 'undo_action:block', 'suppress_user'],
    });
    env = await setup({ config: { approvals: approvals('approval') } });
    const resumed = await unsuppressed(env);
    const undo = await env.callTool('undo_action', { approval_id: resumed, ...REASON });
    const undoId = String(undo.error.approval_id);
    expect((await env.runtime.approvals.get(undoId))?.mode).toBe('approval');

    env = await env.restart({ config: { approvals: approvals('four_eyes') } });
    await expect(decideAs(env, undoId, { ...ANALYST, role: 'approver' })).rejects.toThrow(
      /policy changed since this was requested/,
    );
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('pending');
    await decideAs(env, undoId, APPROVER);
    await env.runtime.pipeline.processApprovals();
    expect(suppressed(env)).toBe(true);
  });

  it('an undo approval stored by older code with a weaker mode under the same policy: the requester still cannot approve it', async () => {
    env = await setup({
      config: {
        approvals: {
          tools: { undo_action: 'approval', suppress_user: 'four_eyes' },
          self_approval: ['undo_action', 'suppress_user'],
        },
      },
    });
    const resumed = await unsuppressed(env);
    // As code before the stricter-of rule stored it: undo_action's own mode, self-approval allowed,
    // under the policy version in force now (the version hashes only the approvals config).
    const at = Date.now();
    const { approval } = await env.runtime.approvals.create({
      id: 'apr_olderundo00000000000',
      tool: 'undo_action',
      args: { approval_id: resumed, ...REASON },
      args_hash: argsHashOf({ approval_id: resumed, ...REASON }),
      target: `approval:${resumed}`,
      requester: ANALYST.id,
      requester_role: 'approver',
      requester_kind: 'user',
      mode: 'approval',
      policy_version: approvalPolicyVersion(env.config),
      evidence: {},
      created_at: new Date(at).toISOString(),
      expires_at: new Date(at + 3_600_000).toISOString(),
    });
    await expect(decideAs(env, approval.id, { ...ANALYST, role: 'approver' })).rejects.toThrow(/Four-eyes/);
    expect((await env.runtime.approvals.get(approval.id))?.state).toBe('pending');
    expect((await decideAs(env, approval.id, APPROVER)).state).toBe('approved');
  });
});

describe('an undo counts against undo_action too', () => {
  it('with both budgets set, a re-suppressing undo counts in each: a spent undo_action budget makes it wait', async () => {
    env = await setup({
      config: {
        budgets: { limits: { suppress_user: { max_effects: 10 }, undo_action: { max_effects: 1 } } },
      },
    });
    const resumedOf = async (user: string) => {
      await approvedAndRun(env!, 'suppress_user', { user_id: user, reason: 'promo abuse' });
      return approvedAndRun(env!, 'suppress_user', { user_id: user, reason: 'cleared', suppressed: false });
    };
    const first = await resumedOf('sandbox-watch');
    const second = await resumedOf('sandbox-high-risk');
    await approvedAndRun(env, 'undo_action', { approval_id: first, ...REASON });
    const undo = await env.callTool('undo_action', { approval_id: second, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('approved');
    expect((await env.runtime.budgets.activePauses()).map((p) => p.budget_key)).toEqual(['undo_action']);
    expect(env.sandbox.segment.profile('sandbox-high-risk')).toMatchObject({ suppressed_for_fraud: false });
  });
});

describe('an action is undone once', () => {
  it('the undone action shows as undone, and a second undo of it is refused naming it', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    await approvedAndRun(env, 'undo_action', { approval_id: id, ...REASON });
    expect((await env.callTool('get_approval_status', { approval_id: id })).output).toMatchObject({
      state: 'undone',
    });
    const again = await env.callTool('undo_action', {
      approval_id: id,
      reason: 'undo it once more',
    });
    expect(again.error.code).toBe('CONFLICT');
    expect(again.error.message).toContain(`Approval ${id} was already undone`);
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('watch_user_payment_abuse');
  });

  it('an undo that fails upstream leaves the action executed, to be undone later', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const undo = await env.callTool('undo_action', { approval_id: id, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    env.sandbox.sift.faults.inject({
      count: 10,
      method: 'POST',
      path: /\/users\/[^/]+\/decisions$/,
      status: 400,
    });
    await env.runtime.pipeline.processApprovals();
    env.sandbox.sift.faults.clear();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('failed');
    expect((await env.runtime.approvals.get(id))?.state).toBe('executed');
    await approvedAndRun(env, 'undo_action', { approval_id: id, reason: 'second try after the outage' });
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('watch_user_payment_abuse');
  });
});

describe('an undo interrupted mid-compensation, and two undos of one action', () => {
  const BLOCK = {
    user_id: 'sandbox-watch',
    decision_id: 'block_user_payment_abuse',
    description: 'card testing ring',
  };
  const decision = () => env!.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id;

  it('the undo that marked the action undone, re-run after its replica died, finishes the compensation', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_decision', BLOCK);
    const undo = await env.callTool('undo_action', { approval_id: id, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    // The replica claimed the undo, marked the action undone, and died before Sift answered.
    await env.runtime.approvals.transition(undoId, ['approved'], 'executing', {
      executed_at: new Date().toISOString(),
      executed_by: 'replica-a',
    });
    await env.runtime.approvals.transition(id, ['executed'], 'undone', { undone_by: undoId });
    expect(decision()).toBe('block_user_payment_abuse');

    env = await env.restart({ replicaId: 'replica-a' });
    await env.runtime.pipeline.recoverInterrupted();
    expect(await env.runtime.approvals.get(undoId)).toMatchObject({ state: 'executed' });
    expect(await env.runtime.approvals.get(id)).toMatchObject({ state: 'undone', undone_by: undoId });
    expect(decision()).toBe('watch_user_payment_abuse');
    expect((await env.callTool('get_approval_status', { approval_id: undoId })).output).toMatchObject({
      state: 'executed',
      result: { undone_approval_id: id },
    });
  });

  it('an interrupted undo that can no longer run fails as possibly done, and the action stays marked undone', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_decision', BLOCK);
    const undo = await env.callTool('undo_action', { approval_id: id, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    // The replica claimed the undo, marked the action undone, and died before Sift answered.
    await env.runtime.approvals.transition(undoId, ['approved'], 'executing', {
      executed_at: new Date().toISOString(),
      executed_by: 'replica-a',
    });
    await env.runtime.approvals.transition(id, ['executed'], 'undone', { undone_by: undoId });
    // The decision it re-applies is gone from Sift's catalogue meanwhile: the re-run is refused.
    const catalogue = env.sandbox.sift.decisionCatalogue;
    catalogue.splice(
      catalogue.findIndex((d) => d.id === 'watch_user_payment_abuse'),
      1,
    );

    env = await env.restart({ replicaId: 'replica-a' });
    await env.runtime.pipeline.recoverInterrupted();
    const failed = await env.runtime.approvals.get(undoId);
    expect(failed).toMatchObject({ state: 'failed', error: { code: 'INTERNAL' } });
    expect(failed?.error?.message).toContain('may have reached');
    expect(failed?.error?.message).toContain(`Approval ${id} stays marked undone`);
    expect(failed?.error?.message).not.toContain('nothing was done');
    expect(await env.runtime.approvals.get(id)).toMatchObject({ state: 'undone', undone_by: undoId });
    expect((await env.callTool('get_approval_status', { approval_id: undoId })).output).toMatchObject({
      state: 'failed',
    });
  });

  it('a second approved undo of an action another undo reversed fails with CONFLICT, audited, not left approved', async () => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_decision', BLOCK);
    const first = await env.callTool('undo_action', { approval_id: id, ...REASON });
    const firstId = String(first.error.approval_id);
    await env.runtime.desk.decide(firstId, { approve: true, approver: APPROVER });
    // Requested while the first was approved but had not run: both are approved.
    const second = await env.callTool('undo_action', { approval_id: id, reason: 'wrong user, undo it' });
    const secondId = String(second.error.approval_id);
    await env.runtime.desk.decide(secondId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();

    expect(await env.runtime.approvals.get(firstId)).toMatchObject({ state: 'executed' });
    expect(await env.runtime.approvals.get(id)).toMatchObject({ state: 'undone', undone_by: firstId });
    const failed = await env.runtime.approvals.get(secondId);
    expect(failed).toMatchObject({ state: 'failed', error: { code: 'CONFLICT' } });
    expect(failed?.error?.message).toContain(`Approval ${id} was already undone`);
    const status = await env.callTool('undo_action', { approval_id: id, reason: 'wrong user, undo it' });
    expect(status.error.code).toBe('CONFLICT');
    const records = await audit(env);
    expect(records.find((r) => r.approval_id === secondId && r.event === 'failed')?.outcome).toMatchObject({
      code: 'CONFLICT',
    });
    expect(decision()).toBe('watch_user_payment_abuse');
  });
});

describe('a budget that refuses an undo leaves no count in its other budget', () => {
  it('undo_action spent: the refused undo is not counted against apply_decision:block, so after the lift it runs', async () => {
    env = await setup({
      config: {
        budgets: { limits: { 'apply_decision:block': { max_effects: 4 }, undo_action: { max_effects: 1 } } },
      },
    });
    // Two BLOCKs, each lifted: two BLOCK effects counted.
    const liftedFor = async (user: string) => {
      await approvedAndRun(env!, 'apply_decision', {
        user_id: user,
        decision_id: 'block_user_payment_abuse',
        description: 'card testing ring',
      });
      return approvedAndRun(env!, 'apply_decision', {
        user_id: user,
        decision_id: 'looks_ok_payment_abuse',
        description: 'verified customer',
      });
    };
    const first = await liftedFor('sandbox-watch');
    const second = await liftedFor('sandbox-high-risk');
    // Undoing a lift re-applies a BLOCK: the first undo is the third BLOCK effect and the one undo.
    await approvedAndRun(env, 'undo_action', { approval_id: first, ...REASON });
    const undo = await env.callTool('undo_action', { approval_id: second, ...REASON });
    const undoId = String(undo.error.approval_id);
    await env.runtime.desk.decide(undoId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('approved');
    expect((await env.runtime.budgets.activePauses()).map((p) => p.budget_key)).toEqual(['undo_action']);

    await env.runtime.budgets.lift(ANALYST.id, 'undo_action', APPROVER);
    await env.runtime.pipeline.processApprovals();
    // The fourth BLOCK fits the ceiling of four: the refused attempt was not counted.
    expect((await env.runtime.approvals.get(undoId))?.state).toBe('executed');
    expect(await env.runtime.budgets.activePauses()).toEqual([]);
    expect(env.sandbox.sift.decisionsOf('sandbox-high-risk').payment_abuse?.id).toBe(
      'block_user_payment_abuse',
    );
  });
});

describe('undo_action refuses what it cannot undo', () => {
  it('a pending action, a decision with nothing before it, an action past the window, and others’ approvals', async () => {
    env = await setup({ config: { approvals: { undo_window_ms: 60_000 } } });
    const pending = await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'account_abuse',
      description: 'fake accounts',
    });
    const notRun = await env.callTool('undo_action', {
      approval_id: String(pending.error.approval_id),
      ...REASON,
    });
    expect(notRun.error).toMatchObject({ code: 'CONFLICT' });
    expect(notRun.error.message).toContain('only an executed action can be undone');

    const first = await approvedAndRun(env, 'apply_decision', {
      user_id: 'sandbox-high-risk',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const noPrior = await env.callTool('undo_action', { approval_id: first, ...REASON });
    expect(noPrior.error.code).toBe('CONFLICT');
    expect(noPrior.error.message).toContain('Sift cannot remove a decision');

    const label = await approvedAndRun(env, 'suppress_user', {
      user_id: 'sandbox-high-risk',
      reason: 'promo abuse',
    });
    // Executed long ago: as if the window had passed.
    const long = new Date(Date.now() - 2 * 60_000).toISOString();
    await env.runtime.approvals.transition(label, ['executed'], 'executed', { executed_at: long });
    const late = await env.callTool('undo_action', { approval_id: label, ...REASON });
    expect(late.error.code).toBe('CONFLICT');
    expect(late.error.message).toContain('undo window');

    const stranger = await setup({
      principal: { id: 'someone.else@example.com', kind: 'user', role: 'analyst' },
      sandbox: env.sandbox,
      dataDir: env.dataDir,
    });
    try {
      const theirs = await stranger.callTool('undo_action', { approval_id: first, ...REASON });
      expect(theirs.error.code).toBe('NOT_FOUND');
    } finally {
      await stranger.client.close();
      await stranger.runtime.close();
    }
    expect(ANALYST.role).toBe('analyst');
  });
});

describe('undo_action refuses an action whose stored arguments fail the integrity check', () => {
  const LABEL = {
    user_id: 'sandbox-high-risk',
    is_bad: true,
    abuse_type: 'payment_abuse',
    description: 'card testing',
  };
  const approvalCount = async (e: TestEnv) =>
    Number(
      (await e.runtime.store.sql.query<{ n: number }>('SELECT COUNT(*) AS n FROM approvals'))[0]?.n ?? 0,
    );

  it.each([
    {
      how: 'plain args written over the sealed ones',
      tamper: (e: TestEnv, id: string) =>
        e.runtime.store.sql.execute('UPDATE approvals SET args = $1 WHERE id = $2', [
          JSON.stringify({ user_id: 'sandbox-low-risk', abuse_type: 'payment_abuse' }),
          id,
        ]),
      says: 'not sealed',
    },
    {
      how: 'args that no longer hash to args_hash',
      tamper: (e: TestEnv, id: string) =>
        e.runtime.store.sql.execute('UPDATE approvals SET args_hash = $1 WHERE id = $2', [
          argsHashOf({ ...LABEL, user_id: 'sandbox-low-risk' }),
          id,
        ]),
      says: 'do not match the argument hash',
    },
  ])('$how: CONFLICT naming the check, audited, no undo approval opened', async ({ tamper, says }) => {
    env = await setup();
    const id = await approvedAndRun(env, 'apply_label', LABEL);
    await tamper(env, id);
    const before = await approvalCount(env);

    const undo = await env.callTool('undo_action', { approval_id: id, ...REASON });
    expect(undo.error.code).toBe('CONFLICT');
    expect(undo.error.message).toContain(`Approval ${id} cannot be undone: integrity check failed`);
    expect(undo.error.message).toContain(says);
    expect(undo.error.approval_id).toBeUndefined();
    expect(await approvalCount(env)).toBe(before);
    expect((await env.runtime.approvals.get(id))?.state).toBe('executed');
    expect(env.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();
    const records = await audit(env);
    const refused = records.filter((r) => r.tool === 'undo_action');
    expect(refused).toHaveLength(1);
    expect(refused[0]?.outcome).toMatchObject({ code: 'CONFLICT' });
    // Nothing of the tampered arguments reaches the answer or the audit.
    expect(JSON.stringify([undo, refused])).not.toContain('sandbox-low-risk');
  });
});
