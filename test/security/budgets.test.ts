/**
 * Blast-radius budgets: past a ceiling, further destructive effects of a principal wait for a human
 * to lift the pause (nothing reaches the emulator meanwhile); the lift is authenticated and audited;
 * approved actions wait, still approved, and run after the lift. The store contract runs on SQLite
 * and on PostgreSQL (127.0.0.1:5432; skipped with a message when nothing listens there), including
 * two replicas admitting concurrently against one ceiling.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { runBudgetsCommand } from '../../src/cli/budgets.ts';
import type { BudgetStore } from '../../src/store/budget-store.ts';
import { openPostgresBudgetStore } from '../../src/store/postgres/budget-store.ts';
import { openSqliteBudgetStore } from '../../src/store/sqlite/budget-store.ts';
import type { Principal } from '../../src/tool.ts';
import { argsHashOf } from '../helpers/approvals.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';
import { listening } from '../helpers/services.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const APPROVER: Principal = { id: 'ola.approver@example.com', kind: 'user', role: 'approver' };
const APPROVER_KEY = 'budget-approver-key-0123456789';

/** `fraudgate budgets lift` in-process, with an approver's API key configured for the CLI. */
async function lift(e: TestEnv, principal: string, key: string, token?: string, as: Principal = APPROVER) {
  const config = {
    ...e.config,
    auth: {
      ...e.config.auth,
      key_hashes: [
        {
          sha256: createHash('sha256').update(APPROVER_KEY).digest('hex'),
          principal: as.id,
          kind: 'user' as const,
          role: 'approver' as const,
        },
      ],
    },
  };
  const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    return await runBudgetsCommand(
      ['lift', principal, key],
      {},
      {
        config,
        secrets: { auditKey: 'test-audit-key', ...(token ? { approverToken: token } : {}) },
        modeReason: 'test',
      },
    );
  } finally {
    write.mockRestore();
  }
}

