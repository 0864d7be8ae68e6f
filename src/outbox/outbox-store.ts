/**
 * The durable outbox behind Sift decision webhooks: received events (deduplicated by a unique key)
 * and the effects routed from them, each a small state machine driven by the outbox worker.
 *
 *   event:  received → routed (its effects inserted in the same transaction)
 *   effect: pending → leased → done | pending (retry) | awaiting_approval | dead | skipped
 *           awaiting_approval → done | denied | dead;  dead → pending (retry) | dropped
 *
 * One asynchronous interface, so a PostgreSQL implementation (`FOR UPDATE SKIP LOCKED` in `claim`)
 * can serve several replicas; the default is the SQLite file in the data directory (`node:sqlite`, WAL,
 * `synchronous = FULL` so an acknowledged webhook survives a power cut). Every state change is a
 * compare-and-set on (state, lease owner): a worker whose lease expired cannot overwrite the work
 * of the worker that took over.
 *
 * For PostgreSQL the same tables work; `claim` becomes one statement per batch:
 *   UPDATE outbox_effects SET state = 'leased', lease_owner = $1, lease_until = now() + $2
 *   WHERE id IN (SELECT id FROM outbox_effects WHERE <due, no live lease for its entity and effect>
 *                ORDER BY decision_time, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *;
 * (then drop all but the first per entity and effect, as below), and `enqueue` uses
 * `INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id` with synchronous_commit on.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';

/** A Sift decision webhook as accepted (§7.1 of the Sift contract); unknown keys are not kept. */
export interface DecisionEvent {
  entityType: string;
  entityId: string;
  decisionId: string;
  /** Epoch ms of the decision. */
  time: number;
}

/** A stored event. */
export interface StoredEvent extends DecisionEvent {
  id: number;
  receivedAt: number;
  routed: boolean;
}

export type EffectState =
  'pending' | 'leased' | 'awaiting_approval' | 'done' | 'skipped' | 'denied' | 'dead' | 'dropped';

/** One automated action for one event: a governed tool call with frozen arguments. */
export interface OutboxEffect {
  id: number;
  eventId: number;
  /** Routing name (segment, salesforce, case, suppress). */
  effect: string;
  tool: string;
  args: Record<string, unknown>;
  /** `type:id` of the Sift entity; ordering and superseding are per entity key and effect. */
  entityKey: string;
  decisionTime: number;
  state: EffectState;
  /** Failed attempts so far (a deferral for a budget does not count). */
  attempts: number;
  nextAttemptAt: number;
  leaseOwner?: string;
  leaseUntil?: number;
  approvalId?: string;
  lastError?: string;
  result?: unknown;
  createdAt: number;
  updatedAt: number;
}

export interface NewEffect {
  effect: string;
  tool: string;
  args: Record<string, unknown>;
}

