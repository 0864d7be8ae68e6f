/**
 * Approvals through the protocol: no channel, elicitation accept/decline, CLI-path approve →
 * executed once, deny/expiry → never executed, changed arguments → new approval, four-eyes,
 * restart between approve and execute.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger, type Logger } from '../../src/logger.ts';
import type { Approval } from '../../src/store/approval-store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const LABEL = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'card testing from one device',
};
const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };
const labelsReceived = () => env.sandbox.sift.requests('POST', '/v205/users/:id/labels');

/**
 * Right after this process claims approval `id`, the claim is taken over (as by another process's
 * recovery of an execution it took for dead) and made again by replica-b, which is still running it.
 */
function takeOverWhenClaimed(id: string) {
  const store = env.runtime.approvals;
  const transition = store.transition.bind(store);
  const clear = null as unknown as string;
  vi.spyOn(store, 'transition').mockImplementation(async (...args) => {
    const moved = await transition(...args);
    if (args[0] === id && args[2] === 'executing' && moved?.executed_by !== 'replica-b') {
      await transition(id, ['executing'], 'approved', { executed_at: clear, executed_by: clear });
      await transition(id, ['approved'], 'executing', {
        executed_at: new Date(Date.now() + 1).toISOString(),
        executed_by: 'replica-b',
      });
    }
    return moved;
  });
  return store;
}

