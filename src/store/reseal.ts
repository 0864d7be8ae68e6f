/**
 * Data-key rotation (`fraudgate data-key status` / `reseal`): which key sealed the stored personal
 * fields, and rewriting those under an older key with the current one (src/store/field-crypto.ts).
 *
 * Reseal opens each value with the cipher (current or previous key, as its key id names) and seals
 * it again under the current key, bound to the same context. Each row is updated only if the column
 * still holds the text that was read, so a value a running server rewrote meanwhile (already under
 * the current key) is left alone. It runs in batches and may be stopped and run again.
 */
import { approvalFieldContext, KEY_CHECK_CONTEXT, sealedKeyId, type FieldCipher } from './field-crypto.ts';
import { outboxFieldContext } from './outbox-store.ts';
import type { SqlExecutor, SqlRow } from './sql.ts';

interface SealedColumn {
  table: 'approvals' | 'outbox_effects' | 'key_check';
  column: string;
  /** The columns the context needs besides the row id. */
  extra: string[];
  /** Stored as a JSON string of the sealed text (the approval store writes args as JSON). */
  quoted?: true;
  /** Where the value is bound (field-crypto's additional authenticated data). */
  context(row: SqlRow): string;
}

/** Every column a FieldCipher seals. */
const SEALED_COLUMNS: SealedColumn[] = [
  // The start-up check value (store.ts `checkDataKey`): once it is under the current key, a start
  // without FRAUDGATE_DATA_KEY_PREVIOUS is accepted again.
  {
    table: 'key_check',
    column: 'sealed',
    extra: [],
    context: () => KEY_CHECK_CONTEXT,
  },
  {
    table: 'approvals',
    column: 'args',
    extra: [],
    quoted: true,
    context: (r) => approvalFieldContext.args(String(r.id)),
  },
  {
    table: 'approvals',
    column: 'reason',
    extra: [],
    context: (r) => approvalFieldContext.reason(String(r.id)),
  },
  {
    table: 'outbox_effects',
    column: 'args',
    extra: ['event_id', 'effect'],
    context: (r) => outboxFieldContext.args(Number(r.event_id), String(r.effect)),
  },
  {
    table: 'outbox_effects',
    column: 'result',
    extra: [],
    context: (r) => outboxFieldContext.result(Number(r.id)),
  },
  {
    table: 'outbox_effects',
    column: 'last_error',
    extra: [],
    context: (r) => outboxFieldContext.lastError(Number(r.id)),
  },
];

/**
 * `enc:v1:` is 7 characters (8 with a JSON string's quote); the key id (8 hex) follows. Same SQL on
 * SQLite and PostgreSQL.
 */
const KEY_ID_SQL = (c: SealedColumn) => `substr(${c.column}, ${c.quoted ? 9 : 8}, 8)`;
const SEALED_SQL = (c: SealedColumn) => `${c.column} LIKE '${c.quoted ? '"' : ''}enc:v1:%'`;

export interface SealedCount {
  /** `table.column` */
  field: string;
  key_id: string;
  rows: number;
}

/** How many stored values each data key sealed, per column. */
export async function countSealedByKey(sql: SqlExecutor): Promise<SealedCount[]> {
  const counts: SealedCount[] = [];
  for (const c of SEALED_COLUMNS) {
    const rows = await sql.query<{ key_id: string; n: number | string }>(
      `SELECT ${KEY_ID_SQL(c)} AS key_id, COUNT(*) AS n FROM ${c.table}
       WHERE ${SEALED_SQL(c)} GROUP BY ${KEY_ID_SQL(c)} ORDER BY 1`,
    );
    for (const r of rows)
      counts.push({ field: `${c.table}.${c.column}`, key_id: r.key_id, rows: Number(r.n) });
  }
  return counts;
}

/**
 * Whether the stored sealed values (key_check's aside) open under `cipher`: every key id they name
 * is one it holds, and one value per column opens. Undefined when they do (or none is stored),
 * else why not (key ids and columns only, never a value).
 */
