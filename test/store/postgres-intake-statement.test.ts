/**
 * Webhook ingest on PostgreSQL (bench ingest_per_s_postgres): a group of new events and their
 * receipt records commits in ONE statement, the ledger's group commit carrying the events
 * (src/store/postgres/ledger-rider.ts), instead of a six-statement transaction. Counted at the
 * driver: what node-postgres sends. A group with a key stored already, or one whose writer's head
 * another process moved, commits nothing that way and takes the transaction, which records the
 * repeat as a duplicate and re-reads the head; the chain verifies and every receipt names its event.
 * An audit log that does not append through its ledger's commit still gets its events stored. The
 * next block of event ids is reserved before the last one runs out.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditLog } from '../../src/governance/audit.ts';
import { createAuditLedger, verifyLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openLedgerEngine } from '../../src/runtime.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openStore } from '../../src/store/store.ts';
import { openStoreWithLedger, storedAuditRecords, testSigningKeyPem } from '../helpers/audit.ts';
import { ENGINES, pgListening } from './engines.ts';

const principal = { id: 'automation:sift-webhook', kind: 'automation' as const, role: 'analyst' };
const event = (i: number) => ({
  entityType: 'user',
  entityId: `u${i}`,
  decisionId: 'watch',
  time: 1_000 + i,
});
const receipt = (i: number) => ({
  call_id: `call-${i}`,
  principal,
  tool: 'sift_webhook',
  target: `sift_user:u${i}`,
});

/** The statements node-postgres sends while `fn` runs (their first words). */
async function statementsDuring(fn: () => Promise<unknown>): Promise<string[]> {
  const sent: string[] = [];
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const config = args[0] as string | { text?: string };
    const text = typeof config === 'string' ? config : (config.text ?? '');
    sent.push(text.trim().split(/\s+/).slice(0, 3).join(' '));
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  try {
    await fn();
  } finally {
    pg.Client.prototype.query = query;
  }
  return sent;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/**
 * A fresh PostgreSQL store and its ledger under `writer`, and `group(from, n)`: n new webhook events
 * (numbered from `from`) enqueued together with their receipts, as the intake sends them.
 */
async function intake(writer: string) {
  const { config, secrets: base } = ENGINES.find((e) => e.name === 'PostgreSQL')!.fresh();
  const secrets = { ...base, auditKey: 'intake-statement-key', auditSigningKey: testSigningKeyPem() };
  const { store, audit } = await openStoreWithLedger(config, secrets, writer, closers);
  const group = (from: number, n: number) =>
    Promise.all(
      Array.from({ length: n }, (_, i) =>
        store.outbox.enqueue(event(from + i), undefined, { audit, receipt: receipt(from + i) }),
      ),
    );
  return { config, secrets, store, audit, group };
}

describe.skipIf(!pgListening)('webhook receipts on PostgreSQL: one statement per group', () => {
  it('commits a group of new events with their receipts in one statement; repeats and a moved head take the transaction', async () => {
    const { config, secrets, store, audit, group } = await intake('replica-s');
    const pem = secrets.auditSigningKey;

    // The first group also reads the writer's (absent) head and reserves a block of event ids.
    await group(0, 20);
    let second: Awaited<ReturnType<typeof group>> = [];
    const sent = await statementsDuring(async () => {
      second = await group(20, 40);
    });
    expect(sent).toEqual(['WITH moved AS']);
    expect(second.every((s) => !s.duplicate)).toBe(true);

    // A key stored already: the statement fails on the unique index, the transaction takes the group.
    let third: Awaited<ReturnType<typeof group>> = [];
    const fallback = await statementsDuring(async () => {
      third = await Promise.all([
        store.outbox.enqueue(event(25), undefined, { audit, receipt: receipt(1025) }),
        store.outbox.enqueue(event(60), undefined, { audit, receipt: receipt(60) }),
      ]);
    });
    expect(fallback).toContain('BEGIN');
    expect(third[0]).toEqual({ id: second[5]!.id, duplicate: true });
    expect(third[1]!.duplicate).toBe(false);

    // This process knows its head again (it read it for this group, after the failed statement)...
    await group(100, 5);
    // ...when another process under the same writer id moves it: the statement loses, the transaction re-reads.
    const other = createAuditLedger({
      engine: await openPostgresLedgerStore({ sql: store.sql }),
      writer: audit.writer,
      redactor: createRedactor({ hashKey: 'intake-statement-key' }),
      signer: createCheckpointSigner(createPrivateKey(pem)),
    });
    await other.append({ event: 'denied', call_id: 'other-1', tool: 't', principal });
    await other.close();
    let fourth: Awaited<ReturnType<typeof group>> = [];
    expect(
      await statementsDuring(async () => {
        fourth = await group(61, 10);
      }),
    ).toEqual(expect.arrayContaining(['WITH moved AS', 'BEGIN', 'COMMIT']));
    expect(fourth.every((s) => !s.duplicate)).toBe(true);
    expect(new Set([...second, ...third, ...fourth].map((s) => s.id)).size).toBe(51);

    expect(await store.outbox.unrouted(1000)).toHaveLength(76);
    await audit.close();
    const records = await storedAuditRecords(config, undefined, secrets);
    const receipts = records.filter((r) => r.tool === 'sift_webhook');
    expect(receipts).toHaveLength(77);
    const outcomeOf = (callId: string) => receipts.find((r) => r.call_id === callId);
    expect(outcomeOf('call-1025')).toMatchObject({
      event: 'webhook_duplicate',
      outcome: { message: `outbox event ${second[5]!.id}` },
    });
    expect(outcomeOf('call-30')).toMatchObject({
      event: 'webhook_accepted',
      outcome: { message: `outbox event ${second[10]!.id}` },
    });
    const ledger = await openLedgerEngine(config, secrets, { store });
    expect(
      await verifyLedger(ledger, createCheckpointVerifier(createPublicKey(createPrivateKey(pem)))),
    ).toMatchObject({ ok: true, records: 78, writers: 1 });
  });

  it('stores the events the transaction way when the audit log appends elsewhere (a sink that drops records)', async () => {
    const { config, secrets } = ENGINES.find((e) => e.name === 'PostgreSQL')!.fresh();
    const store = await openStore(config, secrets);
    closers.push(() => store.close());
    const sink = { appendManyIn: async () => [] } as unknown as AuditLog;
    const stored = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        store.outbox.enqueue(event(i), undefined, { audit: sink, receipt: receipt(i) }),
      ),
    );
    expect(stored.every((s) => !s.duplicate)).toBe(true);
    expect((await store.outbox.unrouted(10)).map((e) => e.id)).toEqual(stored.map((s) => s.id));
  });

  it('reserves the next block of event ids before the last one runs out, so no group waits for it', async () => {
    const { store, group } = await intake('replica-b');
    await group(0, 20);
    // 620 of the first block of 1,000 used: the next is reserved alongside this group's commit...
    expect(await statementsDuring(() => group(20, 600))).toContain('WITH moved AS');
    // ...so the group that needs it (400 ids, 380 left) finds it there.
    expect(await statementsDuring(() => group(620, 400))).toEqual(['WITH moved AS']);
    expect(await store.outbox.unrouted(2000)).toHaveLength(1020);
  });
});
