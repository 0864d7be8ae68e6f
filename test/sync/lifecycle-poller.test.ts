/**
 * Lifecycle feedback against the real emulators and a real SQLite file, read from the emulator's
 * field history: each change with its author (an intermediate human change is not lost), the
 * watermark (equal whole-second timestamps, pages, late commits, restart), loop prevention
 * (fraudgate's own writes never bounce back), transitions from config, and policy applying to
 * automation (a BLOCK waits for a human).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tools } from '../../tools/index.ts';
import { openStore } from '../../src/store/store.ts';
import type { SyncStateStore } from '../../src/store/sync-state-store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import {
  createAutomationPipeline,
  createLifecyclePoller,
  LIFECYCLE_PRINCIPAL,
} from '../../src/sync/lifecycle-poller.ts';
import { silentLogger } from '../../src/logger.ts';
import type { Config } from '../../src/config.ts';
import { setup, type DeepPartial, type TestEnv } from '../helpers/setup.ts';

const APPROVER = { id: 'ada.approver@example.com', kind: 'user', role: 'approver' } as const;

let env: TestEnv | undefined;
let state: SyncStateStore | undefined;

afterEach(async () => {
  state = undefined;
  await env?.close();
  env = undefined;
});

async function start(config: DeepPartial<Config> = {}) {
  env = await setup({
    config: {
      // ACCEPT decisions and labels may run unattended for automation in these tests; BLOCK keeps its floor.
      approvals: { tools: { 'apply_decision:accept': 'none', apply_label: 'none' } },
      ...config,
    },
  });
  state = env.runtime.store.syncState;
  return { env, state };
}

function pollerFor(e: TestEnv, s: SyncStateStore) {
  return createLifecyclePoller({
    pipeline: createAutomationPipeline(e.runtime, tools),
    salesforce: e.runtime.clients.salesforce,
    state: s,
    config: e.config,
    logger: silentLogger,
  });
}

/** A linked Account whose Sift user exists. */
function account(e: TestEnv, userId: string, fields: Record<string, unknown> = {}) {
  e.sandbox.sift.setScore(userId, 'payment_abuse', 0.4);
  return e.sandbox.salesforce.insert('Account', {
    Name: `Acct ${userId}`,
    Sift_User_Id__c: userId,
    Fraud_Status__c: 'Active',
    ...fields,
  });
}

const decisionPosts = (e: TestEnv) =>
  e.sandbox.sift.requests('POST', '/v3/accounts/:acct/users/:uid/decisions');

