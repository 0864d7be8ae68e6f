/**
 * The audit ledger on SQLite (node:sqlite, WAL, `synchronous = FULL`): one host, the default
 * store. Commits run on a writer thread (audit-ledger-worker.ts), which also chains the ledger's
 * groups (`chain`), one `BEGIN IMMEDIATE` transaction each, so reading the head and inserting a
 * group are atomic against every other process on the host (the CLI appends too), and neither
 * the hashing nor the fsync blocks the event loop (a connection cannot cross threads, so the
 * writer thread has its own; its transactions are short, and it waits for the file lock off the
 * event loop). Everything else on this thread (heads,
 * checkpoints, retention, and appends inside a caller's transaction) goes through the process's
 * one connection to the file, the store's; scans read through a read-only connection.
 */
import { extname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { LedgerEngine, LedgerHead, LedgerRow } from '../../governance/audit-ledger.ts';
import { LEDGER_MIGRATIONS } from '../audit-ledger-migrations.ts';
import { commitLedgerIn, CONFLICT_RETRY_MS, pruneWriter, readCheckpoints } from '../audit-ledger-sql.ts';
import { openSqliteDatabase } from './database.ts';
import type { WorkerChain, WorkerCommit, WorkerReply } from './audit-ledger-worker.ts';

/** The worker's module beside this one, whether running from sources (.ts) or a build (.js). */
const WORKER_URL = new URL(
  `./audit-ledger-worker${extname(fileURLToPath(import.meta.url))}`,
  import.meta.url,
);

/**
 * One commit's rows as one string: per row `ts`, `body`, `hash`, each ended by a newline. Seq and
 * prev_hash follow from the chain (consecutive from `firstSeq`, each row's prev_hash the previous
 * row's hash). Safe because no field can hold a raw newline: ts is ISO text, hashes are hex and
 * the body is JSON, whose strings escape control characters.
 */
export interface PackedRows {
  count: number;
  firstSeq: number;
  firstPrevHash: string;
  text: string;
}

export function packRows(rows: readonly LedgerRow[]): PackedRows {
  let text = '';
  for (const r of rows) text += `${r.ts}\n${r.body}\n${r.hash}\n`;
  return { count: rows.length, firstSeq: rows[0]?.seq ?? 0, firstPrevHash: rows[0]?.prev_hash ?? '', text };
}

export function openSqliteLedgerStore(path: string): LedgerEngine {
  // The process's one connection to this file (the store's, when it is open): a second handle on
  // the main thread would busy-wait for the file lock on the very event loop its holder needs.
  const sql = openSqliteDatabase(path);
  // The tables, before this returns: a short-lived handle, since the shared one runs scripts
  // asynchronously (after any open transaction). At start-up nothing else holds the lock for long.
  const migrator = new DatabaseSync(path);
  try {
    migrator.exec('PRAGMA busy_timeout = 10000;');
    for (const m of LEDGER_MIGRATIONS) migrator.exec(m.sqlite);
  } finally {
    migrator.close();
  }

  // The writer thread (started again if it ever dies), and per writer the head the next commit
  // chains from (what this process last sent).
  const heads = new Map<string, LedgerHead | null>();
  const waiting = new Map<number, (reply: WorkerReply) => void>();
  let nextId = 0;
  let closed = false;
  let worker: Worker | undefined;
  const failAll = (error: string) => {
    for (const [id, resolve] of waiting) resolve({ id, ok: false, error });
    waiting.clear();
  };
  const startWorker = (): Worker => {
    const thread = new Worker(WORKER_URL, { workerData: { path } });
    // Idle, the thread does not keep the process alive; with a commit in flight it must.
    thread.unref();
    thread.on('message', (reply: WorkerReply) => {
      waiting.get(reply.id)?.(reply);
      waiting.delete(reply.id);
      if (waiting.size === 0) thread.unref();
    });
    thread.on('error', (error) => failAll(`ledger writer thread failed: ${error.message}`));
    thread.on('exit', () => {
      if (worker === thread) worker = undefined;
      failAll('ledger writer thread stopped');
    });
    return thread;
  };
  const send = (commit: Omit<WorkerCommit, 'id'> | Omit<WorkerChain, 'id'>): Promise<WorkerReply> => {
    if (closed) return Promise.resolve({ id: -1, ok: false, error: 'the ledger store is closed' });
    const thread = (worker ??= startWorker());
    const id = ++nextId;
    return new Promise((resolve) => {
      if (waiting.size === 0) thread.ref();
      waiting.set(id, resolve);
      thread.postMessage({ ...commit, id });
    });
  };

  return {
    kind: 'sqlite',
    async commit(writer, build) {
      const started = Date.now();
      for (;;) {
        const expected = heads.has(writer)
          ? heads.get(writer)!
          : ((
              await sql.query<LedgerHead>(
                'SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = $1',
                [writer],
              )
            )[0] ?? null);
        const { rows, checkpoints, head } = build(expected ?? undefined);
        // Optimistically the head: a commit sent while this one is in flight chains from it, and
        // the writer thread applies them in order. If this one fails, the next finds the stored
        // head different from what it expected, and is chained again.
        heads.set(writer, head);
        const reply = await send({ writer, expected, rows: packRows(rows), checkpoints, head });
        if (reply.ok) return;
        if ('error' in reply) {
          if (heads.get(writer) === head) heads.delete(writer);
          throw Object.assign(new Error(reply.error), { code: reply.code });
        }
        // Another appender of this writer (another process, or this one's transactional appends,
        // such as webhook receipts at full ingest) moved the head: chain again from it.
        heads.set(writer, reply.conflict);
        if (Date.now() - started >= CONFLICT_RETRY_MS) {
          throw new Error(`writer ${writer} keeps moving under another process`);
        }
      }
    },
    async chain(writer, { records, checkpoints, genesis }) {
      let text = '';
      for (const r of records) text += `${r.ts}\n${r.body}\n`;
      const reply = await send({
        kind: 'chain',
        writer,
        count: records.length,
        text,
        checkpoints: [...checkpoints],
        ...(genesis ? { genesis } : {}),
      });
      // The head moved here: a `commit` of this writer must read it again.
      heads.delete(writer);
      if (reply.ok && 'hashes' in reply) return reply;
      throw Object.assign(
        new Error('error' in reply ? reply.error : 'unexpected reply from the ledger writer thread'),
        {
          code: 'code' in reply ? reply.code : undefined,
        },
      );
    },
    commitIn: commitLedgerIn,
    async *scan(batchSize = 10_000) {
      // A read-only connection of its own: it can take no write lock, so it never waits on a
      // writer (WAL), and it returns rows as arrays (verification reads millions; objects cost twice).
      const reader = new DatabaseSync(path, { readOnly: true });
      try {
        const page = reader.prepare(
          'SELECT id, writer, seq, ts, body, prev_hash, hash FROM audit_records WHERE id > ? ORDER BY id LIMIT ?',
        );
        page.setReturnArrays(true);
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
      } finally {
        reader.close();
      }
    },
    checkpoints: () => readCheckpoints(sql),
    prune: (writer, throughSeq) => pruneWriter(sql, writer, throughSeq),
    async ping() {
      await sql.ping();
    },
    async close() {
      if (closed) return;
      closed = true;
      const thread = worker;
      if (thread) {
        const stopped = new Promise((resolve) => thread.once('exit', resolve));
        // Kept alive until the thread has closed its connection: its last commit is durable by then.
        thread.ref();
        thread.postMessage('close');
        await stopped;
      }
      await sql.close();
    },
  };
}
