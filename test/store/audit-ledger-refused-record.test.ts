/**
 * A record the PostgreSQL ledger refuses (a body over two lines would shift the columns of its
 * commit statement, as would a comma in its time; only a bug, mocked here for one target each, can
 * make one) is replaced by a record saying so, with a time of its own, and its group commits: a
 * write-behind read's record is not retried for ever with calls refused meanwhile, an append gets
 * the stand-in, and a webhook's receipt still rides on the one intake statement with its event.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type * as AuditModule from '../../src/governance/audit.ts';
import type { AuditAppendInput, AuditPayload } from '../../src/governance/audit.ts';
import { createAuditLedger, verifyLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { silentLogger } from '../../src/logger.ts';
import { openAuditLedger } from '../../src/runtime.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openStore } from '../../src/store/store.ts';
import { storedAuditRecords, testSigningKeyPem } from '../helpers/audit.ts';
import { dropSchema, ENGINES, PG_URL, pgListening } from './engines.ts';

vi.mock('../../src/governance/audit.ts', async (importOriginal) => {
  const actual = await importOriginal<typeof AuditModule>();
  return {
    ...actual,
    buildAuditPayload: (...args: Parameters<typeof actual.buildAuditPayload>) => {
      const payload = actual.buildAuditPayload(...args);
      // A separator of the commit statement in the time itself (as a bug in its formatting would put).
      return payload.target === 'sift_user:comma-time'
        ? { ...payload, ts: payload.ts.replace('.', ',') }
        : payload;
    },
    encodeAuditBody: (payload: AuditPayload) => {
      const body = actual.encodeAuditBody(payload);
      return payload.target === 'sift_user:poison' ? body.replace('{', '{\n') : body;
    },
  };
});

const POISON = 'sift_user:poison';
const analyst = { id: 'analyst@corp.test', kind: 'user', role: 'analyst' } as const;
const keys = generateKeyPairSync('ed25519');
const verifier = createCheckpointVerifier(keys.publicKey);
const read = (callId: string, target: string): AuditAppendInput => ({
  event: 'executed',
  call_id: callId,
  tool: 'get_sift_score',
  principal: analyst,
  target,
});

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function ledgerOnPostgres() {
  const schema = `fg_refused_${process.pid}_${randomBytes(4).toString('hex')}`;
  cleanups.push(() => dropSchema(schema));
  const engine = await openPostgresLedgerStore({ url: PG_URL, schema });
  cleanups.push(() => engine.close());
  const health: unknown[] = [];
  const log = createAuditLedger({
    engine,
    writer: 'refusing',
    redactor: createRedactor({ hashKey: 'refused-key' }),
    signer: createCheckpointSigner(keys.privateKey),
    writeBehindLingerMs: 60_000,
    onHealthChange: (h) => health.push(h),
  });
  cleanups.push(() => log.close());
  const bodies = async () => {
    const out: Record<string, unknown>[] = [];
    for await (const batch of engine.scan()) {
      for (const row of batch) out.push(JSON.parse(row.body) as Record<string, unknown>);
    }
    return out;
  };
  return { engine, log, health, bodies };
}

describe.skipIf(!pgListening)('a record the PostgreSQL ledger refuses', () => {
  it('is replaced in a write-behind group, which commits: the ledger stays writable', async () => {
    const { engine, log, health, bodies } = await ledgerOnPostgres();
    log.enqueue(read('call-1', POISON));
    log.enqueue(read('call-2', 'sift_user:fine'));
    await log.flush();
    expect(health).toEqual([]);
    expect(() => log.assertWritable()).not.toThrow();
    const stored = await bodies();
    expect(stored.map((b) => b.call_id)).toEqual(['call-1', 'call-2']);
    expect(stored[0]).toMatchObject({
      event: 'executed',
      tool: 'get_sift_score',
      principal: analyst,
      detail: 'the audit record could not be stored (LedgerRecordRefusedError)',
    });
    expect(stored[0]!.target).toBeUndefined();
    expect(stored[1]!.target).toBe('sift_user:fine');
    expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 2 });
  });

  it('whose time holds a separator is replaced by a stand-in with a well-formed time, which commits', async () => {
    const { engine, log, health, bodies } = await ledgerOnPostgres();
    const [refused, fine] = await Promise.all([
      log.append(read('call-1', 'sift_user:comma-time')),
      log.append(read('call-2', 'sift_user:fine')),
    ]);
    expect(refused).toMatchObject({ seq: 1, call_id: 'call-1', detail: expect.stringMatching(/stored/) });
    expect(fine).toMatchObject({ seq: 2, target: 'sift_user:fine' });
    expect(health).toEqual([]);
    const stored = await bodies();
    expect(stored.map((b) => b.call_id)).toEqual(['call-1', 'call-2']);
    expect(stored[0]!.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 2 });
  });

  it('is replaced for an append, which resolves with the stand-in; its group commits', async () => {
    const { engine, log, bodies } = await ledgerOnPostgres();
    const [poisoned, fine] = await Promise.all([
      log.append(read('call-1', POISON)),
      log.append(read('call-2', 'sift_user:fine')),
    ]);
    expect(poisoned).toMatchObject({ seq: 1, call_id: 'call-1', detail: expect.stringMatching(/stored/) });
    expect(fine).toMatchObject({ seq: 2, target: 'sift_user:fine' });
    expect((await bodies()).map((b) => b.call_id)).toEqual(['call-1', 'call-2']);
    expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 2 });
  });

  it("is replaced in a webhook group's receipts, which still commit with their events", async () => {
    const { config, secrets: base } = ENGINES.find((e) => e.name === 'PostgreSQL')!.fresh();
    const secrets = { ...base, auditKey: 'refused-key', auditSigningKey: testSigningKeyPem() };
    const store = await openStore(config, secrets);
    cleanups.push(() => store.close());
    const audit = await openAuditLedger(
      config,
      secrets,
      createRedactor({ hashKey: 'refused-key' }),
      silentLogger,
      'refusing-intake',
      store,
    );
    cleanups.push(() => audit.close());
    const principal = { id: 'automation:sift-webhook', kind: 'automation' as const, role: 'analyst' };
    const stored = await Promise.all(
      ['poison', 'fine'].map((user, i) =>
        store.outbox.enqueue(
          { entityType: 'user', entityId: user, decisionId: 'watch', time: 1_000 + i },
          undefined,
          {
            audit,
            receipt: {
              call_id: `call-${user}`,
              principal,
              tool: 'sift_webhook',
              target: `sift_user:${user}`,
            },
          },
        ),
      ),
    );
    expect(stored.map((s) => s.duplicate)).toEqual([false, false]);
    expect(await store.outbox.unrouted(10)).toHaveLength(2);
    const receipts = (await storedAuditRecords(config, audit, secrets)).filter(
      (r) => r.tool === 'sift_webhook',
    );
    expect(receipts.map((r) => [r.call_id, r.event])).toEqual([
      ['call-poison', 'webhook_accepted'],
      ['call-fine', 'webhook_accepted'],
    ]);
    expect(receipts[0]!.detail).toBe('the audit record could not be stored (LedgerRecordRefusedError)');
  });
});
