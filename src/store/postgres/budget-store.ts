/**
 * Budgets on PostgreSQL, shared by every replica; see src/store/budget-store.ts. `admit` holds a
 * transaction-scoped advisory lock on (principal, key), so concurrent replicas count and insert one
 * at a time for the same budget.
 */
import pg from 'pg';
import { StoreUnavailableError } from '../../errors.ts';
import {
  BUDGET_MIGRATIONS,
  ceilingReached,
  pauseFromRow,
  type BudgetStore,
  type PauseRow,
} from '../budget-store.ts';
import { isConnectionFailure, watchConnections } from './database.ts';

/** Serialises the table set-up when several replicas start at once. */
const SETUP_LOCK = 72270250;

export async function openPostgresBudgetStore(
  connectionString: string,
  options: { schema?: string; poolSize?: number; onError?: (error: Error) => void } = {},
): Promise<BudgetStore> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  const pool = new pg.Pool({
    connectionString,
    max: options.poolSize ?? 4,
    options: `-c search_path=${schema}`,
  });
  // A lost connection must not crash the process: the pool replaces it on next use.
  watchConnections(pool, (error) => options.onError?.(error));
  const setup = await pool.connect();
  try {
    await setup.query('SELECT pg_advisory_lock($1)', [SETUP_LOCK]);
    await setup.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    for (const migration of BUDGET_MIGRATIONS) await setup.query(migration.sql);
  } finally {
    await setup.query('SELECT pg_advisory_unlock($1)', [SETUP_LOCK]).catch(() => undefined);
    setup.release();
  }

  return {
    async admit({ principal, budgets, target, window_start, at }) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        // Locked in one order (sorted keys), so two admissions over overlapping keys cannot deadlock.
        const keys = [...new Set(budgets.map((b) => b.budget_key))].sort();
        for (const budget_key of keys) {
          await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [
            `budget\n${principal}\n${budget_key}`,
          ]);
        }
        const paused = await client.query<PauseRow>(
          `SELECT * FROM budget_pauses WHERE principal = $1 AND budget_key = ANY($2::text[]) AND lifted_at IS NULL
             ORDER BY paused_at LIMIT 1`,
          [principal, keys],
        );
        if (paused.rows[0]) {
          await client.query('COMMIT');
          return { admitted: false, pause: pauseFromRow(paused.rows[0]), newly_paused: false };
        }
        for (const { budget_key, limit } of budgets) {
          const lifted = await client.query<{ at: string | null }>(
            'SELECT max(lifted_at_ms) AS at FROM budget_pauses WHERE principal = $1 AND budget_key = $2',
            [principal, budget_key],
          );
          const since = Math.max(window_start.getTime(), Number(lifted.rows[0]?.at ?? 0));
          const counted = await client.query<{ effects: string; targets: string; seen: string | null }>(
            `SELECT count(*) AS effects, count(DISTINCT target) AS targets,
                    sum(CASE WHEN target = $1 THEN 1 ELSE 0 END) AS seen
               FROM budget_effects WHERE principal = $2 AND budget_key = $3 AND at_ms >= $4`,
            [target, principal, budget_key, since],
          );
          const row = counted.rows[0]!;
          const reached = ceilingReached(limit, {
            effects: Number(row.effects),
            targets: Number(row.targets),
            targetSeen: Number(row.seen ?? 0) > 0,
          });
          if (reached) {
            await client.query(
              'INSERT INTO budget_pauses (principal, budget_key, paused_at, reason) VALUES ($1, $2, $3, $4)',
              [principal, budget_key, at.toISOString(), reached],
            );
            await client.query('COMMIT');
            return {
              admitted: false,
              pause: { principal, budget_key, paused_at: at.toISOString(), reason: reached },
              newly_paused: true,
            };
          }
        }
        for (const { budget_key } of budgets) {
          await client.query(
            'INSERT INTO budget_effects (principal, budget_key, target, at_ms) VALUES ($1, $2, $3, $4)',
            [principal, budget_key, target, at.getTime()],
          );
        }
        await client.query('COMMIT');
        return { admitted: true };
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        // The database went away (not a budget decision): the caller may simply try again.
        throw isConnectionFailure(error) ? new StoreUnavailableError(error) : error;
      } finally {
        client.release();
      }
    },
    async activePauses() {
      const { rows } = await pool.query<PauseRow>(
        'SELECT * FROM budget_pauses WHERE lifted_at IS NULL ORDER BY paused_at',
      );
      return rows.map(pauseFromRow);
    },
    async lift(principal, budgetKey, by, at) {
      const { rows } = await pool.query<PauseRow>(
        `UPDATE budget_pauses SET lifted_at = $1, lifted_by = $2, lifted_at_ms = $3
           WHERE principal = $4 AND budget_key = $5 AND lifted_at IS NULL RETURNING *`,
        [at.toISOString(), by, at.getTime(), principal, budgetKey],
      );
      return rows[0] ? pauseFromRow(rows[0]) : undefined;
    },
    async close() {
      await pool.end();
    },
  };
}
