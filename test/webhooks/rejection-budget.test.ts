/**
 * Rejected webhooks cannot grow the audit ledger at will: the endpoints are reachable by anyone, so
 * each client network (an IPv4 address or an IPv6 /64, as src/auth/client-address.ts names the
 * client, here through a trusted proxy's X-Forwarded-For) has a refusal budget, and each endpoint a
 * ceiling over all of them. Within them every rejection gets its own `webhook_rejected` record;
 * past them rejections are answered as before but only counted, into one `refusals_counted`
 * record; once a network is known past its budget, a large body whose signature does not sign its
 * raw bytes is refused 429 without the Segment endpoint's costlier lenient checks, while a small one
 * is still checked in full: Segment's addresses are shared, so a stranger can spend their budget, and
 * its genuine legacy-signed deliveries must still get through. Another address keeps its own budget,
 * a valid delivery is never held back, and the ledger holds the address only masked, IPv6 too. On
 * both store engines (the ledger is the store's).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomInt } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import type { BucketConfig } from '../../src/config.ts';
import type { AuditRecord } from '../../src/governance/audit.ts';
import { createRateLimiter } from '../../src/governance/rate-limit.ts';
import { silentLogger } from '../../src/logger.ts';
import { segmentSignature } from '../../src/sandbox/segment-webhook-sender.ts';
import { siftUserResolver } from '../../src/webhooks/segment-mapping.ts';
import { createSegmentWebhookHandler } from '../../src/webhooks/segment-webhook.ts';
import { createWebhookRefusals, type WebhookRefusals } from '../../src/webhooks/webhook-refusals.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { outboxEnv, type OutboxEnv } from '../outbox/helpers.ts';
import { listening } from '../helpers/services.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';

const SECRET = 'segment-shared-secret';
const FLOODER = '198.51.100.7';
const OTHER = '198.51.100.8';
const BUDGET = 3;
const REDIS_URL = 'redis://127.0.0.1:6379';
const redisUp = await listening(6379);

let env: OutboxEnv | undefined;
let server: Server | undefined;
let schema: string | undefined;
/** The refusal budgets' clock (ms): it stands still unless a test moves it. */
let clock = 0;
afterEach(async () => {
  clock = 0;
  if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
  server = undefined;
  await env?.close();
  env = undefined;
  if (schema) await dropSchema(schema);
  schema = undefined;
});

/**
 * `listen` 127.0.0.1: the requests come as from a reverse proxy naming the client in
 * X-Forwarded-For; `::1`: no proxy, the client is the socket's own (IPv6 loopback) address.
 */
async function start(
  postgres: boolean,
  options: { ceiling?: BucketConfig; listen?: '127.0.0.1' | '::1'; redis?: boolean } = {},
) {
  const listen = options.listen ?? '127.0.0.1';
  if (postgres) schema = uniqueSchema();
  const secrets = {
    ...(postgres ? { postgresUrl: PG_URL } : {}),
    ...(options.redis ? { redisUrl: REDIS_URL } : {}),
  };
  env = await outboxEnv({
    config: {
      ...(postgres
        ? { store: 'postgres' as const, store_postgres: { schema, startup_timeout_ms: 2_000 } }
        : {}),
      ...(options.redis ? { rate_limits: { store: 'redis' as const } } : {}),
    },
    secrets,
  });
  const { automation, config } = env;
  // A clock that stands still unless the test moves it: no token comes back by itself, whatever
  // the test's speed. With `redis`, the runtime's own limiter, as `serve --http` wires it
  // (refilling one token a minute).
  const refusals: WebhookRefusals = createWebhookRefusals({
    audit: automation.runtime.audit,
    rateLimiter: options.redis ? automation.runtime.rateLimiter : createRateLimiter(() => clock),
    bucket: { capacity: BUDGET, per_minute: 1 },
    ...(options.ceiling ? { ceiling: options.ceiling } : {}),
    redactor: automation.runtime.redactor,
    now: () => new Date(clock),
  });
  const handler = createSegmentWebhookHandler({
    store: (deliveries, also) => automation.store.enqueueRoutedMany(deliveries, Date.now(), also),
    secret: SECRET,
    mapping: config.mapping,
    siftUsersFor: siftUserResolver(
      (ids) => automation.runtime.identities.mappingsForSegmentUsers(ids),
      config.identity,
    ),
    audit: automation.runtime.audit,
    logger: silentLogger,
    bodyLimitBytes: 1024 * 1024,
    refusals,
    origin: automation.runtime.segmentOrigin,
    ...(listen === '127.0.0.1' ? { trustedProxies: ['127.0.0.1'] } : {}),
  });
  server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, listen, resolve));
  const host = listen === '::1' ? '[::1]' : listen;
  const url = `http://${host}:${(server.address() as AddressInfo).port}/webhooks/segment`;
  const send = (from: string, body: string, signature: string) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': from, 'x-signature': signature },
      body,
    });
  const post = async (from: string, body: string, signature: string) => {
    const res = await send(from, body, signature);
    await res.body?.cancel();
    return res.status;
  };
  const records = () => storedAuditRecords(config, automation.runtime.audit, secrets);
  return { env, refusals, send, post, records, maskIp: automation.runtime.redactor.maskIp };
}

