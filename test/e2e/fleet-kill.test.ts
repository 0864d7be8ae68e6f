/**
 * Issue 8, item 7, second proof: 1,000 signed Sift decision webhooks (about one in seven a
 * redelivery) reach two `fraudgate serve --http` replicas through a round-robin proxy, delivered
 * again until acknowledged as Sift does. While the outbox drains, replica A is SIGKILLed and started
 * again under the same FRAUDGATE_REPLICA_ID: it takes back the leases it died holding at once. Then
 * replica B is SIGKILLed for good: A runs B's effects once their leases lapse. Every effect reaches
 * the emulators exactly once (counted per user in Segment, Salesforce and Sift), every block's
 * suppression waits for a human on exactly one approval (live mode: destructive writes always do),
 * nothing is dead-lettered, and `fraudgate audit verify` passes on the one shared ledger. Skips
 * without PostgreSQL and Redis.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { mapLimit } from '../outbox/helpers.ts';
import {
  createFleet,
  deliverSiftWebhook,
  fleetServicesAvailable,
  waitFor,
  type Fleet,
  type ReplicaProcess,
} from '../helpers/replicas.ts';
import { startRoundRobinProxy, type RoundRobinProxy } from '../helpers/round-robin-proxy.ts';

const available = await fleetServicesAvailable('fleet-kill');

const USERS = 860;
const RESENT = 140; // 1,000 deliveries
/** Long enough that the restarted replica is back before its leases lapse, so its reclaim is what frees them. */
const LEASE_MS = 20_000;
const WEBHOOK_KEY = `fleet-webhook-key-${randomBytes(6).toString('hex')}`;
const DECISIONS = ['block_user_payment_abuse', 'watch_user_payment_abuse', 'looks_ok_payment_abuse'] as const;
const userId = (u: number) => `fg_fleet_${u}`;
/** Block decisions of users with a high score also open a Case; users from WITH_ACCOUNT on have no Account. */
const WITH_ACCOUNT = 600;
const highScore = (u: number) => u % 2 === 0;
const decisionOf = (u: number) => DECISIONS[u % DECISIONS.length]!;

let sandbox: Sandbox;
let fleet: Fleet;
let proxy: RoundRobinProxy & { targets: string[] };
let sql: pg.Client;
const replicas: ReplicaProcess[] = [];
const deliveries: string[] = [];

beforeAll(async () => {
  if (!available) return;
  sandbox = await startSandbox(DEFAULTS);
  fleet = createFleet({
    sandbox,
    prefix: 'fg_kill',
    env: { SIFT_WEBHOOK_KEYS: WEBHOOK_KEY },
    config: {
      automation: {
        // Every effect kind is made (a block: all four; its suppression then waits for a human), at
        // two effects per user on average, which keeps the run short on a loaded machine: watch →
        // Segment only, accept → Salesforce only.
        rules: {
          block: ['segment', 'salesforce', 'case', 'suppress'],
          watch: ['segment'],
          accept: ['salesforce'],
        },
        // Its own principal, so its rate-limit buckets in the shared Redis are this test's alone.
        principal: `automation:fleet-kill-${randomBytes(4).toString('hex')}`,
        lease_ms: LEASE_MS,
        poll_ms: 50,
        batch_size: 100,
        batch_window_ms: 50,
        backoff_base_ms: 50,
        backoff_max_ms: 1000,
        max_attempts: 40,
      },
    },
  });
  for (let u = 0; u < USERS; u += 1) {
    sandbox.sift.setScore(userId(u), 'payment_abuse', highScore(u) ? 0.95 : 0.4);
    if (u < WITH_ACCOUNT)
      sandbox.salesforce.insert('Account', { Name: `Fleet ${u}`, Sift_User_Id__c: userId(u) });
    // The decision is applied in Sift first: the effects read the user's current decision back.
    const { time } = await sandbox.sift.consoleApplyDecision({
      decisionId: decisionOf(u),
      userId: userId(u),
    });
    deliveries.push(
      JSON.stringify({ entity: { type: 'user', id: userId(u) }, decision: { id: decisionOf(u) }, time }),
    );
  }
  // Sift redelivers some decisions; spread through the stream so some land on the other replica.
  for (let i = 0; i < RESENT; i += 1) deliveries.splice(i * 7 + 3, 0, deliveries[(i * 37) % USERS]!);
  replicas.push(await fleet.start('replica-a'), await fleet.start('replica-b'));
  const targets = replicas.map((r) => r.url);
  proxy = Object.assign(await startRoundRobinProxy(targets), { targets });
  sql = await fleet.sql();
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await fleet?.close();
  await sandbox?.close();
});

