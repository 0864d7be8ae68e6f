/**
 * The score-change trigger (issue 9 item 2), end to end: a Segment event sent to Sift with
 * return_score comes back with a high score, and that score writes Segment score traits, a Segment
 * track event, flags the user's open opportunities and opens a fraud case — each effect a governed
 * tool call through the outbox, exactly once even with the message redelivered and Segment and
 * Salesforce failing now and then.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.ts';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { siftUserResolver } from '../../src/webhooks/segment-mapping.ts';
import { createSegmentWebhookHandler } from '../../src/webhooks/segment-webhook.ts';
import {
  decisionBody,
  insertOpenOpportunities,
  clearWrittenFlags,
  outboxEnv,
  sign,
  webhookRefusals,
  type OutboxEnv,
} from '../outbox/helpers.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';
import { runScoreSync } from '../../src/sync/score-sync.ts';
import { SCORE_ENTITY, SCORE_READ_EVENT } from '../../src/outbox/propagate.ts';

const SECRET = 'segment-shared-secret';
let env: OutboxEnv | undefined;
let server: Server | undefined;
let mcp: TestEnv | undefined;
afterEach(async () => {
  await mcp?.close();
  mcp = undefined;
  if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
  server = undefined;
  await env?.close();
  env = undefined;
});

/** A score read of `user` enqueued as the score sync enqueues it, and the worker drained. */
async function readScoreAndDrain(e: OutboxEnv, user: string): Promise<void> {
  await e.automation.store.enqueue({
    entityType: SCORE_ENTITY,
    entityId: user,
    decisionId: SCORE_READ_EVENT,
    time: Date.now(),
  });
  expect(await e.automation.worker.drain({ timeoutMs: 60_000 })).toBe(true);
}

