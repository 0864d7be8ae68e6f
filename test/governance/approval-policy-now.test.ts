/**
 * An approval is decided and run under the policy in force now, not only the one it was requested
 * under: read-only mode, a switched-off toolset or a tightened approval mode stop it, and so does
 * its expiry even when the sweep that marks it expired did not run. Only people decide approvals.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { approvalPolicyVersion, legacyApprovalPolicyVersion, modeNow } from '../../src/governance/policy.ts';
import { stdioPrincipal } from '../../src/transports/stdio.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { ANALYST, setup, type SetupOptions, type TestEnv } from '../helpers/setup.ts';
import { dropSchema, pgListening, PG_URL } from '../store/engines.ts';

let env: TestEnv;
afterEach(async () => {
  vi.restoreAllMocks();
  await env?.close();
});

const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };
const SUPPRESS = { user_id: 'sandbox-high-risk', reason: 'promo abuse ring' };
const LABEL = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'card testing from one device',
};
const segmentWrites = () => env.sandbox.segment.eventsFor('sandbox-high-risk');
const labelsReceived = () => env.sandbox.sift.requests('POST', '/v205/users/:id/labels');

describe('approvals under the policy in force now', () => {
  it('approved, then the server restarts read-only: the sweep runs nothing and fails it FORBIDDEN, audited', async () => {
    env = await setup();
    const requested = await env.callTool('suppress_user', SUPPRESS);
    const id = String(requested.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });

    env = await env.restart({ config: { read_only: true } });
    await env.runtime.pipeline.processApprovals();

    const approval = await env.runtime.approvals.get(id);
    expect(approval?.state).toBe('failed');
    expect(approval?.error?.code).toBe('FORBIDDEN');
    expect(approval?.error?.message).toMatch(/Policy now forbids.*read-only mode/);
    expect(segmentWrites()).toHaveLength(0);
    expect(env.sandbox.segment.profile('sandbox-high-risk')).not.toMatchObject({
      suppressed_for_fraud: true,
    });
    const records = await storedAuditRecords(env.config, env.runtime.audit);
    const failed = records.find((r) => r.approval_id === id && r.event === 'failed');
    expect(failed?.outcome).toMatchObject({ code: 'FORBIDDEN' });
    expect(records.some((r) => r.approval_id === id && r.event === 'intent')).toBe(false);

    // The agent asking after it sees why.
    const status = await env.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({ state: 'failed', error: { code: 'FORBIDDEN' } });
  });

  it('pending, then the server restarts read-only: approving it is refused and it stays pending', async () => {
    env = await setup();
    const requested = await env.callTool('suppress_user', SUPPRESS);
    const id = String(requested.error.approval_id);
    env = await env.restart({ config: { read_only: true } });
    await expect(env.runtime.desk.decide(id, { approve: true, approver: APPROVER })).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringMatching(/Policy now forbids.*read-only mode.*Deny it/),
    });
    expect((await env.runtime.approvals.get(id))?.state).toBe('pending');
    // Denying stays possible: it runs nothing.
    await env.runtime.desk.decide(id, { approve: false, approver: APPROVER, reason: 'emergency stop' });
    expect((await env.runtime.approvals.get(id))?.state).toBe('denied');
  });

  it("the requester's toolset switched off after approval: nothing runs", async () => {
    env = await setup();
    const requested = await env.callTool('suppress_user', SUPPRESS);
    const id = String(requested.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    env = await env.restart({ config: { toolsets: ['sift'] } });
    await env.runtime.pipeline.processApprovals();
    expect(await env.runtime.approvals.get(id)).toMatchObject({
      state: 'failed',
      error: { code: 'FORBIDDEN', message: expect.stringMatching(/toolset/) },
    });
    expect(segmentWrites()).toHaveLength(0);
  });

  it('self-approval withdrawn after the request: the requester can no longer approve it; another approver can', async () => {
    env = await setup({ config: { approvals: { self_approval: ['apply_label'] } } });
    const requested = await env.callTool('apply_label', LABEL);
    const id = String(requested.error.approval_id);
    expect((await env.runtime.approvals.get(id))?.mode).toBe('approval');

    env = await env.restart({ config: { approvals: { self_approval: [] } } });
    const requester = { ...ANALYST, role: 'approver' as const };
    await expect(env.runtime.desk.decide(id, { approve: true, approver: requester })).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringMatching(/policy changed since this was requested/),
    });
    expect((await env.runtime.approvals.get(id))?.state).toBe('pending');

    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(1);
  });

  it('under an unchanged policy, self-approval allowed at request time still is', async () => {
    env = await setup({ config: { approvals: { self_approval: ['apply_label'] } } });
    const requested = await env.callTool('apply_label', LABEL);
    const id = String(requested.error.approval_id);
    env = await env.restart();
    const decided = await env.runtime.desk.decide(id, {
      approve: true,
      approver: { ...ANALYST, role: 'approver' },
    });
    expect(decided.state).toBe('approved');
  });

  it('an approved approval past its expiry is never claimed, even when the expiry sweep missed it', async () => {
    env = await setup({ config: { approvals: { ttl_ms: 300 } } });
    const requested = await env.callTool('apply_label', LABEL);
    const id = String(requested.error.approval_id);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await new Promise((r) => setTimeout(r, 400));
    // The sweep that would mark it expired finds nothing (say, it failed on an earlier tick).
    vi.spyOn(env.runtime.approvals, 'listExpired').mockResolvedValue([]);
    await env.runtime.pipeline.processApprovals();
    expect(labelsReceived()).toHaveLength(0);
    expect((await env.runtime.approvals.get(id))?.state).toBe('approved');
  });
});

describe('replicas tuned differently share one approval policy', () => {
  it('the same call on two replicas differing only in approvals timing joins one pending approval', async () => {
    env = await setup({ config: { approvals: { poll_ms: 20, wait_ms: 0 } } });
    const other = await setup({
      sandbox: env.sandbox,
      dataDir: env.dataDir,
      config: { approvals: { poll_ms: 250, ttl_ms: 7_200_000, undo_window_ms: 60_000 } },
    });
    try {
      const first = await env.callTool('suppress_user', SUPPRESS);
      const retried = await other.callTool('suppress_user', SUPPRESS);
      expect(first.error.code).toBe('APPROVAL_PENDING');
      expect(retried.error.approval_id).toBe(first.error.approval_id);
      expect(await env.runtime.approvals.count(['pending'])).toBe(1);
    } finally {
      await other.runtime.close();
      await other.client.close();
    }
  });
});

describe('approvals opened before the policy version left out timing (an upgrade)', () => {
  const engines: {
    name: string;
    skip: boolean;
    options: () => SetupOptions;
    cleanup?: () => Promise<void>;
  }[] = [{ name: 'SQLite', skip: false, options: () => ({}) }];
  const schema = `fg_pv_${process.pid}_${Date.now().toString(36)}`;
  engines.push({
    name: 'PostgreSQL',
    skip: !pgListening,
    options: () => ({
      config: { store: 'postgres', store_postgres: { schema, startup_timeout_ms: 5_000 } },
      secrets: { postgresUrl: PG_URL, dataKey: 'ab'.repeat(32) },
    }),
    cleanup: () => dropSchema(schema),
  });

  for (const engine of engines) {
    it.skipIf(engine.skip)(
      `${engine.name}: a new approval is opened under the legacy version, which a previous-release replica finds and joins`,
      async () => {
        try {
          env = await setup(engine.options());
          const first = await env.callTool('suppress_user', SUPPRESS);
          expect(first.error).toMatchObject({ code: 'APPROVAL_PENDING' });
          const opened = (await env.runtime.approvals.get(String(first.error.approval_id)))!;
          expect(opened.policy_version).toBe(approvalPolicyVersion(env.config));
          // A replica of the previous release looks for the open approval under the legacy version only,
          // and opening one under it (as it would after not finding one) joins ours too.
          const found = await env.runtime.approvals.findOpen({
            tool: opened.tool,
            args_hash: opened.args_hash,
            target: opened.target,
            requester: opened.requester,
            policy_version: legacyApprovalPolicyVersion(env.config),
          });
          expect(found?.id).toBe(opened.id);
          const joined = await env.runtime.approvals.create({
            ...opened,
            id: 'apr_0123456789abcdef0123',
            policy_version: legacyApprovalPolicyVersion(env.config),
          });
          expect(joined).toMatchObject({ created: false, approval: { id: opened.id } });
          // Under the unchanged policy its mode is its own.
          const retried = await env.callTool('suppress_user', SUPPRESS);
          expect(retried.error).toMatchObject({ code: 'APPROVAL_PENDING', approval_id: opened.id });
          await env.runtime.desk.decide(opened.id, { approve: true, approver: APPROVER });
          await env.runtime.pipeline.processApprovals();
          expect(await env.runtime.approvals.get(opened.id)).toMatchObject({ state: 'executed' });
        } finally {
          await env?.close();
          env = undefined as unknown as TestEnv;
          await engine.cleanup?.();
        }
      },
      30_000,
    );

    it.skipIf(engine.skip)(
      `${engine.name}: the same call again joins the approval opened under the legacy version, not a second one`,
      async () => {
        try {
          env = await setup(engine.options());
          // The call's binding (arguments hash, target), as the pipeline computes it; then that
          // approval is closed and an open one like it stored as a replica before the upgrade did.
          const first = await env.callTool('suppress_user', SUPPRESS);
          const opened = (await env.runtime.approvals.get(String(first.error.approval_id)))!;
          await env.runtime.desk.decide(opened.id, { approve: false, approver: APPROVER, reason: 'setup' });
          const { approval: legacy } = await env.runtime.approvals.create({
            ...opened,
            id: 'apr_0123456789abcdef0123',
            policy_version: legacyApprovalPolicyVersion(env.config),
          });
          expect(legacy.policy_version).not.toBe(opened.policy_version);

          const retried = await env.callTool('suppress_user', SUPPRESS);
          expect(retried.error).toMatchObject({ code: 'APPROVAL_PENDING', approval_id: legacy.id });
          expect(await env.runtime.approvals.count(['pending'])).toBe(1);
          // Decided and run under the policy in force: the legacy version is that policy, not a changed one.
          await env.runtime.desk.decide(legacy.id, { approve: true, approver: APPROVER });
          await env.runtime.pipeline.processApprovals();
          expect(await env.runtime.approvals.get(legacy.id)).toMatchObject({ state: 'executed' });
          expect(env.sandbox.segment.profile('sandbox-high-risk')).toMatchObject({
            suppressed_for_fraud: true,
          });
        } finally {
          await env?.close();
          env = undefined as unknown as TestEnv;
          await engine.cleanup?.();
        }
      },
      30_000,
    );
  }
});

describe('the mode an approval opened under the legacy version needs', () => {
  it('a real policy change changes the legacy version too, so the approval is then under a changed policy', () => {
    const config = { approvals: { ...DEFAULTS.approvals, self_approval: ['decide'] } };
    const changed = { approvals: { ...config.approvals, tools: { decide: 'four_eyes' as const } } };
    expect(legacyApprovalPolicyVersion(changed)).not.toBe(legacyApprovalPolicyVersion(config));
    const tool = { name: 'decide', risk: 'destructive' as const };
    const legacy = { mode: 'approval' as const, policy_version: legacyApprovalPolicyVersion(config) };
    expect(modeNow(legacy, tool, changed)).toBe('four_eyes');
  });

  it('is its own under the unchanged policy, not the strictest of the per-call keys as after a change', () => {
    const config = { approvals: { ...DEFAULTS.approvals, self_approval: ['decide'] } };
    const tool = {
      name: 'decide',
      risk: 'destructive' as const,
      approvalKeys: [{ key: 'decide:block', floor: 'four_eyes' as const }],
    };
    const legacy = { mode: 'approval' as const, policy_version: legacyApprovalPolicyVersion(config) };
    expect(legacy.policy_version).not.toBe(approvalPolicyVersion(config));
    expect(modeNow(legacy, tool, config)).toBe('approval');
    expect(modeNow({ ...legacy, policy_version: 'changed' }, tool, config)).toBe('four_eyes');
  });
});

describe('only people decide approvals', () => {
  for (const kind of ['service', 'automation'] as const) {
    it(`an admin of kind ${kind} cannot approve or deny (FORBIDDEN, says to use a person's credential)`, async () => {
      env = await setup();
      const requested = await env.callTool('apply_label', LABEL);
      const id = String(requested.error.approval_id);
      const bot = { id: 'ops-bot', kind, role: 'admin' as const };
      for (const approve of [true, false]) {
        await expect(
          env.runtime.desk.decide(id, { approve, approver: bot, reason: 'bot says so' }),
        ).rejects.toMatchObject({
          code: 'FORBIDDEN',
          message: expect.stringMatching(new RegExp(`${kind} credential.*own API key`)),
        });
      }
      expect((await env.runtime.approvals.get(id))?.state).toBe('pending');
      await env.runtime.pipeline.processApprovals();
      expect(labelsReceived()).toHaveLength(0);
    });
  }
});

describe('a stdio requester is self-declared', () => {
  it('its approvals tell the approver the name is only a claim; four-eyes still compares it', async () => {
    const principal = stdioPrincipal(ANALYST.id);
    expect(principal).toMatchObject({ id: ANALYST.id, declared: true });
    env = await setup({ principal });
    const requested = await env.callTool('apply_label', LABEL);
    const id = String(requested.error.approval_id);
    const approval = await env.runtime.approvals.get(id);
    expect(approval?.evidence.requester_identity).toMatch(/self-declared.*stdio.*FRAUDGATE_ANALYST/);
    await expect(
      env.runtime.desk.decide(id, { approve: true, approver: { ...ANALYST, role: 'approver' } }),
    ).rejects.toThrow(/Four-eyes/);
  });

  it('a requester proven by a credential (HTTP) carries no such note', async () => {
    env = await setup();
    const requested = await env.callTool('apply_label', LABEL);
    const approval = await env.runtime.approvals.get(String(requested.error.approval_id));
    expect(approval?.evidence).not.toHaveProperty('requester_identity');
  });
});
