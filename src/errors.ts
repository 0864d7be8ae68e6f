/**
 * The error vocabulary of fraudgate. Every expected failure is a `FraudgateError` with a stable
 * `code`; anything else thrown is a bug and is answered with a generic INTERNAL message.
 *
 * `message` is public: it reaches the model, so it must be actionable and must never contain
 * secrets, vendor response bodies or unmasked personal data. `detail` is private: it goes to the
 * log and the audit record only.
 */

export const ERROR_CODES = {
  /** The arguments or the configuration break a rule; the message names the field. */
  INVALID_INPUT: 'INVALID_INPUT',
  /** The principal may not do this (role, read-only mode, missing analyst identity, no approval channel). */
  FORBIDDEN: 'FORBIDDEN',
  /** fraudgate's own rate limit for this principal and tool; retry after `retry_after_ms`. */
  RATE_LIMITED: 'RATE_LIMITED',
  /** A human must approve this call; the result carries the approval id. */
  APPROVAL_PENDING: 'APPROVAL_PENDING',
  /** A human (or expiry) denied the approval; the call never reached the upstream. */
  APPROVAL_DENIED: 'APPROVAL_DENIED',
  /** The entity does not exist upstream (e.g. a Sift user with no scoreable events). */
  NOT_FOUND: 'NOT_FOUND',
  /** The call conflicts with current state (e.g. an approval already used). */
  CONFLICT: 'CONFLICT',
  /** An upstream API failed; `retryable` says whether trying again may help. */
  UPSTREAM_ERROR: 'UPSTREAM_ERROR',
  /** An upstream API throttled us after our retries were spent. */
  UPSTREAM_RATE_LIMITED: 'UPSTREAM_RATE_LIMITED',
  /** A bug in fraudgate. The public message is generic; the detail is in the log. */
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

export interface FraudgateErrorOptions {
  /** Whether repeating the same call later may succeed. */
  retryable?: boolean;
  /** Private detail for logs and audit only; never shown to the model. */
  detail?: string;
  /** Machine-readable extras that are safe to show (e.g. `retry_after_ms`, `approval_id`, `field`). */
  data?: Record<string, unknown>;
  cause?: unknown;
}

export class FraudgateError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly detail: string | undefined;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: FraudgateErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FraudgateError';
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.detail = options.detail;
    this.data = options.data ?? {};
  }
}

/** One issue found by validation: the dotted path of the field and the rule it broke. */
export interface FieldIssue {
  field: string;
  message: string;
}

/** Bad arguments or configuration. The public message lists every field and rule. */
export class InvalidInputError extends FraudgateError {
  readonly issues: FieldIssue[];
  constructor(issues: FieldIssue[], prefix = 'Invalid arguments') {
    const list = issues.map((i) => `${i.field || '(root)'}: ${i.message}`).join('; ');
    super(ERROR_CODES.INVALID_INPUT, `${prefix}: ${list}`, { data: { issues } });
    this.name = 'InvalidInputError';
    this.issues = issues;
  }
}

export type UpstreamService = 'sift' | 'segment' | 'salesforce';

export interface UpstreamErrorOptions {
  service: UpstreamService;
  /** HTTP status, when one was received. */
  status?: number;
  /** The vendor's own error code (Sift `status`, Salesforce `errorCode`, …), safe to show. */
  upstreamCode?: string | number;
  retryable: boolean;
  /** Milliseconds the upstream asked us to wait (Retry-After), when known. */
  retryAfterMs?: number;
  /** Private: vendor body excerpt, URL path, etc. Never shown to the model. */
  detail?: string;
  /** Upstream request id, for support tickets. */
  requestId?: string;
  cause?: unknown;
}

/**
 * The one error every API client raises. The public message says which service failed and what
 * to do; the vendor body (which can hold personal data) stays in `detail`.
 */
export class UpstreamError extends FraudgateError {
  readonly service: UpstreamService;
  readonly status: number | undefined;
  readonly upstreamCode: string | number | undefined;
  readonly retryAfterMs: number | undefined;
  readonly requestId: string | undefined;

  constructor(publicMessage: string, options: UpstreamErrorOptions) {
    const rateLimited =
      options.status === 429 ||
      options.upstreamCode === 60 ||
      options.upstreamCode === 'REQUEST_LIMIT_EXCEEDED';
    super(rateLimited ? ERROR_CODES.UPSTREAM_RATE_LIMITED : ERROR_CODES.UPSTREAM_ERROR, publicMessage, {
      retryable: options.retryable,
      detail: options.detail,
      cause: options.cause,
      data: {
        service: options.service,
        ...(options.status === undefined ? {} : { status: options.status }),
        ...(options.upstreamCode === undefined ? {} : { upstream_code: options.upstreamCode }),
        ...(options.retryAfterMs === undefined ? {} : { retry_after_ms: options.retryAfterMs }),
      },
    });
    this.name = 'UpstreamError';
    this.service = options.service;
    this.status = options.status;
    this.upstreamCode = options.upstreamCode;
    this.retryAfterMs = options.retryAfterMs;
    this.requestId = options.requestId;
  }
}

/** The entity asked for does not exist upstream. */
export class NotFoundError extends FraudgateError {
  constructor(message: string, detail?: string) {
    super(ERROR_CODES.NOT_FOUND, message, { detail });
    this.name = 'NotFoundError';
  }
}

/**
 * fraudgate's own store (PostgreSQL) could not be reached or dropped the connection (a restart, a
 * failover, `pg_terminate_backend`, a pool with no free connection in time): nothing was done, and
 * the same call later may succeed. Retryable, so the outbox retries the effect instead of
 * dead-lettering it and an agent is told to try again, never an INTERNAL.
 */
export class StoreUnavailableError extends FraudgateError {
  constructor(cause: unknown) {
    super(
      ERROR_CODES.UPSTREAM_ERROR,
      "fraudgate's store is unavailable, so nothing was done; try again shortly.",
      {
        retryable: true,
        detail: cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause),
        data: { dependency: 'store' },
        cause,
      },
    );
    this.name = 'StoreUnavailableError';
  }
}

/** Refused by policy, role or missing identity. The message says what to configure. */
export class ForbiddenError extends FraudgateError {
  constructor(message: string, detail?: string) {
    super(ERROR_CODES.FORBIDDEN, message, { detail });
    this.name = 'ForbiddenError';
  }
}

/** Turn anything thrown into a FraudgateError; unknown throwables become a generic INTERNAL. */
export function toFraudgateError(error: unknown): FraudgateError {
  if (error instanceof FraudgateError) return error;
  const detail =
    error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error);
  return new FraudgateError(
    ERROR_CODES.INTERNAL,
    'fraudgate hit an internal error; the operator can find details in the server log.',
    {
      detail,
      cause: error,
    },
  );
}
