/**
 * Refused calls (invalid, forbidden, rate limited) are audited, but a caller must not be able to
 * turn refusals into a disk-filler: each principal has a refusal budget of its own (a token bucket,
 * `rate_limits.refusals`, in the same store as the call limits so replicas share it; while that store
 * fails, in this process, so the budget never fails open, and that store is asked again only
 * {@link SHARED_STORE_RETRY_MS} after it last failed). Within the budget every refusal gets its own
 * record (with an argument summary, never the arguments); past it, refusals are only counted and
 * written as one `refusals_counted` record per principal per minute (and when the process stops), so
 * nothing goes unrecorded and the audit grows by at most one small record a minute however fast the
 * refusals come.
 *
 * A budget can also be kept for something other than a principal (a `RefusalScope`): the webhook
 * endpoints, whose senders are unauthenticated until their signature checks, keep one per client
 * network, so one sender flooding them cannot use up another's records, and a `ceiling` shared by
 * all of them, so no number of senders can grow the ledger at will (src/webhooks/webhook-refusals.ts).
 */
import type { BucketConfig } from '../config.ts';
import { silentLogger, type Logger } from '../logger.ts';
import type { AuditAppendInput, AuditLog, AuditPrincipal } from './audit.ts';
import { createRateLimiter, type RateLimiter } from './rate-limit.ts';

/** How long the budgets stay in this process after the shared store failed a take, before asking it again. */
export const SHARED_STORE_RETRY_MS = 5_000;

/** How often, at most, a principal over its budget gets a `refusals_counted` record. */
export const REFUSAL_COUNT_INTERVAL_MS = 60_000;

/** A budget kept for something other than the principal itself, e.g. one client address at one endpoint. */
export interface RefusalScope {
  /** The budget's key, unique to what it is kept for (kept apart from principal ids). */
  key: string;
  /** Written on its `refusals_counted` record, saying whose refusals were counted. */
  target: string;
  tool?: string;
  /**
   * A budget shared by every scope naming the same key (all the addresses at one endpoint), so no
   * number of scopes writes more than it allows: a refusal's own record needs a token from it as
   * well as from the scope's budget, and so does a scope's first `refusals_counted` count of a
   * minute (a record too). Without one, the refusal is counted into the ceiling's own summary.
   */
  ceiling?: { key: string; target: string; bucket: BucketConfig };
}

export type RefusalOutcome = { recorded: true } | { recorded: false; retryAfterMs: number };

export interface RefusalBudget {
  /**
   * Records the refusal (`build()` makes the record, only when it will be written) if the
   * principal's budget (or the scope's, when given) allows, else counts it. A scope this process
   * knows spent ({@link spent}) is counted without asking the store, and its window is not moved.
   * Rejects only when a record could not be written.
   */
  record(
    principal: AuditPrincipal,
    event: AuditAppendInput['event'],
    build: () => AuditAppendInput,
    scope?: RefusalScope,
  ): Promise<RefusalOutcome>;
  /**
   * Milliseconds until the scope keyed `key` has a token again, when this process has counted a
   * refusal of it since its budget last allowed one (a spent budget only refills); undefined when
   * not known to be spent. Asks no store: an endpoint calls it before costly checks.
   */
  spent(key: string): number | undefined;
  /** Writes the pending counts (on shutdown). */
  flush(): Promise<void>;
}

interface Tally {
  principal: AuditPrincipal;
  scope: RefusalScope | undefined;
  since: string;
  sinceMs: number;
  count: number;
  events: Record<string, number>;
  /** A scope's: when its budget has a token again, as its last refused take said. */
  spentUntilMs?: number;
}

