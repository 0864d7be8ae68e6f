/**
 * The SQLite ledger's writer thread. node:sqlite is synchronous: a group commit's inserts and its
 * fsync on the main thread would stall every call in flight for milliseconds (a read's record is
 * written behind, but its answer would still wait for the fsync). Here they run beside the event
 * loop, which keeps building the next group meanwhile.
 *
 * The ledger's groups arrive as {@link WorkerChain}: this thread reads the writer's head inside
 * `BEGIN IMMEDIATE`, chains the records from it (SHA-256, off the event loop), writes them with the
 * checkpoints the main thread signed, and replies with the hashes. A {@link WorkerCommit} carries
 * rows chained by the caller instead (`commit`, used to load a ledger in one go): its head is
 * compared with the stored one, and if another process moved it, nothing is written and the
 * stored head is returned so the caller can chain again from it.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { chainHash, GENESIS_HASH } from '../../governance/audit-chain.ts';
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

/**
 * A group of records to chain here ({@link chainRecords}): per record `ts` and `body`, each ended by
 * a newline (as in {@link PackedRows}). The chain starts from the stored head, read inside the
 * transaction; `genesis` (the seq-0 checkpoint, signed on the main thread) starts a new writer.
 * `checkpoints` seal heads this thread returned earlier.
 */
export interface WorkerChain {
  id: number;
  kind: 'chain';
  writer: string;
  count: number;
  text: string;
  checkpoints: AuditCheckpoint[];
  genesis?: AuditCheckpoint;
}

/** What a chained group became: its first seq and prev_hash, its hashes (64 hex characters each, concatenated), the new head. */
export interface ChainedReply {
  id: number;
  ok: true;
  firstSeq: number;
  firstPrevHash: string;
  hashes: string;
  head: LedgerHead;
}

/** Rows per INSERT statement: fewer statement steps per commit, well under SQLite's bound-variable limit. */
const ROWS_PER_INSERT = 32;

export type WorkerReply =
  | { id: number; ok: true }
  | ChainedReply
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
      insertSeal: StatementSync;
      recordHash: StatementSync;
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
    // A head can be sealed twice at one seq (two processes under one writer id): one checkpoint is kept.
    recordHash: db.prepare('SELECT hash FROM audit_records WHERE writer = ? AND seq = ?'),
    insertSeal: db.prepare(
      'INSERT OR IGNORE INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)',
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

/**
 * Chains and writes a group in one `BEGIN IMMEDIATE` transaction: the head is read here, under the
 * file's write lock, so every process on the host appending under this writer id (and a record
 * appended inside a caller's transaction) is chained after, never beside: the chain cannot fork,
 * and nothing needs chaining again. Hashing here keeps SHA-256 off the event loop.
 */
function chainRecords(m: WorkerChain): WorkerReply {
  try {
    const { readHead, writeHead, insertRecord, insertRecords, insertCheckpoint, insertSeal, recordHash } =
      statements();
    db.exec('BEGIN IMMEDIATE');
    let head = (readHead.get(m.writer) as LedgerHead | undefined) ?? null;
    if (!head) {
      if (!m.genesis || m.genesis.seq !== 0 || m.genesis.hash !== GENESIS_HASH) {
        throw new Error(`writer ${m.writer} has no chain yet and the commit carries no seq-0 checkpoint`);
      }
      const g = m.genesis;
      insertCheckpoint.run(g.writer, g.seq, g.hash, g.ts, g.key_id, g.signature);
      head = { seq: 0, hash: GENESIS_HASH, sealed_seq: 0, sealed_at: g.ts };
    }
    const fields = m.count > 0 ? m.text.split('\n') : [];
    const firstSeq = head.seq + 1;
    const firstPrevHash = head.hash;
    let { seq, hash } = head;
    let hashes = '';
    let params: (string | number)[] = [];
    for (let i = 0; i < m.count; i += 1) {
      const body = fields[2 * i + 1]!;
      const prev = hash;
      seq += 1;
      hash = chainHash(m.writer, seq, prev, body);
      hashes += hash;
      params.push(m.writer, seq, fields[2 * i]!, body, prev, hash);
      if (params.length === 6 * ROWS_PER_INSERT) {
        insertRecords.run(...params);
        params = [];
      }
    }
    for (let i = 0; i < params.length; i += 6) insertRecord.run(...params.slice(i, i + 6));
    let { sealed_seq, sealed_at } = head;
    for (const c of m.checkpoints) {
      // Only a checkpoint of a record as stored: one signed for a head that is no longer there
      // (the chain was restarted in an emptied store) would make the chain fail verification.
      const stored = recordHash.get(c.writer, c.seq) as { hash: string } | undefined;
      if (c.writer !== m.writer || stored?.hash !== c.hash) continue;
      insertSeal.run(c.writer, c.seq, c.hash, c.ts, c.key_id, c.signature);
      if (c.seq > sealed_seq) {
        sealed_seq = c.seq;
        sealed_at = c.ts;
      }
    }
    writeHead.run(m.writer, seq, hash, sealed_seq, sealed_at);
    db.exec('COMMIT');
    return {
      id: m.id,
      ok: true,
      firstSeq,
      firstPrevHash,
      hashes,
      head: { seq, hash, sealed_seq, sealed_at },
    };
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

parentPort!.on('message', (message: WorkerCommit | WorkerChain | 'close') => {
  if (message === 'close') {
    db.close();
    parentPort!.close();
    return;
  }
  parentPort!.postMessage('kind' in message ? chainRecords(message) : commit(message));
});
