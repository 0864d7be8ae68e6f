/**
 * Issue 8, item 7, second proof: 1,000 signed Sift decision webhooks (about one in seven a
 * redelivery) reach two `fraudgate serve --http` replicas through a round-robin proxy, delivered
 * again until acknowledged as Sift does. While the outbox drains, replica A is SIGKILLed and started
 * again under the same FRAUDGATE_REPLICA_ID (the last 400 deliveries wait until it is back): it takes
 * back the leases it died holding at once. Then
 * replica B is SIGKILLed for good: A runs B's effects once their leases lapse. Every effect reaches
 * the emulators exactly once (counted per user in Segment, Salesforce and Sift), every block's
 * suppression waits for a human on exactly one approval (live mode: destructive writes always do),
 * nothing is dead-lettered, and `fraudgate audit verify` passes on the one shared ledger.
 *
 * Then B comes back, an approver approves every suppression in B's console, and A is SIGKILLed
 * while its approval sweep is running one and started again under the same id: it runs what it died
 * running again at once; every approval is executed, each blocked user's suppression reaches
 * Segment exactly once (one identify and one track, keyed by the approval), and the ledger still
 * verifies. Skips without PostgreSQL and Redis.
 */
import { createHash, randomBytes } from 'node:crypto';
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
import { consoleSignIn } from '../helpers/console.ts';
import { startRoundRobinProxy, type RoundRobinProxy } from '../helpers/round-robin-proxy.ts';

const available = await fleetServicesAvailable('fleet-kill');

const USERS = 860;
const RESENT = 140; // 1,000 deliveries
/** Deliveries sent only once the killed replica A is back. */
const HELD_BACK = 400;
/** Long enough that the restarted replica is back before its leases lapse, so its reclaim is what frees them. */
const LEASE_MS = 20_000;
const WEBHOOK_KEY = `fleet-webhook-key-${randomBytes(6).toString('hex')}`;
const APPROVER_KEY = `fleet-approver-${randomBytes(8).toString('hex')}`;
const APPROVER = 'ola.approver@example.com';
const DECISIONS = ['block_user_payment_abuse', 'watch_user_payment_abuse', 'looks_ok_payment_abuse'] as const;
const userId = (u: number) => `fg_fleet_${u}`;
/** Block decisions of users with a high score also open a Case; users from WITH_ACCOUNT on have no Account. */
const WITH_ACCOUNT = 600;
const highScore = (u: number) => u % 2 === 0;
const decisionOf = (u: number) => DECISIONS[u % DECISIONS.length]!;
const BLOCKED = Array.from({ length: USERS }, (_, u) => u).filter(
  (u) => decisionOf(u) === 'block_user_payment_abuse',
);
const AUTOMATION = `automation:fleet-kill-${randomBytes(4).toString('hex')}`;

let sandbox: Sandbox;
let fleet: Fleet;
let proxy: RoundRobinProxy & { targets: string[] };
let sql: pg.Client;
const replicas: ReplicaProcess[] = [];
const deliveries: string[] = [];
/** Set once the first phase has drained the outbox: the second phase starts from that state. */
let drained = false;

