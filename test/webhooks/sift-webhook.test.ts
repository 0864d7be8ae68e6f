import { request } from 'node:http';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { databasePath } from '../../src/store/store.ts';
import { storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';
import { startSiftEmulator } from '../../src/sandbox/sift-emulator.ts';
import { decisionBody, outboxEnv, sign, WEBHOOK_KEYS, type OutboxEnv } from '../outbox/helpers.ts';

let env: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

describe('POST /webhooks/sift', () => {
  it('rejects forged, unsigned and malformed deliveries, stores nothing for them, and audits each', async () => {
    env = await outboxEnv();
    const body = decisionBody('user_forged', 'block_user_payment_abuse', 1_700_000_000_000);

    expect((await env.post(body)).status).toBe(401);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body, 'attacker-key') })).status).toBe(
      401,
    );
    expect((await env.post(body, { 'x-sift-science-signature': 'sha512=abcd' })).status).toBe(401);
    // A valid signature over a different body (tampered payload).
    const tampered = body.replace('block_user', 'looks_ok');
    expect((await env.post(tampered, { 'x-sift-science-signature': sign(body) })).status).toBe(401);

    const malformed = '{"entity": {"type": "user", "id": ';
    expect((await env.post(malformed, { 'x-sift-science-signature': sign(malformed) })).status).toBe(400);
    const wrongShape = JSON.stringify({ hello: 'world' });
    expect((await env.post(wrongShape, { 'x-sift-science-signature': sign(wrongShape) })).status).toBe(400);

    const stats = await env.automation.store.stats();
    expect(stats.unrouted).toBe(0);
    expect(await env.automation.store.unrouted(10)).toHaveLength(0);
    const rejected = (await env.auditRecords()).filter((r) => r.event === 'webhook_rejected');
    expect(rejected).toHaveLength(6);
    // No payload content in the audit trail for untrusted bodies.
    expect(JSON.stringify(rejected)).not.toContain('user_forged');
  });

  it('accepts any configured key (rotation, sha1 and sha256) and acknowledges a replay without storing it twice', async () => {
    env = await outboxEnv();
    const first = decisionBody('user_a', 'block_user_payment_abuse', 1_700_000_000_001);
    const second = decisionBody('user_b', 'watch_user_payment_abuse', 1_700_000_000_002);
    const a = await env.post(first, { 'x-sift-science-signature': sign(first, WEBHOOK_KEYS[0], 'sha1') });
    const b = await env.post(second, { 'x-sift-science-signature': sign(second, WEBHOOK_KEYS[1], 'sha256') });
    expect([a.status, a.json.status]).toEqual([200, 'accepted']);
    expect([b.status, b.json.status]).toEqual([200, 'accepted']);

    // The same delivery again, even re-serialised differently and signed with the other key: same key fields.
    const replay = JSON.stringify(JSON.parse(first), null, 2);
    const r = await env.post(replay, { 'x-sift-science-signature': sign(replay, WEBHOOK_KEYS[1]) });
    expect([r.status, r.json.status]).toEqual([200, 'duplicate']);

    const events = await env.automation.store.unrouted(10);
    expect(events.map((e) => e.entityId)).toEqual(['user_a', 'user_b']);
    const audit = await env.auditRecords();
    expect(audit.filter((x) => x.event === 'webhook_accepted')).toHaveLength(2);
    expect(audit.filter((x) => x.event === 'webhook_duplicate')).toHaveLength(1);
    expect(audit.every((x) => x.principal.id === 'automation:sift-webhook')).toBe(true);
  });

  it('takes a signed webhook sent by the Sift emulator for a console decision', async () => {
    env = await outboxEnv();
    const sift = await startSiftEmulator({ webhook: { url: env.webhookUrl, signatureKey: WEBHOOK_KEYS[1] } });
    try {
      const { time, webhook } = await sift.consoleApplyDecision({
        decisionId: 'block_user_payment_abuse',
        userId: 'user_console',
      });
      expect(webhook?.succeeded).toBe(true);
      const [event] = await env.automation.store.unrouted(10);
      expect(event).toMatchObject({ entityId: 'user_console', decisionId: 'block_user_payment_abuse', time });
    } finally {
      await sift.close();
    }
  });

  it('commits deliveries arriving together in one group: each stored once, each with its record, ids matching', async () => {
    env = await outboxEnv();
    const bodies = Array.from({ length: 40 }, (_, i) =>
      decisionBody(`user_group_${i % 30}`, 'block_user_payment_abuse', 1_700_000_100_000 + (i % 30)),
    );
    const answers = await Promise.all(
      bodies.map((body) => env!.post(body, { 'x-sift-science-signature': sign(body) })),
    );
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(answers.filter((a) => a.json.status === 'accepted')).toHaveLength(30);
    expect(answers.filter((a) => a.json.status === 'duplicate')).toHaveLength(10);

    const events = await env.automation.store.unrouted(100);
    expect(events).toHaveLength(30);
    const audit = await storedAuditRecords(env.config, env.automation.runtime.audit);
    const accepted = audit.filter((r) => r.event === 'webhook_accepted');
    const duplicates = audit.filter((r) => r.event === 'webhook_duplicate');
    expect(accepted).toHaveLength(30);
    expect(duplicates).toHaveLength(10);
    // Each record names the stored event it is about (a duplicate: the one stored first).
    const idOf = (r: { outcome?: { message?: string } }) =>
      Number(/outbox event (\d+)/.exec(r.outcome?.message ?? '')?.[1]);
    expect(new Set(accepted.map(idOf))).toEqual(new Set(events.map((e) => e.id)));
    expect(duplicates.every((r) => events.some((e) => e.id === idOf(r)))).toBe(true);
    expect(await verifyStoredAudit(env.config, {}, env.automation.runtime.audit)).toMatchObject({ ok: true });
  });

  it('does not acknowledge a delivery whose record cannot be written: nothing stored, 503; redelivered, stored once with its record', async () => {
    env = await outboxEnv();
    const body = decisionBody('user_unaudited', 'block_user_payment_abuse', 1_700_000_200_000);
    // A full disk, say: the receipt's record fails to insert (after the event row went in).
    const db = new DatabaseSync(databasePath(env.config));
    db.exec(`CREATE TRIGGER fail_accepted BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"webhook_accepted"%'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(503);
    expect(await env.automation.store.unrouted(10)).toEqual([]);
    expect((await env.auditRecords()).filter((r) => r.event === 'webhook_accepted')).toEqual([]);

    db.exec('DROP TRIGGER fail_accepted');
    db.close();
    const again = await env.post(body, { 'x-sift-science-signature': sign(body) });
    expect([again.status, again.json.status]).toEqual([200, 'accepted']);
    expect((await env.automation.store.unrouted(10)).map((e) => e.entityId)).toEqual(['user_unaudited']);
    expect(
      (await env.auditRecords()).filter((r) => r.event === 'webhook_accepted').map((r) => r.target),
    ).toHaveLength(1);
  });

  it('checks every stored field at its bounds: entity.type 1–64, the ids 1–255, time a non-negative integer', async () => {
    env = await outboxEnv();
    const payload = (entity: unknown, decision: unknown, time: unknown) =>
      JSON.stringify({ entity, decision, time, extra: { ignored: true } });
    const refused = [
      payload({ type: '', id: 'u' }, { id: 'd' }, 1),
      payload({ type: 't'.repeat(65), id: 'u' }, { id: 'd' }, 1),
      payload({ type: 'user', id: '' }, { id: 'd' }, 1),
      payload({ type: 'user', id: 'u'.repeat(256) }, { id: 'd' }, 1),
      payload({ type: 'user', id: 'u' }, { id: 'd'.repeat(256) }, 1),
      payload({ type: 'user', id: 'u' }, { id: 7 }, 1),
      payload({ type: 'user', id: 'u' }, 'd', 1),
      payload(['user', 'u'], { id: 'd' }, 1),
      payload({ type: 'user', id: 'u' }, { id: 'd' }, -1),
      payload({ type: 'user', id: 'u' }, { id: 'd' }, 1.5),
      payload({ type: 'user', id: 'u' }, { id: 'd' }, '1700000000000'),
      payload({ type: 'user', id: 'u' }, { id: 'd' }, 2 ** 53),
      'null',
      '[]',
    ];
    for (const body of refused) {
      const res = await env.post(body, { 'x-sift-science-signature': sign(body) });
      expect([body, res.status, res.json.error]).toEqual([
        body,
        400,
        'not a decision webhook (entity.type, entity.id, decision.id, time)',
      ]);
    }
    const longest = payload({ type: 't'.repeat(64), id: 'u'.repeat(255) }, { id: 'd'.repeat(255) }, 0);
    const res = await env.post(longest, { 'x-sift-science-signature': sign(longest) });
    expect([res.status, res.json.status]).toEqual([200, 'accepted']);
    const stored = await env.automation.store.unrouted(10);
    expect(stored.map((e) => [e.entityType, e.entityId.length, e.decisionId.length, e.time])).toEqual([
      ['t'.repeat(64), 255, 255, 0],
    ]);
  });

  it('reads a body that arrives in several chunks, and refuses one that outgrows the limit mid-stream with 413', async () => {
    env = await outboxEnv();
    const url = new URL(env.webhookUrl);
    /** Sends `chunks` with chunked encoding (no content-length), a pause between them. */
    const sendChunked = (chunks: string[], signature: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-sift-science-signature': signature },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        void (async () => {
          for (const chunk of chunks) {
            req.write(chunk);
            await new Promise((r) => setTimeout(r, 20));
          }
          req.end();
        })();
      });

    const body = decisionBody('user_chunked', 'block_user_payment_abuse', 1_700_000_000_100);
    const cut = [body.slice(0, 10), body.slice(10, 30), body.slice(30)];
    expect(await sendChunked(cut, sign(body))).toBe(200);
    expect((await env.automation.store.unrouted(10)).map((e) => e.entityId)).toEqual(['user_chunked']);

    // 2 × 40 KiB with no content-length: only the second chunk crosses the 64 KiB limit.
    const big = [`{"pad":"${'x'.repeat(40 * 1024)}`, `${'x'.repeat(40 * 1024)}"}`];
    expect(await sendChunked(big, sign(big.join('')))).toBe(413);
    // Refusals are audited before they are answered.
    const rejected = (await env.auditRecords()).filter((r) => r.event === 'webhook_rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ outcome: { code: '413', message: 'body too large' } });
    expect((await env.automation.store.unrouted(10)).map((e) => e.entityId)).toEqual(['user_chunked']);
  });

  it('answers 405 to other methods and 413 to oversized bodies', async () => {
    env = await outboxEnv();
    expect((await fetch(env.webhookUrl)).status).toBe(405);
    const big = JSON.stringify({ pad: 'x'.repeat(70 * 1024) });
    expect((await env.post(big, { 'x-sift-science-signature': sign(big) })).status).toBe(413);
  });
});
