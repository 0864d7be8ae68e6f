/** Budgets in the SQLite file of the data directory (one host); see src/store/budget-store.ts. */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import {
  BUDGET_MIGRATIONS,
  ceilingReached,
  pauseFromRow,
  type BudgetStore,
  type PauseRow,
} from '../budget-store.ts';

export function openSqliteBudgetStore(path: string): BudgetStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  for (const migration of BUDGET_MIGRATIONS) db.exec(migration.sql);

  const activePause = db.prepare(
    'SELECT * FROM budget_pauses WHERE principal = ? AND budget_key = ? AND lifted_at IS NULL LIMIT 1',
  );
  const lastLift = db.prepare(
    'SELECT max(lifted_at_ms) AS at FROM budget_pauses WHERE principal = ? AND budget_key = ?',
  );
  const counts = db.prepare(
    `SELECT count(*) AS effects, count(DISTINCT target) AS targets, sum(target = ?) AS seen
       FROM budget_effects WHERE principal = ? AND budget_key = ? AND at_ms >= ?`,
  );
  const insertEffect = db.prepare(
    'INSERT INTO budget_effects (principal, budget_key, target, at_ms) VALUES (?, ?, ?, ?)',
  );
  const insertPause = db.prepare(
    'INSERT INTO budget_pauses (principal, budget_key, paused_at, reason) VALUES (?, ?, ?, ?)',
  );
  const allActive = db.prepare('SELECT * FROM budget_pauses WHERE lifted_at IS NULL ORDER BY paused_at');
  const liftPause = db.prepare(
    `UPDATE budget_pauses SET lifted_at = ?, lifted_by = ?, lifted_at_ms = ?
       WHERE principal = ? AND budget_key = ? AND lifted_at IS NULL RETURNING *`,
  );

  return {
    async admit({ principal, budgets, target, window_start, at }) {
      // BEGIN IMMEDIATE takes the write lock first: two processes cannot both count then insert.
      db.exec('BEGIN IMMEDIATE');
      try {
        for (const { budget_key } of budgets) {
          const paused = activePause.get(principal, budget_key) as PauseRow | undefined;
          if (paused) {
            db.exec('COMMIT');
            return { admitted: false, pause: pauseFromRow(paused), newly_paused: false };
          }
        }
        for (const { budget_key, limit } of budgets) {
          const lifted = (lastLift.get(principal, budget_key) as { at: number | null }).at ?? 0;
          const since = Math.max(window_start.getTime(), lifted);
          const row = counts.get(target, principal, budget_key, since) as {
            effects: number;
            targets: number;
            seen: number | null;
          };
          const reached = ceilingReached(limit, {
            effects: Number(row.effects),
            targets: Number(row.targets),
            targetSeen: Number(row.seen ?? 0) > 0,
          });
          if (reached) {
            insertPause.run(principal, budget_key, at.toISOString(), reached);
            db.exec('COMMIT');
            return {
              admitted: false,
              pause: { principal, budget_key, paused_at: at.toISOString(), reason: reached },
              newly_paused: true,
            };
          }
        }
        for (const { budget_key } of budgets) insertEffect.run(principal, budget_key, target, at.getTime());
        db.exec('COMMIT');
        return { admitted: true };
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
    },
    async activePauses() {
      return (allActive.all() as unknown as PauseRow[]).map(pauseFromRow);
    },
    async lift(principal, budgetKey, by, at) {
      const row = liftPause.get(at.toISOString(), by, at.getTime(), principal, budgetKey) as
        PauseRow | undefined;
      return row ? pauseFromRow(row) : undefined;
    },
    async close() {
      db.close();
    },
  };
}
