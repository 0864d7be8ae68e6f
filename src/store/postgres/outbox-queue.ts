/**
 * The outbox's claim and supersede on PostgreSQL, where workers on different machines share one
 * queue:
 *
 * - `claim` selects due rows `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or take
 *   each other's rows, and takes a transaction-scoped advisory lock per (entity, effect) before
 *   re-checking that no lease is live for it: two replicas can never lease two writes for one user
 *   and effect at once (per-user ordering holds across replicas).
 * - `supersede` is one `UPDATE … FROM … RETURNING`: an effect is stale when a later event of its
 *   entity routed the same effect or decided the same abuse type (SUPERSEDED_EFFECT). Of two decisions with the same time, the later
 *   arrival (`received_at`, then the id) wins: ids do not follow arrival (below).
 * - `commitGroup` stores a group of webhooks and their receipt records in ONE statement, riding on
 *   the ledger's group commit (ledger-rider.ts), instead of a transaction of six round trips (BEGIN,
 *   the events, the writer's head, the records, the head again, COMMIT). The receipts name their
 *   events' ids, so the ids come from a block reserved ahead from the table's sequence (one round
 *   trip per block, started before the last one runs out). Ids therefore do not follow arrival: not
 *   across replicas (each holds its own block), nor within one (a group that takes the transaction
 *   way gets ids above the block). Nothing takes an id for a time: superseding orders by decision
 *   time and arrival, routing by the `routed` flag. The statement stores nothing when an
 *   event's key is stored already (a repeated delivery: its receipt must say duplicate) or the
 *   writer's head moved; that group then goes the transaction way, which handles both.
 */
import {
  eventKey,
  SUPERSEDED_EFFECT,
  type AppendReceipts,
  type EffectRow,
  type EnqueuedEvent,
  type GroupedEvent,
  type OutboxEffect,
  type OutboxQueue,
} from '../outbox-store.ts';
import { placeholders, type SqlExecutor } from '../sql.ts';
import { createLedgerRider } from './ledger-rider.ts';

/** Event ids reserved per round trip to the sequence: a few dozen groups' worth at full ingest. */
const ID_BLOCK = 1_000;

/**
 * The events go in (as JSON, $15) when the ledger's commit wins. No `ON CONFLICT`: a key stored
 * already (a repeated delivery, whose receipt must say so) fails the statement on the unique index,
 * and nothing of it commits. With `ON CONFLICT DO NOTHING` the other events, the head and every
 * receipt (hashed as `webhook_accepted` before sending) would commit; a short count could only undo
 * them by raising an error, which PostgreSQL logs like this one. (A guard that looked the keys up
 * first was planned, prepared on a young table, as a sequential scan, and kept that plan as the
 * table grew; as index probes it still costs about as much server time as inserting the events, on
 * every group, to spare the rare redelivery.)
 */
const EVENTS_RIDER = {
  name: 'fraudgate_ledger_commit_outbox_events',
  then: `events AS (
  INSERT INTO outbox_events (id, dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at)
  SELECT e.id, e.dedupe_key, e.entity_type, e.entity_id, e.decision_id, e.decision_time, e.received_at
    FROM won, json_to_recordset($15::json) AS e(id bigint, dedupe_key text, entity_type text, entity_id text,
      decision_id text, decision_time bigint, received_at bigint)
)`,
};

/** PostgreSQL's unique_violation: an event's key is stored already. */
const UNIQUE_VIOLATION = '23505';

