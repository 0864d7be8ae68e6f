/**
 * A caller cancelling a write (MCP notifications/cancelled, or going away) never leaves a half-done
 * change recorded as failed: cancelled before its intent, nothing is written and the audit says so;
 * cancelled once it runs, the write completes (Segment identify and track both sent) and is executed.
 * The same for an approved action run by the requester's waiting call.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { ANALYST, setup, type DeepPartial, type TestEnv } from '../helpers/setup.ts';

const USER = 'sandbox-watch';
const SUPPRESS = { user_id: USER, reason: 'promo abuse' };
const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const segmentPosts = (e: TestEnv) => e.sandbox.segment.journal.filter((j) => j.method === 'POST');

async function suppressAudit(e: TestEnv) {
  const records = await storedAuditRecords(e.config, e.runtime.audit);
  return records.filter((r) => r.tool === 'suppress_user').map((r) => r.event);
}

/** Hold the first Segment delivery in flight, so the caller can cancel between two upstream writes. */
function holdFirstSegmentDelivery(e: TestEnv) {
  e.sandbox.segment.faults.inject({ method: 'POST', delayMs: 400 });
}

function expectWholeSuppression(e: TestEnv) {
  expect(
    e.sandbox.segment
      .eventsFor(USER)
      .map((m) => m.type)
      .sort(),
  ).toEqual(['identify', 'track']);
  expect(e.sandbox.segment.profile(USER)).toMatchObject({ suppressed_for_fraud: true });
}

describe('a cancelled write', () => {
  it('cancelled before its intent: nothing is written and the audit says cancelled', async () => {
    env = await setup({ config: { approvals: { tools: { suppress_user: 'none' } } } });
    const cancelled = new AbortController();
    cancelled.abort('client cancelled');
    const outcome = await env.runtime.pipeline.call('suppress_user', SUPPRESS, {
      principal: ANALYST,
      signal: cancelled.signal,
      progress: async () => {},
    });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.error.message).toContain('nothing was done');
    expect(segmentPosts(env)).toHaveLength(0);
    expect(await suppressAudit(env)).toEqual(['cancelled']);
  });

  it('cancelled through the MCP client mid-run: the write completes and is recorded executed', async () => {
    env = await setup({ config: { approvals: { tools: { suppress_user: 'none' } } } });
    holdFirstSegmentDelivery(env);
    const cancel = new AbortController();
    const call = env.callTool('suppress_user', SUPPRESS, { signal: cancel.signal });
    await until('the first Segment delivery', () => segmentPosts(env!).length > 0);
    cancel.abort('client cancelled');
    await expect(call).rejects.toThrow();

    await until('the outcome record', async () => (await suppressAudit(env!)).length >= 2);
    expect(await suppressAudit(env)).toEqual(['intent', 'executed']);
    expectWholeSuppression(env);
  });

  it.each([
    ['while it writes', 'POST'],
    ['while it re-checks the evidence', 'GET'],
  ])(
    "an approved action run by the requester's waiting call completes when the requester cancels %s",
    async (_when, method) => {
      const waiting: DeepPartial<Config> = {
        approvals: { wait_ms: 30_000, poll_ms: 20, tools: { suppress_user: 'approval' } },
      };
      env = await setup({ config: waiting });
      const cancel = new AbortController();
      const call = env.callTool('suppress_user', SUPPRESS, { signal: cancel.signal });
      let approvalId: string | undefined;
      await until('the approval request', async () => {
        approvalId = (await env!.runtime.approvals.list({ states: ['pending'] }))[0]?.id;
        return approvalId !== undefined;
      });
      // Hold the action's first Segment request after the approval: its profile read (the evidence
      // re-check) or its first delivery.
      const seen = env.sandbox.segment.journal.length;
      env.sandbox.segment.faults.inject({ method, delayMs: 400 });
      await env.runtime.desk.decide(approvalId!, { approve: true, approver: APPROVER });
      await until(`the held Segment ${method}`, () =>
        env!.sandbox.segment.journal.slice(seen).some((j) => j.method === method),
      );
      cancel.abort('client went away');
      await expect(call).rejects.toThrow();

      await until('the approval to settle', async () => {
        const state = (await env!.runtime.approvals.get(approvalId!))?.state;
        return state !== 'approved' && state !== 'executing';
      });
      expect((await env.runtime.approvals.get(approvalId!))?.state).toBe('executed');
      expect(await suppressAudit(env)).not.toContain('failed');
      expect(await suppressAudit(env)).toEqual(expect.arrayContaining(['intent', 'executed']));
      expectWholeSuppression(env);
    },
  );
});