describe('a budget stops the N+1th effect; a human lift resumes', () => {
  it('suppressions without approval: the third is refused and never reaches Segment; lifted, it runs', async () => {
    env = await setup({
      config: {
        approvals: { tools: { suppress_user: 'none' } },
        budgets: { limits: { suppress_user: { max_effects: 2 } } },
      },
    });
    const suppress = (user: string) =>
      env!.callTool('suppress_user', { user_id: user, reason: 'promo abuse ring' });
    expect((await suppress('sandbox-high-risk')).isError).toBe(false);
    expect((await suppress('sandbox-watch')).isError).toBe(false);
    const third = await suppress('sandbox-low-risk');
    expect(third.error).toMatchObject({ code: 'RATE_LIMITED', budget_paused: 'suppress_user' });
    expect(third.error.message).toContain('a human approver lifts the pause');
    expect(third.error.message).not.toMatch(/fraudgate budgets|--as/);
    expect(env.sandbox.segment.eventsFor('sandbox-low-risk')).toHaveLength(0);
    expect(env.runtime.budgets.activeCount()).toBe(1);
    // Still paused: the next one waits too.
    expect((await suppress('sandbox-unmatched')).error.code).toBe('RATE_LIMITED');

    const records = await storedAuditRecords(env.config, env.runtime.audit);
    expect(records.filter((r) => r.event === 'budget_paused')).toHaveLength(1);
    expect(records.find((r) => r.event === 'budget_paused')).toMatchObject({
      principal: { id: ANALYST.id },
      target: 'budget:suppress_user',
    });

    // Lifting needs an approver's credential, and is audited under it.
    await expect(lift(env, ANALYST.id, 'suppress_user')).rejects.toThrow(/FRAUDGATE_APPROVER_TOKEN/);
    expect(await lift(env, ANALYST.id, 'suppress_user', APPROVER_KEY)).toBe(0);
    expect((await suppress('sandbox-low-risk')).isError).toBe(false);
    expect(env.sandbox.segment.profile('sandbox-low-risk')).toMatchObject({ suppressed_for_fraud: true });
    const lifted = (await storedAuditRecords(env.config, env.runtime.audit)).find(
      (r) => r.event === 'budget_lifted',
    );
    expect(lifted).toMatchObject({
      principal: { id: APPROVER.id, role: 'approver' },
      target: 'budget:suppress_user',
    });
  });

  it('approved BLOCKs: past the ceiling an approved block waits, still approved, and runs after the lift', async () => {
    env = await setup({ config: { budgets: { limits: { 'apply_decision:block': { max_effects: 1 } } } } });
    const ids: string[] = [];
    for (const user of ['sandbox-high-risk', 'sandbox-watch']) {
      const result = await env.callTool('apply_decision', {
        user_id: user,
        decision_id: 'block_user_payment_abuse',
        description: 'card testing ring',
      });
      ids.push(String(result.error.approval_id));
    }
    for (const id of ids) await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    await env.runtime.pipeline.processApprovals();
    const blocked = (user: string) => env!.sandbox.sift.decisionsOf(user).payment_abuse?.id;
    expect((await env.runtime.approvals.get(ids[0]!))?.state).toBe('executed');
    expect((await env.runtime.approvals.get(ids[1]!))?.state).toBe('approved');
    expect(blocked('sandbox-watch')).toBe('watch_user_payment_abuse');
    const status = await env.callTool('get_approval_status', { approval_id: ids[1]! });
    expect(status.output).toMatchObject({ state: 'approved' });

    expect(await lift(env, ANALYST.id, 'apply_decision:block', APPROVER_KEY)).toBe(0);
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(ids[1]!))?.state).toBe('executed');
    expect(blocked('sandbox-watch')).toBe('block_user_payment_abuse');
  });

  it('an approved BLOCK whose decision category cannot be re-read waits, still approved, under its paused budget', async () => {
    env = await setup({ config: { budgets: { limits: { 'apply_decision:block': { max_effects: 1 } } } } });
    const ids: string[] = [];
    for (const user of ['sandbox-high-risk', 'sandbox-watch']) {
      const result = await env.callTool('apply_decision', {
        user_id: user,
        decision_id: 'block_user_payment_abuse',
        description: 'card testing ring',
      });
      ids.push(String(result.error.approval_id));
    }
    for (const id of ids) await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // The first runs and spends the budget; the second pauses it.
    await env.runtime.pipeline.processApprovals();
    await env.runtime.pipeline.processApprovals();
    expect(env.runtime.budgets.activeCount()).toBe(1);

    // Sift's decision catalogue fails for one read (every retry of it): the category is unknown.
    const catalogue = /^\/v3\/accounts\/[^/]+\/decisions$/;
    const attempts = env.config.sift.max_retries + 1;
    env.sandbox.sift.faults.inject({ count: attempts, method: 'GET', path: catalogue, status: 503 });
    await env.runtime.pipeline.processApprovals();
    const blocked = (user: string) => env!.sandbox.sift.decisionsOf(user).payment_abuse?.id;
    const statuses = env.sandbox.sift.requests('GET', '/v3/accounts/:acct/decisions').map((r) => r.status);
    expect(statuses.filter((s) => s === 503)).toHaveLength(attempts);
    expect((await env.callTool('get_approval_status', { approval_id: ids[1]! })).output).toMatchObject({
      state: 'approved',
    });
    expect(blocked('sandbox-watch')).toBe('watch_user_payment_abuse');

    // Readable again, still paused: it still waits. Lifted: it runs.
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(ids[1]!))?.state).toBe('approved');
    expect(await lift(env, ANALYST.id, 'apply_decision:block', APPROVER_KEY)).toBe(0);
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(ids[1]!))?.state).toBe('executed');
    expect(blocked('sandbox-watch')).toBe('block_user_payment_abuse');
  });

  it('an older approved action runs even when more than a page of newer ones wait on a paused budget', async () => {
    env = await setup({ config: { budgets: { limits: { suppress_user: { max_effects: 1 } } } } });
    const requested = await env.callTool('apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const blockId = String(requested.error.approval_id);
    await env.runtime.desk.decide(blockId, { approve: true, approver: APPROVER });

    // The automation spent its suppression budget; 60 newer approved suppressions wait on the pause.
    const automation: Principal = { id: 'automation:suppressions', kind: 'automation', role: 'analyst' };
    await env.runtime.budgets.admit(automation, ['suppress_user'], 'sift_user:first');
    await expect(
      env.runtime.budgets.admit(automation, ['suppress_user'], 'sift_user:second'),
    ).rejects.toThrow(/budget/);
    const later = Date.now() + 60_000;
    for (let i = 0; i < 60; i++) {
      const { approval } = await env.runtime.approvals.create({
        id: `apr_paused_${String(i).padStart(3, '0')}`,
        tool: 'suppress_user',
        args: { user_id: `ring-${i}`, reason: 'promo abuse ring' },
        args_hash: argsHashOf({ user_id: `ring-${i}`, reason: 'promo abuse ring' }),
        target: `segment_user:ring-${i}`,
        requester: automation.id,
        requester_role: automation.role,
        requester_kind: automation.kind,
        mode: 'approval',
        policy_version: 'test',
        evidence: {},
        created_at: new Date(later + i * 1000).toISOString(),
        expires_at: new Date(later + 3_600_000).toISOString(),
      });
      await env.runtime.approvals.transition(approval.id, ['pending'], 'approved');
    }

    const activePauses = vi.spyOn(env.runtime.budgets, 'activePauses');
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(blockId))?.state).toBe('executed');
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse?.id).toBe('block_user_payment_abuse');
    // Still waiting for the lift, and the pauses were read once for the sweep, not once per approval.
    expect(await env.runtime.approvals.count(['approved'])).toBe(60);
    expect(activePauses).toHaveBeenCalledTimes(1);
  });

  it('four eyes: the paused principal cannot lift their own pause, another approver can', async () => {
    env = await setup({
      config: {
        approvals: { tools: { suppress_user: 'none' } },
        budgets: { limits: { suppress_user: { max_effects: 1 } } },
      },
    });
    // An approver who also runs suppressions (and spends their own budget).
    const approverCaller = { ...APPROVER, id: 'Ola.Approver@Example.com', role: 'admin' as const };
    await env.runtime.budgets.admit(approverCaller, ['suppress_user'], 'segment_user:a');
    await expect(
      env.runtime.budgets.admit(approverCaller, ['suppress_user'], 'segment_user:b'),
    ).rejects.toThrow(/budget/);
    // The same person, however the id is spelt, must not lift it.
    await expect(lift(env, approverCaller.id, 'suppress_user', APPROVER_KEY)).rejects.toThrow(
      /own pause.*another approver must lift it/,
    );
    expect(await env.runtime.budgets.activePauses()).toHaveLength(1);
    const records = await storedAuditRecords(env.config, env.runtime.audit);
    expect(records.filter((r) => r.event === 'budget_lifted')).toHaveLength(0);
    // Another approver can.
    const other: Principal = { id: 'pia.approver@example.com', kind: 'user', role: 'approver' };
    expect(await lift(env, approverCaller.id, 'suppress_user', APPROVER_KEY, other)).toBe(0);
    expect(await env.runtime.budgets.activePauses()).toHaveLength(0);
  });

  it('max_targets: a second distinct user past a ceiling of one is refused, the same user is not', async () => {
    env = await setup({
      config: {
        approvals: { tools: { apply_label: 'none' } },
        budgets: { limits: { apply_label: { max_targets: 1 } } },
      },
    });
    const label = (user: string, abuse: string) =>
      env!.callTool('apply_label', {
        user_id: user,
        is_bad: true,
        abuse_type: abuse,
        description: 'ring member',
      });
    expect((await label('sandbox-high-risk', 'payment_abuse')).isError).toBe(false);
    expect((await label('sandbox-high-risk', 'account_abuse')).isError).toBe(false);
    expect((await label('sandbox-watch', 'payment_abuse')).error.code).toBe('RATE_LIMITED');
    expect(env.sandbox.sift.labels('sandbox-watch').payment_abuse).toBeUndefined();
  });
});

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres:postgres@127.0.0.1:5432/postgres';
const pgListening = await listening(5432);
if (!pgListening)
  process.stderr.write('budgets: PostgreSQL tests skipped: nothing listens on 127.0.0.1:5432\n');

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** Two handles on one database: two processes (SQLite) or two replicas (PostgreSQL). */
const engines: [string, boolean, () => Promise<[BudgetStore, BudgetStore]>][] = [
  [
    'sqlite',
    true,
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'fraudgate-budgets-'));
      const stores: [BudgetStore, BudgetStore] = [
        openSqliteBudgetStore(join(dir, 'db')),
        openSqliteBudgetStore(join(dir, 'db')),
      ];
      cleanups.push(async () => {
        for (const s of stores) await s.close();
        rmSync(dir, { recursive: true, force: true });
      });
      return stores;
    },
  ],
  [
    'postgres',
    pgListening,
    async () => {
      const schema = `fg_budget_${process.pid}_${randomBytes(4).toString('hex')}`;
      const stores: [BudgetStore, BudgetStore] = [
        await openPostgresBudgetStore(PG_URL, { schema }),
        await openPostgresBudgetStore(PG_URL, { schema }),
      ];
      cleanups.push(async () => {
        for (const s of stores) await s.close();
        const pg = await import('pg');
        const client = new pg.default.Client({ connectionString: PG_URL });
        await client.connect();
        await client.query(`DROP SCHEMA ${schema} CASCADE`);
        await client.end();
      });
      return stores;
    },
  ],
];

