/**
 * Outbox rows keep nothing readable about customers (issue 13, item 5): a Segment message carrying
 * an email and a phone number is routed to a `send_sift_event` effect whose frozen arguments and
 * result are sealed with FRAUDGATE_DATA_KEY (src/store/field-crypto.ts) on both engines, while the
 * effect still reaches Sift with the real values.
 */
import { readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { DEFAULTS } from '../../src/config.ts';
import { createFieldCipher } from '../../src/store/field-crypto.ts';
import { databasePath, openStore } from '../../src/store/store.ts';
import { OUTCOME_UNKNOWN, SEALED_DATA_UNREADABLE } from '../../src/store/outbox-store.ts';
import { startSandbox } from '../../src/sandbox/sandbox.ts';
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
 * One pending effect whose sealed arguments were edited in the database (they fail their integrity
 * check under the replica's own key) is claimed first (oldest decision), yet the effects behind it
 * still run: it becomes a dead letter with its reason code and audit record, and lists like one.
 */
async function runPoisoned(postgres: boolean) {
  const { env } = await start(postgres);
  const first = decisionBody('sandbox-high-risk', 'block_user_payment_abuse', Date.now() - 60_000);
  expect((await env.post(first, { 'x-sift-science-signature': sign(first) })).status).toBe(200);
  expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
  const sql = env.automation.runtime.store.sql;
  const [row] = await sql.query<{ id: number; event_id: number; effect: string; args: string }>(
    'SELECT id, event_id, effect, args FROM outbox_effects ORDER BY id LIMIT 1',
  );
  // Under this replica's own key, but edited: it fails its integrity check. (A value under a key
  // the replica lacks is left for another replica: see the rotation test below.)
  const middle = Math.floor(row!.args.length / 2);
  const edited =
    row!.args.slice(0, middle) + (row!.args[middle] === 'A' ? 'B' : 'A') + row!.args.slice(middle + 1);
  await sql.execute(
    "UPDATE outbox_effects SET args = $1, state = 'pending', next_attempt_at = 0, result = NULL WHERE id = $2",
    [edited, Number(row!.id)],
  );
  const second = decisionBody('sandbox-watch', 'block_user_payment_abuse', Date.now());
  expect((await env.post(second, { 'x-sift-science-signature': sign(second) })).status).toBe(200);
  expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);

  const effects = await env.automation.store.list({ limit: 1000 });
  const poisoned = effects.find((e) => e.id === Number(row!.id));
  expect(poisoned).toMatchObject({ state: 'dead', unreadable: 'args', args: {} });
  expect(poisoned?.lastError).toMatch(new RegExp(`^${SEALED_DATA_UNREADABLE}: .*FRAUDGATE_DATA_KEY`));
  // The reason names no key (not even its public id) and holds nothing of the sealed value.
  expect(poisoned?.lastError).not.toContain(row!.args.slice(7, 15));
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

const SIFT_EVENT = {
  effect: 'sift_event',
  tool: 'send_sift_event',
  args: { event: { event_type: 'create_account', user_id: 'sandbox-high-risk' } },
};

/** Engine settings for a replica of the shared store (PostgreSQL: this test's schema). */
function engine(postgres: boolean) {
  if (postgres) schema ??= uniqueSchema();
  return {
    config: postgres
      ? { store: 'postgres' as const, store_postgres: { schema, startup_timeout_ms: 2_000 } }
      : {},
    secrets: postgres ? { postgresUrl: PG_URL } : {},
  };
}

/**
 * A replica that began the effect's non-idempotent call (marked attempted: it may have reached Sift)
 * and stopped before completing it; returns once its lease has lapsed, so another replica claims it.
 */
async function attemptedThenLost(store: Awaited<ReturnType<typeof openStore>>, decisionId: string) {
  await store.outbox.enqueueRouted(
    { entityType: 'user', entityId: 'sandbox-high-risk', decisionId, time: Date.now() },
    [SIFT_EVENT],
  );
  const [effect] = await store.outbox.claim('replica-lost', 1, 100);
  expect(await store.outbox.markAttempted(effect!.id, 'replica-lost', Date.now())).toBe(true);
  const attemptedAt = (await store.outbox.get(effect!.id))?.attemptedAt;
  expect(attemptedAt).toBeDefined();
  await new Promise((resolve) => setTimeout(resolve, 250));
  return { id: effect!.id, attemptedAt: attemptedAt! };
}

/** A key holder takes the deferred effect: outcome unknown, a dead letter, nothing sent to Sift. */
async function holderDeadLetters(holder: OutboxEnv, id: number, sift: OutboxEnv['sandbox']) {
  await holder.automation.runtime.store.sql.execute(
    'UPDATE outbox_effects SET next_attempt_at = 0 WHERE id = $1',
    [id],
  );
  expect(await holder.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
  const settled = await holder.automation.store.get(id);
  expect(settled).toMatchObject({ state: 'dead' });
  expect(settled?.lastError).toContain(OUTCOME_UNKNOWN);
  expect(sift.sift.events).toHaveLength(0);
}

async function lackingKeyKeepsMark(postgres: boolean) {
  const keyA = randomBytes(32);
  const keyB = randomBytes(32);
  const { config: engineConfig, secrets } = engine(postgres);
  const config = { ...engineConfig, automation: { lease_ms: 300 } };
  const old = (env = await outboxEnv({ config, secrets: { ...secrets, dataKey: keyA.toString('hex') } }));
  // A replica already on the new key (old as previous) began the call and was lost.
  const swapped = await openStore(old.config, secrets, { cipher: createFieldCipher(keyB, [keyA]) });
  let holder: OutboxEnv | undefined;
  try {
    const { id, attemptedAt } = await attemptedThenLost(swapped, 'd-lost-rotated');
    // The old-key replica takes the lapsed lease and leaves it for a key holder: the mark stays.
    expect(await old.automation.worker.tick()).toMatchObject({ claimed: 1, deferred: 1, dead: 0 });
    expect(await swapped.outbox.get(id)).toMatchObject({ state: 'pending', attemptedAt, attempts: 0 });
    holder = await outboxEnv({
      config,
      dataDir: old.dataDir,
      sandbox: old.sandbox,
      secrets: { ...secrets, dataKey: keyA.toString('hex'), dataKeyPrevious: keyB.toString('hex') },
    });
    await holderDeadLetters(holder, id, old.sandbox);
  } finally {
    await holder?.close();
    await swapped.close();
  }
}

async function pausedKeepsMark(postgres: boolean) {
  const dataKey = randomBytes(32).toString('hex');
  const { config: engineConfig, secrets } = engine(postgres);
  const config = { ...engineConfig, automation: { lease_ms: 300 } };
  const holder = (env = await outboxEnv({ config, secrets: { ...secrets, dataKey } }));
  // A replica whose Sift refuses connections, with a long pause once it sees that.
  const unreachable = await startSandbox(DEFAULTS);
  await unreachable.sift.close();
  const paused = await outboxEnv({
    config: { ...config, automation: { lease_ms: 300, backoff_base_ms: 60_000, backoff_max_ms: 60_000 } },
    dataDir: holder.dataDir,
    sandbox: unreachable,
    secrets: { ...secrets, dataKey },
  });
  const store = holder.automation.runtime.store;
  try {
    const { id: probe } = await store.outbox.enqueueRouted(
      { entityType: 'user', entityId: 'sandbox-high-risk', decisionId: 'd-probe', time: Date.now() },
      [SIFT_EVENT],
    );
    await paused.automation.worker.tick();
    // Sift is paused on that replica; the effect that found it down is not part of this check.
    await store.sql.execute('DELETE FROM outbox_effects WHERE event_id = $1', [probe]);
    const { id, attemptedAt } = await attemptedThenLost(store, 'd-lost-paused');
    // The paused replica takes the lapsed lease and holds it back until its probe: the mark stays.
    expect(await paused.automation.worker.tick()).toMatchObject({ claimed: 1, deferred: 1, dead: 0 });
    expect(await store.outbox.get(id)).toMatchObject({ state: 'pending', attemptedAt, attempts: 0 });
    await holderDeadLetters(holder, id, holder.sandbox);
  } finally {
    await paused.close();
    await unreachable.close();
  }
}

async function lackingKeyLeftAlone(postgres: boolean) {
  const keyA = randomBytes(32);
  const keyB = randomBytes(32);
  const { config: engineConfig, secrets } = engine(postgres);
  const config = { ...engineConfig, automation: { lease_ms: 300 } };
  const old = (env = await outboxEnv({ config, secrets: { ...secrets, dataKey: keyA.toString('hex') } }));
  const swapped = await openStore(old.config, secrets, { cipher: createFieldCipher(keyB, [keyA]) });
  try {
    const { id: eventId } = await swapped.outbox.enqueueRouted(
      { entityType: 'user', entityId: 'sandbox-high-risk', decisionId: 'd-left-alone', time: Date.now() },
      [SIFT_EVENT],
    );
    expect(await old.automation.worker.tick()).toMatchObject({ claimed: 1, deferred: 1 });
    // Due again at once: the key-less replica still leaves it alone for a key holder.
    await swapped.sql.execute('UPDATE outbox_effects SET next_attempt_at = 0 WHERE event_id = $1', [eventId]);
    expect(await old.automation.worker.tick()).toMatchObject({ claimed: 0, deferred: 0 });
    const [effect] = await swapped.outbox.claim('key-holder', 1, 1_000);
    expect(effect).toMatchObject({ eventId, args: SIFT_EVENT.args });
  } finally {
    await swapped.close();
  }
}

describe('stored outbox rows', () => {
  it('SQLite: an edited sealed row does not block other effects', async () => {
    await runPoisoned(false);
  });

  it.skipIf(!pgListening)('PostgreSQL: an edited sealed row does not block other effects', async () => {
    await runPoisoned(true);
  });

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

  it('an attempted send_sift_event re-leased by a replica lacking the key keeps its attempt mark; the key holder dead-letters it as outcome-unknown and Sift gets no event', async () => {
    await lackingKeyKeepsMark(false);
  });

  it.skipIf(!pgListening)(
    'PostgreSQL: an attempted effect re-leased by a replica lacking the key keeps its attempt mark',
    async () => {
      await lackingKeyKeepsMark(true);
    },
  );

  it('an attempted send_sift_event re-leased by a replica with Sift paused keeps its attempt mark; the next replica dead-letters it as outcome-unknown and Sift gets no event', async () => {
    await pausedKeepsMark(false);
  });

  it.skipIf(!pgListening)(
    'PostgreSQL: an attempted effect re-leased by a replica with Sift paused keeps its attempt mark',
    async () => {
      await pausedKeepsMark(true);
    },
  );

  it('a replica lacking the key leaves that effect alone for a while, so a key holder claims it', async () => {
    await lackingKeyLeftAlone(false);
  });

  it.skipIf(!pgListening)(
    'PostgreSQL: a replica lacking the key leaves that effect alone for a while',
    async () => {
      await lackingKeyLeftAlone(true);
    },
  );

  it('an effect sealed under a key this replica lacks stays pending and runs on a replica that has it', async () => {
    const keyA = randomBytes(32);
    const keyB = randomBytes(32);
    const config = { automation: { lease_ms: 300 } };
    // Mid-rotation: a replica still on the old key alone, and one in phase 1 of the README's
    // rollout (old key current, new key as previous: no row is under it yet when it starts).
    const old = (env = await outboxEnv({ config, secrets: { dataKey: keyA.toString('hex') } }));
    const phase1 = await outboxEnv({
      config,
      dataDir: old.dataDir,
      sandbox: old.sandbox,
      secrets: { dataKey: keyA.toString('hex'), dataKeyPrevious: keyB.toString('hex') },
    });
    try {
      // A replica already swapped (new key current) seals an effect under the new key.
      const swapped = await openStore(old.config, {}, { cipher: createFieldCipher(keyB, [keyA]) });
      try {
        await swapped.outbox.enqueueRouted(
          { entityType: 'user', entityId: 'sandbox-high-risk', decisionId: 'd-rotated', time: Date.now() },
          [
            {
              effect: 'sift_event',
              tool: 'send_sift_event',
              args: { event: { event_type: 'create_account', user_id: 'sandbox-high-risk' } },
            },
          ],
        );
      } finally {
        await swapped.close();
      }
      // The old replica claims it, cannot open it, and leaves it: pending, not a dead letter.
      const tick = await old.automation.worker.tick();
      expect(tick).toMatchObject({ claimed: 1, deferred: 1, dead: 0 });
      const [left] = await old.automation.store.list();
      expect(left).toMatchObject({ state: 'pending', lackingKeyId: createFieldCipher(keyB).keyId });
      expect(old.sandbox.sift.events).toHaveLength(0);
      // The replica holding the new key runs it, once.
      expect(await phase1.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
      expect(old.sandbox.sift.events).toHaveLength(1);
      expect((await phase1.automation.store.list())[0]).toMatchObject({ state: 'done' });
      expect((await old.auditRecords()).filter((r) => r.event === 'dead_lettered')).toHaveLength(0);
    } finally {
      await phase1.close();
    }
  });

  it('an effect parked on an approval that does not open is settled when that approval expires', async () => {
    env = await outboxEnv();
    const body = decisionBody('sandbox-watch', 'block_user_payment_abuse', Date.now());
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const parked = (await env.automation.store.list()).find((e) => e.state === 'awaiting_approval');
    expect(parked?.approvalId).toBeDefined();
    // Its approval's sealed arguments edited (they fail their check), and the approval overdue.
    const sql = env.automation.runtime.store.sql;
    const [row] = await sql.query<{ args: string }>('SELECT args FROM approvals WHERE id = $1', [
      parked!.approvalId!,
    ]);
    const middle = Math.floor(row!.args.length / 2);
    const edited =
      row!.args.slice(0, middle) + (row!.args[middle] === 'A' ? 'B' : 'A') + row!.args.slice(middle + 1);
    await sql.execute('UPDATE approvals SET args = $1, expires_at = $2 WHERE id = $3', [
      edited,
      new Date(Date.now() - 60_000).toISOString(),
      parked!.approvalId!,
    ]);
    await env.automation.runtime.pipeline.processApprovals();
    await env.automation.worker.tick();
    expect(await env.automation.store.get(parked!.id)).toMatchObject({ state: 'denied' });
  });

  it('plain args written over sealed ones are refused: a dead letter, nothing sent to Sift', async () => {
    env = await outboxEnv();
    const store = env.automation.store;
    const { id: eventId } = await store.enqueueRouted(
      { entityType: 'user', entityId: 'sandbox-high-risk', decisionId: 'd-plain', time: Date.now() },
      [
        {
          effect: 'sift_event',
          tool: 'send_sift_event',
          args: { event: { event_type: 'create_account', user_id: 'sandbox-high-risk' } },
        },
      ],
    );
    const forged = { event: { event_type: 'create_account', user_id: 'forged-user' } };
    const db = new DatabaseSync(databasePath(env.config));
    try {
      db.prepare('UPDATE outbox_effects SET args = ? WHERE event_id = ?').run(
        JSON.stringify(forged),
        eventId,
      );
    } finally {
      db.close();
    }
    expect(await env.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    expect(env.sandbox.sift.events).toHaveLength(0);
    const [effect] = await store.list();
    expect(effect).toMatchObject({ state: 'dead', args: {} });
    expect(effect?.lastError).toMatch(/not sealed/);
    expect((await env.auditRecords()).filter((r) => r.event === 'dead_lettered')).toHaveLength(1);
  });

  it('rows written before encryption are sealed at start-up and load; a sealed value moved to another row does not open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-outbox-legacy-'));
    try {
      const config = { ...DEFAULTS, data_dir: dir };
      const event = (decisionId: string) => ({ entityType: 'user', entityId: 'u-1', decisionId, time: 1 });
      const effect = { effect: 'sift_event', tool: 'send_sift_event', args: { email: EMAIL } };
      const plain = await openStore(config, {});
      const { id: legacy } = await plain.outbox.enqueueRouted(event('d-1'), [effect]);
      // Before sealing existed, migration 33 (which lists such rows to seal once) had not run either.
      await plain.sql.execute('DROP TABLE IF EXISTS unsealed_legacy_rows');
      await plain.sql.execute('DELETE FROM schema_migrations WHERE version = 33');
      await plain.close();
      const sealed = await openStore(config, {}, { cipher: createFieldCipher(randomBytes(32)) });
      try {
        await sealed.outbox.enqueueRouted(event('d-2'), [effect]);
        const [newer, older] = await sealed.outbox.list();
        expect(older?.eventId).toBe(legacy);
        expect(older?.args).toEqual({ email: EMAIL });
        expect(newer?.args).toEqual({ email: EMAIL });
        const [stored] = await sealed.sql.query<{ args: string }>(
          'SELECT args FROM outbox_effects WHERE id = $1',
          [older!.id],
        );
        expect(stored?.args.startsWith('enc:v1:')).toBe(true);
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
