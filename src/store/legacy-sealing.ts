/**
 * Sealing the rows written before sealing existed, once. Migration 33 listed them (table
 * `unsealed_legacy_rows`: column and row id) at the upgrade; every store opened with the data key
 * seals the ones still listed and unlists them, before anything reads them. From then on a sealed
 * column holding plain text was written into the database by someone else, and its readers refuse
 * it (field-crypto.ts, outbox-store.ts) rather than trust it.
 *
 * Safe when replicas start together: each row is rewritten only while it still holds the plain text
 * read (compare-and-set), all in one transaction. On PostgreSQL that transaction holds an advisory
 * lock per schema, as migrate() does, and is not bounded by the pool's lock and statement timeouts:
 * a replica starting while another seals waits for it, then finds nothing left, rather than timing
 * out on the first row's lock and failing to start.
 */
import { approvalFieldContext, type FieldCipher, isSealed } from './field-crypto.ts';
import { outboxFieldContext } from './outbox-store.ts';
import type { SqlExecutor } from './sql.ts';

/** Seals every listed legacy row still plain; returns how many it sealed. */
export async function sealLegacyPlaintext(db: SqlExecutor, cipher: FieldCipher): Promise<number> {
  const [{ n } = { n: 0 }] = await db.query<{ n: number }>('SELECT COUNT(*) AS n FROM unsealed_legacy_rows');
  if (Number(n) === 0) return 0;
  return db.transaction(async (tx) => {
    if (tx.engine === 'postgres') {
      await tx.execute('SET LOCAL statement_timeout = 0');
      await tx.execute('SET LOCAL lock_timeout = 0');
      await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
        'fraudgate-legacy-seal:' + (await currentSchema(tx)),
      ]);
    }
    let sealed = 0;
    // Listed again under the lock: a replica that waited finds the rows the first one unlisted gone.
    const listed = await tx.query<{ col: string; id: string }>('SELECT col, id FROM unsealed_legacy_rows');
    for (const { col, id } of listed) {
      if (col === 'approvals.args' || col === 'approvals.reason') {
        const column = col === 'approvals.args' ? 'args' : 'reason';
        const [row] = await tx.query<{ value: string | null }>(
          `SELECT ${column} AS value FROM approvals WHERE id = $1`,
          [id],
        );
        const plain = row?.value;
        // The approval store keeps args as JSON: sealed, they are a JSON string of the sealed text.
        const value =
          typeof plain !== 'string' ? undefined : column === 'args' ? parseOrUndefined(plain) : plain;
        if (
          typeof plain === 'string' &&
          value !== undefined &&
          !(typeof value === 'string' && isSealed(value))
        ) {
          const text = cipher.seal(value, approvalFieldContext[column](id));
          sealed += await tx.execute(`UPDATE approvals SET ${column} = $1 WHERE id = $2 AND ${column} = $3`, [
            column === 'args' ? JSON.stringify(text) : text,
            id,
            plain,
          ]);
        }
      } else if (col === 'outbox_effects.args') {
        const [row] = await tx.query<{ args: string; event_id: number; effect: string }>(
          'SELECT args, event_id, effect FROM outbox_effects WHERE id = $1',
          [Number(id)],
        );
        const value = row && !isSealed(row.args) ? parseOrUndefined(row.args) : undefined;
        if (row && value !== undefined) {
          sealed += await tx.execute('UPDATE outbox_effects SET args = $1 WHERE id = $2 AND args = $3', [
            cipher.seal(value, outboxFieldContext.args(Number(row.event_id), row.effect)),
            Number(id),
            row.args,
          ]);
        }
      }
      await tx.execute('DELETE FROM unsealed_legacy_rows WHERE col = $1 AND id = $2', [col, id]);
    }
    return sealed;
  });
}

async function currentSchema(tx: SqlExecutor): Promise<string> {
  const [row] = await tx.query<{ schema: string }>('SELECT current_schema() AS schema');
  return row?.schema ?? 'public';
}

/** Unparseable legacy JSON stays as it is: its readers refuse it like any other plain text. */
function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