export function createRefusalBudget(deps: {
  audit: AuditLog;
  rateLimiter: RateLimiter;
  bucket: BucketConfig;
  now?: () => Date;
  /** Told once when the budgets fall back to this process, and once when the store answers again. */
  logger?: Logger;
}): RefusalBudget {
  const now = deps.now ?? (() => new Date());
  const logger = deps.logger ?? silentLogger;
  const tallies = new Map<string, Tally>();

  const writeTally = async (tally: Tally) => {
    await deps.audit.append({
      event: 'refusals_counted',
      call_id: `refusals:${tally.since}`,
      principal: tally.principal,
      detail: `${tally.count} refused ${tally.scope ? 'requests' : 'calls'} over the refusal budget since ${tally.since}`,
      refusals: { count: tally.count, since: tally.since, by_event: tally.events },
      ...(tally.scope ? { target: tally.scope.target } : {}),
      ...(tally.scope?.tool ? { tool: tally.scope.tool } : {}),
    });
  };

  const takeTally = (key: string): Tally | undefined => {
    const tally = tallies.get(key);
    tallies.delete(key);
    return tally;
  };

  // While the shared store (Redis) fails, buckets of the same size in this process: each replica then
  // allows a budget of its own rather than a share of the fleet's, but stays bounded, where failing
  // open let an unauthenticated flood write a record per request.
  const local = createRateLimiter(() => now().getTime(), { maxKeys: MAX_TALLIES });
  // The operator hears of the switch both ways, once each, not once per refusal: a flood is when
  // refusals come fastest.
  let fallenBack = false;
  // After a failed take the local buckets answer alone for a while: a hung Redis fails a take only
  // after its command timeout, and a call refused because its own take timed out would otherwise
  // wait that long a second time for its refusal's record, on every call. The first refusal after
  // the pause asks Redis again.
  let localUntil = 0;
  const take = async (key: string, bucket: BucketConfig) => {
    const id = `refusals\u0000${key}`;
    if (now().getTime() < localUntil) return local.take(id, bucket);
    try {
      const decision = await deps.rateLimiter.take(id, bucket);
      if (fallenBack) {
        fallenBack = false;
        logger.info('refusal budgets are shared again: the rate-limit store answers');
      }
      return decision;
    } catch (error) {
      localUntil = now().getTime() + SHARED_STORE_RETRY_MS;
      if (!fallenBack) {
        fallenBack = true;
        logger.warn(
          'rate-limit store unavailable; refusal budgets are kept in this process (one budget per replica) until it answers',
          { error: String(error) },
        );
      }
      return local.take(id, bucket);
    }
  };

  const count = async (
    id: string,
    principal: AuditPrincipal,
    scope: RefusalScope | undefined,
    event: string,
  ): Promise<void> => {
    const at = now();
    let tally = tallies.get(id);
    if (!tally) {
      // Bounded like everything else: a flood of distinct principals cannot grow this map forever.
      if (tallies.size >= MAX_TALLIES) {
        const oldest = tallies.keys().next().value;
        if (oldest !== undefined) await writeTally(takeTally(oldest)!);
      }
      tally = { principal, scope, since: at.toISOString(), sinceMs: at.getTime(), count: 0, events: {} };
      tallies.set(id, tally);
    }
    tally.count += 1;
    tally.events[event] = (tally.events[event] ?? 0) + 1;
    if (at.getTime() - tally.sinceMs >= REFUSAL_COUNT_INTERVAL_MS) await writeTally(takeTally(id)!);
  };

  const spentFor = (key: string): number | undefined => {
    const until = tallies.get(`scope\u0000${key}`)?.spentUntilMs;
    const left = until === undefined ? 0 : until - now().getTime();
    return left > 0 ? left : undefined;
  };

  return {
    async record(principal, event, build, scope) {
      const id = scope ? `scope\u0000${scope.key}` : principal.id;
      // A scope known spent is counted without asking the store: a spent bucket only refills (others'
      // takes only delay that), so the answer is known, and its window stays where the store put it —
      // however many refusals follow, they neither cost a round trip nor move it.
      const left = scope ? spentFor(scope.key) : undefined;
      if (left !== undefined) {
        await count(id, principal, scope, event);
        return { recorded: false, retryAfterMs: left };
      }
      const decision = await take(id, deps.bucket);
      const ceiling = scope?.ceiling;
      if (ceiling && (decision.allowed || !tallies.has(id))) {
        const shared = await take(`ceiling\u0000${ceiling.key}`, ceiling.bucket);
        if (!shared.allowed) {
          const over = {
            key: ceiling.key,
            target: ceiling.target,
            ...(scope.tool ? { tool: scope.tool } : {}),
          };
          await count(`ceiling\u0000${ceiling.key}`, principal, over, event);
          return { recorded: false, retryAfterMs: Math.max(decision.retryAfterMs, shared.retryAfterMs) };
        }
      }
      if (decision.allowed) {
        const pending = takeTally(id);
        if (pending) await writeTally(pending);
        await deps.audit.append(build());
        return { recorded: true };
      }
      await count(id, principal, scope, event);
      const tally = tallies.get(id);
      if (scope && tally) tally.spentUntilMs = now().getTime() + decision.retryAfterMs;
      return { recorded: false, retryAfterMs: decision.retryAfterMs };
    },
    spent: spentFor,
    async flush() {
      for (const id of [...tallies.keys()]) await writeTally(takeTally(id)!);
    },
  };
}

const MAX_TALLIES = 10_000;