/** The queue of one store (it keeps that store's reserved event ids). */
export function createPostgresOutboxQueue(): OutboxQueue {
  const reserved: number[] = [];
  /** A block being reserved: started when half the last one is used, so a group seldom waits for it. */
  let refill: Promise<void> | undefined;
  const startRefill = (db: SqlExecutor, atLeast: number) =>
    (refill ??= (async () => {
      try {
        const rows = await db.query<{ id: number }>(
          "SELECT nextval(pg_get_serial_sequence('outbox_events', 'id')) AS id FROM generate_series(1, $1)",
          [Math.max(atLeast, ID_BLOCK)],
        );
        reserved.push(...rows.map((r) => Number(r.id)));
      } finally {
        refill = undefined;
      }
    })());
  const reserveIds = async (db: SqlExecutor, n: number) => {
    while (reserved.length < n) await startRefill(db, n - reserved.length);
    const ids = reserved.splice(0, n);
    if (reserved.length < ID_BLOCK / 2) startRefill(db, ID_BLOCK).catch(() => undefined);
    return ids;
  };

  async function commitGroup(
    db: SqlExecutor,
    group: readonly GroupedEvent[],
    appendReceipts: AppendReceipts,
  ): Promise<EnqueuedEvent[] | undefined> {
    // Receipts to one ledger only: that ledger's commit carries the events.
    const audit = group[0]?.intake?.audit;
    if (!audit || group.some((g) => g.intake?.audit !== audit)) return undefined;
    const keys = group.map((g) => eventKey(g.event));
    const distinct = [...new Set(keys)];
    const ids = await reserveIds(db, distinct.length);
    const idOf = new Map(distinct.map((key, i) => [key, ids[i]!]));
    const rows: object[] = [];
    // A key repeated within the group is stored once, by its first delivery; the others are duplicates.
    const first = new Set<string>();
    const stored = keys.map((key, i): EnqueuedEvent => {
      const id = idOf.get(key)!;
      if (first.has(key)) return { id, duplicate: true };
      first.add(key);
      const { event, now } = group[i]!;
      rows.push({
        id,
        dedupe_key: key,
        entity_type: event.entityType,
        entity_id: event.entityId,
        decision_id: event.decisionId,
        decision_time: event.time,
        received_at: now,
      });
      return { id, duplicate: false };
    });
    const rider = createLedgerRider(db, { ...EVENTS_RIDER, params: [JSON.stringify(rows)] });
    try {
      await appendReceipts(rider, stored);
    } catch (error) {
      if (rider.outcome === 'unsent' || rider.outcome === 'lost') return undefined;
      if (rider.outcome === 'failed' && sqlState(error) === UNIQUE_VIOLATION) return undefined;
      throw error;
    }
    // An audit log that appended elsewhere, not through its ledger's commit (a sink that drops
    // records): the events still have to be stored.
    return rider.outcome === 'committed' ? stored : undefined;
  }

  return { ...queue, commitGroup };
}

/** The SQLSTATE behind `error`, through the ledger's wrapping (`cause`). */
function sqlState(error: unknown): string | undefined {
  for (let e = error; e instanceof Error; e = e.cause) {
    const { code } = e as { code?: unknown };
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

const queue: Pick<OutboxQueue, 'supersede' | 'claim'> = {
  async supersede(db, now, toEffect) {
    const rows = await db.query<EffectRow>(
      `UPDATE outbox_effects f SET state = 'skipped', last_error = 'superseded by a later decision', updated_at = $1
       FROM outbox_events e
       WHERE e.id = f.event_id AND f.state = 'pending' AND ${SUPERSEDED_EFFECT}
       RETURNING f.*`,
      [now],
    );
    return rows.map(toEffect);
  },

  async claim(db, owner, limit, leaseMs, now, toEffect, skip) {
    return db.transaction(async (tx) => {
      const due = await tx.query<EffectRow>(
        `SELECT * FROM outbox_effects f
         WHERE ((f.state = 'pending' AND f.next_attempt_at <= $1) OR (f.state = 'leased' AND f.lease_until <= $1))
           ${skip.length > 0 ? `AND f.id NOT IN (${placeholders(skip.length, 3)})` : ''}
         ORDER BY f.decision_time, f.id LIMIT $2 FOR UPDATE SKIP LOCKED`,
        // Only `limit` rows are locked: rows locked but not taken would be invisible to other claimers until commit.
        [now, limit, ...skip],
      );
      const taken: OutboxEffect[] = [];
      const seen = new Set<string>();
      for (const row of due) {
        const group = `${row.entity_key}\u0000${row.effect}`;
        if (seen.has(group) || taken.length >= limit) continue;
        seen.add(group);
        // Serialise claimers of one (entity, effect) until commit, then check for a live lease.
        const [locked] = await tx.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS ok',
          [`outbox|${row.entity_key}|${row.effect}`],
        );
        if (!locked?.ok) continue;
        const busy = await tx.query(
          `SELECT 1 FROM outbox_effects WHERE entity_key = $1 AND effect = $2 AND id <> $3
             AND state = 'leased' AND lease_until > $4 LIMIT 1`,
          [row.entity_key, row.effect, row.id, now],
        );
        if (busy.length > 0) continue;
        const [updated] = await tx.query<EffectRow>(
          `UPDATE outbox_effects SET state = 'leased', lease_owner = $1, lease_until = $2, updated_at = $3
           WHERE id = $4 AND state = $5 RETURNING *`,
          [owner, now + leaseMs, now, row.id, row.state],
        );
        if (updated) taken.push(toEffect(updated));
      }
      return taken;
    });
  },
};
