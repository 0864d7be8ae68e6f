/**
 * The worker's rules one at a time: per-user ordering in the store, approval for automation,
 * dead letters and the operator CLI, and the Salesforce allowance (REQUEST_LIMIT_EXCEEDED and the
 * reserve kept for humans).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as z from 'zod';
import { runOutboxCommand } from '../../src/cli/outbox.ts';
import { DEFAULTS } from '../../src/config.ts';
import { ERROR_CODES, FraudgateError } from '../../src/errors.ts';
import { openStore } from '../../src/store/store.ts';
import { defineTool, type AnyTool } from '../../src/tool.ts';
import { tools } from '../../tools/index.ts';
import { CLI } from '../helpers/cli.ts';
import {
  clearWrittenFlags,
  decisionBody,
  insertOpenOpportunities,
  liveWorkerEnv,
  operatorConfigs,
  outboxEnv,
  sign,
  type OutboxEnv,
} from './helpers.ts';

let env: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

async function deliver(e: OutboxEnv, user: string, decisionId: string): Promise<number> {
  const { time } = await e.sandbox.sift.consoleApplyDecision({ decisionId, userId: user });
  const body = decisionBody(user, decisionId, time);
  expect((await e.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
  return time;
}

/** A test tool (for a user) that does part of its work each call: what `share` says it flagged and has left. */
function toolInShares(
  name: string,
  risk: 'write' | 'destructive',
  description: string,
  share: () => { flagged: number; remaining: number },
): AnyTool {
  return defineTool({
    name,
    title: 'In shares',
    description,
    risk,
    toolset: 'core',
    idempotent: true,
    input: z.strictObject({ user_id: z.string() }),
    output: z.object({ flagged: z.number(), remaining: z.number() }),
    target: (args) => `user:${args.user_id}`,
    run: async () => share(),
  }) as unknown as AnyTool;
}

/** Tick until an effect waits on an approval other than `previous`, then approve that one; its id. */
async function approveParkedShare(
  { store, runtime, worker }: OutboxEnv['automation'],
  previous?: string,
): Promise<string> {
  const until = Date.now() + 10_000;
  const waiting = async () =>
    (await store.list({ states: ['awaiting_approval'] })).find((e) => e.approvalId !== previous);
  let parked = await waiting();
  while (!parked && Date.now() < until) {
    await worker.tick();
    await new Promise((resolve) => setTimeout(resolve, 20));
    parked = await waiting();
  }
  const id = parked?.approvalId ?? '';
  await runtime.pipeline.decide(id, {
    approve: true,
    approver: { id: 'alice@example.com', kind: 'user', role: 'approver' },
  });
  return id;
}

/** A routed flag_opportunities effect for `user`'s account, and its first share approved; that approval's id (not empty). */
async function flagOpportunitiesApprovingFirstShare(automation: OutboxEnv['automation'], user: string) {
  await automation.store.enqueueRouted(
    { entityType: 'score', entityId: user, decisionId: 'score_read', time: Date.now() },
    [{ effect: 'opportunities', tool: 'flag_opportunities', args: { user_id: user } }],
  );
  const first = await approveParkedShare(automation);
  expect(first).not.toBe('');
  return first;
}

