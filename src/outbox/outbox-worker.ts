/**
 * The outbox worker: routes stored Sift decision webhooks to effects and runs each effect as a
 * governed tool call under the automation principal.
 *
 * Routing (configured `automation.rules`, values from the central `mapping` inside the tools):
 * a decision's category (from the Sift decisions catalogue) selects effects — `segment`
 * (sync_decision_to_segment), `salesforce` (sync_decision_to_salesforce: decision field + Chatter),
 * `case` (create_fraud_case, only when the user's highest Sift score ≥ `case_score_threshold`),
 * `suppress` (suppress_user, only for `suppress_categories`). An effect whose tool is not registered
 * is not routed (logged once), so a deployment without it keeps working.
 *
 * Governance and batching: every effect is its own `pipeline.call` (role, policy, approvals,
 * fraudgate's rate limit, intent and outcome audit). A policy that asks for approval parks the
 * effect as `awaiting_approval` until a human decides; the approval sweep executes it. The worker
 * runs a whole claimed batch concurrently, and the clients of its runtime coalesce the upstream
 * writes: Salesforce updates/creates into sObject Collections (batching-salesforce.ts), Segment
 * messages into the library's batches (`segment_batch_size`, ≤500 KB).
 *
 * Ordering: at most one in-flight effect per (user, effect); a pending effect whose user has a later
 * decision is skipped as superseded, so an earlier decision never overwrites a later one.
 *
 * Failures: exponential backoff with full jitter, never sooner than the upstream's Retry-After;
 * Salesforce REQUEST_LIMIT_EXCEEDED pauses every Salesforce effect; `Sforce-Limit-Info` usage above
 * `salesforce_slowdown_at` scales Salesforce effects down linearly to zero at 1 − `salesforce_reserve`
 * (the reserve is left for humans). After `max_attempts` failures, or at once for a permanent
 * error, an effect becomes a dead letter (audited; `fraudgate outbox retry|drop`).
 *
 * Continuations: a tool that does bounded work per call (flag_opportunities: 1000 opportunities)
 * and says `remaining` > 0 puts its effect back due now, not as an attempt, and the next claim does
 * the next share, until none remain; when policy asks a human, each share is approved on its own
 * (an approval covers the call it showed). It stays one effect (one outbox row, one result). Only tools
 * that are idempotent and not destructive continue: the blast-radius budgets count every call of a
 * destructive tool as an effect, so a share of one would spend the budget of a whole effect.
 * A continuation must end: `remaining` has to shrink strictly from share to share, and the shares
 * are capped at ceil(total / first share) + 2 calls; past either — an org whose trigger rewrites the
 * written fields, so the same records never read back as done — the effect becomes a dead letter
 * with reason {@link CONTINUATION_STALLED} (audited). The progress between shares is kept in the
 * effect's result column, which holds nothing else until the effect completes, and is read back as
 * the effect's `progress` (its `result` only once done), so `outbox show` and `list --json` never
 * present the counts as the effect's result.
 *
 * Effects whose tool is not idempotent (`send_sift_event`: Sift events have no idempotency key) run
 * at most once by themselves: their call is marked attempted in the store before it starts, a
 * failure is retried only when it proves nothing reached the upstream (never connected, rate
 * limited, refused by fraudgate before the call), it is an ordinary dead letter only when it proves
 * nothing changed there (also: the upstream answered that it refused the request, a 4xx), and any
 * other failure — a lost answer, a timeout, a reset, a 5xx, an answer that then fails a check of
 * ours, final or not — or a lease that finds the mark of an attempt that never finished (a crash, a
 * lost lease, a completion that could not be stored) makes it a dead letter whose outcome is
 * unknown (`OUTCOME_UNKNOWN`), for an operator to check upstream and replay or drop.
 */
import { randomUUID } from 'node:crypto';
import type { DecisionCategory, SiftClient } from '../clients/types.ts';
import type { Config } from '../config.ts';
import { ERROR_CODES, NotFoundError, type FraudgateError } from '../errors.ts';
import type { AuditAppendInput } from '../governance/audit.ts';
import type { CallChannel } from '../governance/pipeline.ts';
import type { Logger } from '../logger.ts';
import type { Runtime } from '../runtime.ts';
import type { Principal } from '../tool.ts';
import {
  CONTINUATION_STALLED,
  SEALED_DATA_UNREADABLE,
  OUTCOME_UNKNOWN,
  type NewEffect,
  type OutboxEffect,
  type OutboxStore,
  type ParkedEffect,
  type StoredEvent,
} from '../store/outbox-store.ts';
import type { SqlExecutor } from '../store/sql.ts';
import { SCORE_ENTITY, SCORE_READ_EVENT } from './propagate.ts';
import { NEVER_SENT, UNREACHABLE } from '../network-errors.ts';

export type EffectName = keyof Config['automation']['effect_tools'];

/** What a continuing effect keeps between its shares: its `progress` (the result column until it completes). */
interface ContinuationProgress {
  continuation: { shares: number; remaining: number; max_shares: number };
}

function continuationOf(stored: unknown): ContinuationProgress['continuation'] | undefined {
  const c = (stored as Partial<ContinuationProgress> | undefined)?.continuation;
  return c &&
    typeof c.shares === 'number' &&
    typeof c.remaining === 'number' &&
    typeof c.max_shares === 'number'
    ? c
    : undefined;
}

/**
 * Refusals by fraudgate before a tool runs (its arguments, the principal's role, a denied or already
 * used approval): nothing reached the upstream. INVALID_INPUT is also an upstream's answer that it
 * refused the request (Sift: an unknown decision id), which changed nothing there either.
 */
const REFUSED_BEFORE_THE_CALL: ReadonlySet<string> = new Set([
  ERROR_CODES.INVALID_INPUT,
  ERROR_CODES.FORBIDDEN,
  ERROR_CODES.APPROVAL_DENIED,
  ERROR_CODES.CONFLICT,
]);

/** Effects whose writes go to Salesforce (the daily allowance applies to them). */
const SALESFORCE_EFFECTS: ReadonlySet<string> = new Set(['salesforce', 'case', 'opportunities']);

/** Effects settled per page, and pages per settling pass (the next pass continues where it stopped). */
const SETTLE_PAGE = 100;
const SETTLE_PAGES_PER_PASS = 5;