describe('score-change trigger', () => {
  it('Segment Order Completed → Sift score → traits, track event, flagged opportunities and one case', async () => {
    env = await outboxEnv({ config: { automation: { max_attempts: 30 } } });
    const { automation } = env;
    const handler = createSegmentWebhookHandler({
      store: (deliveries) =>
        automation.store.enqueueRoutedMany(deliveries.map(({ event, effects }) => ({ event, effects }))),
      secret: SECRET,
      mapping: env.config.mapping,
      siftUsersFor: siftUserResolver(
        (ids) => automation.runtime.identities.mappingsForSegmentUsers(ids),
        env.config.identity,
      ),
      audit: automation.runtime.audit,
      logger: silentLogger,
      bodyLimitBytes: 64 * 1024,
      refusals: webhookRefusals(automation.runtime),
      origin: automation.runtime.segmentOrigin,
    });
    server = createServer((req, res) => void handler(req, res));
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/segment`;
    const message = {
      type: 'track',
      messageId: 'score-1',
      userId: 'sandbox-high-risk',
      event: 'Order Completed',
      properties: { order_id: 'order-score-1', total: 1250, currency: 'USD' },
      timestamp: '2026-11-30T08:00:00.000Z',
    };
    expect((await sendSegmentWebhook(url, message, { secret: SECRET })).status).toBe(200);
    expect((await sendSegmentWebhook(url, message, { secret: SECRET })).body).toMatchObject({
      duplicates: 1,
    });

    env.sandbox.segment.faults.inject({ status: 503 });
    env.sandbox.salesforce.faults.inject({ status: 503 });
    expect(await automation.worker.drain({ timeoutMs: 60_000 })).toBe(true);
    // A second drain (another worker, a restart) finds nothing more to do.
    expect(await automation.worker.drain({ timeoutMs: 10_000 })).toBe(true);

    const effects = await automation.store.list({ limit: 100 });
    expect(effects.map((e) => `${e.effect}:${e.state}`).sort()).toEqual([
      'case:done',
      'opportunities:done',
      'segment_score:done',
      'sift_event:done',
      'track:done',
    ]);
    const user = 'sandbox-high-risk';
    expect(env.sandbox.segment.profile(user)).toMatchObject({ sift_score: 94, sift_risk_level: 'critical' });
    const tracks = env.sandbox.segment.eventsFor(user).filter((e) => e.type === 'track');
    expect(tracks.filter((e) => e.event === 'Sift Score Evaluated')).toHaveLength(1);
    const account = env.sandbox.salesforce.demo?.accounts[user];
    const open = env.sandbox.salesforce
      .records('Opportunity')
      .filter((o) => o.AccountId === account && o.IsClosed === false);
    expect(open.length).toBeGreaterThan(0);
    expect(open.every((o) => o.Fraud_Risk_Flag__c === true)).toBe(true);
    const cases = env.sandbox.salesforce
      .records('Case')
      .filter((c) => c.Sift_User_Id__c === user && c.IsClosed === false);
    expect(cases).toHaveLength(1);
    expect(cases[0]).toMatchObject({ Priority: 'High' });
    expect(env.sandbox.sift.events.filter((e) => e.type === '$transaction')).toHaveLength(1);
  });

  it('a decision webhook the mapping marks high-risk (an ATO watch) sets off the score trigger too', async () => {
    env = await outboxEnv({
      config: {
        automation: {
          score_trigger: {
            high_risk_decisions: ['watch_user_payment_abuse'],
            case_rules: [{ event: 'watch_user_payment_abuse', min_score: 0.6, priority: 'Medium' }],
          },
        },
      },
    });
    const user = 'sandbox-high-risk';
    const { time } = await env.sandbox.sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: user,
    });
    const body = decisionBody(user, 'watch_user_payment_abuse', time);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 60_000 })).toBe(true);
    const effects = await env.automation.store.list({ limit: 100 });
    expect(effects.map((e) => `${e.effect}:${e.state}`).sort()).toEqual([
      'case:done',
      'opportunities:done',
      'salesforce:done',
      'segment:done',
      'segment_score:done',
      'track:done',
    ]);
    expect(env.sandbox.segment.profile(user)).toMatchObject({ fraud_decision: 'watch', sift_score: 94 });
    const cases = env.sandbox.salesforce
      .records('Case')
      .filter((c) => c.Sift_User_Id__c === user && c.IsClosed === false);
    expect(cases).toHaveLength(1);
  });

  it('a score an agent reads sets off the trigger once: case in the rule’s queue with the severity’s priority, exactly once under faults', async () => {
    mcp = await setup();
    const user = 'sandbox-high-risk';
    const tier2 = mcp.sandbox.salesforce.insert('Group', {
      Name: 'Fraud Tier 2',
      DeveloperName: 'Fraud_Tier_2',
      Type: 'Queue',
    });
    // The same score read twice (and once more inside the case tool later): one trigger event.
    expect((await mcp.callTool('get_sift_score', { user_id: user })).error).toBeUndefined();
    expect((await mcp.callTool('get_sift_score', { user_id: user })).error).toBeUndefined();
    const events = (await mcp.runtime.outbox.unrouted(10)).filter((e) => e.entityType === 'score');
    expect(events).toEqual([
      expect.objectContaining({ entityId: user, decisionId: expect.stringMatching(/^score_read:/) }),
    ]);

    env = await outboxEnv({
      dataDir: mcp.dataDir,
      sandbox: mcp.sandbox,
      config: {
        automation: {
          max_attempts: 30,
          score_trigger: {
            case_rules: [{ event: 'score_read', min_score: 0.8, severity: 'medium', queue: 'Fraud_Tier_2' }],
          },
        },
      },
    });
    mcp.sandbox.segment.faults.inject({ status: 503 });
    mcp.sandbox.salesforce.faults.inject({ status: 503 });
    expect(await env.automation.worker.drain({ timeoutMs: 60_000 })).toBe(true);
    expect(await env.automation.worker.drain({ timeoutMs: 10_000 })).toBe(true);

    const effects = (await env.automation.store.list({ limit: 100 })).filter(
      (e) => e.entityKey === `score:${user}`,
    );
    expect(effects.map((e) => `${e.effect}:${e.state}`).sort()).toEqual([
      'case:done',
      'opportunities:done',
      'segment_score:done',
      'track:done',
    ]);
    expect(new Set(effects.map((e) => e.eventId)).size).toBe(1);
    const cases = mcp.sandbox.salesforce
      .records('Case')
      .filter((c) => c.Sift_User_Id__c === user && c.IsClosed === false);
    expect(cases).toHaveLength(1);
    expect(cases[0]).toMatchObject({ Priority: 'Medium', OwnerId: tier2.Id });
    const tracks = mcp.sandbox.segment
      .eventsFor(user)
      .filter((e) => e.type === 'track' && e.event === 'Sift Score Evaluated');
    expect(tracks).toHaveLength(1);
    expect(mcp.sandbox.segment.profile(user)).toMatchObject({ sift_score: 94 });
    // The effects read the score too, unobserved: nothing new for the trigger (no loop).
    expect(await env.automation.store.unrouted(10)).toHaveLength(0);
  });

  it('the scores the score sync reads feed the trigger too, once per user and score', async () => {
    mcp = await setup();
    const e = mcp;
    const sync = () =>
      runScoreSync(
        {
          sift: e.runtime.clients.sift,
          salesforce: e.runtime.clients.salesforce,
          state: e.runtime.store.syncState,
          config: e.config,
          logger: silentLogger,
        },
        {},
      );
    await sync();
    const scored = (await e.runtime.outbox.unrouted(100)).filter((ev) => ev.entityType === 'score');
    expect(scored.map((ev) => ev.entityId)).toContain('sandbox-high-risk');
    expect(new Set(scored.map((ev) => ev.entityId)).size).toBe(scored.length);
    await sync(); // unchanged scores: nothing new
    expect((await e.runtime.outbox.unrouted(100)).filter((ev) => ev.entityType === 'score')).toHaveLength(
      scored.length,
    );
  });

  it('flags every open opportunity of a big account in one effect, a share per claim, each written once', async () => {
    env = await outboxEnv({ config: { automation: { score_trigger: { effects: ['opportunities'] } } } });
    const user = 'sandbox-high-risk';
    const account = env.sandbox.salesforce.demo?.accounts[user];
    // With the demo org's two: 1102 open, more than one call of flag_opportunities flags.
    insertOpenOpportunities(env.sandbox.salesforce, account, 1100);
    env.sandbox.salesforce.clearJournal();
    await readScoreAndDrain(env, user);

    const [effect, ...others] = await env.automation.store.list({ limit: 100 });
    expect(others).toHaveLength(0);
    expect(effect).toMatchObject({ effect: 'opportunities', state: 'done', attempts: 0 });
    expect(effect?.result).toMatchObject({ flagged: 102, already_flagged: 1000, remaining: 0 });
    const open = env.sandbox.salesforce
      .records('Opportunity')
      .filter((o) => o.AccountId === account && o.IsClosed === false);
    expect(open).toHaveLength(1102);
    expect(open.every((o) => o.Fraud_Risk_Flag__c === true)).toBe(true);
    // 1000 then 102, in collections of ≤200: 6 updates, each opportunity in exactly one; one review Task.
    const patches = env.sandbox.salesforce.requests('PATCH', '/services/data/:v/composite/sobjects');
    expect(patches).toHaveLength(6);
    const written = patches.flatMap((p) =>
      (p.body as { records: { id: string }[] }).records.map((r) => r.id),
    );
    expect(new Set(written).size).toBe(written.length);
    expect(written).toHaveLength(1102);
    expect(env.sandbox.salesforce.requests('POST', '/services/data/:v/composite/sobjects')).toHaveLength(1);
  });

  it('an org that clears the flag fraudgate writes ends the big-account effect as a dead letter after a bounded number of shares', async () => {
    env = await outboxEnv({ config: { automation: { score_trigger: { effects: ['opportunities'] } } } });
    const { salesforce } = env.sandbox;
    const user = 'sandbox-high-risk';
    const account = env.sandbox.salesforce.demo?.accounts[user];
    insertOpenOpportunities(salesforce, account, 1100);
    clearWrittenFlags(salesforce);
    salesforce.clearJournal();
    await readScoreAndDrain(env, user);

    const [effect, ...others] = await env.automation.store.list({ limit: 100 });
    expect(others).toHaveLength(0);
    expect(effect).toMatchObject({ effect: 'opportunities', state: 'dead' });
    expect(effect?.lastError).toMatch(/^CONTINUATION_STALLED: share 2 left 102 still to do, 102 before it/);
    // Two shares of 1000, in collections of ≤200, and no more.
    expect(salesforce.requests('PATCH', '/services/data/:v/composite/sobjects')).toHaveLength(10);
    const dead = (await env.auditRecords()).filter((r) => r.event === 'dead_lettered');
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({
      tool: 'flag_opportunities',
      target: `outbox_effect:${effect?.id}`,
      outcome: { code: 'CONTINUATION_STALLED' },
    });
  });

  it('from_reads: false — reading a score stores nothing for the trigger', async () => {
    mcp = await setup({ config: { automation: { score_trigger: { from_reads: false } } } });
    expect((await mcp.callTool('get_sift_score', { user_id: 'sandbox-high-risk' })).error).toBeUndefined();
    expect(await mcp.runtime.outbox.unrouted(10)).toHaveLength(0);
  });
});
