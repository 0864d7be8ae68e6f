/**
 * Salesforce lifecycle → Sift feedback. Reads every change of the Account status field, one by one
 * with its author, from the field history (`AccountHistory`, shared/contracts/triggers.md §3), and
 * turns configured transitions (`feedback.transitions`, matched on the row's OldValue → NewValue) into
 * Sift decisions or labels, through the governance pipeline under an automation principal — so policy
 * still applies (a BLOCK becomes a pending approval) and every action is audited.
 *
 * Each change counts, not only the value at poll time: a human setting "Closed - Other" and the
 * integration user setting "Under Review" before the next poll are two rows; the human's is fed back.
 * Rows are read after a watermark with an overlap window and a handled set (record-watch.ts), so a
 * row is neither skipped nor repeated across equal timestamps, pages, late commits and restarts.
 *
 * Loop prevention: a row whose `CreatedById` is fraudgate's own Salesforce user (its session user,
 * plus `feedback.integration_user_ids`) is recorded as `own_write` and never fed back.
 *
 * Delivery is at least once with an idempotent effect: a row is remembered only after the pipeline
 * answered; a retry after a crash sends the same arguments (the description names the history row),
 * which Sift applies idempotently and the pipeline folds into the same open approval.
 */
import type { SalesforceClient } from '../clients/types.ts';
import { soqlQuote } from '../clients/salesforce-client.ts';
import type { Config } from '../config.ts';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import type { CallChannel, Pipeline } from '../governance/pipeline.ts';
import type { Logger } from '../logger.ts';
import type { Runtime } from '../runtime.ts';
import type { SyncStateStore, Watermark } from '../store/sync-state-store.ts';
import type { AnyTool, Principal } from '../tool.ts';
import { isoUtc, runEvery, watchOnce, type RowOutcome, type WatchedRow } from './record-watch.ts';

/** The principal every lifecycle feedback action runs (and is audited) under. */
export const LIFECYCLE_PRINCIPAL: Principal = {
  id: 'automation:sf-lifecycle',
  kind: 'automation',
  role: 'analyst',
};

/** The watcher's name in the sync state (its own: the value-polling watermark before it was `sf-lifecycle`). */
const WATCHER = 'sf-account-history';

/** What happened to one Account status change (one history row). */
export interface LifecycleEvent {
  account_id: string;
  sift_user_id?: string;
  from: string | null;
  to: string | null;
  /** When Salesforce recorded the change (the history row's CreatedDate, ISO-8601 UTC). */
  changed_at: string;
  /** Who made it (the history row's CreatedById). */
  changed_by: string;
  history_id: string;
  outcome: 'applied' | 'pending_approval' | 'failed' | 'deferred' | 'own_write' | 'no_rule' | 'no_sift_user';
  tool?: 'apply_decision' | 'apply_label';
  approval_id?: string;
  error?: { code: string; message: string };
}

export interface PollResult {
  /** History rows read (all pages, including re-read ones already handled). */
  scanned: number;
  /** True when no watermark existed: existing history counts as seen, nothing was sent. */
  baseline: boolean;
  /** Status changes handled, including fraudgate's own and those without a rule. */
  events: LifecycleEvent[];
  watermark: Watermark | undefined;
  /** True when a retryable failure stopped the poll early; the next poll retries from there. */
  deferred: boolean;
}

export interface LifecyclePollerDeps {
  /** A pipeline that does not wait for approvals (see `createAutomationPipeline`). */
  pipeline: Pipeline;
  salesforce: SalesforceClient;
  state: SyncStateStore;
  config: Pick<Config, 'feedback' | 'mapping'>;
  logger: Logger;
  principal?: Principal;
}

export interface LifecyclePoller {
  pollOnce(signal?: AbortSignal): Promise<PollResult>;
  /** Poll every `feedback.poll_interval_ms` until the signal aborts. */
  run(signal: AbortSignal, onPoll?: (result: PollResult) => void): Promise<void>;
}

/**
 * The runtime's pipeline, but answering APPROVAL_PENDING at once instead of waiting: a poller must
 * not stall on a human. Approved actions are executed later by any process's approval sweep. Built
 * from the runtime's own parts (`Runtime.unattendedPipeline`), so automation behaves as an MCP call
 * would: the same identity mappings, cursor key, budgets and rate limiter (Redis across replicas when
 * configured), held to the same ceilings as every other caller.
 */
export function createAutomationPipeline(runtime: Runtime, tools: readonly AnyTool[]): Pipeline {
  return runtime.unattendedPipeline(tools);
}

type HistoryRow = WatchedRow & {
  AccountId: string;
  Account?: Record<string, unknown> | null;
  OldValue?: unknown;
  NewValue?: unknown;
  CreatedById: string;
};

const statusValue = (value: unknown): string | null =>
  value === null || value === undefined ? null : String(value);

/** fraudgate's own Salesforce users, by 15-character id: its session user and the configured ones. */
export function integrationUsers(salesforce: SalesforceClient, configured: readonly string[]): Set<string> {
  const ids = new Set(configured.map((id) => id.slice(0, 15)));
  const session = salesforce.integrationUserId?.();
  if (session) ids.add(session.slice(0, 15));
  return ids;
}

