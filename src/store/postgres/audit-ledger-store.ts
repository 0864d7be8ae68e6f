/**
 * The audit ledger on PostgreSQL, for several replicas: each replica appends its own writer's
 * chain, so replicas never wait on each other.
 *
 * A group commit is one prepared statement, one round trip, one durable commit (`synchronous_commit`
 * on): a compare-and-set moves the writer's head from the one the group was chained on (or starts the
 * writer), and the group's records and checkpoints go in only if it won. A writer's commits are
 * sent in order, and the next group is chained (from the head this one will leave) while this one
 * is on the wire. Losing the compare-and-set (another process under the same writer id, a record
 * appended inside a caller's transaction, or an earlier commit that failed) re-reads the head and
 * chains again.
 *
 * `commitIn` given a rider (ledger-rider.ts) instead of a transaction makes the same commit carry the
 * rider's write: the webhook intake's events go in with their receipts, in one statement.
 *
 * Runs on the process's store (`sql`: its pool, so a replica holds one) or, for a command that
 * opened no store, on a small pool of its own.
 */
import {
  LedgerRecordRefusedError,
  type LedgerCommit,
  type LedgerEngine,
  type LedgerHead,
  type LedgerRow,
} from '../../governance/audit-ledger.ts';
import { LEDGER_MIGRATIONS } from '../audit-ledger-migrations.ts';
import { commitLedgerIn, CONFLICT_RETRY_MS, pruneWriter, readCheckpoints } from '../audit-ledger-sql.ts';
import type { SqlExecutor } from '../sql.ts';
import { isValidSchemaName, openPostgresDatabase } from './database.ts';
import { isLedgerRider, type LedgerRider, type LedgerRiderSql } from './ledger-rider.ts';

/**
 * The group commit; with a rider (ledger-rider.ts), its CTEs run when the commit wins. The records
 * travel as one text per column ($8 bodies, one per line; $11–$14 seqs, times, previous hashes and
 * hashes, comma-separated) rather than as JSON: nothing to escape on either side, where the bodies
 * (JSON themselves) made `JSON.stringify` escape every quote and PostgreSQL parse it all back
 * (bench ledger_appends_postgres: the records of a group of 256 in 0.6 ms of the server's time
 * instead of 1.2–1.6 ms). Lists of unequal length leave NULLs, which the table refuses.
 */
const commitStatement = (rider?: Pick<LedgerRiderSql, 'then'>) => `
WITH moved AS (
  UPDATE audit_writers SET seq = $2, hash = $3, sealed_seq = $4, sealed_at = $5
   WHERE writer = $1 AND seq = $6 AND hash = $7 AND sealed_seq = $10
  RETURNING writer
), started AS (
  INSERT INTO audit_writers (writer, seq, hash, sealed_seq, sealed_at)
  SELECT $1, $2, $3, $4, $5 WHERE $6::bigint IS NULL
  ON CONFLICT (writer) DO NOTHING
  RETURNING writer
), won AS (
  SELECT writer FROM moved UNION ALL SELECT writer FROM started
), records AS (
  INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash)
  SELECT won.writer, r.seq::bigint, r.ts, r.body, r.prev_hash, r.hash
    FROM won, unnest(string_to_array($11, ','), string_to_array($12, ','), string_to_array($8, chr(10)),
                     string_to_array($13, ','), string_to_array($14, ',')) AS r(seq, ts, body, prev_hash, hash)
   ORDER BY r.seq::bigint
), checkpoints AS (
  INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature)
  SELECT won.writer, c.seq, c.hash, c.ts, c.key_id, c.signature
    FROM won, json_to_recordset($9::json) AS c(seq bigint, hash text, ts text, key_id text, signature text)
)${rider ? `, ${rider.then}` : ''}
SELECT count(*)::int AS won FROM won`;

const COMMIT = commitStatement();

/**
 * A group's records as the commit statement takes them, one text per column. A body is one line of
 * JSON and the other columns are numbers, ISO times and hex, so none holds its separator; one that
 * did would shift the columns, so it is refused here rather than stored wrong (the ledger then
 * stores a record saying so in its place).
 */
function recordColumns(rows: readonly LedgerRow[]) {
  let bodies = '';
  let seqs = '';
  let times = '';
  let prevHashes = '';
  let hashes = '';
  const refused: number[] = [];
  rows.forEach((r, i) => {
    if (r.body.includes('\n') || r.ts.includes(',') || r.prev_hash.includes(',') || r.hash.includes(',')) {
      refused.push(i);
    }
    const sep = i === 0 ? '' : ',';
    bodies += i === 0 ? r.body : `\n${r.body}`;
    seqs += `${sep}${r.seq}`;
    times += `${sep}${r.ts}`;
    prevHashes += `${sep}${r.prev_hash}`;
    hashes += `${sep}${r.hash}`;
  });
  if (refused.length > 0) {
    const first = rows[refused[0]!]!;
    throw new LedgerRecordRefusedError(
      `audit record ${first.writer}/${first.seq} holds a separator of the commit statement (${refused.length} such in the group)`,
      refused,
    );
  }
  return { bodies, seqs, times, prevHashes, hashes };
}

