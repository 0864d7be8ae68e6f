/**
 * Segment → Sift (issue 9 item 1): `POST /webhooks/segment` signed as Segment's Webhooks
 * destination signs, mapped by the central mapping to `send_sift_event` effects, stored before the
 * 200, deduplicated by messageId, delivered by the outbox worker at most once under injected faults;
 * bad signatures and malformed messages refused with nothing stored.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.ts';
import { sendSegmentWebhook, segmentSignature } from '../../src/sandbox/segment-webhook-sender.ts';
import { createOutboxStore, isOutcomeUnknown, type OutboxStore } from '../../src/store/outbox-store.ts';
import { sqliteOutboxQueue } from '../../src/store/sqlite/outbox-queue.ts';
import type { SqlExecutor } from '../../src/store/sql.ts';
import { siftUserResolver } from '../../src/webhooks/segment-mapping.ts';
import { createSegmentWebhookHandler } from '../../src/webhooks/segment-webhook.ts';
import { outboxEnv, webhookRefusals, type OutboxEnv } from '../outbox/helpers.ts';
import { createRateLimiter } from '../../src/governance/rate-limit.ts';
import { createWebhookRefusals, type WebhookRefusals } from '../../src/webhooks/webhook-refusals.ts';
import type { DeepPartial } from '../helpers/setup.ts';
import type { Config } from '../../src/config.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';

const SECRET = 'segment-shared-secret';

let env: OutboxEnv | undefined;
let server: Server | undefined;
let schema: string | undefined;
afterEach(async () => {
  if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
  server = undefined;
  await env?.close();
  env = undefined;
  if (schema) await dropSchema(schema);
  schema = undefined;
});

async function start(
  options: {
    config?: DeepPartial<Config>;
    secret?: string | undefined;
    bodyLimitBytes?: number;
    /** The outbox the handler stores through (default: the webhook intake, as `serve --http` has it). */
    outbox?: (env: OutboxEnv) => Pick<OutboxStore, 'enqueueRoutedMany'>;
    /** The refusal budgets (default: the runtime's `rate_limits.refusals`). */
    refusals?: (env: OutboxEnv) => WebhookRefusals;
    /** On PostgreSQL (a schema of its own, dropped afterwards) instead of SQLite. */
    postgres?: boolean;
  } = {},
) {
  if (options.postgres) schema = uniqueSchema();
  env = await outboxEnv({
    config: options.postgres
      ? { ...options.config, store: 'postgres', store_postgres: { schema, startup_timeout_ms: 2_000 } }
      : (options.config ?? {}),
    ...(options.postgres ? { secrets: { postgresUrl: PG_URL } } : {}),
  });
  const automation = env.automation;
  const runtime = automation.runtime;
  const outbox = options.outbox?.(env) ?? env.intake;
  const handler = createSegmentWebhookHandler({
    store: (deliveries, also) => outbox.enqueueRoutedMany(deliveries, Date.now(), also),
    secret: 'secret' in options ? options.secret : SECRET,
    mapping: env.config.mapping,
    siftUsersFor: siftUserResolver(
      (ids) => runtime.identities.mappingsForSegmentUsers(ids),
      env.config.identity,
    ),
    audit: runtime.audit,
    logger: silentLogger,
    bodyLimitBytes: options.bodyLimitBytes ?? 64 * 1024,
    refusals: options.refusals?.(env) ?? webhookRefusals(automation.runtime),
    origin: runtime.segmentOrigin,
    onEnqueued: () => automation.worker.wake(),
  });
  // As src/transports/http.ts mounts it: a handler that throws is answered 500.
  server = createServer((req, res) => {
    handler(req, res).then(
      (handled) => {
        if (!handled) res.writeHead(404).end();
      },
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/segment`;
  return { env, url };
}

const order = (messageId: string, userId: string, extra: Record<string, unknown> = {}) => ({
  version: 1,
  type: 'track',
  messageId,
  userId,
  anonymousId: 'anon-1',
  event: 'Order Completed',
  properties: { order_id: `order-${messageId}`, total: '39.95', currency: 'usd', ...extra },
  context: { ip: '203.0.113.7' },
  timestamp: '2026-11-30T08:00:00.000Z',
});

const transactionsOf = (e: OutboxEnv, user: string) =>
  e.sandbox.sift.events.filter((ev) => ev.type === '$transaction' && ev.userId === user);

describe('POST /webhooks/segment', () => {
  it('a 3,000-message delivery commits in one transaction: every message, effect and receipt', async () => {
    let transactions = 0;
    const { env, url } = await start({
      bodyLimitBytes: 1024 * 1024,
      // The automation's outbox on its own database, counting the transactions begun on it.
      outbox: (e) => {
        const sql = e.automation.runtime.store.sql;
        const counting = new Proxy(sql, {
          get(target, key, receiver) {
            if (key === 'transaction')
              return <T>(fn: (tx: SqlExecutor) => Promise<T>) => {
                transactions += 1;
                return target.transaction(fn);
              };
            const value: unknown = Reflect.get(target, key, receiver);
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
        return createOutboxStore(counting, sqliteOutboxQueue);
      },
    });
    await env.automation.worker.stop();
    const batch = Array.from({ length: 3000 }, (_, i) => ({
      type: 'track',
      messageId: `bulk-${i}`,
      userId: 'sandbox-high-risk',
      event: 'Signed In',
    }));
    const delivery = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(delivery).toMatchObject({ status: 200, body: { accepted: 3000, duplicates: 0 } });
    expect(transactions).toBe(1);
    expect((await env.automation.store.stats()).pending).toBe(3000);
    const receipts = (await env.auditRecords()).filter((r) => r.event === 'webhook_accepted');
    expect(receipts).toHaveLength(3000);
  });

  it('a 4,000-message delivery commits on the intake thread: the event loop turns before it is stored', async () => {
    // What happens on the main thread while the delivery commits, in order.
    const turns: string[] = [];
    const { env, url } = await start({
      bodyLimitBytes: 1024 * 1024,
      // The webhook intake as `serve --http` has it; a timer set as the commit begins.
      outbox: (e) => ({
        enqueueRoutedMany(deliveries, now, also) {
          const committed = e.intake.enqueueRoutedMany(deliveries, now, also);
          setImmediate(() => turns.push('timer'));
          return committed.then((stored) => {
            turns.push('committed');
            return stored;
          });
        },
      }),
    });
    await env.automation.worker.stop();
    const batch = Array.from({ length: 4000 }, (_, i) => ({
      type: 'track',
      messageId: `loop-${i}`,
      userId: 'sandbox-high-risk',
      event: 'Signed In',
    }));
    const delivery = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(delivery).toMatchObject({ status: 200, body: { accepted: 4000, duplicates: 0 } });
    // A commit on the main thread (node:sqlite is synchronous) would hold the timer until it ended.
    expect(turns).toEqual(['timer', 'committed']);
    expect((await env.automation.store.stats()).pending).toBe(4000);
    const [effect] = await env.automation.store.list({ limit: 1 });
    expect((effect?.args.event as { user_id: string }).user_id).toBe('sandbox-high-risk');
    const receipts = (await env.auditRecords()).filter((r) => r.event === 'webhook_accepted');
    expect(receipts).toHaveLength(4000);
    // A redelivery stores nothing again: each message a duplicate, with its receipt.
    const again = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(again).toMatchObject({ status: 200, body: { accepted: 0, duplicates: 4000 } });
    expect((await env.automation.store.stats()).pending).toBe(4000);
  });

  it('a delivery of 1,000 skipped messages writes one record; a redelivery one more', async () => {
    const { env, url } = await start({ bodyLimitBytes: 1024 * 1024 });
    const batch = [
      ...Array.from({ length: 998 }, (_, i) => ({
        type: 'page',
        messageId: `page-${i}`,
        userId: 'sandbox-high-risk',
        properties: { path: '/x' },
      })),
      { ...order('skip-unmapped', 'not a sift id') },
      { ...order('skip-anonymous', 'x'), userId: null },
    ];
    const ignoredRecords = async () =>
      ((await env.auditRecords()) as unknown as { event: string; args_redacted: Record<string, unknown> }[])
        .filter((r) => r.event === 'webhook_ignored')
        .map((r) => r.args_redacted);
    const before = (await env.auditRecords()).length;
    const first = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(first).toMatchObject({ status: 200, body: { accepted: 0, duplicates: 0, ignored: 1000 } });
    expect((await env.auditRecords()).length - before).toBe(1);
    expect(await ignoredRecords()).toEqual([
      {
        ignored_messages: 1000,
        message_ids: batch.slice(0, 20).map((m) => m.messageId),
        reasons: {
          'page messages are not mapped': 998,
          'no Sift user is mapped to this Segment userId': 1,
          'anonymous (no userId)': 1,
        },
      },
    ]);
    const again = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(again).toMatchObject({ status: 200, body: { ignored: 1000 } });
    expect((await env.auditRecords()).length - before).toBe(2);
    expect(await env.automation.store.stats()).toMatchObject({ pending: 0, unrouted: 0 });
  });

  it('Order Completed → one $transaction in Sift with return_score; a redelivery is stored once', async () => {
    const { env, url } = await start();
    const receivedFrom = Date.now();
    const first = await sendSegmentWebhook(url, order('m-1', 'sandbox-high-risk'), { secret: SECRET });
    expect(first).toMatchObject({ status: 200, body: { accepted: 1, duplicates: 0 } });
    const receivedBy = Date.now();
    // A redelivery received later is still the same message.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const again = await sendSegmentWebhook(url, order('m-1', 'sandbox-high-risk'), { secret: SECRET });
    expect(again).toMatchObject({ status: 200, body: { accepted: 0, duplicates: 1 } });

    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const sent = transactionsOf(env, 'sandbox-high-risk');
    expect(sent).toHaveLength(1);
    expect(sent[0]?.body).toMatchObject({
      $transaction_id: 'order-m-1',
      $amount: 39_950_000,
      $currency_code: 'USD',
      $transaction_status: '$success',
      $ip: '203.0.113.7',
    });
    const effect = (await env.automation.store.list({ limit: 10 })).find((e) => e.tool === 'send_sift_event');
    expect(effect).toMatchObject({ tool: 'send_sift_event', state: 'done' });
    // Ordered by its receipt among the outbox's effects (at 0 it would jump every older decision's).
    expect(effect?.decisionTime).toBeGreaterThanOrEqual(receivedFrom);
    expect(effect?.decisionTime).toBeLessThanOrEqual(receivedBy);
    expect((effect?.result as { score: unknown }).score).not.toBeNull();
    const events = (await env.auditRecords()).map((r) => r.event);
    expect(events).toContain('webhook_accepted');
    expect(events).toContain('webhook_duplicate');
  });

  it('a Segment user mapped to a Sift user is sent as that Sift user; unmapped messages are ignored', async () => {
    const { env, url } = await start();
    await env.automation.runtime.identities.map({
      sift_user_id: 'sandbox-watch',
      segment_user_id: 'seg-watch-777',
      mapped_by: 'ops@example.com',
      mapped_at: new Date().toISOString(),
    });
    const batch = [
      order('m-2', 'seg-watch-777'),
      { type: 'page', messageId: 'm-3', userId: 'seg-watch-777', properties: { path: '/' } },
      { ...order('m-4', 'seg-watch-777'), event: 'Product Viewed' },
    ];
    const delivered = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(delivered).toMatchObject({ status: 200, body: { accepted: 1, ignored: 2 } });
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    expect(transactionsOf(env, 'sandbox-watch')).toHaveLength(1);
    expect(env.sandbox.sift.events.filter((e) => e.userId === 'seg-watch-777')).toHaveLength(0);
  });

  it('a delivery of 100 messages looks its users up in the identity map once, with the same results', async () => {
    const { env, url } = await start({
      config: {
        identity: {
          mappings: {
            'sift-config': 'seg-config',
            'sift-config-2': 'seg-config',
            'sift-config-3': 'seg-both',
          },
        },
      },
    });
    const identities = env.automation.runtime.identities;
    const mapped = (sift: string, segment: string) =>
      identities.map({ sift_user_id: sift, segment_user_id: segment, mapped_by: 'ops', mapped_at: 't' });
    for (let k = 0; k < 8; k++) await mapped(`sift-${k}`, `seg-${k}`);
    // Two Sift users on one Segment user: the first by Sift id, as before.
    await mapped('sift-dup-b', 'seg-dup');
    await mapped('sift-dup-a', 'seg-dup');
    // A stored mapping wins over the config's for the same Segment user.
    await mapped('sift-stored', 'seg-both');
    await mapped('unrelated', 'seg-elsewhere');
    const users = [
      ...Array.from({ length: 8 }, (_, k) => [`seg-${k}`, `sift-${k}`]),
      ['seg-dup', 'sift-dup-a'],
      ['seg-config', 'sift-config'],
      ['seg-both', 'sift-stored'],
      ['sandbox-high-risk', 'sandbox-high-risk'], // identity.segment_user_id: same
      ['not a sift id', undefined], // same, but Sift refuses the id: ignored
    ] as const;
    const batch = Array.from({ length: 100 }, (_, i) => order(`bulk-${i}`, users[i % users.length]![0]));

    const sql = env.automation.runtime.store.sql;
    const query = sql.query.bind(sql);
    let mappingQueries = 0;
    sql.query = ((text: string, ...rest: unknown[]) => {
      if (text.includes('identity_mappings')) mappingQueries += 1;
      return (query as (...args: unknown[]) => unknown)(text, ...rest);
    }) as typeof sql.query;
    const delivered = await sendSegmentWebhook(url, batch, { secret: SECRET });
    sql.query = query;

    const unmapped = batch.filter((m) => m.userId === 'not a sift id').length;
    expect(delivered).toMatchObject({
      status: 200,
      body: { accepted: 100 - unmapped, duplicates: 0, ignored: unmapped },
    });
    expect(mappingQueries).toBe(1);
    const sentAs = new Map(
      (await env.automation.store.list({ limit: 200 })).map((e) => [
        e.entityKey,
        (e.args.event as { user_id: string }).user_id,
      ]),
    );
    for (const [i, message] of batch.entries()) {
      const expected = users[i % users.length]![1];
      if (expected) expect(sentAs.get(`segment_message:${message.messageId}`), message.userId).toBe(expected);
    }
    expect(sentAs.size).toBe(100 - unmapped);
  });

  it('bad signatures and malformed messages are refused with nothing stored', async () => {
    const { env, url } = await start();
    const body = JSON.stringify(order('m-5', 'sandbox-high-risk'));
    const post = (payload: string, headers: Record<string, string>) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: payload,
      });

    expect((await post(body, {})).status).toBe(401);
    expect((await post(body, { 'x-signature': segmentSignature(body, 'wrong-secret') })).status).toBe(401);
    expect((await post(body, { 'x-signature': 'not-hex' })).status).toBe(401);
    const signed = (payload: string) => ({ 'x-signature': segmentSignature(payload, SECRET) });
    const malformed = [
      '{"type":"track",',
      JSON.stringify({ type: 'track', userId: 'u', event: 'Order Completed' }), // no messageId
      JSON.stringify({ type: 'track', messageId: 'm-6', userId: 'sandbox-high-risk' }), // no event
      // Classic: one message, so its refusal is the delivery's.
      JSON.stringify(order('m-7', 'sandbox-high-risk', { total: 'lots', revenue: undefined })),
      JSON.stringify([{ type: 'nonsense', messageId: 'm-9' }]),
    ];
    for (const payload of malformed) {
      const res = await post(payload, signed(payload));
      expect(res.status, payload).toBe(400);
    }
    const stats = await env.automation.store.stats();
    expect(stats.unrouted + stats.pending + stats.done).toBe(0);
    expect(await env.automation.store.list({ limit: 10 })).toHaveLength(0);
    expect((await env.auditRecords()).filter((r) => r.event === 'webhook_rejected')).toHaveLength(
      3 + malformed.length,
    );
  });

  for (const engine of [
    { name: 'SQLite', postgres: false, skip: false },
    { name: 'PostgreSQL', postgres: true, skip: !pgListening },
  ])
    it.skipIf(engine.skip)(
      `a batch's malformed message is refused alone: the others are stored, the refusal counted (${engine.name})`,
      async () => {
        const { env, url } = await start({ postgres: engine.postgres });
        await env.automation.worker.stop();
        // A value that must not reach the record: it is the refused field's input.
        const badTotal = 'jane.doe@example.com';
        const batch = [
          order('p-1', 'sandbox-high-risk'),
          order('p-2', 'sandbox-high-risk', { total: badTotal }),
          order('p-3', 'sandbox-low-risk'),
        ];
        const refusedRecords = async () =>
          (
            (await env.auditRecords()) as unknown as {
              event: string;
              outcome?: { code?: string; message?: string };
              args_redacted?: Record<string, unknown>;
            }[]
          ).filter((r) => r.event === 'webhook_ignored' && r.outcome?.code === 'REFUSED');
        const first = await sendSegmentWebhook(url, batch, { secret: SECRET });
        expect(first).toMatchObject({ status: 200, body: { accepted: 2, duplicates: 0, refused: 1 } });
        const stored = async () =>
          (await env.automation.store.list({ limit: 10 })).map((e) => e.entityKey).sort();
        expect(await stored()).toEqual(['segment_message:p-1', 'segment_message:p-3']);
        const [record, ...others] = await refusedRecords();
        expect(others).toHaveLength(0);
        expect(record?.args_redacted).toEqual({
          refused_messages: 1,
          message_ids: ['p-2'],
          reasons: { 'properties.total must be a positive decimal amount': 1 },
        });
        expect(record?.outcome?.message).toContain('destination mapping');
        expect(JSON.stringify(await env.auditRecords())).not.toContain(badTotal);

        // A redelivery: the two are duplicates, the malformed one is refused (and counted) again.
        const again = await sendSegmentWebhook(url, batch, { secret: SECRET });
        expect(again).toMatchObject({ status: 200, body: { accepted: 0, duplicates: 2, refused: 1 } });
        expect(await stored()).toEqual(['segment_message:p-1', 'segment_message:p-3']);
        expect(await refusedRecords()).toHaveLength(2);

        // A message with no usable messageId is named by its position; one acknowledged (a page
        // view, ignored) beside it is enough for the 200.
        const noId = await sendSegmentWebhook(
          url,
          [
            { type: 'page', messageId: 'p-4', userId: 'sandbox-high-risk' },
            { type: 'track', userId: 'sandbox-high-risk', event: 'Order Completed' },
          ],
          { secret: SECRET },
        );
        expect(noId).toMatchObject({ status: 200, body: { accepted: 0, ignored: 1, refused: 1 } });
        const latest = (await refusedRecords()).at(-1);
        expect(latest?.args_redacted).toMatchObject({ refused_messages: 1, message_ids: ['[1]'] });
        expect(Object.keys(latest?.args_redacted?.reasons as object)).toEqual([
          expect.stringMatching(/^messageId: /),
        ]);
        expect(await env.automation.store.stats()).toMatchObject({ pending: 2 });
      },
    );

  it('a batch whose every message is malformed is refused (400) with the reasons, nothing stored', async () => {
    const { env, url } = await start();
    const badTotal = 'jane.doe@example.com';
    const batch = [
      order('q-1', 'sandbox-high-risk', { total: badTotal }),
      order('q-2', 'sandbox-low-risk', { total: badTotal }),
      { type: 'nonsense', messageId: 'q-3' },
    ];
    const res = await sendSegmentWebhook(url, batch, { secret: SECRET });
    expect(res.status).toBe(400);
    const error = String(res.body.error);
    expect(error).toContain('all 3 messages are malformed');
    expect(error).toContain('properties.total must be a positive decimal amount (2, first [0])');
    expect(error).toMatch(/type: .*\(1, first \[2\]\)/);
    expect(error).not.toContain(badTotal);
    expect(await env.automation.store.list({ limit: 10 })).toHaveLength(0);
    const records = await env.auditRecords();
    expect(records.filter((r) => r.event === 'webhook_rejected')).toHaveLength(1);
    expect(records.filter((r) => r.event === 'webhook_ignored')).toHaveLength(0);
    expect(JSON.stringify(records)).not.toContain(badTotal);
  });

  it('a Classic delivery of one malformed message is refused (400) naming the field', async () => {
    const { env, url } = await start();
    const res = await sendSegmentWebhook(url, order('c-1', 'sandbox-high-risk', { total: 'lots' }), {
      secret: SECRET,
    });
    expect(res).toMatchObject({
      status: 400,
      body: { error: 'properties.total must be a positive decimal amount' },
    });
    expect(await env.automation.store.list({ limit: 10 })).toHaveLength(0);
  });

  it('a transaction id Sift refuses is refused naming the field it came from', async () => {
    const { env, url } = await start();
    const refusal = async (message: Record<string, unknown>) => {
      const res = await sendSegmentWebhook(url, message, { secret: SECRET });
      expect(res.status).toBe(400);
      return (res.body as { error: string }).error;
    };
    const fromOrder = await refusal(order('m-10', 'sandbox-high-risk', { order_id: 'order #10' }));
    expect(fromOrder).toMatch(/^properties\.order_id /);
    const fromCheckout = await refusal(
      order('m-11', 'sandbox-high-risk', { order_id: undefined, checkout_id: 'checkout #11' }),
    );
    expect(fromCheckout).toMatch(/^properties\.checkout_id /);
    expect(fromCheckout).not.toContain('order_id');
    const fromMessageId = await refusal(order('m 12', 'sandbox-high-risk', { order_id: undefined }));
    expect(fromMessageId).toMatch(/^messageId /);
    expect(fromMessageId).not.toContain('order_id');
    expect(await env.automation.store.list({ limit: 10 })).toHaveLength(0);
  });

  it('a batch signed over its first event alone is refused: one signed message cannot carry forged ones', async () => {
    const { env, url } = await start();
    const post = (body: string, headers: Record<string, string>) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    // The attacker holds one genuinely signed message (Classic signs the body, Actions the event)…
    const genuine = order('m-genuine', 'sandbox-low-risk');
    const signatureOfGenuine = segmentSignature(JSON.stringify(genuine), SECRET);
    expect((await post(JSON.stringify(genuine), { 'x-signature': signatureOfGenuine })).status).toBe(200);
    // …and puts forged messages after it, under its signature.
    const forged = [genuine, order('m-forged-1', 'sandbox-high-risk'), order('m-forged-2', 'sandbox-watch')];
    const attack = await post(JSON.stringify(forged), { 'x-signature': signatureOfGenuine });
    expect(attack.status).toBe(401);
    const { error } = (await attack.json()) as { error: string };
    expect(error).toContain('only the first event');
    expect(error).toContain('X-Segment-Signature');
    expect(error).toContain('useSegmentSignatureHeader');
    // The same signature sent as the whole-body header is no better.
    expect((await post(JSON.stringify(forged), { 'x-segment-signature': signatureOfGenuine })).status).toBe(
      401,
    );
    // Segment's own legacy batched signing is refused the same way, saying what to change in Segment.
    const legacy = await sendSegmentWebhook(url, forged.slice(1), { secret: SECRET, signing: 'first_event' });
    expect(legacy.status).toBe(401);
    expect(String(legacy.body.error)).toContain('only the first event');

    const stored = (await env.automation.store.list({ limit: 10 })).map((e) => e.args);
    expect(JSON.stringify(stored)).not.toContain('m-forged');
    const rejected = (await env.auditRecords()).filter((r) => r.event === 'webhook_rejected') as {
      outcome?: { message?: string };
    }[];
    expect(rejected.filter((r) => r.outcome?.message?.includes('only the first event'))).toHaveLength(2);
  });

  it('batches signed whole (X-Segment-Signature), and a batch of one signed over its event, are accepted', async () => {
    const { url } = await start();
    const batch = [order('m-w1', 'sandbox-high-risk'), order('m-w2', 'sandbox-low-risk')];
    expect(await sendSegmentWebhook(url, batch, { secret: SECRET })).toMatchObject({
      status: 200,
      body: { accepted: 2 },
    });
    const one = [order('m-one', 'sandbox-high-risk')];
    expect(await sendSegmentWebhook(url, one, { secret: SECRET, signing: 'first_event' })).toMatchObject({
      status: 200,
      body: { accepted: 1 },
    });
    // The whole-body header decides when both are sent: a wrong one is not rescued by X-Signature.
    const body = JSON.stringify([order('m-both', 'sandbox-high-risk')]);
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-signature': segmentSignature(body, SECRET),
        'x-segment-signature': segmentSignature(body, 'wrong-secret'),
      },
      body,
    });
    expect(res.status).toBe(401);
  });

  it('an unsigned deeply nested body is refused 401 and audited', async () => {
    const { env, url } = await start({ bodyLimitBytes: 1024 * 1024 });
    // Parses, but nested too deep to re-serialize for the lenient signature variants.
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-signature': segmentSignature(deep, 'wrong-secret') },
      body: deep,
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: 'bad signature' });
    const rejected = (await env.auditRecords()).filter((r) => r.event === 'webhook_rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ outcome: { code: '401', message: 'bad signature' } });
  });

  it('X-Segment-Signature is checked over the raw bytes alone; X-Signature keeps its lenient variants', async () => {
    const { env, url } = await start();
    // A body that is not its own re-serialization, signed over the re-serialization.
    const message = order('m-pretty', 'sandbox-high-risk');
    const pretty = JSON.stringify(message, null, 2);
    const overReserialized = segmentSignature(JSON.stringify(message), SECRET);
    const post = (headers: Record<string, string>) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: pretty,
      });
    // Actions signs exactly the body it sends under the whole-body header: nothing else matches.
    const whole = await post({ 'x-segment-signature': overReserialized });
    expect(whole.status).toBe(401);
    expect(await whole.json()).toEqual({ error: 'bad signature' });
    expect(await env.automation.store.list({ limit: 10 })).toHaveLength(0);
    // Classic signs JSON.stringify(body): under X-Signature the same signature is accepted.
    expect((await post({ 'x-signature': overReserialized })).status).toBe(200);
  });

  it('a network past its refusal budget is refused 429 before a large body is parsed; a small legacy-signed or raw-signed delivery still passes', async () => {
    const BUDGET = 2;
    // A clock that stands still: no token comes back during the test.
    const { env, url } = await start({
      bodyLimitBytes: 1024 * 1024,
      refusals: (e) =>
        createWebhookRefusals({
          audit: e.automation.runtime.audit,
          rateLimiter: createRateLimiter(() => 0),
          bucket: { capacity: BUDGET, per_minute: 1 },
          redactor: e.automation.runtime.redactor,
          now: () => new Date(0),
        }),
    });
    const post = (body: string, headers: Record<string, string>) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const forged = JSON.stringify(order('m-forged', 'sandbox-high-risk'));
    const bad = { 'x-signature': segmentSignature(forged, 'wrong-secret') };
    // Within the budget, and the first refusal past it (counted), are checked in full.
    for (let i = 0; i <= BUDGET; i += 1) expect((await post(forged, bad)).status).toBe(401);

    // Now known spent: a large, deeply nested body gets the budget's refusal, not a parse…
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    const spent = await post(deep, { 'x-signature': segmentSignature(deep, 'wrong-secret') });
    expect(spent.status).toBe(429);
    expect(Number(spent.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(String(((await spent.json()) as { error: string }).error)).toContain('X-Segment-Signature');
    // …but a small batch of one signed over its event (Segment's legacy signing) is still checked:
    // Segment sends from shared addresses, so strangers may have spent this budget.
    const one = [order('m-first-event', 'sandbox-high-risk')];
    const firstEvent = await post(JSON.stringify(one), {
      'x-signature': segmentSignature(JSON.stringify(one[0]), SECRET),
    });
    expect(firstEvent.status).toBe(200);
    // A delivery signed over its raw bytes is never held back.
    const genuine = JSON.stringify(order('m-genuine-raw', 'sandbox-high-risk'));
    expect((await post(genuine, { 'x-signature': segmentSignature(genuine, SECRET) })).status).toBe(200);

    const stored = (await env.automation.store.list({ limit: 10 })).map((e) => JSON.stringify(e.args));
    expect(stored.join()).toContain('m-first-event');
    expect((await env.auditRecords()).filter((r) => r.event === 'webhook_rejected')).toHaveLength(BUDGET);
  });

  it('without SEGMENT_WEBHOOK_SECRET every delivery is refused (fail closed)', async () => {
    const { url } = await start({ secret: undefined });
    const res = await sendSegmentWebhook(url, order('m-10', 'sandbox-high-risk'), { secret: SECRET });
    expect(res.status).toBe(401);
    expect(String(res.body.error)).toContain('SEGMENT_WEBHOOK_SECRET');
  });

  it('Sift failing (5xx, 429, resets) sends no message twice: 429s are retried, the rest left to an operator', async () => {
    const { env, url } = await start({ config: { automation: { max_attempts: 20 } } });
    for (let i = 0; i < 20; i += 1) {
      const res = await sendSegmentWebhook(url, order(`f-${i}`, `fault-user-${i % 4}`), { secret: SECRET });
      expect(res.status).toBe(200);
    }
    for (const fault of [
      { status: 500 },
      { status: 503 },
      { status: 429, headers: { 'retry-after': '0' } },
      { reset: true },
    ])
      for (let i = 0; i < 3; i += 1)
        env.sandbox.sift.faults.inject({ method: 'POST', path: '/events', ...fault });
    expect(await env.automation.worker.drain({ timeoutMs: 60_000 })).toBe(true);
    const sent = env.sandbox.sift.events.filter((e) => e.type === '$transaction');
    expect(new Set(sent.map((e) => e.body.$transaction_id)).size).toBe(sent.length);
    const effects = (await env.automation.store.list({ limit: 100 })).filter(
      (e) => e.tool === 'send_sift_event',
    );
    expect(effects).toHaveLength(20);
    // A 5xx or a reset may come after Sift recorded the event: never resent by itself.
    expect(effects.filter(isOutcomeUnknown)).toHaveLength(9);
    // A 429 means Sift processed nothing: the 3 were retried and delivered, once each.
    const done = effects.filter((e) => e.state === 'done');
    expect(done).toHaveLength(11);
    expect(done.reduce((n, e) => n + e.attempts, 0)).toBe(3);
    expect(sent).toHaveLength(11);
  });
});
