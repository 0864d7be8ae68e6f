/**
 * Approvals don't pile up (issue 9 item 10): a newer request for the same tool and target
 * supersedes an older pending one — recorded as superseded (state, audit), no longer decidable,
 * and an outbox effect parked on it settles as skipped.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { decisionBody, outboxEnv, sign, type OutboxEnv } from '../outbox/helpers.ts';
import type { Principal } from '../../src/tool.ts';
import type { Approval } from '../../src/store/approval-store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const OTHER_ANALYST: Principal = { id: 'olga.analyst@example.com', kind: 'user', role: 'analyst' };

let env: TestEnv | undefined;
let outbox: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  await outbox?.close();
  env = undefined;
  outbox = undefined;
});

describe('a newer request supersedes an older pending approval', () => {
  it('through the protocol: the older one is superseded, audited and cannot be approved', async () => {
    env = await setup();
    const first = await env.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'first report' });
    expect(first.error.code).toBe('APPROVAL_PENDING');
    const second = await env.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'second report' });
    expect(second.error.code).toBe('APPROVAL_PENDING');
    const firstId = String(first.error.approval_id);
    expect(String(second.error.approval_id)).not.toBe(firstId);

    const status = await env.callTool('get_approval_status', { approval_id: firstId });
    expect(status.output).toMatchObject({ state: 'superseded' });
    const pending = await env.runtime.approvals.list({ states: ['pending'] });
    expect(pending.map((a) => a.id)).toEqual([second.error.approval_id]);
    // A different target is untouched.
    const other = await env.callTool('suppress_user', { user_id: 'sandbox-high-risk', reason: 'other user' });
    expect(other.error.code).toBe('APPROVAL_PENDING');
    expect(await env.runtime.approvals.list({ states: ['pending'] })).toHaveLength(2);

    const decided = await env.runtime.pipeline
      .decide(firstId, { approve: true, approver: { id: 'ola@example.com', kind: 'user', role: 'approver' } })
      .catch((error: Error) => error);
    expect(decided).toBeInstanceOf(Error);
    expect(env.sandbox.segment.profile('sandbox-watch')?.suppressed_for_fraud).not.toBe(true);
  });

  it('a call waiting on an approval another requester supersedes ends with a final CONFLICT naming the newer one', async () => {
    env = await setup({ config: { approvals: { wait_ms: 60_000 } } });
    const e = env;
    const waiting = e.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'first report' });
    let older: Approval | undefined;
    while (!older) {
      [older] = await e.runtime.approvals.list({ states: ['pending'] });
      if (!older) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const newer = await e.runtime.pipeline.call(
      'suppress_user',
      { user_id: 'sandbox-watch', reason: 'second report' },
      { principal: OTHER_ANALYST, progress: async () => {}, signal: new AbortController().signal, waitMs: 0 },
    );
    expect(newer.ok).toBe(false);
    const newerId = String(!newer.ok && newer.error.data.approval_id);
    expect(newerId).toMatch(/^apr_/);

    const first = await waiting;
    expect(first.error).toMatchObject({
      code: 'CONFLICT',
      retryable: false,
      approval_id: older.id,
      state: 'superseded',
      superseded_by: newerId,
    });
    expect(first.error.message).toContain(newerId);
    expect(first.error.message).not.toMatch(/approve|console|CLI|pending/i);
    expect((await e.callTool('get_approval_status', { approval_id: older.id })).output).toMatchObject({
      state: 'superseded',
    });

    const record = (await storedAuditRecords(e.config, e.runtime.audit)).find(
      (r) => r.event === 'superseded' && r.approval_id === older.id,
    );
    expect(record?.principal.id).toBe(OTHER_ANALYST.id);
    // Both requesters are named (as the ledger keeps personal data in messages: masked, with a keyed tag).
    expect(record?.outcome?.message).toContain(newerId);
    expect(record?.outcome?.message).toMatch(/newer request is o\*\*\*@example\.com#\w+'s/);
    expect(record?.outcome?.message).toMatch(/superseded one was a\*\*\*@example\.com#\w+'s/);
  });

  it('a requester superseding their own request: the ledger names no requesters', async () => {
    env = await setup();
    const first = await env.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'first report' });
    await env.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'second report' });
    const record = (await storedAuditRecords(env.config, env.runtime.audit)).find(
      (r) => r.event === 'superseded' && r.approval_id === first.error.approval_id,
    );
    expect(record?.outcome?.message).toMatch(
      /^superseded by apr_\w+, a newer request for the same tool and target$/,
    );
  });

  it('two BLOCK decisions for one user leave one pending suppression; the older effect is skipped', async () => {
    outbox = await outboxEnv({ config: { approvals: { tools: { suppress_user: 'approval' } } } });
    const o = outbox;
    o.sandbox.sift.setScore('fg_twice', 'payment_abuse', 0.2);
    const deliver = async (decisionId: string) => {
      const { time } = await o.sandbox.sift.consoleApplyDecision({ decisionId, userId: 'fg_twice' });
      const body = decisionBody('fg_twice', decisionId, time);
      expect((await o.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
      expect(await o.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    };
    await deliver('block_user_payment_abuse');
    await new Promise((resolve) => setTimeout(resolve, 5));
    await deliver('block_user_account_abuse');
    await o.automation.worker.tick();

    const approvals = o.automation.runtime.approvals;
    const pending = await approvals.list({ states: ['pending'] });
    expect(pending.filter((a) => a.tool === 'suppress_user')).toHaveLength(1);
    expect((await approvals.list({ states: ['superseded'] })).map((a) => a.tool)).toEqual(['suppress_user']);
    const effects = (await o.automation.store.list({ limit: 100 })).filter((e) => e.tool === 'suppress_user');
    expect(effects.map((e) => e.state).sort()).toEqual(['awaiting_approval', 'skipped']);
    expect((await o.auditRecords()).some((r) => r.event === 'superseded' && r.tool === 'suppress_user')).toBe(
      true,
    );
  });
});
