/**
 * Salesforce lifecycle → Sift feedback. Polls Accounts by `(SystemModstamp, Id)` after a stored
 * watermark and turns configured status transitions (`feedback.transitions`) into Sift decisions or
 * labels, through the governance pipeline under an automation principal — so policy still applies
 * (a BLOCK becomes a pending approval) and every action is audited.
 *
 * Watermark: `SystemModstamp > t OR (SystemModstamp = t AND Id > id)` ordered by both, so records
 * sharing a timestamp are neither skipped nor repeated across pages and restarts. The last status
 * seen per Account is stored with the watermark (one transaction): a re-read record, or a change to
 * some other field, fires nothing.
 *
 * Loop prevention: a change whose `LastModifiedById` is fraudgate's own Salesforce user (its session
 * user, plus `feedback.integration_user_ids`) is recorded as seen and never fed back.
 *
 * Delivery is at least once with an idempotent effect: the watermark moves only after the pipeline
 * answered; a retry after a crash sends the same arguments, which Sift applies idempotently and the
 * pipeline folds into the same open approval.
 */
import type { SalesforceClient, SalesforceRecord } from '../clients/types.ts';
import { soqlQuote } from '../clients/salesforce-client.ts';
import type { Config } from '../config.ts';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import { createPipeline, type CallChannel, type Pipeline } from '../governance/pipeline.ts';
import { createRateLimiter } from '../governance/rate-limit.ts';
import type { Logger } from '../logger.ts';
import type { Runtime } from '../runtime.ts';
import type { SyncStateStore, Watermark } from '../store/sync-state-store.ts';
import type { AnyTool, Principal } from '../tool.ts';

/** The principal every lifecycle feedback action runs (and is audited) under. */
export const LIFECYCLE_PRINCIPAL: Principal = {
  id: 'automation:sf-lifecycle',
  kind: 'automation',
  role: 'analyst',
};

const WATERMARK = 'sf-lifecycle';

/** What happened to one Account change. */
export interface LifecycleEvent {
  account_id: string;
  sift_user_id?: string;
  from: string | null | undefined;
  to: string | null;
  modstamp: string;
  outcome: 'applied' | 'pending_approval' | 'failed' | 'deferred' | 'own_write' | 'no_rule' | 'no_sift_user';
  tool?: 'apply_decision' | 'apply_label';
  approval_id?: string;
  error?: { code: string; message: string };
}

