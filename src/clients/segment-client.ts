/**
 * Segment client: identify/track through `@segment/analytics-node` 3.x (Tracking API) and trait reads
 * through a small fetch client for the Profile API. Contract: shared/contracts/segment.md.
 *
 * Delivery semantics. `identify`/`track` resolve only once the batch carrying the message got a 2xx.
 * A 2xx is not storage: Segment answers 200 to a wrong write key and drops the events (contract §1.5).
 * The library's per-call callback fires no earlier than ~300 ms after the call (a legacy delay in
 * analytics-core, contract §2.4), so completion is taken from the emitter instead: the library emits
 * `identify`/`track` (delivered) or `error` (`delivery_failure`) with the same Context right after
 * the batch settles, and the Context carries our messageId. Measured against the loopback emulator
 * (sequential tracks): defaults below (flushAt 15, flushInterval 20 ms) ~25 ms per call (~50 ms for
 * the first, connection set-up); flushAt 1 ~4 ms; the callback route ~300 ms; the library's default
 * flushInterval up to 10 s. 20 ms lets a burst of tool calls share one request at negligible cost.
 *
 * Time bound. The library retries on its own (5xx/408/429/network, backoff 1–2 s, 2–4 s, …; a 429
 * with Retry-After pauses the whole publisher without counting as a retry). A tool call must not
 * wait for all of that, so each call races a `deliveryTimeoutMs` deadline and then rejects with a
 * retryable UpstreamError carrying the last status seen for its batch. The library keeps the batch
 * and may still deliver it afterwards; we cap that tail by passing `maxTotalBackoffDuration` and
 * `maxRateLimitDuration` equal to the deadline, so background retries stop within one backoff
 * step of it. A late delivery is harmless: the caller's messageId is deterministic, so a retried
 * tool call is deduplicated by Segment. "Rejected" therefore means "not confirmed", not "not sent",
 * except for non-retryable rejections (400/401/403), which Segment never stored.
 *
 * The Regulations API is never called from here: a SUPPRESS regulation would blind fraud analytics.
 */
import type { Analytics } from '@segment/analytics-node';
import * as z from 'zod';
import { InvalidInputError, UpstreamError } from '../errors.ts';
import { describeShapeIssues } from './shape-issues.ts';
import type { RequestOptions, SegmentClient, SegmentMessage } from './types.ts';

export interface SegmentClientConfig {
  /** Tracking API write key (secret). */
  writeKey: string;
  /** Tracking API base URL. Default `https://api.segment.io` (EU: `https://events.eu1.segmentapis.com`). */
  host?: string;
  /** Events per batch. Default 15: a burst of tool calls shares one request. */
  flushAt?: number;
  /** Milliseconds a batch waits for company before it is sent. Default 20 (library default: 10 000). */
  flushInterval?: number;
  /** Counted library retries per batch (5xx, network, 429 without Retry-After). Default 3. */
  maxRetries?: number;
  /** Per-HTTP-request timeout inside the library. Default 5000 ms. */
  httpRequestTimeout?: number;
  /** Upper bound for one identify/track call, retries included. Default 15 000 ms. */
  deliveryTimeoutMs?: number;
  /**
   * Refuse messages whose JSON is larger than this before sending. Default 30 KiB: Segment's limit is
   * 32 KB per event, the library adds context/_metadata, and its own size guard is broken (an
   * oversized event fails its whole batch with 400, innocent events included).
   */
  maxEventBytes?: number;
  /** Profile API base URL. Default `https://profiles.segment.com` (EU: `https://profiles.euw1.segment.com`). */
  profileBaseUrl?: string;
  /** Unify space id the Profile API token belongs to. */
  spaceId: string;
  /** Profile API access token (secret; sent as the Basic username). */
  profileToken: string;
  /** Timeout for one Profile API request. Default 5000 ms. */
  profileTimeoutMs?: number;
  /** Bound for `close()` (closeAndFlush). Default 5000 ms. */
  closeTimeoutMs?: number;
}

/** Everything `createSegmentClient` resolved, for diagnostics (no secrets). */
export interface ResolvedSegmentSettings {
  host: string;
  flushAt: number;
  flushInterval: number;
  maxRetries: number;
  httpRequestTimeout: number;
  deliveryTimeoutMs: number;
  maxEventBytes: number;
  profileBaseUrl: string;
  profileTimeoutMs: number;
  closeTimeoutMs: number;
}

