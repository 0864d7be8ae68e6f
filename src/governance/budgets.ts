/**
 * Blast-radius budgets: a compromised agent or a runaway automation rule cannot block or suppress a
 * customer base. Before a destructive effect runs, its principal's budget for the tool (or per-call
 * key, e.g. `apply_decision:block`) must admit it: at most `max_effects` effects and `max_targets`
 * distinct targets per window (`budgets` in the config). Past a ceiling the budget pauses: nothing
 * more of that key runs for that principal until a human approver other than that principal lifts
 * the pause (`fraudgate budgets lift`, audited), and approved actions wait, still approved, to run
 * after the lift. Each pause is audited (`budget_paused`) and counted in
 * `fraudgate_budget_pauses_active`.
 */
import { randomUUID } from 'node:crypto';
import { sameIdentity } from '../auth/identity.ts';
import type { Config } from '../config.ts';
import { ERROR_CODES, ForbiddenError, FraudgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { BudgetPause, BudgetStore } from '../store/budget-store.ts';
import type { Principal } from '../tool.ts';
import type { AuditLog } from './audit.ts';

export interface Budgets {
  /**
   * Admit one effect or throw a FraudgateError (RATE_LIMITED, retryable, `data.budget_paused`) that
   * says a human must lift the pause. Keys without a configured limit are always admitted.
   */
  admit(principal: Principal, keys: readonly string[], target: string): Promise<void>;
  /**
   * One effect that counts against several budgets (each a list of keys, most specific first, as
   * `admit` takes): admitted in all of them or in none, so a refusal by one never leaves the effect
   * counted in another (it would be counted again when the action runs after the lift).
   */
  admitAll(principal: Principal, lists: readonly (readonly string[])[], target: string): Promise<void>;
  /**
   * The active pause on the first configured key of `keys` for this principal, if any; looked up in
   * `pauses` when given (one read of the store for a whole sweep), else read from the store.
   */
  pausedFor(
    principalId: string,
    keys: readonly string[],
    pauses?: readonly BudgetPause[],
  ): Promise<BudgetPause | undefined>;
  /** Active pauses, as last read (for the metric, which must not wait on the store). */
  activeCount(): number;
  activePauses(): Promise<BudgetPause[]>;
  /** Lift a pause, audited under `by`; refused (FORBIDDEN) when `by` is the paused principal. */
  lift(principal: string, budgetKey: string, by: Principal): Promise<BudgetPause | undefined>;
  close(): Promise<void>;
}

/** A budget pause, as the caller sees it: no command, only that a human decides. */
export class BudgetPausedError extends FraudgateError {
  constructor(pause: BudgetPause) {
    super(
      ERROR_CODES.RATE_LIMITED,
      `The blast-radius budget for ${pause.budget_key} by ${pause.principal} is spent (${pause.reason}), so ` +
        'nothing was done. Further effects wait until a human approver lifts the pause; approved actions run after it.',
      { retryable: true, data: { budget_paused: pause.budget_key } },
    );
    this.name = 'BudgetPausedError';
  }
}

export function createBudgets(deps: {
  store: BudgetStore;
  config: Pick<Config, 'budgets'>;
  audit: AuditLog;
  logger: Logger;
  now?: () => Date;
}): Budgets {
  const { store, audit, logger } = deps;
  const now = deps.now ?? (() => new Date());
  let active = 0;
  const refresh = async () => {
    active = (await store.activePauses()).length;
  };
  void refresh().catch(() => undefined);

  async function admitAll(principal: Principal, lists: readonly (readonly string[])[], target: string) {
    // In each list the most specific configured key decides (`apply_decision:block` before `apply_decision`).
    const keys = new Set<string>();
    for (const list of lists) {
      const key = list.find((k) => deps.config.budgets.limits[k] !== undefined);
      if (key) keys.add(key);
    }
    if (keys.size === 0) return;
    const at = now();
    const result = await store.admit({
      principal: principal.id,
      budgets: [...keys].map((key) => ({ budget_key: key, limit: deps.config.budgets.limits[key]! })),
      target,
      window_start: new Date(at.getTime() - deps.config.budgets.window_ms),
      at,
    });
    if (result.admitted) return;
    const key = result.pause.budget_key;
    if (result.newly_paused) {
      active += 1;
      logger.warn('blast-radius budget spent: paused until a human lifts it', {
        principal: principal.id,
        budget_key: key,
        reason: result.pause.reason,
      });
      // No record, still no effect: the pause stands either way.
      await audit
        .append({
          event: 'budget_paused',
          call_id: randomUUID(),
          principal: { id: principal.id, kind: principal.kind, role: principal.role },
          target: `budget:${key}`,
          outcome: { code: ERROR_CODES.RATE_LIMITED, message: result.pause.reason },
        })
        .catch((error: unknown) =>
          logger.error('audit write failed', { event: 'budget_paused', error: String(error) }),
        );
    }
    throw new BudgetPausedError(result.pause);
  }

  return {
    admit: (principal, keys, target) => admitAll(principal, [keys], target),
    admitAll,
    async pausedFor(principalId, keys, pauses) {
      const key = keys.find((k) => deps.config.budgets.limits[k] !== undefined);
      if (!key) return undefined;
      return (pauses ?? (await store.activePauses())).find(
        (p) => p.principal === principalId && p.budget_key === key,
      );
    },
    activeCount: () => active,
    close: () => store.close(),
    async activePauses() {
      const pauses = await store.activePauses();
      active = pauses.length;
      return pauses;
    },
    async lift(principal, budgetKey, by) {
      // Four eyes: whoever spent the budget must not be the one to let themselves go on.
      if (sameIdentity(by.id, principal)) {
        throw new ForbiddenError(
          `${by.id} cannot lift their own pause of ${budgetKey}: another approver must lift it.`,
        );
      }
      const pause = (await store.activePauses()).find(
        (p) => p.principal === principal && p.budget_key === budgetKey,
      );
      if (!pause) return undefined;
      // Recorded first, under the authenticated human: no record, no lift.
      await audit.append({
        event: 'budget_lifted',
        call_id: randomUUID(),
        principal: { id: by.id, kind: by.kind, role: by.role },
        target: `budget:${budgetKey}`,
        args_redacted: { principal, budget_key: budgetKey, paused_at: pause.paused_at },
      });
      const lifted = await store.lift(principal, budgetKey, by.id, now());
      await refresh();
      return lifted;
    },
  };
}