/** The tool behind each score-trigger effect. */
const SCORE_EFFECT_TOOLS = {
  segment_score: 'sync_score_to_segment',
  track: 'track_fraud_event',
  opportunities: 'flag_opportunities',
  case: 'create_fraud_case',
} as const;

export interface OutboxWorkerOptions {
  /** The automation runtime (see `automationConfig`): its pipeline, approvals, audit and batching clients. */
  runtime: Pick<
    Runtime,
    'config' | 'tools' | 'pipeline' | 'approvals' | 'approvalSignal' | 'audit' | 'clients' | 'logger'
  >;
  store: OutboxStore;
  /**
   * The store's transactions, on the ledger's database: a dead letter commits with its audit record.
   * Absent: the record follows the transition.
   */
  transaction?: <T>(fn: (tx: { outbox: OutboxStore; sql: SqlExecutor }) => Promise<T>) => Promise<T>;
  /** Names of the tools the pipeline has; effects whose tool is missing are not routed. */
  toolNames: ReadonlySet<string>;
  /**
   * Lease owner id: the replica id, so a restarted replica takes its own leased effects back at once
   * (`reclaim` on start); default random per process.
   */
  owner?: string;
  now?: () => number;
  random?: () => number;
}

export interface TickResult {
  routed: number;
  claimed: number;
  done: number;
  retried: number;
  dead: number;
  deferred: number;
  /** Effects that did part of their work and were put back, due now, to do the rest (not an attempt). */
  continued: number;
}

function emptyTickResult(): TickResult {
  return { routed: 0, claimed: 0, done: 0, retried: 0, dead: 0, deferred: 0, continued: 0 };
}

export interface OutboxWorker {
  /** One pass: route, supersede, settle approvals, claim and run a batch. */
  tick(): Promise<TickResult>;
  /** Tick until nothing is runnable now and nothing is pending (approvals aside) or `timeoutMs` passes. */
  drain(options?: { timeoutMs?: number }): Promise<boolean>;
  /** Run in the background every `poll_ms` (and at once after `wake()`). */
  start(): void;
  wake(): void;
  stop(): Promise<void>;
  /** Running effects that may still write to Salesforce (the batching client waits for them). */
  salesforceWriters(): number;
}

/**
 * The configuration an automation runtime runs with: approvals never block a worker slot (an
 * effect that needs one is parked), and the automation principal has its own bucket per effect tool.
 */
export function automationConfig(config: Config): Config {
  // send_sift_event: the effect of every Segment message (POST /webhooks/segment); the rest: the score trigger.
  const tools = [
    ...Object.values(config.automation.effect_tools),
    'send_sift_event',
    ...Object.values(SCORE_EFFECT_TOOLS),
  ];
  return {
    ...config,
    approvals: { ...config.approvals, wait_ms: 0 },
    rate_limits: {
      ...config.rate_limits,
      tools: {
        ...config.rate_limits.tools,
        ...Object.fromEntries(tools.map((t) => [t, config.automation.rate_limit])),
      },
    },
  };
}

function highestScore(scores: Record<string, { score: number } | undefined>): number {
  return Math.max(0, ...Object.values(scores).map((s) => s?.score ?? 0));
}

