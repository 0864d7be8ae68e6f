/**
 * Sift REST client on undici (shared/contracts/sift.md §12): v205 events, scores and labels, v3
 * decisions and workflow runs, plus the decision-webhook signature check.
 *
 * Retry policy, per call (each is a deliberate choice; see `RetryPolicy`):
 * - reads (score GET, decisions, decision status, workflow run), rescore POST, label POST and
 *   label DELETE retry on network errors, timeouts, 5xx, 429 and statuses 60 / -1..-4. A label
 *   POST sets the same label again, so repeating it has the same effect as sending it once.
 * - event POST never retries: Sift has no idempotency key, so a retry can duplicate the event.
 * - decision POST retries when the request provably did not take effect — connection refused
 *   (never sent), 429 — and after a 503, which the contract does NOT promise was unprocessed: a
 *   resend is allowed there only because applying the same decision again is harmless (see
 *   `applyUserDecision`). After a timeout or reset the error goes back to the caller, who can read
 *   the status first.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Agent } from 'undici';
import * as z from 'zod';
import { ERROR_CODES, FraudgateError, NotFoundError, UpstreamError } from '../errors.ts';
import {
  ABUSE_TYPES,
  SCORE_PERCENTILE_WINDOWS,
  type AbuseType,
  type DecisionCategory,
  type RequestOptions,
  type SiftApplyDecisionInput,
  type SiftClient,
  type SiftDecisionDefinition,
  type SiftEventResult,
  type SiftLabelInput,
  type SiftLatestDecision,
  type SiftLatestLabel,
  type SiftAbuseScore,
  type SiftReason,
  type SiftUserDecisionStatus,
  type SiftUserScore,
  type SiftWorkflowStatus,
} from './types.ts';
import { isObject } from '../is-object.ts';
import { describeShapeIssues } from './shape-issues.ts';
import { NEVER_SENT } from '../network-errors.ts';

export interface SiftClientConfig {
  /** e.g. `https://api.sift.com`, or an emulator URL. v205 and v3 share it. */
  baseUrl: string;
  apiKey: string;
  accountId: string;
  /**
   * Per attempt, default 5000: connecting, the answer's headers and each pause in its body must
   * each come within it (from 1000 up, checked on undici's coarse timer, so up to about a second
   * late); under 1000, the whole attempt must, on a timer of its own.
   */
  timeoutMs?: number;
  /** Retries after the first attempt, default 3. */
  maxRetries?: number;
  /** Base of the exponential backoff (full jitter), default 200. */
  retryBaseDelayMs?: number;
  /** Cap on one backoff sleep and on an honoured Retry-After, default 10000. A longer Retry-After ends the retries. */
  retryMaxDelayMs?: number;
  userAgent?: string;
}

/** The Sift client plus the reads the `SiftClient` interface does not (yet) need. */
export interface FraudgateSiftClient extends SiftClient {
  /** `GET /v3/accounts/{acct}/workflows/runs/{id}`, parsed loosely (fixture shape). */
  getWorkflowRun(runId: string, options?: RequestOptions): Promise<SiftWorkflowRun>;
}

// --- response schemas (defensive: unknown keys pass through, enums are parsed case-insensitively) ---

const looseNumber = z.union([
  z.number(),
  z
    .string()
    .regex(/^-?\d+(\.\d+)?$/)
    .transform(Number),
]);

const reasonSchema = z.looseObject({
  name: z.string(),
  value: z.union([z.string(), z.number(), z.boolean(), z.null()]).optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});

const abuseScoreSchema = z.looseObject({
  score: z.number(),
  reasons: z.array(reasonSchema).nullish(),
  time: looseNumber.optional(),
  status: z.number().optional(),
  error_message: z.string().optional(),
  percentiles: z.record(z.string(), z.number()).optional(),
});

const labelSchema = z.looseObject({
  is_bad: z.boolean(),
  time: looseNumber.optional(),
  description: z.string().nullish(),
});

const latestDecisionSchema = z.looseObject({
  id: z.string(),
  category: z.string().optional(),
  source: z.string().optional(),
  time: looseNumber.optional(),
  description: z.string().nullish(),
});

/** The v20x envelope (§1.4a): `status` 0 means success. */
const v20xEnvelopeSchema = z.looseObject({
  status: z.number(),
  error_message: z.string().optional(),
  time: looseNumber.optional(),
  request: z.string().optional(),
});

/** `GET /v205/score/{id}` and `score_response` inside events (§2.4, §3.1). */
const scoreResponseSchema = v20xEnvelopeSchema.extend({
  user_id: z.string().optional(),
  scores: z.record(z.string(), abuseScoreSchema).optional(),
  latest_labels: z.record(z.string(), labelSchema).optional(),
  latest_decisions: z.record(z.string(), latestDecisionSchema).optional(),
  workflow_statuses: z.array(z.unknown()).optional(),
});

/** One entry of `score_response.workflow_statuses` (fixture events-response-return-workflow-status). */
const workflowStatusSchema = z.looseObject({
  id: z.string(),
  state: z.string(),
  config_display_name: z.string().optional(),
  abuse_types: z.array(z.string()).optional(),
  history: z
    .array(
      z.looseObject({
        app: z.string().optional(),
        config: z.looseObject({ decision_id: z.string().optional() }).nullish(),
      }),
    )
    .optional(),
  route: z.looseObject({ name: z.string().optional() }).nullish(),
});