describe.each(engines)('budget store contract: %s', (_name, available, open) => {
  it.skipIf(!available)(
    'admits up to the ceiling across two handles at once, pauses, and counts afresh after a lift',
    async () => {
      const [a, b] = await open();
      const at = new Date();
      const input = (target: string, when = at) => ({
        principal: 'automation:decisions',
        budgets: [{ budget_key: 'apply_decision:block', limit: { max_effects: 5 } }],
        target,
        window_start: new Date(when.getTime() - 3_600_000),
        at: when,
      });
      // Twelve concurrent admissions from two replicas against a ceiling of five.
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).admit(input(`user-${i}`))),
      );
      expect(results.filter((r) => r.admitted)).toHaveLength(5);
      expect(results.filter((r) => !r.admitted && r.newly_paused)).toHaveLength(1);
      expect(await b.activePauses()).toMatchObject([
        { principal: 'automation:decisions', budget_key: 'apply_decision:block' },
      ]);
      // Other principals and keys are untouched.
      expect((await a.admit({ ...input('user-x'), principal: 'ana@example.com' })).admitted).toBe(true);

      const later = new Date(at.getTime() + 1000);
      expect(
        await a.lift('automation:decisions', 'apply_decision:block', 'ola@example.com', later),
      ).toMatchObject({
        lifted_by: 'ola@example.com',
      });
      expect(
        await b.lift('automation:decisions', 'apply_decision:block', 'ola@example.com', later),
      ).toBeUndefined();
      expect(await a.activePauses()).toEqual([]);
      expect((await b.admit(input('user-after', new Date(later.getTime() + 1)))).admitted).toBe(true);
    },
  );

  it.skipIf(!available)(
    'an effect counted against several budgets is admitted in all or none: a spent one leaves no count in the others',
    async () => {
      const [a, b] = await open();
      const at = new Date();
      const input = (target: string, budgets: { budget_key: string; limit: { max_effects: number } }[]) => ({
        principal: 'ana@example.com',
        budgets,
        target,
        window_start: new Date(at.getTime() - 3_600_000),
        at,
      });
      const block = { budget_key: 'apply_decision:block', limit: { max_effects: 5 } };
      const undo = { budget_key: 'undo_action', limit: { max_effects: 1 } };
      expect((await a.admit(input('user-1', [block, undo]))).admitted).toBe(true);
      // undo_action is spent: refused, and apply_decision:block does not count it.
      expect(await b.admit(input('user-2', [block, undo]))).toMatchObject({
        admitted: false,
        newly_paused: true,
        pause: { budget_key: 'undo_action' },
      });
      expect(await a.admit(input('user-3', [block, undo]))).toMatchObject({
        admitted: false,
        newly_paused: false,
        pause: { budget_key: 'undo_action' },
      });
      // Four more BLOCKs fit in its ceiling of five: only the first undo was counted in it.
      for (const user of ['user-4', 'user-5', 'user-6', 'user-7']) {
        expect((await b.admit(input(user, [block]))).admitted).toBe(true);
      }
      expect((await a.admit(input('user-8', [block]))).admitted).toBe(false);
    },
  );
});