export function createOutboxWorker(options: OutboxWorkerOptions): OutboxWorker {
  const { runtime, store } = options;
  const { config, pipeline, approvals, audit } = runtime;
  const auto = config.automation;
  const logger: Logger = runtime.logger.child({ component: 'outbox' });
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const owner = options.owner ?? `worker:${randomUUID()}`;
  const principal: Principal = { id: auto.principal, kind: 'automation', role: auto.role };
  const sift: SiftClient = runtime.clients.sift;
  let salesforcePausedUntil = 0;
  const warnedMissing = new Set<string>();
  /** Tools a repeated call of which has no further effect; an unknown tool counts as not. */
  const idempotentTools: ReadonlySet<string> = new Set(
    runtime.tools.filter((t) => t.idempotent).map((t) => t.name),
  );
  /** Tools whose effect may run again to finish what one call left (see Continuations above). */
  const continuable: ReadonlySet<string> = new Set(
    runtime.tools.filter((t) => t.idempotent && t.risk !== 'destructive').map((t) => t.name),
  );

  let catalogue:
    { at: number; byId: Map<string, { category: DecisionCategory; abuseType: string }> } | undefined;
  async function decisionOf(decisionId: string): Promise<{ category: DecisionCategory; abuseType?: string }> {
    if (!catalogue || now() - catalogue.at > 60_000 || !catalogue.byId.has(decisionId)) {
      const list = await sift.listDecisions({ entityType: 'user' });
      catalogue = {
        at: now(),
        byId: new Map(list.map((d) => [d.id, { category: d.category, abuseType: d.abuseType }])),
      };
    }
    // A decision missing from the catalogue was deleted in the console: watch, the safe middle (as the
    // tools do), with no abuse type (it supersedes nothing beyond the effects it routes).
    return catalogue.byId.get(decisionId) ?? { category: 'watch' };
  }

  const auditQuietly = async (input: Omit<AuditAppendInput, 'principal' | 'call_id'>) => {
    try {
      await audit.append({ ...input, call_id: randomUUID(), principal: { ...principal } });
    } catch (error) {
      logger.error('audit write failed', { event: input.event, error: String(error) });
    }
  };

  /** The user's riskiest current score, or undefined for a user Sift has never scored. */
  async function currentHighest(user: string) {
    const score = await sift.getUserScore(user).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    return Object.entries(score?.scores ?? {}).reduce<
      { score: number; sift_score: number; abuse_type: string } | undefined
    >((best, [type, s]) => {
      if (!s || (best && best.score >= s.score)) return best;
      return { score: s.score, sift_score: Math.round(s.score * 100), abuse_type: type };
    }, undefined);
  }

  /** The event's effects, and the abuse type of its decision (a later decision on it supersedes them all). */
  async function effectsFor(event: StoredEvent): Promise<{ effects: NewEffect[]; abuseType?: string }> {
    if (event.entityType === SCORE_ENTITY) {
      // A score fraudgate read (propagate.ts): the trigger's effects, with the score as it is now.
      const highest = await currentHighest(event.entityId);
      return { effects: highest ? scoreEffects(event.entityId, SCORE_READ_EVENT, highest) : [] };
    }
    // Only user decisions have a user to act on; the contract does not say order/session webhooks carry one.
    if (event.entityType !== 'user') return { effects: [] };
    const { category, abuseType } = await decisionOf(event.decisionId);
    const user = event.entityId;
    const when = new Date(event.time).toISOString();
    const out: NewEffect[] = [];
    for (const effect of auto.rules[category]) {
      const tool = auto.effect_tools[effect];
      if (!options.toolNames.has(tool)) {
        if (!warnedMissing.has(tool)) logger.warn('effect not routed: tool not registered', { effect, tool });
        warnedMissing.add(tool);
        continue;
      }
      if (effect === 'segment' || effect === 'salesforce')
        out.push({ effect, tool, args: { user_id: user } });
      if (effect === 'suppress' && auto.suppress_categories.includes(category)) {
        out.push({
          effect,
          tool,
          args: {
            user_id: user,
            suppressed: true,
            reason: `Sift decision ${event.decisionId} (${category}) at ${when}`,
          },
        });
      }
      if (effect === 'case') {
        const score = await sift.getUserScore(user).catch((error: unknown) => {
          // A user Sift has never scored has no score to exceed the threshold.
          if (error instanceof NotFoundError) return undefined;
          throw error;
        });
        if (score && highestScore(score.scores) >= auto.case_score_threshold) {
          out.push({
            effect,
            tool,
            args: {
              user_id: user,
              summary: `Sift decision ${event.decisionId} (${category}) at ${when}, routed by fraudgate automation.`,
            },
          });
        }
      }
    }
    if (auto.score_trigger.high_risk_decisions.includes(event.decisionId)) {
      // A high-risk event (e.g. an ATO watch on $login): the score trigger too, with the current score.
      const highest = await currentHighest(user);
      if (highest) {
        const taken = new Set(out.map((e) => e.effect));
        // One effect name per event: a decision rule's own case wins over the trigger's.
        out.push(...scoreEffects(user, event.decisionId, highest).filter((e) => !taken.has(e.effect)));
      }
    }
    return { effects: out, ...(abuseType === undefined ? {} : { abuseType }) };
  }

  async function routeNew(): Promise<number> {
    let routed = 0;
    const events = await store.unrouted(auto.batch_size);
    let next = 0;
    // Routing reads (catalogue, score) run concurrently; the inserts are each one small transaction.
    const lane = async () => {
      for (let i = next++; i < events.length; i = next++) {
        const event = events[i] as StoredEvent;
        try {
          const { effects, abuseType } = await effectsFor(event);
          await store.route(event.id, effects, undefined, abuseType);
          routed += 1;
        } catch (error) {
          // Left unrouted: the next tick tries again (the catalogue or score read failed upstream).
          logger.warn('routing failed; will retry', { event_id: event.id, error: String(error) });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, events.length) }, lane));
    return routed;
  }

  let approvalsSweptAt = 0;
  let settledAt = Number.NEGATIVE_INFINITY;
  // An approval moved (in this process, or on any replica once listening): settle at the next tick.
  let approvalMoved = true;
  const listenForApprovals = () =>
    runtime.approvalSignal.subscribe(() => {
      approvalMoved = true;
    });
  let unsubscribe: (() => void) | undefined = listenForApprovals();
  /** Where the last settling pass stopped: the next continues after it, so none starves. */
  let settleCursor: ParkedEffect | undefined;

  /**
   * Settle effects whose approval closed. Effects can wait hours for a human, so this runs when an
   * approval moved or at most once a second, not every tick; one joined query per page finds the
   * closed ones, oldest first, and only those are read and written.
   */
  async function settleApprovals(): Promise<void> {
    const sweepEvery = Math.max(1000, auto.poll_ms * 4);
    if (!approvalMoved && now() - settledAt < sweepEvery) return;
    approvalMoved = false;
    settledAt = now();
    // A worker running without `serve` must still execute what humans approved (exactly once: the
    // pipeline's compare-and-set on the approval decides who runs it); at most once a second.
    if (now() - approvalsSweptAt >= sweepEvery) {
      approvalsSweptAt = now();
      const parked = await store.list({ states: ['awaiting_approval'], limit: 1 });
      if (parked.length > 0) await pipeline.processApprovals();
    }
    for (let page = 0; page < SETTLE_PAGES_PER_PASS; page++) {
      const batch = await store.parkedOnClosedApprovals(SETTLE_PAGE, settleCursor);
      for (const effect of batch) {
        settleCursor = effect;
        await settleOne(effect);
      }
      if (batch.length < SETTLE_PAGE) {
        settleCursor = undefined;
        return;
      }
    }
  }

  async function settleOne(effect: ParkedEffect): Promise<void> {
    // Only its state, result and error are used: a closed approval whose arguments do not open settles too.
    const approval = await approvals.get(effect.approvalId, { evenUnreadable: true });
    if (!approval) return;
    // Undone since: it ran all the same, and the undo is its own action.
    if (approval.state === 'executed' || approval.state === 'undone') {
      const output = (approval.result ?? {}) as Record<string, unknown>;
      if (continuable.has(effect.tool) && leftForNextCall(output)) {
        const next = nextShare((await store.get(effect.id))?.progress, output);
        // The approved call did one share: the next asks for its own approval, with its own plan.
        if ('progress' in next) await store.continueAfterApproval(effect.id, next.progress);
        else {
          const stalled = { code: CONTINUATION_STALLED, message: next.stalled };
          await settleDead(effect, approval.id, stalled, stalled);
        }
      } else await store.settleApproval(effect.id, 'done', approval.result);
    } else if (approval.state === 'denied' || approval.state === 'expired')
      await store.settleApproval(effect.id, 'denied', { approval: approval.state });
    // A later decision's effect asked again and replaced this one's approval: nothing to run here.
    else if (approval.state === 'superseded')
      await store.settleApproval(effect.id, 'skipped', { approval: 'superseded', reason: approval.reason });
    else if (approval.state === 'failed')
      await settleDead(
        effect,
        approval.id,
        { code: approval.error?.code ?? ERROR_CODES.UPSTREAM_ERROR, message: 'approved action failed' },
        approval.error ?? { approval: 'failed' },
      );
  }

  /** A parked effect made a dead letter, with its audit record (together, given transactions). */
  async function settleDead(
    effect: ParkedEffect,
    approvalId: string,
    outcome: { code: string; message: string },
    detail: unknown,
  ): Promise<void> {
    const record = {
      event: 'dead_lettered',
      tool: effect.tool,
      target: `outbox_effect:${effect.id}`,
      approval_id: approvalId,
      outcome,
    } as const;
    const settle = (outbox: OutboxStore) => outbox.settleApproval(effect.id, 'dead', detail);
    if (!options.transaction) {
      if (await settle(store)) await auditQuietly(record);
      return;
    }
    // Unrecorded, it stays parked, and the next pass settles it again.
    await options
      .transaction(async (tx) => {
        if (await settle(tx.outbox))
          await audit.appendIn(tx.sql, { ...record, call_id: randomUUID(), principal: { ...principal } });
      })
      .catch((error: unknown) =>
        logger.error('audit write failed', { event: 'dead_lettered', error: String(error) }),
      );
  }

  /**
   * Whether trying the effect again may help. The decision and score effect tools are idempotent by
   * construction (stable Segment messageIds, external-id upserts, Chatter markers, case keys), so an
   * upstream failure without a definite answer — network error, timeout, 429, 5xx — is retried even
   * where the client itself would not repeat the request. A 4xx or a policy refusal is final. A
   * tool that is not idempotent must also pass {@link provablyUnapplied}.
   */
  function retryable(error: FraudgateError): boolean {
    if (error.retryable) return true;
    if (error.code !== ERROR_CODES.UPSTREAM_ERROR && error.code !== ERROR_CODES.UPSTREAM_RATE_LIMITED)
      return false;
    const status = (error.data as { status?: unknown } | undefined)?.status;
    return typeof status !== 'number' || status === 429 || status >= 500;
  }

  /** Whether a network code in the error's cause chain is one of `codes`. */
  function causedBy(error: FraudgateError, codes: ReadonlySet<string>): boolean {
    for (let e: unknown = error.cause, depth = 0; e && depth < 5; depth++) {
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'string' && codes.has(code)) return true;
      e = (e as { cause?: unknown }).cause;
    }
    return false;
  }

  /**
   * Whether the failed call provably changed nothing upstream, so a tool that is not idempotent may
   * run again: the connection never opened (NEVER_SENT), the upstream throttled it (HTTP 429, Sift
   * status 60: rejected before processing, shared/contracts/sift.md §8.3), or fraudgate refused it
   * before the tool ran (no upstream named: its store, rate-limit store or audit ledger, all
   * consulted before the call; the outcome record never fails a call). Not a 503: the Sift contract
   * does not say a 503 was not processed.
   */
  function provablyUnsent(error: FraudgateError): boolean {
    if (error.code === ERROR_CODES.UPSTREAM_RATE_LIMITED) return true;
    if (error.code !== ERROR_CODES.UPSTREAM_ERROR) return false;
    const data = (error.data ?? {}) as { service?: unknown; status?: unknown };
    if (data.service === undefined) return error.retryable;
    return data.status === 429 || (data.status === undefined && causedBy(error, NEVER_SENT));
  }

  /**
   * Whether the failed call provably left the upstream unchanged, so a tool that is not idempotent
   * may fail as usual (retried when {@link retryable}, else an ordinary dead letter): it was
   * {@link provablyUnsent}, fraudgate refused it before the tool ran (its arguments, the principal's
   * role, a denied approval, a used approval), or the upstream answered that it refused it (an HTTP
   * 4xx, a positive Sift status: 51 bad key, 55 missing field, …). Anything else — no answer, a 5xx,
   * a Sift status below 0, a 2xx whose body failed our checks, an error of ours after the call, a
   * multi-event send that stopped half-way — may have been applied.
   */
  function provablyUnapplied(error: FraudgateError): boolean {
    if (provablyUnsent(error)) return true;
    if (REFUSED_BEFORE_THE_CALL.has(error.code)) return true;
    if (error.code !== ERROR_CODES.UPSTREAM_ERROR) return false;
    const data = (error.data ?? {}) as { service?: unknown; status?: unknown; upstream_code?: unknown };
    if (data.service === undefined) return false;
    const status = typeof data.status === 'number' ? data.status : undefined;
    const siftStatus = typeof data.upstream_code === 'number' ? data.upstream_code : undefined;
    if (status !== undefined && status >= 400 && status < 500) return true;
    return siftStatus !== undefined && siftStatus > 0 && status !== undefined && status < 500;
  }

  /**
   * Whether a tool that does bounded work per call says more remains (`remaining` > 0) and this call
   * made headway (`flagged` > 0): a call whose every write failed would fail alike again, so that one
   * completes with its failures listed instead of running forever.
   */
  function leftForNextCall(output: Record<string, unknown>): boolean {
    const { remaining, flagged } = output;
    return typeof remaining === 'number' && remaining > 0 && typeof flagged === 'number' && flagged > 0;
  }

  /**
   * After a share that left work ({@link leftForNextCall}): the progress to keep for the next share,
   * or why there is none — the work did not shrink since the previous share (`previous`, the
   * effect's stored progress), or the shares reached their cap. Counts only: it is stored and audited.
   */
  function nextShare(
    previous: unknown,
    output: Record<string, unknown>,
  ): { progress: ContinuationProgress } | { stalled: string } {
    const remaining = output.remaining as number;
    const flagged = output.flagged as number;
    const before = continuationOf(previous);
    if (!before) {
      const maxShares = Math.ceil((flagged + remaining) / flagged) + 2;
      return { progress: { continuation: { shares: 1, remaining, max_shares: maxShares } } };
    }
    const shares = before.shares + 1;
    if (remaining >= before.remaining)
      return {
        stalled:
          `share ${shares} left ${remaining} still to do, ${before.remaining} before it: the work is not ` +
          'shrinking (something upstream may rewrite what each share writes); stopped so it does not ' +
          'repeat forever. Check the upstream, then replay it or drop it.',
      };
    if (shares >= before.max_shares)
      return {
        stalled:
          `${shares} shares, the most this effect may take (${before.max_shares}), and ${remaining} ` +
          'still to do; stopped so it does not repeat forever. Check the upstream, then replay it or drop it.',
      };
    return { progress: { continuation: { shares, remaining, max_shares: before.max_shares } } };
  }

  function backoff(attempts: number, retryAfterMs: number | undefined): number {
    const ceiling = Math.min(auto.backoff_max_ms, auto.backoff_base_ms * 2 ** Math.max(0, attempts - 1));
    // Full jitter spreads a burst of failures so the retries do not arrive together.
    return Math.max(retryAfterMs ?? 0, Math.floor(ceiling / 2 + (random() * ceiling) / 2));
  }

  /** How many Salesforce effects this tick may run under the allowance (Infinity = no limit). */
  function salesforceAllowance(): number {
    if (now() < salesforcePausedUntil) return 0;
    const usage = runtime.clients.salesforce.apiUsage();
    if (!usage || usage.limit <= 0) return Infinity;
    const used = usage.used / usage.limit;
    const stopAt = 1 - auto.salesforce_reserve;
    if (used >= stopAt) return 0;
    if (used < auto.salesforce_slowdown_at) return Infinity;
    const share = (stopAt - used) / Math.max(1e-9, stopAt - auto.salesforce_slowdown_at);
    return Math.max(1, Math.floor(auto.batch_size * share));
  }

  /**
   * A dependency that is down pauses the effects that need it — an upstream that cannot be reached
   * at all (connection refused, no route, DNS, connect timeout) pauses the effects of the tools that
   * call it; Redis (rate limits) or the audit ledger that cannot write pause every effect: they
   * would all fail the same way, so none spends an attempt or becomes a dead letter for it. Effects
   * of the other upstreams keep flowing: a Salesforce outage must not hold back Sift events.
   * After the pause one effect of that service probes; an answer from it resumes that service only,
   * another such failure doubles its pause (from `backoff_base_ms` up to min(`backoff_max_ms`, 30 s)),
   * and the service's other effects wait, unrun and unaudited, until the next probe may go: one
   * failed call per service per pause, however many effects wait. Which upstreams a tool calls is
   * learnt from its failures (Salesforce effects start out known). An upstream that answers 5xx,
   * resets or times out a read is up but failing: that counts as an attempt (one batched request
   * failing must not stall the queue). For a tool that is not idempotent only a connection that
   * never opened counts as down: the other unreachable codes can also break a request already sent,
   * whose outcome is then unknown.
   */
  interface Pause {
    until: number;
    ms: number;
    /** The effect probing the service now, if one is. */
    probe?: number;
  }
  /** Paused dependencies: an upstream's name, or {@link OWN_DEPENDENCY} (pauses every effect). */
  const pauses = new Map<string, Pause>();
  const OWN_DEPENDENCY = 'fraudgate';
  const servicesOfTool = new Map<string, Set<string>>();
  function servicesOf(effect: OutboxEffect): string[] {
    const learnt = [...(servicesOfTool.get(effect.tool) ?? [])];
    if (SALESFORCE_EFFECTS.has(effect.effect) && !learnt.includes('salesforce')) learnt.push('salesforce');
    return learnt;
  }
  function serviceOf(error: FraudgateError): string | undefined {
    const service = (error.data as { service?: unknown } | undefined)?.service;
    return typeof service === 'string' ? service : undefined;
  }
  function dependencyDown(error: FraudgateError, idempotent: boolean): boolean {
    if (error.code !== ERROR_CODES.UPSTREAM_ERROR) return false;
    // No upstream named: fraudgate's own dependency refused the call (the store, the audit ledger
    // that cannot write, the rate-limit store), retryable when it is an outage rather than a bug.
    if (serviceOf(error) === undefined) return error.retryable;
    return causedBy(error, idempotent ? UNREACHABLE : NEVER_SENT);
  }
  /** Pause what `error` says is down; the time the failed effect is due again. */
  function pauseDependency(effect: OutboxEffect, error: FraudgateError): number {
    const service = serviceOf(error);
    const key = service ?? OWN_DEPENDENCY;
    if (service) {
      const known = servicesOfTool.get(effect.tool) ?? new Set<string>();
      known.add(service);
      servicesOfTool.set(effect.tool, known);
    }
    const pause = pauses.get(key);
    // Effects already in flight when the pause began fail alike: they wait for the same probe.
    if (pause && pause.probe !== effect.id && (now() < pause.until || pause.probe !== undefined))
      return Math.max(pause.until, now() + pause.ms);
    const ms = Math.min(pause ? pause.ms * 2 : auto.backoff_base_ms, Math.min(auto.backoff_max_ms, 30_000));
    pauses.set(key, { until: now() + ms, ms });
    if (!pause) {
      logger.warn('outbox paused: a dependency is unavailable; its effects wait without spending attempts', {
        service: service ?? (error.data as { dependency?: unknown } | undefined)?.dependency ?? key,
        code: error.code,
      });
    }
    return now() + ms;
  }
  /** Effect `id` probes no service any more: the next pump may send another probe. */
  function clearProbe(id: number): void {
    for (const pause of pauses.values()) if (pause.probe === id) pause.probe = undefined;
  }
  function resume(key: string): void {
    if (!pauses.delete(key)) return;
    logger.info('outbox resumed: the dependency answers again', { service: key });
  }
  /**
   * Whether a claimed effect may run now: undefined when it may (as the probe of any of its paused
   * services whose pause is over), else when it is due again.
   */
  function heldUntil(effect: OutboxEffect): number | undefined {
    const relevant = [OWN_DEPENDENCY, ...servicesOf(effect)]
      .map((key) => pauses.get(key))
      .filter((p): p is Pause => p !== undefined);
    let held: number | undefined;
    for (const pause of relevant) {
      if (now() < pause.until) held = Math.max(held ?? 0, pause.until);
      else if (pause.probe !== undefined) held = Math.max(held ?? 0, now() + pause.ms);
    }
    if (held !== undefined) return held;
    for (const pause of relevant) pause.probe = effect.id;
    return undefined;
  }

  /** Key ids of effects left for another replica, logged once each. */
  const lackingKeysLogged = new Set<string>();
  /**
   * Effects sealed under a key this replica lacks, not claimed again here until the time given, so
   * a key holder gets them (each claim here would push them out again); bounded, oldest dropped.
   */
  const lackingKeyEffects = new Map<number, number>();
  const LACKING_KEY_SKIP_MAX = 1000;
  function lackingKeySkip(): number[] {
    for (const [id, until] of lackingKeyEffects) if (now() >= until) lackingKeyEffects.delete(id);
    return [...lackingKeyEffects.keys()];
  }

  /** Why an unreadable effect is a dead letter and what to do (names the field, never its content). */
  const unreadableMessage = (effect: OutboxEffect) =>
    `its stored ${effect.unreadable} failed its check under FRAUDGATE_DATA_KEY (edited, moved from another row, ` +
    `or plain text); it was not run. Restore the row from a backup and fraudgate outbox retry ${effect.id}, ` +
    `or fraudgate outbox drop ${effect.id}.`;

  /**
   * A non-idempotent effect whose call may have reached the upstream: a dead letter, never resent by
   * itself. `why` says what left the outcome unknown (kept free of arguments: it is stored and logged).
   */
  async function outcomeUnknown(effect: OutboxEffect, why: string): Promise<boolean> {
    return deadLetter(effect, {
      code: OUTCOME_UNKNOWN,
      message:
        `${effect.tool} may have reached the upstream (${why}); it is not idempotent, so it is not sent ` +
        `again by itself. Check the upstream, then replay it (fraudgate outbox retry ${effect.id}) or drop it.`,
    });
  }

  /**
   * The leased effect made a dead letter, with its audit record; false when it did not move (the
   * lease is someone else's now, or the record could not be written), so nothing counts it.
   */
  async function deadLetter(
    effect: OutboxEffect,
    error: FraudgateError | { code: string; message: string },
  ): Promise<boolean> {
    const reason = `${error.code}: ${error.message}`;
    const record = {
      event: 'dead_lettered',
      tool: effect.tool,
      target: `outbox_effect:${effect.id}`,
      args_redacted: effect.args,
      outcome: { code: error.code, message: error.message },
    } as const;
    if (options.transaction) {
      // The transition and its record together; unrecorded, the effect stays leased and its lease
      // runs out, so it is tried (and dead-lettered) again rather than dead without a trace.
      try {
        const moved = await options.transaction(async (tx) => {
          if (!(await tx.outbox.deadLetter(effect.id, owner, reason))) return false;
          await audit.appendIn(tx.sql, { ...record, call_id: randomUUID(), principal: { ...principal } });
          return true;
        });
        if (moved)
          logger.warn('effect dead-lettered', { effect_id: effect.id, tool: effect.tool, code: error.code });
        return moved;
      } catch (thrown) {
        logger.error('audit write failed', { event: 'dead_lettered', error: String(thrown) });
        return false;
      }
    }
    if (!(await store.deadLetter(effect.id, owner, reason))) return false;
    logger.warn('effect dead-lettered', { effect_id: effect.id, tool: effect.tool, code: error.code });
    await auditQuietly(record);
    return true;
  }

  /** Effects this worker is running, by id, with the switch that aborts one whose lease was lost. */
  const active = new Map<number, AbortController>();
  let heartbeat: NodeJS.Timeout | undefined;

  /**
   * Keep the leases of running effects alive: an effect slower than `lease_ms` (a batch window,
   * upstream retries) must not be claimed again and run twice at once, which would defeat the
   * tools' check-then-write idempotency (e.g. the Chatter marker). A lease that could not be
   * renewed belongs to someone else now: that run is aborted.
   */
  const renewLeases = async () => {
    const ids = [...active.keys()];
    if (ids.length === 0) return;
    const kept = new Set(await store.renew(ids, owner, now() + auto.lease_ms));
    for (const id of ids) {
      if (!kept.has(id)) {
        logger.warn('lease lost; aborting the effect', { effect_id: id });
        active.get(id)?.abort();
      }
    }
  };
  const ensureHeartbeat = () => {
    if (heartbeat) return;
    heartbeat = setInterval(
      () => {
        if (active.size === 0) {
          clearInterval(heartbeat);
          heartbeat = undefined;
          return;
        }
        renewLeases().catch((error: unknown) =>
          logger.error('lease renewal failed', { error: String(error) }),
        );
      },
      Math.max(20, Math.floor(auto.lease_ms / 3)),
    );
    heartbeat.unref();
  };

  let salesforceWriters = 0;

  async function runEffect(effect: OutboxEffect, result: TickResult): Promise<void> {
    const controller = new AbortController();
    const writes = SALESFORCE_EFFECTS.has(effect.effect);
    active.set(effect.id, controller);
    if (writes) salesforceWriters += 1;
    ensureHeartbeat();
    try {
      await runGoverned(effect, result, controller.signal);
    } finally {
      active.delete(effect.id);
      if (writes) salesforceWriters -= 1;
      // A probe that neither resumed nor re-paused its service (e.g. it crashed): the next pump probes again.
      clearProbe(effect.id);
    }
  }

  /** The score trigger's effects for a user's fresh score after an event of `eventType`. */
  function scoreEffects(
    user: string,
    eventType: string,
    highest: { score: number; sift_score: number; abuse_type: string },
  ): NewEffect[] {
    const trigger = auto.score_trigger;
    const rule = trigger.case_rules.find(
      (r) => (r.event === '*' || r.event === eventType) && highest.score >= r.min_score,
    );
    const effects: NewEffect[] = [];
    for (const name of trigger.effects) {
      const tool = SCORE_EFFECT_TOOLS[name];
      if (!options.toolNames.has(tool)) continue;
      if (name === 'segment_score') effects.push({ effect: name, tool, args: { user_id: user } });
      if (name === 'track')
        effects.push({ effect: name, tool, args: { user_id: user, event: 'score_evaluated' } });
      if (name === 'opportunities' && highest.score >= config.salesforce.opportunity_flag_threshold)
        effects.push({ effect: name, tool, args: { user_id: user } });
      if (name === 'case' && rule) {
        effects.push({
          effect: name,
          tool,
          args: {
            user_id: user,
            priority: rule.priority ?? trigger.severity_priority[rule.severity ?? 'high'],
            ...(rule.queue ? { queue: rule.queue } : {}),
            summary: `High-risk ${eventType} for ${user}: Sift score ${highest.sift_score}/100 (${highest.abuse_type}), opened by fraudgate's score trigger.`,
          },
        });
      }
    }
    return effects;
  }

  /**
   * The score-change trigger: a fresh score returned by an event this effect sent becomes one outbox
   * event (keyed by this effect, so a re-run stores it once) routed to `score_trigger.effects`.
   * Stored before the effect completes: a crash in between re-runs the effect, never loses the score.
   * Entity `score:<user>`: a newer score supersedes the pending effects of an older one.
   */
  async function routeScore(effect: OutboxEffect, output: Record<string, unknown>): Promise<void> {
    if (effect.tool !== 'send_sift_event') return;
    const sent = output as {
      user_id?: string;
      events_sent?: { sift_type?: string }[];
      score?: { highest?: { score: number; sift_score: number; abuse_type: string } | null } | null;
    };
    const highest = sent.score?.highest;
    if (!sent.user_id || !highest) return;
    const effects = scoreEffects(sent.user_id, sent.events_sent?.[0]?.sift_type ?? 'unknown', highest);
    if (effects.length === 0) return;
    await store.enqueueRouted(
      // createdAt, not now(): the same on a re-run (one dedupe key), and later for a later message.
      {
        entityType: SCORE_ENTITY,
        entityId: sent.user_id,
        decisionId: `after-effect:${effect.id}`,
        time: effect.createdAt,
      },
      effects,
    );
  }

  async function runGoverned(effect: OutboxEffect, result: TickResult, signal: AbortSignal): Promise<void> {
    const idempotent = idempotentTools.has(effect.tool);
    if (!idempotent) {
      if (effect.attemptedAt !== undefined) {
        const moved = await outcomeUnknown(
          effect,
          `an attempt begun at ${new Date(effect.attemptedAt).toISOString()} never finished: ` +
            'the worker stopped, lost its lease, or could not store the result',
        );
        if (moved) result.dead += 1;
        return;
      }
      // Committed before the call, so whoever takes this effect over knows the call may have run.
      if (!(await store.markAttempted(effect.id, owner, now()))) return;
    }
    // One idempotency key per effect: a re-run after a crash (its completion lost) is deduplicated upstream.
    const channel: CallChannel = {
      principal,
      progress: async () => {},
      signal,
      // A lost lease stops the effect even mid-write: its new owner re-runs it with the same key.
      stopSignal: signal,
      idempotencyKey: `outbox-effect:${effect.id}`,
    };
    const outcome = await pipeline.call(effect.tool, effect.args, channel);
    const down = !outcome.ok && dependencyDown(outcome.error, idempotent);
    if (!outcome.ok && down) {
      const until = pauseDependency(effect, outcome.error);
      await store.retry(effect.id, owner, until, `${outcome.error.code}: ${outcome.error.message}`, false);
      result.deferred += 1;
      return;
    }
    // Any other answer means fraudgate's own dependencies answered, and so did the upstream that
    // answered (all the tool's upstreams, when it succeeded): they resume.
    if (!down) {
      resume(OWN_DEPENDENCY);
      if (outcome.ok) for (const service of servicesOf(effect)) resume(service);
      else {
        const service = serviceOf(outcome.error);
        if (service) resume(service);
      }
    }
    if (outcome.ok) {
      if (continuable.has(effect.tool) && leftForNextCall(outcome.output)) {
        // Bounded work per call (flag_opportunities: 1000 a call): the same effect again, due now and
        // not an attempt, until nothing remains. Each call skips what the last one wrote, so a re-run
        // after a crash writes nothing twice; each is its own governed, audited call and claim, so
        // the Salesforce allowance and pauses apply between them.
        const next = nextShare(effect.progress, outcome.output);
        if ('stalled' in next) {
          if (await deadLetter(effect, { code: CONTINUATION_STALLED, message: next.stalled }))
            result.dead += 1;
          return;
        }
        if (await store.continueLater(effect.id, owner, next.progress, now())) result.continued += 1;
        return;
      }
      await routeScore(effect, outcome.output);
      if (await store.complete(effect.id, owner, outcome.output)) result.done += 1;
      return;
    }
    const error = outcome.error;
    const data = (error.data ?? {}) as {
      retry_after_ms?: number;
      approval_id?: string;
      upstream_code?: unknown;
    };
    switch (error.code) {
      case ERROR_CODES.APPROVAL_PENDING:
        if (data.approval_id) {
          await store.awaitApproval(effect.id, owner, data.approval_id);
          return;
        }
        // Nothing to wait on, and nothing was sent: released with its attempt mark cleared, or the
        // expired lease would make a never-sent Sift event an outcome-unknown dead letter.
        await store.retry(effect.id, owner, now() + auto.poll_ms, `${error.code}: ${error.message}`, false);
        result.deferred += 1;
        return;
      case ERROR_CODES.NOT_FOUND:
        // Nothing to act on (e.g. no CRM record for the user): a final, audited outcome, not a failure.
        if (await store.complete(effect.id, owner, { not_found: error.message })) result.done += 1;
        return;
      case ERROR_CODES.RATE_LIMITED:
        await store.retry(effect.id, owner, now() + (data.retry_after_ms ?? auto.poll_ms), undefined, false);
        result.deferred += 1;
        return;
      default:
        break;
    }
    if (data.upstream_code === 'REQUEST_LIMIT_EXCEEDED') {
      salesforcePausedUntil = now() + auto.salesforce_limit_pause_ms;
      logger.warn('Salesforce API limit reached; pausing Salesforce effects', {
        until: salesforcePausedUntil,
      });
      await store.retry(effect.id, owner, salesforcePausedUntil, `${error.code}: ${error.message}`, false);
      result.deferred += 1;
      return;
    }
    const attempts = effect.attempts + 1;
    // Marked attempted, so the call may have reached the upstream: unless the failure proves it
    // changed nothing there, an operator's retry could send it twice, so it is no ordinary failure
    // even when it is final (an answer that then failed a check of ours, a bug after the call).
    if (!idempotent && !provablyUnapplied(error)) {
      if (await outcomeUnknown(effect, `${error.code}: ${error.message}`)) result.dead += 1;
      return;
    }
    if (!retryable(error) || attempts >= auto.max_attempts) {
      if (await deadLetter(effect, error)) result.dead += 1;
      return;
    }
    await store.retry(
      effect.id,
      owner,
      now() + backoff(attempts, data.retry_after_ms),
      `${error.code}: ${error.message}`,
      true,
    );
    result.retried += 1;
  }

  /**
   * Skip the pending effects that later decisions of their users made stale, with one record per
   * pass listing them all (a burst can supersede thousands, each an fsync otherwise). With the
   * store's transactions the skip and its record commit together or not at all; false when they
   * did not (the ledger cannot write), so the effects stay pending until a pass records them.
   */
  async function supersede(): Promise<boolean> {
    const recordOf = (skipped: OutboxEffect[]) =>
      ({
        event: 'superseded',
        target: 'outbox',
        args_redacted: { effect_ids: skipped.map((e) => e.id) },
        outcome: {
          code: 'SKIPPED',
          message: `${skipped.length} effects superseded by later decisions of their users`,
        },
      }) as const;
    if (!options.transaction) {
      const skipped = await store.supersede();
      if (skipped.length > 0) await auditQuietly(recordOf(skipped));
      return true;
    }
    try {
      await options.transaction(async (tx) => {
        const skipped = await tx.outbox.supersede();
        if (skipped.length > 0)
          await audit.appendIn(tx.sql, {
            ...recordOf(skipped),
            call_id: randomUUID(),
            principal: { ...principal },
          });
      });
      return true;
    } catch (error) {
      logger.error('superseded effects not skipped: the skip and its audit record did not commit', {
        error: String(error),
      });
      return false;
    }
  }

  const inflight = new Set<Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let sleeper: (() => void) | undefined;
  let running: Promise<void> | undefined;
  let stopped = true;
  let wakeRequested = false;
  const wake = () => {
    wakeRequested = true;
    if (timer) clearTimeout(timer);
    sleeper?.();
  };

  /**
   * Route, supersede, settle approvals, then lease as many effects as there are free slots
   * (`batch_size` in flight) and start them. Effects are not awaited here: a slow one (a timeout)
   * must not hold back the next claims, and the ones running together share upstream batches.
   */
  async function pump(result: TickResult): Promise<Promise<void>[]> {
    result.routed += await routeNew();
    // Stale effects left pending (their supersede unrecorded) must not be claimed and run now.
    if (!(await supersede())) return [];
    await settleApprovals();
    const room = auto.batch_size - inflight.size;
    if (room <= 0) return [];
    const own = pauses.get(OWN_DEPENDENCY);
    // Every effect needs fraudgate's own dependencies: none is claimed until one may probe them.
    if (own && (now() < own.until || own.probe !== undefined)) return [];
    const claimed = await store.claim(owner, room, auto.lease_ms, undefined, lackingKeySkip());
    result.claimed += claimed.length;
    let allowance = salesforceAllowance();
    const launched: Promise<void>[] = [];
    for (const effect of claimed) {
      // Re-leased while still running here (its lease had lapsed): the running copy finishes it.
      if (active.has(effect.id)) continue;
      if (effect.lackingKeyId !== undefined) {
        // Sealed under a data key this replica does not hold (a rotation under way): valid, so left
        // pending, unrun and not an attempt, for a replica that holds the key; an earlier owner's
        // attempt mark is kept (release, not retry), so the key holder does not send it twice.
        if (!lackingKeysLogged.has(effect.lackingKeyId)) {
          lackingKeysLogged.add(effect.lackingKeyId);
          logger.warn(
            'outbox effects sealed under a data key this replica does not hold are left for a replica that ' +
              'holds it; give every replica the new key as FRAUDGATE_DATA_KEY_PREVIOUS first (README: Rotating keys)',
            { key_id: effect.lackingKeyId, effect_id: effect.id },
          );
        }
        const window = Math.max(auto.lease_ms, auto.poll_ms * 20);
        await store.release(effect.id, owner, now() + window);
        if (lackingKeyEffects.size >= LACKING_KEY_SKIP_MAX) {
          lackingKeyEffects.delete(lackingKeyEffects.keys().next().value!);
        }
        lackingKeyEffects.set(effect.id, now() + window * 10);
        result.deferred += 1;
        continue;
      }
      if (effect.unreadable !== undefined) {
        // Its sealed arguments (or progress) do not open: never run, never retried by itself; a dead
        // letter with its record, so the effects behind it go on.
        logger.error('outbox effect unreadable: its sealed data does not open under FRAUDGATE_DATA_KEY', {
          effect_id: effect.id,
          tool: effect.tool,
          field: effect.unreadable,
        });
        if (await deadLetter(effect, { code: SEALED_DATA_UNREADABLE, message: unreadableMessage(effect) }))
          result.dead += 1;
        continue;
      }
      const held = heldUntil(effect);
      if (held !== undefined) {
        // A service it needs is paused: back until its next probe, unrun, so neither an attempt nor
        // an audit record; the next claim takes the effects behind it.
        await store.release(effect.id, owner, held);
        result.deferred += 1;
        continue;
      }
      if (SALESFORCE_EFFECTS.has(effect.effect)) {
        if (allowance <= 0) {
          clearProbe(effect.id);
          await store.release(effect.id, owner, Math.max(salesforcePausedUntil, now() + auto.poll_ms * 20));
          result.deferred += 1;
          continue;
        }
        allowance -= 1;
      }
      const task: Promise<void> = runEffect(effect, result)
        .catch((error: unknown) =>
          logger.error('effect crashed', { effect_id: effect.id, error: String(error) }),
        )
        .finally(() => {
          inflight.delete(task);
          wake();
        });
      inflight.add(task);
      launched.push(task);
    }
    return launched;
  }

  async function tick(): Promise<TickResult> {
    const result = emptyTickResult();
    await Promise.all(await pump(result));
    return result;
  }

  const loop = async () => {
    // Effects this owner leased before a restart are nobody's now: make them due instead of waiting out their leases.
    const reclaimed = await store.reclaim(owner).catch((error: unknown) => {
      logger.warn('outbox reclaim failed', { error: String(error) });
      return 0;
    });
    if (reclaimed > 0) logger.info('outbox: reclaimed effects leased before a restart', { reclaimed });
    while (!stopped) {
      wakeRequested = false;
      const r = emptyTickResult();
      try {
        await pump(r);
      } catch (error) {
        logger.error('outbox pump failed', { error: String(error) });
      }
      if (stopped) break;
      if (r.claimed > 0 || r.routed > 0 || wakeRequested) continue;
      await new Promise<void>((resolve) => {
        sleeper = resolve;
        timer = setTimeout(resolve, auto.poll_ms);
      });
      sleeper = undefined;
    }
  };

  return {
    tick,
    async drain({ timeoutMs = 60_000 } = {}) {
      const deadline = now() + timeoutMs;
      while (now() < deadline) {
        const r = await tick();
        const s = await store.stats();
        if (s.unrouted === 0 && s.pending === 0 && s.leased === 0) return true;
        if (r.claimed === 0 && r.routed === 0)
          await new Promise((resolve) => setTimeout(resolve, Math.min(auto.poll_ms, 50)));
      }
      return false;
    },
    salesforceWriters: () => salesforceWriters,
    start() {
      if (!stopped) return;
      stopped = false;
      unsubscribe ??= listenForApprovals();
      running = loop();
    },
    wake,
    async stop() {
      stopped = true;
      unsubscribe?.();
      unsubscribe = undefined;
      wake();
      await running;
      await Promise.allSettled([...inflight]);
    },
  };
}