/** `GET|POST /v205/users/{id}/score` (§3.2). */
const userScoreResponseSchema = scoreResponseSchema.extend({
  entity_type: z.string().optional(),
  entity_id: z.string().optional(),
});

const eventResponseSchema = v20xEnvelopeSchema.extend({
  score_response: z
    .looseObject({ status: z.number().optional(), error_message: z.string().optional() })
    .optional(),
  warnings: z.unknown().optional(),
});

const decisionDefinitionSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  description: z.string().nullish(),
  entity_type: z.string(),
  abuse_type: z.string(),
  category: z.string(),
  webhook_url: z.string().nullish(),
  created_at: looseNumber.optional(),
  updated_at: looseNumber.optional(),
});

const decisionsListSchema = z.looseObject({
  data: z.array(decisionDefinitionSchema),
  // python's mock has the string "true" (§5.1).
  has_more: z.union([z.boolean(), z.enum(['true', 'false']).transform((s) => s === 'true')]).optional(),
  total_results: z.number().optional(),
  next_ref: z.string().nullish(),
});

const decisionStatusSchema = z.looseObject({
  decisions: z.record(
    z.string(),
    z.looseObject({
      decision: z.looseObject({ id: z.string() }),
      time: looseNumber,
      webhook_succeeded: z.boolean().nullish(),
    }),
  ),
});

const applyDecisionResponseSchema = z.looseObject({
  entity: z.looseObject({ id: z.string(), type: z.string() }),
  decision: z.looseObject({ id: z.string() }),
  time: looseNumber,
});

const workflowRunSchema = z.looseObject({
  id: z.string(),
  state: z.string(),
  config: z
    .looseObject({ id: z.string().optional(), version: z.union([z.string(), z.number()]).optional() })
    .optional(),
  config_display_name: z.string().optional(),
  abuse_types: z.array(z.string()).optional(),
  entity: z.looseObject({ type: z.string(), id: z.string() }).optional(),
  history: z
    .array(z.looseObject({ app: z.string(), name: z.string().optional(), state: z.string().optional() }))
    .optional(),
});

const v3ErrorSchema = z.looseObject({
  error: z.string(),
  description: z.string().optional(),
  issues: z.unknown().optional(),
});

const webhookPayloadSchema = z.looseObject({
  entity: z.looseObject({ type: z.string(), id: z.string() }),
  decision: z.looseObject({ id: z.string() }),
  time: looseNumber,
});

/** The zod schemas the client parses Sift responses with; exported for contract tests against fixtures. */
export const siftSchemas = {
  v20xEnvelope: v20xEnvelopeSchema,
  scoreResponse: scoreResponseSchema,
  userScoreResponse: userScoreResponseSchema,
  eventResponse: eventResponseSchema,
  decisionsList: decisionsListSchema,
  decisionStatus: decisionStatusSchema,
  applyDecisionResponse: applyDecisionResponseSchema,
  workflowRun: workflowRunSchema,
  v3Error: v3ErrorSchema,
  webhookPayload: webhookPayloadSchema,
} as const;

export type SiftWorkflowRun = z.infer<typeof workflowRunSchema>;

// --- the common answers, checked without zod ---
//
// A score read is the hot path of every agent, and zod copies each object it checks. These checks
// accept only answers already in their final shape (numbers as numbers, no transform to apply),
// which the schemas above accept and return unchanged; anything else (a numeric string, a missing
// field) goes to the schema, which stays the definition and writes the error.
// test/clients/sift-client.test.ts holds both to agreeing.

const optional = (v: unknown, type: 'string' | 'number' | 'boolean') => v === undefined || typeof v === type;
const nullishString = (v: unknown) => v === undefined || v === null || typeof v === 'string';
const everyValue = (v: unknown, check: (entry: unknown) => boolean) => {
  if (!isObject(v)) return false;
  for (const key in v) if (Object.hasOwn(v, key) && !check(v[key])) return false;
  return true;
};
const optionalRecord = (v: unknown, check: (entry: unknown) => boolean) =>
  v === undefined || everyValue(v, check);

/** What `v20xEnvelopeSchema` accepts, without transforming: its `status`, or undefined when it rejects. */
export function envelopeStatus(json: unknown): number | undefined {
  if (!isObject(json) || typeof json.status !== 'number') return undefined;
  const time = json.time;
  const timeOk =
    time === undefined ||
    typeof time === 'number' ||
    (typeof time === 'string' && /^-?\d+(\.\d+)?$/.test(time));
  return timeOk && optional(json.error_message, 'string') && optional(json.request, 'string')
    ? json.status
    : undefined;
}

const isReason = (r: unknown) =>
  isObject(r) &&
  typeof r.name === 'string' &&
  (r.value === undefined ||
    r.value === null ||
    typeof r.value === 'string' ||
    typeof r.value === 'number' ||
    typeof r.value === 'boolean') &&
  (r.details === undefined || isObject(r.details));

