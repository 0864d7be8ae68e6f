/**
 * Streamable HTTP transport on plain node:http: MCP at `/mcp` (stateful sessions with SSE, so
 * elicitation, progress and logging work; a request whose answer is the first thing the server
 * writes for it is answered as plain JSON instead, see `sendWebResponse`), `/healthz`, `/readyz`,
 * `/metrics`, the RFC 9728 protected-resource metadata, and mount points (`extraHandlers`) for the
 * approval console.
 *
 * Security decisions, in request order:
 * - Host allow-list (DNS rebinding): localhost, 127.0.0.1, [::1], the public URL's host and
 *   `http.allowed_hosts`. Origin, when sent, must be the server's own origin, the public URL's, or
 *   listed in `http.allowed_origins`. Both → 403. `/healthz` and `/readyz` skip the Host check so
 *   orchestrator probes that address the pod by IP still work; they reveal nothing sensitive.
 * - Bearer token on every `/mcp` request (sessions are not authentication): 401 with
 *   `WWW-Authenticate: Bearer … resource_metadata="…"`; a genuine token without a fraudgate role → 403.
 * - Sessions live in the store's registry (./mcp-sessions.ts), so any replica serves any request and
 *   a session survives a restart. A session is bound to the principal (id, kind, role) that
 *   initialized it; any other principal presenting its id gets exactly the answer an unknown id gets
 *   (404), so ids cannot be probed. Caps per principal (429) and in total (503) answer JSON-RPC
 *   errors naming the limit. The store unreachable → 503 with a retryable JSON-RPC error.
 * - Bodies over `http.body_limit_bytes` → 413 with a JSON-RPC error body, never an HTML page.
 * - Fairness: each principal has an MCP request budget (`rate_limits.requests`, every JSON-RPC
 *   request of a POST counts, a batch of N costs N; answers awaited here, notifications and DELETE
 *   cost nothing; answers relayed to another replica take a separate `rate_limits.answers`) taken
 *   before the SDK dispatches anything: over it, 429 with Retry-After. Batches hold at most
 *   {@link MAX_BATCH_MESSAGES} messages (400). The
 *   access-log lines of those 429s, like refused tool calls' lines, go through a log budget
 *   (src/log-budget.ts). A request must arrive within `http.request_timeout_ms` (its headers within
 *   `http.headers_timeout_ms`), else 408; responses (SSE streams, calls waiting on an approval)
 *   are not limited.
 * - `/metrics`: open to loopback peers (a local Prometheus or sidecar); anyone else needs an admin token.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { isInitializeRequest, type RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { JWTVerifyGetKey } from 'jose';
import { createAuthenticator, type Authenticator, type AuthResult } from '../auth/authenticator.ts';
import { createLogBudget } from '../log-budget.ts';
import { createRateLimiter, type RateLimitDecision } from '../governance/rate-limit.ts';
import { SHARED_STORE_RETRY_MS } from '../governance/refusal-budget.ts';
import { createMetrics, type Metrics } from '../metrics.ts';
import type { Runtime } from '../runtime.ts';
import { createMcpServer } from '../server.ts';
import type { Principal } from '../tool.ts';
import { isObject } from '../is-object.ts';
import {
  createMcpSessionManager,
  isRequestShaped,
  SessionCapError,
  SessionStoreUnavailableError,
  type LiveSession,
} from './mcp-sessions.ts';
import { malformedRequestAnswer } from './malformed-request.ts';
import { readRequestBody } from './request-body.ts';

/** A mounted handler (e.g. the console): returns true when it answered the request. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/** What a handler factory gets: the authenticator the MCP endpoint uses, and the server's URL. */
export interface HttpHandlerContext {
  authenticator: Authenticator;
  url: string;
  /** Browser origins this server accepts (lower-case): its own, `public_url`'s, `http.allowed_origins`. */
  allowedOrigins: ReadonlySet<string>;
}

export interface HttpServerOptions {
  /** Default: `runtime.config.http.host` / `.port` (0 = any free port). */
  host?: string;
  port?: number;
  /** Sandbox mode only: an admin bearer token (FRAUDGATE_DEV_TOKEN or a random one). Ignored in live mode. */
  devToken?: string;
  /** Default: built from `runtime.config.auth` (API key hashes, JWT) plus the dev token. */
  authenticator?: Authenticator;
  /** JWT verification keys instead of fetching `auth.jwt.jwks_url` (tests, air-gapped deployments). */
  jwks?: JWTVerifyGetKey;
  /** How long an upstream probe's answer is reused (default 5 s; 0 probes on every request). */
  upstreamProbeTtlMs?: number;
  /** How long one store (and Redis) ping answers `/readyz` (default 1 s; see READINESS_PROBE_TTL_MS). */
  readinessProbeTtlMs?: number;
  metrics?: Metrics;
  /**
   * How long a request (its headers) may take to arrive: default `http.request_timeout_ms`,
   * `http.headers_timeout_ms`.
   */
  requestTimeoutMs?: number;
  headersTimeoutMs?: number;
  /** Tried in order before 404; a factory receives the authenticator (the console signs in with it). */
  extraHandlers?: HttpHandler[] | ((context: HttpHandlerContext) => HttpHandler[]);
}

