/**
 * Loopback emulator of the Sift REST API (shared/contracts/sift.md §11): Events, Score, Labels,
 * Decisions (v3), workflow runs and signed decision webhooks, with in-memory state.
 *
 * Faithful where the contract is sure, lenient where it says UNVERIFIED (auth accepted in every
 * form §1.2 lists, enums in any case, `promo_abuse` as an alias). Test helpers live on the
 * returned object, never on HTTP routes, so nothing here can be mistaken for Sift's contract.
 */
import { createHash, createHmac } from 'node:crypto';
import { ABUSE_TYPES, type AbuseType, type SiftReason } from '../clients/types.ts';
import {
  startEmulatorServer,
  type EmulatorRequest,
  type EmulatorResponse,
  type EmulatorServer,
  type Route,
  replaceContents,
  type EmulatorState,
  type StatefulEmulator,
} from './emulator-http.ts';
import {
  SIFT_DEMO_DECISIONS,
  SIFT_DEMO_USERS,
  SIFT_DEMO_WORKFLOW_RUN,
  type SiftDecisionRecord,
} from './sift-demo-data.ts';
import { isObject } from '../is-object.ts';

export const DEFAULT_SIFT_API_KEY = 'sandbox-sift-api-key';
export const DEFAULT_SIFT_ACCOUNT_ID = 'sandbox-account';

type EntityType = SiftDecisionRecord['entity_type'];
type DecisionSource = 'MANUAL_REVIEW' | 'AUTOMATED_RULE' | 'CHARGEBACK';

export interface SiftWebhookOptions {
  /** Where console/workflow decisions are POSTed. Without it no webhook is sent (never the network). */
  url?: string;
  /** Signature key; without it the `X-Sift-Science-Signature` header is omitted, as in Sift. */
  signatureKey?: string;
  /** Default sha256, like new Sift signature keys (§7.2). */
  algorithm?: 'sha1' | 'sha256';
  /** Default 2000 ms; a delivery slower than this counts as failed (`webhook_succeeded: false`). */
  timeoutMs?: number;
}

export interface SiftEmulatorOptions {
  apiKey?: string;
  accountId?: string;
  /** Load the demo personas, decisions catalogue and workflow run (default true). */
  seed?: boolean;
  webhook?: SiftWebhookOptions;
  /** Abuse types scored for users that sent events but were never seeded (the "subscription"). */
  abuseTypes?: AbuseType[];
  /** Reject `$`-prefixed keys outside the reserved-field allow-list with status 105 (default true). */
  strictReservedFields?: boolean;
  port?: number;
}

export interface StoredScore {
  score: number;
  reasons: SiftReason[];
  /** Epoch seconds of the (re)computation. */
  time: number;
}

export interface StoredLabel {
  is_bad: boolean;
  /** Epoch ms. */
  time: number;
  description?: string;
  source?: string;
  analyst?: string;
}

export interface StoredDecision {
  id: string;
  category: SiftDecisionRecord['category'];
  source: DecisionSource;
  /** Epoch ms. */
  time: number;
  description?: string;
  analyst?: string;
  /** Set for console/workflow decisions once the webhook was attempted; false for API decisions. */
  webhook_succeeded: boolean;
}

/**
 * A Workflow as the emulator runs it: on a matching event, when the user's score for `abuseType`
 * is at least `minScore`, it applies `decisionId` (source AUTOMATED_RULE) and sends the signed
 * webhook, like a console decision; either way the run is recorded and returned by
 * `return_workflow_status`.
 */
export interface SiftWorkflowConfig {
  /** `config.id` of its runs. */
  id: string;
  /** `config_display_name`. */
  name: string;
  /** Event `$type`s that start it; default every event. */
  eventTypes?: string[];
  abuseType: AbuseType;
  minScore: number;
  decisionId: string;
  /** The route name reported with `return_route_info` when it decides. */
  route?: string;
}

/** One accepted event, as parsed (still carrying `$api_key`: tests may assert on it; never log it). */
export interface ReceivedSiftEvent {
  type: string;
  userId?: string;
  body: Record<string, unknown>;
  receivedAt: number;
}

export interface WebhookDelivery {
  url: string;
  body: string;
  signature?: string;
  status?: number;
  succeeded: boolean;
  error?: string;
}

export interface ConsoleDecisionInput {
  decisionId: string;
  userId: string;
  /** Default: the decision's own entity type; order/session/content need `entityId`. */
  entityId?: string;
  analyst?: string;
  description?: string;
  source?: DecisionSource;
}

