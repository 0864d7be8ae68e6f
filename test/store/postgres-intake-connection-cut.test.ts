/**
 * Webhook ingest on PostgreSQL when the connection is cut while the one statement that stores a
 * group of new events with their receipts (src/store/postgres/ledger-rider.ts) is on its way: the
 * store reaches PostgreSQL through a TCP forwarder the test cuts. The callers of the cut group get
 * an error (never a false ack), whether or not PostgreSQL went on to commit the statement; the same
 * webhooks delivered again after the store reconnects leave every event stored once, one
 * `webhook_accepted` receipt per event (the redeliveries' receipts say duplicate when the cut
 * statement did commit), and a ledger that verifies.
 *
 * Two cuts: one while PostgreSQL holds the statement (it waits for a lock the test holds on the
 * writer's head, then commits after the client is gone: the in-doubt case), and one right after
 * the statement is handed to the socket, before PostgreSQL can have answered.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { openLedgerEngine } from '../../src/runtime.ts';
import type { EnqueuedEvent } from '../../src/store/outbox-store.ts';
import { openStoreWithLedger, storedAuditRecords, testSigningKeyPem } from '../helpers/audit.ts';
import { startTcpForwarder, type TcpForwarder } from '../helpers/tcp-forwarder.ts';
import { ENGINES, PG_URL, pgListening } from './engines.ts';

const principal = { id: 'automation:sift-webhook', kind: 'automation' as const, role: 'analyst' };
const event = (i: number) => ({
  entityType: 'user',
  entityId: `u${i}`,
  decisionId: 'watch',
  time: 1_000 + i,
});
const receipt = (callId: string, i: number) => ({
  call_id: callId,
  principal,
  tool: 'sift_webhook',
  target: `sift_user:u${i}`,
});

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** The one statement of the intake: the ledger's commit carrying the events. */
const isIntakeStatement = (config: unknown) =>
  typeof config === 'object' &&
  config !== null &&
  (config as { name?: unknown }).name === 'fraudgate_ledger_commit_outbox_events';

/** Runs `onSent` right after node-postgres is handed the intake statement, while `fn` runs. */
async function whenIntakeStatementSent(onSent: () => void, fn: () => Promise<void>): Promise<void> {
  const query = pg.Client.prototype.query;
  let fired = false;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const result = (query as (...a: unknown[]) => unknown).apply(this, args);
    if (!fired && isIntakeStatement(args[0])) {
      fired = true;
      onSent();
    }
    return result;
  } as typeof query;
  try {
    await fn();
  } finally {
    pg.Client.prototype.query = query;
  }
}

/** A PostgreSQL store and its ledger reaching the server through a forwarder the test can cut. */
async function intakeThroughForwarder(writer: string) {
  const target = new URL(PG_URL);
  const forwarder: TcpForwarder = await startTcpForwarder({
    host: target.hostname,
    port: Number(target.port || 5432),
  });
  closers.push(() => forwarder.close());
  const viaForwarder = new URL(PG_URL);
  viaForwarder.port = String(forwarder.port);
  const { config, secrets: base } = ENGINES.find((e) => e.name === 'PostgreSQL')!.fresh();
  const secrets = {
    ...base,
    postgresUrl: viaForwarder.toString(),
    auditKey: 'intake-cut-key',
    auditSigningKey: testSigningKeyPem(),
  };
  const { store, audit } = await openStoreWithLedger(config, secrets, writer, closers);
  /** Deliveries of events `from`..`from+n-1`, enqueued together (one group), each settled. */
  const deliver = (from: number, n: number, callPrefix: string) =>
    Promise.allSettled(
      Array.from({ length: n }, (_, i) =>
        store.outbox.enqueue(event(from + i), undefined, {
          audit,
          receipt: receipt(`${callPrefix}-${from + i}`, from + i),
        }),
      ),
    );
  /** The same deliveries once the store answers again (the first try may meet a dead pooled connection). */
  const redeliver = async (from: number, n: number, callPrefix: string): Promise<EnqueuedEvent[]> => {
    for (let attempt = 1; ; attempt += 1) {
      const settled = await deliver(from, n, `${callPrefix}${attempt}`);
      if (settled.every((s) => s.status === 'fulfilled')) return settled.map((s) => s.value);
      if (attempt === 5) throw (settled.find((s) => s.status === 'rejected') as PromiseRejectedResult).reason;
    }
  };
  /** Every event stored once; per event one accepted receipt, and each delivery's receipt names it. */
  const expectExactlyOnce = async (events: number) => {
    const stored = await store.outbox.unrouted(10_000);
    expect(stored).toHaveLength(events);
    expect(new Set(stored.map((e) => e.entityId)).size).toBe(events);
    await audit.flush();
    const records = await storedAuditRecords(config, undefined, secrets);
    const receipts = records.filter((r) => r.tool === 'sift_webhook');
    for (const e of stored) {
      const ofEvent = receipts.filter((r) => r.target === `sift_user:${e.entityId}`);
      expect(
        ofEvent.filter((r) => r.event === 'webhook_accepted'),
        e.entityId,
      ).toHaveLength(1);
      for (const r of ofEvent) expect(r.outcome?.message).toBe(`outbox event ${e.id}`);
    }
    const ledger = await openLedgerEngine(config, secrets, { store });
    const pem = secrets.auditSigningKey;
    expect(
      await verifyLedger(ledger, createCheckpointVerifier(createPublicKey(createPrivateKey(pem)))),
    ).toMatchObject({ ok: true });
    return receipts;
  };
  return { schema: config.store_postgres.schema, forwarder, deliver, redeliver, expectExactlyOnce };
}

