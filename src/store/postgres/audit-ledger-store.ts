/**
 * The audit ledger on PostgreSQL, for several replicas. Each commit locks only its writer's head
 * row (`SELECT … FOR UPDATE`), so replicas, each with its own writer, never wait on each other; a
 * group's records go in with one multi-row INSERT and one durable COMMIT (`synchronous_commit` on).
 * Two processes starting the same new writer at once collide on `(writer, seq)`; the loser retries
 * on the winner's head.
 */
import pg from 'pg';
import type { AuditCheckpoint } from '../../governance/audit-signing.ts';
import type { LedgerEngine, LedgerHead, LedgerRow } from '../../governance/audit-ledger.ts';
import { LEDGER_MIGRATIONS } from '../audit-ledger-migrations.ts';
import { watchConnections } from './database.ts';

const UNIQUE_VIOLATION = '23505';
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export async function openPostgresLedgerStore(options: {
  url: string;
  /** Schema holding the tables (created if absent). Default `public`. */
  schema?: string;
  onError?: (error: Error) => void;
}): Promise<LedgerEngine> {
  const schema = options.schema ?? 'public';
  if (!SCHEMA_NAME.test(schema)) throw new Error(`invalid PostgreSQL schema name: ${schema}`);
  const pool = new pg.Pool({
    connectionString: options.url,
    max: 4,
    // Every connection works in the ledger's schema.
    options: `-c search_path=${schema}`,
  });
  // A lost connection surfaces as a failed query (and a failing ledger), never as a crash.
  watchConnections(pool, (error) => options.onError?.(error));
  const client = await pool.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    // One migrator at a time: concurrent CREATE IF NOT EXISTS can still collide in the catalogue.
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [`fraudgate-ledger-migrate:${schema}`]);
    try {
      for (const m of LEDGER_MIGRATIONS) await client.query(m.postgres);
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`fraudgate-ledger-migrate:${schema}`]);
    }
  } finally {
    client.release();
  }

  const commitOnce = async (writer: string, build: Parameters<LedgerEngine['commit']>[1]) => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const found = await c.query<{ seq: string; hash: string; sealed_seq: string; sealed_at: string }>(
        'SELECT seq, hash, sealed_seq, sealed_at FROM audit_writers WHERE writer = $1 FOR UPDATE',
        [writer],
      );
      const row = found.rows[0];
      const head: LedgerHead | undefined = row && {
        seq: Number(row.seq),
        hash: row.hash,
        sealed_seq: Number(row.sealed_seq),
        sealed_at: row.sealed_at,
      };
      const { rows, checkpoints, head: next } = build(head);
      if (rows.length > 0) {
        await c.query(
          `INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash)
           SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])`,
          [
            writer,
            rows.map((r) => r.seq),
            rows.map((r) => r.ts),
            rows.map((r) => r.body),
            rows.map((r) => r.prev_hash),
            rows.map((r) => r.hash),
          ],
        );
      }
      for (const cp of checkpoints) {
        await c.query(
          'INSERT INTO audit_checkpoints (writer, seq, hash, ts, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)',
          [cp.writer, cp.seq, cp.hash, cp.ts, cp.key_id, cp.signature],
        );
      }
      await c.query(
        `INSERT INTO audit_writers (writer, seq, hash, sealed_seq, sealed_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
           sealed_seq = excluded.sealed_seq, sealed_at = excluded.sealed_at`,
        [writer, next.seq, next.hash, next.sealed_seq, next.sealed_at],
      );
      await c.query('COMMIT');
    } catch (error) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      c.release();
    }
  };

  return {
    kind: 'postgres',
    async commit(writer, build) {
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await commitOnce(writer, build);
        } catch (error) {
          const code = (error as { code?: unknown }).code;
          if (code !== UNIQUE_VIOLATION || attempt >= 3) throw error;
        }
      }
    },
    async *scan(batchSize = 10_000) {
      let after = '0';
      for (;;) {
        const { rows } = await pool.query<{
          id: string;
          writer: string;
          seq: string;
          ts: string;
          body: string;
          prev_hash: string;
          hash: string;
        }>({
          text: 'SELECT id, writer, seq, ts, body, prev_hash, hash FROM audit_records WHERE id > $1 ORDER BY id LIMIT $2',
          values: [after, batchSize],
        });
        if (rows.length === 0) return;
        const batch: LedgerRow[] = rows.map((r) => ({
          writer: r.writer,
          seq: Number(r.seq),
          ts: r.ts,
          body: r.body,
          prev_hash: r.prev_hash,
          hash: r.hash,
        }));
        after = rows[rows.length - 1]!.id;
        yield batch;
      }
    },
    async checkpoints() {
      const { rows } = await pool.query<AuditCheckpoint & { seq: string }>(
        'SELECT writer, seq, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY writer, seq',
      );
      return rows.map((r) => ({ ...r, seq: Number(r.seq) }));
    },
    async prune(writer, throughSeq) {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        const deleted = await c.query('DELETE FROM audit_records WHERE writer = $1 AND seq <= $2', [
          writer,
          throughSeq,
        ]);
        await c.query('DELETE FROM audit_checkpoints WHERE writer = $1 AND seq < $2', [writer, throughSeq]);
        await c.query('COMMIT');
        return deleted.rowCount ?? 0;
      } catch (error) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        c.release();
      }
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    async close() {
      await pool.end();
    },
  };
}
