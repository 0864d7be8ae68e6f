/**
 * The audit ledger's figures (issue 8, item 8):
 *
 * - appends/s with 256 concurrent appenders, on SQLite and (when 127.0.0.1:5432 answers) on
 *   PostgreSQL: the real ledger (redaction, canonical body, chain hash, checkpoints, group commit)
 *   against a bare writer doing the same inserts of precomputed rows in the same group sizes;
 * - `audit verify` of 1,000,000 records (SQLite), against a bare scan that only reads and hashes
 *   the same rows;
 * - a governed read's latency with the ledger, against the same read with the ledger disabled (an
 *   audit sink that drops records).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { listening } from '../../test/helpers/services.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import pg from 'pg';
import type { Figure, Measurement } from '../harness.ts';
import { openBenchRuntime } from './bench-runtime.ts';
import { timeCalls } from './read.ts';
import type { AuditAppendInput, AuditLog } from '../../src/governance/audit.ts';
import { chainHash, GENESIS_HASH } from '../../src/governance/audit-chain.ts';
import {
  createAuditLedger,
  verifyLedger,
  type LedgerEngine,
  type LedgerRow,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { silentLogger } from '../../src/logger.ts';
import { createMcpServer } from '../../src/server.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const APPENDERS = 256;
const keys = generateKeyPairSync('ed25519');
const redactor = createRedactor({ hashKey: 'bench-audit-key' });

/** What a governed read records: the same shape and size as the pipeline's `executed` record. */
const record = (i: number): AuditAppendInput => ({
  event: 'executed',
  call_id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  tool: 'get_sift_score',
  principal: { id: 'ana.analyst@example.com', kind: 'user', role: 'analyst' },
  args_redacted: { user_id: 'sandbox-high-risk' },
  args_hash: 'a'.repeat(64),
  target: 'sift_user:sandbox-high-risk',
  duration_ms: 3,
});

/** `total` appends by `APPENDERS` concurrent loops, each awaiting its own append before the next. */
async function appendConcurrently(log: AuditLog, total: number): Promise<Measurement> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      for (let i = next++; i < total; i = next++) await log.append(record(i));
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  return { value: total / seconds };
}

/** The bare writer: the same rows, precomputed, inserted in groups of `APPENDERS` per transaction. */
function precomputedRows(writer: string, total: number): LedgerRow[] {
  const body = JSON.stringify(record(0));
  let prev = GENESIS_HASH;
  return Array.from({ length: total }, (_, i) => {
    const hash = chainHash(writer, i + 1, prev, body);
    const row = { writer, seq: i + 1, ts: new Date().toISOString(), body, prev_hash: prev, hash };
    prev = hash;
    return row;
  });
}

function ledgerOn(engine: LedgerEngine, writer: string): AuditLog {
  return createAuditLedger({ engine, writer, redactor, signer: createCheckpointSigner(keys.privateKey) });
}