export function createLifecyclePoller(deps: LifecyclePollerDeps): LifecyclePoller {
  const { config, state, salesforce, logger } = deps;
  const principal = deps.principal ?? LIFECYCLE_PRINCIPAL;
  const feedback = config.feedback;
  const field = feedback.status_field;

  const siftUserField = config.mapping.salesforce_fields.sift_user_id;

  const ruleFor = (from: string | null, to: string | null) =>
    to === null
      ? undefined
      : feedback.transitions.find(
          (t) => t.to === to && (t.from === undefined || (from !== null && t.from.includes(from))),
        );

  async function feed(event: LifecycleEvent, userId: string, signal: AbortSignal): Promise<LifecycleEvent> {
    const rule = ruleFor(event.from, event.to);
    if (!rule) return { ...event, outcome: 'no_rule' };
    // Deterministic text: a retried change has the same arguments, so it joins the same approval.
    const description =
      `Salesforce Account ${event.account_id}: ${field} changed from ${event.from ?? '(none)'} to ${event.to} ` +
      `at ${event.changed_at} (history ${event.history_id}; fraudgate lifecycle feedback)`;
    const [tool, args] =
      'decision_id' in rule.sift
        ? (['apply_decision', { user_id: userId, decision_id: rule.sift.decision_id, description }] as const)
        : ([
            'apply_label',
            {
              user_id: userId,
              is_bad: rule.sift.label.is_bad,
              abuse_type: rule.sift.label.abuse_type,
              description,
            },
          ] as const);
    const channel: CallChannel = { principal, progress: async () => {}, signal };
    const outcome = await deps.pipeline.call(tool, args, channel);
    if (outcome.ok) return { ...event, tool, outcome: 'applied' };
    const error = outcome.error;
    if (error.code === ERROR_CODES.APPROVAL_PENDING) {
      const approvalId = (error.data as { approval_id?: string } | undefined)?.approval_id;
      return {
        ...event,
        tool,
        outcome: 'pending_approval',
        ...(approvalId ? { approval_id: approvalId } : {}),
      };
    }
    const failure = { code: error.code, message: error.message };
    return { ...event, tool, outcome: error.retryable ? 'deferred' : 'failed', error: failure };
  }

  async function pollOnce(signal: AbortSignal = new AbortController().signal): Promise<PollResult> {
    const events: LifecycleEvent[] = [];
    // Known once the session exists, i.e. after the first query of this poll.
    let own: Set<string> | undefined;
    const ownUsers = () => {
      own ??= integrationUsers(salesforce, feedback.integration_user_ids);
      if (own.size === 0) {
        // Without knowing our own user we cannot tell our writes from a human's: refuse rather than loop.
        throw new FraudgateError(
          ERROR_CODES.INTERNAL,
          'Lifecycle feedback cannot tell fraudgate’s own Salesforce writes apart: set feedback.integration_user_ids.',
        );
      }
      return own;
    };
    const onRow = async (row: HistoryRow): Promise<RowOutcome> => {
      const linked = row.Account?.[siftUserField];
      const event: LifecycleEvent = {
        account_id: row.AccountId,
        from: statusValue(row.OldValue),
        to: statusValue(row.NewValue),
        changed_at: isoUtc(row.CreatedDate),
        changed_by: row.CreatedById,
        history_id: row.Id,
        outcome: 'no_rule',
      };
      let done: LifecycleEvent;
      if (ownUsers().has(row.CreatedById.slice(0, 15))) done = { ...event, outcome: 'own_write' };
      else if (typeof linked !== 'string' || linked === '') done = { ...event, outcome: 'no_sift_user' };
      else done = await feed({ ...event, sift_user_id: linked }, linked, signal);
      events.push(done);
      if (done.outcome === 'deferred') {
        logger.warn('lifecycle feedback deferred', { account_id: row.AccountId, code: done.error?.code });
        return 'retry_later';
      }
      if (done.outcome === 'failed') {
        logger.error('lifecycle feedback failed', { account_id: row.AccountId, code: done.error?.code });
      }
      return done.tool ? 'handled_now' : 'handled';
    };
    const result = await watchOnce<HistoryRow>(
      {
        watcher: WATCHER,
        fields: `Id, AccountId, Account.${siftUserField}, Field, OldValue, NewValue, CreatedById, CreatedDate`,
        from: 'AccountHistory',
        filter: `Field = ${soqlQuote(field)}`,
        batchSize: feedback.batch_size,
        overlapMs: feedback.overlap_ms,
      },
      { salesforce, state, signal },
      onRow,
    );
    return { ...result, events };
  }

  return {
    pollOnce,
    run: (signal, onPoll) =>
      runEvery(
        feedback.poll_interval_ms,
        signal,
        async () => onPoll?.(await pollOnce(signal)),
        (error) =>
          logger.error('lifecycle poll failed', {
            error: error instanceof Error ? error.message : String(error),
          }),
      ),
  };
}