/** State (exportState): users with scores, labels and decisions; other entities' decisions; events; the catalogue; workflow runs. */
export interface SiftEmulator extends EmulatorServer, StatefulEmulator {
  apiKey: string;
  accountId: string;
  /** Events accepted by `POST /v205/events`, in arrival order. */
  events: ReceivedSiftEvent[];
  /** The decisions catalogue; tests may push to it. */
  decisionCatalogue: SiftDecisionRecord[];
  webhookDeliveries: WebhookDelivery[];
  /** Seed or overwrite a score; the user becomes scoreable. */
  setScore(userId: string, abuseType: AbuseType | 'promo_abuse', score: number, reasons?: SiftReason[]): void;
  labels(userId: string): Partial<Record<AbuseType, StoredLabel>>;
  /** Latest decision per abuse type for a user (user entity only). */
  decisionsOf(userId: string): Partial<Record<AbuseType, StoredDecision>>;
  /** Cap the decisions-list page size whatever `limit` the client asks for (undefined: no cap). */
  setDecisionsPageSize(size: number | undefined): void;
  /**
   * The next `count` requests to Sift routes answer as rate-limited: v20x routes with
   * `{status: 60, error_message, time}`, v3 routes with `{error: 'rate_limited', description}`.
   * Only matched Sift routes count; `faults.clear()` drops what is still queued.
   */
  rateLimit(count: number, options?: { httpStatus?: number; retryAfterSeconds?: number }): void;
  /** The next `count` events keep top-level status 0 but get `score_response.status = -1` (§2.4). */
  failNextScore(count?: number): void;
  /**
   * Whether `/v205/users/{id}/score` gives each score its computation `time` (default true, as the
   * contract's §3.2 sample does; Sift's clients read it as optional, and so does fraudgate's).
   */
  setScoreTimes(include: boolean): void;
  /**
   * Turn on the account's score-percentiles feature for one score: `fields=SCORE_PERCENTILES` then
   * answers these values (any window left out is Sift's `-1`, "not available"); without it, all `-1`.
   */
  setPercentiles(userId: string, abuseType: AbuseType, values: Record<string, number>): void;
  /** Configure a Workflow (§6, §11.2): runs on every later event it matches, as Sift's do. */
  addWorkflow(workflow: SiftWorkflowConfig): void;
  addWorkflowRun(run: { id: string } & Record<string, unknown>): void;
  /** Apply a decision as a console reviewer would: stores it and sends the signed webhook (§7). */
  consoleApplyDecision(input: ConsoleDecisionInput): Promise<{ time: number; webhook?: WebhookDelivery }>;
}

const USER_ID_CHARSET = /^[a-zA-Z0-9=.\-_+@:&^%!$]+$/;

// Union of the top-level reserved fields the contract lists (§2.2, §2.3) plus order/content events.
// prettier-ignore
const RESERVED_FIELDS = new Set([
  '$type', '$api_key', '$user_id', '$session_id', '$ip', '$time', '$user_email', '$verification_phone_number',
  '$name', '$phone', '$browser', '$app', '$brand_name', '$site_country', '$site_domain', '$referrer_user_id',
  '$payment_methods', '$payment_method', '$billing_address', '$shipping_address', '$promotions',
  '$social_sign_on_type', '$account_types', '$merchant_profile', '$changed_password', '$login_status',
  '$failure_reason', '$username', '$transaction_type', '$transaction_status', '$transaction_id', '$order_id',
  '$amount', '$currency_code', '$decline_category', '$transfer_recipient_user_id', '$seller_user_id',
  '$sent_address', '$received_address', '$ordered_from', '$status_3ds', '$triggered_3ds',
  '$merchant_initiated_transaction', '$digital_orders', '$receiver_wallet_address',
  '$receiver_external_address', '$minimum_deposit_amount', '$maximum_deposit_amount',
  '$minimum_withdrawal_amount', '$maximum_withdrawal_amount', '$current_balance', '$new_balance',
  '$exchange_rate', '$items', '$item', '$bookings', '$expedited_shipping', '$shipping_method',
  '$shipping_carrier', '$shipping_tracking_numbers', '$order_status', '$reason', '$source', '$analyst',
  '$description', '$webhook_id', '$content_id', '$status', '$comment', '$listing', '$message', '$post',
  '$profile', '$review', '$flagged_by', '$chargeback_state', '$chargeback_reason', '$promotion',
  '$verification_type', '$verified_value', '$verified_event', '$verified_entity_id', '$event_type',
  '$wager_id', '$wager_type', '$wager_status_code', '$wager_event_name', '$wager_event_type',
  '$wager_event_id', '$wager_direction', '$wager_odds', '$minimum_wager_amount', '$maximum_wager_amount',
  '$security_notification', '$notification_type', '$notified_value', '$notification_status',
  '$account_holder_name',
]);

// PaymentMethod (§2.2, the sift-java model): the common card, bank and wallet fields; processor
// fields (`$paypal_*`, `$stripe_*`) are allowed by prefix.
// prettier-ignore
const PAYMENT_METHOD_FIELDS = new Set([
  '$payment_type', '$payment_gateway', '$card_bin', '$card_last4', '$avs_result_code', '$cvv_result_code',
  '$verification_status', '$decline_reason_code', '$routing_number', '$account_number_last5',
  '$account_holder_name', '$bank_name', '$bank_country', '$shortened_iban_first6', '$shortened_iban_last4',
  '$sepa_direct_debit_mandate', '$wallet_address', '$wallet_type', '$card_bin_metadata',
]);
// Only partial numbers exist as fields (§10): a value of another shape is refused (status 53).
const PAYMENT_METHOD_FORMATS: Record<string, RegExp> = {
  $card_bin: /^\d{6,8}$/,
  $card_last4: /^\d{4}$/,
  $account_number_last5: /^\d{5}$/,
  $shortened_iban_first6: /^[A-Z]{2}[0-9A-Z]{4}$/,
  $shortened_iban_last4: /^[0-9A-Z]{4}$/,
};

// prettier-ignore
const RESERVED_EVENTS = new Set([
  '$add_item_to_cart', '$add_promotion', '$chargeback', '$content_status', '$create_account',
  '$create_content', '$create_order', '$flag_content', '$link_session_to_user', '$login', '$logout',
  '$order_status', '$remove_item_from_cart', '$security_notification', '$transaction', '$update_account',
  '$update_content', '$update_order', '$update_password', '$verification', '$wager',
]);

// prettier-ignore
const EVENTS_REQUIRING_USER_ID = new Set([
  '$create_account', '$update_account', '$login', '$logout', '$transaction', '$update_password',
  '$link_session_to_user',
]);

