/**
 * Statements prepared by name on PostgreSQL (src/store/sql.ts `prepareAs`): the ledger's group
 * commit is parsed and planned once per connection instead of once per group, and still commits
 * (and loses its compare-and-set) as before once prepared.
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuditLedger, verifyLedger, type LedgerEngine } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';
import { PG_URL, pgListening } from './engines.ts';

const schema = 'fg_pgledger_prepared';
const denied = (n: number) => ({
  event: 'denied' as const,
  call_id: `c${n}`,
  tool: 't',
  principal: { id: 'ana@example.com', kind: 'user' as const, role: 'analyst' },
});
const opened: SqlDatabase[] = [];
afterAll(async () => {
  if (opened[0]) await opened[0].execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  for (const db of opened) await db.close();
});

/** One connection, so the session the statements are prepared on is the one asked about. */
async function openOneConnection() {
  const db = openPostgresDatabase(PG_URL, { schema, poolSize: 1 });
  opened.push(db);
  await db.execute(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  return db;
}

const preparedNames = async (db: SqlDatabase) =>
  (await db.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).map(
    (r) => r.name,
  );

describe.skipIf(!pgListening)('PostgreSQL prepared statements', () => {
  it('a query with prepareAs is prepared on its connection and answers as before; others are not', async () => {
    const db = await openOneConnection();
    expect(await db.query('SELECT $1::int AS n', [1])).toEqual([{ n: 1 }]);
    expect(await preparedNames(db)).toEqual([]);
    for (const n of [2, 3]) {
      expect(await db.query('SELECT $1::int AS n', [n], { prepareAs: 'fg_test_n' })).toEqual([{ n }]);
    }
    await db.transaction(async (tx) => {
      expect(await tx.query('SELECT $1::int AS n', [4], { prepareAs: 'fg_test_n' })).toEqual([{ n: 4 }]);
    });
    expect(await preparedNames(db)).toEqual(['fg_test_n']);
  });

  it("the ledger's group commit runs prepared, and loses its compare-and-set to another process as before", async () => {
    const db = await openOneConnection();
    const keys = generateKeyPairSync('ed25519');
    const ledgerOn = (engine: LedgerEngine) =>
      createAuditLedger({
        engine,
        writer: 'prepared',
        redactor: createRedactor({ hashKey: 'k' }),
        signer: createCheckpointSigner(keys.privateKey),
      });
    const engine = await openPostgresLedgerStore({ sql: db });
    // Another process under the same writer id: its own engine, which knows nothing of this one's head.
    const other = await openPostgresLedgerStore({ sql: db });
    const ours = ledgerOn(engine);
    const theirs = ledgerOn(other);
    for (let i = 0; i < 3; i++) await ours.append(denied(i));
    expect(await preparedNames(db)).toEqual(['fraudgate_ledger_commit']);
    await theirs.append(denied(3));
    // Chained on the head it last left, so the prepared compare-and-set loses, re-reads and chains on.
    const record = await ours.append(denied(4));
    expect(record.seq).toBe(5);
    await ours.close();
    await theirs.close();
    expect(await verifyLedger(engine, createCheckpointVerifier(keys.publicKey))).toMatchObject({
      ok: true,
      records: 5,
    });
  });
});