export interface OutboxStore {
  /** Durably store an event; `duplicate` when the same (type, id, decision, time) was stored before. */
  enqueue(event: DecisionEvent, now?: number): Promise<{ id: number; duplicate: boolean }>;
  /**
   * Store an event already routed to `effects`, in one transaction (events whose effects are known
   * on receipt, e.g. a Segment message); a duplicate stores nothing.
   */
  enqueueRouted(
    event: DecisionEvent,
    effects: NewEffect[],
    now?: number,
  ): Promise<{ id: number; duplicate: boolean }>;
  /** Events not yet routed, oldest first. */
  unrouted(limit: number): Promise<StoredEvent[]>;
  /** Insert the event's effects and mark it routed, atomically; repeating it is harmless. */
  route(eventId: number, effects: NewEffect[], now?: number): Promise<void>;
  /**
   * Mark pending effects of entities that have a later routed event as skipped (a later decision
   * is never overwritten by an earlier one); returns them so each can be audited.
   */
  supersede(now?: number): Promise<OutboxEffect[]>;
  /**
   * Lease due effects, oldest decision first, at most one in flight per (entity, effect) so the
   * writes for one user happen in decision-time order. Expired leases count as due (crash recovery).
   */
  claim(owner: string, limit: number, leaseMs: number, now?: number): Promise<OutboxEffect[]>;
  /**
   * Extend the leases this owner still holds (a heartbeat while effects run, so a slow effect is not
   * claimed again by anyone); returns the ids it still owns.
   */
  renew(ids: number[], owner: string, leaseUntil: number, now?: number): Promise<number[]>;
  complete(id: number, owner: string, result: unknown, now?: number): Promise<boolean>;
  /** Back to pending at `nextAttemptAt`; `countAttempt` false for deferrals (budgets, own rate limit). */
  retry(
    id: number,
    owner: string,
    nextAttemptAt: number,
    error: string | undefined,
    countAttempt: boolean,
    now?: number,
  ): Promise<boolean>;
  deadLetter(id: number, owner: string, error: string, now?: number): Promise<boolean>;
  awaitApproval(id: number, owner: string, approvalId: string, now?: number): Promise<boolean>;
  /** Settle an effect waiting for a human: done, denied or dead. */
  settleApproval(
    id: number,
    to: 'done' | 'denied' | 'dead' | 'skipped',
    detail: unknown,
    now?: number,
  ): Promise<boolean>;
  /** Operator: a dead (or denied) effect back to pending with a fresh attempt count. */
  requeue(id: number, now?: number): Promise<boolean>;
  /** Operator: give up on a dead effect for good. */
  drop(id: number, now?: number): Promise<boolean>;
  get(id: number): Promise<OutboxEffect | undefined>;
  getEvent(id: number): Promise<StoredEvent | undefined>;
  list(filter?: { states?: EffectState[]; limit?: number }): Promise<OutboxEffect[]>;
  /** Effect counts per state, plus events not yet routed. */
  stats(): Promise<Record<EffectState | 'unrouted', number>>;
  close(): Promise<void>;
}