describe('outbox store ordering', () => {
  it('skips an earlier decision that arrives after a later one, and keeps one write per user in flight', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-store-'));
    const opened = await openStore({ ...DEFAULTS, data_dir: dir }, {});
    const store = opened.outbox;
    try {
      const later = await store.enqueue({
        entityType: 'user',
        entityId: 'u1',
        decisionId: 'watch',
        time: 2000,
      });
      const earlier = await store.enqueue({
        entityType: 'user',
        entityId: 'u1',
        decisionId: 'block',
        time: 1000,
      });
      await store.route(later.id, [{ effect: 'segment', tool: 't', args: { n: 2 } }]);
      await store.route(earlier.id, [{ effect: 'segment', tool: 't', args: { n: 1 } }]);
      const skipped = await store.supersede();
      expect(skipped.map((e) => e.args)).toEqual([{ n: 1 }]);
      const [claimed] = await store.claim('w1', 10, 60_000);
      expect(claimed?.args).toEqual({ n: 2 });

      // While u1's segment write is leased, a newer one waits (no overlapping writes per user and effect).
      const newest = await store.enqueue({
        entityType: 'user',
        entityId: 'u1',
        decisionId: 'accept',
        time: 3000,
      });
      await store.route(newest.id, [{ effect: 'segment', tool: 't', args: { n: 3 } }]);
      expect(await store.claim('w2', 10, 60_000)).toEqual([]);
      expect(await store.complete(claimed?.id ?? 0, 'w1', { ok: true })).toBe(true);
      expect((await store.claim('w2', 10, 60_000)).map((e) => e.args)).toEqual([{ n: 3 }]);
      // A stale worker cannot complete what another worker holds.
      expect(await store.complete(claimed?.id ?? 0, 'w1', {})).toBe(false);
    } finally {
      await opened.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('outbox worker', () => {
  it('runs an effect again, not as an attempt, while its tool says work remains and made headway; never for a destructive tool', async () => {
    const calls = { write: 0, destructive: 0 };
    // Headway twice (10 left, then 5: the work shrinks), then a call whose every write failed: 5 stay.
    const inShares = (risk: 'write' | 'destructive') =>
      toolInShares(
        `${risk}_in_shares`,
        risk,
        'A test tool that does bounded work per call and says how much remains.',
        () => {
          calls[risk] += 1;
          return { flagged: calls[risk] <= 2 ? 10 : 0, remaining: calls[risk] === 1 ? 10 : 5 };
        },
      );
    env = await outboxEnv({
      tools: [...tools, inShares('write'), inShares('destructive')],
      config: { approvals: { tools: { destructive_in_shares: 'none' } } },
    });
    for (const risk of ['write', 'destructive'])
      await env.automation.store.enqueueRouted(
        {
          entityType: 'user',
          entityId: `fg_${risk}`,
          decisionId: 'watch_user_payment_abuse',
          time: Date.now(),
        },
        [{ effect: 'segment', tool: `${risk}_in_shares`, args: { user_id: `fg_${risk}` } }],
      );
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const effects = await env.automation.store.list({ limit: 10 });
    expect(effects.map((e) => [e.tool, e.state, e.attempts])).toEqual(
      expect.arrayContaining([
        ['write_in_shares', 'done', 0],
        ['destructive_in_shares', 'done', 0],
      ]),
    );
    expect(calls).toEqual({ write: 3, destructive: 1 });
  });

  it('stops a continuation at ceil(total / first share) + 2 shares even while the work still shrinks, as an audited dead letter', async () => {
    let calls = 0;
    // 10 written a call, yet the work left shrinks by one only (something upstream keeps adding to it).
    const creeping = toolInShares(
      'creeping_in_shares',
      'write',
      'A test tool whose work left shrinks far slower than it writes.',
      () => {
        calls += 1;
        return { flagged: 10, remaining: 31 - calls };
      },
    );
    env = await outboxEnv({ tools: [...tools, creeping] });
    await env.automation.store.enqueueRouted(
      { entityType: 'user', entityId: 'fg_creep', decisionId: 'watch_user_payment_abuse', time: Date.now() },
      [{ effect: 'segment', tool: 'creeping_in_shares', args: { user_id: 'fg_creep' } }],
    );
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    // First share: 10 written, 30 left, so 40 in all: ceil(40 / 10) + 2 = 6 shares at most.
    expect(calls).toBe(6);
    const [effect] = await env.automation.store.list({ limit: 10 });
    expect(effect).toMatchObject({ state: 'dead' });
    expect(effect?.lastError).toMatch(
      /^CONTINUATION_STALLED: 6 shares, the most this effect may take \(6\), and 25 still to do/,
    );
    const dead = (await env.auditRecords()).filter((r) => r.event === 'dead_lettered');
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ tool: 'creeping_in_shares', outcome: { code: 'CONTINUATION_STALLED' } });
  });

  it('the CLI labels a stalled continuation, says what to check before retrying it, and shows its counts as progress, not a result', async () => {
    // Ten written a call, yet 30 always left: the second share finds the work has not shrunk.
    const stuck = toolInShares(
      'stuck_in_shares',
      'write',
      'A test tool whose work left never shrinks.',
      () => ({
        flagged: 10,
        remaining: 30,
      }),
    );
    env = await outboxEnv({ tools: [...tools, stuck] });
    await env.automation.store.enqueueRouted(
      { entityType: 'user', entityId: 'fg_stuck', decisionId: 'watch_user_payment_abuse', time: Date.now() },
      [{ effect: 'segment', tool: 'stuck_in_shares', args: { user_id: 'fg_stuck' } }],
    );
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const [effect] = await env.automation.store.list({ limit: 10 });
    expect(effect?.state).toBe('dead');
    const id = String(effect?.id);

    const configFile = join(env.dataDir, 'cli-config.json');
    writeFileSync(configFile, '{}');
    const cli = (...args: string[]) =>
      new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          [CLI, 'outbox', ...args],
          { timeout: 60_000, env: liveWorkerEnv(env!, configFile) },
          (error, stdout, stderr) =>
            error ? reject(new Error(`${String(error)}\n${stderr}`)) : resolve(stdout),
        ).stdin?.end();
      });

    expect(await cli('list')).toMatch(
      new RegExp(`^\\s*${id}\\s+continuation stalled\\s+stuck_in_shares`, 'm'),
    );
    const shown = await cli('show', id);
    expect(shown).toMatch(
      /^ {2}stalled: {4}.*Check the org for a flow or trigger that clears or rewrites what it writes/m,
    );
    expect(shown).toContain(`fraudgate outbox retry ${id} starts it afresh`);
    expect(shown).toMatch(/^ {2}progress: {3}1 share done, 30 still to do \(at most 6 shares\)$/m);
    expect(shown).not.toMatch(/^ {2}result:/m);
    const json = JSON.parse(await cli('show', id, '--json')) as { effect: Record<string, unknown> };
    expect(json.effect.progress).toEqual({ continuation: { shares: 1, remaining: 30, max_shares: 6 } });
    expect(json.effect).not.toHaveProperty('result');
  });

  for (const { ends, code, counted } of [
    { ends: 'failed for good', code: ERROR_CODES.INVALID_INPUT, counted: 'dead' },
    { ends: 'found nothing to act on', code: ERROR_CODES.NOT_FOUND, counted: 'done' },
  ] as const) {
    it(`counts nothing for an effect whose lease another worker took before it ${ends}`, async () => {
      let takenBy: string | undefined;
      const takenOver = defineTool({
        name: 'taken_over_then_ends',
        title: 'Taken over, then ends',
        description: 'A test tool that loses its lease to another worker, then ends with an error.',
        risk: 'write',
        toolset: 'core',
        idempotent: true,
        input: z.strictObject({ user_id: z.string() }),
        output: z.object({}),
        target: (args) => `user:${args.user_id}`,
        run: async () => {
          // Another worker leases the effect as if this worker's lease had run out.
          const [taken] = await env!.automation.store.claim('replica-b', 10, 60_000, Date.now() + 3_600_000);
          takenBy = taken?.leaseOwner;
          throw new FraudgateError(code, `user_id: ${ends} (the test)`);
        },
      }) as unknown as AnyTool;
      env = await outboxEnv({ tools: [...tools, takenOver] });
      await env.automation.store.enqueueRouted(
        {
          entityType: 'user',
          entityId: 'fg_taken',
          decisionId: 'watch_user_payment_abuse',
          time: Date.now(),
        },
        [{ effect: 'segment', tool: 'taken_over_then_ends', args: { user_id: 'fg_taken' } }],
      );
      const tick = await env.automation.worker.tick();
      expect(takenBy).toBe('replica-b');
      // `outbox work --once` sums these: its summary and exit code must not count another worker's effect.
      expect(tick).toMatchObject({ claimed: 1, [counted]: 0 });
      const [effect] = await env.automation.store.list({ limit: 10 });
      expect(effect).toMatchObject({ state: 'leased', leaseOwner: 'replica-b' });
      expect((await env.auditRecords()).filter((r) => r.event === 'dead_lettered')).toHaveLength(0);
    });
  }

  it('a later ACCEPT on the same abuse type reverses a BLOCK: neither its case nor its suppression runs', async () => {
    env = await outboxEnv();
    env.sandbox.sift.setScore('fg_rev', 'account_abuse', 0.95);
    await deliver(env, 'fg_rev', 'block_user_account_abuse');
    await deliver(env, 'fg_rev', 'looks_ok_account_abuse');
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const effects = await env.automation.store.list({ limit: 20 });
    const skipped = effects.filter((e) => e.state === 'skipped').map((e) => e.effect);
    expect(skipped.sort()).toEqual(['case', 'salesforce', 'segment', 'suppress']);
    expect(
      effects
        .filter((e) => e.state === 'done')
        .map((e) => e.effect)
        .sort(),
    ).toEqual(['salesforce', 'segment']);
    expect(env.sandbox.segment.profile('fg_rev')?.suppressed_for_fraud).not.toBe(true);
  });

  it('parks an effect that policy sends to a human, and completes it once approved', async () => {
    env = await outboxEnv({ config: { approvals: { tools: { suppress_user: 'approval' } } } });
    env.sandbox.sift.setScore('fg_appr', 'payment_abuse', 0.2);
    await deliver(env, 'fg_appr', 'block_user_payment_abuse');
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const [parked] = await env.automation.store.list({ states: ['awaiting_approval'] });
    expect(parked?.tool).toBe('suppress_user');
    const approval = await env.automation.runtime.approvals.get(parked?.approvalId ?? '');
    expect(approval).toMatchObject({ state: 'pending', requester: 'automation:sift-webhook' });

    await env.automation.runtime.pipeline.decide(approval?.id ?? '', {
      approve: true,
      approver: { id: 'alice@example.com', kind: 'user', role: 'approver' },
    });
    // The worker itself executes the approved action (no `serve` sweep here) and settles the effect.
    const until = Date.now() + 5000;
    while ((await env.automation.store.get(parked?.id ?? 0))?.state !== 'done' && Date.now() < until) {
      await env.automation.worker.tick();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await env.automation.store.get(parked?.id ?? 0))?.state).toBe('done');
    expect(env.sandbox.segment.profile('fg_appr')?.suppressed_for_fraud).toBe(true);
    const events = (await env.auditRecords()).filter((r) => r.tool === 'suppress_user').map((r) => r.event);
    expect(events).toEqual(expect.arrayContaining(['approval_requested', 'approved', 'intent', 'executed']));
  });

  it('an approved share of a big account goes back to run the next share, which asks for its own approval', async () => {
    env = await outboxEnv({ config: { approvals: { tools: { flag_opportunities: 'approval' } } } });
    const user = 'sandbox-high-risk';
    const account = env.sandbox.salesforce.demo?.accounts[user];
    insertOpenOpportunities(env.sandbox.salesforce, account, 1000);
    const { store, worker } = env.automation;
    const first = await flagOpportunitiesApprovingFirstShare(env.automation, user);
    // The first approved call flagged 1000 of the 1002; the rest is a new call with its own approval.
    expect(await approveParkedShare(env.automation, first)).not.toBe('');
    // The worker itself executes the approved share (no `serve` sweep here) and settles the effect.
    const until = Date.now() + 10_000;
    while ((await store.list({ states: ['done'] })).length === 0 && Date.now() < until) {
      await worker.tick();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const [effect] = await store.list({ limit: 10 });
    expect(effect).toMatchObject({ state: 'done', attempts: 0 });
    expect(effect?.result).toMatchObject({ flagged: 2, remaining: 0 });
    const open = env.sandbox.salesforce
      .records('Opportunity')
      .filter((o) => o.AccountId === account && o.IsClosed === false);
    expect(open.every((o) => o.Fraud_Risk_Flag__c === true)).toBe(true);
  });

  it('approved shares that never shrink the work end as an audited dead letter, not a new approval forever', async () => {
    env = await outboxEnv({ config: { approvals: { tools: { flag_opportunities: 'approval' } } } });
    const { salesforce } = env.sandbox;
    const user = 'sandbox-high-risk';
    const account = salesforce.demo?.accounts[user];
    insertOpenOpportunities(salesforce, account, 1000);
    clearWrittenFlags(salesforce);
    const { store, worker } = env.automation;
    const first = await flagOpportunitiesApprovingFirstShare(env.automation, user);
    const second = await approveParkedShare(env.automation, first);
    expect(second).not.toBe('');
    const until = Date.now() + 10_000;
    while ((await store.list({ states: ['dead'] })).length === 0 && Date.now() < until) {
      await worker.tick();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const [effect, ...others] = await store.list({ limit: 10 });
    expect(others).toHaveLength(0);
    expect(effect).toMatchObject({ state: 'dead' });
    expect(effect?.lastError).toContain('CONTINUATION_STALLED');
    expect(effect?.lastError).toContain('share 2 left 2 still to do, 2 before it');
    const dead = (await env.auditRecords()).filter((r) => r.event === 'dead_lettered');
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ approval_id: second, outcome: { code: 'CONTINUATION_STALLED' } });
  });

  it('settles parked effects with a bounded number of queries, the oldest past a thousand undecided ones too', async () => {
    env = await outboxEnv();
    const { store, runtime, worker } = env.automation;
    const request = async (id: string) =>
      (
        await runtime.approvals.create({
          id,
          tool: 'suppress_user',
          args: { user_id: 'fg_parked', suppressed: true, reason: 'ring' },
          args_hash: id,
          target: 'segment_user:fg_parked',
          requester: 'automation:sift-webhook',
          requester_role: 'analyst',
          requester_kind: 'automation',
          mode: 'approval',
          policy_version: 'test',
          evidence: {},
          created_at: new Date().toISOString(),
          expires_at: new Date(Date.now() + 3_600_000).toISOString(),
        })
      ).approval;
    const waiting = await request('apr_parked_waiting');
    const denied = await request('apr_parked_denied');
    const effects = Array.from({ length: 1100 }, (_, i) => ({
      effect: `suppress_${i}`,
      tool: 'suppress_user',
      args: { user_id: 'fg_parked', suppressed: true, reason: 'ring' },
    }));
    await store.enqueueRouted(
      { entityType: 'user', entityId: 'fg_parked', decisionId: 'block_user_payment_abuse', time: Date.now() },
      effects,
    );
    const claimed = await store.claim('test-owner', 2000, 60_000);
    expect(claimed).toHaveLength(1100);
    const oldest = Math.min(...claimed.map((e) => e.id));
    // Parked as the worker parks them: the oldest on the approval a human denies, the rest still waiting.
    await runtime.store.sql.execute(
      `UPDATE outbox_effects SET state = 'awaiting_approval', approval_id = $1, lease_until = NULL
       WHERE lease_owner = 'test-owner'`,
      [waiting.id],
    );
    await runtime.store.sql.execute('UPDATE outbox_effects SET approval_id = $1 WHERE id = $2', [
      denied.id,
      oldest,
    ]);
    await runtime.approvals.transition(denied.id, ['pending'], 'denied');

    const query = vi.spyOn(runtime.store.sql, 'query');
    const execute = vi.spyOn(runtime.store.sql, 'execute');
    await worker.tick();
    expect((await store.get(oldest))?.state).toBe('denied');
    // Not one read per parked effect: a handful of statements for the whole tick.
    expect(query.mock.calls.length + execute.mock.calls.length).toBeLessThan(40);
    expect((await store.stats()).awaiting_approval).toBe(1099);
  });

  it('dead-letters after max_attempts; the CLI lists, retries (audited) and the retry succeeds', async () => {
    env = await outboxEnv({ config: { automation: { max_attempts: 2, rules: { watch: ['segment'] } } } });
    env.sandbox.segment.faults.chaos(1, [{ status: 500, path: '/v1/' }]);
    await deliver(env, 'fg_dead', 'watch_user_payment_abuse');
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const [dead] = await env.automation.store.list({ states: ['dead'] });
    expect(dead).toMatchObject({ tool: 'sync_decision_to_segment', attempts: 2 });
    expect((await env.auditRecords()).some((r) => r.event === 'dead_lettered')).toBe(true);

    env.sandbox.segment.faults.clear();
    const { loaded, asOps } = operatorConfigs(env);
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await runOutboxCommand(['list'], { json: true }, loaded)).toBe(0);
      const listed = JSON.parse(String(write.mock.calls[0]?.[0])) as { effects: { id: number }[] };
      expect(listed.effects.map((x) => x.id)).toEqual([dead?.id]);
    } finally {
      write.mockRestore();
    }
    // No credential (and no terminal to ask on): refused, nothing requeued.
    await expect(runOutboxCommand(['retry', String(dead?.id)], {}, loaded)).rejects.toThrow(
      /FRAUDGATE_APPROVER_TOKEN/,
    );
    expect((await env.automation.store.get(dead?.id ?? 0))?.state).toBe('dead');
    expect(await runOutboxCommand(['retry', String(dead?.id)], {}, asOps)).toBe(0);
    expect((await env.auditRecords()).find((r) => r.event === 'requeued')?.principal.id).toBe(
      'ops@example.com',
    );
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    expect((await env.automation.store.get(dead?.id ?? 0))?.state).toBe('done');
    expect(env.sandbox.segment.profile('fg_dead')?.fraud_decision).toBe('watch');
    // Only a dead letter can be dropped.
    expect(await runOutboxCommand(['drop', String(dead?.id)], {}, asOps)).toBe(1);
  });

  it('pauses Salesforce effects on REQUEST_LIMIT_EXCEEDED without spending an attempt', async () => {
    env = await outboxEnv({ config: { automation: { rules: { watch: ['salesforce'] } } } });
    env.sandbox.salesforce.insert('Account', { Name: 'Limit', Sift_User_Id__c: 'fg_limit' });
    env.sandbox.salesforce.rateLimitNext(1);
    await deliver(env, 'fg_limit', 'watch_user_payment_abuse');
    const before = Date.now();
    await env.automation.worker.tick();
    const [effect] = await env.automation.store.list({ states: ['pending'] });
    expect(effect).toMatchObject({ tool: 'sync_decision_to_salesforce', attempts: 0 });
    expect(effect?.nextAttemptAt).toBeGreaterThanOrEqual(
      before + env.config.automation.salesforce_limit_pause_ms,
    );
  });

  it('keeps the configured reserve of the daily Salesforce allowance for humans', async () => {
    // A reserve of all but ~0.05% of 15,000 calls: after a handful of calls automation must stop.
    env = await outboxEnv({
      config: {
        automation: {
          salesforce_reserve: 0.9995,
          salesforce_slowdown_at: 0,
          rules: { watch: ['segment', 'salesforce'] },
        },
      },
    });
    // Other callers have used the allowance down to the reserve (Sforce-Limit-Info on every answer).
    for (let i = 0; i < 10; i += 1)
      await env.automation.runtime.clients.salesforce.query('SELECT Id FROM Account LIMIT 1');
    for (let u = 0; u < 6; u += 1) {
      env.sandbox.salesforce.insert('Account', { Name: `R${u}`, Sift_User_Id__c: `fg_res_${u}` });
      await deliver(env, `fg_res_${u}`, 'watch_user_payment_abuse');
    }
    for (let i = 0; i < 4; i += 1) await env.automation.worker.tick();
    const usage = env.automation.runtime.clients.salesforce.apiUsage();
    expect(usage && usage.used / usage.limit).toBeGreaterThanOrEqual(0.0005);
    const effects = await env.automation.store.list({ limit: 100 });
    expect(effects.filter((e) => e.effect === 'segment').every((e) => e.state === 'done')).toBe(true);
    const salesforce = effects.filter((e) => e.effect === 'salesforce');
    expect(salesforce).toHaveLength(6);
    expect(salesforce.every((e) => e.state === 'pending' && e.attempts === 0)).toBe(true);
  });
});