export interface HttpServerHandle {
  /** Base URL, e.g. http://127.0.0.1:8787 */
  url: string;
  /** The MCP endpoint: `${url}/mcp`. */
  mcpUrl: string;
  authenticator: Authenticator;
  metrics: Metrics;
  /** Open MCP sessions in the registry (every replica's). */
  sessionCount(): Promise<number>;
  /** Run one reaper tick now (tests; the server runs it on a timer). */
  sweepSessions(): Promise<void>;
  /**
   * Stop accepting, let in-flight calls finish (up to `http.shutdown_grace_ms`), then drop this
   * process's live session objects; the registry keeps the sessions for other replicas or a restart.
   */
  close(): Promise<void>;
}

/** What a request's handlers learn that its access-log line reports. */
interface RequestContext {
  principal?: string;
  /** The request path, once routing has parsed it. */
  path?: string | undefined;
  /** Refused by the request budget or the batch cap: its line goes through the log budget. */
  refused?: boolean;
}

/**
 * The most JSON-RPC messages one POST may carry. MCP 2025-06-18 removed batching (the SDK's client
 * never sends one); older clients may, but not the SDK's 100 at once, each answered in full.
 */
export const MAX_BATCH_MESSAGES = 20;

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];
const PRM_PATH = '/.well-known/oauth-protected-resource/mcp';

const jsonRpcError = (code: number, message: string) => ({
  jsonrpc: '2.0',
  error: { code, message },
  id: null,
});

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

const isLoopbackAddress = (address: string | undefined) =>
  !!address && (address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.'));

const PLAIN_PATH = /^\/[A-Za-z0-9_\-/]*$/;

/** The request path, or undefined when the request target is not a URL (e.g. `GET http://[bad`). */
function pathOf(req: IncomingMessage): string | undefined {
  // The common target (`/mcp`): nothing a URL parser would change (no dots, escapes, query).
  if (req.url !== undefined && PLAIN_PATH.test(req.url)) return req.url;
  try {
    return new URL(req.url ?? '/', 'http://placeholder').pathname;
  } catch {
    return undefined;
  }
}

function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

/**
 * How long one round of upstream probes answers `/readyz` and `/metrics`. `/readyz` needs no token,
 * so a flood of it must not become a flood of connects to the vendors: at most one round (three
 * connects) per this period.
 */
const UPSTREAM_PROBE_TTL_MS = 5_000;

/**
 * How long one ping of the store (and Redis) answers `/readyz`. It needs no token, and each ping
 * takes one of the pool's connections: uncached, a flood of it would queue the calls' own
 * statements behind pings. Requests while a ping is out, or within this long after it answered,
 * share it.
 */
const READINESS_PROBE_TTL_MS = 1_000;

const UPSTREAMS = ['sift', 'segment', 'salesforce'] as const;
type UpstreamReachability = Record<(typeof UPSTREAMS)[number], 'ok' | 'unreachable'>;

/** TCP reachability only: no request reaches the upstream (or the emulators' journals), no secret is sent. */
function reachable(url: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      resolve(false);
      return;
    }
    const port = Number(target.port) || (target.protocol === 'https:' ? 443 : 80);
    const socket = connect({ host: target.hostname.replace(/^\[|\]$/g, ''), port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** What the SDK's web-standard transport reads of a request whose body it is given parsed. */
type ParsedBodyRequest = Pick<Request, 'method' | 'url' | 'headers'>;

/**
 * The Node request as the SDK's web-standard transport sees it; every caller passes the body
 * parsed. Method, URL and real `Headers` only, not a full `Request` (URL parsing, an AbortSignal
 * and webidl checks on every call, more than the routing costs): the transport of SDK 1.32.2 (pinned)
 * reads nothing else when it gets `parsedBody` (its GET and DELETE paths read only headers). A client
 * that goes away is seen by `sendWebResponse`, which cancels the response stream.
 */
function toWebRequest(req: IncomingMessage): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === 'string') headers.set(name, value);
    else if (Array.isArray(value)) for (const v of value) headers.append(name, v);
  }
  const request: ParsedBodyRequest = {
    method: req.method ?? 'GET',
    url: `http://fraudgate.internal${req.url ?? '/mcp'}`,
    headers,
  };
  return request as Request;
}

/** How the SDK frames a message on an SSE stream without an event store (no `id:` line). */
const SSE_MESSAGE_PREFIX = Buffer.from('event: message\ndata: ');
const SSE_EVENT_END = Buffer.from('\n\n');

/** The JSON of one SSE message event as the SDK writes it, or undefined when the chunk is framed otherwise. */
function sseMessageData(chunk: Uint8Array): Uint8Array | undefined {
  const prefix = SSE_MESSAGE_PREFIX.length;
  const end = chunk.length - SSE_EVENT_END.length;
  if (end <= prefix) return undefined;
  if (Buffer.compare(SSE_MESSAGE_PREFIX, chunk.subarray(0, prefix)) !== 0) return undefined;
  if (Buffer.compare(SSE_EVENT_END, chunk.subarray(end)) !== 0) return undefined;
  const data = chunk.subarray(prefix, end);
  // One event, one line of JSON: a newline inside would mean more than one event in the chunk.
  return data.includes(0x0a) ? undefined : data;
}

