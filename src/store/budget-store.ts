/**
 * Blast-radius budgets, durable: every admitted destructive effect (who, which budget key, which
 * target, when) and every pause a spent budget causes, until a human lifts it. One interface, two
 * engines side by side (src/store/sqlite/budget-store.ts, src/store/postgres/budget-store.ts), one
 * contract test on both. `admit` is atomic per (principal, key) on both engines, so several replicas
 * can never together exceed a ceiling.
 */

/** A ceiling over the budget window: effects, and distinct targets (users). */
export interface BudgetLimit {
  max_effects?: number;
  max_targets?: number;
}

/** A spent budget: further effects of this key by this principal wait until a human lifts it. */
export interface BudgetPause {
  principal: string;
  budget_key: string;
  paused_at: string;
  /** Why, in words: which ceiling was reached. */
  reason: string;
  lifted_at?: string;
  lifted_by?: string;
}

export type AdmitResult =
  | { admitted: true }
  | {
      admitted: false;
      pause: BudgetPause;
      /** true when this call caused the pause. */ newly_paused: boolean;
    };

/** One budget an effect counts against, with its ceiling. */
export interface BudgetEntry {
  budget_key: string;
  limit: BudgetLimit;
}

export interface BudgetStore {
  /**
   * One effect against every budget in `budgets` (an undo counts in undo_action's and in that of
   * what it re-applies), all or nothing: for each, count this principal's effects since the window
   * start (or its last lift, if later); refuse while any is paused; when one would pass a ceiling,
   * create its pause and refuse; else record the effect in every one and admit. Atomic per
   * (principal, key) for all the keys at once, so a refusal in one never leaves a count in another.
   */
  admit(input: {
    principal: string;
    budgets: readonly BudgetEntry[];
    target: string;
    window_start: Date;
    at: Date;
  }): Promise<AdmitResult>;
  /** Active (not lifted) pauses, oldest first. */
  activePauses(): Promise<BudgetPause[]>;
  /** Lift the active pause; the budget counts afresh from now. Undefined when none was active. */
  lift(principal: string, budgetKey: string, by: string, at: Date): Promise<BudgetPause | undefined>;
  close(): Promise<void>;
}

/** The tables, versions 250–251 of the approval-guardrails range; identical SQL on both engines. */
export const BUDGET_MIGRATIONS = [
  {
    version: 250,
    name: 'budget effects',
    sql: `CREATE TABLE IF NOT EXISTS budget_effects (
  principal TEXT NOT NULL, budget_key TEXT NOT NULL, target TEXT NOT NULL, at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_effects_window ON budget_effects (principal, budget_key, at_ms);`,
  },
  {
    version: 251,
    name: 'budget pauses',
    sql: `CREATE TABLE IF NOT EXISTS budget_pauses (
  principal TEXT NOT NULL, budget_key TEXT NOT NULL, paused_at TEXT NOT NULL, reason TEXT NOT NULL,
  lifted_at TEXT, lifted_by TEXT, lifted_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS budget_pauses_key ON budget_pauses (principal, budget_key, lifted_at);`,
  },
] as const;

export interface PauseRow {
  principal: string;
  budget_key: string;
  paused_at: string;
  reason: string;
  lifted_at: string | null;
  lifted_by: string | null;
}

export function pauseFromRow(row: PauseRow): BudgetPause {
  return {
    principal: row.principal,
    budget_key: row.budget_key,
    paused_at: row.paused_at,
    reason: row.reason,
    ...(row.lifted_at ? { lifted_at: row.lifted_at } : {}),
    ...(row.lifted_by ? { lifted_by: row.lifted_by } : {}),
  };
}

/**
 * The decision both engines make once they hold the (principal, key) lock and have read the counts:
 * which ceiling, if any, this effect would pass.
 */
export function ceilingReached(
  limit: BudgetLimit,
  counts: { effects: number; targets: number; targetSeen: boolean },
): string | undefined {
  if (limit.max_effects !== undefined && counts.effects >= limit.max_effects)
    return `${counts.effects} effects reached the ceiling of ${limit.max_effects}`;
  if (limit.max_targets !== undefined && !counts.targetSeen && counts.targets >= limit.max_targets)
    return `${counts.targets} distinct targets reached the ceiling of ${limit.max_targets}`;
  return undefined;
}