// prettier-ignore
const MONEY_FIELDS = [
  '$amount', '$minimum_deposit_amount', '$maximum_deposit_amount', '$minimum_withdrawal_amount',
  '$maximum_withdrawal_amount', '$current_balance', '$new_balance',
];

const V20X_MESSAGES: Record<number, string> = {
  51: 'Invalid API Key. Please check your credentials and try again.',
  53: 'Invalid field value(s) for fields',
  54: 'Specified user_id has no scoreable events',
  55: 'Missing required field',
  56: 'Invalid JSON in request',
  57: 'Invalid HTTP body',
  60: 'Rate limited; too many events have been received in a short period of time',
  105: 'Not a valid reserved field',
};

/** `promo_abuse` and any casing map to the canonical abuse type; unknown values to undefined. */
function parseAbuseType(value: unknown): AbuseType | undefined {
  if (typeof value !== 'string') return undefined;
  const lower = value.trim().toLowerCase();
  const canonical = lower === 'promo_abuse' ? 'promotion_abuse' : lower;
  return (ABUSE_TYPES as readonly string[]).includes(canonical) ? (canonical as AbuseType) : undefined;
}

function parseAbuseTypesQuery(query: URLSearchParams): AbuseType[] | undefined {
  const raw = query.get('abuse_types');
  if (!raw) return undefined;
  return raw
    .split(',')
    .map(parseAbuseType)
    .filter((t): t is AbuseType => t !== undefined);
}

function parseSource(value: unknown): DecisionSource | undefined {
  if (typeof value !== 'string') return undefined;
  const upper = value.toUpperCase();
  return upper === 'MANUAL_REVIEW' || upper === 'AUTOMATED_RULE' || upper === 'CHARGEBACK'
    ? upper
    : undefined;
}