/**
 * Streams a Web `Response` (JSON or SSE) to the Node response; resolves when it has ended.
 *
 * `answeredFirst`: for a POST carrying one request, tells whether the first message the server
 * wrote on that request's stream was its answer. Then the stream holds nothing else (the SDK ends
 * it after the answer), and the answer goes out as a plain `application/json` body, which the
 * Streamable HTTP spec lets the server choose per request: one write, a Content-Length, and no
 * SSE framing for the client to parse. Anything written before the answer (progress, an
 * elicitation) keeps the stream SSE from its first byte, as before.
 */
async function sendWebResponse(
  res: ServerResponse,
  response: Response,
  answeredFirst?: () => boolean,
): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (!response.body) {
    res.writeHead(response.status, headers);
    res.end();
    return;
  }
  const reader = response.body.getReader();
  // The client went away: cancelling lets the transport drop the stream (its cancel callback).
  const cancel = () => void reader.cancel().catch(() => {});
  res.once('close', cancel);
  try {
    const sse = headers['content-type']?.startsWith('text/event-stream') === true;
    if (answeredFirst && sse) {
      // Headers wait for the first event: until then the body could still become plain JSON.
      const first = await reader.read();
      if (first.done || res.destroyed) {
        if (!res.headersSent) res.writeHead(response.status, headers);
        return;
      }
      const data = answeredFirst() ? sseMessageData(first.value) : undefined;
      if (data) {
        delete headers['content-type'];
        res.writeHead(response.status, {
          ...headers,
          'content-type': 'application/json',
          'cache-control': 'no-store',
          'content-length': String(data.length),
        });
        res.end(data);
        return;
      }
      res.writeHead(response.status, headers);
      res.write(first.value);
    } else {
      res.writeHead(response.status, headers);
      // A stream (GET) may stay quiet for long: the client learns it is open from the headers.
      res.flushHeaders();
    }
    for (;;) {
      const { done, value } = await reader.read();
      if (done || res.destroyed) break;
      res.write(value);
    }
  } catch {
    // The stream was cancelled or errored: the response just ends.
  } finally {
    res.off('close', cancel);
    res.end();
  }
}

/** The id of the one JSON-RPC request a POST body carries; undefined for batches and other bodies. */
function soleRequestId(body: unknown): RequestId | undefined {
  return isRequestShaped(body) ? body.id : undefined;
}

/** A JSON-RPC error answered with 503 that tells the client to retry (after `retryAfterSeconds`). */
const retryLater = (
  res: ServerResponse,
  message: string,
  retryAfterSeconds: number,
  headers: Record<string, string> = {},
) =>
  sendJson(
    res,
    503,
    { jsonrpc: '2.0', error: { code: -32000, message, data: { retryable: true } }, id: null },
    { ...headers, 'retry-after': String(retryAfterSeconds) },
  );

const storeUnavailable = (res: ServerResponse) =>
  retryLater(res, 'The session store is unavailable; retry in a few seconds.', 5);

