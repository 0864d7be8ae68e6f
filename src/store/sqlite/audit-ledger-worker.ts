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
import type { LedgerHead } from '../../governance/audit-ledger.ts';
import type { PackedRows } from './audit-ledger-store.ts';

/**
 * A commit request from the main thread. `expected` is the head it chained from (null: a new
 * writer). The rows travel packed ({@link packRows}): structured-cloning hundreds of row objects per
 * commit cost the event loop more than building them.
 */
export interface WorkerCommit {
  id: number;
  writer: string;
  expected: LedgerHead | null;
  rows: PackedRows;
  checkpoints: AuditCheckpoint[];
  head: LedgerHead;
}

/** Rows per INSERT statement: fewer statement steps per commit, well under SQLite's bound-variable limit. */
const ROWS_PER_INSERT = 32;

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
      insertRecords: StatementSync;
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
    insertRecords: db.prepare(
      `INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash) VALUES ${Array(ROWS_PER_INSERT)
        .fill('(?, ?, ?, ?, ?, ?)')
        .join(', ')}`,
    ),
    insertCheckpoint: db.prepare(
      'INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)',
    ),
  });

function commit(m: WorkerCommit): WorkerReply {
  try {
    const { readHead, writeHead, insertRecord, insertRecords, insertCheckpoint } = statements();
    db.exec('BEGIN IMMEDIATE');
    const stored = (readHead.get(m.writer) as LedgerHead | undefined) ?? null;
    // The seal too: a head sealed meanwhile (by another instance under this writer id) must not be
    // sealed again at the same seq.
    if (
      stored?.seq !== m.expected?.seq ||
      stored?.hash !== m.expected?.hash ||
      stored?.sealed_seq !== m.expected?.sealed_seq
    ) {
      db.exec('ROLLBACK');
      return { id: m.id, ok: false, conflict: stored && { ...stored } };
    }
    insertPacked(m.writer, m.rows, insertRecord, insertRecords);
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

function insertPacked(writer: string, packed: PackedRows, one: StatementSync, many: StatementSync) {
  const fields = packed.text.split('\n');
  let prev = packed.firstPrevHash;
  let params: (string | number)[] = [];
  for (let i = 0; i < packed.count; i += 1) {
    const hash = fields[3 * i + 2]!;
    params.push(writer, packed.firstSeq + i, fields[3 * i]!, fields[3 * i + 1]!, prev, hash);
    prev = hash;
    if (params.length === 6 * ROWS_PER_INSERT) {
      many.run(...params);
      params = [];
    }
  }
  for (let i = 0; i < params.length; i += 6) one.run(...params.slice(i, i + 6));
}

parentPort!.on('message', (message: WorkerCommit | 'close') => {
  if (message === 'close') {
    db.close();
    parentPort!.close();
    return;
  }
  parentPort!.postMessage(commit(message));
});
