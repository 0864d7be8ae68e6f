/**
 * The outbox's claim and supersede on SQLite: one file, one writer at a time. Each runs in a
 * `BEGIN IMMEDIATE` transaction, so two workers (this process and `fraudgate outbox work`) never
 * both read the same due rows.
 */
import { SUPERSEDED_EFFECT, type EffectRow, type OutboxEffect, type OutboxQueue } from '../outbox-store.ts';
import { placeholders } from '../sql.ts';

export const sqliteOutboxQueue: OutboxQueue = {
  async supersede(db, now, toEffect) {
    return db.transaction(async (tx) => {
      // A later routed event of the same entity (equal decision times: the later arrival, then the
      // higher id) that routed the same effect makes an unstarted effect stale.
      const stale = await tx.query<EffectRow>(
        `SELECT f.* FROM outbox_effects f JOIN outbox_events e ON e.id = f.event_id
         WHERE f.state = 'pending' AND ${SUPERSEDED_EFFECT}`,
      );
      for (const row of stale) {
        await tx.execute(
          `UPDATE outbox_effects SET state = 'skipped', last_error = 'superseded by a later decision', updated_at = $1
           WHERE id = $2 AND state = 'pending'`,
          [now, row.id],
        );
      }
      return stale.map((row) => ({ ...toEffect(row), state: 'skipped' as const }));
    });
  },

  async claim(db, owner, limit, leaseMs, now, toEffect, skip) {
    return db.transaction(async (tx) => {
      const due = await tx.query<EffectRow>(
        `SELECT f.* FROM outbox_effects f
         WHERE ((f.state = 'pending' AND f.next_attempt_at <= $1) OR (f.state = 'leased' AND f.lease_until <= $1))
           ${skip.length > 0 ? `AND f.id NOT IN (${placeholders(skip.length, 3)})` : ''}
           AND NOT EXISTS (
             SELECT 1 FROM outbox_effects busy
             WHERE busy.entity_key = f.entity_key AND busy.effect = f.effect AND busy.id <> f.id
               AND busy.state = 'leased' AND busy.lease_until > $1)
         ORDER BY f.decision_time, f.id LIMIT $2`,
        [now, limit * 2, ...skip],
      );
      const taken: OutboxEffect[] = [];
      const seen = new Set<string>();
      for (const row of due) {
        // One per (entity, effect) per claim: the earlier decision's write must finish first.
        const group = `${row.entity_key}\u0000${row.effect}`;
        if (seen.has(group) || taken.length >= limit) continue;
        seen.add(group);
        const ok = await tx.execute(
          `UPDATE outbox_effects SET state = 'leased', lease_owner = $1, lease_until = $2, updated_at = $3
           WHERE id = $4 AND state = $5`,
          [owner, now + leaseMs, now, row.id, row.state],
        );
        if (ok > 0) {
          taken.push({
            ...toEffect(row),
            state: 'leased',
            leaseOwner: owner,
            leaseUntil: now + leaseMs,
          });
        }
      }
      return taken;
    });
  },
};
