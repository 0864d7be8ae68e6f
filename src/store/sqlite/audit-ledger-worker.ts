/**
 * The SQLite ledger's writer thread. node:sqlite is synchronous: a group commit's inserts and its
 * fsync on the main thread would stall every call in flight for milliseconds (a read's record is
 * written behind, but its answer would still wait for the fsync). Here they run beside the event
 * loop, which keeps building the next group meanwhile.
 *
 * One message per commit: the rows the main thread chained from the head it last saw. Inside
 * `BEGIN IMMEDIATE` the stored head is compared with that one; if another process moved it (two
 * processes sharing a writer id), nothing is written and the stored head is returned so the main
 * thread can chain again from it.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import type { AuditCheckpoint } from '../../governance/audit-signing.ts';
import type { LedgerHead, LedgerRow } from '../../governance/audit-ledger.ts';

/** A commit request from the main thread. `expected` is the head it chained from (null: a new writer). */
export interface WorkerCommit {
  id: number;
  writer: string;
  expected: LedgerHead | null;
  rows: LedgerRow[];
  checkpoints: AuditCheckpoint[];
  head: LedgerHead;
}

export type WorkerReply =
  | { id: number; ok: true }
  | { id: number; ok: false; conflict: LedgerHead | null }
  | { id: number; ok: false; error: string; code?: string };

const db = new DatabaseSync((workerData as { path: string }).path);
db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
/**
 * Prepared on first use, inside the commit's try: a table missing at start-up (or renamed away
 * and back) fails that commit, never the thread.
 */
let prepared:
  | {
      readHead: StatementSync;
      writeHead: StatementSync;
      insertRecord: StatementSync;
      insertCheckpoint: StatementSync;
    }
  | undefined;
const statements = () =>
  (prepared ??= {
    readHead: db.prepare('SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = ?'),
    writeHead: db.prepare(
      `INSERT INTO audit_writers (writer, seq, hash, sealed_seq, sealed_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
         sealed_seq = excluded.sealed_seq, sealed_at = excluded.sealed_at`,
    ),
    insertRecord: db.prepare(
      'INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    insertCheckpoint: db.prepare(
      'INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)',
    ),
  });

function commit(m: WorkerCommit): WorkerReply {
  try {
    const { readHead, writeHead, insertRecord, insertCheckpoint } = statements();
    db.exec('BEGIN IMMEDIATE');
    const stored = (readHead.get(m.writer) as LedgerHead | undefined) ?? null;
    if (stored?.seq !== m.expected?.seq || stored?.hash !== m.expected?.hash) {
      db.exec('ROLLBACK');
      return { id: m.id, ok: false, conflict: stored && { ...stored } };
    }
    for (const r of m.rows) insertRecord.run(r.writer, r.seq, r.ts, r.body, r.prev_hash, r.hash);
    for (const c of m.checkpoints) insertCheckpoint.run(c.writer, c.seq, c.hash, c.ts, c.key_id, c.signature);
    writeHead.run(m.writer, m.head.seq, m.head.hash, m.head.sealed_seq, m.head.sealed_at);
    db.exec('COMMIT');
    return { id: m.id, ok: true };
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    const e = error as { message?: string; code?: string };
    return { id: m.id, ok: false, error: e.message ?? String(error), ...(e.code ? { code: e.code } : {}) };
  }
}

parentPort!.on('message', (message: WorkerCommit | 'close') => {
  if (message === 'close') {
    db.close();
    parentPort!.close();
    return;
  }
  parentPort!.postMessage(commit(message));
});
