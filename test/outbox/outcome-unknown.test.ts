/**
 * Effects whose tool is not idempotent run at most once by themselves. Every Segment message
 * becomes a `send_sift_event` effect, and Sift events have no idempotency key: when the outcome of
 * a send is unknown (a lost answer, a result that could not be stored) the effect becomes a dead
 * letter saying so instead of being sent again, while a failure that proves nothing reached Sift
 * (429, status 60) is retried and delivered once. Idempotent effects are retried as before. On
 * both engines, against the emulator's real faults.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runOutboxCommand } from '../../src/cli/outbox.ts';
import { ERROR_CODES, FraudgateError, StoreUnavailableError } from '../../src/errors.ts';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { isOutcomeUnknown, OUTCOME_UNKNOWN } from '../../src/store/outbox-store.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';
import type { DeepPartial } from '../helpers/setup.ts';
import type { Config } from '../../src/config.ts';
import {
  decisionBody,
  operatorConfigs,
  outboxEnv,
  sign,
  startSegmentIntake,
  type OutboxEnv,
} from './helpers.ts';

const SECRET = 'segment-shared-secret';

let env: OutboxEnv | undefined;
let intake: { url: string; close(): Promise<void> } | undefined;
let schema: string | undefined;
afterEach(async () => {
  await intake?.close();
  intake = undefined;
  await env?.close();
  env = undefined;
  if (schema) await dropSchema(schema);
  schema = undefined;
});

async function start(postgres: boolean, config: DeepPartial<Config> = {}) {
  if (postgres) schema = uniqueSchema();
  env = await outboxEnv({
    config: postgres
      ? { ...config, store: 'postgres', store_postgres: { schema, startup_timeout_ms: 2_000 } }
      : config,
    ...(postgres ? { secrets: { postgresUrl: PG_URL } } : {}),
  });
  intake = await startSegmentIntake(env, SECRET);
  return { env, url: intake.url };
}

const order = (messageId: string, userId: string) => ({
  version: 1,
  type: 'track',
  messageId,
  userId,
  event: 'Order Completed',
  properties: { order_id: `order-${messageId}`, total: '39.95', currency: 'usd' },
  timestamp: '2026-11-30T08:00:00.000Z',
});

const transactions = (e: OutboxEnv, messageId: string) =>
  e.sandbox.sift.events.filter(
    (ev) => ev.type === '$transaction' && ev.body.$transaction_id === `order-${messageId}`,
  );

const siftEffect = async (e: OutboxEnv) =>
  (await e.automation.store.list({ limit: 100 })).find((x) => x.tool === 'send_sift_event');

const ENGINES = [
  { name: 'SQLite', postgres: false, skip: false },
  { name: 'PostgreSQL', postgres: true, skip: !pgListening },
];

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`a Segment message's Sift event is sent at most once: ${engine.name}`, () => {
    it('a lost answer: one event in Sift, the effect a dead letter whose outcome is unknown, audited', async () => {
      const { env, url } = await start(engine.postgres);
      env.sandbox.sift.faults.inject({ method: 'POST', path: '/events', dropResponse: true });
      expect((await sendSegmentWebhook(url, order('lost-1', 'u-lost'), { secret: SECRET })).status).toBe(200);
      expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

      expect(transactions(env, 'lost-1')).toHaveLength(1);
      const effect = await siftEffect(env);
      expect(effect).toMatchObject({ state: 'dead', attempts: 1 });
      expect(effect && isOutcomeUnknown(effect)).toBe(true);
      expect(effect?.attemptedAt).toBeTypeOf('number');
      const dead = (await env.auditRecords()).find((r) => r.event === 'dead_lettered') as
        { tool?: string; target?: string; outcome?: { code?: string } } | undefined;
      expect(dead).toMatchObject({
        tool: 'send_sift_event',
        target: `outbox_effect:${effect?.id}`,
        outcome: { code: OUTCOME_UNKNOWN },
      });
    });

    it('the result cannot be stored after Sift accepted the event: the next lease does not send it again', async () => {
      // A short lease: the effect whose completion failed is leased again soon.
      const { env, url } = await start(engine.postgres, { automation: { lease_ms: 300 } });
      const store = env.automation.store;
      const complete = store.complete;
      let refused = 0;
      store.complete = async (id, owner, result, now) => {
        if (refused === 0 && (await store.get(id))?.tool === 'send_sift_event') {
          refused += 1;
          throw new StoreUnavailableError(new Error('terminating connection due to administrator command'));
        }
        return complete(id, owner, result, now);
      };
      expect((await sendSegmentWebhook(url, order('blip-1', 'u-blip'), { secret: SECRET })).status).toBe(200);
      expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

      expect(refused).toBe(1);
      expect(transactions(env, 'blip-1')).toHaveLength(1);
      const effect = await siftEffect(env);
      expect(effect?.state).toBe('dead');
      expect(effect?.lastError).toMatch(/^OUTCOME_UNKNOWN: .*never finished/);
    });

    it('429 and status 60 prove Sift processed nothing: retried, and delivered once', async () => {
      const { env, url } = await start(engine.postgres);
      const { sift } = env.sandbox;
      sift.faults.inject({ method: 'POST', path: '/events', status: 429, headers: { 'retry-after': '0' } });
      sift.faults.inject({
        method: 'POST',
        path: '/events',
        status: 400,
        body: { status: 60, error_message: 'Rate limited', time: 1_796_000_000 },
      });
      expect(
        (await sendSegmentWebhook(url, order('limited-1', 'u-limited'), { secret: SECRET })).status,
      ).toBe(200);
      expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

      expect(transactions(env, 'limited-1')).toHaveLength(1);
      expect(await siftEffect(env)).toMatchObject({ state: 'done', attempts: 2 });
      expect((await env.automation.store.stats()).dead).toBe(0);
    });
  });
}

describe('a Sift event whose answer fails our checks', () => {
  it('a 2xx Sift answered with a body we cannot read is an unknown outcome, not an ordinary dead letter', async () => {
    const { env, url } = await start(false);
    // Sift took the request and answered 200, but not with the envelope we check for.
    env.sandbox.sift.faults.inject({
      method: 'POST',
      path: '/events',
      status: 200,
      body: '<html>accepted</html>',
    });
    expect((await sendSegmentWebhook(url, order('odd-1', 'u-odd'), { secret: SECRET })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    const effect = await siftEffect(env);
    expect(effect).toMatchObject({ state: 'dead', attempts: 1 });
    expect(effect?.lastError).toMatch(/^OUTCOME_UNKNOWN: send_sift_event may have reached the upstream/);
    const dead = (await env.auditRecords()).find((r) => r.event === 'dead_lettered') as
      { outcome?: { code?: string } } | undefined;
    expect(dead?.outcome?.code).toBe(OUTCOME_UNKNOWN);
  });

  it('a refusal Sift answered (status 55, HTTP 400) proves nothing was recorded: an ordinary dead letter', async () => {
    const { env, url } = await start(false);
    env.sandbox.sift.faults.inject({
      method: 'POST',
      path: '/events',
      status: 400,
      body: { status: 55, error_message: 'Missing required field', time: 1_796_000_000 },
    });
    expect((await sendSegmentWebhook(url, order('refused-1', 'u-refused'), { secret: SECRET })).status).toBe(
      200,
    );
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    const effect = await siftEffect(env);
    expect(effect).toMatchObject({ state: 'dead', attempts: 1 });
    expect(effect && isOutcomeUnknown(effect)).toBe(false);
    expect(effect?.lastError).toMatch(/^UPSTREAM_ERROR: /);
  });
});

describe('an effect refused before it ran', () => {
  it('APPROVAL_PENDING without an approval to wait on releases a Sift event unsent, and it is delivered once', async () => {
    // A short lease: an effect left leased with its attempt mark would soon be taken for a lost send.
    const { env, url } = await start(false, { automation: { lease_ms: 300 } });
    const pipeline = env.automation.runtime.pipeline;
    const call = pipeline.call;
    let refused = 0;
    pipeline.call = async (tool, args, channel) => {
      if (tool === 'send_sift_event' && refused === 0) {
        refused += 1;
        return {
          ok: false,
          error: new FraudgateError(ERROR_CODES.APPROVAL_PENDING, 'waiting', { retryable: true }),
          callId: 'held',
        };
      }
      return call(tool, args, channel);
    };
    expect((await sendSegmentWebhook(url, order('held-1', 'u-held'), { secret: SECRET })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    expect(refused).toBe(1);
    expect(transactions(env, 'held-1')).toHaveLength(1);
    const effect = await siftEffect(env);
    expect(effect?.state).toBe('done');
    expect(effect && isOutcomeUnknown(effect)).toBe(false);
  });
});

describe('idempotent effects and the operator', () => {
  it('an idempotent effect whose answer was lost is retried as before and applied once', async () => {
    const { env } = await start(false, { automation: { rules: { watch: ['salesforce'] } } });
    const { sift, salesforce } = env.sandbox;
    salesforce.insert('Account', { Name: 'Lost answer', Sift_User_Id__c: 'u-idem' });
    // The first composite request reads the Account, the second writes it: that answer is lost.
    salesforce.faults.inject({ method: 'POST', path: '/composite', delayMs: 0 });
    salesforce.faults.inject({ method: 'POST', path: '/composite', dropResponse: true });
    const { time } = await sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: 'u-idem',
    });
    const body = decisionBody('u-idem', 'watch_user_payment_abuse', time);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);

    const [effect] = await env.automation.store.list({ limit: 10 });
    expect(effect).toMatchObject({ tool: 'sync_decision_to_salesforce', state: 'done', attempts: 1 });
    expect(effect?.attemptedAt).toBeUndefined();
    const [account] = salesforce.records('Account').filter((a) => a.Sift_User_Id__c === 'u-idem');
    expect(account?.Sift_Decision__c).toBeDefined();
    // The sync key found on the record after the lost answer: one Chatter post, not two.
    expect(salesforce.records('FeedItem').filter((f) => f.ParentId === account?.Id)).toHaveLength(1);
  });

  it('the CLI shows an effect whose outcome is unknown, and replaying it is a deliberate, audited act', async () => {
    const { env, url } = await start(false);
    env.sandbox.sift.faults.inject({ method: 'POST', path: '/events', dropResponse: true });
    expect((await sendSegmentWebhook(url, order('cli-1', 'u-cli'), { secret: SECRET })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const effect = await siftEffect(env);
    const id = String(effect?.id);

    const { loaded, asOps } = operatorConfigs(env);
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const printed = () => write.mock.calls.map((c) => String(c[0])).join('');
    try {
      expect(await runOutboxCommand(['list'], {}, loaded)).toBe(0);
      expect(printed()).toMatch(new RegExp(`${id}\\s+outcome unknown`));
      write.mockClear();
      expect(await runOutboxCommand(['show', id], {}, loaded)).toBe(0);
      expect(printed()).toMatch(/outcome:\s+unknown/);
      expect(printed()).toContain(`fraudgate outbox retry ${id}`);
      write.mockClear();
      expect(await runOutboxCommand(['retry', id], { reason: 'not in the Sift console' }, asOps)).toBe(0);
      expect(printed()).toMatch(/sent again/);
    } finally {
      write.mockRestore();
    }
    const requeued = (await env.auditRecords()).find((r) => r.event === 'requeued') as
      { principal: { id: string }; outcome?: { code?: string; message?: string } } | undefined;
    expect(requeued).toMatchObject({
      principal: { id: 'ops@example.com' },
      outcome: { code: OUTCOME_UNKNOWN, message: 'not in the Sift console' },
    });
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    expect(await env.automation.store.get(Number(id))).toMatchObject({ state: 'done' });
    // The operator chose to send it again: the one lost answer and the replay.
    expect(transactions(env, 'cli-1')).toHaveLength(2);
  });
});
