/**
 * The outbox on PostgreSQL, for several fraudgate replicas sharing one queue (the SQLite store
 * serves one machine). Same tables, same state machine and compare-and-set updates as
 * outbox-store.ts; what differs is how workers on different machines stay apart:
 *
 * - `claim` selects due rows `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or take
 *   each other's rows, and takes a transaction-scoped advisory lock per (entity, effect) before
 *   re-checking that no lease is live for it: two replicas can never lease two writes for one user
 *   and effect at once (per-user ordering holds across replicas).
 * - Commits are durable before `enqueue` resolves (`synchronous_commit` is on by default; a 2xx
 *   to Sift promises the event survives).
 */
import pg from 'pg';
import {
  effectFromRow,
  emptyOutboxStats,
  eventFromRow,
  eventKey,
  type EffectRow,
  type EffectState,
  type EventRow,
  type OutboxStore,
} from './outbox-store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS outbox_events (
  id BIGSERIAL PRIMARY KEY,
  dedupe_key TEXT NOT NULL UNIQUE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  decision_id TEXT NOT NULL,
  decision_time BIGINT NOT NULL,
  received_at BIGINT NOT NULL,
  routed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_events_unrouted ON outbox_events (routed, id);
CREATE INDEX IF NOT EXISTS outbox_events_entity ON outbox_events (entity_type, entity_id, routed, decision_time);
CREATE TABLE IF NOT EXISTS outbox_effects (
  id BIGSERIAL PRIMARY KEY,
  event_id BIGINT NOT NULL REFERENCES outbox_events (id),
  effect TEXT NOT NULL,
  tool TEXT NOT NULL,
  args TEXT NOT NULL,
  entity_key TEXT NOT NULL,
  decision_time BIGINT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL,
  lease_owner TEXT,
  lease_until BIGINT,
  approval_id TEXT,
  last_error TEXT,
  result TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (event_id, effect)
);
CREATE INDEX IF NOT EXISTS outbox_effects_due ON outbox_effects (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_effects_entity ON outbox_effects (entity_key, effect, state);
`;

type Raw = Record<string, unknown>;

// BIGINT and BIGSERIAL arrive as strings (they may exceed 2^53); ours are epoch ms and row counts.
const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

function effectRow(r: Raw): EffectRow {
  return {
    id: num(r.id),
    event_id: num(r.event_id),
    effect: String(r.effect),
    tool: String(r.tool),
    args: String(r.args),
    entity_key: String(r.entity_key),
    decision_time: num(r.decision_time),
    state: String(r.state),
    attempts: num(r.attempts),
    next_attempt_at: num(r.next_attempt_at),
    lease_owner: strOrNull(r.lease_owner),
    lease_until: numOrNull(r.lease_until),
    approval_id: strOrNull(r.approval_id),
    last_error: strOrNull(r.last_error),
    result: strOrNull(r.result),
    created_at: num(r.created_at),
    updated_at: num(r.updated_at),
  };
}

function eventRow(r: Raw): EventRow {
  return {
    id: num(r.id),
    entity_type: String(r.entity_type),
    entity_id: String(r.entity_id),
    decision_id: String(r.decision_id),
    decision_time: num(r.decision_time),
    received_at: num(r.received_at),
    routed: num(r.routed),
  };
}

/** Connect (a small pool) and create the tables if needed. */
export async function openPostgresOutboxStore(
  connectionString: string,
  options: {
    poolSize?: number;
    /** Tables live in this schema (created if needed); default `public`. */ schema?: string;
  } = {},
): Promise<OutboxStore> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  const pool = new pg.Pool({
    connectionString,
    max: options.poolSize ?? 4,
    options: `-c search_path=${schema}`,
  });
  // Two replicas starting together would race on CREATE TABLE IF NOT EXISTS; a lock serialises them.
  const setup = await pool.connect();
  try {
    await setup.query('SELECT pg_advisory_lock(72270501)');
    await setup.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await setup.query(SCHEMA);
  } finally {
    await setup.query('SELECT pg_advisory_unlock(72270501)').catch(() => undefined);
    setup.release();
  }

  const q = async (sql: string, params: unknown[] = []) => (await pool.query(sql, params)).rows as Raw[];
  const changed = async (sql: string, params: unknown[]) =>
    ((await pool.query(sql, params)).rowCount ?? 0) > 0;
  const tx = async <T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  };

  return {
    async enqueue(event, now = Date.now()) {
      const key = eventKey(event);
      const inserted = await q(
        `INSERT INTO outbox_events (dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
        [key, event.entityType, event.entityId, event.decisionId, event.time, now],
      );
      if (inserted[0]) return { id: num(inserted[0].id), duplicate: false };
      const existing = await q('SELECT id FROM outbox_events WHERE dedupe_key = $1', [key]);
      return { id: num(existing[0]?.id ?? 0), duplicate: true };
    },

    async enqueueRouted(event, effects, now = Date.now()) {
      return tx(async (c) => {
        const key = eventKey(event);
        const inserted = (
          await c.query(
            `INSERT INTO outbox_events (dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at, routed)
             VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
            [key, event.entityType, event.entityId, event.decisionId, event.time, now],
          )
        ).rows as Raw[];
        if (!inserted[0]) {
          const existing = (await c.query('SELECT id FROM outbox_events WHERE dedupe_key = $1', [key]))
            .rows as Raw[];
          return { id: num(existing[0]?.id ?? 0), duplicate: true };
        }
        const id = num(inserted[0].id);
        for (const e of effects) {
          await c.query(
            `INSERT INTO outbox_effects (event_id, effect, tool, args, entity_key, decision_time, state,
               next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7) ON CONFLICT (event_id, effect) DO NOTHING`,
            [
              id,
              e.effect,
              e.tool,
              JSON.stringify(e.args),
              `${event.entityType}:${event.entityId}`,
              event.time,
              now,
            ],
          );
        }
        return { id, duplicate: false };
      });
    },

    async unrouted(limit) {
      return (await q('SELECT * FROM outbox_events WHERE routed = 0 ORDER BY id LIMIT $1', [limit])).map(
        (r) => eventFromRow(eventRow(r)),
      );
    },

    async route(eventId, effects, now = Date.now()) {
      await tx(async (c) => {
        const rows = (await c.query('SELECT * FROM outbox_events WHERE id = $1 FOR UPDATE', [eventId]))
          .rows as Raw[];
        const row = rows[0] ? eventRow(rows[0]) : undefined;
        if (!row || row.routed === 1) return;
        const entityKey = `${row.entity_type}:${row.entity_id}`;
        for (const e of effects) {
          await c.query(
            `INSERT INTO outbox_effects (event_id, effect, tool, args, entity_key, decision_time, state,
               next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7) ON CONFLICT (event_id, effect) DO NOTHING`,
            [eventId, e.effect, e.tool, JSON.stringify(e.args), entityKey, row.decision_time, now],
          );
        }
        await c.query('UPDATE outbox_events SET routed = 1 WHERE id = $1', [eventId]);
      });
    },

    async supersede(now = Date.now()) {
      const rows = await q(
        `UPDATE outbox_effects f SET state = 'skipped', last_error = 'superseded by a later decision', updated_at = $1
         FROM outbox_events e
         WHERE e.id = f.event_id AND f.state = 'pending' AND EXISTS (
           SELECT 1 FROM outbox_events later
           WHERE later.entity_type = e.entity_type AND later.entity_id = e.entity_id AND later.routed = 1
             AND (later.decision_time > e.decision_time OR (later.decision_time = e.decision_time AND later.id > e.id)))
         RETURNING f.*`,
        [now],
      );
      return rows.map((r) => effectFromRow(effectRow(r)));
    },

    async claim(owner, limit, leaseMs, now = Date.now()) {
      return tx(async (c) => {
        const due = (
          await c.query(
            `SELECT * FROM outbox_effects f
             WHERE (f.state = 'pending' AND f.next_attempt_at <= $1) OR (f.state = 'leased' AND f.lease_until <= $1)
             ORDER BY f.decision_time, f.id LIMIT $2 FOR UPDATE SKIP LOCKED`,
            // Only `limit` rows are locked: rows locked but not taken would be invisible to other claimers until commit.
            [now, limit],
          )
        ).rows as Raw[];
        const taken = [];
        const seen = new Set<string>();
        for (const raw of due) {
          const row = effectRow(raw);
          const group = `${row.entity_key}\u0000${row.effect}`;
          if (seen.has(group) || taken.length >= limit) continue;
          seen.add(group);
          // Serialise claimers of one (entity, effect) until commit, then check for a live lease.
          const locked = (
            await c.query('SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS ok', [
              `outbox|${row.entity_key}|${row.effect}`,
            ])
          ).rows as { ok: boolean }[];
          if (!locked[0]?.ok) continue;
          const busy = await c.query(
            `SELECT 1 FROM outbox_effects WHERE entity_key = $1 AND effect = $2 AND id <> $3
               AND state = 'leased' AND lease_until > $4 LIMIT 1`,
            [row.entity_key, row.effect, row.id, now],
          );
          if ((busy.rowCount ?? 0) > 0) continue;
          const updated = (
            await c.query(
              `UPDATE outbox_effects SET state = 'leased', lease_owner = $1, lease_until = $2, updated_at = $3
               WHERE id = $4 AND state = $5 RETURNING *`,
              [owner, now + leaseMs, now, row.id, row.state],
            )
          ).rows as Raw[];
          if (updated[0]) taken.push(effectFromRow(effectRow(updated[0])));
        }
        return taken;
      });
    },

    async renew(ids, owner, leaseUntil, now = Date.now()) {
      if (ids.length === 0) return [];
      const rows = await q(
        `UPDATE outbox_effects SET lease_until = $1, updated_at = $2
         WHERE id = ANY($3) AND state = 'leased' AND lease_owner = $4 RETURNING id`,
        [leaseUntil, now, ids, owner],
      );
      return rows.map((r) => num(r.id));
    },

    complete: (id, owner, result, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'done', result = $1, last_error = NULL, lease_until = NULL, updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [JSON.stringify(result ?? null), now, id, owner],
      ),

    retry: (id, owner, nextAttemptAt, error, countAttempt, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = attempts + $1, next_attempt_at = $2,
           last_error = COALESCE($3, last_error), lease_until = NULL, updated_at = $4
         WHERE id = $5 AND state = 'leased' AND lease_owner = $6`,
        [countAttempt ? 1 : 0, nextAttemptAt, error ?? null, now, id, owner],
      ),

    deadLetter: (id, owner, error, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'dead', attempts = attempts + 1, last_error = $1, lease_until = NULL,
           updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [error, now, id, owner],
      ),

    awaitApproval: (id, owner, approvalId, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'awaiting_approval', approval_id = $1, lease_until = NULL, updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [approvalId, now, id, owner],
      ),

    settleApproval: (id, to, detail, now = Date.now()) => {
      const json = JSON.stringify(detail ?? null);
      return changed(
        `UPDATE outbox_effects SET state = $1::text,
           result = CASE WHEN $1::text = 'done' THEN $2::text ELSE result END,
           last_error = CASE WHEN $1::text = 'done' THEN NULL ELSE $2::text END, updated_at = $3
         WHERE id = $4 AND state = 'awaiting_approval'`,
        [to, json, now, id],
      );
    },

    requeue: (id, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
           lease_until = NULL, approval_id = NULL, updated_at = $1
         WHERE id = $2 AND state IN ('dead', 'denied')`,
        [now, id],
      ),

    drop: (id, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'dropped', updated_at = $1 WHERE id = $2 AND state IN ('dead', 'denied')`,
        [now, id],
      ),

    async get(id) {
      const rows = await q('SELECT * FROM outbox_effects WHERE id = $1', [id]);
      return rows[0] ? effectFromRow(effectRow(rows[0])) : undefined;
    },

    async getEvent(id) {
      const rows = await q('SELECT * FROM outbox_events WHERE id = $1', [id]);
      return rows[0] ? eventFromRow(eventRow(rows[0])) : undefined;
    },

    async list(filter = {}) {
      const states = filter.states ?? [];
      const rows =
        states.length > 0
          ? await q('SELECT * FROM outbox_effects WHERE state = ANY($1) ORDER BY id DESC LIMIT $2', [
              states,
              filter.limit ?? 100,
            ])
          : await q('SELECT * FROM outbox_effects ORDER BY id DESC LIMIT $1', [filter.limit ?? 100]);
      return rows.map((r) => effectFromRow(effectRow(r)));
    },

    async stats() {
      const out = emptyOutboxStats();
      for (const row of await q('SELECT state, COUNT(*) AS n FROM outbox_effects GROUP BY state')) {
        out[String(row.state) as EffectState] = num(row.n);
      }
      out.unrouted = num((await q('SELECT COUNT(*) AS n FROM outbox_events WHERE routed = 0'))[0]?.n ?? 0);
      return out;
    },

    async close() {
      await pool.end();
    },
  };
}