/** A Segment track message; `padding` characters of a note make it as large as a test needs. */
const message = (messageId: string, padding = 0) =>
  JSON.stringify({
    type: 'track',
    messageId,
    userId: 'sandbox-high-risk',
    event: 'Order Completed',
    properties: {
      order_id: `order-${messageId}`,
      total: 10,
      currency: 'USD',
      ...(padding > 0 ? { note: 'x'.repeat(padding) } : {}),
    },
    timestamp: '2026-11-30T08:00:00.000Z',
  });

const rejectedBy = (records: AuditRecord[], target: string | undefined) =>
  records.filter((r) => r.event === 'webhook_rejected' && r.target === target);

for (const engine of ['SQLite', 'PostgreSQL'] as const) {
  describe.skipIf(engine === 'PostgreSQL' && !pgListening)(`webhook rejections (${engine})`, () => {
    it('past the budget one address gets counted, not recorded; another address and valid deliveries are unaffected', async () => {
      const { refusals, post, records } = await start(engine === 'PostgreSQL');
      const forged = message('forged');
      const bad = segmentSignature(forged, 'not-the-secret');
      for (let i = 0; i < 10; i += 1) expect(await post(FLOODER, forged, bad)).toBe(401);
      for (let i = 0; i < 2; i += 1) expect(await post(OTHER, forged, bad)).toBe(401);
      const genuine = message('genuine');
      expect(await post(FLOODER, genuine, segmentSignature(genuine, SECRET))).toBe(200);

      const before = await records();
      const rejected = before.filter((r) => r.event === 'webhook_rejected');
      const flooderTarget = rejected[0]?.target;
      expect(flooderTarget).toMatch(/^client:/);
      // Masked like every IP in the ledger, yet one address is one target.
      expect(JSON.stringify(before)).not.toContain(FLOODER);
      expect(rejectedBy(before, flooderTarget)).toHaveLength(BUDGET);
      const others = rejected.filter((r) => r.target !== flooderTarget);
      expect(others).toHaveLength(2);
      expect(new Set(others.map((r) => r.target)).size).toBe(1);
      expect(before.filter((r) => r.event === 'webhook_accepted')).toHaveLength(1);
      expect(before.filter((r) => r.event === 'refusals_counted')).toHaveLength(0);

      await refusals.flush();
      const counted = (await records()).filter((r) => r.event === 'refusals_counted');
      expect(counted).toHaveLength(1);
      expect(counted[0]).toMatchObject({
        target: flooderTarget,
        tool: 'segment_webhook',
        principal: { id: 'automation:segment-webhook' },
        refusals: { count: 10 - BUDGET, by_event: { webhook_rejected: 10 - BUDGET } },
      });
    });

    it('a network past its budget (Segment shares addresses) still gets small legacy-signed deliveries through; large bodies get a cheap 429', async () => {
      const { refusals, send, post, records } = await start(engine === 'PostgreSQL');
      const forged = message('forged-shared');
      for (let i = 0; i < BUDGET + 3; i += 1)
        expect(await post(FLOODER, forged, segmentSignature(forged, 'not-the-secret'))).toBe(401);

      // Segment's legacy batched Actions signing: a batch of one, X-Signature over its event…
      const event = message('genuine-legacy');
      expect(await post(FLOODER, `[${event}]`, segmentSignature(event, SECRET))).toBe(200);
      // …and Classic, signed over the re-serialized body (here sent pretty-printed).
      const classic = JSON.parse(message('genuine-classic')) as object;
      const pretty = JSON.stringify(classic, null, 2);
      expect(await post(FLOODER, pretty, segmentSignature(JSON.stringify(classic), SECRET))).toBe(200);

      // A body over 64 KiB from the spent network is refused before any parse, with Retry-After…
      const large = `[${message('forged-large-1', 70 * 1024)},${message('forged-large-2')}]`;
      const bad = segmentSignature(large, 'not-the-secret');
      const spent = await send(FLOODER, large, bad);
      expect(spent.status).toBe(429);
      expect(Number(spent.headers.get('retry-after'))).toBe(60);
      await spent.body?.cancel();
      // …while from another network it is checked in full.
      expect(await post(OTHER, large, bad)).toBe(401);
      // The 429s do not move the window: it ends when the budget has a token again.
      clock = 30_000;
      const later = await send(FLOODER, large, bad);
      expect(later.status).toBe(429);
      expect(Number(later.headers.get('retry-after'))).toBe(30);
      await later.body?.cancel();
      clock = 60_000;
      expect(await post(FLOODER, large, bad)).toBe(401);

      const stored = await records();
      expect(stored.filter((r) => r.event === 'webhook_accepted')).toHaveLength(2);
      const flooderTarget = stored.find((r) => r.event === 'webhook_rejected')?.target;
      // Within the budget, and the one that came back at 60 s: recorded; the rest counted.
      expect(rejectedBy(stored, flooderTarget)).toHaveLength(BUDGET + 1);
      await refusals.flush();
      const counted = (await records()).filter(
        (r) => r.event === 'refusals_counted' && r.target === flooderTarget,
      );
      expect(counted.reduce((n, r) => n + Number(r.refusals?.count ?? 0), 0)).toBe(3 + 2);
    });

    it('IPv6 clients are masked in the ledger as the redactor masks every IP, also from ::1 itself', async () => {
      const { post, records, maskIp } = await start(engine === 'PostgreSQL', { listen: '::1' });
      const forged = message('forged-v6');
      const bad = segmentSignature(forged, 'not-the-secret');
      // No trusted proxy: the forwarded header is the client's own claim, and ignored.
      expect(await post('2001:db8:1:2::7', forged, bad)).toBe(401);
      const stored = await records();
      expect(rejectedBy(stored, `client:${maskIp('::1')}`)).toHaveLength(1);
      expect(JSON.stringify(stored)).not.toContain('client:::1');
    });

    it('IPv6 clients named by a trusted proxy are masked, and each /64 is one budget', async () => {
      const { refusals, post, records, maskIp } = await start(engine === 'PostgreSQL');
      const forged = message('forged-64');
      const bad = segmentSignature(forged, 'not-the-secret');
      const sameNetwork = [1, 2, 3, 4, 5, 6].map((n) => `2001:db8:1:2::${n}`);
      for (const address of sameNetwork) expect(await post(address, forged, bad)).toBe(401);
      expect(await post('2001:db8:1:3::7', forged, bad)).toBe(401);
      expect(await post('fe80::1', forged, bad)).toBe(401);

      const before = await records();
      const text = JSON.stringify(before);
      for (const raw of [...sameNetwork, '2001:db8:1:3::7', 'fe80::1'])
        expect(text).not.toContain(`client:${raw}`);
      for (const address of sameNetwork.slice(0, BUDGET))
        expect(rejectedBy(before, `client:${maskIp(address)}`)).toHaveLength(1);
      expect(rejectedBy(before, `client:${maskIp('2001:db8:1:3::7')}`)).toHaveLength(1);
      expect(rejectedBy(before, `client:${maskIp('fe80::1')}`)).toHaveLength(1);
      expect(before.filter((r) => r.event === 'webhook_rejected')).toHaveLength(BUDGET + 2);

      await refusals.flush();
      const counted = (await records()).filter((r) => r.event === 'refusals_counted');
      expect(counted).toHaveLength(1);
      expect(counted[0]).toMatchObject({
        target: `client:${maskIp('2001:db8:1:2::')}/64`,
        refusals: { count: sameNetwork.length - BUDGET },
      });
    });

    it('past the endpoint ceiling no set of addresses gets records of its own: they are counted for the endpoint', async () => {
      const CEILING = 5;
      const { refusals, post, records } = await start(engine === 'PostgreSQL', {
        ceiling: { capacity: CEILING, per_minute: 1 },
      });
      const forged = message('forged-many');
      const bad = segmentSignature(forged, 'not-the-secret');
      const senders = ['198.51.100.21', '198.51.100.22', '198.51.100.23', '198.51.100.24'];
      // Each within its own budget; the last one also past it (its summary would be a record too).
      for (const address of senders)
        for (let i = 0; i < BUDGET; i += 1) expect(await post(address, forged, bad)).toBe(401);
      expect(await post(senders[3]!, forged, bad)).toBe(401);
      const total = senders.length * BUDGET + 1;

      expect((await records()).filter((r) => r.event === 'webhook_rejected')).toHaveLength(CEILING);
      await refusals.flush();
      const counted = (await records()).filter((r) => r.event === 'refusals_counted');
      expect(counted).toHaveLength(1);
      expect(counted[0]).toMatchObject({
        target: 'endpoint:segment_webhook',
        tool: 'segment_webhook',
        refusals: { count: total - CEILING, by_event: { webhook_rejected: total - CEILING } },
      });
    });
  });
}

