/**
 * Rejected webhooks cannot grow the audit ledger at will: the endpoints are reachable by anyone, so
 * each client address (as src/auth/client-address.ts names it, here through a trusted proxy's
 * X-Forwarded-For) has a refusal budget. Within it every rejection gets its own `webhook_rejected`
 * record; past it rejections are answered as before but only counted, into one `refusals_counted`
 * record. Another address keeps its own budget, and a valid delivery is never held back. On both
 * store engines (the ledger is the store's).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/governance/audit.ts';
import { createRateLimiter } from '../../src/governance/rate-limit.ts';
import { createRefusalBudget, type RefusalBudget } from '../../src/governance/refusal-budget.ts';
import { silentLogger } from '../../src/logger.ts';
import { segmentSignature } from '../../src/sandbox/segment-webhook-sender.ts';
import { siftUserResolver } from '../../src/webhooks/segment-mapping.ts';
import { createSegmentWebhookHandler } from '../../src/webhooks/segment-webhook.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { outboxEnv, type OutboxEnv } from '../outbox/helpers.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';

const SECRET = 'segment-shared-secret';
const FLOODER = '198.51.100.7';
const OTHER = '198.51.100.8';
const BUDGET = 3;

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

async function start(postgres: boolean) {
  if (postgres) schema = uniqueSchema();
  const secrets = postgres ? { postgresUrl: PG_URL } : {};
  env = await outboxEnv({
    config: postgres ? { store: 'postgres', store_postgres: { schema, startup_timeout_ms: 2_000 } } : {},
    secrets,
  });
  const { automation, config } = env;
  // A clock that stands still: no token comes back during the test, whatever its speed.
  const refusals: RefusalBudget = createRefusalBudget({
    audit: automation.runtime.audit,
    rateLimiter: createRateLimiter(() => 0),
    bucket: { capacity: BUDGET, per_minute: 1 },
    now: () => new Date(0),
  });
  const handler = createSegmentWebhookHandler({
    store: (event, effects, intake) => automation.store.enqueueRouted(event, effects, undefined, intake),
    secret: SECRET,
    mapping: config.mapping,
    siftUserFor: siftUserResolver(async () => automation.runtime.identities.listMappings(), config.identity),
    audit: automation.runtime.audit,
    logger: silentLogger,
    bodyLimitBytes: 64 * 1024,
    refusals,
    // The test's requests come from loopback: as from a reverse proxy naming the client.
    trustedProxies: ['127.0.0.1'],
  });
  server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/segment`;
  const post = async (from: string, body: string, signature: string) =>
    (
      await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': from, 'x-signature': signature },
        body,
      })
    ).status;
  const records = () => storedAuditRecords(config, automation.runtime.audit, secrets);
  return { env, refusals, post, records };
}

const message = (messageId: string) =>
  JSON.stringify({
    type: 'track',
    messageId,
    userId: 'sandbox-high-risk',
    event: 'Order Completed',
    properties: { order_id: `order-${messageId}`, total: 10, currency: 'USD' },
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
  });
}