/** The deduplication key of a delivery: Sift may deliver the same decision more than once (§7.3). */
export function eventKey(event: DecisionEvent): string {
  return createHash('sha256')
    .update([event.entityType, event.entityId, event.decisionId, String(event.time)].join('\u0000'))
    .digest('hex');
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS outbox_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  dedupe_key TEXT NOT NULL UNIQUE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  decision_id TEXT NOT NULL,
  decision_time INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  routed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_events_unrouted ON outbox_events (routed, id);
CREATE INDEX IF NOT EXISTS outbox_events_entity ON outbox_events (entity_type, entity_id, routed, decision_time);
CREATE TABLE IF NOT EXISTS outbox_effects (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id INTEGER NOT NULL REFERENCES outbox_events (id),
  effect TEXT NOT NULL,
  tool TEXT NOT NULL,
  args TEXT NOT NULL,
  entity_key TEXT NOT NULL,
  decision_time INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_until INTEGER,
  approval_id TEXT,
  last_error TEXT,
  result TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (event_id, effect)
);
CREATE INDEX IF NOT EXISTS outbox_effects_due ON outbox_effects (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_effects_entity ON outbox_effects (entity_key, effect, state);
`;

/** A stored effect row as the SQL stores have it (numbers already numbers). */
export interface EffectRow {
  id: number;
  event_id: number;
  effect: string;
  tool: string;
  args: string;
  entity_key: string;
  decision_time: number;
  state: string;
  attempts: number;
  next_attempt_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  approval_id: string | null;
  last_error: string | null;
  result: string | null;
  created_at: number;
  updated_at: number;
}

/** A stored event row. */
export interface EventRow {
  id: number;
  entity_type: string;
  entity_id: string;
  decision_id: string;
  decision_time: number;
  received_at: number;
  routed: number;
}

export function effectFromRow(row: EffectRow): OutboxEffect {
  const effect: OutboxEffect = {
    id: row.id,
    eventId: row.event_id,
    effect: row.effect,
    tool: row.tool,
    args: JSON.parse(row.args) as Record<string, unknown>,
    entityKey: row.entity_key,
    decisionTime: row.decision_time,
    state: row.state as EffectState,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
  if (row.lease_owner !== null) effect.leaseOwner = row.lease_owner;
  if (row.lease_until !== null) effect.leaseUntil = row.lease_until;
  if (row.approval_id !== null) effect.approvalId = row.approval_id;
  if (row.last_error !== null) effect.lastError = row.last_error;
  if (row.result !== null) effect.result = JSON.parse(row.result) as unknown;
  return effect;
}

export function eventFromRow(row: EventRow): StoredEvent {
  return {
    id: row.id,
    entityType: row.entity_type,
    entityId: row.entity_id,
    decisionId: row.decision_id,
    time: row.decision_time,
    receivedAt: row.received_at,
    routed: row.routed === 1,
  };
}

/** Open (and create if needed) the SQLite outbox at `path` — by default the runtime's database file. */

/** Counts per effect state, all zero: the start of every store's `stats()`. */
export function emptyOutboxStats(): Record<EffectState | 'unrouted', number> {
  return {
    pending: 0,
    leased: 0,
    awaiting_approval: 0,
    done: 0,
    skipped: 0,
    denied: 0,
    dead: 0,
    dropped: 0,
    unrouted: 0,
  };
}

export function openSqliteOutboxStore(path: string): OutboxStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  // FULL: a 2xx to Sift promises the event is on disk, so every commit is fsynced (WAL keeps it cheap).
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;');
  db.exec(SCHEMA);

  const tx = <T>(fn: () => T): T => {
    // IMMEDIATE takes the write lock up front, so two workers never both read the same due rows.
    db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      db.exec('COMMIT');
      return out;
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
  };
  const run = (sql: string, ...params: SQLInputValue[]) => db.prepare(sql).run(...params);
  const changed = (sql: string, ...params: SQLInputValue[]) => Number(run(sql, ...params).changes) > 0;

  const insertEvent = db.prepare(
    `INSERT INTO outbox_events (dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at)
     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING`,
  );
  const eventByKey = db.prepare('SELECT id FROM outbox_events WHERE dedupe_key = ?');
  const insertEffect = db.prepare(
    `INSERT INTO outbox_effects (event_id, effect, tool, args, entity_key, decision_time, state, next_attempt_at,
       created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (event_id, effect) DO NOTHING`,
  );
  const effectById = db.prepare('SELECT * FROM outbox_effects WHERE id = ?');

  const insertOne = (event: DecisionEvent, now: number): { id: number; duplicate: boolean } => {
    const key = eventKey(event);
    const result = insertEvent.run(key, event.entityType, event.entityId, event.decisionId, event.time, now);
    if (Number(result.changes) > 0) return { id: Number(result.lastInsertRowid), duplicate: false };
    const row = eventByKey.get(key) as { id: number } | undefined;
    return { id: row?.id ?? 0, duplicate: true };
  };
  // Group commit: events enqueued in the same event-loop turn (webhooks arriving together) share
  // one transaction, so synchronous = FULL costs one sync per group, not one per webhook. Each
  // caller still resolves only after its event is committed, and all of a group fail together.
  let group: {
    event: DecisionEvent;
    now: number;
    resolve: (stored: { id: number; duplicate: boolean }) => void;
    reject: (error: unknown) => void;
  }[] = [];
  const commitGroup = () => {
    const batch = group;
    group = [];
    let stored: { id: number; duplicate: boolean }[];
    try {
      stored = tx(() => batch.map((e) => insertOne(e.event, e.now)));
    } catch (error) {
      for (const e of batch) e.reject(error);
      return;
    }
    batch.forEach((e, i) => e.resolve(stored[i]!));
  };

  return {
    enqueue(event, now = Date.now()) {
      return new Promise((resolve, reject) => {
        if (group.length === 0) setImmediate(commitGroup);
        group.push({ event, now, resolve, reject });
      });
    },

    async enqueueRouted(event, effects, now = Date.now()) {
      return tx(() => {
        const key = eventKey(event);
        const result = insertEvent.run(
          key,
          event.entityType,
          event.entityId,
          event.decisionId,
          event.time,
          now,
        );
        if (Number(result.changes) === 0) {
          const row = eventByKey.get(key) as { id: number } | undefined;
          return { id: row?.id ?? 0, duplicate: true };
        }
        const id = Number(result.lastInsertRowid);
        const entityKey = `${event.entityType}:${event.entityId}`;
        for (const e of effects) {
          insertEffect.run(
            id,
            e.effect,
            e.tool,
            JSON.stringify(e.args),
            entityKey,
            event.time,
            now,
            now,
            now,
          );
        }
        run('UPDATE outbox_events SET routed = 1 WHERE id = ?', id);
        return { id, duplicate: false };
      });
    },

    async unrouted(limit) {
      return (
        db
          .prepare('SELECT * FROM outbox_events WHERE routed = 0 ORDER BY id LIMIT ?')
          .all(limit) as unknown as EventRow[]
      ).map(eventFromRow);
    },

    async route(eventId, effects, now = Date.now()) {
      tx(() => {
        const row = db.prepare('SELECT * FROM outbox_events WHERE id = ?').get(eventId) as
          EventRow | undefined;
        if (!row || row.routed === 1) return;
        const entityKey = `${row.entity_type}:${row.entity_id}`;
        for (const e of effects) {
          insertEffect.run(
            eventId,
            e.effect,
            e.tool,
            JSON.stringify(e.args),
            entityKey,
            row.decision_time,
            now,
            now,
            now,
          );
        }
        run('UPDATE outbox_events SET routed = 1 WHERE id = ?', eventId);
      });
    },

    async supersede(now = Date.now()) {
      return tx(() => {
        // A later routed event of the same entity (ties broken by arrival) makes an unstarted effect stale.
        const stale = db
          .prepare(
            `SELECT f.* FROM outbox_effects f JOIN outbox_events e ON e.id = f.event_id
             WHERE f.state = 'pending' AND EXISTS (
               SELECT 1 FROM outbox_events later
               WHERE later.entity_type = e.entity_type AND later.entity_id = e.entity_id AND later.routed = 1
                 AND (later.decision_time > e.decision_time OR (later.decision_time = e.decision_time AND later.id > e.id)))`,
          )
          .all() as unknown as EffectRow[];
        for (const row of stale) {
          run(
            `UPDATE outbox_effects SET state = 'skipped', last_error = 'superseded by a later decision', updated_at = ?
             WHERE id = ? AND state = 'pending'`,
            now,
            row.id,
          );
        }
        return stale.map((row) => ({ ...effectFromRow(row), state: 'skipped' as const }));
      });
    },

    async claim(owner, limit, leaseMs, now = Date.now()) {
      return tx(() => {
        const due = db
          .prepare(
            `SELECT f.* FROM outbox_effects f
             WHERE ((f.state = 'pending' AND f.next_attempt_at <= ?) OR (f.state = 'leased' AND f.lease_until <= ?))
               AND NOT EXISTS (
                 SELECT 1 FROM outbox_effects busy
                 WHERE busy.entity_key = f.entity_key AND busy.effect = f.effect AND busy.id <> f.id
                   AND busy.state = 'leased' AND busy.lease_until > ?)
             ORDER BY f.decision_time, f.id LIMIT ?`,
          )
          .all(now, now, now, limit * 2) as unknown as EffectRow[];
        const taken: OutboxEffect[] = [];
        const seen = new Set<string>();
        for (const row of due) {
          // One per (entity, effect) per claim: the earlier decision's write must finish first.
          const group = `${row.entity_key}\u0000${row.effect}`;
          if (seen.has(group) || taken.length >= limit) continue;
          seen.add(group);
          const ok = changed(
            `UPDATE outbox_effects SET state = 'leased', lease_owner = ?, lease_until = ?, updated_at = ?
             WHERE id = ? AND state = ?`,
            owner,
            now + leaseMs,
            now,
            row.id,
            row.state,
          );
          if (ok)
            taken.push({
              ...effectFromRow(row),
              state: 'leased',
              leaseOwner: owner,
              leaseUntil: now + leaseMs,
            });
        }
        return taken;
      });
    },

    async renew(ids, owner, leaseUntil, now = Date.now()) {
      if (ids.length === 0) return [];
      return tx(() =>
        ids.filter((id) =>
          changed(
            `UPDATE outbox_effects SET lease_until = ?, updated_at = ? WHERE id = ? AND state = 'leased' AND lease_owner = ?`,
            leaseUntil,
            now,
            id,
            owner,
          ),
        ),
      );
    },

    async complete(id, owner, result, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'done', result = ?, last_error = NULL, lease_until = NULL, updated_at = ?
         WHERE id = ? AND state = 'leased' AND lease_owner = ?`,
        JSON.stringify(result ?? null),
        now,
        id,
        owner,
      );
    },

    async retry(id, owner, nextAttemptAt, error, countAttempt, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = attempts + ?, next_attempt_at = ?,
           last_error = COALESCE(?, last_error), lease_until = NULL, updated_at = ?
         WHERE id = ? AND state = 'leased' AND lease_owner = ?`,
        countAttempt ? 1 : 0,
        nextAttemptAt,
        error ?? null,
        now,
        id,
        owner,
      );
    },

    async deadLetter(id, owner, error, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'dead', attempts = attempts + 1, last_error = ?, lease_until = NULL,
           updated_at = ?
         WHERE id = ? AND state = 'leased' AND lease_owner = ?`,
        error,
        now,
        id,
        owner,
      );
    },

    async awaitApproval(id, owner, approvalId, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'awaiting_approval', approval_id = ?, lease_until = NULL, updated_at = ?
         WHERE id = ? AND state = 'leased' AND lease_owner = ?`,
        approvalId,
        now,
        id,
        owner,
      );
    },

    async settleApproval(id, to, detail, now = Date.now()) {
      const json = JSON.stringify(detail ?? null);
      return changed(
        `UPDATE outbox_effects SET state = ?, result = CASE WHEN ? = 'done' THEN ? ELSE result END,
           last_error = CASE WHEN ? = 'done' THEN NULL ELSE ? END, updated_at = ?
         WHERE id = ? AND state = 'awaiting_approval'`,
        to,
        to,
        json,
        to,
        json,
        now,
        id,
      );
    },

    async requeue(id, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,
           lease_until = NULL, approval_id = NULL, updated_at = ?
         WHERE id = ? AND state IN ('dead', 'denied')`,
        now,
        now,
        id,
      );
    },

    async drop(id, now = Date.now()) {
      return changed(
        `UPDATE outbox_effects SET state = 'dropped', updated_at = ? WHERE id = ? AND state IN ('dead', 'denied')`,
        now,
        id,
      );
    },

    async get(id) {
      const row = effectById.get(id) as EffectRow | undefined;
      return row ? effectFromRow(row) : undefined;
    },

    async getEvent(id) {
      const row = db.prepare('SELECT * FROM outbox_events WHERE id = ?').get(id) as EventRow | undefined;
      return row ? eventFromRow(row) : undefined;
    },

    async list(filter = {}) {
      const states = filter.states ?? [];
      const where = states.length > 0 ? `WHERE state IN (${states.map(() => '?').join(', ')})` : '';
      return (
        db
          .prepare(`SELECT * FROM outbox_effects ${where} ORDER BY id DESC LIMIT ?`)
          .all(...states, filter.limit ?? 100) as unknown as EffectRow[]
      ).map(effectFromRow);
    },

    async stats() {
      const out = emptyOutboxStats();
      for (const row of db
        .prepare('SELECT state, COUNT(*) AS n FROM outbox_effects GROUP BY state')
        .all() as {
        state: EffectState;
        n: number;
      }[]) {
        out[row.state] = row.n;
      }
      const unrouted = db.prepare('SELECT COUNT(*) AS n FROM outbox_events WHERE routed = 0').get() as {
        n: number;
      };
      out.unrouted = unrouted.n;
      return out;
    },

    async close() {
      db.close();
    },
  };
}