const appendsSqlite: Figure = {
  id: 'ledger_appends_sqlite',
  title: 'audit ledger appends, 256 concurrent appenders, SQLite',
  unit: 'appends/s',
  better: 'higher',
  baseline: 'bare node:sqlite writer, same rows precomputed, same group size',
  target: '≥ 50,000/s',
  met: (r) => r.fraudgate.median >= 50_000,
  async open({ quick }) {
    const total = quick ? 20_000 : 100_000;
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-ledger-'));
    let run = 0;
    return {
      async fraudgate() {
        const engine = openSqliteLedgerStore(join(dir, `ledger-${++run}.db`));
        const log = ledgerOn(engine, 'bench');
        try {
          return await appendConcurrently(log, total);
        } finally {
          await log.close();
          await engine.close();
        }
      },
      async baseline() {
        const db = new DatabaseSync(join(dir, `bare-${++run}.db`));
        try {
          db.exec(
            'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE r (id INTEGER PRIMARY KEY, writer TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE (writer, seq))',
          );
          const insert = db.prepare(
            'INSERT INTO r (writer, seq, ts, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)',
          );
          const rows = precomputedRows('bench', total);
          const start = performance.now();
          for (let i = 0; i < rows.length; i += APPENDERS) {
            db.exec('BEGIN IMMEDIATE');
            for (const r of rows.slice(i, i + APPENDERS))
              insert.run(r.writer, r.seq, r.ts, r.body, r.prev_hash, r.hash);
            db.exec('COMMIT');
            // Yield as the ledger does between groups, so both sides pay the same event-loop turn.
            await new Promise((resolve) => setImmediate(resolve));
          }
          return { value: total / ((performance.now() - start) / 1000) };
        } finally {
          db.close();
        }
      },
      async close() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

const appendsPostgres: Figure = {
  id: 'ledger_appends_postgres',
  title: 'audit ledger appends, 256 concurrent appenders, PostgreSQL',
  unit: 'appends/s',
  better: 'higher',
  baseline: 'bare pg writer, same rows precomputed, same group size, one INSERT per group',
  target: '≥ 0.8× baseline',
  met: (r) => r.ratio !== null && r.ratio >= 0.8,
  async open({ quick }) {
    const total = quick ? 10_000 : 50_000;
    const schema = `fg_bench_ledger_${process.pid}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    const engine = await openPostgresLedgerStore({ url: PG_URL, schema });
    await admin.query(
      `CREATE TABLE ${schema}.bare (id BIGSERIAL PRIMARY KEY, writer TEXT NOT NULL, seq BIGINT NOT NULL, ts TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE (writer, seq))`,
    );
    let run = 0;
    return {
      async fraudgate() {
        const log = ledgerOn(engine, `bench-${++run}`);
        try {
          return await appendConcurrently(log, total);
        } finally {
          await log.close();
        }
      },
      async baseline() {
        const rows = precomputedRows(`bare-${++run}`, total);
        const start = performance.now();
        for (let i = 0; i < rows.length; i += APPENDERS) {
          const group = rows.slice(i, i + APPENDERS);
          await admin.query('BEGIN');
          await admin.query(
            `INSERT INTO ${schema}.bare (writer, seq, ts, body, prev_hash, hash)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])`,
            [
              group.map((r) => r.writer),
              group.map((r) => r.seq),
              group.map((r) => r.ts),
              group.map((r) => r.body),
              group.map((r) => r.prev_hash),
              group.map((r) => r.hash),
            ],
          );
          await admin.query('COMMIT');
        }
        return { value: total / ((performance.now() - start) / 1000) };
      },
      async close() {
        await engine.close();
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await admin.end();
      },
    };
  },
};

const verifyMillion: Figure = {
  id: 'audit_verify_1m_s',
  title: '`audit verify` of 1,000,000 records, SQLite',
  unit: 's',
  better: 'lower',
  baseline: 'bare scan: read and SHA-256 every row, no checks',
  target: '≤ 3 s',
  met: (r) => r.fraudgate.median <= 3,
  rounds: () => 1,
  warmup: false,
  async open({ quick }) {
    // Quick runs verify 250,000 records and scale to 1,000,000 (verification is linear).
    const total = quick ? 250_000 : 1_000_000;
    const scale = 1_000_000 / total;
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-verify-'));
    const path = join(dir, 'fraudgate.db');
    const engine = openSqliteLedgerStore(path);
    // Built directly (real bodies, chain hashes, signed checkpoints every 1,000), in chunks, not
    // through a million appends: this figure measures verification.
    const signer = createCheckpointSigner(keys.privateKey);
    const seal = (writer: string, seq: number, hash: string) =>
      signer.sign({ writer, seq, hash, ts: new Date().toISOString() });
    for (const writer of ['replica-a', 'replica-b']) {
      const perWriter = total / 2;
      let prev = GENESIS_HASH;
      for (let from = 1; from <= perWriter; from += 50_000) {
        const rows: LedgerRow[] = [];
        const checkpoints = from === 1 ? [seal(writer, 0, GENESIS_HASH)] : [];
        for (let seq = from; seq < from + 50_000 && seq <= perWriter; seq += 1) {
          const body = JSON.stringify(record(seq));
          const hash = chainHash(writer, seq, prev, body);
          rows.push({ writer, seq, ts: new Date().toISOString(), body, prev_hash: prev, hash });
          if (seq % 1000 === 0 || seq === perWriter) checkpoints.push(seal(writer, seq, hash));
          prev = hash;
        }
        const last = rows.at(-1)!;
        const head = {
          seq: last.seq,
          hash: last.hash,
          sealed_seq: last.seq,
          sealed_at: new Date().toISOString(),
        };
        await engine.commit(writer, () => ({ rows, checkpoints, head }));
      }
    }
    const verifier = createCheckpointVerifier(keys.publicKey);
    return {
      async fraudgate() {
        const start = performance.now();
        const result = await verifyLedger(engine, verifier);
        if (!result.ok || result.records !== total)
          throw new Error(`verify failed: ${JSON.stringify(result)}`);
        return { value: ((performance.now() - start) / 1000) * scale, extra: { records: total } };
      },
      async baseline() {
        const db = new DatabaseSync(path, { readOnly: true });
        try {
          const start = performance.now();
          const scan = db.prepare('SELECT writer, seq, body, prev_hash, hash FROM audit_records ORDER BY id');
          scan.setReturnArrays(true);
          let n = 0;
          for (const row of scan.iterate() as Iterable<[string, number, string, string, string]>) {
            chainHash(row[0], row[1], row[3], row[2]);
            n += 1;
          }
          return { value: ((performance.now() - start) / 1000) * scale, extra: { records: n } };
        } finally {
          db.close();
        }
      },
      async close() {
        await engine.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

/** An audit sink that drops every record: the "ledger disabled" side of the read figure. */
const disabledAudit: AuditLog = {
  writer: 'disabled',
  append: async (input) => ({
    ...input,
    v: 2,
    writer: 'disabled',
    seq: 0,
    ts: new Date().toISOString(),
    prev_hash: GENESIS_HASH,
    hash: GENESIS_HASH,
  }),
  appendIn: (_tx, input) => disabledAudit.append(input),
  appendManyIn: (_tx, inputs) => Promise.all(inputs.map((input) => disabledAudit.append(input))),
  enqueue: () => undefined,
  assertWritable: () => undefined,
  health: () => ({ ok: true }),
  flush: async () => undefined,
  close: async () => undefined,
};

const readWithLedger: Figure = {
  id: 'read_ledger_p50_ms',
  title: 'governed read `get_sift_score` with the audit ledger, p50',
  unit: 'ms',
  better: 'lower',
  baseline: 'the same read with the ledger disabled (records dropped)',
  target: '≤ 1.10× baseline',
  met: (r) => r.ratio !== null && r.ratio <= 1.1,
  async open({ quick }) {
    const calls = quick ? 200 : 1000;
    const withLedger = await openBenchRuntime();
    const without = await openBenchRuntime({ audit: disabledAudit });
    const principal = { id: 'bench@example.com', kind: 'user', role: 'analyst' } as const;
    const connectTo = async (bench: typeof withLedger) => {
      const client = new Client({ name: 'bench', version: '0' });
      const [a, b] = InMemoryTransport.createLinkedPair();
      await createMcpServer({ pipeline: bench.runtime.pipeline, principal, logger: silentLogger }).connect(b);
      await client.connect(a);
      await client.listTools();
      return client;
    };
    const ledgerClient = await connectTo(withLedger);
    const bareClient = await connectTo(without);
    // Both sides run the same pipeline code, which keeps getting faster (JIT) for well over the
    // harness's one warm-up run each: measured from there, the side timed first (this one) paid for
    // the other's warm-up too (≈ ×1.5 where steady state is far less). Warm both alike, in turns.
    for (let i = 0; i < 5; i += 1) {
      await timeCalls(ledgerClient, calls);
      await timeCalls(bareClient, calls);
    }
    return {
      fraudgate: () => timeCalls(ledgerClient, calls),
      baseline: () => timeCalls(bareClient, calls),
      async close() {
        await ledgerClient.close();
        await bareClient.close();
        await withLedger.close();
        await without.close();
      },
    };
  },
};

/** The ledger figures for bench/run.ts; the PostgreSQL one only where 127.0.0.1:5432 answers. */
export const ledgerFigures: Figure[] = [
  appendsSqlite,
  ...((await listening(5432)) ? [appendsPostgres] : []),
  verifyMillion,
  readWithLedger,
];