const isAbuseScore = (s: unknown) =>
  isObject(s) &&
  typeof s.score === 'number' &&
  (s.reasons === undefined ||
    s.reasons === null ||
    (Array.isArray(s.reasons) && s.reasons.every(isReason))) &&
  optional(s.time, 'number') &&
  optional(s.status, 'number') &&
  optional(s.error_message, 'string') &&
  optionalRecord(s.percentiles, (p) => typeof p === 'number');

const isLabel = (l: unknown) =>
  isObject(l) && typeof l.is_bad === 'boolean' && optional(l.time, 'number') && nullishString(l.description);

const isLatestDecision = (d: unknown) =>
  isObject(d) &&
  typeof d.id === 'string' &&
  optional(d.category, 'string') &&
  optional(d.source, 'string') &&
  optional(d.time, 'number') &&
  nullishString(d.description);

/** A score answer `userScoreResponseSchema` would return unchanged; false: let the schema decide. */
export function isPlainUserScoreResponse(json: unknown): json is z.infer<typeof userScoreResponseSchema> {
  return (
    isObject(json) &&
    typeof json.status === 'number' &&
    optional(json.error_message, 'string') &&
    optional(json.time, 'number') &&
    optional(json.request, 'string') &&
    optional(json.user_id, 'string') &&
    optional(json.entity_type, 'string') &&
    optional(json.entity_id, 'string') &&
    optionalRecord(json.scores, isAbuseScore) &&
    optionalRecord(json.latest_labels, isLabel) &&
    optionalRecord(json.latest_decisions, isLatestDecision) &&
    (json.workflow_statuses === undefined || Array.isArray(json.workflow_statuses))
  );
}

// --- normalisation ---

/** Canonical abuse type for any spelling Sift uses (`promo_abuse`, any case); undefined when unknown. */
const CANONICAL_ABUSE_TYPES: ReadonlySet<string> = new Set(ABUSE_TYPES);

export function normaliseAbuseType(value: string): AbuseType | undefined {
  // Sift's own spelling, as it nearly always comes, without trimming and lower-casing a copy.
  if (CANONICAL_ABUSE_TYPES.has(value)) return value as AbuseType;
  const lower = value.trim().toLowerCase();
  const canonical = lower === 'promo_abuse' ? 'promotion_abuse' : lower;
  return (ABUSE_TYPES as readonly string[]).includes(canonical) ? (canonical as AbuseType) : undefined;
}

function normaliseCategory(value: string | undefined): DecisionCategory | string | undefined {
  return value?.toLowerCase();
}

function toReason(r: z.infer<typeof reasonSchema>): SiftReason {
  const reason: SiftReason = { name: r.name };
  if (r.value !== undefined && r.value !== null) reason.value = r.value;
  if (r.details !== undefined) reason.details = r.details;
  return reason;
}

function toUserScore(userId: string, parsed: z.infer<typeof userScoreResponseSchema>): SiftUserScore {
  const scores: Partial<Record<AbuseType, SiftAbuseScore>> = {};
  for (const [key, s] of Object.entries(parsed.scores ?? {})) {
    const type = normaliseAbuseType(key);
    if (!type) continue;
    const percentiles = availablePercentiles(s.percentiles);
    scores[type] = {
      score: s.score,
      reasons: (s.reasons ?? []).map(toReason),
      ...(s.time === undefined ? {} : { time: s.time }),
      ...(percentiles ? { percentiles } : {}),
    };
  }
  const latestDecisions: Partial<Record<AbuseType, SiftLatestDecision>> = {};
  for (const [key, d] of Object.entries(parsed.latest_decisions ?? {})) {
    const type = normaliseAbuseType(key);
    if (!type) continue;
    latestDecisions[type] = {
      id: d.id,
      category: normaliseCategory(d.category) ?? '',
      ...(d.source === undefined ? {} : { source: d.source.toUpperCase() }),
      ...(d.time === undefined ? {} : { time: d.time }),
      ...(d.description ? { description: d.description } : {}),
    };
  }
  const latestLabels: Partial<Record<AbuseType, SiftLatestLabel>> = {};
  for (const [key, l] of Object.entries(parsed.latest_labels ?? {})) {
    const type = normaliseAbuseType(key);
    if (!type) continue;
    latestLabels[type] = {
      is_bad: l.is_bad,
      ...(l.time === undefined ? {} : { time: l.time }),
      ...(l.description ? { description: l.description } : {}),
    };
  }
  return { userId: parsed.entity_id ?? parsed.user_id ?? userId, scores, latestDecisions, latestLabels };
}

