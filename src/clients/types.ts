/**
 * The narrow client interfaces that tools talk to. Only src/clients/* implement them and know URLs;
 * tools import these types only. Every method throws `UpstreamError` (src/errors.ts) on upstream
 * failure and `NotFoundError` where the entity does not exist.
 */
import type { FraudgateError } from '../errors.ts';

/** Sift abuse types, normalised: `promo_abuse` (decision maps) is reported as `promotion_abuse`. */
export const ABUSE_TYPES = [
  'payment_abuse',
  'account_abuse',
  'content_abuse',
  'promotion_abuse',
  'account_takeover',
  'legacy',
] as const;
export type AbuseType = (typeof ABUSE_TYPES)[number];

export type DecisionCategory = 'block' | 'watch' | 'accept';

export interface SiftReason {
  name: string;
  value?: string | number | boolean;
  details?: Record<string, unknown>;
}

export interface SiftAbuseScore {
  /** 0–1, higher is riskier. */
  score: number;
  reasons: SiftReason[];
  /** Epoch seconds of the score computation, when Sift says. */
  time?: number;
  /**
   * How this score ranks among the account's users over recent windows, 0–1, where Sift sends them
   * (`fields=SCORE_PERCENTILES`, a per-account feature); Sift's `-1` (unavailable) is left out.
   */
  percentiles?: Partial<Record<ScorePercentileWindow, number>>;
}

export const SCORE_PERCENTILE_WINDOWS = [
  'last_1_days',
  'last_5_days',
  'last_7_days',
  'last_10_days',
] as const;
export type ScorePercentileWindow = (typeof SCORE_PERCENTILE_WINDOWS)[number];

/** One synchronous workflow run on an event (`return_workflow_status`, contract §2.4 and §6). */
export interface SiftWorkflowStatus {
  runId: string;
  /** `running`, `finished` or `failed`. */
  state: string;
  /** The workflow's display name (`config_display_name`). */
  workflow?: string;
  abuseTypes: string[];
  /** Decisions the run's decision steps apply (history `config.decision_id`). */
  decisionIds: string[];
  /** The route taken, with `return_route_info`. */
  route?: string;
}

export interface SiftLatestDecision {
  id: string;
  category: DecisionCategory | string;
  source?: string;
  /** Epoch milliseconds (or seconds in older samples: treat as opaque). */
  time?: number;
  description?: string;
}

export interface SiftLatestLabel {
  is_bad: boolean;
  time?: number;
  description?: string;
}

/** `GET|POST /v205/users/{id}/score`, normalised. */
export interface SiftUserScore {
  userId: string;
  scores: Partial<Record<AbuseType, SiftAbuseScore>>;
  latestDecisions: Partial<Record<AbuseType, SiftLatestDecision>>;
  latestLabels: Partial<Record<AbuseType, SiftLatestLabel>>;
}

/** One entry of the account's decisions catalogue (`GET /v3/accounts/{acct}/decisions`). */
export interface SiftDecisionDefinition {
  id: string;
  name: string;
  description?: string;
  entityType: 'user' | 'order' | 'session' | 'content' | string;
  abuseType: AbuseType;
  category: DecisionCategory;
}

/** The user's current decision per abuse type (`GET /v3/accounts/{acct}/users/{id}/decisions`). */
export interface SiftUserDecisionStatus {
  abuseType: AbuseType;
  decisionId: string;
  /** Epoch ms. */
  time: number;
}

export interface SiftLabelInput {
  isBad: boolean;
  abuseType: AbuseType;
  description: string;
  /** From config (e.g. "fraudgate"), never from the model. */
  source: string;
  /** From the principal, never from the model. */
  analyst: string;
}

export interface SiftApplyDecisionInput {
  decisionId: string;
  source: 'MANUAL_REVIEW' | 'AUTOMATED_RULE' | 'CHARGEBACK';
  analyst?: string;
  description?: string;
}

