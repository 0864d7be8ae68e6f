/**
 * Outbox rows keep nothing readable about customers (issue 13, item 5): a Segment message carrying
 * an email and a phone number is routed to a `send_sift_event` effect whose frozen arguments and
 * result are sealed with FRAUDGATE_DATA_KEY (src/store/field-crypto.ts) on both engines, while the
 * effect still reaches Sift with the real values.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { DEFAULTS } from '../../src/config.ts';
import { createFieldCipher } from '../../src/store/field-crypto.ts';
import { openStore } from '../../src/store/store.ts';
import { SEALED_DATA_UNREADABLE, outboxFieldContext } from '../../src/store/outbox-store.ts';
import { decisionBody, outboxEnv, sign, startSegmentIntake, type OutboxEnv } from '../outbox/helpers.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';

const EMAIL = 'planted.outbox@example.com';
const PHONE = '+14155550188';
const SECRET = 'segment-shared-secret';

let env: OutboxEnv | undefined;
let intake: Awaited<ReturnType<typeof startSegmentIntake>> | undefined;
let schema: string | undefined;
afterEach(async () => {
  await intake?.close();
  intake = undefined;
  await env?.close();
  env = undefined;
  if (schema) await dropSchema(schema);
  schema = undefined;
});

/** The automation with the real Segment webhook handler in front of it. */
async function start(postgres: boolean) {
  if (postgres) schema = uniqueSchema();
  env = await outboxEnv({
    config: postgres ? { store: 'postgres', store_postgres: { schema, startup_timeout_ms: 2_000 } } : {},
    ...(postgres ? { secrets: { postgresUrl: PG_URL } } : {}),
  });
  intake = await startSegmentIntake(env, SECRET);
  return { env, url: intake.url };
}

/** Runs one message with a planted email and phone through the outbox; checks Sift got them. */
async function runPlanted(postgres: boolean) {
  const { env, url } = await start(postgres);
  const message = {
    version: 1,
    type: 'track',
    messageId: 'm-planted-1',
    userId: 'sandbox-high-risk',
    event: 'Signed Up',
    properties: { email: EMAIL, phone: PHONE, first_name: 'Jo', last_name: 'Planted' },
    timestamp: '2026-11-30T08:00:00.000Z',
  };
  expect(await sendSegmentWebhook(url, message, { secret: SECRET })).toMatchObject({ status: 200 });
  expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
  // Executed correctly: Sift received the real values, exactly once.
  const sent = env.sandbox.sift.events.filter((e) => e.userId === 'sandbox-high-risk');
  expect(sent).toHaveLength(1);
  expect(JSON.stringify(sent[0]?.body)).toContain(EMAIL);
  expect(JSON.stringify(sent[0]?.body)).toContain(PHONE);
  // Read back through the store, the effect has its real arguments.
  const effect = (await env.automation.store.list()).find((e) => e.tool === 'send_sift_event');
  expect(effect?.state).toBe('done');
  expect(JSON.stringify(effect?.args)).toContain(EMAIL);
  return env;
}

/**
 * One pending effect whose sealed arguments were written under another data key (a replica started
 * with a different FRAUDGATE_DATA_KEY) is claimed first (oldest decision), yet the effects behind it
 * still run: it becomes a dead letter with its reason code and audit record, and lists like one.
 */
