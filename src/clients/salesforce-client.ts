/**
 * The Salesforce client: `SalesforceClient` (src/clients/types.ts) on jsforce 3.10, following
 * shared/contracts/salesforce.md.
 *
 * What it adds to jsforce, and why:
 * - Lazy OAuth login on first use (one login in flight), client-credentials or username-password,
 *   with an explicit API version (jsforce defaults to 50.0).
 * - A bounded session refresh: jsforce re-sends a request after every 401 and refreshes again
 *   without limit when the org keeps rejecting fresh tokens (§5.1). Each call may refresh once;
 *   the whole client at most `maxRefreshesPerMinute` times. Past that the call fails fast with a
 *   non-retryable error instead of hammering the org.
 * - A timeout per HTTP exchange (jsforce's own is 30 minutes) and AbortSignal support. jsforce
 *   cannot cancel an in-flight request, so a timed-out request may still complete upstream.
 * - Retries for idempotent writes (update and upsert, both PATCH) on 5xx, 429 and network errors,
 *   with exponential backoff and jitter. jsforce already retries GET/PUT/DELETE. Creates (POST) are
 *   NEVER retried: a lost response would otherwise make a duplicate record. Use `upsert` with an
 *   external id when a write must be safe to repeat.
 * - Errors mapped to `UpstreamError` with the Salesforce errorCode and a public message that names
 *   fields (safe) but never values or Salesforce's own text (which can echo personal data). A
 *   refusal's `detail` (which reaches the audit ledger) keeps only the code and field names too.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Connection } from 'jsforce';
import * as z from 'zod';
import { FraudgateError, InvalidInputError, NotFoundError, UpstreamError } from '../errors.ts';
import { isSalesforceId } from './salesforce-ids.ts';
import { describeShapeIssues } from './shape-issues.ts';
import type {
  RequestOptions,
  SalesforceClient,
  SalesforceLookup,
  SalesforceRecord,
  SalesforceSaveResult,
  SalesforceWrite,
} from './types.ts';
import { COMPOSITE_COLLECTIONS, CompositePacker } from './salesforce-composite.ts';
import { NETWORK_FAILURE } from '../network-errors.ts';

/** How fraudgate authenticates to the org (§2). Both are OAuth flows of a connected app. */
export type SalesforceAuthConfig =
  | { flow: 'client_credentials'; clientId: string; clientSecret: string }
  | { flow: 'password'; clientId: string; clientSecret: string; username: string; password: string };

export interface SalesforceClientConfig {
  /** Token host: the My Domain URL (required for client_credentials), login. or test.salesforce.com. */
  loginUrl: string;
  /** REST API version, e.g. '62.0'. Default '62.0'; at least 46.0 (upsert `created`, collections). */
  apiVersion?: string;
  auth: SalesforceAuthConfig;
  /** Budget for one HTTP exchange including jsforce's own GET retries. Default 60 s. */
  timeoutMs?: number;
  /** Retries of idempotent writes (update, upsert). Default 3. */
  maxRetries?: number;
  /** First backoff delay for those retries; doubles each time, with jitter. Default 500 ms. */
  retryBaseDelayMs?: number;
  /** Sent as `Sforce-Call-Options: client=<value>` so org admins can see fraudgate's calls. */
  callOptionsClient?: string;
  /** Session refreshes allowed per client per minute before failing fast. Default 10. */
  maxRefreshesPerMinute?: number;
  /** `query()` stops with an error beyond this many records (use `queryPage`). Default 10000. */
  maxQueryRecords?: number;
}

const DEFAULT_API_VERSION = '62.0';
const COLLECTION_LIMIT = 200;
const SERVICE = 'salesforce' as const;

/**
 * A SOQL string literal, quotes included: backslash and single quote escaped (§3.1; jsforce's
 * `find()` does not escape backslashes and `query()` escapes nothing). Newlines and tabs are
 * escaped too so a literal always stays on one line.
 */
export function soqlQuote(value: string): string {
  const escaped = value
    .replace(/\\/g, '\\\\')
    .replace(/'/g, "\\'")
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t');
  return `'${escaped}'`;
}

/** Most values in one lookup query: keeps the SOQL well under Salesforce's URL and statement limits. */
export const LOOKUP_VALUES_PER_QUERY = 200;

/** The SOQL of a lookup for some of its values; names are checked, values quoted. */
export function lookupSoql(lookup: Omit<SalesforceLookup, 'values'>, values: readonly string[]): string {
  for (const name of [lookup.sobject, lookup.field, ...lookup.select]) {
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
      throw new InvalidInputError([{ field: 'lookup', message: `${name} is not a Salesforce API name` }]);
    }
  }
  const fields = [...new Set(['Id', lookup.field, ...lookup.select])].join(', ');
  const where = `${lookup.field} IN (${values.map(soqlQuote).join(', ')})`;
  return (
    `SELECT ${fields} FROM ${lookup.sobject} WHERE ${where}` +
    (lookup.where ? ` AND (${lookup.where})` : '') +
    (lookup.orderBy ? ` ORDER BY ${lookup.orderBy}` : '')
  );
}

/**
 * The private detail of a Salesforce refusal: its code and field names, never its text. That text
 * echoes the refused values (a duplicate-value or validation-rule message can name a person), and
 * the detail reaches the audit ledger, whose redactor masks emails and phones but not names.
 */
function refusalDetail(code: string, fields: readonly string[]): string {
  return (fields.length > 0 ? `${code} (${fields.join(', ')})` : code).slice(0, 2000);
}

/** Per-record codes of a write that was not refused but rolled back for another record's failure. */
export const ROLLED_BACK_CODES: ReadonlySet<string> = new Set([
  'ALL_OR_NONE_OPERATION_ROLLED_BACK',
  'PROCESSING_HALTED',
]);

/**
 * Per-record codes of a temporary failure: the same write may succeed when sent again (another
 * transaction held the row; the org was briefly unavailable).
 */