export interface PollResult {
  /** Records read (all pages). */
  scanned: number;
  /** True when no watermark existed: statuses were recorded, nothing was sent. */
  baseline: boolean;
  /** Status changes found, including fraudgate's own and those without a rule. */
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
  config: Pick<Config, 'feedback'>;
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
 * not stall on a human. Approved actions are executed later by any process's approval sweep.
 */
export function createAutomationPipeline(runtime: Runtime, tools: readonly AnyTool[]): Pipeline {
  return createPipeline({
    tools,
    config: { ...runtime.config, approvals: { ...runtime.config.approvals, wait_ms: 0 } },
    clients: runtime.clients,
    approvals: runtime.approvals,
    approvalTransaction: runtime.approvalTransaction,
    audit: runtime.audit,
    redactor: runtime.redactor,
    rateLimiter: createRateLimiter(),
    logger: runtime.logger,
  });
}

type AccountRow = SalesforceRecord & {
  Id: string;
  SystemModstamp: string;
  LastModifiedById?: string | null;
  Sift_User_Id__c?: string | null;
};

/** `2024-05-01T12:00:00.000+0000` → a SOQL datetime literal (UTC, `Z`). */
function soqlDatetime(value: string): string {
  const ms = Date.parse(value.replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  if (Number.isNaN(ms)) throw new Error(`unreadable SystemModstamp ${value}`);
  return new Date(ms).toISOString();
}

export function createLifecyclePoller(deps: LifecyclePollerDeps): LifecyclePoller {
  const { config, state, salesforce, logger } = deps;
  const principal = deps.principal ?? LIFECYCLE_PRINCIPAL;
  const feedback = config.feedback;
  const field = feedback.status_field;

  const pageQuery = (after: Watermark | undefined) => {
    const where = after
      ? `WHERE (SystemModstamp > ${soqlDatetime(after.modstamp)} OR ` +
        `(SystemModstamp = ${soqlDatetime(after.modstamp)} AND Id > ${soqlQuote(after.id)}))`
      : '';
    return (
      `SELECT Id, Sift_User_Id__c, ${field}, SystemModstamp, LastModifiedById FROM Account ${where} ` +
      `ORDER BY SystemModstamp ASC, Id ASC LIMIT ${feedback.batch_size}`
    );
  };

  const ownUsers = (): Set<string> => {
    const ids = new Set(feedback.integration_user_ids.map((id) => id.slice(0, 15)));
    const session = salesforce.integrationUserId?.();
    if (session) ids.add(session.slice(0, 15));
    return ids;
  };

  const ruleFor = (from: string | null | undefined, to: string | null) =>
    to === null
      ? undefined
      : feedback.transitions.find(
          (t) => t.to === to && (t.from === undefined || (typeof from === 'string' && t.from.includes(from))),
        );

  async function feed(event: LifecycleEvent, userId: string, signal: AbortSignal): Promise<LifecycleEvent> {
    const rule = ruleFor(event.from, event.to);
    if (!rule) return { ...event, outcome: 'no_rule' };
    // Deterministic text: a retried change has the same arguments, so it joins the same approval.
    const description =
      `Salesforce Account ${event.account_id}: ${field} changed from ${event.from ?? '(none)'} to ${event.to} ` +
      `at ${event.modstamp} (fraudgate lifecycle feedback)`;
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
    let watermark = await state.getWatermark(WATERMARK);
    const baseline = watermark === undefined;
    const events: LifecycleEvent[] = [];
    let scanned = 0;
    for (;;) {
      const page = await salesforce.query<AccountRow>(pageQuery(watermark), { signal });
      if (page.length === 0) break;
      scanned += page.length;
      const own = ownUsers();
      if (own.size === 0 && !baseline) {
        // Without knowing our own user we cannot tell our writes from a human's: refuse rather than loop.
        throw new FraudgateError(
          ERROR_CODES.INTERNAL,
          'Lifecycle feedback cannot tell fraudgate’s own Salesforce writes apart: set feedback.integration_user_ids.',
        );
      }
      const seen = await state.seenStatuses(page.map((r) => r.Id));
      let pending: { accountId: string; status: string | null }[] = [];
      for (const record of page) {
        const to = (record[field] as string | null | undefined) ?? null;
        const from = seen.has(record.Id) ? seen.get(record.Id) : undefined;
        const position = { modstamp: record.SystemModstamp, id: record.Id };
        if (!baseline && from !== to) {
          const event: LifecycleEvent = {
            account_id: record.Id,
            from,
            to,
            modstamp: record.SystemModstamp,
            outcome: 'no_rule',
          };
          const userId = record.Sift_User_Id__c ?? undefined;
          let done: LifecycleEvent;
          if (record.LastModifiedById && own.has(record.LastModifiedById.slice(0, 15))) {
            done = { ...event, outcome: 'own_write' };
          } else if (!userId) {
            done = { ...event, outcome: 'no_sift_user' };
          } else {
            done = await feed({ ...event, sift_user_id: userId }, userId, signal);
          }
          events.push(done);
          if (done.outcome === 'deferred') {
            // Keep everything before this record; the next poll starts again at it.
            if (watermark && pending.length > 0) await state.advance(WATERMARK, watermark, pending);
            logger.warn('lifecycle feedback deferred', { account_id: record.Id, code: done.error?.code });
            return { scanned, baseline, events, watermark, deferred: true };
          }
          if (done.outcome === 'failed') {
            logger.error('lifecycle feedback failed', { account_id: record.Id, code: done.error?.code });
          }
          pending.push({ accountId: record.Id, status: to });
          // Persist right after a call that reached the pipeline so a crash repeats at most this one.
          if (done.tool) {
            await state.advance(WATERMARK, position, pending);
            pending = [];
          }
        } else if (from !== to) {
          pending.push({ accountId: record.Id, status: to });
        }
        watermark = position;
      }
      if (watermark) await state.advance(WATERMARK, watermark, pending);
      if (page.length < feedback.batch_size) break;
    }
    return { scanned, baseline, events, watermark, deferred: false };
  }

  return {
    pollOnce,
    async run(signal, onPoll) {
      while (!signal.aborted) {
        try {
          onPoll?.(await pollOnce(signal));
        } catch (error) {
          if (signal.aborted) break;
          logger.error('lifecycle poll failed', {
            error: error instanceof Error ? error.message : String(error),
          });
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, feedback.poll_interval_ms);
          signal.addEventListener('abort', () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
  };
}