describe('lifecycle poller', () => {
  it('starts with a baseline: history before the first poll is not replayed, nothing is sent', async () => {
    const { env, state } = await start();
    const acct = account(env, 'lc-base');
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Closed - Fraud' });
    const poller = pollerFor(env, state);
    const result = await poller.pollOnce();
    expect(result.baseline).toBe(true);
    expect(result.events).toEqual([]);
    expect(result.scanned).toBe(1);
    expect((await poller.pollOnce()).events).toEqual([]);
    expect(decisionPosts(env)).toHaveLength(0);
  });

  it('an intermediate human change is not lost: the human’s Closed - Other is sent, the integration user’s Under Review is not', async () => {
    const { env, state } = await start({
      feedback: {
        transitions: [
          { to: 'Closed - Other', sift: { label: { is_bad: true, abuse_type: 'payment_abuse' } } },
          { to: 'Under Review', sift: { decision_id: 'looks_ok_payment_abuse' } },
        ],
      },
    });
    const acct = account(env, 'lc-between');
    const poller = pollerFor(env, state);
    await poller.pollOnce(); // baseline
    // Between two polls: a human closes the account, then fraudgate's own session reopens it for review.
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Closed - Other' });
    await env.runtime.clients.salesforce.update('Account', { Id: acct.Id, Fraud_Status__c: 'Under Review' });
    const current = env.sandbox.salesforce.records('Account').find((r) => r.Id === acct.Id);
    expect(current?.Fraud_Status__c).toBe('Under Review');

    const result = await poller.pollOnce();
    expect(result.events.map((e) => [e.from, e.to, e.outcome])).toEqual([
      ['Active', 'Closed - Other', 'applied'],
      ['Closed - Other', 'Under Review', 'own_write'],
    ]);
    expect(result.events[1]?.changed_by).toBe(env.sandbox.salesforce.integrationUserId);
    const labelPosts = env.sandbox.sift.requests('POST', '/v205/users/:uid/labels');
    expect(labelPosts).toHaveLength(1);
    expect(labelPosts[0]?.body).toMatchObject({ $is_bad: true, $abuse_type: 'payment_abuse' });
    expect(env.sandbox.sift.labels('lc-between').payment_abuse).toMatchObject({ is_bad: true });
    expect(decisionPosts(env)).toHaveLength(0);
    // Exactly once: the next poll re-reads its overlap window and sends nothing more.
    const again = await poller.pollOnce();
    expect(again.scanned).toBeGreaterThanOrEqual(2);
    expect(again.events).toEqual([]);
    expect(env.sandbox.sift.requests('POST', '/v205/users/:uid/labels')).toHaveLength(1);
  });

  it('a change committed late with an earlier timestamp than one already handled is still fed back', async () => {
    const { env, state } = await start();
    const [a, b] = [account(env, 'lc-late-a'), account(env, 'lc-late-b')];
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    const now = Date.now();
    const stamp = (offsetMs: number) => new Date(Math.floor((now + offsetMs) / 1000) * 1000).toISOString();
    env.sandbox.salesforce.editAs(
      'Account',
      a.Id,
      { Fraud_Status__c: 'Paying Customer' },
      { systemModstamp: stamp(5000) },
    );
    expect((await poller.pollOnce()).events).toEqual([
      expect.objectContaining({ account_id: a.Id, outcome: 'applied' }),
    ]);
    // Stamped 3 s before the change already handled, but visible only now.
    env.sandbox.salesforce.editAs(
      'Account',
      b.Id,
      { Fraud_Status__c: 'Paying Customer' },
      { systemModstamp: stamp(2000) },
    );
    expect((await poller.pollOnce()).events).toEqual([
      expect.objectContaining({ account_id: b.Id, outcome: 'applied' }),
    ]);
    expect(decisionPosts(env)).toHaveLength(2);
  });

  it('feeds a human transition to Sift exactly once, across equal timestamps, pages and a restart', async () => {
    const { env, state } = await start({ feedback: { batch_size: 2 } });
    const ids = ['lc-eq-1', 'lc-eq-2', 'lc-eq-3', 'lc-eq-4', 'lc-eq-5'].map((u) => account(env, u).Id);
    const poller = pollerFor(env, state);
    await poller.pollOnce(); // baseline
    // Five human edits stamped in one second, read two per page: neither skipped nor repeated.
    const stamp = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
    for (const id of ids)
      env.sandbox.salesforce.editAs(
        'Account',
        id,
        { Fraud_Status__c: 'Paying Customer' },
        { systemModstamp: stamp },
      );
    const first = await poller.pollOnce();
    expect(first.events.map((e) => e.account_id).sort()).toEqual([...ids].sort());
    expect(first.events.every((e) => e.outcome === 'applied' && e.from === 'Active')).toBe(true);
    expect(first.watermark?.modstamp).toBe(stamp);
    expect(first.events.every((e) => e.changed_at === stamp)).toBe(true);
    expect(decisionPosts(env)).toHaveLength(5);
    for (const u of ['lc-eq-1', 'lc-eq-5']) {
      expect(env.sandbox.sift.decisionsOf(u).payment_abuse?.id).toBe('looks_ok_payment_abuse');
    }

    // Restart: a new store handle and poller on the same file continue from the stored watermark.
    const reopenedStore = await openStore(env.config, {});
    const reopened = reopenedStore.syncState;
    const again = await pollerFor(env, reopened).pollOnce();
    expect(again.baseline).toBe(false);
    expect(again.events).toEqual([]);
    expect(decisionPosts(env)).toHaveLength(5);
    await reopenedStore.close();
  });

  it('ignores changes that are not status transitions (another field, another tracked field, same status)', async () => {
    const { env, state } = await start();
    const acct = account(env, 'lc-other');
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    env.sandbox.salesforce.editAs('Account', acct.Id, { Industry: 'Retail' });
    env.sandbox.salesforce.editAs('Account', acct.Id, { Type: 'Customer' });
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Active' });
    const result = await poller.pollOnce();
    expect(result.scanned).toBe(0);
    expect(result.events).toEqual([]);
  });

  it('round trip: fraudgate’s own Salesforce write is not bounced back; a human’s change reaches Sift once', async () => {
    const { env, state } = await start();
    const acct = account(env, 'lc-loop');
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    // fraudgate writes a decision outcome to Salesforce (as sync_decision_to_salesforce does), via its own session.
    await env.runtime.clients.salesforce.update('Account', {
      Id: acct.Id,
      Fraud_Status__c: 'Paying Customer',
    });
    const own = await poller.pollOnce();
    expect(own.events).toEqual([expect.objectContaining({ account_id: acct.Id, outcome: 'own_write' })]);
    expect(decisionPosts(env)).toHaveLength(0);
    expect(env.sandbox.sift.decisionsOf('lc-loop')).toEqual({});

    // A human re-opens the account and later marks it paying: both are theirs, only the mapped one is sent.
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Active' });
    expect((await poller.pollOnce()).events).toEqual([
      expect.objectContaining({ outcome: 'no_rule', to: 'Active' }),
    ]);
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Paying Customer' });
    const human = await poller.pollOnce();
    expect(human.events).toEqual([
      expect.objectContaining({
        outcome: 'applied',
        tool: 'apply_decision',
        from: 'Active',
        to: 'Paying Customer',
      }),
    ]);
    expect(decisionPosts(env)).toHaveLength(1);
    const body = decisionPosts(env)[0]?.body as Record<string, unknown>;
    expect(body).toMatchObject({ decision_id: 'looks_ok_payment_abuse', analyst: LIFECYCLE_PRINCIPAL.id });
    expect((await poller.pollOnce()).events).toEqual([]);
    expect(decisionPosts(env)).toHaveLength(1);
    // Every automated action is audited under the automation principal.
    const audit = await storedAuditRecords(env.config, env.runtime.audit);
    expect(
      audit.some(
        (r) => r.event === 'executed' && JSON.stringify(r.principal).includes(LIFECYCLE_PRINCIPAL.id),
      ),
    ).toBe(true);
  });

  it('maps transitions from config: a label instead of a decision, and from-restricted rules', async () => {
    const { env, state } = await start({
      feedback: {
        transitions: [
          { to: 'Paying Customer', sift: { label: { is_bad: false, abuse_type: 'payment_abuse' } } },
          { from: ['Closed - Fraud'], to: 'Active', sift: { decision_id: 'looks_ok_account_abuse' } },
        ],
      },
    });
    const a = account(env, 'lc-map-a');
    const b = account(env, 'lc-map-b', { Fraud_Status__c: 'Closed - Fraud' });
    const c = account(env, 'lc-map-c', { Fraud_Status__c: 'Under Review' });
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    env.sandbox.salesforce.editAs('Account', a.Id, { Fraud_Status__c: 'Paying Customer' });
    env.sandbox.salesforce.editAs('Account', b.Id, { Fraud_Status__c: 'Active' });
    env.sandbox.salesforce.editAs('Account', c.Id, { Fraud_Status__c: 'Active' });
    const result = await poller.pollOnce();
    const by = new Map(result.events.map((e) => [e.account_id, e]));
    expect(by.get(a.Id)).toMatchObject({ outcome: 'applied', tool: 'apply_label' });
    expect(env.sandbox.sift.labels('lc-map-a').payment_abuse).toMatchObject({ is_bad: false });
    expect(by.get(b.Id)).toMatchObject({ outcome: 'applied', tool: 'apply_decision' });
    expect(env.sandbox.sift.decisionsOf('lc-map-b').account_abuse?.id).toBe('looks_ok_account_abuse');
    expect(by.get(c.Id)).toMatchObject({ outcome: 'no_rule' });
    expect(env.sandbox.sift.decisionsOf('lc-map-c')).toEqual({});
  });

  it('a BLOCK from automation waits for a human approval, once, and runs after approval', async () => {
    const { env, state } = await start();
    const acct = account(env, 'lc-block');
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Closed - Fraud' });
    const result = await poller.pollOnce();
    const event = result.events[0];
    expect(event).toMatchObject({ outcome: 'pending_approval', tool: 'apply_decision' });
    expect(decisionPosts(env)).toHaveLength(0);
    const approvalId = event?.approval_id ?? '';
    expect(await env.runtime.approvals.get(approvalId)).toMatchObject({
      state: 'pending',
      requester: LIFECYCLE_PRINCIPAL.id,
    });
    expect((await poller.pollOnce()).events).toEqual([]);

    await env.runtime.pipeline.decide(approvalId, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(env.sandbox.sift.decisionsOf('lc-block').payment_abuse?.id).toBe('block_user_payment_abuse');
    expect(decisionPosts(env)).toHaveLength(1);
  });

  it('lifecycle-driven effects spend the runtime’s blast-radius budget and take its shared rate limiter', async () => {
    const { env, state } = await start({
      feedback: {
        transitions: [{ to: 'Paying Customer', sift: { decision_id: 'looks_ok_payment_abuse' } }],
      },
      budgets: { limits: { 'apply_decision:accept': { max_effects: 1 } } },
    });
    const first = account(env, 'lc-budget-a');
    const second = account(env, 'lc-budget-b');
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    const take = vi.spyOn(env.runtime.rateLimiter, 'take');
    const takeNow = env.runtime.rateLimiter.takeNow
      ? vi.spyOn(env.runtime.rateLimiter, 'takeNow')
      : undefined;
    env.sandbox.salesforce.editAs('Account', first.Id, { Fraud_Status__c: 'Paying Customer' });
    env.sandbox.salesforce.editAs('Account', second.Id, { Fraud_Status__c: 'Paying Customer' });
    await poller.pollOnce();

    // One accept reached Sift; the second found the budget spent and paused for the lifecycle principal.
    expect(decisionPosts(env)).toHaveLength(1);
    expect(await env.runtime.budgets.activePauses()).toEqual([
      expect.objectContaining({ principal: LIFECYCLE_PRINCIPAL.id, budget_key: 'apply_decision:accept' }),
    ]);
    expect(take.mock.calls.length + (takeNow?.mock.calls.length ?? 0)).toBeGreaterThan(0);
  });

  it('the automation pipeline is the runtime’s: identity mappings are honoured and MCP paging cursors open in it', async () => {
    const { env } = await start({ identity: { mappings: { 'lc-mapped': 'seg-lc-mapped' } } });
    // A stored mapping too (`fraudgate identities map`): a directory without the store never sees it.
    await env.runtime.identities.map({
      sift_user_id: 'lc-stored',
      segment_user_id: 'seg-lc-stored',
      mapped_by: 'ops@example.com',
      mapped_at: new Date().toISOString(),
    });
    env.sandbox.sift.setScore('lc-mapped', 'payment_abuse', 0.4);
    env.sandbox.sift.setScore('lc-stored', 'payment_abuse', 0.4);
    const pipeline = createAutomationPipeline(env.runtime, tools);
    const channel = {
      principal: LIFECYCLE_PRINCIPAL,
      progress: async () => {},
      signal: new AbortController().signal,
    };
    for (const user of ['lc-mapped', 'lc-stored']) {
      const synced = await pipeline.call('sync_score_to_segment', { user_id: user }, channel);
      expect(synced.ok, JSON.stringify(synced)).toBe(true);
    }
    expect(env.sandbox.segment.profile('seg-lc-mapped')).toBeDefined();
    expect(env.sandbox.segment.profile('seg-lc-stored')).toBeDefined();
    expect(env.sandbox.segment.profile('lc-mapped')).toBeUndefined();
    expect(env.sandbox.segment.profile('lc-stored')).toBeUndefined();

    // A cursor the MCP side sealed opens in the automation pipeline: one key, the runtime's.
    for (const id of ['lc-review-a', 'lc-review-b'])
      await env.runtime.identities.recordUnmatched({ sift_user_id: id, tried: [], at: new Date() });
    const page = await env.callTool('list_unmatched_identities', { limit: 1 });
    const cursor = (page.output as { next_cursor?: string }).next_cursor;
    expect(cursor).toBeDefined();
    const next = await pipeline.call('list_unmatched_identities', { cursor, limit: 1 }, channel);
    expect(next.ok, JSON.stringify(next)).toBe(true);
  });

  it('defers on a retryable failure and retries from the same record next time', async () => {
    const { env, state } = await start({ sift: { max_retries: 0 } });
    const acct = account(env, 'lc-retry');
    const poller = pollerFor(env, state);
    await poller.pollOnce();
    env.sandbox.salesforce.editAs('Account', acct.Id, { Fraud_Status__c: 'Paying Customer' });
    env.sandbox.sift.rateLimit(20, { httpStatus: 429 });
    const deferred = await poller.pollOnce();
    expect(deferred.deferred).toBe(true);
    env.sandbox.sift.faults.clear();
    const retried = await poller.pollOnce();
    expect(retried.events).toEqual([expect.objectContaining({ account_id: acct.Id, outcome: 'applied' })]);
    expect(env.sandbox.sift.decisionsOf('lc-retry').payment_abuse?.id).toBe('looks_ok_payment_abuse');
  });
});