describe('approvals', () => {
  it('without elicitation, apply_label returns APPROVAL_PENDING and nothing reaches Sift', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('APPROVAL_PENDING');
    expect(result.error.approval_id).toMatch(/^apr_/);
    expect(result.error.message).toContain('approval console');
    expect(result.error.message).not.toMatch(/fraudgate approvals|--as/);
    expect(labelsReceived()).toHaveLength(0);
    const stored = await env.runtime.approvals.get(String(result.error.approval_id));
    expect(stored).toMatchObject({
      state: 'pending',
      tool: 'apply_label',
      requester: ANALYST.id,
      target: 'sift_user:sandbox-high-risk',
    });
    // Evidence snapshot for the approver: score and reasons.
    expect(stored?.evidence).toMatchObject({
      abuse_type: 'payment_abuse',
      score: expect.objectContaining({ risk_band: 'critical' }),
    });
  });

  it('evidence unavailable (a user Sift has not scored): the approval still says what approving does, in the tool’s words', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', { ...LABEL, user_id: 'never-seen-user' });
    expect(result.error.code).toBe('APPROVAL_PENDING');
    const stored = await env.runtime.approvals.get(String(result.error.approval_id));
    expect(stored?.evidence.unavailable).toEqual(expect.any(String));
    expect(stored?.evidence.effect).toMatch(/^Label \S+ as BAD \(fraudulent\) for payment_abuse in Sift/);
  });

  it("the approver sees Sift's reason and decision names, and get_approval_status the decision's; people stay masked", async () => {
    env = await setup();
    const requested = await env.callTool('apply_decision', {
      user_id: 'sandbox-high-risk',
      decision_id: 'block_user_payment_abuse',
      description: 'chargebacks',
    });
    expect(requested.error.code).toBe('APPROVAL_PENDING');
    const id = String(requested.error.approval_id);
    const stored = await env.runtime.approvals.get(id);
    // Names of Sift rules and decisions, not of people: what the score rests on, readable.
    expect(stored?.evidence).toMatchObject({
      decision: { id: 'block_user_payment_abuse', name: 'Block user' },
      score: {
        reasons: [
          { name: 'UsersPerDevice', value: 4 },
          { name: 'Card velocity (1h)', value: 9 },
          { name: 'Billing/shipping country mismatch', value: 'true' },
        ],
      },
    });

    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER, reason: 'chargebacks confirmed' });
    await env.runtime.pipeline.processApprovals();
    const status = await env.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({ state: 'executed' });
    // The analyst recorded in Sift is a person: still masked in the stored result.
    expect(status.output.result).toMatchObject({
      decision_id: 'block_user_payment_abuse',
      name: 'Block user',
      analyst: expect.stringMatching(/^\w\*\*\*@.*#[0-9a-f]{8}$/),
    });
    expect(JSON.stringify(status.output.result)).not.toContain(ANALYST.id);
  });

  it('no approval channel at all → refused (fail closed), nothing reaches Sift', async () => {
    env = await setup({ config: { approvals: { out_of_band: false } } });
    const result = await env.callTool('apply_label', LABEL);
    expect(result.error.code).toBe('FORBIDDEN');
    expect(result.error.message).toContain('approvals.out_of_band');
    expect(labelsReceived()).toHaveLength(0);
    expect(await env.runtime.approvals.list()).toHaveLength(0);
  });

  it('policy confirm + elicitation accept → executed at once', async () => {
    const prompts: string[] = [];
    env = await setup({
      config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
      elicit: (message) => {
        prompts.push(message);
        return { action: 'accept', content: { confirm: true } };
      },
    });
    const result = await env.callTool('apply_label', LABEL);
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({ analyst: ANALYST.id, source: 'fraudgate', is_bad: true });
    expect(prompts[0]).toContain('apply_label');
    const [label] = labelsReceived();
    expect(label?.body).toMatchObject({
      $is_bad: true,
      $analyst: ANALYST.id,
      $source: 'fraudgate',
      $abuse_type: 'payment_abuse',
    });
  });

  it.each(['decline', 'cancel'] as const)(
    'policy confirm + elicitation %s → denied, never executed',
    async (action) => {
      env = await setup({
        config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
        elicit: () => ({ action }),
      });
      const result = await env.callTool('apply_label', LABEL);
      expect(result.error.code).toBe('APPROVAL_DENIED');
      expect(labelsReceived()).toHaveLength(0);
    },
  );

  it('accept with confirm=false counts as a decline', async () => {
    env = await setup({
      config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
      elicit: () => ({ action: 'accept', content: { confirm: false } }),
    });
    expect((await env.callTool('apply_label', LABEL)).error.code).toBe('APPROVAL_DENIED');
    expect(labelsReceived()).toHaveLength(0);
  });

  it('policy approval does not accept self-confirmation by elicitation', async () => {
    let asked = false;
    env = await setup({
      elicit: () => {
        asked = true;
        return { action: 'accept', content: { confirm: true } };
      },
    });
    const result = await env.callTool('apply_label', LABEL);
    expect(result.error.code).toBe('APPROVAL_PENDING');
    expect(asked).toBe(false);
  });

  it('approved out of band while the call waits → executed exactly once with the frozen arguments', async () => {
    env = await setup({ config: { approvals: { wait_ms: 10_000 } } });
    const progress: string[] = [];
    const pending = env.callTool('apply_label', LABEL, { onprogress: (p) => progress.push(p.message ?? '') });
    let approvalId: string | undefined;
    for (let i = 0; i < 200 && !approvalId; i++) {
      await new Promise((r) => setTimeout(r, 20));
      approvalId = (await env.runtime.approvals.list({ states: ['pending'] }))[0]?.id;
    }
    expect(approvalId).toBeDefined();
    await env.runtime.desk.decide(approvalId!, { approve: true, approver: APPROVER });
    const result = await pending;
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({ user_id: 'sandbox-high-risk', analyst: ANALYST.id });
    expect(labelsReceived()).toHaveLength(1);
    expect((await env.runtime.approvals.get(approvalId!))?.state).toBe('executed');
    expect(progress.some((m) => m.includes(approvalId!))).toBe(true);

    // The background sweep finds nothing more to do: still exactly one label.
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(1);
  });

  it('approved after the call returned pending → the sweep executes it once; get_approval_status shows the result', async () => {
    env = await setup();
    const first = await env.callTool('apply_label', LABEL);
    const id = String(first.error.approval_id);
    // Calling again with the same arguments does not create a second approval.
    const again = await env.callTool('apply_label', LABEL);
    expect(again.error.approval_id).toBe(id);
    expect(await env.runtime.approvals.list()).toHaveLength(1);

    await env.runtime.desk.decide(id, {
      approve: true,
      approver: APPROVER,
      reason: 'confirmed with chargeback data',
    });
    await Promise.all([env.runtime.pipeline.processApprovals(), env.runtime.pipeline.processApprovals()]);
    expect(labelsReceived()).toHaveLength(1);

    const status = await env.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({
      state: 'executed',
      decided_by: APPROVER.id,
      reason: 'confirmed with chargeback data',
    });
    expect(status.output.result).toMatchObject({ user_id: 'sandbox-high-risk', is_bad: true });
  });

  it('denied → never executed; the waiting agent gets APPROVAL_DENIED with the reason', async () => {
    env = await setup({ config: { approvals: { wait_ms: 10_000 } } });
    const pending = env.callTool('apply_label', LABEL);
    let id: string | undefined;
    for (let i = 0; i < 200 && !id; i++) {
      await new Promise((r) => setTimeout(r, 20));
      id = (await env.runtime.approvals.list({ states: ['pending'] }))[0]?.id;
    }
    await expect(env.runtime.desk.decide(id!, { approve: false, approver: APPROVER })).rejects.toThrow(
      /reason/,
    );
    await env.runtime.desk.decide(id!, {
      approve: false,
      approver: APPROVER,
      reason: 'customer verified by phone',
    });
    const result = await pending;
    expect(result.error.code).toBe('APPROVAL_DENIED');
    expect(result.error.message).toContain('customer verified by phone');
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(0);
  });

  it('expired → never executed and cannot be approved', async () => {
    env = await setup({ config: { approvals: { ttl_ms: 30 } } });
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    await new Promise((r) => setTimeout(r, 60));
    await expect(env.runtime.desk.decide(id, { approve: true, approver: APPROVER })).rejects.toThrow(
      /expired/,
    );
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(id))?.state).toBe('expired');
    expect(labelsReceived()).toHaveLength(0);
  });

  it('changed arguments need a new approval; an approval never runs other arguments', async () => {
    env = await setup();
    const first = await env.callTool('apply_label', LABEL);
    const second = await env.callTool('apply_label', { ...LABEL, abuse_type: 'account_abuse' });
    expect(second.error.approval_id).not.toBe(first.error.approval_id);
    await env.runtime.desk.decide(String(first.error.approval_id), { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    const labels = labelsReceived();
    expect(labels).toHaveLength(1);
    expect(labels[0]?.body).toMatchObject({ $abuse_type: 'payment_abuse' });
  });

  it('four-eyes: the requester cannot approve their own request; another approver can', async () => {
    env = await setup({ config: { approvals: { tools: { apply_label: 'four_eyes' } } } });
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    await expect(
      env.runtime.desk.decide(id, { approve: true, approver: { ...ANALYST, role: 'approver' } }),
    ).rejects.toThrow(/Four-eyes/);
    expect((await env.runtime.approvals.get(id))?.state).toBe('pending');
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(1);
  });

  it('a restart between approve and execute still executes exactly once', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    env = await env.restart();
    await env.runtime.pipeline.processApprovals();
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(1);
    expect((await env.runtime.approvals.get(id))?.state).toBe('executed');
  });

  it('a crash mid-execution: an idempotent action runs again once; a non-idempotent one is marked failed', async () => {
    env = await setup({ config: { approvals: { tools: { send_sift_event: 'approval' } } } });
    const label = await env.callTool('apply_label', LABEL);
    const event = await env.callTool('send_sift_event', {
      event: { event_type: 'logout', user_id: 'sandbox-high-risk' },
    });
    const labelId = String(label.error.approval_id);
    const eventId = String(event.error.approval_id);
    const longAgo = new Date(Date.now() - 60 * 60 * 1000).toISOString();
    for (const id of [labelId, eventId]) {
      await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
      // What a process killed mid-call leaves behind.
      await env.runtime.approvals.transition(id, ['approved'], 'executing', { executed_at: longAgo });
    }
    await env.runtime.pipeline.processApprovals();
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(labelId))?.state).toBe('executed');
    expect(labelsReceived()).toHaveLength(1);
    expect(await env.runtime.approvals.get(eventId)).toMatchObject({
      state: 'failed',
      error: { code: 'INTERNAL' },
    });
    expect((await env.runtime.approvals.get(eventId))?.error?.message).toContain('interrupted');
    expect(env.sandbox.sift.requests('POST', '/v205/events')).toHaveLength(0);
  });

  it('a replica restarted under its id settles at once what it died running, and only that', async () => {
    env = await setup({ config: { approvals: { tools: { send_sift_event: 'approval' } } } });
    const label = await env.callTool('apply_label', LABEL);
    const event = await env.callTool('send_sift_event', {
      event: { event_type: 'logout', user_id: 'sandbox-high-risk' },
    });
    const otherLabel = await env.callTool('apply_label', { ...LABEL, abuse_type: 'account_abuse' });
    const [labelId, eventId, otherId] = [label, event, otherLabel].map((r) => String(r.error.approval_id));
    const justNow = new Date().toISOString();
    for (const [id, replica] of [
      [labelId, 'replica-a'],
      [eventId, 'replica-a'],
      [otherId, 'replica-b'],
    ] as const) {
      await env.runtime.desk.decide(id!, { approve: true, approver: APPROVER });
      // What a replica killed mid-call moments ago leaves behind.
      await env.runtime.approvals.transition(id!, ['approved'], 'executing', {
        executed_at: justNow,
        executed_by: replica,
      });
    }
    const states = async () =>
      Promise.all(
        [labelId, eventId, otherId].map(async (id) => (await env.runtime.approvals.get(id!))?.state),
      );
    // A process without that replica id (a CLI) cannot tell a dead claim from a running one: it waits.
    await env.runtime.pipeline.processApprovals();
    expect(await states()).toEqual(['executing', 'executing', 'executing']);

    env = await env.restart({ replicaId: 'replica-a' });
    await env.runtime.pipeline.processApprovals();
    await env.runtime.pipeline.processApprovals();
    // Its own: the idempotent label runs again once, the event is failed as interrupted; replica-b's
    // may still be running there, so it is left alone.
    expect(await states()).toEqual(['executed', 'failed', 'executing']);
    expect(labelsReceived()).toHaveLength(1);
    expect((await env.runtime.approvals.get(labelId!))?.executed_by).toBe('replica-a');
    expect((await env.runtime.approvals.get(eventId!))?.error?.message).toContain('interrupted');
    expect(env.sandbox.sift.requests('POST', '/v205/events')).toHaveLength(0);
  });

  it('recovery leaves an approval whose claim was given up and made by another replica after it was listed', async () => {
    env = await setup({ config: { approvals: { tools: { send_sift_event: 'approval' } } } });
    const label = await env.callTool('apply_label', LABEL);
    const event = await env.callTool('send_sift_event', {
      event: { event_type: 'logout', user_id: 'sandbox-high-risk' },
    });
    const ids = [label, event].map((r) => String(r.error.approval_id));
    const beforeRestart = new Date().toISOString();
    for (const id of ids) {
      await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
      await env.runtime.approvals.transition(id, ['approved'], 'executing', {
        executed_at: beforeRestart,
        executed_by: 'replica-a',
      });
    }
    env = await env.restart({ replicaId: 'replica-a' });
    const store = env.runtime.approvals;
    const list = store.list.bind(store);
    const clear = null as unknown as string;
    // The listed rows go stale while recovery works through them (each can be a full upstream call):
    // meanwhile every claim is given up (a budget pause) and made again by replica-b, still running.
    vi.spyOn(store, 'list').mockImplementation(async (filter) => {
      const listed = await list(filter);
      for (const approval of listed.filter((a) => a.state === 'executing')) {
        await store.transition(approval.id, ['executing'], 'approved', {
          executed_at: clear,
          executed_by: clear,
        });
        await store.transition(approval.id, ['approved'], 'executing', {
          executed_at: new Date().toISOString(),
          executed_by: 'replica-b',
        });
      }
      return listed;
    });
    await env.runtime.pipeline.recoverInterrupted();
    for (const id of ids) {
      expect(await store.get(id)).toMatchObject({ state: 'executing', executed_by: 'replica-b' });
    }
    expect(labelsReceived()).toHaveLength(0);
    expect(env.sandbox.sift.requests('POST', '/v205/events')).toHaveLength(0);
  });

  it('a claim under its replica id made after the process started belongs to a live process: left alone, with a warning', async () => {
    const warnings: string[] = [];
    const logger: Logger = {
      ...silentLogger,
      enabled: () => true,
      warn: (msg) => warnings.push(msg),
      child: () => logger,
    };
    env = await setup({ replicaId: 'replica-a', logger });
    const label = await env.callTool('apply_label', LABEL);
    const id = String(label.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // Another process configured with the same replica id (a shared config file) claimed it a
    // millisecond ago (so before this process's next look, which alone tells it is not its own).
    await env.runtime.approvals.transition(id, ['approved'], 'executing', {
      executed_at: new Date(Date.now() - 1).toISOString(),
      executed_by: 'replica-a',
    });
    await env.runtime.pipeline.processApprovals();
    expect(await env.runtime.approvals.get(id)).toMatchObject({
      state: 'executing',
      executed_by: 'replica-a',
    });
    expect(labelsReceived()).toHaveLength(0);
    expect(warnings.filter((w) => w.includes('uses this replica id'))).toHaveLength(1);
  });

  it("an execution taken over by another process while it ran (the 10-minute rule) does not overwrite the new claim's outcome", async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    const store = takeOverWhenClaimed(id);
    await env.runtime.pipeline.processApprovals();
    // This process's call did run (its outcome came late), but the row is replica-b's to settle.
    expect(labelsReceived()).toHaveLength(1);
    expect(await store.get(id)).toMatchObject({ state: 'executing', executed_by: 'replica-b' });
  });

  it('an evidence re-check that fails after the execution was taken over runs nothing (fail closed)', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // The fresh look at the evidence fails, and meanwhile the claim is taken over by replica-b.
    env.sandbox.sift.faults.inject({ count: 10, method: 'GET', path: /\/score/, status: 400 });
    const store = takeOverWhenClaimed(id);
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(0);
    expect(await store.get(id)).toMatchObject({ state: 'executing', executed_by: 'replica-b' });
  });

  it('an interrupted execution the policy now forbids fails as possibly done, not as "nothing was done"', async () => {
    env = await setup();
    const label = await env.callTool('apply_label', LABEL);
    const id = String(label.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // The replica died mid apply_label; the operator restarts it read-only.
    await env.runtime.approvals.transition(id, ['approved'], 'executing', {
      executed_at: new Date().toISOString(),
      executed_by: 'replica-a',
    });
    env = await env.restart({ replicaId: 'replica-a', config: { read_only: true } });
    await env.runtime.pipeline.recoverInterrupted();
    const failed = await env.runtime.approvals.get(id);
    expect(failed?.state).toBe('failed');
    expect(failed?.error?.message).toContain('interrupted');
    expect(failed?.error?.message).toContain('may have reached Sift');
    expect(failed?.error?.message).not.toContain('nothing was done');
    const records = await storedAuditRecords(env.config, env.runtime.audit);
    const outcome = records.find((r) => r.approval_id === id && r.event === 'failed');
    expect(outcome?.outcome?.message).toBe(failed?.error?.message);
    expect(labelsReceived()).toHaveLength(0);
  });

  it('an interrupted execution its tool now refuses for good fails as possibly done, not as "nothing was done"', async () => {
    env = await setup();
    const requested = await env.callTool('apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const id = String(requested.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // The replica died mid apply_decision, long enough ago for its claim to be stale.
    await env.runtime.approvals.transition(id, ['approved'], 'executing', {
      executed_at: new Date(Date.now() - 11 * 60_000).toISOString(),
      executed_by: 'replica-a',
    });
    // Meanwhile the decision was removed from Sift's catalogue: the re-run's budget key is refused.
    const catalogue = env.sandbox.sift.decisionCatalogue;
    catalogue.splice(
      catalogue.findIndex((d) => d.id === 'block_user_payment_abuse'),
      1,
    );
    await env.runtime.pipeline.recoverInterrupted();
    const status = await env.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({ state: 'failed' });
    const failed = await env.runtime.approvals.get(id);
    expect(failed?.error?.code).toBe('INTERNAL');
    expect(failed?.error?.message).toContain('interrupted');
    expect(failed?.error?.message).toContain('may have reached Sift');
    expect(failed?.error?.message).not.toContain('nothing was done');
    const records = await storedAuditRecords(env.config, env.runtime.audit);
    const outcome = records.find((r) => r.approval_id === id && r.event === 'failed');
    expect(outcome?.outcome).toMatchObject({ code: 'INTERNAL', message: failed?.error?.message });
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('watch_user_payment_abuse');
  });

  it('recovery puts an interrupted approval back to approved without its claim, so no later claim looks like it', async () => {
    env = await setup();
    const label = await env.callTool('apply_label', LABEL);
    const id = String(label.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.approvals.transition(id, ['approved'], 'executing', {
      executed_at: new Date().toISOString(),
      executed_by: 'replica-a',
    });
    env = await env.restart({ replicaId: 'replica-a' });
    const store = env.runtime.approvals;
    const transition = store.transition.bind(store);
    const requeued: Approval[] = [];
    // Between the requeue and its re-claim, another replica (maybe of a version without executed_by)
    // can claim it: what the requeue stored is what that claim starts from.
    vi.spyOn(store, 'transition').mockImplementation(async (...args) => {
      const moved = await transition(...args);
      if (moved?.state === 'approved') requeued.push(moved);
      return moved;
    });
    await env.runtime.pipeline.recoverInterrupted();
    expect(requeued).toHaveLength(1);
    expect(requeued[0]?.executed_by).toBeUndefined();
    expect(requeued[0]?.executed_at).toBeUndefined();
    expect(await store.get(id)).toMatchObject({ state: 'executed', executed_by: 'replica-a' });
    expect(labelsReceived()).toHaveLength(1);
  });

  it('suppress_user waits for approval and then writes the suppression trait the audience keys on', async () => {
    env = await setup();
    const result = await env.callTool('suppress_user', {
      user_id: 'sandbox-high-risk',
      reason: 'promo abuse ring',
    });
    expect(result.error.code).toBe('APPROVAL_PENDING');
    expect(env.sandbox.segment.eventsFor('sandbox-high-risk')).toHaveLength(0);
    await env.runtime.desk.decide(String(result.error.approval_id), { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    const profile = env.sandbox.segment.profile('sandbox-high-risk');
    expect(profile).toMatchObject({ suppressed_for_fraud: true, fraud_suppressed: true });
    const track = env.sandbox.segment.eventsFor('sandbox-high-risk').find((e) => e.type === 'track');
    expect(track).toMatchObject({ event: 'Fraud Suppression Applied' });
    // Never the GDPR Regulations API.
    expect(env.sandbox.segment.unmatched).toHaveLength(0);
  });

  it("get_approval_status hides other people's approvals", async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    const other = await setup({
      principal: { id: 'someone.else@example.com', kind: 'user', role: 'analyst' },
      sandbox: env.sandbox,
      dataDir: env.dataDir,
    });
    try {
      const status = await other.callTool('get_approval_status', { approval_id: id });
      expect(status.error.code).toBe('NOT_FOUND');
    } finally {
      await other.client.close();
      await other.runtime.close();
    }
  });
});