async function runPoisoned(postgres: boolean) {
  const { env } = await start(postgres);
  const first = decisionBody('sandbox-high-risk', 'block_user_payment_abuse', Date.now() - 60_000);
  expect((await env.post(first, { 'x-sift-science-signature': sign(first) })).status).toBe(200);
  expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
  const sql = env.automation.runtime.store.sql;
  const [row] = await sql.query<{ id: number; event_id: number; effect: string }>(
    'SELECT id, event_id, effect FROM outbox_effects ORDER BY id LIMIT 1',
  );
  const other = createFieldCipher(randomBytes(32));
  const sealedElsewhere = other.seal(
    { user_id: 'sandbox-high-risk' },
    outboxFieldContext.args(Number(row!.event_id), row!.effect),
  );
  await sql.execute(
    "UPDATE outbox_effects SET args = $1, state = 'pending', next_attempt_at = 0, result = NULL WHERE id = $2",
    [sealedElsewhere, Number(row!.id)],
  );
  const second = decisionBody('sandbox-watch', 'block_user_payment_abuse', Date.now());
  expect((await env.post(second, { 'x-sift-science-signature': sign(second) })).status).toBe(200);
  expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);

  const effects = await env.automation.store.list({ limit: 1000 });
  const poisoned = effects.find((e) => e.id === Number(row!.id));
  expect(poisoned).toMatchObject({ state: 'dead', unreadable: 'args', args: {} });
  expect(poisoned?.lastError).toMatch(new RegExp(`^${SEALED_DATA_UNREADABLE}: .*FRAUDGATE_DATA_KEY`));
  // The reason names no key (not even its public id) and holds nothing of the sealed value.
  expect(poisoned?.lastError).not.toContain(other.keyId);
  expect(poisoned?.lastError).not.toContain('sandbox-high-risk');
  // The later decision's effects ran.
  const later = effects.filter((e) => e.entityKey === 'user:sandbox-watch');
  expect(later.length).toBeGreaterThan(0);
  // (The suppression waits for a human, as it would with no unreadable row before it.)
  expect(Object.fromEntries(later.map((e) => [e.effect, e.state]))).toEqual({
    salesforce: 'done',
    segment: 'done',
    suppress: 'awaiting_approval',
  });
  expect((await env.automation.store.stats()).dead).toBe(1);
  const records = await env.auditRecords();
  expect(
    records.filter((r) => r.event === 'dead_lettered' && r.target === `outbox_effect:${row!.id}`),
  ).toHaveLength(1);
}

describe('stored outbox rows', () => {
  it('SQLite: a row sealed under another key does not block other effects', async () => {
    await runPoisoned(false);
  });

  it.skipIf(!pgListening)(
    'PostgreSQL: a row sealed under another key does not block other effects',
    async () => {
      await runPoisoned(true);
    },
  );

  it('SQLite: the database file holds no planted email or phone; the effect ran with them', async () => {
    const e = await runPlanted(false);
    const raw = ['fraudgate.db', 'fraudgate.db-wal']
      .map((f) => {
        try {
          return readFileSync(join(e.dataDir, f)).toString('latin1');
        } catch {
          return '';
        }
      })
      .join('');
    expect(raw).not.toContain(EMAIL);
    expect(raw).not.toContain(PHONE);
    expect(raw).toContain('enc:v1:');
  });

  it.skipIf(!pgListening)('PostgreSQL: outbox rows hold no planted email or phone', async () => {
    await runPlanted(true);
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    try {
      const rows = [
        ...(await client.query(`SELECT * FROM ${schema}.outbox_effects`)).rows,
        ...(await client.query(`SELECT * FROM ${schema}.outbox_events`)).rows,
      ];
      const raw = JSON.stringify(rows);
      expect(rows.length).toBeGreaterThan(1);
      expect(raw).not.toContain(EMAIL);
      expect(raw).not.toContain(PHONE);
      expect(raw).toContain('enc:v1:');
    } finally {
      await client.end();
    }
  });

  it('rows written before encryption still load; a sealed value moved to another row does not open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-outbox-legacy-'));
    try {
      const config = { ...DEFAULTS, data_dir: dir };
      const event = (decisionId: string) => ({ entityType: 'user', entityId: 'u-1', decisionId, time: 1 });
      const effect = { effect: 'sift_event', tool: 'send_sift_event', args: { email: EMAIL } };
      const plain = await openStore(config, {});
      const { id: legacy } = await plain.outbox.enqueueRouted(event('d-1'), [effect]);
      await plain.close();
      const sealed = await openStore(config, {}, { cipher: createFieldCipher(randomBytes(32)) });
      try {
        await sealed.outbox.enqueueRouted(event('d-2'), [effect]);
        const [newer, older] = await sealed.outbox.list();
        expect(older?.eventId).toBe(legacy);
        expect(older?.args).toEqual({ email: EMAIL });
        expect(newer?.args).toEqual({ email: EMAIL });
        // Copy the sealed arguments onto the legacy row: bound to their own row, they are refused.
        await sealed.sql.execute(
          'UPDATE outbox_effects SET args = (SELECT args FROM outbox_effects WHERE id = $1) WHERE id = $2',
          [newer!.id, older!.id],
        );
        // Read, it is marked unreadable with no arguments (so it never runs), instead of breaking the read.
        expect(await sealed.outbox.get(older!.id)).toMatchObject({ unreadable: 'args', args: {} });
      } finally {
        await sealed.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
