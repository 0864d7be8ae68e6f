/**
 * The outbox's claim and supersede on PostgreSQL, where workers on different machines share one
 * queue:
 *
 * - `claim` selects due rows `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or take
 *   each other's rows, and takes a transaction-scoped advisory lock per (entity, effect) before
 *   re-checking that no lease is live for it: two replicas can never lease two writes for one user
 *   and effect at once (per-user ordering holds across replicas).
 * - `supersede` is one `UPDATE … FROM … RETURNING`.
 */
import { type EffectRow, type OutboxEffect, type OutboxQueue } from '../outbox-store.ts';

export const postgresOutboxQueue: OutboxQueue = {
  async supersede(db, now, toEffect) {
    const rows = await db.query<EffectRow>(
      `UPDATE outbox_effects f SET state = 'skipped', last_error = 'superseded by a later decision', updated_at = $1
       FROM outbox_events e
       WHERE e.id = f.event_id AND f.state = 'pending' AND EXISTS (
         SELECT 1 FROM outbox_events later
         WHERE later.entity_type = e.entity_type AND later.entity_id = e.entity_id AND later.routed = 1
           AND (later.decision_time > e.decision_time OR (later.decision_time = e.decision_time AND later.id > e.id)))
       RETURNING f.*`,
      [now],
    );
    return rows.map(toEffect);
  },

  async claim(db, owner, limit, leaseMs, now, toEffect) {
    return db.transaction(async (tx) => {
      const due = await tx.query<EffectRow>(
        `SELECT * FROM outbox_effects f
         WHERE (f.state = 'pending' AND f.next_attempt_at <= $1) OR (f.state = 'leased' AND f.lease_until <= $1)
         ORDER BY f.decision_time, f.id LIMIT $2 FOR UPDATE SKIP LOCKED`,
        // Only `limit` rows are locked: rows locked but not taken would be invisible to other claimers until commit.
        [now, limit],
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
