/**
 * The Lead watcher (issue 9 item 4): every Lead created in Salesforce since the last poll is enriched
 * through `enrich_salesforce_lead`, as a governed call (policy, rate limit, audit) under its own
 * automation principal. The tool does the work: Sift score, risk band and checked-at stamp on the
 * Lead; a lead Sift has never seen is `not_scored` (or sent to Sift as a new account when
 * `mapping.lead_not_scored` says so), never a failure; at or over the threshold the Lead goes to the
 * review queue with `salesforce.lead_review_status`.
 *
 * New Leads are read by `CreatedDate` after a watermark (record-watch.ts: overlap window, handled
 * set, baseline on the first run), so a Lead is enriched once and fraudgate's own update of it never
 * brings it back. Loop-safe besides: a Lead created by fraudgate's own Salesforce users
 * (`feedback.integration_user_ids` and its session user) is skipped, and so is one already enriched
 * (its checked-at field is set, e.g. an agent called the tool first).
 *
 * `runLeadWatcherOnce(deps)` is one poll, for a job runner; `fraudgate sync leads` runs it by hand.
 */
import type { SalesforceClient } from '../clients/types.ts';
import type { Config } from '../config.ts';
import { ERROR_CODES } from '../errors.ts';
import type { CallChannel, Pipeline } from '../governance/pipeline.ts';
import type { Logger } from '../logger.ts';
import type { SyncStateStore } from '../store/sync-state-store.ts';
import type { Principal } from '../tool.ts';
import { integrationUsers } from './lifecycle-poller.ts';
import { isoUtc, watchOnce, type RowOutcome, type WatchResult, type WatchedRow } from './record-watch.ts';

/** The principal every enrichment of the watcher runs (and is audited) under. */
export const LEAD_WATCHER_PRINCIPAL: Principal = {
  id: 'automation:lead-watcher',
  kind: 'automation',
  role: 'analyst',
};

const WATCHER = 'sf-leads';

/** What happened to one new Lead. */
export interface LeadEvent {
  lead_id: string;
  created_at: string;
  outcome:
    | 'scored'
    | 'not_scored'
    | 'sent_to_sift'
    /** Created by fraudgate's own Salesforce user: not enriched. */
    | 'own_lead'
    /** Its checked-at field was already set: not enriched again. */
    | 'already_enriched'
    /** Neither a Sift user id nor a usable email: nothing to ask Sift about. */
    | 'no_identity'
    | 'pending_approval'
    | 'failed'
    /** A retryable failure (rate limit, upstream down): retried from this Lead next poll. */
    | 'deferred';
  sift_score?: number | null;
  routed_to_review?: boolean;
  error?: { code: string; message: string };
}

export interface LeadWatchResult extends WatchResult {
  leads: LeadEvent[];
}

export interface LeadWatcherDeps {
  /** A pipeline that does not wait for approvals (`createAutomationPipeline`). */
  pipeline: Pipeline;
  salesforce: SalesforceClient;
  state: SyncStateStore;
  config: Pick<Config, 'leads' | 'feedback' | 'mapping'>;
  logger: Logger;
  principal?: Principal;
  signal?: AbortSignal;
}

type LeadRow = WatchedRow & { CreatedById: string; [field: string]: unknown };

/** One poll: enrich each Lead created since the last one. */
export async function runLeadWatcherOnce(deps: LeadWatcherDeps): Promise<LeadWatchResult> {
  const { config, pipeline, salesforce, logger } = deps;
  const signal = deps.signal ?? new AbortController().signal;
  const principal = deps.principal ?? LEAD_WATCHER_PRINCIPAL;
  const checkedAt = config.mapping.salesforce_fields.checked_at;
  const leads: LeadEvent[] = [];
  let own: Set<string> | undefined;

  async function enrich(row: LeadRow, event: LeadEvent): Promise<LeadEvent> {
    const channel: CallChannel = { principal, progress: async () => {}, signal };
    const outcome = await pipeline.call('enrich_salesforce_lead', { lead_id: row.Id }, channel);
    if (outcome.ok) {
      const output = outcome.output as {
        status: LeadEvent['outcome'];
        sift_score: number | null;
        routed_to_review: boolean;
      };
      return {
        ...event,
        outcome: output.status,
        sift_score: output.sift_score,
        routed_to_review: output.routed_to_review,
      };
    }
    const error = { code: outcome.error.code, message: outcome.error.message };
    if (error.code === ERROR_CODES.APPROVAL_PENDING) return { ...event, outcome: 'pending_approval' };
    if (error.code === ERROR_CODES.INVALID_INPUT) return { ...event, outcome: 'no_identity', error };
    return { ...event, outcome: outcome.error.retryable ? 'deferred' : 'failed', error };
  }

  const onRow = async (row: LeadRow): Promise<RowOutcome> => {
    // Known once the session exists, i.e. after the first query of this poll.
    own ??= integrationUsers(salesforce, config.feedback.integration_user_ids);
    const event: LeadEvent = { lead_id: row.Id, created_at: isoUtc(row.CreatedDate), outcome: 'scored' };
    let done: LeadEvent;
    if (own.has(row.CreatedById.slice(0, 15))) done = { ...event, outcome: 'own_lead' };
    else if (row[checkedAt]) done = { ...event, outcome: 'already_enriched' };
    else done = await enrich(row, event);
    leads.push(done);
    if (done.outcome === 'deferred') {
      logger.warn('lead enrichment deferred', { lead_id: row.Id, code: done.error?.code });
      return 'retry_later';
    }
    if (done.outcome === 'failed')
      logger.error('lead enrichment failed', { lead_id: row.Id, code: done.error?.code });
    return done.outcome === 'own_lead' || done.outcome === 'already_enriched' ? 'handled' : 'handled_now';
  };

  const result = await watchOnce<LeadRow>(
    {
      watcher: WATCHER,
      fields: `Id, CreatedById, CreatedDate, ${checkedAt}`,
      from: 'Lead',
      filter: 'IsConverted = false',
      batchSize: config.leads.batch_size,
      overlapMs: config.leads.overlap_ms,
    },
    { salesforce, state: deps.state, signal },
    onRow,
  );
  return { ...result, leads };
}