export async function sealedValuesProblem(
  sql: SqlExecutor,
  cipher: FieldCipher,
): Promise<string | undefined> {
  let tried = 0;
  for (const c of SEALED_COLUMNS) {
    if (c.table === 'key_check') continue;
    const ids = await sql.query<{ key_id: string }>(
      `SELECT DISTINCT ${KEY_ID_SQL(c)} AS key_id FROM ${c.table} WHERE ${SEALED_SQL(c)}`,
    );
    const missing = ids.map((r) => r.key_id).filter((id) => !cipher.openableKeyIds.includes(id));
    if (missing.length > 0) return `${c.table}.${c.column} sealed under key ${missing.join(', ')}`;
    const [row] = await sql.query(
      `SELECT id, ${[...c.extra, c.column].join(', ')} FROM ${c.table} WHERE ${SEALED_SQL(c)} LIMIT 1`,
    );
    if (!row) continue;
    tried += 1;
    try {
      const stored = String(row[c.column]);
      cipher.open(c.quoted ? (JSON.parse(stored) as string) : stored, c.context(row));
      return undefined;
    } catch {
      // Another column's value may open (this one may have been edited); the last try decides.
    }
  }
  return tried > 0 ? 'no sealed value opens under it' : undefined;
}

export interface ResealProgress {
  done: number;
  total: number;
  failed: number;
  /** Rewritten meanwhile by a running server (already under the current key): left as it was. */
  skipped: number;
}

export interface ResealResult extends ResealProgress {
  /** Values that did not open (a key that is neither current nor previous, or damaged): where. */
  failures: string[];
}

const BATCH = 200;

/** Reseals every value sealed under a key other than `cipher`'s current one. */
export async function resealUnderCurrentKey(
  sql: SqlExecutor,
  cipher: FieldCipher,
  onProgress?: (progress: ResealProgress) => void,
): Promise<ResealResult> {
  const where = (c: SealedColumn) => `${SEALED_SQL(c)} AND ${KEY_ID_SQL(c)} <> $1`;
  let total = 0;
  for (const c of SEALED_COLUMNS) {
    const [row] = await sql.query<{ n: number | string }>(
      `SELECT COUNT(*) AS n FROM ${c.table} WHERE ${where(c)}`,
      [cipher.keyId],
    );
    total += Number(row?.n ?? 0);
  }
  const result: ResealResult = { done: 0, total, failed: 0, skipped: 0, failures: [] };
  onProgress?.({ done: 0, total, failed: 0, skipped: 0 });
  for (const c of SEALED_COLUMNS) {
    // Keyset pagination by id (TEXT for approvals, integer for the outbox): failures are skipped,
    // not retried forever.
    let after: string | number = c.table === 'approvals' ? '' : -1;
    for (;;) {
      const rows = await sql.query(
        `SELECT id, ${[...c.extra, c.column].join(', ')} FROM ${c.table}
         WHERE ${where(c)} AND id > $2 ORDER BY id LIMIT ${BATCH}`,
        [cipher.keyId, after],
      );
      if (rows.length === 0) break;
      for (const row of rows) {
        after = c.table === 'approvals' ? String(row.id) : Number(row.id);
        const stored = String(row[c.column]);
        const context = c.context(row);
        let text = stored;
        try {
          if (c.quoted) text = JSON.parse(stored) as string;
          const resealed = cipher.seal(cipher.open(text, context), context);
          const sealed = c.quoted ? JSON.stringify(resealed) : resealed;
          const changed = await sql.execute(
            `UPDATE ${c.table} SET ${c.column} = $1 WHERE id = $2 AND ${c.column} = $3`,
            [sealed, after, stored],
          );
          if (changed > 0) result.done += 1;
          else result.skipped += 1;
        } catch {
          result.failed += 1;
          result.failures.push(
            `${c.table}.${c.column} id ${String(row.id)} (key ${sealedKeyId(text) ?? '?'})`,
          );
        }
      }
      onProgress?.({ done: result.done, total, failed: result.failed, skipped: result.skipped });
    }
  }
  return result;
}
