/**
 * The audit ledger on SQLite (node:sqlite, WAL, `synchronous = FULL`): one host, the default
 * store. A commit is one `BEGIN IMMEDIATE` transaction, so the head read and the inserts of a
 * group are atomic against every other process on the host (the CLI appends too).
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { AuditCheckpoint } from '../../governance/audit-signing.ts';
import type { LedgerEngine, LedgerHead, LedgerRow } from '../../governance/audit-ledger.ts';
import { LEDGER_MIGRATIONS } from '../audit-ledger-migrations.ts';

export function openSqliteLedgerStore(path: string): LedgerEngine {
  mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  for (const m of LEDGER_MIGRATIONS) db.exec(m.sqlite);

  const readHead = db.prepare('SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = ?');
  const writeHead = db.prepare(
    `INSERT INTO audit_writers (writer, seq, hash, sealed_seq, sealed_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
       sealed_seq = excluded.sealed_seq, sealed_at = excluded.sealed_at`,
  );
  const insertRecord = db.prepare(
    'INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const insertCheckpoint = db.prepare(
    'INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)',
  );
  // Arrays, not objects: verification reads millions of rows and object rows cost twice the time.
  const page = db.prepare(
    'SELECT id, writer, seq, ts, body, prev_hash, hash FROM audit_records WHERE id > ? ORDER BY id LIMIT ?',
  );
  page.setReturnArrays(true);
  const allCheckpoints = db.prepare(
    'SELECT writer, seq, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY writer, seq',
  );
  const pruneRecords = db.prepare('DELETE FROM audit_records WHERE writer = ? AND seq <= ?');
  const pruneCheckpoints = db.prepare('DELETE FROM audit_checkpoints WHERE writer = ? AND seq < ?');

  const inTransaction = <T>(fn: () => T): T => {
    db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      db.exec('COMMIT');
      return result;
    } catch (error) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw error;
    }
  };

  return {
    kind: 'sqlite',
    async commit(writer, build) {
      inTransaction(() => {
        const head = readHead.get(writer) as LedgerHead | undefined;
        const { rows, checkpoints, head: next } = build(head);
        for (const r of rows) insertRecord.run(r.writer, r.seq, r.ts, r.body, r.prev_hash, r.hash);
        for (const c of checkpoints)
          insertCheckpoint.run(c.writer, c.seq, c.hash, c.ts, c.key_id, c.signature);
        writeHead.run(writer, next.seq, next.hash, next.sealed_seq, next.sealed_at);
      });
    },
    async *scan(batchSize = 10_000) {
      let after = 0;
      for (;;) {
        const rows = page.all(after, batchSize) as unknown as [
          number,
          string,
          number,
          string,
          string,
          string,
          string,
        ][];
        if (rows.length === 0) return;
        const batch: LedgerRow[] = new Array(rows.length);
        for (let i = 0; i < rows.length; i += 1) {
          const [, writer, seq, ts, body, prev_hash, hash] = rows[i]!;
          batch[i] = { writer, seq, ts, body, prev_hash, hash };
        }
        after = rows[rows.length - 1]![0];
        yield batch;
      }
    },
    async checkpoints() {
      return allCheckpoints.all() as unknown as AuditCheckpoint[];
    },
    async prune(writer, throughSeq) {
      return inTransaction(() => {
        const { changes } = pruneRecords.run(writer, throughSeq);
        pruneCheckpoints.run(writer, throughSeq);
        return Number(changes);
      });
    },
    async ping() {
      db.prepare('SELECT 1').get();
    },
    async close() {
      if (db.isOpen) db.close();
    },
  };
}