beforeAll(async () => {
  if (!available) return;
  sandbox = await startSandbox(DEFAULTS);
  fleet = createFleet({
    sandbox,
    prefix: 'fg_kill',
    env: { SIFT_WEBHOOK_KEYS: WEBHOOK_KEY },
    config: {
      auth: {
        key_hashes: [
          {
            sha256: createHash('sha256').update(APPROVER_KEY).digest('hex'),
            principal: APPROVER,
            kind: 'user',
            role: 'approver',
          },
        ],
      },
      // The default suppress_user budget (200 an hour per principal) would pause the automation's
      // ~290 approved suppressions part-way, waiting on a human lift: raised so the phase after
      // approval tests exactly-once execution across a kill, not the budget (tested on its own).
      budgets: { limits: { suppress_user: { max_effects: 1_000_000 } } },
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
        principal: AUTOMATION,
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

/**
 * Freeze `replica` (SIGSTOP) and ask `holds` whether it holds what it is to be killed holding: frozen,
 * it cannot finish that between the look and the SIGKILL. Thawed (SIGCONT) again when it does not.
 */
async function frozenHolding(replica: ReplicaProcess, holds: () => Promise<boolean>): Promise<boolean> {
  replica.child.kill('SIGSTOP');
  // A write it sent just before it stopped may still be on its way into the database.
  await new Promise((r) => setTimeout(r, 50));
  if (await holds().catch(() => false)) return true;
  replica.child.kill('SIGCONT');
  return false;
}

describe.skipIf(!available)('1,000 decision webhooks across two replicas, one SIGKILLed mid-drain', () => {
  it('runs every effect exactly once, and nothing waits on the dead replica’s lease', async () => {
    const started = Date.now();
    const log = (what: string) => process.stderr.write(`fleet-kill: ${Date.now() - started} ms: ${what}\n`);
    const send = (bodies: string[]) =>
      mapLimit(bodies, 16, async (body) => (await deliverSiftWebhook(proxy.url, WEBHOOK_KEY, body)).status);
    // The last deliveries wait until A is back, so B is killed mid-drain however long A's restart
    // takes (a restart after a SIGKILL watches the id's heartbeat for a few seconds first).
    const sendingFirst = send(deliveries.slice(0, deliveries.length - HELD_BACK));

    const [a, b] = replicas as [ReplicaProcess, ReplicaProcess];
    /** SIGKILL `replica` once it holds leases on running effects; returns those effects' leases. */
    const killHolding = async (replica: ReplicaProcess, minDone: number) => {
      expect(
        await waitFor(
          async () => {
            const c = await outboxCounts();
            return (
              c.count('done') >= minDone &&
              c.count('leased', replica.name) >= 5 &&
              frozenHolding(replica, async () => (await outboxCounts()).count('leased', replica.name) > 0)
            );
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
    const sendingRest = send(deliveries.slice(deliveries.length - HELD_BACK));
    expect(await waitFor(async () => (await stillHeld(heldByA, 'replica-a')).length === 0, 10_000)).toBe(
      true,
    );

    // 2. Kill replica B mid-drain for good: its effects are run by A once their leases lapse.
    const doneBefore = (await outboxCounts()).count('done');
    const heldByB = await killHolding(b, doneBefore + 200);

    const answers = [...(await sendingFirst), ...(await sendingRest)];
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
    const blocks = BLOCKED.length;
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
    drained = true;
  }, 300_000);

  it('runs every approved suppression exactly once, though a replica running them is SIGKILLed', async () => {
    expect(drained, 'the first phase drained the outbox').toBe(true);
    const started = Date.now();
    const log = (what: string) => process.stderr.write(`fleet-kill: ${Date.now() - started} ms: ${what}\n`);
    const suppressionStates = async () =>
      Object.fromEntries(
        (
          await sql.query<{ state: string; n: string }>(
            `SELECT state, COUNT(*) AS n FROM approvals WHERE tool = 'suppress_user' GROUP BY state`,
          )
        ).rows.map((r) => [r.state, Number(r.n)]),
      ) as Record<string, number | undefined>;
    const duplicatesBefore = sandbox.segment.duplicates;
    /** The suppression effects by state (jobs inside `serve` may meanwhile make effects of their own). */
    const suppressionEffects = async () =>
      Object.fromEntries(
        (
          await sql.query<{ state: string; n: string }>(
            `SELECT state, COUNT(*) AS n FROM outbox_effects WHERE effect = 'suppress' GROUP BY state`,
          )
        ).rows.map((r) => [r.state, Number(r.n)]),
      ) as Record<string, number | undefined>;
    /** The ledger's suppress_user records, counted per approval and event. */
    const suppressionRecords = async () => {
      const { rows } = await sql.query<{ approval_id: string; event: string; n: string }>(
        `SELECT body::json->>'approval_id' AS approval_id, body::json->>'event' AS event, COUNT(*) AS n
           FROM audit_records WHERE body::json->>'tool' = 'suppress_user' AND body::json->>'approval_id' IS NOT NULL
           GROUP BY 1, 2`,
      );
      return (id: string, event: string) =>
        Number(rows.find((r) => r.approval_id === id && r.event === event)?.n ?? 0);
    };

    // B comes back under its id, so two replicas run approved actions; this time A is killed.
    const b = await fleet.start('replica-b');
    replicas[1] = b;
    proxy.targets[1] = b.url;
    const a = replicas[0]!;

    // 1. The approver signs in to B's console and approves every suppression there, as a human would.
    const { cookie, csrf } = await consoleSignIn(b.url, APPROVER_KEY);
    const pendingSuppressions = async () => {
      const res = await fetch(`${b.url}/console/api/approvals?view=pending`, { headers: { cookie } });
      expect(res.status).toBe(200);
      const { approvals } = (await res.json()) as {
        approvals: { id: string; tool: string; requester: string; mode: string; approve_blocked?: string }[];
      };
      return approvals.filter((x) => x.tool === 'suppress_user');
    };
    const approving = (async () => {
      let approved = 0;
      // The console lists at most 200 at a time: approve a page, then look again.
      for (let page = await pendingSuppressions(); page.length > 0; page = await pendingSuppressions()) {
        for (const approval of page) {
          // Requested by the automation principal, so this approver is not the requester: four-eyes
          // (the default for destructive tools) lets them approve.
          expect(approval).toMatchObject({ requester: AUTOMATION, mode: 'four_eyes' });
          expect(approval.approve_blocked).toBeUndefined();
        }
        const statuses = await mapLimit(page, 8, async (approval) => {
          const res = await fetch(`${b.url}/console/api/approvals/${approval.id}/approve`, {
            method: 'POST',
            headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': csrf },
            body: JSON.stringify({ reason: 'payment abuse confirmed' }),
          });
          return `${res.status} ${res.status === 200 ? '' : await res.text()}`;
        });
        expect(statuses.filter((s) => !s.startsWith('200 '))).toEqual([]);
        approved += page.length;
      }
      return approved;
    })();

    /** Suppressions `replica` has claimed and is running. */
    const runningOn = async (replica: string) =>
      (
        await sql.query<{ id: string }>(
          `SELECT id FROM approvals WHERE tool = 'suppress_user' AND state = 'executing' AND executed_by = $1`,
          [replica],
        )
      ).rows.map((r) => r.id);

    // 2. Nobody waits on these calls: the replicas' approval sweeps run them. Kill A while it is
    // running one and some, not all, have run; start it again under the same id.
    expect(
      await waitFor(
        async () =>
          ((await suppressionStates()).executed ?? 0) >= BLOCKED.length / 4 &&
          (await runningOn('replica-a')).length > 0 &&
          frozenHolding(a, async () => (await runningOn('replica-a')).length > 0),
        60_000,
        20,
      ),
    ).toBe(true);
    log('killing replica-a');
    await fleet.kill(a);
    // Read once A is dead: what it died running, and what its chain holds of those runs so far.
    const atKill = await suppressionStates();
    const interrupted = await runningOn('replica-a');
    const recordsAtKill = await suppressionRecords();
    log(`replica-a killed running ${interrupted.join(', ')}: ${JSON.stringify(atKill)}`);
    expect(interrupted.length).toBeGreaterThan(0);
    expect(atKill.executed ?? 0).toBeLessThan(BLOCKED.length);
    const restarted = await fleet.start('replica-a');
    replicas[0] = restarted;
    proxy.targets[0] = restarted.url;
    log('replica-a restarted');
    expect(await approving).toBe(BLOCKED.length);

    // 3. Every one settles: executed (or failed), and its parked effect with it. What A was running
    // when it died is run again by A at once after its restart (not 10 minutes later, when any
    // replica would take an `executing` approval for interrupted).
    const settled = await waitFor(
      async () => {
        const s = await suppressionStates();
        return (
          (s.executed ?? 0) + (s.failed ?? 0) === BLOCKED.length &&
          (await suppressionEffects()).awaiting_approval === undefined
        );
      },
      120_000,
      200,
    );
    log(`settled: ${JSON.stringify(await suppressionStates())}`);
    expect(settled).toBe(true);
    expect(await suppressionStates()).toEqual({ executed: BLOCKED.length });
    const effects = await suppressionEffects();
    expect(effects.done).toBe(BLOCKED.length);
    for (const state of ['dead', 'denied', 'awaiting_approval', 'pending', 'leased'])
      expect(effects[state], state).toBeUndefined();

    // Each approval: decided once by the approver, executed once, one per blocked user.
    const { rows: approvals } = await sql.query<{
      id: string;
      target: string;
      decided_by: string;
      result: string;
    }>(`SELECT id, target, decided_by, result FROM approvals WHERE tool = 'suppress_user'`);
    expect(new Set(approvals.map((x) => x.target))).toEqual(
      new Set(BLOCKED.map((u) => `segment_user:${userId(u)}`)),
    );
    expect(approvals.every((x) => x.decided_by === APPROVER)).toBe(true);
    const records = await suppressionRecords();
    for (const approval of approvals) {
      expect(records(approval.id, 'approved'), `${approval.id} approved`).toBe(1);
      expect(records(approval.id, 'failed'), `${approval.id} failed`).toBe(0);
      // What A died running ran once more, after its restart, with the same Segment messageIds; what
      // the first run had recorded when A died (its intent, its outcome if A died just before storing
      // the approval's state) stays on record beside the second run's.
      const again = interrupted.includes(approval.id) ? 1 : 0;
      for (const event of ['intent', 'executed'])
        expect(records(approval.id, event), `${approval.id} ${event}`).toBe(
          recordsAtKill(approval.id, event) * again + 1,
        );
    }

    // Segment: each blocked user has exactly the suppression identify and track its approval wrote
    // (their messageIds derive from the approval id, so a re-run is deduplicated), and nobody else any.
    const suppressionIds = new Map<string, string[]>();
    for (const m of sandbox.segment.events) {
      if (!m.userId?.startsWith('fg_fleet_') || !m.messageId.startsWith('fg-sup-')) continue;
      suppressionIds.set(m.userId, [...(suppressionIds.get(m.userId) ?? []), m.messageId]);
    }
    expect(suppressionIds.size).toBe(BLOCKED.length);
    for (const approval of approvals) {
      const user = approval.target.replace(/^segment_user:/, '');
      const { message_ids: ids } = JSON.parse(approval.result) as {
        message_ids: { identify: string; track: string };
      };
      expect(ids.identify).toMatch(/^fg-sup-id-/);
      expect(ids.track).toMatch(/^fg-sup-tr-/);
      expect((suppressionIds.get(user) ?? []).sort(), user).toEqual([ids.identify, ids.track].sort());
      expect(sandbox.segment.profile(user), user).toMatchObject({ suppressed_for_fraud: true });
    }

    for (const r of [restarted, b]) {
      const verified = await fleet.cli(r, ['audit', 'verify']);
      expect(verified.code, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/^audit ledger \(postgres\): intact, \d+ records from 2 writers/);
    }
    log(
      `${BLOCKED.length} suppressions executed; ${atKill.executed ?? 0} before the kill; ` +
        `${sandbox.segment.duplicates - duplicatesBefore} Segment messages deduplicated`,
    );
  }, 300_000);
});
