/**
 * `audit verify` and `audit export` on a live PostgreSQL fleet. Record ids come from a sequence at
 * INSERT but are visible at COMMIT: a slow transactional append (the approval desk's) holds a lower
 * id than records other replicas commit meanwhile. A scan paged in fresh snapshots passed that id
 * before it became visible and never came back: verify called the record deleted, export left it
 * out. The scan now reads every page in one snapshot.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditAppendInput } from '../../src/governance/audit.ts';
import {
  createAuditLedger,
  exportLedger,
  verifyAuditFile,
  verifyLedger,
  type LedgerEngine,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';
import { PG_URL, pgListening } from './engines.ts';

const schema = 'ledger_h_scan';
const keys = generateKeyPairSync('ed25519');
const verifier = createCheckpointVerifier(keys.publicKey);
const dir = mkdtempSync(join(tmpdir(), 'fraudgate-ledger-scan-'));
let sql: SqlDatabase | undefined;
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (!sql) return;
  await sql.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await sql.close();
});

const entry = (n: number): AuditAppendInput => ({
  event: 'executed',
  call_id: `c-${n}`,
  tool: 'get_sift_score',
  principal: { id: 'analyst@corp.test', kind: 'user', role: 'analyst' },
});

describe.skipIf(!pgListening)('PostgreSQL ledger scan on a live fleet', () => {
  it('verify and export see every writer whole while a slow transaction commits a lower id mid-scan', async () => {
    const db = openPostgresDatabase(PG_URL, { schema, poolSize: 4 });
    sql = db;
    await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await db.execute(`CREATE SCHEMA ${schema}`);
    const engine = await openPostgresLedgerStore({ sql: db });
    const replica = (writer: string) =>
      createAuditLedger({
        engine,
        writer,
        redactor: createRedactor({ hashKey: 'k' }),
        signer: createCheckpointSigner(keys.privateKey),
        checkpointEvery: 1000,
      });
    const a = replica('replica-a');
    const b = replica('replica-b');
    try {
      await a.append(entry(1));
      await b.append(entry(2));
      // replica-a's transactional append takes its id now and commits only when released.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const didInsert = new Promise<void>((resolve) => (inserted = resolve));
      const slow = db.transaction(async (tx) => {
        await a.appendIn(tx, entry(3));
        inserted();
        await held;
      });
      await didInsert;
      await b.append(entry(4));
      await b.append(entry(5));

      /** Pages of three, so a page boundary falls after replica-b's records; the slow append commits there. */
      const interleaved = (): LedgerEngine => ({
        ...engine,
        async *scan() {
          let first = true;
          for await (const page of engine.scan(3)) {
            yield page;
            if (!first) continue;
            first = false;
            release();
            await slow;
            await a.append(entry(6));
          }
        },
      });

      expect(await verifyLedger(interleaved(), verifier)).toMatchObject({ ok: true, writers: 2 });

      // Round two: another slow append, another export across it.
      const again = new Promise<void>((resolve) => (release = resolve));
      const slowAgain = db.transaction(async (tx) => {
        await a.appendIn(tx, entry(7));
        await again;
      });
      await b.append(entry(8));
      let exported = '';
      const exporting = interleaved();
      exporting.scan = async function* () {
        let first = true;
        for await (const page of engine.scan(3)) {
          yield page;
          if (!first) continue;
          first = false;
          release();
          await slowAgain;
        }
      };
      for await (const chunk of exportLedger(exporting)) exported += chunk;
      const records = exported
        .split('\n')
        .filter((line) => line.startsWith('{') && !line.includes('"type":"checkpoint"'))
        .map((line) => JSON.parse(line) as { writer: string; seq: number });
      const seqs = (writer: string) => records.filter((r) => r.writer === writer).map((r) => r.seq);
      // Everything committed when the export began: replica-a 1..3 (its seq 4 committed mid-export,
      // for the next one), replica-b 1..4.
      expect(seqs('replica-a')).toEqual([1, 2, 3]);
      expect(seqs('replica-b')).toEqual([1, 2, 3, 4]);
      const file = join(dir, 'export.jsonl');
      writeFileSync(file, exported);
      expect(await verifyAuditFile(file, verifier)).toMatchObject({ ok: true, format: 'ledger' });

      // Quiescent, the next scan has everything.
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 8 });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a consumer that stops early ends the scan transaction and frees its connection', async () => {
    const db = openPostgresDatabase(PG_URL, { schema: 'ledger_h_scan_stop', poolSize: 1 });
    try {
      await db.execute('DROP SCHEMA IF EXISTS ledger_h_scan_stop CASCADE');
      await db.execute('CREATE SCHEMA ledger_h_scan_stop');
      const engine = await openPostgresLedgerStore({ sql: db });
      const log = createAuditLedger({
        engine,
        writer: 'replica-a',
        redactor: createRedactor({ hashKey: 'k' }),
        signer: createCheckpointSigner(keys.privateKey),
      });
      for (let n = 1; n <= 5; n++) await log.append(entry(n));
      await log.close();
      for await (const page of engine.scan(2)) {
        expect(page).toHaveLength(2);
        break;
      }
      // The pool's one connection is free again (a scan left open would hold it).
      expect(await db.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    } finally {
      await db.execute('DROP SCHEMA IF EXISTS ledger_h_scan_stop CASCADE');
      await db.close();
    }
  });
});