describe.skipIf(!redisUp)('webhook rejections in the shared rate-limit store (Redis)', () => {
  it('Redis holds no client address: the buckets are named by keyed hashes, and still limit', async () => {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    try {
      // Addresses no other test run uses (198.18.0.0/15 is for benchmarks; 2001:db8::/32 for docs).
      const v4 = `198.18.${randomInt(256)}.${randomInt(1, 255)}`;
      const v6Network = `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}`;
      const keysBefore = new Set(await redis.keys('fraudgate:ratelimit:*'));
      const { post, records } = await start(false, { redis: true });
      const forged = message('forged-redis');
      const bad = segmentSignature(forged, 'not-the-secret');
      for (let i = 0; i < BUDGET + 3; i += 1) {
        expect(await post(v4, forged, bad)).toBe(401);
        expect(await post(`${v6Network}::${i + 1}`, forged, bad)).toBe(401);
      }
      // Each network's budget still holds, kept under hashed names.
      expect((await records()).filter((r) => r.event === 'webhook_rejected')).toHaveLength(2 * BUDGET);

      const added = (await redis.keys('fraudgate:ratelimit:*')).filter((k) => !keysBefore.has(k));
      expect(added.length).toBeGreaterThanOrEqual(2);
      for (const key of added) {
        expect(key).not.toContain(v4);
        expect(key).not.toContain(v6Network);
        expect(key).not.toContain('segment_webhook');
        expect(key).toMatch(/^fraudgate:ratelimit:[A-Za-z0-9_-]{22}$/);
      }
    } finally {
      redis.disconnect();
    }
  });
});