/** The backends waiting for a lock `admin` holds, and what they run. */
async function blockedBy(admin: pg.Client): Promise<{ pid: number; query: string }[]> {
  const { rows } = await admin.query<{ pid: number; query: string }>(
    'SELECT pid, query FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))',
  );
  return rows;
}

async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe.skipIf(!pgListening)(
  'webhook intake on PostgreSQL: the connection cut under the one statement',
  () => {
    it('fails the cut group that PostgreSQL commits after the client is gone; redelivered, every event is stored once', async () => {
      const { schema, forwarder, deliver, redeliver, expectExactlyOnce } =
        await intakeThroughForwarder('replica-cut-held');
      // The writer's head exists, the statement is prepared and event ids are reserved.
      expect((await deliver(0, 10, 'first')).every((s) => s.status === 'fulfilled')).toBe(true);

      // The test holds the writer's head, so PostgreSQL holds the next group's statement mid-way.
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      closers.push(() => admin.end());
      await admin.query('BEGIN');
      await admin.query(`SELECT 1 FROM ${schema}.audit_writers WHERE writer = 'replica-cut-held' FOR UPDATE`);
      let sent = false;
      let held: { pid: number; query: string } | undefined;
      let settled: PromiseSettledResult<EnqueuedEvent>[] = [];
      await whenIntakeStatementSent(
        () => (sent = true),
        async () => {
          const cut = deliver(10, 10, 'cut');
          await until(async () => (await blockedBy(admin)).length > 0);
          [held] = await blockedBy(admin);
          forwarder.cut();
          settled = await cut;
        },
      );
      // What PostgreSQL held was the intake statement (the ledger's commit carrying the events).
      expect(sent).toBe(true);
      expect(held!.query).toMatch(/^\s*WITH moved AS/);
      expect(settled.map((s) => s.status)).toEqual(Array(10).fill('rejected'));

      // Released, the statement commits although its client is gone.
      await admin.query('COMMIT');
      await until(
        async () =>
          (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [held!.pid])).rows.length === 0,
      );
      forwarder.restore();
      const again = await redeliver(10, 10, 'again');
      expect(again.every((s) => s.duplicate)).toBe(true);

      const receipts = await expectExactlyOnce(20);
      expect(receipts.filter((r) => r.call_id.startsWith('cut-'))).toHaveLength(10);
    });

    it('fails a group cut right after its statement is sent; redelivered, every event is stored once', async () => {
      const { forwarder, deliver, redeliver, expectExactlyOnce } =
        await intakeThroughForwarder('replica-cut-sent');
      expect((await deliver(0, 10, 'first')).every((s) => s.status === 'fulfilled')).toBe(true);

      let settled: PromiseSettledResult<EnqueuedEvent>[] = [];
      await whenIntakeStatementSent(
        () => forwarder.cut(),
        async () => {
          settled = await deliver(10, 10, 'cut');
        },
      );
      expect(settled.map((s) => s.status)).toEqual(Array(10).fill('rejected'));

      forwarder.restore();
      await redeliver(10, 10, 'again');
      // Whether PostgreSQL saw the statement or not, each event is there once, accepted once.
      await expectExactlyOnce(20);
    });
  },
);
