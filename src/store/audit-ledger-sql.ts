/**
 * The ledger statements both engines share, written once against `SqlExecutor`. Above all a
 * ledger commit inside a caller's transaction: the audit record
 * of a state change (an approval decided, say) goes in on the same connection and in the same
 * transaction as the change, so both commit or neither does.
 *
 * The writer's head is read and advanced like a group commit does (`FOR UPDATE` on PostgreSQL; on
 * SQLite the caller's `BEGIN IMMEDIATE` already excludes every other writer), so a group commit of
 * the same writer that was chained from the older head finds it moved and is chained again.
 */
import type { AuditCheckpoint } from '../governance/audit-signing.ts';
import type { LedgerCommit, LedgerHead } from '../governance/audit-ledger.ts';
import { placeholders, type SqlExecutor } from './sql.ts';

export async function commitLedgerIn(
  tx: SqlExecutor,
  writer: string,
  build: (head: LedgerHead | undefined) => LedgerCommit,
): Promise<void> {
  const [stored] = await tx.query<LedgerHead>(
    `SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = $1${
      tx.engine === 'postgres' ? ' FOR UPDATE' : ''
    }`,
    [writer],
  );
  const { rows, checkpoints, head } = build(
    stored && { ...stored, seq: Number(stored.seq), sealed_seq: Number(stored.sealed_seq) },
  );
  if (rows.length > 0) {
    await tx.execute(
      `INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash) VALUES ${rows
        .map((_, i) => `(${placeholders(6, 6 * i + 1)})`)
        .join(', ')}`,
      rows.flatMap((r) => [r.writer, r.seq, r.ts, r.body, r.prev_hash, r.hash]),
    );
  }
  for (const cp of checkpoints) {
    await tx.execute(
      'INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)',
      [cp.writer, cp.seq, cp.hash, cp.ts, cp.key_id, cp.signature],
    );
  }
  await tx.execute(
    `INSERT INTO audit_writers (writer, seq, hash, sealed_seq, sealed_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
       sealed_seq = excluded.sealed_seq, sealed_at = excluded.sealed_at`,
    [writer, head.seq, head.hash, head.sealed_seq, head.sealed_at],
  );
}

/** Every writer's checkpoints, in (writer, seq) order. */
export async function readCheckpoints(sql: SqlExecutor): Promise<AuditCheckpoint[]> {
  const rows = await sql.query<AuditCheckpoint>(
    'SELECT writer, seq, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY writer, seq',
  );
  return rows.map((r) => ({ ...r, seq: Number(r.seq) }));
}

/** Retention: `writer`'s records through `throughSeq` and its checkpoints before it, in one transaction. */
export function pruneWriter(sql: SqlExecutor, writer: string, throughSeq: number): Promise<number> {
  return sql.transaction(async (tx) => {
    // Retention deletes months of records at once: longer than a call's statement timeout may allow.
    if (tx.engine === 'postgres') await tx.execute('SET LOCAL statement_timeout = 0');
    const deleted = await tx.execute('DELETE FROM audit_records WHERE writer = $1 AND seq <= $2', [
      writer,
      throughSeq,
    ]);
    await tx.execute('DELETE FROM audit_checkpoints WHERE writer = $1 AND seq < $2', [writer, throughSeq]);
    return deleted;
  });
}

/**
 * How long a ledger commit keeps re-chaining after finding its writer's head moved (both engines).
 * Each loss means another appender of the writer made progress (another process, or this one's
 * transactional appends, such as webhook receipts at full ingest), so a busy co-writer may delay a
 * commit by a few round trips; only one that moves the head for this long fails it (and the ledger
 * retries later).
 */
export const CONFLICT_RETRY_MS = 10_000;