const TEMPORARY_CODES: ReadonlySet<string> = new Set(['UNABLE_TO_LOCK_ROW', 'SERVER_UNAVAILABLE']);

/**
 * The result that says why an all-or-none write failed: the index of the first record Salesforce
 * refused for its own sake, not one rolled back because of another (-1 when every failure is a rollback).
 */
export function refusedRecord(results: readonly SalesforceSaveResult[]): number {
  return results.findIndex((r) => !r.success && !ROLLED_BACK_CODES.has(r.errors[0]?.statusCode ?? ''));
}

/**
 * The error for a write Salesforce refused in an all-or-none request (nothing of it committed):
 * NOT_FOUND when the record is gone, else an UPSTREAM_ERROR with Salesforce's code and HTTP 400, so
 * it provably changed nothing; not retryable (the same write would be refused again) unless the code
 * is a temporary one (UNABLE_TO_LOCK_ROW, SERVER_UNAVAILABLE). Its message and detail are built from
 * the code and field names alone, whatever `message` the result carries (from any SalesforceClient,
 * it may still be Salesforce's own text).
 */
export function saveError(
  write: Pick<SalesforceWrite, 'op' | 'sobject'>,
  result: SalesforceSaveResult,
): FraudgateError {
  const first = result.errors[0];
  const temporary = TEMPORARY_CODES.has(first?.statusCode ?? '');
  const detail = first
    ? `${write.sobject} ${write.op}: ${refusalDetail(first.statusCode, first.fields ?? [])}`
    : undefined;
  if (first?.statusCode === 'ENTITY_IS_DELETED' || first?.statusCode === 'NOT_FOUND') {
    return new NotFoundError(`Salesforce has no such ${write.sobject} (it may have been deleted).`, detail);
  }
  const described = first ? describeCode(first.statusCode, first.fields ?? []) : 'unknown error';
  return new UpstreamError(`Salesforce refused the ${write.sobject} ${write.op}: ${described}.`, {
    service: SERVICE,
    status: 400,
    ...(first ? { upstreamCode: first.statusCode } : {}),
    retryable: temporary,
    ...(detail ? { detail } : {}),
  });
}

/** The key a lookup value and a row's field value are matched on: SOQL text equality ignores case. */
export const lookupKey = (value: unknown): string => String(value ?? '').toLowerCase();

// ---- response shapes (parsed with zod at our boundary) ----------------------------------------

const saveErrorSchema = z.object({
  statusCode: z.string(),
  message: z.string().optional(),
  fields: z.array(z.string()).optional(),
});
const saveResultSchema = z.object({
  id: z.string().nullish(),
  success: z.boolean(),
  created: z.boolean().optional(),
  errors: z.array(saveErrorSchema).optional(),
});
const saveResultsSchema = z.array(saveResultSchema);
const upsertResultSchema = z.object({ id: z.string(), success: z.boolean(), created: z.boolean() });
const compositeResultSchema = z.object({
  compositeResponse: z.array(
    z.object({ body: z.unknown(), httpStatusCode: z.number(), referenceId: z.string().optional() }),
  ),
});
const subrequestErrorsSchema = z.array(z.object({ errorCode: z.string(), message: z.string().optional() }));
const queryResultSchema = z.object({
  totalSize: z.number(),
  done: z.boolean().optional(),
  nextRecordsUrl: z.string().optional(),
  records: z.array(z.record(z.string(), z.unknown())),
});

/** The jsforce error shape (HttpApiError and the OAuth error): name = errorCode. */
interface JsforceError {
  name?: string;
  message?: string;
  errorCode?: string;
  data?: unknown;
  cause?: unknown;
}

interface CallState {
  refreshes: number;
  refreshLoop: boolean;
}

const RETRYABLE_CODES = new Set([
  'SERVER_UNAVAILABLE',
  'UNABLE_TO_LOCK_ROW',
  'UNKNOWN_EXCEPTION',
  'REQUEST_RUNNING_TOO_LONG',
]);
const STATUS_BY_CODE: Record<string, number> = {
  INVALID_SESSION_ID: 401,
  REQUEST_LIMIT_EXCEEDED: 403,
  INSUFFICIENT_ACCESS: 403,
  NOT_FOUND: 404,
  ENTITY_IS_DELETED: 404,
  MULTIPLE_CHOICES: 300,
  METHOD_NOT_ALLOWED: 405,
  SERVER_UNAVAILABLE: 503,
  UNKNOWN_EXCEPTION: 500,
};
const SOQL_CODES = new Set([
  'MALFORMED_QUERY',
  'INVALID_TYPE',
  'INVALID_QUERY_FILTER_OPERATOR',
  'INVALID_QUERY_LOCATOR',
]);

function errorCodeOf(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as JsforceError).errorCode;
  return typeof code === 'string' ? code : undefined;
}

function statusOf(code: string): number | undefined {
  const http = /^ERROR_HTTP_(\d{3})$/.exec(code);
  if (http) return Number(http[1]);
  return STATUS_BY_CODE[code] ?? (code === 'MULTIPLE_API_ERRORS' ? undefined : 400);
}