export const SEGMENT_DEFAULTS = {
  host: 'https://api.segment.io',
  flushAt: 15,
  flushInterval: 20,
  maxRetries: 3,
  httpRequestTimeout: 5000,
  deliveryTimeoutMs: 15_000,
  maxEventBytes: 30 * 1024,
  profileBaseUrl: 'https://profiles.segment.com',
  profileTimeoutMs: 5000,
  closeTimeoutMs: 5000,
} as const;

/** Segment documents messageId as "fewer than 100 characters". */
const MAX_MESSAGE_ID_LENGTH = 99;
/** Profile pages followed at most (200 traits each). */
const MAX_PROFILE_PAGES = 10;

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  /** Last non-2xx answer for the batch carrying this message, seen via `http_response`. */
  lastStatus?: number;
  retryAfterMs?: number;
}

const TraitsResponse = z
  .object({
    traits: z.record(z.string(), z.unknown()),
    cursor: z.looseObject({ has_more: z.boolean().optional(), next: z.string().optional() }).optional(),
  })
  .loose();

const ProfileErrorBody = z.object({ error: z.looseObject({ code: z.string() }) });

const BatchBody = z.object({ batch: z.array(z.looseObject({ messageId: z.string().optional() })) });

function retryAfterMs(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  const seconds = Number.parseInt(value, 10);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** Statuses on which repeating the same call later may succeed. */
function isRetryableStatus(status: number): boolean {
  return (
    status === 408 || status === 429 || status === 460 || (status >= 500 && status !== 501 && status !== 505)
  );
}

/** Turn a library delivery failure (`Error('[503] Service Unavailable')`, fetch errors, …) into our error. */
function deliveryError(kind: string, reason: unknown, waiter: Waiter | undefined): UpstreamError {
  const text = reason instanceof Error ? reason.message : String(reason);
  const detail = `segment ${kind} delivery failed: ${reason instanceof Error ? `${reason.name}: ${text}` : text}`;
  const statusMatch = /^\[(\d{3})\]/.exec(text);
  const status = statusMatch
    ? Number(statusMatch[1])
    : text === 'Rate limit duration exceeded'
      ? 429
      : undefined;
  if (status === undefined) {
    // fetch failed, request timeout, 'Flush timeout' (client closing): nothing says Segment refused it.
    return new UpstreamError(
      `Segment could not be reached to deliver the ${kind}; it was not confirmed. Retrying the call is safe.`,
      { service: 'segment', retryable: true, detail, cause: reason },
    );
  }
  const retryable = isRetryableStatus(status);
  let message: string;
  if (status === 400) {
    message = `Segment rejected the ${kind} batch as malformed or too large (HTTP 400); it was not stored. Do not retry it unchanged.`;
  } else if (status === 401 || status === 403) {
    // Segment answers a wrong write key 200 and drops the events (contract §1.5); the contract lists
    // 401 only as an injected fault. Kept for whatever answers one anyway (e.g. a proxy in front).
    message = `Segment refused the write key (HTTP ${status}); the operator must check the Segment write key configuration.`;
  } else if (status === 429) {
    message = `Segment is rate limiting fraudgate (HTTP 429); retry the call later (it is deduplicated by messageId).`;
  } else if (retryable) {
    message = `Segment failed to accept the ${kind} (HTTP ${status}); retrying the call later is safe.`;
  } else {
    message = `Segment refused the ${kind} (HTTP ${status}); retrying will not help.`;
  }
  return new UpstreamError(message, {
    service: 'segment',
    status,
    retryable,
    detail,
    cause: reason,
    ...(status === 429 && waiter?.retryAfterMs !== undefined ? { retryAfterMs: waiter.retryAfterMs } : {}),
  });
}

function checkMessage(message: SegmentMessage, payload: unknown, maxEventBytes: number): void {
  const issues: { field: string; message: string }[] = [];
  if (typeof message.userId !== 'string' || message.userId === '') {
    issues.push({ field: 'userId', message: 'must be a non-empty string' });
  }
  if (typeof message.messageId !== 'string' || message.messageId === '') {
    issues.push({ field: 'messageId', message: 'must be a non-empty string' });
  } else if (message.messageId.length > MAX_MESSAGE_ID_LENGTH) {
    issues.push({
      field: 'messageId',
      message: `must be shorter than ${MAX_MESSAGE_ID_LENGTH + 1} characters`,
    });
  }
  const bytes = Buffer.byteLength(JSON.stringify(payload) ?? '', 'utf8');
  if (bytes > maxEventBytes) {
    issues.push({
      field: 'message',
      message: `is ${bytes} bytes; Segment accepts about 32 KB per event (limit here ${maxEventBytes})`,
    });
  }
  if (issues.length > 0) throw new InvalidInputError(issues, 'Invalid Segment message');
}

/** Build the Segment client. Nothing is sent until the first call. */
export function createSegmentClient(config: SegmentClientConfig): SegmentClient & {
  readonly settings: ResolvedSegmentSettings;
} {
  const settings: ResolvedSegmentSettings = {
    host: config.host ?? SEGMENT_DEFAULTS.host,
    flushAt: config.flushAt ?? SEGMENT_DEFAULTS.flushAt,
    flushInterval: config.flushInterval ?? SEGMENT_DEFAULTS.flushInterval,
    maxRetries: config.maxRetries ?? SEGMENT_DEFAULTS.maxRetries,
    httpRequestTimeout: config.httpRequestTimeout ?? SEGMENT_DEFAULTS.httpRequestTimeout,
    deliveryTimeoutMs: config.deliveryTimeoutMs ?? SEGMENT_DEFAULTS.deliveryTimeoutMs,
    maxEventBytes: config.maxEventBytes ?? SEGMENT_DEFAULTS.maxEventBytes,
    profileBaseUrl: (config.profileBaseUrl ?? SEGMENT_DEFAULTS.profileBaseUrl).replace(/\/+$/, ''),
    profileTimeoutMs: config.profileTimeoutMs ?? SEGMENT_DEFAULTS.profileTimeoutMs,
    closeTimeoutMs: config.closeTimeoutMs ?? SEGMENT_DEFAULTS.closeTimeoutMs,
  };
  // Whole seconds in the library; round up so its own give-up point is never before our deadline.
  const libraryBoundSeconds = Math.max(1, Math.ceil(settings.deliveryTimeoutMs / 1000));
  // The library is loaded with the first message, not at start-up: most sessions never write to
  // Segment, and a stdio server should not pay its load time before answering `initialize`.
  let analytics: Analytics | undefined;
  let loading: Promise<Analytics> | undefined;
  const library = (): Promise<Analytics> =>
    (loading ??= import('@segment/analytics-node').then(({ Analytics: SegmentAnalytics }) => {
      analytics = new SegmentAnalytics({
        writeKey: config.writeKey,
        host: settings.host,
        flushAt: settings.flushAt,
        flushInterval: settings.flushInterval,
        maxRetries: settings.maxRetries,
        httpRequestTimeout: settings.httpRequestTimeout,
        maxTotalBackoffDuration: libraryBoundSeconds,
        maxRateLimitDuration: libraryBoundSeconds,
      });
      listen(analytics);
      return analytics;
    }));

  // FIFO per messageId: a re-run of the same tool call may be in flight twice; both settle.
  const waiters = new Map<string, Waiter[]>();
  let closed = false;

  const takeWaiter = (messageId: string | undefined): Waiter | undefined => {
    if (messageId === undefined) return undefined;
    const list = waiters.get(messageId);
    const waiter = list?.shift();
    if (list && list.length === 0) waiters.delete(messageId);
    return waiter;
  };

  const onDelivered = (ctx: { event: { messageId?: string } }) => takeWaiter(ctx.event.messageId)?.resolve();
  const listen = (analytics: Analytics) => {
    analytics.on('identify', onDelivered);
    analytics.on('track', onDelivered);
    analytics.on('error', (err) => {
      const event = err.ctx?.event;
      const waiter = takeWaiter(event?.messageId);
      waiter?.reject(deliveryError(event?.type ?? 'event', err.reason, waiter));
    });
    // Remember each pending message's last failing status so a deadline rejection can say "429" or "503".
    analytics.on('http_response', (res) => {
      if (res.status < 400 || waiters.size === 0) return;
      let parsed: z.infer<typeof BatchBody>;
      try {
        parsed = BatchBody.parse(JSON.parse(res.body));
      } catch {
        return;
      }
      for (const item of parsed.batch) {
        for (const waiter of (item.messageId && waiters.get(item.messageId)) || []) {
          waiter.lastStatus = res.status;
          waiter.retryAfterMs = retryAfterMs(res.headers['retry-after']);
        }
      }
    });
  };

  function deliver(
    kind: 'identify' | 'track',
    message: SegmentMessage,
    send: () => void,
    options: RequestOptions | undefined,
  ): Promise<void> {
    if (closed) {
      // The library silently drops calls after closeAndFlush (no callback, no error event).
      return Promise.reject(
        new UpstreamError('The Segment client is shutting down; the call was not sent. Retry it later.', {
          service: 'segment',
          retryable: true,
          detail: `call after close: messageId=${message.messageId}`,
        }),
      );
    }
    const signal = options?.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new UpstreamError(`The Segment ${kind} was cancelled before it was sent.`, {
          service: 'segment',
          retryable: true,
          detail: `aborted before send: ${String(signal.reason)}`,
        }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const started = Date.now();
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        resolve: () => {
          cleanup();
          resolve();
        },
        reject: (error) => {
          cleanup();
          reject(error);
        },
      };
      const drop = () => {
        const list = waiters.get(message.messageId);
        const index = list?.indexOf(waiter) ?? -1;
        if (list && index >= 0) list.splice(index, 1);
        if (list?.length === 0) waiters.delete(message.messageId);
      };
      const timer = setTimeout(() => {
        drop();
        const status = waiter.lastStatus;
        waiter.reject(
          new UpstreamError(
            `Segment did not confirm the ${kind} within ${settings.deliveryTimeoutMs} ms` +
              (status === undefined ? '' : ` (last answer: HTTP ${status})`) +
              '. It may still be delivered; retrying with the same messageId is safe.',
            {
              service: 'segment',
              retryable: true,
              ...(status === undefined ? {} : { status }),
              ...(waiter.retryAfterMs === undefined ? {} : { retryAfterMs: waiter.retryAfterMs }),
              detail: `delivery deadline after ${Date.now() - started} ms; messageId=${message.messageId}`,
            },
          ),
        );
      }, settings.deliveryTimeoutMs);
      const onAbort = () => {
        drop();
        waiter.reject(
          new UpstreamError(
            `The Segment ${kind} was cancelled before Segment confirmed it; it may still arrive.`,
            {
              service: 'segment',
              retryable: true,
              detail: `aborted after ${Date.now() - started} ms: ${String(signal?.reason)}`,
            },
          ),
        );
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = waiters.get(message.messageId) ?? [];
      list.push(waiter);
      waiters.set(message.messageId, list);
      try {
        send();
      } catch (error) {
        // analytics-node validates synchronously (e.g. traits not a plain object).
        drop();
        waiter.reject(
          new InvalidInputError(
            [
              {
                field: 'message',
                message: error instanceof Error ? error.message : 'rejected by the Segment library',
              },
            ],
            'Invalid Segment message',
          ),
        );
      }
    });
  }

  async function getProfileTraits(
    userId: string,
    options?: RequestOptions,
  ): Promise<Record<string, unknown> | null> {
    const path =
      `/v1/spaces/${encodeURIComponent(config.spaceId)}/collections/users/profiles/` +
      `user_id:${encodeURIComponent(userId)}/traits`;
    const authorization = `Basic ${Buffer.from(`${config.profileToken}:`).toString('base64')}`;
    const traits: Record<string, unknown> = {};
    let next: string | undefined;
    for (let page = 0; page < MAX_PROFILE_PAGES; page += 1) {
      const query = new URLSearchParams({ limit: '200', ...(next ? { next } : {}) });
      const body = await profileRequest(`${path}?${query}`, authorization, options);
      if (body === null) return null;
      Object.assign(traits, body.traits);
      if (!body.cursor?.has_more || !body.cursor.next) return traits;
      next = body.cursor.next;
    }
    return traits;
  }

  async function profileRequest(
    pathAndQuery: string,
    authorization: string,
    options: RequestOptions | undefined,
  ): Promise<z.infer<typeof TraitsResponse> | null> {
    const timeout = AbortSignal.timeout(settings.profileTimeoutMs);
    const signal = options?.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    // The path holds the user id: keep it (and never the token) to the private detail.
    const where = `GET ${pathAndQuery}`;
    let response: Response;
    try {
      response = await fetch(`${settings.profileBaseUrl}${pathAndQuery}`, {
        headers: { authorization, accept: 'application/json' },
        signal,
      });
    } catch (error) {
      const timedOut = timeout.aborted && !options?.signal?.aborted;
      throw new UpstreamError(
        timedOut
          ? `The Segment Profile API did not answer within ${settings.profileTimeoutMs} ms; retry later.`
          : options?.signal?.aborted
            ? 'The Segment Profile API request was cancelled.'
            : 'The Segment Profile API could not be reached; retry later.',
        { service: 'segment', retryable: true, detail: `${where}: ${String(error)}`, cause: error },
      );
    }
    const requestId = response.headers.get('request-id') ?? undefined;
    const text = await response.text().catch(() => '');
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    const common = {
      service: 'segment' as const,
      status: response.status,
      ...(requestId ? { requestId } : {}),
    };
    if (response.ok) {
      const parsed = TraitsResponse.safeParse(json);
      if (!parsed.success) {
        throw new UpstreamError('The Segment Profile API returned an unexpected response.', {
          ...common,
          retryable: false,
          // Codes and paths only: zod's messages and a map key's path can carry what Segment sent.
          detail: `${where}: ${describeShapeIssues(TraitsResponse, parsed.error)}`,
        });
      }
      return parsed.data;
    }
    const errorBody = ProfileErrorBody.safeParse(json);
    const code = errorBody.success ? errorBody.data.error.code : undefined;
    // Vendor bodies can echo identifiers: they go to the private detail only, truncated.
    const detail = `${where} -> ${response.status}: ${text.slice(0, 500)}`;
    // A 404 naming some other code (e.g. a wrong base URL answering 404) must not read as "no profile".
    if (response.status === 404 && (code === undefined || code === 'not_found')) return null;
    const options404 = { ...common, ...(code ? { upstreamCode: code } : {}), detail };
    if (response.status === 401 || response.status === 403) {
      throw new UpstreamError(
        `The Segment Profile API refused fraudgate's access token (HTTP ${response.status}); the operator must check the Profile API token and space id.`,
        { ...options404, retryable: false },
      );
    }
    if (response.status === 429) {
      const after = retryAfterMs(response.headers.get('retry-after'));
      throw new UpstreamError('The Segment Profile API is rate limiting fraudgate (HTTP 429); retry later.', {
        ...options404,
        retryable: true,
        ...(after === undefined ? {} : { retryAfterMs: after }),
      });
    }
    const retryable = isRetryableStatus(response.status);
    throw new UpstreamError(
      `The Segment Profile API failed (HTTP ${response.status}${code ? `, ${code}` : ''})` +
        (retryable ? '; retry later.' : '; retrying will not help.'),
      { ...options404, retryable },
    );
  }

  return {
    settings,
    async identify(message, options) {
      const params = {
        userId: message.userId,
        messageId: message.messageId,
        traits: message.traits,
        ...(message.timestamp ? { timestamp: message.timestamp } : {}),
        ...(message.context ? { context: message.context } : {}),
      };
      checkMessage(message, params, settings.maxEventBytes);
      const segment = await library();
      return deliver('identify', message, () => segment.identify(params), options);
    },
    async track(message, options) {
      const params = {
        userId: message.userId,
        messageId: message.messageId,
        event: message.event,
        properties: message.properties,
        ...(message.timestamp ? { timestamp: message.timestamp } : {}),
        ...(message.context ? { context: message.context } : {}),
      };
      checkMessage(message, params, settings.maxEventBytes);
      const segment = await library();
      return deliver('track', message, () => segment.track(params), options);
    },
    getProfileTraits,
    async close() {
      if (closed) return;
      closed = true;
      // On timeout the library aborts in-flight retries and fails their events ('Flush timeout').
      await analytics?.closeAndFlush({ timeout: settings.closeTimeoutMs });
      for (const [, list] of waiters) {
        for (const waiter of list.splice(0)) {
          waiter.reject(
            new UpstreamError(
              'The Segment client closed before Segment confirmed delivery; it may still arrive.',
              {
                service: 'segment',
                retryable: true,
                detail: 'closed with pending deliveries',
              },
            ),
          );
        }
      }
      waiters.clear();
    },
  };
}