export interface SiftEventResult {
  status: number;
  errorMessage: string;
  /** Present when `return_score` was asked for and the score part succeeded. */
  score?: SiftUserScore;
  /** Non-zero when the event was accepted but the score part failed (a partial result, not an exception). */
  scoreStatus?: number;
  scoreErrorMessage?: string;
  /** With `returnWorkflowStatus`: the workflows Sift ran on the event (possibly none). */
  workflowStatuses?: SiftWorkflowStatus[];
  warnings?: unknown;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface SiftClient {
  /** Latest stored score; `refresh: true` forces a rescore (POST). NotFoundError for a user with no events (status 54). */
  getUserScore(
    userId: string,
    options?: RequestOptions & { abuseTypes?: AbuseType[]; refresh?: boolean },
  ): Promise<SiftUserScore>;
  addLabel(userId: string, label: SiftLabelInput, options?: RequestOptions): Promise<void>;
  /** Removes labels for one abuse type, or all when omitted. */
  removeLabel(userId: string, abuseType?: AbuseType, options?: RequestOptions): Promise<void>;
  /** The account's decisions catalogue (all pages). */
  listDecisions(
    filter?: { entityType?: string; abuseTypes?: AbuseType[] },
    options?: RequestOptions,
  ): Promise<SiftDecisionDefinition[]>;
  getUserDecisions(userId: string, options?: RequestOptions): Promise<SiftUserDecisionStatus[]>;
  applyUserDecision(
    userId: string,
    input: SiftApplyDecisionInput,
    options?: RequestOptions,
  ): Promise<{ decisionId: string; time: number }>;
  /** `POST /v205/events`; never retried automatically (Sift has no idempotency key for events). */
  sendEvent(
    event: Record<string, unknown>,
    options?: RequestOptions & {
      returnScore?: boolean;
      /** Run Sift's synchronous workflows and return their status (scores come back too). */
      returnWorkflowStatus?: boolean;
      abuseTypes?: AbuseType[];
    },
  ): Promise<SiftEventResult>;
  close(): Promise<void>;
}

export interface SegmentMessage {
  userId: string;
  /** Deterministic id (< 100 chars) so a retried call is deduplicated by Segment. */
  messageId: string;
  timestamp?: Date;
  /**
   * Extra `context` keys (not user traits). fraudgate's origin tag travels here (segment-origin.ts):
   * Segment passes `context` on to Webhooks destinations unchanged.
   */
  context?: Record<string, unknown>;
}

export interface SegmentClient {
  /** Resolves only after the batch carrying this message was delivered; rejects with UpstreamError otherwise. */
  identify(
    message: SegmentMessage & { traits: Record<string, unknown> },
    options?: RequestOptions,
  ): Promise<void>;
  track(
    message: SegmentMessage & { event: string; properties: Record<string, unknown> },
    options?: RequestOptions,
  ): Promise<void>;
  /** Profile API traits for a user id, or null when the profile does not exist. */
  getProfileTraits(userId: string, options?: RequestOptions): Promise<Record<string, unknown> | null>;
  close(): Promise<void>;
}

export type SalesforceRecord = Record<string, unknown> & { Id?: string };

export interface SalesforceSaveResult {
  id: string;
  success: boolean;
  created?: boolean;
  errors: {
    statusCode: string;
    /** A value-free description built from the code and field names: safe to show. */
    message: string;
    /** Field names only: Salesforce's own text (which echoes the refused values) is not kept. */
    fields?: string[];
  }[];
}

/**
 * Records whose `field` equals one of `values` (SOQL `field IN (...)`, ≤200 values a query).
 * Shaped so that many callers' lookups of one kind merge into one query: the batching client
 * (src/outbox/batching-salesforce.ts) answers concurrent lookups of one shape with one `IN` query.
 */
export interface SalesforceLookup {
  sobject: string;
  /** An API name; the rows returned always carry it. */
  field: string;
  values: readonly string[];
  /** API names of the fields to read (`Id` is always read). */
  select: readonly string[];
  /** A fixed condition ANDed to the match, literals already quoted with `soqlQuote`. */
  where?: string;
  /** e.g. `CreatedDate DESC`; rows keep this order within each caller's answer. */
  orderBy?: string;
}

/** One record write, as `writeTogether` takes them. */
export type SalesforceWrite =
  | { op: 'create'; sobject: string; record: SalesforceRecord }
  | { op: 'update'; sobject: string; record: SalesforceRecord & { Id: string } }
  | { op: 'upsert'; sobject: string; externalIdField: string; record: SalesforceRecord };

/** Writes of one kind to one object: one sObject Collections subrequest of a composite request. */
export interface SalesforceCollectionWrite {
  op: SalesforceWrite['op'];
  sobject: string;
  /** For `upsert`. */
  externalIdField?: string;
  records: SalesforceRecord[];
}

export interface SalesforceClient {
  /**
   * Writes that reach Salesforce in one request (a composite request of sObject Collections: one API
   * call), applied in the order given, all or none: a write and the idempotency key that vouches for
   * it land together or not at all, even when Salesforce refuses one of them. Throws for the write
   * Salesforce refused (none of the others was applied); otherwise one result per write.
   */
  writeTogether(writes: SalesforceWrite[], options?: RequestOptions): Promise<SalesforceSaveResult[]>;
  /**
   * Up to 5 collections of up to 200 records in one all-or-none composite request (one API call;
   * `/composite` allows five sObject Collections subrequests); per collection, its records' save
   * results. When any record fails nothing is applied: the records refused for their own sake carry
   * their errors, the others ALL_OR_NONE_OPERATION_ROLLED_BACK or PROCESSING_HALTED.
   */
  writeCollections(
    collections: SalesforceCollectionWrite[],
    options?: RequestOptions,
  ): Promise<SalesforceSaveResult[][]>;
  /**
   * Collections, then lookups, in one all-or-none composite request (as `writeCollections`; one API call; at most 5 collections and
   * lookups in all): the lookups run after the writes and see them, e.g. the number Salesforce gave
   * a new Case, read by the key the upsert carried. Per collection its save results; per lookup its
   * rows, or the error Salesforce answered that query with.
   */
  writeThenLookup(
    collections: SalesforceCollectionWrite[],
    lookups: SalesforceLookup[],
    options?: RequestOptions,
  ): Promise<{ saved: SalesforceSaveResult[][]; found: (SalesforceRecord[] | FraudgateError)[] }>;
  /**
   * The records matching a lookup, in `orderBy` order. SOQL compares text without regard to case,
   * and so does the match of a row to its value.
   */
  lookup<T extends SalesforceRecord = SalesforceRecord>(
    lookup: SalesforceLookup,
    options?: RequestOptions,
  ): Promise<T[]>;
  /**
   * Up to 5 lookups of up to 200 values each in one composite request of query subrequests (one API
   * call). Per lookup, its rows — or the error Salesforce answered that query with, so one refused
   * query does not fail the others.
   */
  lookupTogether(
    lookups: SalesforceLookup[],
    options?: RequestOptions,
  ): Promise<(SalesforceRecord[] | FraudgateError)[]>;
  /** SOQL, all pages. Callers escape literals with `soqlQuote` from src/clients/salesforce-client.ts. */
  query<T extends SalesforceRecord = SalesforceRecord>(soql: string, options?: RequestOptions): Promise<T[]>;
  /** One page of a query plus the cursor for the next one. */
  queryPage<T extends SalesforceRecord = SalesforceRecord>(
    soqlOrCursor: { soql: string } | { cursor: string },
    options?: RequestOptions,
  ): Promise<{ records: T[]; totalSize: number; nextCursor?: string }>;
  retrieve<T extends SalesforceRecord = SalesforceRecord>(
    sobject: string,
    id: string,
    options?: RequestOptions,
  ): Promise<T | null>;
  create(sobject: string, record: SalesforceRecord, options?: RequestOptions): Promise<{ id: string }>;
  update(sobject: string, record: SalesforceRecord & { Id: string }, options?: RequestOptions): Promise<void>;
  /** Upsert by external id; `created` says whether a new record was made. */
  upsert(
    sobject: string,
    externalIdField: string,
    record: SalesforceRecord,
    options?: RequestOptions,
  ): Promise<{ id: string; created: boolean }>;
  /**
   * `upsert`, then `select` read from the saved record (fields Salesforce fills in, such as an
   * auto-number). The automation's batching client sends the read with the write, in its request.
   */
  upsertAndRead<T extends SalesforceRecord = SalesforceRecord>(
    sobject: string,
    externalIdField: string,
    record: SalesforceRecord,
    select: readonly string[],
    options?: RequestOptions,
  ): Promise<{ id: string; created: boolean; row: T | undefined }>;
  /** sObject Collections, ≤200 records a request (chunks larger inputs). */
  updateMany(
    sobject: string,
    records: (SalesforceRecord & { Id: string })[],
    options?: RequestOptions,
  ): Promise<SalesforceSaveResult[]>;
  createMany(
    sobject: string,
    records: SalesforceRecord[],
    options?: RequestOptions,
  ): Promise<SalesforceSaveResult[]>;
  /**
   * Upsert by external id through sObject Collections (`PATCH /composite/sobjects/{type}/{field}`),
   * ≤200 records a request (chunks larger inputs); per-record results, `created` on each.
   */
  upsertMany?(
    sobject: string,
    externalIdField: string,
    records: SalesforceRecord[],
    options?: RequestOptions,
  ): Promise<SalesforceSaveResult[]>;
  /** Last seen `Sforce-Limit-Info` api usage. */
  apiUsage(): { used: number; limit: number } | undefined;
  /**
   * The Salesforce user id fraudgate's session authenticates as (from the OAuth identity URL), once a
   * call has logged in; `LastModifiedById` equal to it marks fraudgate's own writes (loop prevention).
   */
  integrationUserId?(): string | undefined;
  close(): Promise<void>;
}

/** Everything a tool may use; a tool declares which of these it needs by using them. */
export interface UpstreamClients {
  sift: SiftClient;
  segment: SegmentClient;
  salesforce: SalesforceClient;
}