/** Stable pseudo-score in [0, 1) for users that sent events but were never seeded (§11.2). */
function hashScore(userId: string, abuseType: AbuseType): number {
  const digest = createHash('sha256').update(`${userId}\u0000${abuseType}`).digest();
  return Math.floor((digest.readUInt32BE(0) / 2 ** 32) * 10_000) / 10_000;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

function v20xError(status: number, extra: Record<string, unknown> = {}, httpStatus = 400): EmulatorResponse {
  return {
    status: httpStatus,
    body: { status, error_message: V20X_MESSAGES[status] ?? 'Error', time: nowSeconds(), ...extra },
  };
}

function v3Error(
  httpStatus: number,
  error: string,
  description: string,
  issues?: Record<string, string>,
): EmulatorResponse {
  return { status: httpStatus, body: { error, description, ...(issues ? { issues } : {}) } };
}

interface UserState {
  seeded: Map<AbuseType, { score: number; reasons: SiftReason[] }>;
  /** Set by `setPercentiles` (the account feature, per score); absent in state saved before it existed. */
  percentiles?: Map<AbuseType, Record<string, number>>;
  eventCount: number;
  failedTransactions: number;
  scoreTime: number;
  labels: Map<AbuseType, StoredLabel>;
  decisions: Map<AbuseType, StoredDecision>;
}

/** Start the Sift emulator on 127.0.0.1 (ephemeral port unless `port` is given). */
export async function startSiftEmulator(options: SiftEmulatorOptions = {}): Promise<SiftEmulator> {
  const apiKey = options.apiKey ?? DEFAULT_SIFT_API_KEY;
  const accountId = options.accountId ?? DEFAULT_SIFT_ACCOUNT_ID;
  const subscribed = options.abuseTypes ?? [
    'payment_abuse',
    'account_abuse',
    'content_abuse',
    'promotion_abuse',
  ];
  const strictFields = options.strictReservedFields ?? true;
  const webhook = options.webhook ?? {};

  const users = new Map<string, UserState>();
  // Non-user entities: key `${type}:${id}` (orders are addressed without a user on GET, §5.3).
  const entityDecisions = new Map<string, Map<AbuseType, StoredDecision>>();
  const events: ReceivedSiftEvent[] = [];
  const decisionCatalogue: SiftDecisionRecord[] = [];
  const workflowRuns = new Map<string, Record<string, unknown>>();
  const workflows: SiftWorkflowConfig[] = [];
  let workflowRunCount = 0;
  const webhookDeliveries: WebhookDelivery[] = [];
  let decisionsPageSize: number | undefined;
  let failScoreCount = 0;
  let scoreTimes = true;
  const rateLimits: { remaining: number; httpStatus: number; retryAfterSeconds?: number }[] = [];

  const user = (userId: string): UserState => {
    let state = users.get(userId);
    if (!state) {
      state = {
        seeded: new Map(),
        percentiles: new Map(),
        eventCount: 0,
        failedTransactions: 0,
        scoreTime: nowSeconds(),
        labels: new Map(),
        decisions: new Map(),
      };
      users.set(userId, state);
    }
    return state;
  };

  const decisionMap = (
    type: EntityType,
    userId: string,
    entityId?: string,
  ): Map<AbuseType, StoredDecision> => {
    if (type === 'user') return user(userId).decisions;
    const key = `${type}:${entityId ?? ''}`;
    let map = entityDecisions.get(key);
    if (!map) {
      map = new Map();
      entityDecisions.set(key, map);
    }
    return map;
  };

  const storeDecision = (
    record: SiftDecisionRecord,
    userId: string,
    entityId: string | undefined,
    data: Omit<StoredDecision, 'id' | 'category'>,
  ): StoredDecision => {
    const stored: StoredDecision = { id: record.id, category: record.category, ...data };
    decisionMap(record.entity_type, userId, entityId).set(record.abuse_type, stored);
    return stored;
  };

  if (options.seed ?? true) {
    decisionCatalogue.push(...SIFT_DEMO_DECISIONS.map((d) => ({ ...d })));
    for (const persona of SIFT_DEMO_USERS) {
      const state = user(persona.userId);
      for (const [type, s] of Object.entries(persona.scores)) {
        state.seeded.set(type as AbuseType, { score: s.score, reasons: s.reasons.map((r) => ({ ...r })) });
      }
      const record = persona.decision && decisionCatalogue.find((d) => d.id === persona.decision?.id);
      if (persona.decision && record) {
        storeDecision(record, persona.userId, undefined, {
          source: persona.decision.source,
          time: Date.now() - 86_400_000,
          description: persona.decision.description,
          analyst: persona.decision.analyst,
          webhook_succeeded: false,
        });
      }
    }
    workflowRuns.set(
      SIFT_DEMO_WORKFLOW_RUN.id,
      structuredClone(SIFT_DEMO_WORKFLOW_RUN) as Record<string, unknown>,
    );
  }

  /** Current scores, or undefined when the user has no scoreable events (status 54). */
  const scoresOf = (userId: string): Map<AbuseType, StoredScore> | undefined => {
    const state = users.get(userId);
    if (!state) return undefined;
    const result = new Map<AbuseType, StoredScore>();
    if (state.seeded.size > 0) {
      for (const [type, s] of state.seeded) result.set(type, { ...s, time: state.scoreTime });
      return result;
    }
    if (state.eventCount === 0) return undefined;
    for (const type of subscribed) {
      let score = hashScore(userId, type);
      const reasons: SiftReason[] = [{ name: 'Number of events', value: state.eventCount }];
      if (type === 'payment_abuse' && state.failedTransactions > 0) {
        score = Math.min(0.99, score + 0.1 * state.failedTransactions);
        reasons.push({ name: 'Failed transactions', value: state.failedTransactions });
      }
      result.set(type, { score, reasons, time: state.scoreTime });
    }
    return result;
  };

  const labelsJson = (userId: string) => {
    const out: Record<string, unknown> = {};
    for (const [type, l] of users.get(userId)?.labels ?? []) {
      out[type] = {
        is_bad: l.is_bad,
        time: l.time,
        ...(l.description ? { description: l.description } : {}),
      };
    }
    return out;
  };

  const latestDecisionsJson = (userId: string) => {
    const out: Record<string, unknown> = {};
    for (const [type, d] of users.get(userId)?.decisions ?? []) {
      out[type] = {
        id: d.id,
        category: d.category,
        source: d.source,
        time: d.time,
        description: d.description ?? '',
      };
    }
    return out;
  };

  const scoresJson = (
    userId: string,
    scores: Map<AbuseType, StoredScore>,
    filter: AbuseType[] | undefined,
    entityForm: boolean,
    percentiles: boolean,
  ) => {
    const out: Record<string, unknown> = {};
    for (const [type, s] of scores) {
      if (filter && !filter.includes(type)) continue;
      out[type] = {
        ...(entityForm ? { status: 0, error_message: 'OK', ...(scoreTimes ? { time: s.time } : {}) } : {}),
        score: s.score,
        reasons: s.reasons,
        ...(percentiles ? { percentiles: percentilesJson(userId, type) } : {}),
      };
    }
    return out;
  };

  // -1.0 is Sift's "not available" (§9): an account without the feature gets only that.
  const percentilesJson = (userId: string, type: AbuseType) => ({
    last_1_days: -1.0,
    last_5_days: -1.0,
    last_7_days: -1.0,
    last_10_days: -1.0,
    // State saved before percentiles existed has none.
    ...users.get(userId)?.percentiles?.get(type),
  });

  const wantsField = (query: URLSearchParams, field: string) =>
    (query.get('fields') ?? '').split(',').some((f) => f.trim().toUpperCase() === field);

  // Auth (§1.2 emulator rule): any of body $api_key, ?api_key, Basic KEY: or Basic KEY.
  const presentedKeys = (req: EmulatorRequest): string[] => {
    const keys: string[] = [];
    if (isObject(req.json) && typeof req.json.$api_key === 'string') keys.push(req.json.$api_key);
    const q = req.query.get('api_key');
    if (q) keys.push(q);
    const auth = req.headers.authorization;
    if (auth && /^basic /i.test(auth)) {
      const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      keys.push(colon >= 0 ? decoded.slice(0, colon) : decoded);
    }
    return keys;
  };
  const authorised = (req: EmulatorRequest) => presentedKeys(req).includes(apiKey);

  // --- v20x handlers -------------------------------------------------------------------------

  /** Runs the configured workflows an event matches; returns their statuses (with `route`). */
  const runWorkflows = (type: string, userId: string): Record<string, unknown>[] => {
    const statuses: Record<string, unknown>[] = [];
    for (const workflow of workflows) {
      if (workflow.eventTypes && !workflow.eventTypes.includes(type)) continue;
      const score = scoresOf(userId)?.get(workflow.abuseType)?.score ?? 0;
      const record = decisionCatalogue.find((d) => d.id === workflow.decisionId);
      const decides = record !== undefined && score >= workflow.minScore;
      workflowRunCount += 1;
      const run = {
        id: `wfrun${String(workflowRunCount).padStart(8, '0')}`,
        state: 'finished',
        config: { id: workflow.id, version: String(Date.now()) },
        config_display_name: workflow.name,
        abuse_types: [workflow.abuseType],
        entity: { type: 'user', id: userId },
        // Newest first, as Sift lists history (§6.1).
        history: [
          ...(decides
            ? [{ app: 'decision', name: record.name, state: 'finished', config: { decision_id: record.id } }]
            : []),
          { app: 'user_scorer', name: 'Entity', state: 'finished' },
          { app: 'event_processor', name: 'Event', state: 'finished' },
        ],
      };
      workflowRuns.set(run.id, run);
      statuses.push({ ...run, route: { name: decides ? (workflow.route ?? workflow.name) : 'default' } });
      if (!decides) continue;
      const time = Date.now();
      const stored = storeDecision(record, userId, undefined, {
        source: 'AUTOMATED_RULE',
        time,
        webhook_succeeded: false,
      });
      // Sift delivers the webhook on its own schedule, not inside the event's response.
      const payload = JSON.stringify({
        entity: { type: 'user', id: userId },
        decision: { id: record.id },
        time,
      });
      void sendWebhook(payload).then((delivery) => {
        stored.webhook_succeeded = delivery?.succeeded ?? false;
      });
    }
    return statuses;
  };

  const postEvent = (req: EmulatorRequest): EmulatorResponse => {
    const raw = req.rawBody.toString('utf8');
    if (req.rawBody.length === 0) return v20xError(57);
    if (req.jsonError) return v20xError(56, { request: raw });
    if (!isObject(req.json)) return v20xError(57, { request: raw });
    const body = req.json;
    if (!authorised(req)) return v20xError(51, { request: raw });
    const type = body.$type;
    if (typeof type !== 'string' || type === '') return v20xError(55, { request: raw });
    const invalid = (fields: string[]) =>
      v20xError(53, {
        error_message: `Invalid field value(s) for fields: ${fields.map((f) => `$.${f}`).join(', ')}. Please check the documentation for valid field values.`,
        request: raw,
        warnings: {
          count: fields.length,
          items: fields.map((f) => ({ message: `Invalid field value at $.${f}` })),
        },
      });
    if (type.startsWith('$') && !RESERVED_EVENTS.has(type)) return invalid(['$type']);
    if (strictFields) {
      const unknown = Object.keys(body).filter((k) => k.startsWith('$') && !RESERVED_FIELDS.has(k));
      if (unknown.length > 0) return v20xError(105, { request: raw });
    }
    const userId = body.$user_id;
    const sessionId = body.$session_id;
    if (
      EVENTS_REQUIRING_USER_ID.has(type)
        ? userId === undefined
        : userId === undefined && sessionId === undefined
    ) {
      return v20xError(55, { request: raw });
    }
    const bad: string[] = [];
    if (userId !== undefined && (typeof userId !== 'string' || !USER_ID_CHARSET.test(userId)))
      bad.push('$user_id');
    if (type === '$transaction') {
      if (body.$amount === undefined || body.$currency_code === undefined)
        return v20xError(55, { request: raw });
    }
    for (const field of MONEY_FIELDS) {
      if (body[field] !== undefined && !Number.isSafeInteger(body[field])) bad.push(field);
    }
    const methods: [string, unknown][] = [];
    if (body.$payment_method !== undefined) methods.push(['$payment_method', body.$payment_method]);
    if (Array.isArray(body.$payment_methods)) {
      body.$payment_methods.forEach((m, i) => methods.push([`$payment_methods[${i}]`, m]));
    } else if (body.$payment_methods !== undefined) bad.push('$payment_methods');
    for (const [path, method] of methods) {
      if (!isObject(method)) {
        bad.push(path);
        continue;
      }
      for (const [key, value] of Object.entries(method)) {
        // Custom fields may not go inside complex reserved objects (§2.2).
        if (!key.startsWith('$')) bad.push(`${path}.${key}`);
        else if (!PAYMENT_METHOD_FIELDS.has(key) && !/^\$(paypal|stripe)_/.test(key)) {
          if (strictFields) return v20xError(105, { request: raw });
        } else if (
          PAYMENT_METHOD_FORMATS[key] &&
          !(typeof value === 'string' && PAYMENT_METHOD_FORMATS[key].test(value))
        )
          bad.push(`${path}.${key}`);
      }
    }
    if (body.$decline_category !== undefined && body.$transaction_status !== '$failure')
      bad.push('$decline_category');
    if (body.$transfer_recipient_user_id !== undefined && body.$transaction_type !== '$transfer') {
      bad.push('$transfer_recipient_user_id');
    }
    if (bad.length > 0) return invalid(bad);

    events.push({ type, ...(typeof userId === 'string' ? { userId } : {}), body, receivedAt: Date.now() });
    const response: Record<string, unknown> = {
      status: 0,
      error_message: 'OK',
      time: nowSeconds(),
      request: raw,
    };
    let runs: Record<string, unknown>[] = [];
    if (typeof userId === 'string') {
      const state = user(userId);
      state.eventCount += 1;
      state.scoreTime = nowSeconds();
      if (type === '$transaction' && body.$transaction_status === '$failure') state.failedTransactions += 1;
      runs = runWorkflows(type, userId);
    }
    if (wantsField(req.query, 'WARNINGS')) response.warnings = { count: 0, items: [] };
    const wantsScore =
      req.query.get('return_score') === 'true' || req.query.get('return_workflow_status') === 'true';
    if (wantsScore) {
      if (failScoreCount > 0) {
        failScoreCount -= 1;
        response.score_response = { status: -1, error_message: 'Internal server error.' };
      } else if (typeof userId !== 'string') {
        response.score_response = { status: 54, error_message: V20X_MESSAGES[54] };
      } else {
        response.score_response = {
          status: 0,
          error_message: 'OK',
          user_id: userId,
          scores: scoresJson(
            userId,
            scoresOf(userId) ?? new Map(),
            parseAbuseTypesQuery(req.query),
            false,
            wantsField(req.query, 'SCORE_PERCENTILES'),
          ),
          latest_labels: labelsJson(userId),
          workflow_statuses:
            req.query.get('return_workflow_status') === 'true'
              ? runs.map(({ route, ...run }) =>
                  req.query.get('return_route_info') === 'true' ? { ...run, route } : run,
                )
              : [],
        };
      }
    }
    return { status: 200, body: response };
  };

  const postLabel = (req: EmulatorRequest): EmulatorResponse => {
    const raw = req.rawBody.toString('utf8');
    if (req.rawBody.length === 0) return v20xError(57);
    if (req.jsonError) return v20xError(56, { request: raw });
    if (!isObject(req.json)) return v20xError(57, { request: raw });
    const body = req.json;
    if (!authorised(req)) return v20xError(51, { request: raw });
    const userId = req.params.user_id ?? '';
    if (!USER_ID_CHARSET.test(userId)) return v20xError(53, { request: raw });
    if (body.$is_bad === undefined) return v20xError(55, { request: raw });
    if (typeof body.$is_bad !== 'boolean') return v20xError(53, { request: raw });
    const abuseType = body.$abuse_type === undefined ? 'legacy' : parseAbuseType(body.$abuse_type);
    if (!abuseType) return v20xError(53, { request: raw });
    user(userId).labels.set(abuseType, {
      is_bad: body.$is_bad,
      time: typeof body.$time === 'number' ? body.$time : Date.now(),
      ...(typeof body.$description === 'string' ? { description: body.$description } : {}),
      ...(typeof body.$source === 'string' ? { source: body.$source } : {}),
      ...(typeof body.$analyst === 'string' ? { analyst: body.$analyst } : {}),
    });
    return { status: 200, body: { status: 0, error_message: 'OK', time: nowSeconds(), request: raw } };
  };

  const deleteLabels = (req: EmulatorRequest): EmulatorResponse => {
    if (!authorised(req)) return v20xError(51);
    const userId = req.params.user_id ?? '';
    const labels = users.get(userId)?.labels;
    const raw = req.query.get('abuse_type');
    if (raw) {
      const type = parseAbuseType(raw);
      if (!type) return v20xError(53);
      labels?.delete(type);
    } else {
      labels?.clear();
    }
    return { status: 204 };
  };

  const getScore = (req: EmulatorRequest): EmulatorResponse => {
    if (!authorised(req)) return v20xError(51);
    const userId = req.params.user_id ?? '';
    const scores = scoresOf(userId);
    if (!scores) return v20xError(54);
    return {
      status: 200,
      body: {
        status: 0,
        error_message: 'OK',
        user_id: userId,
        scores: scoresJson(
          userId,
          scores,
          parseAbuseTypesQuery(req.query),
          false,
          wantsField(req.query, 'SCORE_PERCENTILES'),
        ),
        latest_labels: labelsJson(userId),
      },
    };
  };

  const userScore =
    (rescore: boolean) =>
    (req: EmulatorRequest): EmulatorResponse => {
      if (!authorised(req)) return v20xError(51);
      const userId = req.params.user_id ?? '';
      if (rescore && scoresOf(userId)) user(userId).scoreTime = nowSeconds();
      const scores = scoresOf(userId);
      if (!scores) return v20xError(54);
      return {
        status: 200,
        body: {
          status: 0,
          error_message: 'OK',
          entity_type: 'user',
          entity_id: userId,
          scores: scoresJson(
            userId,
            scores,
            parseAbuseTypesQuery(req.query),
            true,
            wantsField(req.query, 'SCORE_PERCENTILES'),
          ),
          latest_decisions: latestDecisionsJson(userId),
          latest_labels: labelsJson(userId),
        },
      };
    };

  // --- v3 handlers ---------------------------------------------------------------------------

  /** Basic (or any §1.2 form, for tolerance) auth plus the account in the path. */
  const v3Guard = (req: EmulatorRequest): EmulatorResponse | undefined => {
    if (!authorised(req)) return v3Error(401, 'unauthorized', 'Invalid API key');
    if (req.params.acct !== accountId) return v3Error(403, 'forbidden', 'Permission denied for this account');
    return undefined;
  };

  const listDecisions = (req: EmulatorRequest): EmulatorResponse => {
    const denied = v3Guard(req);
    if (denied) return denied;
    const entityType = req.query.get('entity_type')?.toLowerCase();
    const abuseTypes = parseAbuseTypesQuery(req.query);
    const from = Math.max(0, Number.parseInt(req.query.get('from') ?? '0', 10) || 0);
    let limit = Math.max(1, Number.parseInt(req.query.get('limit') ?? '100', 10) || 100);
    if (decisionsPageSize !== undefined) limit = Math.min(limit, decisionsPageSize);
    const matching = decisionCatalogue.filter(
      (d) =>
        (!entityType || d.entity_type === entityType) && (!abuseTypes || abuseTypes.includes(d.abuse_type)),
    );
    const page = matching.slice(from, from + limit);
    const hasMore = from + limit < matching.length;
    const body: Record<string, unknown> = { data: page, has_more: hasMore, total_results: matching.length };
    if (hasMore) {
      const next = new URLSearchParams();
      if (req.query.get('abuse_types')) next.set('abuse_types', req.query.get('abuse_types') ?? '');
      if (entityType) next.set('entity_type', entityType);
      next.set('from', String(from + limit));
      next.set('limit', String(limit));
      body.next_ref = `/v3/accounts/${encodeURIComponent(accountId)}/decisions?${next.toString()}`;
    }
    return { status: 200, body };
  };

  const applyDecision =
    (entityType: EntityType) =>
    (req: EmulatorRequest): EmulatorResponse => {
      const denied = v3Guard(req);
      if (denied) return denied;
      if (req.jsonError || !isObject(req.json))
        return v3Error(400, 'invalid_request', 'Request body must be a JSON object');
      const body = req.json;
      const userId = req.params.uid ?? '';
      const entityId = entityType === 'user' ? userId : (req.params.eid ?? '');
      const issues: Record<string, string> = {};
      const source = parseSource(body.source);
      if (typeof body.decision_id !== 'string' || body.decision_id === '') issues.decision_id = 'is required';
      if (body.source === undefined) issues.source = 'is required';
      else if (!source) issues.source = 'must be MANUAL_REVIEW, AUTOMATED_RULE or CHARGEBACK';
      if (source === 'MANUAL_REVIEW' && (typeof body.analyst !== 'string' || body.analyst === '')) {
        issues.analyst = 'is required when source is MANUAL_REVIEW';
      }
      if (Object.keys(issues).length > 0 || !source) {
        return v3Error(400, 'invalid_request', 'The request is invalid', issues);
      }
      const decisionId = body.decision_id as string;
      const record = decisionCatalogue.find((d) => d.id === decisionId);
      if (!record) return v3Error(404, 'not_found', `No decision with id ${decisionId}`);
      if (record.entity_type !== entityType) {
        return v3Error(
          400,
          'invalid_request',
          `Decision ${decisionId} applies to ${record.entity_type} entities`,
          {
            decision_id: `entity_type is ${record.entity_type}, not ${entityType}`,
          },
        );
      }
      const time = typeof body.time === 'number' ? body.time : Date.now();
      storeDecision(record, userId, entityId, {
        source,
        time,
        ...(typeof body.description === 'string' ? { description: body.description } : {}),
        ...(typeof body.analyst === 'string' ? { analyst: body.analyst } : {}),
        // API-applied decisions send no webhook (§5).
        webhook_succeeded: false,
      });
      return {
        status: 200,
        body: { entity: { id: entityId, type: entityType }, decision: { id: record.id }, time },
      };
    };

  const decisionStatus =
    (entityType: EntityType) =>
    (req: EmulatorRequest): EmulatorResponse => {
      const denied = v3Guard(req);
      if (denied) return denied;
      const userId = req.params.uid ?? '';
      const map =
        entityType === 'user'
          ? users.get(userId)?.decisions
          : entityDecisions.get(`${entityType}:${req.params.eid ?? ''}`);
      const decisions: Record<string, unknown> = {};
      for (const [type, d] of map ?? []) {
        // Decision-status maps spell it promo_abuse (§9).
        decisions[type === 'promotion_abuse' ? 'promo_abuse' : type] = {
          decision: { id: d.id },
          time: d.time,
          webhook_succeeded: d.webhook_succeeded,
        };
      }
      return { status: 200, body: { decisions } };
    };

  const getWorkflowRun = (req: EmulatorRequest): EmulatorResponse => {
    const denied = v3Guard(req);
    if (denied) return denied;
    const run = workflowRuns.get(req.params.run_id ?? '');
    if (!run) return v3Error(404, 'not_found', `No workflow run with id ${req.params.run_id ?? ''}`);
    return { status: 200, body: run };
  };

  // Rate limiting is applied inside matched routes so the body can take the route family's shape.
  const limited =
    (family: 'v20x' | 'v3', handler: (req: EmulatorRequest) => EmulatorResponse) =>
    (req: EmulatorRequest): EmulatorResponse => {
      const limit = rateLimits[0];
      if (limit) {
        limit.remaining -= 1;
        if (limit.remaining <= 0) rateLimits.shift();
        const headers: Record<string, string> =
          limit.retryAfterSeconds === undefined ? {} : { 'retry-after': String(limit.retryAfterSeconds) };
        const answer =
          family === 'v20x'
            ? v20xError(60, {}, limit.httpStatus)
            : v3Error(limit.httpStatus, 'rate_limited', 'Too many requests; retry later');
        return { ...answer, headers };
      }
      return handler(req);
    };

  const A = '/v3/accounts/:acct';
  const routeTable: [string, string, 'v20x' | 'v3', (req: EmulatorRequest) => EmulatorResponse][] = [
    ['POST', '/v205/events', 'v20x', postEvent],
    ['POST', '/v204/events', 'v20x', postEvent],
    ['POST', '/v205/users/:user_id/labels', 'v20x', postLabel],
    ['DELETE', '/v205/users/:user_id/labels', 'v20x', deleteLabels],
    ['GET', '/v205/score/:user_id', 'v20x', getScore],
    ['GET', '/v205/users/:user_id/score', 'v20x', userScore(false)],
    ['POST', '/v205/users/:user_id/score', 'v20x', userScore(true)],
    ['GET', `${A}/decisions`, 'v3', listDecisions],
    ['POST', `${A}/users/:uid/decisions`, 'v3', applyDecision('user')],
    ['POST', `${A}/users/:uid/orders/:eid/decisions`, 'v3', applyDecision('order')],
    ['POST', `${A}/users/:uid/sessions/:eid/decisions`, 'v3', applyDecision('session')],
    ['POST', `${A}/users/:uid/content/:eid/decisions`, 'v3', applyDecision('content')],
    ['GET', `${A}/users/:uid/decisions`, 'v3', decisionStatus('user')],
    ['GET', `${A}/orders/:eid/decisions`, 'v3', decisionStatus('order')],
    ['GET', `${A}/users/:uid/sessions/:eid/decisions`, 'v3', decisionStatus('session')],
    ['GET', `${A}/users/:uid/content/:eid/decisions`, 'v3', decisionStatus('content')],
    ['GET', `${A}/workflows/runs/:run_id`, 'v3', getWorkflowRun],
  ];
  const routes: Route[] = routeTable.map(([method, pattern, family, handler]) => ({
    method,
    pattern,
    handler: limited(family, handler),
  }));

  const server = await startEmulatorServer({
    name: 'Sift',
    routes,
    ...(options.port === undefined ? {} : { port: options.port }),
    unknownRouteBody: (method, path) => ({
      error: 'not_found',
      description: `No Sift route ${method} ${path}`,
    }),
  });

  const sendWebhook = async (payload: string): Promise<WebhookDelivery | undefined> => {
    if (!webhook.url) return undefined;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    let signature: string | undefined;
    if (webhook.signatureKey) {
      const algorithm = webhook.algorithm ?? 'sha256';
      signature = `${algorithm}=${createHmac(algorithm, webhook.signatureKey).update(payload).digest('hex')}`;
      headers['x-sift-science-signature'] = signature;
    }
    const delivery: WebhookDelivery = { url: webhook.url, body: payload, succeeded: false };
    if (signature) delivery.signature = signature;
    try {
      const res = await fetch(webhook.url, {
        method: 'POST',
        headers,
        body: payload,
        signal: AbortSignal.timeout(webhook.timeoutMs ?? 2000),
      });
      await res.arrayBuffer();
      delivery.status = res.status;
      delivery.succeeded = res.status >= 200 && res.status < 300;
    } catch (error) {
      delivery.error = error instanceof Error ? error.message : String(error);
    }
    webhookDeliveries.push(delivery);
    return delivery;
  };

  // Queued rate limits are faults too: `faults.clear()` must drop them (tests clear between cases).
  const baseClear = server.faults.clear.bind(server.faults);
  server.faults.clear = () => {
    baseClear();
    rateLimits.length = 0;
    failScoreCount = 0;
  };

  const emulator: SiftEmulator = Object.assign(server, {
    exportState: () => ({ users, entityDecisions, events, decisionCatalogue, workflowRuns }),
    importState(state: EmulatorState) {
      replaceContents(users, state.users);
      replaceContents(entityDecisions, state.entityDecisions);
      replaceContents(events, state.events);
      replaceContents(decisionCatalogue, state.decisionCatalogue);
      replaceContents(workflowRuns, state.workflowRuns);
    },
    apiKey,
    accountId,
    events,
    decisionCatalogue,
    webhookDeliveries,
    setScore(
      userId: string,
      abuseType: AbuseType | 'promo_abuse',
      score: number,
      reasons: SiftReason[] = [],
    ) {
      const type = parseAbuseType(abuseType);
      if (!type) throw new Error(`unknown abuse type ${abuseType}`);
      const state = user(userId);
      state.seeded.set(type, { score, reasons });
      // A new score is computed after the one it replaces, as Sift's are, even when a test sets
      // scores faster than Sift's one-second time resolution (consumers key changes on this time).
      state.scoreTime = Math.max(nowSeconds(), state.scoreTime + 1);
    },
    labels(userId: string) {
      return Object.fromEntries(users.get(userId)?.labels ?? []) as Partial<Record<AbuseType, StoredLabel>>;
    },
    decisionsOf(userId: string) {
      return Object.fromEntries(users.get(userId)?.decisions ?? []) as Partial<
        Record<AbuseType, StoredDecision>
      >;
    },
    setDecisionsPageSize(size: number | undefined) {
      decisionsPageSize = size;
    },
    rateLimit(count: number, opts: { httpStatus?: number; retryAfterSeconds?: number } = {}) {
      if (count <= 0) return;
      rateLimits.push({
        remaining: count,
        httpStatus: opts.httpStatus ?? 429,
        ...(opts.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: opts.retryAfterSeconds }),
      });
    },
    setPercentiles(userId: string, abuseType: AbuseType, values: Record<string, number>) {
      const state = user(userId);
      // State saved before percentiles existed (importState) has none.
      (state.percentiles ??= new Map()).set(abuseType, { ...values });
    },
    addWorkflow(workflow: SiftWorkflowConfig) {
      workflows.push({ ...workflow });
    },
    setScoreTimes(include: boolean) {
      scoreTimes = include;
    },
    failNextScore(count = 1) {
      failScoreCount += count;
    },
    addWorkflowRun(run: { id: string } & Record<string, unknown>) {
      workflowRuns.set(run.id, run);
    },
    async consoleApplyDecision(input: ConsoleDecisionInput) {
      const record = decisionCatalogue.find((d) => d.id === input.decisionId);
      if (!record) throw new Error(`No decision with id ${input.decisionId}`);
      if (record.entity_type !== 'user' && !input.entityId)
        throw new Error(`${record.entity_type} decisions need entityId`);
      const time = Date.now();
      const stored = storeDecision(record, input.userId, input.entityId, {
        source: input.source ?? 'MANUAL_REVIEW',
        time,
        ...(input.description ? { description: input.description } : {}),
        ...(input.analyst ? { analyst: input.analyst } : {}),
        webhook_succeeded: false,
      });
      const entityId = record.entity_type === 'user' ? input.userId : (input.entityId ?? '');
      const payload = JSON.stringify({
        entity: { type: record.entity_type, id: entityId },
        decision: { id: record.id },
        time,
      });
      const delivery = await sendWebhook(payload);
      stored.webhook_succeeded = delivery?.succeeded ?? false;
      return delivery ? { time, webhook: delivery } : { time };
    },
  });
  return emulator;
}