async function outboxCounts() {
  const { rows } = await sql.query<{ state: string; owner: string | null; n: string }>(
    `SELECT state, lease_owner AS owner, COUNT(*) AS n FROM outbox_effects GROUP BY state, lease_owner`,
  );
  const [events] = (
    await sql.query<{ total: string; unrouted: string }>(
      // Decision webhooks only: jobs inside `serve` may add events of their own (scores, records).
      `SELECT COUNT(*) FILTER (WHERE entity_type = 'user') AS total, COUNT(*) FILTER (WHERE routed = 0) AS unrouted
         FROM outbox_events`,
    )
  ).rows;
  const count = (state: string, owner?: string) =>
    rows
      .filter((r) => r.state === state && (owner === undefined || r.owner === owner))
      .reduce((n, r) => n + Number(r.n), 0);
  return { count, events: Number(events?.total ?? 0), unrouted: Number(events?.unrouted ?? 0) };
}

describe.skipIf(!available)('1,000 decision webhooks across two replicas, one SIGKILLed mid-drain', () => {
  it('runs every effect exactly once, and nothing waits on the dead replica’s lease', async () => {
    const started = Date.now();
    const log = (what: string) => process.stderr.write(`fleet-kill: ${Date.now() - started} ms: ${what}\n`);
    const sending = mapLimit(
      deliveries,
      16,
      async (body) => (await deliverSiftWebhook(proxy.url, WEBHOOK_KEY, body)).status,
    );

    const [a, b] = replicas as [ReplicaProcess, ReplicaProcess];
    /** SIGKILL `replica` once it holds leases on running effects; returns those effects' leases. */
    const killHolding = async (replica: ReplicaProcess, minDone: number) => {
      expect(
        await waitFor(
          async () => {
            const c = await outboxCounts();
            return c.count('done') >= minDone && c.count('leased', replica.name) >= 5;
          },
          90_000,
          20,
        ),
      ).toBe(true);
      log(`killing ${replica.name}`);
      await fleet.kill(replica);
      expect((await replica.exited).signal).toBe('SIGKILL');
      const { rows } = await sql.query<{ id: string; lease_until: string }>(
        `SELECT id, lease_until FROM outbox_effects WHERE state = 'leased' AND lease_owner = $1`,
        [replica.name],
      );
      expect(rows.length).toBeGreaterThan(0);
      return rows;
    };
    /** Effects among `ids` still carrying the lease they had when their holder was killed. */
    const stillHeld = async (held: { id: string; lease_until: string }[], owner: string) =>
      (
        await sql.query<{ id: string; lease_until: string }>(
          `SELECT id, lease_until FROM outbox_effects WHERE id = ANY($1::bigint[]) AND state = 'leased' AND lease_owner = $2`,
          [held.map((h) => h.id), owner],
        )
      ).rows.filter((r) => held.some((h) => h.id === r.id && h.lease_until === r.lease_until));

    // 1. Kill replica A mid-drain and start it again under the same replica id (and data dir), as
    // an orchestrator restarts a pod: it takes its dead leases back at once instead of waiting them out.
    const heldByA = await killHolding(a, 300);
    const restarted = await fleet.start('replica-a');
    replicas[0] = restarted;
    proxy.targets[0] = restarted.url;
    log(`replica-a restarted (it held ${heldByA.length} leases)`);
    expect(await waitFor(async () => (await stillHeld(heldByA, 'replica-a')).length === 0, 10_000)).toBe(
      true,
    );

    // 2. Kill replica B mid-drain for good: its effects are run by A once their leases lapse.
    const doneBefore = (await outboxCounts()).count('done');
    const heldByB = await killHolding(b, doneBefore + 200);

    const answers = await sending;
    log('all webhooks acknowledged');
    expect(answers.every((s) => s === 'accepted' || s === 'duplicate')).toBe(true);
    expect(answers.filter((s) => s === 'duplicate').length).toBeGreaterThanOrEqual(RESENT);

    expect(
      await waitFor(
        async () => {
          const c = await outboxCounts();
          return c.unrouted === 0 && c.count('pending') + c.count('leased') === 0;
        },
        90_000 + LEASE_MS,
        200,
      ),
    ).toBe(true);
    log('outbox drained');
    const counts = await outboxCounts();
    if (counts.count('dead') > 0) {
      // What the operator would look at: the dead letters, and the replicas' error log lines.
      process.stderr.write((await fleet.cli(restarted, ['outbox', 'list'])).stdout);
      for (const r of [a, b, restarted])
        process.stderr.write(
          `${r.name}:\n${r
            .stderr()
            .split('\n')
            .filter((l) => l.includes('"error"'))
            .slice(0, 10)
            .join('\n')}\n`,
        );
    }
    expect(counts.events).toBe(USERS);
    for (const state of ['dead', 'denied']) expect(counts.count(state), state).toBe(0);
    // Each block's suppression waits for a human, on one approval per user, however often it was run.
    const blocks = Array.from({ length: USERS }, (_, u) => u).filter(
      (u) => decisionOf(u) === 'block_user_payment_abuse',
    ).length;
    expect(counts.count('awaiting_approval')).toBe(blocks);
    const { rows: suppressions } = await sql.query<{ state: string; n: string; targets: string }>(
      `SELECT state, COUNT(*) AS n, COUNT(DISTINCT target) AS targets FROM approvals WHERE tool = 'suppress_user' GROUP BY state`,
    );
    expect(suppressions).toEqual([{ state: 'pending', n: String(blocks), targets: String(blocks) }]);
    // B never came back: every effect it held was finished by A after B's lease lapsed (a suppression
    // among them then waits on its approval like the others).
    const { rows: takenOver } = await sql.query<{ state: string; lease_owner: string }>(
      `SELECT state, lease_owner FROM outbox_effects WHERE id = ANY($1::bigint[])`,
      [heldByB.map((h) => h.id)],
    );
    for (const effect of takenOver)
      expect(effect).toMatchObject({ state: expect.stringMatching(/^(done|skipped|awaiting_approval)$/) });
    expect(takenOver.filter((e) => e.state === 'done').every((e) => e.lease_owner === 'replica-a')).toBe(
      true,
    );

    // Exactly once, per user, in each upstream. Segment: one decision identify and track, and no
    // suppression yet (the emulator keeps one message per messageId).
    const segmentByUser = new Map<string, string[]>();
    for (const m of sandbox.segment.events) {
      // Decision effects only: jobs inside `serve` (e.g. the score sync) may write messages of their own.
      if (!m.userId?.startsWith('fg_fleet_') || !/^fg-(dec|sup)-/.test(m.messageId)) continue;
      segmentByUser.set(m.userId, [
        ...(segmentByUser.get(m.userId) ?? []),
        m.messageId.replace(/-[0-9a-f]{40}$/, ''),
      ]);
    }
    const cases = new Map<string, number>();
    for (const c of sandbox.salesforce.records('Case')) {
      const user = String(c.Sift_User_Id__c ?? '');
      if (user.startsWith('fg_fleet_')) cases.set(user, (cases.get(user) ?? 0) + 1);
    }
    const accounts = new Map(
      sandbox.salesforce
        .records('Account')
        .filter((r) => String(r.Sift_User_Id__c ?? '').startsWith('fg_fleet_'))
        .map((r) => [String(r.Sift_User_Id__c), String(r.Id)]),
    );
    const posts = new Map<string, number>();
    for (const f of sandbox.salesforce.records('FeedItem'))
      posts.set(String(f.ParentId), (posts.get(String(f.ParentId)) ?? 0) + 1);
    const mapping = DEFAULTS.mapping.decisions;
    for (let u = 0; u < USERS; u += 1) {
      const user = userId(u);
      const block = decisionOf(u) === 'block_user_payment_abuse';
      const category = block ? 'block' : decisionOf(u).startsWith('watch') ? 'watch' : 'accept';
      const expected = category === 'accept' ? [] : ['fg-dec-id', 'fg-dec-tr'];
      expect((segmentByUser.get(user) ?? []).sort(), user).toEqual(expected.sort());
      expect(cases.get(user) ?? 0, `cases of ${user}`).toBe(block && highScore(u) ? 1 : 0);
      const account = accounts.get(user);
      if (u < WITH_ACCOUNT) {
        const record = sandbox.salesforce.records('Account').find((r) => r.Id === account);
        const synced = category !== 'watch';
        expect(posts.get(account!) ?? 0, `Chatter posts on ${user}'s account`).toBe(synced ? 1 : 0);
        if (synced) expect(record?.Sift_Decision__c).toBe(mapping[category].salesforce_value);
      }
    }
    // Decision effects only read Sift: no label, decision or event was written there.
    for (const route of ['/v205/users/:id/labels', '/v205/events', '/v3/accounts/:a/users/:u/decisions'])
      expect(sandbox.sift.requests('POST', route), route).toHaveLength(0);

    // The restarted replica is ready, and the one ledger (two writers, both killed once) verifies.
    const ready = await fetch(`${restarted.url}/readyz`);
    expect(ready.status, await ready.text()).toBe(200);
    for (const r of [restarted, b]) {
      const verified = await fleet.cli(r, ['audit', 'verify']);
      expect(verified.code, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/^audit ledger \(postgres\): intact, \d+ records from 2 writers/);
    }
    log(
      `${heldByA.length} + ${heldByB.length} effects held by killed replicas; ${counts.count('done')} done`,
    );
  }, 300_000);
});
