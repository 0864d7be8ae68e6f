/**
 * A ledger commit on PostgreSQL whose connection is cut while PostgreSQL holds it: the client sees a
 * failure, PostgreSQL commits the statement once the lock it waited for is released. The group's
 * write-behind records (reads) are kept for the retry; re-sent as they were, they were stored twice.
 * The retry now asks the store whether the in-doubt group landed, and drops its records if so. The
 * store is reached through a TCP forwarder the test cuts (test/helpers/tcp-forwarder.ts).
 *
 * With more write-behind records than one commit carries, two commits are in flight: the landed
 * group's records, back at the front of the queue, span the next two batches, and the second was
 * once sent unchecked (stored twice). In-doubt groups are now settled against the whole queue by a
 * commit running alone.
 */
import { generateKeyPairSync } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditAppendInput } from '../../src/governance/audit.ts';
import {
  createAuditLedger,
  verifyLedger,
  type LedgerEngine,
  type LedgerHead,
  type LedgerRow,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import { startTcpForwarder } from '../helpers/tcp-forwarder.ts';
import { PG_URL, pgListening } from './engines.ts';

const keys = generateKeyPairSync('ed25519');
const read = (n: number): AuditAppendInput => ({
  event: 'executed',
  call_id: `read-${n}`,
  tool: 'get_sift_score',
  principal: { id: 'analyst@corp.test', kind: 'user', role: 'analyst' },
});
/** More reads than one commit carries (MAX_GROUP, 2048): the flush starts two commits at once. */
const MANY = 3000;

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
});

async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.skipIf(!pgListening)('PostgreSQL ledger commit in doubt', () => {
  /**
   * A ledger on its own schema, reached through a forwarder; one read appended, so the writer's
   * head exists. `strand` enqueues `reads` (from read-1), holds the head while their commits are
   * sent, cuts the connection under them, then lets PostgreSQL commit what it holds and restores.
   */
  async function setUp(schema: string) {
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    closers.push(() => admin.end());
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.query(`CREATE SCHEMA ${schema}`);
    closers.push(() => admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));

    const target = new URL(PG_URL);
    const forwarder = await startTcpForwarder({ host: target.hostname, port: Number(target.port || 5432) });
    closers.push(() => forwarder.close());
    const viaForwarder = new URL(PG_URL);
    viaForwarder.port = String(forwarder.port);
    const db = openPostgresDatabase(viaForwarder.toString(), { schema, poolSize: 2, lockTimeoutMs: 0 });
    closers.push(() => db.close());
    const engine = await openPostgresLedgerStore({ sql: db });
    const log = createAuditLedger({
      engine,
      writer: 'replica-a',
      redactor: createRedactor({ hashKey: 'k' }),
      signer: createCheckpointSigner(keys.privateKey),
      retryMs: 50,
    });
    closers.push(() => log.close());
    await log.append(read(0));

    const strand = async (reads: number) => {
      // The test holds the writer's head: PostgreSQL holds the next commit mid-way.
      await admin.query('BEGIN');
      await admin.query(`SELECT 1 FROM ${schema}.audit_writers WHERE writer = 'replica-a' FOR UPDATE`);
      for (let n = 1; n <= reads; n += 1) log.enqueue(read(n));
      const flushed = log.flush();
      const blocked = async () =>
        (
          await admin.query<{ pid: number }>(
            'SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))',
          )
        ).rows;
      await until(async () => (await blocked()).length > 0);
      const [held] = await blocked();
      forwarder.cut();
      await flushed;
      expect(log.health().ok).toBe(false);

      // Released, PostgreSQL commits the group although its client is gone.
      await admin.query('COMMIT');
      await until(
        async () =>
          (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [held!.pid])).rows.length === 0,
      );
      forwarder.restore();
      await until(async () => log.health().ok);
      await log.flush();
    };

    const storedCalls = async () =>
      (
        await admin.query<{ body: string }>(
          `SELECT body FROM ${schema}.audit_records WHERE writer = 'replica-a' ORDER BY seq`,
        )
      ).rows.map((r) => (JSON.parse(r.body) as { call_id: string }).call_id);

    return { engine, log, strand, storedCalls };
  }

  it('write-behind records of a commit that landed after its connection was cut are stored once', async () => {
    const { engine, strand, storedCalls } = await setUp('ledger_h_doubt');
    await strand(3);
    expect(await storedCalls()).toEqual(['read-0', 'read-1', 'read-2', 'read-3']);
    expect(await verifyLedger(engine, createCheckpointVerifier(keys.publicKey))).toMatchObject({ ok: true });
  });

  it('with two commits in flight, the landed group is stored once although its records span the next two batches', async () => {
    const { engine, strand, storedCalls } = await setUp('doubt_ledger_two_in_flight');
    await strand(MANY);
    const calls = await storedCalls();
    expect(new Set(calls).size).toBe(MANY + 1);
    expect(calls).toHaveLength(MANY + 1);
    expect(await verifyLedger(engine, createCheckpointVerifier(keys.publicKey))).toMatchObject({ ok: true });
  });
});

describe('ledger commit in doubt, records spanning two batches (in-memory engine)', () => {
  it('the first commit lands but its answer is lost, the second fails: every record stored once', async () => {
    const rows: LedgerRow[] = [];
    let head: LedgerHead | undefined;
    // Commits of one writer serialise on its head, as PostgreSQL's head lock makes them.
    let lock = Promise.resolve();
    let commits = 0;
    let failing = true;
    const engine: LedgerEngine = {
      kind: 'postgres',
      async commit(_writer, build) {
        const previous = lock;
        let release!: () => void;
        lock = new Promise((resolve) => (release = resolve));
        await previous;
        try {
          commits += 1;
          const built = build(head);
          if (failing && commits === 2) throw new Error('connection lost before the commit was sent');
          rows.push(...built.rows);
          head = built.head;
          if (failing && commits === 1) throw new Error('connection lost after the server committed');
        } finally {
          release();
        }
      },
      commitIn: () => Promise.reject(new Error('not used')),
      async *scan() {
        yield rows;
      },
      checkpoints: () => Promise.resolve([]),
      isStored: (_writer, seq, hash) => Promise.resolve(rows.some((r) => r.seq === seq && r.hash === hash)),
      prune: () => Promise.resolve(0),
      ping: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const log = createAuditLedger({
      engine,
      writer: 'replica-a',
      redactor: createRedactor({ hashKey: 'k' }),
      signer: createCheckpointSigner(keys.privateKey),
      retryMs: 20,
    });
    closers.push(() => log.close());

    for (let n = 1; n <= MANY; n += 1) log.enqueue(read(n));
    await log.flush();
    expect(commits).toBe(2);
    expect(log.health().ok).toBe(false);
    failing = false;
    await until(() => Promise.resolve(log.health().ok));
    await log.flush();

    const calls = rows.map((r) => (JSON.parse(r.body) as { call_id: string }).call_id);
    expect(new Set(calls).size).toBe(MANY);
    expect(calls).toHaveLength(MANY);
  });
});