/** Sift's percentiles without the `-1` it sends for "not available"; undefined when none are left. */
function availablePercentiles(
  raw: Record<string, number> | undefined,
): SiftAbuseScore['percentiles'] | undefined {
  if (!raw) return undefined;
  const out: NonNullable<SiftAbuseScore['percentiles']> = {};
  for (const window of SCORE_PERCENTILE_WINDOWS) {
    const value = raw[window];
    if (value !== undefined && value >= 0 && value <= 1) out[window] = value;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Workflow statuses as tools report them; entries Sift sends in another shape are skipped. */
function toWorkflowStatuses(raw: unknown[] | undefined): SiftWorkflowStatus[] {
  const out: SiftWorkflowStatus[] = [];
  for (const entry of raw ?? []) {
    const parsed = workflowStatusSchema.safeParse(entry);
    if (!parsed.success) continue;
    const w = parsed.data;
    out.push({
      runId: w.id,
      state: w.state,
      ...(w.config_display_name ? { workflow: w.config_display_name } : {}),
      abuseTypes: w.abuse_types ?? [],
      decisionIds: (w.history ?? []).flatMap((h) => (h.config?.decision_id ? [h.config.decision_id] : [])),
      ...(w.route?.name ? { route: w.route.name } : {}),
    });
  }
  return out;
}

// --- redaction and signatures ---

/** Remove `$api_key` values (also inside the echoed, JSON-escaped `request` string) and any known key. */
export function redactSiftSecrets(text: string, apiKey?: string): string {
  // The value is read atomically (a lookahead, then `\2`) and a match starts only at the first of a
  // run of backslashes: with plain backtracking, an unclosed value full of backslashes cost quadratic
  // time in the length of the upstream text.
  let out = text.replace(
    /((?<!\\)\\*"\$api_key\\*"\s*:\s*\\*")(?=((?:[^"\\]|\\[^"])*))\2(\\*")/g,
    '$1[REDACTED]$3',
  );
  out = out.replace(/([?&]api_key=)[^&\s"]*/g, '$1[REDACTED]');
  if (apiKey) out = out.split(apiKey).join('[REDACTED]');
  return out;
}

/**
 * Verify `X-Sift-Science-Signature` (§7.2): `sha1=<hex>` or `sha256=<hex>` HMAC of the raw body.
 * Several keys are accepted so a signature key can be rotated without dropping webhooks. Compare in
 * constant time; an unknown algorithm, a malformed or missing header is a failure.
 */
export function verifySiftSignature(rawBody: Buffer, header: string | undefined, keys: string[]): boolean {
  if (!header) return false;
  const match = /^\s*(sha1|sha256)=([0-9a-fA-F]+)\s*$/i.exec(header);
  if (!match) return false;
  const algorithm = (match[1] ?? '').toLowerCase();
  const hex = match[2] ?? '';
  const expectedLength = algorithm === 'sha1' ? 20 : 32;
  if (hex.length !== expectedLength * 2) return false;
  const given = Buffer.from(hex, 'hex');
  let ok = false;
  for (const key of keys) {
    if (!key) continue;
    const computed = createHmac(algorithm, key).update(rawBody).digest();
    // No early exit, so timing does not reveal which key matched.
    if (timingSafeEqual(computed, given)) ok = true;
  }
  return ok;
}

// --- transport ---

/**
 * When a failed attempt may be repeated:
 * - `always`: idempotent (reads, rescore, labels).
 * - `unsent-or-503`: when the request provably had no effect (connection refused, 429, status 60),
 *   or Sift answered 503 — not proof of anything (shared/contracts/sift.md §8: any 5xx is a server
 *   error, whatever its body), so only for a call whose repeat is harmless (the decision POST).
 * - `never`: events.
 */
type RetryPolicy = 'always' | 'unsent-or-503' | 'never';

interface CallSpec {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** Path with ids already encoded, or an absolute URL (next_ref). */
  path: string;
  query?: Record<string, string | undefined>;
  body?: Record<string, unknown>;
  /** v20x POSTs carry `$api_key` in the body; everything else uses Basic `KEY:`. */
  auth: 'body' | 'basic';
  family: 'v20x' | 'v3';
  retry: RetryPolicy;
  /** Turn a v3 404 into a more precise error (e.g. unknown decision id). */
  onV3NotFound?: (description: string) => FraudgateError;
  /** Used for the status 54 message. */
  userId?: string;
}

/** An origin and the path (with its query) on it. */
interface Target {
  origin: string;
  path: string;
}

/** A query or fragment, a scheme (an absolute URL), a dot segment, or a character a URL would encode. */
const NEEDS_URL_PARSE = /[^\x21-\x7e]|[?#\\"<>`{}^|]|^[a-z][a-z0-9+.-]*:|(^|\/)\.{1,2}(\/|$)|%2e/i;

/**
 * Where a call goes, as undici's dispatcher takes it: `new URL(path, base)` with the query's
 * parameters set on it. The paths this client builds (ids encoded with encodeURIComponent, which
 * leaves nothing a URL would encode or resolve) are joined as text, without parsing a URL on every
 * call; a path with a query of its own (a next_ref), an absolute one, one with dot segments or with
 * a character a URL would encode goes through URL.
 */
export function requestTarget(
  base: { href: string; origin: string; pathname: string },
  rawPath: string,
  query: Record<string, string | undefined> = {},
): Target {
  const path = rawPath.replace(/^\/+/, '');
  const joinable = !NEEDS_URL_PARSE.test(path);
  const plain = joinable ? plainSearch(query) : undefined;
  if (plain !== undefined) return { origin: base.origin, path: `${base.pathname}${path}${plain}` };
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v);
  if (joinable) {
    return { origin: base.origin, path: `${base.pathname}${path}${params.size > 0 ? `?${params}` : ''}` };
  }
  const url = new URL(path, base.href);
  for (const [k, v] of params) url.searchParams.set(k, v);
  return { origin: url.origin, path: `${url.pathname}${url.search}` };
}

/** Characters URLSearchParams writes as they are (application/x-www-form-urlencoded). */
const PLAIN_QUERY_TEXT = /^[A-Za-z0-9*._-]*$/;

/**
 * `?k=v&…` for a query of names and values URLSearchParams would not encode (e.g.
 * `fields=SCORE_PERCENTILES`), exactly as it would write them, or '' for none; undefined when one
 * needs encoding (URLSearchParams then writes it). Saves building a URLSearchParams per call.
 */
function plainSearch(query: Record<string, string | undefined>): string | undefined {
  let search = '';
  for (const key in query) {
    const value = query[key];
    if (value === undefined) continue;
    if (!PLAIN_QUERY_TEXT.test(key) || !PLAIN_QUERY_TEXT.test(value)) return undefined;
    search += `${search ? '&' : '?'}${key}=${value}`;
  }
  return search;
}

interface RawResponse {
  status: number;
  json: unknown;
  text: string;
}

class AttemptError extends Error {
  readonly error: FraudgateError;
  /** The request provably had no effect upstream (never connected, 429, status 60); never for a 5xx. */
  readonly unsent: boolean;
  constructor(error: FraudgateError, unsent: boolean) {
    super(error.message);
    this.error = error;
    this.unsent = unsent;
  }
}

const V20X_PUBLIC: Record<number, string> = {
  51: 'Sift rejected the API key (status 51): check SIFT_API_KEY',
  52: 'Sift rejected a field name (status 52: invalid characters in field name)',
  53: 'Sift rejected a field value (status 53: invalid field value)',
  55: 'Sift rejected the request (status 55: missing required field)',
  56: 'Sift rejected the request (status 56: invalid JSON)',
  57: 'Sift rejected the request (status 57: invalid HTTP body)',
  104: 'Sift rejected the API version (status 104)',
  105: 'Sift rejected the request (status 105: not a valid reserved field)',
  111: 'This Sift feature is not enabled for the account (status 111)',
};

function errorCodeOf(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 4; depth++) {
    if (typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
      return (e as { code: string }).code;
    }
    e = typeof e === 'object' && 'cause' in e ? (e as { cause: unknown }).cause : undefined;
  }
  return undefined;
}

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(raw)) return Math.round(Number(raw) * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Create the Sift client. One keep-alive undici Agent is shared by all calls; `close()` ends it. */
export function createSiftClient(config: SiftClientConfig): FraudgateSiftClient {
  const timeoutMs = config.timeoutMs ?? 5000;
  const exactTimeout = timeoutMs < 1000;
  const maxRetries = config.maxRetries ?? 3;
  const baseDelay = config.retryBaseDelayMs ?? 200;
  const maxDelay = config.retryMaxDelayMs ?? 10_000;
  const userAgent = config.userAgent ?? 'SiftScience/v205 fraudgate/0.1.0';
  const base = config.baseUrl.endsWith('/') ? config.baseUrl : `${config.baseUrl}/`;
  const basic = `Basic ${Buffer.from(`${config.apiKey}:`).toString('base64')}`;
  const acct = `/v3/accounts/${encodeURIComponent(config.accountId)}`;
  // undici is loaded with the first request, not at start-up: it takes a few hundred ms to load, and
  // a stdio server should answer `initialize` without it.
  // Once loaded it is used directly: awaiting the settled import on every attempt costs a turn.
  let loading: Promise<Agent> | undefined;
  let dispatcher: Agent | undefined;
  const undici = () =>
    (loading ??= import('undici').then(({ Agent: UndiciAgent }) => {
      // Connecting is bounded like the other phases of an attempt (undici's default is 10 s).
      dispatcher = new UndiciAgent({
        keepAliveTimeout: 10_000,
        connections: 16,
        connect: { timeout: timeoutMs },
      });
      return dispatcher;
    }));
  const { href, origin, pathname } = new URL(base);
  const baseParts = { href, origin, pathname };
  const redact = (text: string) => redactSiftSecrets(text, config.apiKey);

  const detailOf = (spec: CallSpec, status: number | string, text: string) =>
    `sift ${spec.name}: ${spec.method} ${redact(spec.path.split('?')[0] ?? '')} -> ${status}: ${redact(text).slice(0, 1000)}`;

  /** Classify an HTTP answer: the parsed JSON on success, else an AttemptError. */
  function classify(spec: CallSpec, res: RawResponse, retryAfterMs: number | undefined): unknown {
    const { status, json, text } = res;
    // Built only on a failure path: redacting and slicing the body costs a successful read for nothing.
    const detail = () => detailOf(spec, status, text);
    const extra = () => ({ detail: detail(), ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
    if (status === 429) {
      throw new AttemptError(
        new UpstreamError('Sift rate-limited the request (HTTP 429); try again later', {
          service: 'sift',
          status,
          retryable: true,
          ...extra(),
        }),
        true,
      );
    }
    if (status >= 500) {
      throw new AttemptError(
        new UpstreamError(`Sift is unavailable (HTTP ${status}); try again later`, {
          service: 'sift',
          status,
          retryable: true,
          ...extra(),
        }),
        // Sift may have processed it: the contract promises nothing about a 5xx (a 503 included).
        false,
      );
    }
    if (spec.family === 'v20x') {
      if (status === 204 && text === '') return undefined;
      const code = envelopeStatus(json);
      if (code === undefined) {
        throw new AttemptError(
          new UpstreamError(`Sift answered HTTP ${status} with an unexpected body`, {
            service: 'sift',
            status,
            retryable: false,
            detail: detail(),
          }),
          false,
        );
      }
      if (code === 0 && status >= 200 && status < 300) return json;
      if (code === 54) {
        throw new AttemptError(
          new NotFoundError(`Sift has no scoreable events for user ${spec.userId ?? ''}`, detail()),
          false,
        );
      }
      if (code === 60) {
        throw new AttemptError(
          new UpstreamError('Sift rate-limited the request (status 60); try again later', {
            service: 'sift',
            status,
            upstreamCode: 60,
            retryable: true,
            ...extra(),
          }),
          true,
        );
      }
      if (code < 0) {
        throw new AttemptError(
          new UpstreamError(`Sift had a server-side error (status ${code}); try again later`, {
            service: 'sift',
            status,
            upstreamCode: code,
            retryable: true,
            ...extra(),
          }),
          false,
        );
      }
      throw new AttemptError(
        new UpstreamError(V20X_PUBLIC[code] ?? `Sift rejected the request (status ${code})`, {
          service: 'sift',
          status,
          upstreamCode: code,
          retryable: false,
          detail: detail(),
        }),
        false,
      );
    }
    // v3
    if (status >= 200 && status < 300) return json;
    const v3 = v3ErrorSchema.safeParse(json);
    const upstreamCode = v3.success ? v3.data.error : undefined;
    if (status === 404 && spec.onV3NotFound) {
      throw new AttemptError(spec.onV3NotFound(v3.success ? (v3.data.description ?? '') : ''), false);
    }
    const message =
      status === 401
        ? 'Sift rejected the API key (HTTP 401): check SIFT_API_KEY'
        : status === 403
          ? 'Sift refused access to the account (HTTP 403): check SIFT_ACCOUNT_ID and the API key'
          : status === 404
            ? 'Sift did not find the requested resource (HTTP 404)'
            : `Sift rejected the request (HTTP ${status}${upstreamCode ? `: ${upstreamCode}` : ''})`;
    throw new AttemptError(
      new UpstreamError(message, {
        service: 'sift',
        status,
        ...(upstreamCode === undefined ? {} : { upstreamCode }),
        retryable: false,
        detail: detail(),
      }),
      false,
    );
  }

  async function attempt(spec: CallSpec, to: Target, signal: AbortSignal | undefined): Promise<unknown> {
    const agent = dispatcher ?? (await undici());
    const headers: Record<string, string> = { 'user-agent': userAgent, accept: 'application/json' };
    let payload: string | undefined;
    if (spec.auth === 'basic') headers.authorization = basic;
    if (spec.body !== undefined || spec.auth === 'body') {
      payload = JSON.stringify(spec.auth === 'body' ? { ...spec.body, $api_key: config.apiKey } : spec.body);
      headers['content-type'] = 'application/json';
    }
    // A deadline of seconds is left to undici's own per-phase deadlines (connecting, the headers,
    // every pause in the body: `timeoutMs` each), which share one coarse timer firing at most about
    // a second late, and the caller's signal goes to undici as it is. An AbortController, a timer and
    // a forwarding listener per attempt cost a read more than the rest of the client together.
    // Only a sub-second deadline, which that timer would overshoot several times, gets its own.
    const exact = exactTimeout ? exactDeadline(signal) : undefined;
    try {
      const res = await agent.request({
        origin: to.origin,
        path: to.path,
        method: spec.method,
        headers,
        body: payload ?? (spec.method === 'POST' ? '' : undefined),
        ...(exact ? { signal: exact.signal } : signal ? { signal } : {}),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const text = await res.body.text();
      let json: unknown;
      if (text !== '') {
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined; // e.g. an HTML 500 page; classify() reports it.
        }
      }
      return classify(
        spec,
        { status: res.statusCode, json, text },
        parseRetryAfter(res.headers['retry-after']),
      );
    } catch (error) {
      if (error instanceof AttemptError) throw error;
      if (signal?.aborted) throw signal.reason;
      const code = errorCodeOf(error);
      const timedOut =
        exact?.signal.aborted === true ||
        code === 'UND_ERR_HEADERS_TIMEOUT' ||
        code === 'UND_ERR_BODY_TIMEOUT';
      const detail = detailOf(
        spec,
        code ?? 'network',
        error instanceof Error ? error.message : String(error),
      );
      // A connect timeout is "unsent" (nothing reached Sift), not "did not answer".
      const unsent = !timedOut && code !== undefined && NEVER_SENT.has(code);
      const message = timedOut
        ? `Sift did not answer within ${timeoutMs}ms`
        : unsent
          ? 'Could not connect to Sift; try again later'
          : 'The connection to Sift failed before an answer arrived; try again later';
      throw new AttemptError(
        new UpstreamError(message, { service: 'sift', retryable: true, detail, cause: error }),
        unsent,
      );
    } finally {
      exact?.done();
    }
  }

  /** The whole attempt within `timeoutMs` on a timer of its own, the caller's abort forwarded. */
  function exactDeadline(signal: AbortSignal | undefined) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('sift timeout')), timeoutMs);
    const forwardAbort = () => controller.abort(signal?.reason);
    if (signal?.aborted) forwardAbort();
    else signal?.addEventListener('abort', forwardAbort, { once: true });
    return {
      signal: controller.signal,
      done() {
        clearTimeout(timer);
        signal?.removeEventListener('abort', forwardAbort);
      },
    };
  }

  async function call(spec: CallSpec, signal?: AbortSignal): Promise<unknown> {
    const to = requestTarget(baseParts, spec.path, spec.query);
    for (let n = 0; ; n++) {
      try {
        return await attempt(spec, to, signal);
      } catch (error) {
        if (!(error instanceof AttemptError)) throw error;
        const { error: failure, unsent } = error;
        const status = failure instanceof UpstreamError ? failure.status : undefined;
        const allowed =
          spec.retry === 'always' || (spec.retry === 'unsent-or-503' && (unsent || status === 503));
        if (!failure.retryable || !allowed || n >= maxRetries) throw failure;
        const retryAfter = failure instanceof UpstreamError ? failure.retryAfterMs : undefined;
        // Waiting less than Sift asked is pointless and waiting longer than the cap stalls the agent.
        if (retryAfter !== undefined && retryAfter > maxDelay) throw failure;
        const delay = retryAfter ?? Math.random() * Math.min(maxDelay, baseDelay * 2 ** n);
        await sleep(delay, signal);
      }
    }
  }

  function parse<S extends z.ZodType>(schema: S, json: unknown, name: string): z.infer<S> {
    const result = schema.safeParse(json);
    if (!result.success) {
      throw new UpstreamError('Sift answered with an unexpected response shape', {
        service: 'sift',
        retryable: false,
        // Codes and paths only: zod's messages and a map key's path can carry what Sift sent.
        detail: `sift ${name}: ${describeShapeIssues(schema, result.error)}`,
      });
    }
    return result.data;
  }

  const enc = encodeURIComponent;
  const abuseTypesQuery = (types: AbuseType[] | undefined) =>
    types && types.length > 0 ? types.join(',') : undefined;

  return {
    async getUserScore(userId, options = {}) {
      const json = await call(
        {
          name: options.refresh ? 'rescore' : 'get_user_score',
          method: options.refresh ? 'POST' : 'GET',
          path: `/v205/users/${enc(userId)}/score`,
          // Percentiles are a per-account feature: an account without it gets -1s, dropped on parsing.
          query: { abuse_types: abuseTypesQuery(options.abuseTypes), fields: 'SCORE_PERCENTILES' },
          auth: 'basic',
          family: 'v20x',
          retry: 'always',
          userId,
        },
        options.signal,
      );
      return toUserScore(
        userId,
        isPlainUserScoreResponse(json) ? json : parse(userScoreResponseSchema, json, 'get_user_score'),
      );
    },

    async addLabel(userId, label: SiftLabelInput, options = {}) {
      await call(
        {
          name: 'label',
          method: 'POST',
          path: `/v205/users/${enc(userId)}/labels`,
          body: {
            $is_bad: label.isBad,
            $abuse_type: label.abuseType,
            $description: label.description,
            $source: label.source,
            $analyst: label.analyst,
          },
          auth: 'body',
          family: 'v20x',
          retry: 'always',
          userId,
        },
        options.signal,
      );
    },

    async removeLabel(userId, abuseType, options = {}) {
      await call(
        {
          name: 'unlabel',
          method: 'DELETE',
          path: `/v205/users/${enc(userId)}/labels`,
          query: { abuse_type: abuseType },
          auth: 'basic',
          family: 'v20x',
          retry: 'always',
          userId,
        },
        options.signal,
      );
    },

    async listDecisions(filter = {}, options = {}) {
      const out: SiftDecisionDefinition[] = [];
      let path: string | undefined = `${acct}/decisions`;
      let query: Record<string, string | undefined> | undefined = {
        entity_type: filter.entityType?.toLowerCase(),
        abuse_types: abuseTypesQuery(filter.abuseTypes),
      };
      const seen = new Set<string>();
      while (path !== undefined) {
        // A next_ref that repeats would loop forever; Sift's paging is documented loosely (§5.1).
        if (seen.has(path)) break;
        seen.add(path);
        const json = await call(
          {
            name: 'list_decisions',
            method: 'GET',
            path,
            query,
            auth: 'basic',
            family: 'v3',
            retry: 'always',
          },
          options.signal,
        );
        const page = parse(decisionsListSchema, json, 'list_decisions');
        for (const d of page.data) {
          const abuseType = normaliseAbuseType(d.abuse_type);
          const category = d.category.toLowerCase();
          if (!abuseType || (category !== 'block' && category !== 'watch' && category !== 'accept')) continue;
          out.push({
            id: d.id,
            name: d.name,
            ...(d.description ? { description: d.description } : {}),
            entityType: d.entity_type.toLowerCase(),
            abuseType,
            category,
          });
        }
        if (!page.has_more || !page.next_ref) break;
        // next_ref may be absolute, root-relative or relative (§5.1) and carries its own query.
        // An absolute one must stay on Sift's origin: it gets our Basic credentials.
        const ref = page.next_ref;
        if (/^https?:/i.test(ref) && new URL(ref).origin !== new URL(base).origin) {
          throw new UpstreamError('Sift returned a paging link to another host; refusing to follow it', {
            service: 'sift',
            retryable: false,
            detail: `sift list_decisions: next_ref origin ${new URL(ref).origin}`,
          });
        }
        path = /^https?:/i.test(ref) ? ref : ref.replace(/^\/+/, '');
        query = undefined;
      }
      return out;
    },

    async getUserDecisions(userId, options = {}) {
      const json = await call(
        {
          name: 'get_user_decisions',
          method: 'GET',
          path: `${acct}/users/${enc(userId)}/decisions`,
          auth: 'basic',
          family: 'v3',
          retry: 'always',
          onV3NotFound: () => new NotFoundError(`Sift has no decisions record for user ${userId}`),
        },
        options.signal,
      );
      const parsed = parse(decisionStatusSchema, json, 'get_user_decisions');
      const out: SiftUserDecisionStatus[] = [];
      for (const [key, d] of Object.entries(parsed.decisions)) {
        const abuseType = normaliseAbuseType(key);
        if (abuseType) out.push({ abuseType, decisionId: d.decision.id, time: d.time });
      }
      return out;
    },

    async applyUserDecision(userId, input: SiftApplyDecisionInput, options = {}) {
      const json = await call(
        {
          name: 'apply_user_decision',
          method: 'POST',
          path: `${acct}/users/${enc(userId)}/decisions`,
          body: {
            decision_id: input.decisionId,
            source: input.source,
            ...(input.analyst === undefined ? {} : { analyst: input.analyst }),
            ...(input.description === undefined ? {} : { description: input.description }),
          },
          auth: 'basic',
          family: 'v3',
          // A 503 is resent although Sift may have applied the decision (the contract does not say a
          // 5xx went unprocessed): applying a decision sets the entity's latest decision for its abuse
          // type (shared/contracts/sift.md §5.2, §5.3) and an API-applied decision sends no webhook
          // (§5), so the same decision applied twice leaves Sift as once, the reason apply_decision is
          // declared idempotent and the outbox retries it like any idempotent effect. Only the
          // decision's time moves to the resend's; the caller enqueues the one answer it gets.
          retry: 'unsent-or-503',
          onV3NotFound: () =>
            new FraudgateError(
              ERROR_CODES.INVALID_INPUT,
              `Sift has no decision with decision_id "${input.decisionId}"; list the configured decisions first`,
              { data: { field: 'decision_id' } },
            ),
        },
        options.signal,
      );
      const parsed = parse(applyDecisionResponseSchema, json, 'apply_user_decision');
      return { decisionId: parsed.decision.id, time: parsed.time };
    },

    async sendEvent(event, options = {}) {
      const json = await call(
        {
          name: 'event',
          method: 'POST',
          path: '/v205/events',
          query: {
            return_score: options.returnScore ? 'true' : undefined,
            return_workflow_status: options.returnWorkflowStatus ? 'true' : undefined,
            abuse_types: abuseTypesQuery(options.abuseTypes),
            fields: options.returnScore || options.returnWorkflowStatus ? 'SCORE_PERCENTILES' : undefined,
          },
          body: event,
          auth: 'body',
          family: 'v20x',
          retry: 'never',
          ...(typeof event.$user_id === 'string' ? { userId: event.$user_id } : {}),
        },
        options.signal,
      );
      const parsed = parse(eventResponseSchema, json, 'event');
      const result: SiftEventResult = { status: parsed.status, errorMessage: parsed.error_message ?? 'OK' };
      if (parsed.warnings !== undefined) result.warnings = parsed.warnings;
      const sr = parsed.score_response;
      if (sr) {
        // A non-zero score_response.status is a partial result: the event itself was accepted.
        result.scoreStatus = sr.status ?? 0;
        if (sr.error_message !== undefined) result.scoreErrorMessage = sr.error_message;
        if (options.returnWorkflowStatus) {
          const statuses = (sr as { workflow_statuses?: unknown }).workflow_statuses;
          result.workflowStatuses = toWorkflowStatuses(Array.isArray(statuses) ? statuses : undefined);
        }
        if (result.scoreStatus === 0) {
          const score = userScoreResponseSchema.safeParse(sr);
          if (score.success) {
            result.score = toUserScore(typeof event.$user_id === 'string' ? event.$user_id : '', score.data);
          }
        }
      }
      return result;
    },

    async getWorkflowRun(runId, options = {}) {
      const json = await call(
        {
          name: 'get_workflow_run',
          method: 'GET',
          path: `${acct}/workflows/runs/${enc(runId)}`,
          auth: 'basic',
          family: 'v3',
          retry: 'always',
          onV3NotFound: () => new NotFoundError(`Sift has no workflow run ${runId}`),
        },
        options.signal,
      );
      return parse(workflowRunSchema, json, 'get_workflow_run');
    },

    async close() {
      await dispatcher?.close();
    },
  };
}