export async function openPostgresLedgerStore(
  options:
    | { sql: SqlExecutor }
    | {
        url: string;
        /** Schema holding the tables (created if absent). Default `public`. */
        schema?: string;
        onError?: (error: Error) => void;
      },
): Promise<LedgerEngine> {
  let sql: SqlExecutor;
  let close = async () => undefined as void;
  if ('sql' in options) {
    sql = options.sql;
  } else {
    const schema = options.schema ?? 'public';
    if (!isValidSchemaName(schema)) throw new Error(`invalid PostgreSQL schema name: ${schema}`);
    const own = openPostgresDatabase(options.url, {
      schema,
      poolSize: 4,
      ...(options.onError ? { onConnectionError: options.onError } : {}),
    });
    sql = own;
    close = () => own.close();
    try {
      await own.execute(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } catch (error) {
      await own.close();
      throw error;
    }
  }
  try {
    // One migrator at a time: concurrent CREATE IF NOT EXISTS can still collide in the catalogue.
    await sql.transaction(async (tx) => {
      // As the store's migrations (src/store/migrations.ts): not bounded by the calls' timeouts.
      await tx.execute('SET LOCAL statement_timeout = 0');
      await tx.execute('SET LOCAL lock_timeout = 0');
      await tx.query(
        "SELECT pg_advisory_xact_lock(hashtext('fraudgate-ledger-migrate:' || current_schema()))",
      );
      for (const m of LEDGER_MIGRATIONS) await tx.execute(m.postgres);
    });
  } catch (error) {
    await close();
    throw error;
  }

  const readHead = async (writer: string) =>
    (
      await sql.query<LedgerHead>(
        'SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = $1',
        [writer],
      )
    )[0] ?? null;
  /** Per writer: the head the next commit chains from, and the last commit sent (the next waits for it). */
  const heads = new Map<string, LedgerHead | null>();
  const tails = new Map<string, Promise<unknown>>();
  /** Per writer, one commit at a time picks its head and is sent (the wire part overlaps the next). */
  const sections = new Map<string, Promise<unknown>>();
  const exclusive = <T>(writer: string, fn: () => Promise<T>): Promise<T> => {
    const run = (sections.get(writer) ?? Promise.resolve()).then(fn, fn);
    sections.set(
      writer,
      run.catch(() => undefined),
    );
    return run;
  };

  /** The combined statement per rider name (one name, one text), built the first time the rider is sent. */
  const riderStatements = new Map<string, string>();
  const riderStatement = (rider: LedgerRiderSql) => {
    let text = riderStatements.get(rider.name);
    if (text === undefined) {
      text = commitStatement(rider);
      riderStatements.set(rider.name, text);
    }
    return text;
  };
  const send = (
    writer: string,
    expected: LedgerHead | null,
    built: LedgerCommit,
    columns: ReturnType<typeof recordColumns>,
    rider?: LedgerRiderSql,
  ) => {
    const { checkpoints, head } = built;
    const previous = tails.get(writer);
    const sent = (async () => {
      await previous?.catch(() => undefined);
      const [result] = await sql.query<{ won: number }>(
        rider ? riderStatement(rider) : COMMIT,
        [
          writer,
          head.seq,
          head.hash,
          head.sealed_seq,
          head.sealed_at,
          expected?.seq ?? null,
          expected?.hash ?? null,
          columns.bodies,
          JSON.stringify(checkpoints),
          expected?.sealed_seq ?? null,
          columns.seqs,
          columns.times,
          columns.prevHashes,
          columns.hashes,
          ...(rider?.params ?? []),
        ],
        // Parsed and planned once per connection, not per group: a sixth of the server's CPU per
        // append at 256 concurrent appenders (bench ledger_appends_postgres).
        { prepareAs: rider?.name ?? 'fraudgate_ledger_commit' },
      );
      return (result?.won ?? 0) > 0;
    })();
    tails.set(writer, sent);
    return sent;
  };

  /**
   * One attempt: chains `build` from the head this process knows (read when unknown) and sends it
   * after the writer's earlier commits. A commit that did not win forgets that head.
   */
  const attempt = async (
    writer: string,
    build: (head: LedgerHead | undefined) => LedgerCommit,
    rider?: LedgerRiderSql,
  ) => {
    const { built, sent } = await exclusive(writer, async () => {
      let expected = heads.get(writer);
      if (expected === undefined) {
        // Unknown (first use, or a commit lost): the head everything sent so far leaves behind.
        await tails.get(writer)?.catch(() => undefined);
        expected = await readHead(writer);
      }
      const chained = build(expected ?? undefined);
      // A refused group is refused before its head is taken for this writer's.
      const columns = recordColumns(chained.rows);
      // Optimistically the head: a commit started while this one is on the wire chains from it.
      heads.set(writer, chained.head);
      return { built: chained, sent: send(writer, expected, chained, columns, rider) };
    });
    try {
      const won = await sent;
      // The head moved (another process, a transactional append, a failed predecessor): commits
      // chained on this one's head lose too; the next to start reads the head afresh.
      if (!won) heads.delete(writer);
      return won;
    } catch (error) {
      if (heads.get(writer) === built.head) heads.delete(writer);
      throw error;
    }
  };

  /** `commitIn` for a rider: the ledger's commit statement carries the rider's write (ledger-rider.ts). */
  const commitRider = async (
    tx: LedgerRider,
    writer: string,
    build: (head: LedgerHead | undefined) => LedgerCommit,
  ) => {
    if (tx.db !== sql) throw new Error('the rider is on another database than the ledger');
    let won: boolean;
    try {
      won = await attempt(writer, build, tx.rider);
    } catch (error) {
      // Refused records are refused before anything is sent: the ledger replaces them and sends again.
      if (!(error instanceof LedgerRecordRefusedError)) tx.outcome = 'failed';
      throw error;
    }
    tx.outcome = won ? 'committed' : 'lost';
    if (!won) throw new Error(`writer ${writer} moved under the ledger commit carrying a rider`);
  };

  return {
    kind: 'postgres',
    async commit(writer, build) {
      const started = Date.now();
      while (!(await attempt(writer, build))) {
        if (Date.now() - started >= CONFLICT_RETRY_MS) {
          throw new Error(`writer ${writer} keeps moving under another process`);
        }
      }
    },
    commitIn: (tx, writer, build) =>
      isLedgerRider(tx) ? commitRider(tx, writer, build) : commitLedgerIn(tx, writer, build),
    scan: (batchSize = 10_000) => scanInOneSnapshot(sql, batchSize),
    async isStored(writer, seq, hash) {
      const rows = await sql.query(
        'SELECT 1 AS stored FROM audit_records WHERE writer = $1 AND seq = $2 AND hash = $3',
        [writer, seq, hash],
      );
      return rows.length > 0;
    },
    checkpoints: () => readCheckpoints(sql),
    prune: (writer, throughSeq) => pruneWriter(sql, writer, throughSeq),
    async ping() {
      await sql.query('SELECT 1');
    },
    close: () => close(),
  };
}

/**
 * Every record, in pages by id, all read in one REPEATABLE READ snapshot on one connection. Ids
 * come from a sequence at INSERT but become visible at COMMIT, so on a live fleet a slow
 * transaction's record can appear below an id a page already passed: paged in fresh snapshots, the
 * scan skipped it (`audit verify` reported it deleted, `audit export` left it out). In one snapshot
 * a writer's records are a prefix of its chain (its commits are serialised on its head), so the
 * pages are one consistent ledger; records committed meanwhile are the next scan's. Each page is
 * the same indexed keyset query as before, the next read while the consumer checks this one (a
 * million records scanned in ~5.9 s where fresh-snapshot pages took ~8.5 s, on the dev box).
 */
async function* scanInOneSnapshot(sql: SqlExecutor, batchSize: number): AsyncGenerator<LedgerRow[]> {
  // The transaction runs in a callback while the pages are handed out one at a time: at most one
  // page is read ahead of the consumer (an export waits on its reader's pipe, so must the scan).
  let handOver!: (page: LedgerRow[] | undefined) => void;
  let nextPage = new Promise<LedgerRow[] | undefined>((resolve) => (handOver = resolve));
  let askNext: (more: boolean) => void = () => undefined;
  const reading = sql.transaction(async (tx) => {
    await tx.execute('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    // The consumer may take long between pages (an export to a slow pipe): this read-only session
    // is idle in its transaction on purpose, and holds no lock anyone waits for.
    await tx.execute('SET LOCAL idle_in_transaction_session_timeout = 0');
    const page = (after: number) =>
      tx.query<LedgerRow & { id: number }>(
        'SELECT id, writer, seq, ts, body, prev_hash, hash FROM audit_records WHERE id > $1 ORDER BY id LIMIT $2',
        [after, batchSize],
      );
    let rows = await page(0);
    for (;;) {
      if (rows.length === 0) {
        handOver(undefined);
        return;
      }
      const more = new Promise<boolean>((resolve) => (askNext = resolve));
      handOver(
        rows.map(({ writer, seq, ts, body, prev_hash, hash }) => ({
          writer,
          seq: Number(seq),
          ts,
          body,
          prev_hash,
          hash,
        })),
      );
      // The next page is read while the consumer checks this one (one page ahead, no more).
      const next = page(rows[rows.length - 1]!.id);
      next.catch(() => undefined);
      if (!(await more)) {
        await next.catch(() => undefined);
        return;
      }
      rows = await next;
    }
  });
  // A failed read rejects the page awaited; the loop below then ends with that error.
  const failed = reading.then(() => undefined);
  try {
    for (;;) {
      const page = await Promise.race([nextPage, failed]);
      if (page === undefined) break;
      nextPage = new Promise((resolve) => (handOver = resolve));
      yield page;
      askNext(true);
    }
  } finally {
    // Also when the consumer stopped early (verify found a fault): end the transaction.
    askNext(false);
    await reading;
  }
}