function isNetworkError(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_FAILURE.has(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return error instanceof TypeError && error.message === 'fetch failed';
}

/** The first of Node's own network error codes (ECONNRESET, …) along the cause chain. */
function networkCodeOf(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_FAILURE.has(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * An error's class name when it looks like one (`TypeError`, `INVALID_FIELD`), else `Error`: jsforce
 * copies fields of a vendor's answer into `name`, so anything else may be free text.
 */
function errorClassOf(name: unknown): string {
  return typeof name === 'string' && /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(name) ? name : 'Error';
}

/** The `message` of one item of a Salesforce error list, or ''. */
function messageOf(item: unknown): string {
  const message =
    typeof item === 'object' && item !== null ? (item as { message?: unknown }).message : undefined;
  return typeof message === 'string' ? message : '';
}

/** Field names named by a Salesforce error: from `fields`, else from the known message shapes. */
function fieldsOf(data: unknown, message: string): string[] {
  const fields =
    typeof data === 'object' && data !== null && Array.isArray((data as { fields?: unknown }).fields)
      ? ((data as { fields: unknown[] }).fields.filter((f) => typeof f === 'string') as string[])
      : [];
  if (fields.length > 0) return fields;
  const patterns = [
    /No such column '([A-Za-z0-9_.]+)'/,
    /field '([A-Za-z0-9_.]+)' can not be (?:filtered|sorted)/,
    /Required fields are missing: \[([A-Za-z0-9_, ]+)\]/,
    /duplicate value found: ([A-Za-z0-9_]+) duplicates/,
    /^([A-Za-z0-9_]+): bad value for restricted picklist/,
  ];
  for (const pattern of patterns) {
    const m = pattern.exec(message);
    if (m?.[1]) return m[1].split(',').map((f) => f.trim());
  }
  return [];
}

/** A public, value-free description of one Salesforce error code. */
function describeCode(code: string, fields: string[]): string {
  const named = fields.length > 0 ? fields.join(', ') : undefined;
  switch (code) {
    case 'REQUIRED_FIELD_MISSING':
      return `required field(s) missing: ${named ?? 'unknown'}`;
    case 'INVALID_FIELD':
      return named ? `no such field: ${named}` : 'a field name is not valid for this object';
    case 'INVALID_FIELD_FOR_INSERT_UPDATE':
      return `field(s) not writable: ${named ?? 'unknown'}`;
    case 'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST':
      return `value not allowed for restricted picklist ${named ?? 'field'}`;
    case 'DUPLICATE_VALUE':
      return `another record already has this value in unique field ${named ?? 'unknown'}`;
    case 'MALFORMED_ID':
      return `not a valid record id for ${named ?? 'a reference field'}`;
    case 'INVALID_CROSS_REFERENCE_KEY':
      return `the record referenced by ${named ?? 'a reference field'} does not exist or is not accessible`;
    case 'STRING_TOO_LONG':
      return `value too long for ${named ?? 'a field'}`;
    case 'INVALID_EMAIL_ADDRESS':
      return `not a valid email address in ${named ?? 'a field'}`;
    case 'JSON_PARSER_ERROR':
      return named ? `value of the wrong type for ${named}` : 'the request body was not accepted';
    case 'FIELD_CUSTOM_VALIDATION_EXCEPTION':
      return `a validation rule in the org rejected the record${named ? ` (on ${named})` : ''}`;
    case 'ENTITY_IS_DELETED':
      return 'the record is deleted';
    case 'ALL_OR_NONE_OPERATION_ROLLED_BACK':
      return 'rolled back because another record in the same request failed';
    default:
      return named ? `${code} on ${named}` : code;
  }
}

interface OperationContext {
  /** Human name of what was attempted, e.g. "create Case". */
  what: string;
  sobject?: string;
  /** A create must warn that its outcome is unknown after a timeout or lost response. */
  nonIdempotent?: boolean;
}

/** Build the client. No network traffic until the first call (which logs in). */
export function createSalesforceClient(config: SalesforceClientConfig): SalesforceClient {
  const apiVersion = config.apiVersion ?? DEFAULT_API_VERSION;
  const issues = [];
  if (!/^\d{2,3}\.0$/.test(apiVersion) || Number(apiVersion) < 46) {
    issues.push({ field: 'apiVersion', message: "must look like '62.0' and be at least 46.0" });
  }
  if (!/^https?:\/\/[^/]+$/.test(config.loginUrl.replace(/\/$/, ''))) {
    issues.push({ field: 'loginUrl', message: 'must be an origin such as https://acme.my.salesforce.com' });
  }
  if (issues.length > 0) throw new InvalidInputError(issues, 'Invalid Salesforce client configuration');

  const timeoutMs = config.timeoutMs ?? 60_000;
  const maxRetries = config.maxRetries ?? 3;
  const retryBaseDelayMs = config.retryBaseDelayMs ?? 500;
  const maxRefreshesPerMinute = config.maxRefreshesPerMinute ?? 10;
  const maxQueryRecords = config.maxQueryRecords ?? 10_000;
  const loginUrl = config.loginUrl.replace(/\/$/, '');
  const { auth } = config;

  const callState = new AsyncLocalStorage<CallState>();
  let recentRefreshes: number[] = [];
  let closed = false;

  const tokenParams = (): { grant_type: string; [name: string]: string } =>
    auth.flow === 'client_credentials'
      ? { grant_type: 'client_credentials' }
      : { grant_type: 'password', username: auth.username, password: auth.password };

  // jsforce is loaded with the first call, not at start-up: it takes most of a second to load, and a
  // stdio session that never touches Salesforce should not pay for it.
  let conn: Connection | undefined;
  const connect = async (): Promise<Connection> => {
    if (conn) return conn;
    const { Connection: JsforceConnection } = await import('jsforce');
    conn ??= new JsforceConnection({
      loginUrl,
      version: apiVersion,
      oauth2: { loginUrl, clientId: auth.clientId, clientSecret: auth.clientSecret },
      ...(config.callOptionsClient ? { callOptions: { client: config.callOptionsClient } } : {}),
      // Called by jsforce on every 401. Re-running the configured flow works for both flows (client
      // credentials has no refresh token, §5.1); the guard below is what stops the refresh loop.
      refreshFn: (c, callback) => {
        const state = callState.getStore();
        const now = Date.now();
        recentRefreshes = recentRefreshes.filter((t) => now - t < 60_000);
        if ((state && state.refreshes >= 1) || recentRefreshes.length >= maxRefreshesPerMinute) {
          if (state) state.refreshLoop = true;
          callback(new Error('refresh limit reached: Salesforce rejected a freshly issued session'));
          return;
        }
        if (state) state.refreshes += 1;
        recentRefreshes.push(now);
        c.oauth2.requestToken(tokenParams()).then(
          (res) => callback(null, res.access_token, res),
          (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
        );
      },
    });
    return conn;
  };

  let loginInFlight: Promise<void> | undefined;
  const ensureSession = async (): Promise<Connection> => {
    const connection = await connect();
    if (connection.accessToken) return connection;
    loginInFlight ??= (async () => {
      try {
        await connection.authorize(tokenParams());
      } finally {
        loginInFlight = undefined;
      }
    })();
    await loginInFlight;
    return connection;
  };

  const mapError = (error: unknown, ctx: OperationContext, state?: CallState): FraudgateError => {
    if (error instanceof FraudgateError) return error;
    const e = (typeof error === 'object' && error !== null ? error : {}) as JsforceError;
    const rawMessage = typeof e.message === 'string' ? e.message : String(error);
    // The details below are a code or class, a status and fixed words: `detail` reaches the audit
    // ledger, and Salesforce's or Node's text (an OAuth error_description, say) may name a person.
    const detail = (what: string) => `${ctx.what}: ${what}`;

    if (state?.refreshLoop) {
      return new UpstreamError(
        'Salesforce keeps rejecting fresh sessions (INVALID_SESSION_ID right after a successful login). ' +
          "Check the connected app's session and IP policies and the integration user's API access; retrying will not help.",
        {
          service: SERVICE,
          status: 401,
          upstreamCode: 'INVALID_SESSION_ID',
          retryable: false,
          detail: detail(
            'INVALID_SESSION_ID (HTTP 401): refresh limit reached, a fresh session was rejected',
          ),
          cause: error,
        },
      );
    }
    if (isNetworkError(error)) {
      return new UpstreamError(
        ctx.nonIdempotent
          ? `Salesforce could not be reached during ${ctx.what}; the record may or may not exist, check before trying again.`
          : `Salesforce could not be reached during ${ctx.what}; try again shortly.`,
        {
          service: SERVICE,
          retryable: !ctx.nonIdempotent,
          detail: detail(`network error ${networkCodeOf(error) ?? '(no code)'}`),
          cause: error,
        },
      );
    }
    // OAuth errors from the token endpoint: name = error, message = error_description.
    const oauthName = typeof e.name === 'string' ? e.name : '';
    if (
      /^(invalid_grant|invalid_client|invalid_client_id|unsupported_grant_type|inactive_user|inactive_org)$/.test(
        oauthName,
      )
    ) {
      return new UpstreamError(
        `Salesforce refused fraudgate's login (${oauthName}). Check the connected app credentials, the login URL ` +
          '(client credentials needs the My Domain URL) and that the flow is enabled.',
        {
          service: SERVICE,
          status: 400,
          upstreamCode: oauthName,
          retryable: false,
          detail: detail(`OAuth ${oauthName} (HTTP 400): login refused`),
          cause: error,
        },
      );
    }
    if (rawMessage.startsWith('Unable to refresh session due to:')) {
      return new UpstreamError(
        'Salesforce ended the session and fraudgate could not log in again; check the connected app credentials.',
        {
          service: SERVICE,
          status: 401,
          upstreamCode: 'INVALID_SESSION_ID',
          retryable: false,
          detail: detail('INVALID_SESSION_ID (HTTP 401): session refresh failed, login again refused'),
          cause: error,
        },
      );
    }
    const code = errorCodeOf(error);
    if (!code) {
      return new UpstreamError(`Salesforce call failed unexpectedly during ${ctx.what}.`, {
        service: SERVICE,
        retryable: false,
        detail: detail(`${errorClassOf(e.name)}: unexpected error without a Salesforce error code`),
        cause: error,
      });
    }
    const status = statusOf(code);
    const on = ctx.sobject ? ` on ${ctx.sobject}` : '';
    const refused =
      code === 'MULTIPLE_API_ERRORS' && Array.isArray(e.data)
        ? e.data.map((item: unknown) =>
            refusalDetail(errorCodeOf(item) ?? 'ERROR', fieldsOf(item, messageOf(item))),
          )
        : [refusalDetail(code, fieldsOf(e.data, rawMessage))];
    const base = {
      service: SERVICE,
      upstreamCode: code,
      detail: `${ctx.what}: ${refused.join('; ')}`.slice(0, 2000),
      cause: error,
      ...(status ? { status } : {}),
    };
    if (code === 'REQUEST_LIMIT_EXCEEDED') {
      return new UpstreamError(
        "Salesforce's API request limit for this org is used up; wait before calling Salesforce again.",
        { ...base, retryable: true },
      );
    }
    if (code === 'INVALID_SESSION_ID') {
      return new UpstreamError(
        'Salesforce rejected the session; check the connected app and integration user.',
        {
          ...base,
          retryable: false,
        },
      );
    }
    if (SOQL_CODES.has(code)) {
      const object = /sObject type '([A-Za-z0-9_]+)'/.exec(rawMessage)?.[1];
      const hint = code === 'INVALID_TYPE' && object ? `: unknown object ${object}` : '';
      return new UpstreamError(`Salesforce rejected the SOQL query (${code})${hint}.`, {
        ...base,
        retryable: false,
      });
    }
    if (code === 'MULTIPLE_CHOICES') {
      return new UpstreamError(
        `More than one ${ctx.sobject ?? 'record'} matches that external id; the upsert was not applied.`,
        {
          ...base,
          retryable: false,
        },
      );
    }
    if (code === 'MULTIPLE_API_ERRORS' && Array.isArray(e.data)) {
      const parts = e.data.map((item: unknown) =>
        describeCode(errorCodeOf(item) ?? 'ERROR', fieldsOf(item, messageOf(item))),
      );
      return new UpstreamError(`Salesforce rejected ${ctx.what}: ${parts.join('; ')}.`, {
        ...base,
        retryable: false,
      });
    }
    const retryable =
      (status !== undefined && (status >= 500 || status === 429)) || RETRYABLE_CODES.has(code);
    const fields = fieldsOf(e.data, rawMessage);
    // A long text area (Description, a Chatter body) may be selected, never filtered or sorted on.
    const unqueryable = /can not be (filtered|sorted) in a query call/.exec(rawMessage)?.[1];
    const described = /^ERROR_HTTP_\d{3}$/.test(code)
      ? `HTTP ${status}`
      : unqueryable && fields.length > 0
        ? `field ${fields.join(', ')} can not be ${unqueryable} in a query (a long text area: select it instead)`
        : describeCode(code, fields);
    return new UpstreamError(
      retryable && ctx.nonIdempotent
        ? `Salesforce failed during ${ctx.what}${on} (${described}); the record may or may not exist, check before trying again.`
        : `Salesforce rejected ${ctx.what}${on}: ${described}.`,
      { ...base, retryable },
    );
  };

  /** Run one Salesforce exchange: session, refresh guard, timeout, abort, error mapping. */
  const call = async <T>(
    ctx: OperationContext,
    options: RequestOptions | undefined,
    fn: (conn: Connection) => Promise<T>,
  ): Promise<T> => {
    if (closed) throw new FraudgateError('INTERNAL', 'The Salesforce client is closed.');
    const state: CallState = { refreshes: 0, refreshLoop: false };
    const signal = options?.signal;
    if (signal?.aborted) {
      throw new UpstreamError(`The Salesforce call (${ctx.what}) was cancelled.`, {
        service: SERVICE,
        retryable: true,
      });
    }
    const work = callState.run(state, async () => fn(await ensureSession()));
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const guards = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new UpstreamError(
            ctx.nonIdempotent
              ? `Salesforce did not answer ${ctx.what} within ${timeoutMs} ms; the record may or may not exist, check before trying again.`
              : `Salesforce did not answer ${ctx.what} within ${timeoutMs} ms; try again shortly.`,
            { service: SERVICE, retryable: !ctx.nonIdempotent, detail: `timeout after ${timeoutMs} ms` },
          ),
        );
      }, timeoutMs);
      if (signal) {
        onAbort = () =>
          reject(
            new UpstreamError(`The Salesforce call (${ctx.what}) was cancelled.`, {
              service: SERVICE,
              retryable: true,
            }),
          );
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    // jsforce cannot be cancelled: if we stop waiting, its eventual rejection must not go unhandled.
    work.catch(() => undefined);
    try {
      return await Promise.race([work, guards]);
    } catch (error) {
      throw mapError(error, ctx, state);
    } finally {
      clearTimeout(timer);
      if (signal && onAbort) signal.removeEventListener('abort', onAbort);
    }
  };

  /** `call` plus retries with backoff and jitter; only for idempotent operations. */
  const callIdempotent = async <T>(
    ctx: OperationContext,
    options: RequestOptions | undefined,
    fn: (conn: Connection) => Promise<T>,
  ): Promise<T> => {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await call(ctx, options, fn);
      } catch (error) {
        const retry =
          error instanceof UpstreamError &&
          error.retryable &&
          error.upstreamCode !== 'REQUEST_LIMIT_EXCEEDED' &&
          attempt < maxRetries &&
          !options?.signal?.aborted;
        if (!retry) throw error;
        const delay = retryBaseDelayMs * 2 ** attempt * (0.5 + Math.random() / 2);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  };

  const checkName = (what: string, name: string) => {
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
      throw new InvalidInputError([
        { field: what, message: 'must be a Salesforce API name (letters, digits, _)' },
      ]);
    }
  };
  const checkId = (field: string, id: string) => {
    if (!isSalesforceId(id)) {
      throw new InvalidInputError([{ field, message: 'must be a 15- or 18-character Salesforce record id' }]);
    }
  };

  const stripAttributes = <T extends SalesforceRecord>(record: Record<string, unknown>): T => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(record)) {
      if (key === 'attributes') continue;
      out[key] =
        value && typeof value === 'object' && !Array.isArray(value) && 'attributes' in value
          ? stripAttributes(value as Record<string, unknown>)
          : value;
    }
    return out as T;
  };

  const withoutKeys = (record: SalesforceRecord, keys: string[]): Record<string, unknown> => {
    const lower = new Set(keys.map((k) => k.toLowerCase()));
    return Object.fromEntries(Object.entries(record).filter(([k]) => !lower.has(k.toLowerCase())));
  };

  const parseOrThrow = <S extends z.ZodType>(
    schema: S,
    value: unknown,
    ctx: OperationContext,
  ): z.infer<S> => {
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new UpstreamError(`Salesforce answered ${ctx.what} in an unexpected shape.`, {
        service: SERVICE,
        retryable: false,
        // Codes and paths only: zod's messages can echo what Salesforce sent, and detail reaches the ledger.
        detail: `${ctx.what}: ${describeShapeIssues(schema, parsed.error)}`,
      });
    }
    return parsed.data;
  };

  const toSaveResults = (raw: unknown, ctx: OperationContext): SalesforceSaveResult[] =>
    parseOrThrow(saveResultsSchema, raw, ctx).map((r) => ({
      id: r.id ?? '',
      success: r.success,
      ...(r.created === undefined ? {} : { created: r.created }),
      errors: (r.errors ?? []).map((err) => {
        const fields = err.fields ?? fieldsOf(err, err.message ?? '');
        // Salesforce's own text can echo values: only the code and field names are kept.
        return { statusCode: err.statusCode, message: describeCode(err.statusCode, fields), fields };
      }),
    }));

  const fetchPage = async (
    ctx: OperationContext,
    options: RequestOptions | undefined,
    start: { soql: string } | { cursor: string },
  ) => {
    const raw: unknown = await call(ctx, options, async (conn) =>
      'soql' in start
        ? await conn.query(start.soql, { autoFetch: false })
        : await conn.queryMore(start.cursor),
    );
    const page = parseOrThrow(queryResultSchema, raw, ctx);
    const locator = page.nextRecordsUrl?.split('/').pop();
    return {
      records: page.records,
      totalSize: page.totalSize,
      ...(page.done === false && locator ? { nextCursor: locator } : {}),
    };
  };

  const chunks = <T>(items: T[]): T[][] => {
    const out: T[][] = [];
    for (let i = 0; i < items.length; i += COLLECTION_LIMIT) out.push(items.slice(i, i + COLLECTION_LIMIT));
    return out;
  };

  /** One lookup's answer inside a composite response: its rows (every page), or the error Salesforce answered. */
  const lookupAnswer = async (
    l: SalesforceLookup,
    answer: z.infer<typeof compositeResultSchema>['compositeResponse'][number] | undefined,
    ctx: { what: string },
    options?: RequestOptions,
  ): Promise<SalesforceRecord[] | FraudgateError> => {
    if (!answer || answer.httpStatusCode >= 300) {
      const errors = subrequestErrorsSchema.safeParse(answer?.body);
      const code = (errors.success ? errors.data[0]?.errorCode : undefined) ?? 'UNKNOWN_EXCEPTION';
      // Salesforce's text can echo the looked-up values: only the code is kept.
      return new UpstreamError(`Salesforce refused the ${l.sobject} lookup (${code}).`, {
        service: SERVICE,
        status: answer?.httpStatusCode ?? 500,
        upstreamCode: code,
        retryable: (answer?.httpStatusCode ?? 500) >= 500,
      });
    }
    const first = parseOrThrow(queryResultSchema, answer.body, ctx);
    const rows = first.records.map((r) => stripAttributes<SalesforceRecord>(r));
    // More rows than one page: the rest come page by page, as `query` reads them.
    let cursor = first.done === false ? first.nextRecordsUrl?.split('/').pop() : undefined;
    while (cursor) {
      if (rows.length > maxQueryRecords) {
        return new UpstreamError(`The ${l.sobject} lookup matched more than ${maxQueryRecords} records.`, {
          service: SERVICE,
          retryable: false,
        });
      }
      const page = await fetchPage(ctx, options, { cursor });
      rows.push(...page.records.map((r) => stripAttributes<SalesforceRecord>(r)));
      cursor = page.nextCursor;
    }
    return rows;
  };

  const client: SalesforceClient = {
    async lookup<T extends SalesforceRecord = SalesforceRecord>(
      lookup: SalesforceLookup,
      options?: RequestOptions,
    ): Promise<T[]> {
      const values = [...new Set(lookup.values)];
      const rows: T[] = [];
      for (let i = 0; i < values.length; i += LOOKUP_VALUES_PER_QUERY) {
        rows.push(
          ...(await client.query<T>(
            lookupSoql(lookup, values.slice(i, i + LOOKUP_VALUES_PER_QUERY)),
            options,
          )),
        );
      }
      return rows;
    },

    async lookupTogether(lookups, options) {
      if (lookups.length === 0) return [];
      if (
        lookups.length > COMPOSITE_COLLECTIONS ||
        lookups.some((l) => new Set(l.values).size > LOOKUP_VALUES_PER_QUERY)
      ) {
        throw new InvalidInputError([
          {
            field: 'lookups',
            message: `at most ${COMPOSITE_COLLECTIONS} lookups of at most ${LOOKUP_VALUES_PER_QUERY} values`,
          },
        ]);
      }
      const compositeRequest = lookups.map((l, i) => ({
        method: 'GET',
        url: `/services/data/v${apiVersion}/query?q=${encodeURIComponent(lookupSoql(l, [...new Set(l.values)]))}`,
        referenceId: `q${i}`,
      }));
      const ctx = { what: `lookup ${lookups.map((l) => l.sobject).join(', ')}` };
      const body = JSON.stringify({ allOrNone: false, compositeRequest });
      const raw: unknown = await call(ctx, options, (conn) =>
        conn.request({
          method: 'POST',
          url: '/composite',
          body,
          headers: { 'content-type': 'application/json' },
        }),
      );
      const answers = parseOrThrow(compositeResultSchema, raw, ctx).compositeResponse;
      return Promise.all(lookups.map((l, i) => lookupAnswer(l, answers[i], ctx, options)));
    },

    async query<T extends SalesforceRecord = SalesforceRecord>(
      soql: string,
      options?: RequestOptions,
    ): Promise<T[]> {
      const ctx = { what: 'query' };
      const records: T[] = [];
      let page = await fetchPage(ctx, options, { soql });
      for (;;) {
        for (const r of page.records) records.push(stripAttributes<T>(r));
        if (records.length > maxQueryRecords) {
          throw new UpstreamError(
            `The query matched more than ${maxQueryRecords} records; narrow it or page through it with queryPage.`,
            { service: SERVICE, retryable: false },
          );
        }
        if (!page.nextCursor) return records;
        page = await fetchPage(ctx, options, { cursor: page.nextCursor });
      }
    },

    async queryPage<T extends SalesforceRecord = SalesforceRecord>(
      soqlOrCursor: { soql: string } | { cursor: string },
      options?: RequestOptions,
    ) {
      if ('cursor' in soqlOrCursor && !/^[A-Za-z0-9]+-\d+$/.test(soqlOrCursor.cursor)) {
        throw new InvalidInputError([
          { field: 'cursor', message: 'is not a cursor returned by a previous page' },
        ]);
      }
      const page = await fetchPage({ what: 'query' }, options, soqlOrCursor);
      return { ...page, records: page.records.map((r) => stripAttributes<T>(r)) };
    },

    async retrieve<T extends SalesforceRecord = SalesforceRecord>(
      sobject: string,
      id: string,
      options?: RequestOptions,
    ) {
      checkName('sobject', sobject);
      checkId('id', id);
      try {
        const raw: unknown = await call({ what: `retrieve ${sobject}`, sobject }, options, (conn) =>
          conn.sobject(sobject).retrieve(id),
        );
        if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
          throw new UpstreamError(`Salesforce answered retrieve ${sobject} in an unexpected shape.`, {
            service: SERVICE,
            retryable: false,
          });
        }
        return stripAttributes<T>(raw as Record<string, unknown>);
      } catch (error) {
        if (
          error instanceof UpstreamError &&
          (error.upstreamCode === 'NOT_FOUND' || error.upstreamCode === 'ENTITY_IS_DELETED')
        ) {
          return null;
        }
        throw error;
      }
    },

    async create(sobject, record, options) {
      checkName('sobject', sobject);
      const ctx = { what: `create ${sobject}`, sobject, nonIdempotent: true };
      // An explicit owner must not be overridden by assignment rules (§6).
      const headers: Record<string, string> = 'OwnerId' in record ? { 'Sforce-Auto-Assign': 'FALSE' } : {};
      const raw: unknown = await call(ctx, options, (conn) =>
        conn.sobject(sobject).create(withoutKeys(record, ['Id', 'attributes']), { headers }),
      );
      const result = parseOrThrow(saveResultSchema, raw, ctx);
      if (!result.success || !result.id) {
        const errors = toSaveResults([raw], ctx)[0]?.errors ?? [];
        throw new UpstreamError(
          `Salesforce rejected create ${sobject}: ${errors.map((e) => e.message).join('; ')}.`,
          {
            service: SERVICE,
            upstreamCode: errors[0]?.statusCode,
            retryable: false,
          },
        );
      }
      return { id: result.id };
    },

    async update(sobject, record, options) {
      checkName('sobject', sobject);
      checkId('Id', record.Id);
      const ctx = { what: `update ${sobject}`, sobject };
      try {
        await callIdempotent(ctx, options, (conn) =>
          conn.sobject(sobject).update({ ...withoutKeys(record, ['attributes']), Id: record.Id }),
        );
      } catch (error) {
        if (error instanceof UpstreamError && error.upstreamCode === 'NOT_FOUND') {
          throw new NotFoundError(`Salesforce has no ${sobject} with id ${record.Id}.`, error.detail);
        }
        throw error;
      }
    },

    async upsert(sobject, externalIdField, record, options) {
      checkName('sobject', sobject);
      checkName('externalIdField', externalIdField);
      const key = Object.keys(record).find((k) => k.toLowerCase() === externalIdField.toLowerCase());
      const value = key === undefined ? undefined : record[key];
      if ((typeof value !== 'string' || value === '') && typeof value !== 'number') {
        throw new InvalidInputError([
          { field: externalIdField, message: 'the record must carry the external id value' },
        ]);
      }
      const ctx = { what: `upsert ${sobject}`, sobject };
      // jsforce does not URL-encode the external id (§3.1): `a/b` or `x?y` would hit another URL.
      const url = `/sobjects/${sobject}/${externalIdField}/${encodeURIComponent(String(value))}`;
      const body = JSON.stringify(withoutKeys(record, [externalIdField, 'Id', 'attributes']));
      const raw: unknown = await callIdempotent(ctx, options, (conn) =>
        conn.request({ method: 'PATCH', url, body, headers: { 'content-type': 'application/json' } }),
      );
      const result = parseOrThrow(upsertResultSchema, raw, ctx);
      return { id: result.id, created: result.created };
    },

    async upsertMany(sobject, externalIdField, records, options) {
      checkName('sobject', sobject);
      checkName('externalIdField', externalIdField);
      const ctx = { what: `upsert ${sobject} records`, sobject };
      const results: SalesforceSaveResult[] = [];
      for (const chunk of chunks(records)) {
        const body = JSON.stringify({
          allOrNone: false,
          records: chunk.map((r) => ({
            attributes: { type: sobject },
            ...withoutKeys(r, ['Id', 'attributes']),
          })),
        });
        // An upsert by external id is idempotent, so a lost response may be retried like an update.
        const raw: unknown = await callIdempotent(ctx, options, (conn) =>
          conn.request({
            method: 'PATCH',
            url: `/composite/sobjects/${sobject}/${externalIdField}`,
            body,
            headers: { 'content-type': 'application/json' },
          }),
        );
        results.push(...toSaveResults(raw, ctx));
      }
      return results;
    },

    async updateMany(sobject, records, options) {
      checkName('sobject', sobject);
      records.forEach((r, i) => checkId(`records[${i}].Id`, r.Id));
      const ctx = { what: `update ${sobject} records`, sobject };
      const results: SalesforceSaveResult[] = [];
      for (const chunk of chunks(records)) {
        const raw: unknown = await callIdempotent(ctx, options, (conn) =>
          conn.sobject(sobject).update(
            chunk.map((r) => ({ ...withoutKeys(r, ['attributes']), Id: r.Id })),
            { allOrNone: false },
          ),
        );
        results.push(...toSaveResults(raw, ctx));
      }
      return results;
    },

    async createMany(sobject, records, options) {
      checkName('sobject', sobject);
      const ctx = { what: `create ${sobject} records`, sobject, nonIdempotent: true };
      const results: SalesforceSaveResult[] = [];
      for (const chunk of chunks(records)) {
        const raw: unknown = await call(ctx, options, (conn) =>
          conn.sobject(sobject).create(
            chunk.map((r) => withoutKeys(r, ['Id', 'attributes'])),
            { allOrNone: false },
          ),
        );
        results.push(...toSaveResults(raw, ctx));
      }
      return results;
    },

    async writeCollections(collections, options) {
      return (await client.writeThenLookup(collections, [], options)).saved;
    },

    async writeThenLookup(collections, lookups, options) {
      if (collections.length === 0 && lookups.length === 0) return { saved: [], found: [] };
      if (
        collections.length + lookups.length > COMPOSITE_COLLECTIONS ||
        collections.some((c) => c.records.length === 0 || c.records.length > COLLECTION_LIMIT)
      ) {
        throw new InvalidInputError([
          {
            field: 'collections',
            message: `at most ${COMPOSITE_COLLECTIONS} collections of 1 to ${COLLECTION_LIMIT} records and lookups in all`,
          },
        ]);
      }
      if (lookups.some((l) => new Set(l.values).size > LOOKUP_VALUES_PER_QUERY)) {
        throw new InvalidInputError([
          { field: 'lookups', message: `at most ${LOOKUP_VALUES_PER_QUERY} values a lookup` },
        ]);
      }
      const base = `/services/data/v${apiVersion}/composite/sobjects`;
      const compositeRequest = collections.map((c, i) => {
        checkName('sobject', c.sobject);
        if (c.op === 'upsert') checkName('externalIdField', c.externalIdField ?? '');
        const records = c.records.map((r, j) => {
          const fields = withoutKeys(r, ['Id', 'attributes']);
          if (c.op !== 'update') return { attributes: { type: c.sobject }, ...fields };
          checkId(`collections[${i}].records[${j}].Id`, r.Id ?? '');
          return { attributes: { type: c.sobject }, id: r.Id, ...fields };
        });
        return {
          method: c.op === 'create' ? 'POST' : 'PATCH',
          url: c.op === 'upsert' ? `${base}/${c.sobject}/${c.externalIdField}` : base,
          referenceId: `c${i}`,
          body: { allOrNone: true, records },
          // An explicit owner must not be overridden by assignment rules (§6).
          ...(c.records.some((r) => 'OwnerId' in r)
            ? { httpHeaders: { 'Sforce-Auto-Assign': 'FALSE' } }
            : {}),
        };
      });
      // Subrequests run in order: these queries see what the collections before them wrote.
      const queries = lookups.map((l, i) => ({
        method: 'GET',
        url: `/services/data/v${apiVersion}/query?q=${encodeURIComponent(lookupSoql(l, [...new Set(l.values)]))}`,
        referenceId: `q${i}`,
      }));
      const ctx = {
        what: `write ${collections.map((c) => `${c.op} ${c.sobject}`).join(', ')}`,
        // A create in the request makes a blind repeat unsafe; callers carry idempotency keys instead.
        nonIdempotent: collections.some((c) => c.op === 'create'),
      };
      // All or none: the request commits every write or none of them, so a group of writes (an
      // update and its Chatter post) can never land half, and a refused request changed nothing.
      const body = JSON.stringify({ allOrNone: true, compositeRequest: [...compositeRequest, ...queries] });
      const send = (conn: Connection) =>
        conn.request({
          method: 'POST',
          url: '/composite',
          body,
          headers: { 'content-type': 'application/json' },
        });
      const raw: unknown = await (ctx.nonIdempotent
        ? call(ctx, options, send)
        : callIdempotent(ctx, options, send));
      const answers = parseOrThrow(compositeResultSchema, raw, ctx).compositeResponse;
      const saved = collections.map((c, i) => {
        const answer = answers[i];
        // Per-record results, whatever the status: in an all-or-none request the collection that
        // failed carries its records' errors (the status Salesforce gives it there is undocumented).
        if (answer && (answer.httpStatusCode < 300 || saveResultsSchema.safeParse(answer.body).success))
          return toSaveResults(answer.body, ctx);
        // The whole subrequest was refused: every record of it carries that error.
        const errors = subrequestErrorsSchema.safeParse(answer?.body);
        const first = errors.success ? errors.data[0] : undefined;
        const statusCode = first?.errorCode ?? 'UNKNOWN_EXCEPTION';
        return c.records.map(() => ({
          id: '',
          success: false,
          errors: [{ statusCode, message: describeCode(statusCode, []), fields: [] }],
        }));
      });
      const found = await Promise.all(
        lookups.map((l, i) => lookupAnswer(l, answers[collections.length + i], ctx, options)),
      );
      return { saved, found };
    },

    async upsertAndRead<T extends SalesforceRecord = SalesforceRecord>(
      sobject: string,
      externalIdField: string,
      record: SalesforceRecord,
      select: readonly string[],
      options?: RequestOptions,
    ): Promise<{ id: string; created: boolean; row: T | undefined }> {
      const saved = await client.upsert(sobject, externalIdField, record, options);
      const rows = await client.lookup<T>({ sobject, field: 'Id', values: [saved.id], select }, options);
      return { ...saved, row: rows[0] };
    },

    async writeTogether(writes, options) {
      const packer = new CompositePacker<number>();
      if (!packer.tryAdd(writes.map((write, i) => ({ write, item: i })))) {
        throw new InvalidInputError([
          {
            field: 'writes',
            message: `must fit one composite request (${COMPOSITE_COLLECTIONS} collections)`,
          },
        ]);
      }
      const answers = await client.writeCollections(packer.requests(), options);
      const results: SalesforceSaveResult[] = [];
      packer.collections.forEach((collection, c) =>
        collection.items.forEach(({ item }, r) => {
          results[item] = answers[c]?.[r] ?? { id: '', success: false, errors: [] };
        }),
      );
      if (results.every((r) => r.success)) return results;
      // Atomic: nothing was written. The error is the record refused for its own sake.
      const refused = refusedRecord(results);
      const failed = refused >= 0 ? refused : results.findIndex((r) => !r.success);
      throw saveError(writes[failed] as SalesforceWrite, results[failed] as SalesforceSaveResult);
    },

    integrationUserId() {
      return conn?.userInfo?.id;
    },

    apiUsage() {
      const usage = conn?.limitInfo.apiUsage;
      return usage ? { used: usage.used, limit: usage.limit } : undefined;
    },

    async close() {
      closed = true;
    },
  };
  return client;
}