/** Start the HTTP server; resolves once it listens. */
export async function startHttpServer(
  runtime: Runtime,
  options: HttpServerOptions = {},
): Promise<HttpServerHandle> {
  const { config, logger } = runtime;
  const httpConfig = config.http;
  const host = options.host ?? httpConfig.host;
  const metrics = options.metrics ?? createMetrics({ toolNames: runtime.tools.map((t) => t.name) });
  // One per process, shared by a principal's sessions: refused calls' and over-budget requests' lines.
  // A flood that stops still gets its summary, within a minute and ten seconds of its start.
  const logBudget = createLogBudget({ logger, bucket: config.rate_limits.refusals, summaryEveryMs: 10_000 });
  const sessions = createMcpSessionManager({
    stores: runtime.sessions,
    createServer: (principal) =>
      createMcpServer({
        pipeline: runtime.pipeline,
        principal,
        logger,
        metrics: metrics.onToolCall,
        logBudget,
      }),
    logger,
    caps: { perPrincipal: httpConfig.max_sessions_per_principal, total: httpConfig.max_sessions },
    timeouts: { unusedMs: httpConfig.unused_session_timeout_ms, idleMs: httpConfig.idle_timeout_ms },
  });
  await sessions.ready;
  let openSessions = 0;
  let draining = false;

  // Filled in once listening: the URLs depend on the bound port.
  let mcpUrl = '';
  let prmUrl = '';
  let allowedHosts = new Set<string>();
  let allowedOrigins = new Set<string>();
  let authenticator: Authenticator = async () => ({ ok: false, reason: 'starting' });
  let extraHandlers: HttpHandler[] = [];

  metrics.gauge('fraudgate_pending_approvals', 'Approvals waiting for a human decision.', () =>
    runtime.approvals.count(['pending']),
  );
  metrics.gauge(
    'fraudgate_budget_pauses_active',
    'Blast-radius budgets paused until a human lifts them.',
    () => runtime.budgets.activeCount(),
  );
  // Read at scrape time from the last reaper tick: a scrape must not wait on the store.
  metrics.gauge('fraudgate_mcp_sessions', 'Open MCP sessions over HTTP (all replicas).', () => openSessions);

  const probeTtlMs = options.upstreamProbeTtlMs ?? UPSTREAM_PROBE_TTL_MS;
  let upstreamProbe: { at: number; answer: Promise<UpstreamReachability> } | undefined;
  /** The last round of upstream probes, or a new one when it is older than the TTL; callers share a round in flight. */
  function upstreams(): Promise<UpstreamReachability> {
    const now = performance.now();
    if (!upstreamProbe || now - upstreamProbe.at >= probeTtlMs) {
      const urls = {
        sift: config.sift.base_url,
        segment: config.segment.host,
        salesforce: config.salesforce.login_url,
      };
      const answer = Promise.all(UPSTREAMS.map((service) => reachable(urls[service]))).then(
        (up) =>
          Object.fromEntries(
            UPSTREAMS.map((service, i) => [service, up[i] ? 'ok' : 'unreachable']),
          ) as UpstreamReachability,
      );
      upstreamProbe = { at: now, answer };
    }
    return upstreamProbe.answer;
  }
  for (const service of UPSTREAMS) {
    metrics.gauge(
      'fraudgate_upstream_reachable',
      `Whether the upstream answered a TCP connect (1) or not (0); probed at most every ${probeTtlMs / 1000} s.`,
      async () => ((await upstreams())[service] === 'ok' ? 1 : 0),
      { service },
    );
  }

  const sweep = async () => {
    await sessions.sweep();
    openSessions = await sessions.count();
  };
  let sweeping = false;
  const reaper = setInterval(
    () => {
      if (sweeping) return;
      sweeping = true;
      sweep()
        .catch((error: unknown) =>
          logger.warn('session sweep failed; retrying on the next tick', {
            error: error instanceof Error ? error.message : String(error),
          }),
        )
        .finally(() => {
          sweeping = false;
        });
    },
    // Frequent enough that an unused session is gone within its timeout plus a quarter.
    Math.max(
      250,
      Math.min(
        10_000,
        Math.floor(Math.min(httpConfig.unused_session_timeout_ms, httpConfig.idle_timeout_ms) / 4),
      ),
    ),
  );
  reaper.unref();

  const unauthorized = (res: ServerResponse, result: Extract<AuthResult, { ok: false }> | undefined) => {
    if (result?.forbidden) {
      sendJson(
        res,
        403,
        { error: 'insufficient_scope', error_description: result.reason },
        {
          'www-authenticate': `Bearer error="insufficient_scope", error_description="${result.reason}", resource_metadata="${prmUrl}"`,
        },
      );
      return;
    }
    const description = result?.reason ?? 'missing bearer token';
    // RFC 6750 §3.1: no error code when the request carried no credentials at all.
    const challenge = result
      ? `Bearer error="invalid_token", error_description="${description}", resource_metadata="${prmUrl}"`
      : `Bearer resource_metadata="${prmUrl}"`;
    sendJson(
      res,
      401,
      { error: result ? 'invalid_token' : 'unauthorized', error_description: description },
      {
        'www-authenticate': challenge,
      },
    );
  };

  const authenticate = async (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => {
    const token = bearerToken(req);
    if (!token) {
      unauthorized(res, undefined);
      return undefined;
    }
    const result = await authenticator(token);
    if (!result.ok) {
      unauthorized(res, result);
      return undefined;
    }
    ctx.principal = result.principal.id;
    return result.principal;
  };

  const budgets = { requests: config.rate_limits.requests, answers: config.rate_limits.answers };
  type BudgetName = keyof typeof budgets;
  // While the shared store (Redis) fails, budgets in this process (one per replica): never open, and
  // pings still answer during the outage. Single flight: the first failed take puts every message on
  // the local budgets for SHARED_STORE_RETRY_MS; then one background ping asks the store again while
  // messages keep using them, so a hung Redis costs a message its command timeout at most once (the
  // takes already sent when it hung), not once per message per pause.
  const localRequests = createRateLimiter();
  let localRequestsUntil = 0;
  let storeProbe: Promise<void> | undefined;
  let storeFailed = false;
  const probeStore = (shared: typeof runtime.rateLimiter) => {
    storeProbe ??= shared
      .ping()
      .then((ok) => {
        if (ok) {
          storeFailed = false;
          logger.info('rate-limit store answers again; request budgets are shared again');
        } else localRequestsUntil = Date.now() + SHARED_STORE_RETRY_MS;
      })
      .finally(() => (storeProbe = undefined));
  };
  /** Takes `cost` tokens from the principal's `name` budget (`requests` or `answers`, one bucket each). */
  async function takeBudget(
    principal: Principal,
    name: BudgetName,
    cost: number,
  ): Promise<RateLimitDecision> {
    const key = `${name}\u0000${principal.id}`;
    const bucket = budgets[name];
    const shared = runtime.rateLimiter;
    if (shared.takeNow) return shared.takeNow(key, bucket, cost);
    if (storeFailed) {
      if (!storeProbe && Date.now() >= localRequestsUntil) probeStore(shared);
      return localRequests.takeNow(key, bucket, cost);
    }
    try {
      return await shared.take(key, bucket, cost);
    } catch (error) {
      if (!storeFailed) {
        storeFailed = true;
        localRequestsUntil = Date.now() + SHARED_STORE_RETRY_MS;
        logger.warn('rate-limit store unavailable; request budgets are kept in this process for now', {
          error: String(error),
        });
      }
      return localRequests.takeNow(key, bucket, cost);
    }
  }

  /**
   * Takes the POST's requests (GET: one) from the principal's request budget; false when it
   * answered: 429 over the budget, 400 for a batch over {@link MAX_BATCH_MESSAGES} (which costs one).
   * Requests (a method and an id) cost one each, and so does every client answer except one to a
   * request a call on this replica waits for and one addressed to another replica: an answer
   * relayed there costs a NOTIFY that every replica parses, so it takes one from the principal's
   * separate answers budget (`rate_limits.answers`; it pays for finding the session too), where a
   * flood of requests cannot starve a human's confirmation that landed on the wrong replica, and
   * forged answers stay bounded. Notifications (cancelled, initialized, progress), DELETE and the
   * awaited answers are free on a session this replica serves, so a spent budget cannot turn a
   * human's confirmation into a timeout or keep a call from being cancelled; on a session unknown
   * here finding it is a registry read, which costs one.
   */
  async function withinBudget(
    res: ServerResponse,
    ctx: RequestContext,
    principal: Principal,
    method: string,
    sessionId: string | undefined,
    body: unknown,
  ): Promise<boolean> {
    const messages: unknown[] = Array.isArray(body) ? body : [body];
    const size = messages.length;
    const overCap = size > MAX_BATCH_MESSAGES;
    const notification = (m: unknown) => isObject(m) && typeof m.method === 'string' && !('id' in m);
    const elsewhere = (m: unknown) => method === 'POST' && sessions.addressedElsewhere(m);
    const paid = (m: unknown) =>
      !notification(m) && !elsewhere(m) && !(sessionId !== undefined && sessions.awaitedHere(sessionId, m));
    let cost = overCap || method === 'GET' ? 1 : method === 'POST' ? messages.filter(paid).length : 0;
    const answerCost = overCap ? 0 : messages.filter(elsewhere).length;
    if (cost === 0 && answerCost === 0 && sessionId !== undefined && !sessions.knows(sessionId)) cost = 1;
    const free: RateLimitDecision = { allowed: true, retryAfterMs: 0, remaining: 0 };
    let name: BudgetName = 'requests';
    let decision = cost === 0 ? free : await takeBudget(principal, 'requests', cost);
    if (decision.allowed && answerCost > 0) {
      name = 'answers';
      cost = answerCost;
      decision = await takeBudget(principal, 'answers', answerCost);
    }
    const bucket = budgets[name];
    if (!decision.allowed || overCap) ctx.refused = true;
    if (decision.overCapacity) {
      // Waiting never admits it: say so instead of a Retry-After.
      const what = name === 'answers' ? 'answers for another replica' : 'requests';
      sendJson(
        res,
        400,
        jsonRpcError(
          -32600,
          `Invalid Request: this batch holds ${cost} ${what} and rate_limits.${name} allows at most ` +
            `${bucket.capacity} at once; send at most ${bucket.capacity} per POST.`,
        ),
      );
      return false;
    }
    if (!decision.allowed) {
      const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
      const message =
        name === 'answers'
          ? `Too many answers relayed to other replicas from ${principal.id}: rate_limits.answers allows ` +
            `${bucket.capacity} at once and ${bucket.per_minute} a minute; retry in ${seconds} s.`
          : `Too many MCP requests from ${principal.id}: rate_limits.requests allows ${bucket.capacity} ` +
            `at once and ${bucket.per_minute} a minute (each request of a batch counts); retry in ${seconds} s.`;
      const error = {
        code: -32000,
        message,
        data: { retryable: true, retry_after_ms: decision.retryAfterMs },
      };
      // An error for each request, by its id (a batch is answered with an array, as JSON-RPC says;
      // its notifications get none), so the client can fail each pending request at once.
      // A batch without requests (answers, notifications) gets the error once, without an id.
      const answer =
        Array.isArray(body) && body.some(isRequestShaped)
          ? body.filter(isRequestShaped).map((m) => ({ jsonrpc: '2.0', error, id: m.id }))
          : { jsonrpc: '2.0', error, id: soleRequestId(body) ?? null };
      sendJson(res, 429, answer, { 'retry-after': String(seconds) });
      return false;
    }
    if (overCap) {
      sendJson(
        res,
        400,
        jsonRpcError(
          -32600,
          `Invalid Request: a batch holds at most ${MAX_BATCH_MESSAGES} messages (this one has ${size}); send fewer per POST.`,
        ),
      );
      return false;
    }
    return true;
  }

  async function handleMcp(req: IncomingMessage, res: ServerResponse, ctx: RequestContext) {
    const principal = await authenticate(req, res, ctx);
    if (!principal) return;
    const sessionHeader = req.headers['mcp-session-id'];
    const sessionId = Array.isArray(sessionHeader) ? sessionHeader[0] : sessionHeader;
    const method = req.method ?? 'GET';
    if (!['GET', 'POST', 'DELETE'].includes(method)) {
      sendJson(res, 405, jsonRpcError(-32000, 'Method not allowed'), { allow: 'GET, POST, DELETE' });
      return;
    }

    let body: unknown;
    if (method === 'POST') {
      const read = await readRequestBody(req, httpConfig.body_limit_bytes);
      if (read === 'too_large') {
        sendJson(
          res,
          413,
          jsonRpcError(-32600, `Request body exceeds ${httpConfig.body_limit_bytes} bytes`),
          {
            connection: 'close',
          },
        );
        res.once('finish', () => req.destroy());
        return;
      }
      const text = read.toString('utf8');
      try {
        body = JSON.parse(text);
      } catch {
        sendJson(res, 400, jsonRpcError(-32700, 'Parse error: the body is not valid JSON'));
        return;
      }
    }

    if (draining && !(sessionId !== undefined && sessions.answersOwnRequests(body))) {
      shuttingDown(res);
      return;
    }
    if (!(await withinBudget(res, ctx, principal, method, sessionId, body))) return;
    try {
      if (sessionId !== undefined) await continueSession(req, res, principal, sessionId, method, body);
      else await openSession(req, res, principal, method, body);
    } catch (error) {
      if (!(error instanceof SessionStoreUnavailableError)) throw error;
      logger.warn('session store unavailable', { error: error.message });
      storeUnavailable(res);
    }
  }

  async function continueSession(
    req: IncomingMessage,
    res: ServerResponse,
    principal: Principal,
    sessionId: string,
    method: string,
    body: unknown,
  ) {
    const session = await sessions.resolve(sessionId, principal);
    // A session of another principal answers exactly like an unknown one: nothing to probe.
    if (!session) {
      sendJson(res, 404, jsonRpcError(-32001, 'Session not found: start a new session with initialize'));
      return;
    }
    if (method === 'DELETE') {
      await sessions.terminate(sessionId);
      res.writeHead(200).end();
      return;
    }
    // A request that fails MCP's JSON-RPC schema (`_meta: null`): the SDK would answer -32700 without
    // its id; this names the field and carries the id, so the client knows which call failed.
    const malformed = method === 'POST' ? malformedRequestAnswer(body) : undefined;
    if (malformed) {
      sendJson(res, 400, malformed);
      return;
    }
    if (method === 'POST' && (await sessions.relayIfElsewhere(sessionId, body))) {
      res.writeHead(202).end();
      return;
    }
    const messages: unknown[] = Array.isArray(body) ? body : [body];
    await sessions.touch(session, method === 'POST' && messages.some(isRequestShaped));
    await serve(session, req, res, method, body);
  }

  async function serve(
    session: LiveSession,
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    body: unknown,
  ) {
    const counter = method === 'GET' ? 'streams' : 'calls';
    session[counter] += 1;
    const requestId = soleRequestId(body);
    try {
      const response = await session.transport.handleRequest(
        toWebRequest(req),
        body === undefined ? undefined : { parsedBody: body },
      );
      await sendWebResponse(
        res,
        response,
        requestId === undefined ? undefined : () => session.wire.answeredFirst(requestId),
      );
    } finally {
      // Forget what the transport noted per request (a batch's too: only a sole request is answered as JSON).
      if (requestId !== undefined) session.wire.forget(requestId);
      else if (Array.isArray(body))
        for (const m of body as unknown[]) if (isRequestShaped(m)) session.wire.forget(m.id);
      session[counter] -= 1;
      session.lastSeen = Date.now();
    }
  }

  async function openSession(
    req: IncomingMessage,
    res: ServerResponse,
    principal: Principal,
    method: string,
    body: unknown,
  ) {
    if (method !== 'POST' || !isInitializeRequest(body)) {
      sendJson(res, 400, jsonRpcError(-32000, 'Bad request: no session; send initialize first'));
      return;
    }
    let response: Response;
    try {
      response = await sessions.initialize(principal, body, toWebRequest(req));
    } catch (error) {
      if (!(error instanceof SessionCapError)) throw error;
      const { limit, open, max } = error.refusal;
      const waitSeconds = String(Math.ceil(httpConfig.unused_session_timeout_ms / 1000));
      if (limit === 'per_principal') {
        sendJson(
          res,
          429,
          jsonRpcError(
            -32000,
            `Too many open sessions for ${principal.id}: ${open} of http.max_sessions_per_principal = ${max}. ` +
              'Close sessions you no longer use (DELETE /mcp with their Mcp-Session-Id) or wait: ' +
              `sessions never used are closed after ${waitSeconds} s.`,
          ),
          { 'retry-after': waitSeconds },
        );
      } else {
        sendJson(
          res,
          503,
          jsonRpcError(-32000, `Too many open sessions (http.max_sessions = ${max}); try again later`),
          { 'retry-after': '30' },
        );
      }
      return;
    }
    openSessions += response.status === 200 ? 1 : 0;
    await sendWebResponse(res, response);
  }

  const readinessTtlMs = options.readinessProbeTtlMs ?? READINESS_PROBE_TTL_MS;
  type Dependencies = { store: 'ok' | 'unavailable'; redis: boolean | undefined };
  /** The ping in flight, or the last one with when it settled (the TTL runs from then). */
  let readinessProbe: { answer: Promise<Dependencies>; settledAt?: number } | undefined;
  /**
   * The last ping of the store and Redis while it is younger than the TTL, else a new one. A ping
   * still in flight is joined however long it takes: a slow store (a saturated pool) must not be
   * sent one more ping per TTL, each taking a connection the calls need.
   */
  function dependencies(): Promise<Dependencies> {
    const probe = readinessProbe;
    const fresh =
      probe && (probe.settledAt === undefined || performance.now() - probe.settledAt < readinessTtlMs);
    if (fresh) return probe.answer;
    const answer = Promise.all([
      runtime.store.ping().then(
        () => 'ok' as const,
        () => 'unavailable' as const,
      ),
      config.rate_limits.store === 'redis' ? runtime.rateLimiter.ping() : Promise.resolve(undefined),
    ]).then(([store, redis]) => ({ store, redis }));
    const next: { answer: Promise<Dependencies>; settledAt?: number } = { answer };
    readinessProbe = next;
    const settled = () => {
      next.settledAt = performance.now();
    };
    answer.then(settled, settled);
    return answer;
  }

  // Connection: close, so a keep-alive client reconnects, through the load balancer, to another replica.
  const shuttingDown = (res: ServerResponse) =>
    retryLater(res, 'Server is shutting down; retry in a moment.', 1, { connection: 'close' });

  async function handleReady(res: ServerResponse) {
    const [{ store, redis }, upstream] = await Promise.all([dependencies(), upstreams()]);
    const ledger = runtime.audit.health();
    const checks = {
      store,
      // Calls are refused while the ledger cannot write (fail closed); say so to the load balancer.
      audit: ledger.ok ? 'ok' : 'failing',
      // Shared rate-limit buckets: while Redis is down every call is refused (retryable, audited).
      ...(redis === undefined ? {} : { redis: redis ? 'ok' : 'unavailable' }),
    };
    // Readiness is what this replica needs to serve. A vendor outage is every replica's: failing
    // readiness on it would take them all (console and approvals too) out of the load balancer, so
    // upstreams are reported, not checked.
    const ok = Object.values(checks).every((v) => v === 'ok') && !draining;
    sendJson(res, ok ? 200 : 503, {
      status: ok ? 'ready' : draining ? 'draining' : 'not_ready',
      checks,
      upstreams: upstream,
    });
  }

  async function handleMetrics(req: IncomingMessage, res: ServerResponse, ctx: RequestContext) {
    if (!isLoopbackAddress(req.socket.remoteAddress)) {
      const principal = await authenticate(req, res, ctx);
      if (!principal) return;
      if (principal.role !== 'admin') {
        sendJson(res, 403, {
          error: 'forbidden',
          error_description: 'metrics need an admin token from a non-loopback address',
        });
        return;
      }
    }
    res.writeHead(200, {
      'content-type': 'text/plain; version=0.0.4; charset=utf-8',
      'cache-control': 'no-store',
    });
    res.end(await metrics.render());
  }

  function protectedResourceMetadata() {
    const jwt = config.auth.jwt;
    return {
      resource: mcpUrl,
      resource_name: 'fraudgate',
      authorization_servers: jwt ? (jwt.authorization_servers ?? [jwt.issuer]) : [],
      bearer_methods_supported: ['header'],
    };
  }

  // Host header → allowed: clients send the same few values, and parsing one is a URL parse.
  const hostVerdicts = new Map<string, boolean>();
  function hostAllowed(hostHeader: string): boolean {
    let verdict = hostVerdicts.get(hostHeader);
    if (verdict === undefined) {
      let hostname: string;
      try {
        hostname = new URL(`http://${hostHeader}`).hostname.toLowerCase();
      } catch {
        hostname = '';
      }
      verdict = allowedHosts.has(hostname);
      // Anyone can send any Host: the memo stays small.
      if (hostVerdicts.size >= 64) hostVerdicts.clear();
      hostVerdicts.set(hostHeader, verdict);
    }
    return verdict;
  }

  async function route(req: IncomingMessage, res: ServerResponse, ctx: RequestContext) {
    const path = pathOf(req);
    ctx.path = path;
    if (path === undefined) {
      sendJson(res, 400, jsonRpcError(-32600, 'Bad request: the request target is not a valid URL'));
      return;
    }
    const probe = path === '/healthz' || path === '/readyz';
    if (!probe) {
      if (!hostAllowed(req.headers.host ?? '')) {
        sendJson(res, 403, jsonRpcError(-32000, 'Forbidden: Host header not allowed'));
        return;
      }
      const origin = req.headers.origin;
      if (origin !== undefined && !allowedOrigins.has(origin.toLowerCase())) {
        sendJson(res, 403, jsonRpcError(-32000, 'Forbidden: Origin not allowed'));
        return;
      }
    }
    if (draining) {
      // The load balancer must see the drain; a call in flight here may wait for its client's answer.
      if (path === '/readyz' && (req.method === 'GET' || req.method === 'HEAD')) return handleReady(res);
      if (path === '/mcp' && req.method === 'POST' && req.headers['mcp-session-id'] !== undefined)
        return handleMcp(req, res, ctx); // refused there unless it answers this replica's own request
      return shuttingDown(res);
    }
    if (path === '/mcp') return handleMcp(req, res, ctx);
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (path === '/healthz') return sendJson(res, 200, { status: 'ok' });
      if (path === '/readyz') return handleReady(res);
      if (path === '/metrics') return handleMetrics(req, res, ctx);
      if (path === PRM_PATH) return sendJson(res, 200, protectedResourceMetadata());
    }
    for (const handler of extraHandlers) {
      if (await handler(req, res)) return;
    }
    sendJson(res, 404, { error: 'not_found' });
  }

  // One line per request at info; below that level the line is not even assembled.
  const logRequests = logger.enabled('info');
  // Timeouts cover receiving the request only: SSE streams and calls waiting on approvals go on.
  const headersTimeout = options.headersTimeoutMs ?? httpConfig.headers_timeout_ms;
  const timeouts = {
    requestTimeout: options.requestTimeoutMs ?? httpConfig.request_timeout_ms,
    headersTimeout,
    // How often Node looks for late requests: a late one gets its 408 within this after its timeout.
    connectionsCheckingInterval: Math.min(5_000, Math.ceil(headersTimeout / 2)),
  };
  const httpServer: Server = createServer(timeouts, (req, res) => {
    const started = performance.now();
    const ctx: RequestContext = {};
    res.once('close', () => {
      // A listener that threw here would be an uncaught exception: the whole server would stop.
      const status = res.statusCode;
      metrics.onHttpRequest(req.method ?? 'OTHER', status);
      if (!logRequests) return;
      if (ctx.refused && ctx.principal && !logBudget.allow(ctx.principal, `http_${status}`)) return;
      const path = ctx.path ?? pathOf(req) ?? '(invalid request target)';
      // Path only: query strings can carry tokens or personal data. Never headers.
      logger.info('http request', {
        method: req.method,
        path,
        status,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
        ...(ctx.principal ? { principal: ctx.principal } : {}),
      });
    });
    route(req, res, ctx).catch((error: unknown) => {
      logger.error('http handler failed', { error: error instanceof Error ? error.message : String(error) });
      if (!res.headersSent) sendJson(res, 500, jsonRpcError(-32603, 'Internal server error'));
      else res.end();
    });
  });

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(options.port ?? httpConfig.port, host, () => {
      httpServer.off('error', reject);
      resolve();
    });
  });
  const address = httpServer.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const localHost = ['0.0.0.0', '::'].includes(address.address) ? '127.0.0.1' : urlHost;
  const url = `http://${localHost}:${address.port}`;
  const publicBase = httpConfig.public_url?.replace(/\/+$/, '');
  mcpUrl = `${publicBase ?? url}/mcp`;
  prmUrl = `${publicBase ?? url}${PRM_PATH}`;
  allowedHosts = new Set([...LOOPBACK_HOSTS, ...httpConfig.allowed_hosts.map((h) => h.toLowerCase())]);
  if (!['0.0.0.0', '::'].includes(address.address)) allowedHosts.add(localHost.toLowerCase());
  allowedOrigins = new Set([
    ...LOOPBACK_HOSTS.map((h) => `http://${h}:${address.port}`),
    `http://${localHost}:${address.port}`.toLowerCase(),
    ...httpConfig.allowed_origins.map((o) => o.toLowerCase().replace(/\/+$/, '')),
  ]);
  if (publicBase) {
    const pub = new URL(publicBase);
    allowedHosts.add(pub.hostname.toLowerCase());
    allowedOrigins.add(pub.origin.toLowerCase());
  }
  authenticator =
    options.authenticator ??
    createAuthenticator({
      mode: config.mode,
      auth: config.auth,
      audience: mcpUrl,
      ...(options.devToken ? { devToken: options.devToken } : {}),
      ...(options.jwks ? { jwks: options.jwks } : {}),
    });
  const handlers = options.extraHandlers;
  extraHandlers =
    typeof handlers === 'function' ? handlers({ authenticator, url, allowedOrigins }) : (handlers ?? []);

  let closing: Promise<void> | undefined;
  return {
    url,
    mcpUrl,
    authenticator,
    metrics,
    sessionCount: () => sessions.count(),
    sweepSessions: sweep,
    close() {
      closing ??= (async () => {
        draining = true;
        clearInterval(reaper);
        // Idle keep-alive clients reconnect (elsewhere, through the load balancer). The listener
        // stays open while calls are in flight: /readyz reports the drain, and a waiting call's
        // own client answer (an elicitation) must still reach it; everything else gets 503.
        httpServer.closeIdleConnections();
        // Wait for in-flight tool calls (their POST responses), not for the long-lived GET streams.
        const deadline = Date.now() + httpConfig.shutdown_grace_ms;
        while (sessions.inFlightCalls() > 0 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 25));
        const stopped = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        // The registry rows stay: clients continue on another replica, or here after a restart.
        await sessions.closeAll();
        httpServer.closeAllConnections();
        await stopped;
        logBudget.close();
      })();
      return closing;
    },
  };
}
