/**
 * The ledger's group commits on PostgreSQL (bench ledger_appends_postgres). Statements prepared by
 * name (src/store/sql.ts `prepareAs`): the group commit is parsed and planned once per connection
 * instead of once per group, and still commits (and loses its compare-and-set) as before once
 * prepared. And a queue is not split in two there (src/governance/audit-ledger.ts `splitPays`): a
 * writer's commits go one after another, so a split only paid a second commit for the same records.
 * A record is sent as columns of text: one that holds a separator is refused, not stored shifted.
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

const schema = 'fg_pgledger_commit';
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

  it('appends made together go in one commit, not split in two', async () => {
    const db = await openOneConnection();
    const engine = await openPostgresLedgerStore({ sql: db });
    const groups: number[] = [];
    const counting: LedgerEngine = {
      ...engine,
      commit: (writer, build) =>
        engine.commit(writer, (head) => {
          const built = build(head);
          groups.push(built.rows.length);
          return built;
        }),
    };
    const keys = generateKeyPairSync('ed25519');
    const log = createAuditLedger({
      engine: counting,
      writer: 'grouped',
      redactor: createRedactor({ hashKey: 'k' }),
      signer: createCheckpointSigner(keys.privateKey),
    });
    const records = await Promise.all(Array.from({ length: 256 }, (_, i) => log.append(denied(i))));
    await log.close();
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 256 }, (_, i) => i + 1));
    expect(groups[0]).toBe(256);
  });

  it('refuses a record holding a separator of its columns (a body over two lines) and stores nothing', async () => {
    const db = await openOneConnection();
    const engine = await openPostgresLedgerStore({ sql: db });
    const row = { writer: 'split', seq: 1, ts: new Date(0).toISOString(), prev_hash: 'p', hash: 'h' };
    await expect(
      engine.commit('split', () => ({
        rows: [{ ...row, body: '{"a":\n1}' }],
        checkpoints: [],
        head: { seq: 1, hash: 'h', sealed_seq: 0, sealed_at: row.ts },
      })),
    ).rejects.toThrow('holds a separator');
    expect(await db.query("SELECT seq FROM audit_writers WHERE writer = 'split'")).toEqual([]);
    // The refused group's head was never taken for the writer's: the next group chains from nothing
    // at once (from the refused head it would lose a round trip first, and be built again).
    const chainedFrom: unknown[] = [];
    await engine.commit('split', (head) => {
      chainedFrom.push(head);
      return {
        rows: [{ ...row, body: '{"a":1}' }],
        checkpoints: [],
        head: { seq: 1, hash: 'h', sealed_seq: 0, sealed_at: row.ts },
      };
    });
    expect(chainedFrom).toEqual([undefined]);
    expect(await db.query("SELECT seq FROM audit_writers WHERE writer = 'split'")).toEqual([{ seq: 1 }]);
  });
});
