/**
 * The approval console: a small web page at `/console` where approvers list, approve and deny
 * approvals. Plain `node:http`: the HTTP server mounts the handler in front of its own routes, and
 * the page is static HTML, one script and one stylesheet from `./assets` (no build step, no inline
 * script, so the Content-Security-Policy can be `default-src 'self'`).
 *
 * Sign-in exchanges an approver's bearer token (through the shared `Authenticator`) for a
 * server-side session in an HttpOnly, SameSite=Strict cookie; the token itself is not kept. Sessions
 * live in the store (only a SHA-256 digest of the cookie), so the cookie works on every replica and
 * survives a restart. Every state change needs the session's CSRF token in `X-CSRF-Token` and, when
 * the browser sends one, an Origin that matches Host or is one the HTTP layer allows (a proxy that
 * rewrites Host). The CSRF token is derived from the cookie
 * (a hash the page cannot compute itself, since the cookie is HttpOnly), so it needs no storage. Decisions go through the approval desk, exactly like the CLI, so a
 * waiting agent call (or the background sweep) executes an approved action once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator } from '../auth/authenticator.ts';
import { clientAddress } from '../auth/client-address.ts';
import { sameIdentity } from '../auth/identity.ts';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { APPROVAL_STATES, type Approval, type ApprovalState } from '../store/approval-store.ts';
import type { SessionStores } from '../store/session-store.ts';
import type { Principal } from '../tool.ts';
import { UNDOABLE_TOOLS } from '../../tools/undo-action.ts';

/** What the console needs: the approval store and desk of a running runtime, and how to check a token. */
export interface ConsoleDeps {
  runtime: Pick<Runtime, 'approvals' | 'desk' | 'logger'> & {
    sessions: Pick<SessionStores, 'consoleSessions'>;
  } & Partial<Pick<Runtime, 'pipeline' | 'config'>>;
  authenticate: Authenticator;
  /** Add `Secure` to the session cookie; set it whenever the console is reached over HTTPS. */
  secureCookies?: boolean;
  now?: () => Date;
  /** Session lifetime after sign-in (ms); default 8 hours, and never past the token's own expiry. */
  sessionTtlMs?: number;
  /** Sessions end after this long without a request (ms); default 30 minutes. */
  idleTimeoutMs?: number;
  /** Reverse proxies whose `X-Forwarded-For` is believed (`http.trusted_proxies`); see client-address.ts. */
  trustedProxies?: readonly string[];
  /**
   * Browser origins accepted besides the one naming Host (the HTTP layer's: `public_url`'s and
   * `http.allowed_origins`, lower-case): behind a proxy that rewrites Host, the page's origin is one.
   */
  allowedOrigins?: ReadonlySet<string>;
}

/** Handles a request when its path is under `/console`; resolves `false` (untouched) otherwise. */
export type ConsoleHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

interface Session {
  /** SHA-256 of the cookie: the store key. */
  idHash: string;
  principal: Principal;
  csrf: string;
  expiresAt: number;
}

/**
 * Approval as the page sees it: the stored approval without its binding internals (hashes, policy
 * version, requester role) plus, when the signed-in approver may not approve it, why.
 */
export type ConsoleApproval = Omit<
  Approval,
  'args_hash' | 'policy_version' | 'requester_role' | 'requester_kind'
> & {
  /** Set when the Approve button must be disabled; says why. */
  approve_blocked?: string;
  /** Who may approve under the policy the approval was made with, in words. */
  approver_rule: string;
  /** Until when the page offers Undo (an executed destructive action within `approvals.undo_window_ms`). */
  undo_until?: string;
};

export const CONSOLE_PREFIX = '/console';
const COOKIE = 'fraudgate_console';
const MAX_SESSIONS = 1000;
const MAX_BODY = 16 * 1024;
const MAX_REASON = 1000;
/**
 * Failed sign-ins (tokens that do not verify) allowed per client address per window; past it, further
 * failing tokens from that address get 429, unlogged and uncounted, until the window ends. A token
 * that verifies is never refused by this count: everyone behind one proxy may share the address
 * (without `http.trusted_proxies`), and garbage from it must not lock a real approver out. The tokens
 * are high-entropy (API keys, signed JWTs), so the throttle bounds what garbage costs in logs and
 * work; it is not what stops a guesser.
 */
const SIGN_IN_FAILURES = 10;
const SIGN_IN_WINDOW_MS = 5 * 60 * 1000;
/**
 * The cookie's binding for a session signed in with a token that carries its own expiry (a JWT)
 * rather than a configured credential's id (which starts with `c`).
 */
const TOKEN_EXPIRY_BINDING = 'exp';
const CONSOLE_ROLES: ReadonlySet<Principal['role']> = new Set(['approver', 'admin']);
const HISTORY_STATES: ApprovalState[] = APPROVAL_STATES.filter((state) => state !== 'pending');
const APPROVAL_PATH = /^\/console\/api\/approvals\/([A-Za-z0-9_-]{1,128})\/(approve|deny|undo)$/;
/** One approval, so the page can follow what happens after a decision (executed, failed, replaced). */
const ONE_APPROVAL_PATH = /^\/console\/api\/approvals\/([A-Za-z0-9_-]{1,128})$/;
/** Approvals per page: pending in pages oldest first (a cursor), history the newest ones only. */
const PAGE_SIZE = 200;
/**
 * Background requests of the open page (its poll, following a decision) carry this header: they do
 * not count as activity, so the idle timeout ends the session of a tab nobody is using.
 */
const POLL_HEADER = 'x-console-poll';

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy':
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

const ASSET_TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
};

// Read once at start-up: a missing asset is a packaging bug and should fail loudly, not per request.
const ASSETS = new Map(
  Object.entries(ASSET_TYPES).map(([name, type]) => [
    name,
    { type, body: readFileSync(new URL(`./assets/${name}`, import.meta.url)) },
  ]),
);

/** A request-level failure with the HTTP status and a message safe to show. */
class ConsoleHttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const STATUS_BY_CODE: Partial<Record<FraudgateError['code'], number>> = {
  [ERROR_CODES.FORBIDDEN]: 403,
  [ERROR_CODES.NOT_FOUND]: 404,
  [ERROR_CODES.CONFLICT]: 409,
  [ERROR_CODES.INVALID_INPUT]: 400,
};

function send(
  res: ServerResponse,
  status: number,
  body: string | Buffer,
  type: string,
  extra: Record<string, string> = {},
) {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'Content-Type': type,
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}) {
  send(res, status, JSON.stringify(value), 'application/json; charset=utf-8', extra);
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');
/** The CSRF token of a session: bound to the cookie, unknowable without it. */
const csrfFor = (cookie: string) =>
  createHash('sha256').update(`fraudgate-console-csrf\0${cookie}`).digest('base64url');

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  // Requiring JSON also forces a CORS preflight for any cross-site fetch, a second line behind CSRF.
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json')
    throw new ConsoleHttpError(415, 'Send a JSON body (Content-Type: application/json).');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new ConsoleHttpError(413, `Request body too large (limit ${MAX_BODY} bytes).`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConsoleHttpError(400, 'The request body is not valid JSON.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConsoleHttpError(400, 'The request body must be a JSON object.');
  }
  return parsed as Record<string, unknown>;
}

function optionalString(body: Record<string, unknown>, field: string, max: number): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ConsoleHttpError(400, `${field} must be a string.`);
  if (value.length > max) throw new ConsoleHttpError(400, `${field} is longer than ${max} characters.`);
  return value.trim() === '' ? undefined : value.trim();
}

/**
 * A state change must come from our own page: a browser sends Origin on every POST, and it must name
 * the host the request was sent to. Non-browser clients send none; the CSRF token still binds them.
 */
function checkOrigin(req: IncomingMessage, allowed: ReadonlySet<string> | undefined) {
  const origin = req.headers.origin;
  if (req.headers['sec-fetch-site'] === 'cross-site')
    throw new ConsoleHttpError(403, 'Cross-site request refused.');
  if (origin === undefined) return;
  if (origin !== 'null' && allowed?.has(origin.toLowerCase().replace(/\/+$/, ''))) return;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    throw new ConsoleHttpError(403, 'Origin header is not a URL; request refused.');
  }
  if (origin === 'null' || !req.headers.host || host !== req.headers.host.toLowerCase()) {
    throw new ConsoleHttpError(
      403,
      'Origin does not match Host; cross-origin request refused. Behind a proxy, keep Host (proxy_set_header Host $host) or set http.public_url.',
    );
  }
}

/** A pending page's cursor: the last approval's place in oldest-first order, opaque to the page. */
const writeCursor = (a: Pick<Approval, 'created_at' | 'id'>) =>
  Buffer.from(`${a.created_at} ${a.id}`).toString('base64url');

function readCursor(value: string | null): Pick<Approval, 'created_at' | 'id'> | undefined {
  if (value === null || value === '') return undefined;
  const [createdAt, id, extra] = Buffer.from(value, 'base64url').toString('utf8').split(' ');
  if (
    extra !== undefined ||
    !createdAt ||
    !id ||
    Number.isNaN(Date.parse(createdAt)) ||
    !/^[\w-]{1,128}$/.test(id)
  )
    throw new ConsoleHttpError(400, 'after must be the next cursor of a previous page; reload the list.');
  return { created_at: createdAt, id };
}

function toConsoleApproval(
  a: Approval,
  viewer: Principal,
  undoWindowMs?: number,
  now = new Date(),
): ConsoleApproval {
  const {
    args_hash: _hash,
    policy_version: _policy,
    requester_role: _role,
    requester_kind: _kind,
    ...view
  } = a;
  const consoleView: ConsoleApproval = {
    ...view,
    // Destructive tools get four_eyes unless self-approval is opted in (see governance/policy.ts).
    approver_rule:
      a.mode === 'four_eyes'
        ? 'An approver other than the requester must approve (self-approval not allowed).'
        : 'Any approver may approve, the requester included (self-approval allowed by policy).',
  };
  if (
    undoWindowMs !== undefined &&
    a.state === 'executed' &&
    a.executed_at &&
    UNDOABLE_TOOLS.includes(a.tool)
  ) {
    const until = Date.parse(a.executed_at) + undoWindowMs;
    if (until > now.getTime()) consoleView.undo_until = new Date(until).toISOString();
  }
  // Mirrors the desk's four-eyes rule so the page can say why before anyone clicks; the desk still decides.
  if (a.state === 'pending' && a.mode === 'four_eyes' && sameIdentity(a.requester, viewer.id)) {
    consoleView.approve_blocked =
      'Four-eyes policy: you requested this action, so another approver must approve it.';
  }
  return consoleView;
}

export function createConsoleHandler(deps: ConsoleDeps): ConsoleHandler {
  const { approvals, desk, logger } = deps.runtime;
  const now = deps.now ?? (() => new Date());
  const sessionTtlMs = deps.sessionTtlMs ?? 8 * 60 * 60 * 1000;
  const idleTimeoutMs = deps.idleTimeoutMs ?? 30 * 60 * 1000;
  const sessions = deps.runtime.sessions.consoleSessions;
  // Tokens are long random secrets: the count bounds what a flood of garbage costs (SIGN_IN_FAILURES).
  // Keyed only on what can be trusted: the client address (client-address.ts) for tokens that fail,
  // the verified principal for genuine tokens without a console role.
  const failures = new Map<string, { count: number; since: number }>();

  const cookie = (value: string, maxAgeSeconds: number) =>
    [
      `${COOKIE}=${value}`,
      'Path=/console',
      'HttpOnly',
      'SameSite=Strict',
      `Max-Age=${maxAgeSeconds}`,
      ...(deps.secureCookies ? ['Secure'] : []),
    ].join('; ');

  /** A session-store failure (database unreachable) answers a retryable 503, not an internal error. */
  async function fromStore<T>(op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (error) {
      logger.warn('console session store unavailable', { error: String(error) });
      throw new ConsoleHttpError(503, 'The session store is unavailable; try again in a few seconds.');
    }
  }

  async function currentSession(req: IncomingMessage): Promise<Session | undefined> {
    const poll = req.headers[POLL_HEADER] === '1';
    const cookieValue = readCookie(req, COOKIE);
    if (!cookieValue) return undefined;
    const at = now().getTime();
    const idHash = sha256(cookieValue);
    const stored = await fromStore(sessions.get(idHash, at, idleTimeoutMs));
    if (!stored) return undefined;
    // Signed in with an API key (or sandbox token): the session lasts only while that key is still
    // configured for the same principal and role. JWT sessions end at the token's expiry instead.
    // A cookie without a binding predates it: whether its key still holds cannot be checked, so it
    // has ended (sign in again) rather than lasting out its ttl after its key was removed.
    const binding = cookieValue.split('.')[1];
    const ended =
      binding === undefined
        ? 'it predates credential binding'
        : binding !== TOKEN_EXPIRY_BINDING && !deps.authenticate.stillHolds?.(binding, stored.principal)
          ? 'its credential is no longer configured'
          : undefined;
    if (ended) {
      await fromStore(sessions.delete(idHash));
      logger.info(`console session ended: ${ended}`, { principal: stored.principal.id });
      return undefined;
    }
    if (!poll) await fromStore(sessions.touch(idHash, at));
    return { idHash, principal: stored.principal, csrf: csrfFor(cookieValue), expiresAt: stored.expires_at };
  }

  async function requireSession(req: IncomingMessage): Promise<Session> {
    const current = await currentSession(req);
    if (!current) throw new ConsoleHttpError(401, 'Not signed in, or the session has ended. Sign in again.');
    return current;
  }

  function requireCsrf(req: IncomingMessage, session: Session) {
    checkOrigin(req, deps.allowedOrigins);
    const header = req.headers['x-csrf-token'];
    const token = Array.isArray(header) ? header[0] : header;
    if (!token || !sameSecret(token, session.csrf)) {
      throw new ConsoleHttpError(403, 'Missing or wrong CSRF token; reload the console and try again.');
    }
  }

  function throttled(key: string, at: number): boolean {
    const entry = failures.get(key);
    if (entry && at - entry.since >= SIGN_IN_WINDOW_MS) failures.delete(key);
    else if (entry && entry.count >= SIGN_IN_FAILURES) return true;
    return false;
  }

  function recordFailure(key: string, at: number) {
    if (failures.size > 10_000) failures.clear();
    const entry = failures.get(key) ?? { count: 0, since: at };
    entry.count += 1;
    failures.set(key, entry);
  }

  const tooMany = (what: string) =>
    new ConsoleHttpError(429, `Too many failed sign-ins ${what}; wait a few minutes and try again.`);

  async function signIn(req: IncomingMessage, res: ServerResponse) {
    checkOrigin(req, deps.allowedOrigins);
    const address = `address:${clientAddress(req, deps.trustedProxies)}`;
    const body = await readJsonBody(req);
    const token = typeof body.token === 'string' ? body.token.trim() : '';
    if (!token) throw new ConsoleHttpError(400, 'Paste an approver token to sign in.');
    // Verify first, throttled or not: whether this attempt counts, and against what, depends on who
    // the token proves to be, and one that verifies signs in whatever garbage shared its address.
    const result = await deps.authenticate(token);
    if (!result.ok) {
      // Past the count, neither logged nor counted again: the flood costs a verification each, no more.
      if (throttled(address, now().getTime())) throw tooMany('from this address');
      recordFailure(address, now().getTime());
      logger.info('console sign-in refused', { reason: 'invalid token' });
      throw new ConsoleHttpError(401, `Sign-in refused: ${result.reason}`);
    }
    const { principal } = result;
    if (!CONSOLE_ROLES.has(principal.role)) {
      const who = `principal:${principal.id}`;
      if (throttled(who, now().getTime())) throw tooMany(`for ${principal.id}`);
      recordFailure(who, now().getTime());
      logger.info('console sign-in refused', { principal: principal.id, role: principal.role });
      throw new ConsoleHttpError(
        403,
        `${principal.id} has role '${principal.role}'; the approval console needs role approver or admin.`,
      );
    }
    if (principal.kind !== 'user') {
      logger.info('console sign-in refused', { principal: principal.id, kind: principal.kind });
      const because = result.serviceBecause ? ` (${result.serviceBecause})` : '';
      throw new ConsoleHttpError(
        403,
        `${principal.id} is a ${principal.kind} credential${because}; approvals are decided by people. ` +
          "Sign in with your own API key (an auth.key_hashes entry with kind 'user') or identity-provider token.",
      );
    }
    const at = now().getTime();
    const expiresAt = Math.min(at + sessionTtlMs, result.expiresAt ? result.expiresAt * 1000 : Infinity);
    if (expiresAt <= at) throw new ConsoleHttpError(401, 'Sign-in refused: the token has expired.');
    // The credential's id rides in the cookie, bound to the session by its digest (the store key):
    // changing it finds no session. Each request checks it is still configured (currentSession).
    // A token without one (a JWT) is marked as such: its session ends at the token's own expiry.
    const random = randomBytes(32).toString('base64url');
    const id = `${random}.${result.credential ?? TOKEN_EXPIRY_BINDING}`;
    const session: Session = { idHash: sha256(id), principal, csrf: csrfFor(id), expiresAt };
    // Past MAX_SESSIONS the oldest sign-ins are dropped rather than a new one refused.
    await fromStore(
      sessions.create(
        { id_hash: session.idHash, principal, created_at: at, expires_at: expiresAt, last_seen_at: at },
        MAX_SESSIONS,
      ),
    );
    logger.info('console sign-in', { principal: principal.id, role: principal.role });
    sendJson(res, 200, sessionView(session), {
      'Set-Cookie': cookie(id, Math.ceil((expiresAt - at) / 1000)),
    });
  }

  const sessionView = (s: Session) => ({
    principal: { id: s.principal.id, role: s.principal.role },
    csrf_token: s.csrf,
    expires_at: new Date(s.expiresAt).toISOString(),
  });

  async function listApprovals(url: URL, res: ServerResponse, session: Session) {
    const view = url.searchParams.get('view') ?? 'pending';
    if (view !== 'pending' && view !== 'history')
      throw new ConsoleHttpError(400, 'view must be pending or history.');
    // As the CLI does: overdue approvals become `expired` (with their audit record) before anyone sees them.
    await desk.expireOverdue();
    const after = view === 'pending' ? readCursor(url.searchParams.get('after')) : undefined;
    const states = view === 'pending' ? (['pending'] as ApprovalState[]) : HISTORY_STATES;
    // Pending oldest first (closest to expiry), in pages: a flood of new requests cannot hide them.
    // History newest first, the newest page only; `total` says how many there are in all.
    const [list, total] = await Promise.all([
      approvals.list({
        states,
        limit: PAGE_SIZE + 1,
        ...(view === 'pending' ? { oldestFirst: true } : {}),
        ...(after ? { after } : {}),
      }),
      approvals.count(states),
    ]);
    const page = list.slice(0, PAGE_SIZE);
    const last = page.at(-1);
    sendJson(res, 200, {
      view,
      now: now().toISOString(),
      total,
      approvals: page.map((a) => forPage(a, session.principal)),
      ...(view === 'pending' && list.length > PAGE_SIZE && last ? { next: writeCursor(last) } : {}),
    });
  }

  /** Undo is offered only where this console can request it (a full runtime with its pipeline). */
  const undoWindowMs = deps.runtime.pipeline ? deps.runtime.config?.approvals.undo_window_ms : undefined;
  const forPage = (a: Approval, viewer: Principal) => toConsoleApproval(a, viewer, undoWindowMs, now());

  /**
   * Undo requests `undo_action` through the governance pipeline as the signed-in approver, without
   * waiting: it is a destructive call with its own approval, which another approver must give.
   */
  async function requestUndo(req: IncomingMessage, res: ServerResponse, session: Session, id: string) {
    requireCsrf(req, session);
    const pipeline = deps.runtime.pipeline;
    if (!pipeline) throw new ConsoleHttpError(404, 'Undo is not available on this console.');
    const body = await readJsonBody(req);
    const reason = optionalString(body, 'reason', MAX_REASON);
    if (!reason) throw new ConsoleHttpError(400, 'A reason is required to undo.');
    const outcome = await pipeline.call(
      'undo_action',
      { approval_id: id, reason },
      {
        principal: session.principal,
        signal: AbortSignal.timeout(30_000),
        progress: async () => {},
        waitMs: 0,
      },
    );
    if (outcome.ok) return sendJson(res, 200, { undo: outcome.output });
    if (outcome.error.code !== ERROR_CODES.APPROVAL_PENDING) throw outcome.error;
    logger.info('console undo requested', { approval_id: id, principal: session.principal.id });
    sendJson(res, 202, {
      undo_approval_id: outcome.error.data.approval_id,
      message: `Undo requested as ${String(outcome.error.data.approval_id)}; another approver must approve it.`,
    });
  }

  async function decide(
    req: IncomingMessage,
    res: ServerResponse,
    session: Session,
    id: string,
    approve: boolean,
  ) {
    requireCsrf(req, session);
    const body = await readJsonBody(req);
    const reason = optionalString(body, 'reason', MAX_REASON);
    if (!approve && !reason) throw new ConsoleHttpError(400, 'A reason is required to deny.');
    const decided = await desk.decide(id, {
      approve,
      approver: session.principal,
      ...(reason ? { reason } : {}),
    });
    logger.info('console decision', { approval_id: id, approve, principal: session.principal.id });
    sendJson(res, 200, { approval: forPage(decided, session.principal) });
  }

  async function route(req: IncomingMessage, res: ServerResponse, url: URL) {
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/console' || path === '/console/') {
      if (method !== 'GET' && method !== 'HEAD') throw new ConsoleHttpError(405, 'Method not allowed.');
      const page = ASSETS.get('index.html')!;
      return send(res, 200, page.body, page.type);
    }
    if (path.startsWith('/console/assets/')) {
      const asset = ASSETS.get(path.slice('/console/assets/'.length));
      if (!asset || (method !== 'GET' && method !== 'HEAD')) throw new ConsoleHttpError(404, 'Not found.');
      return send(res, 200, asset.body, asset.type, { 'Cache-Control': 'no-cache' });
    }
    if (path === '/console/api/session') {
      if (method === 'GET') return sendJson(res, 200, sessionView(await requireSession(req)));
      if (method === 'POST') return signIn(req, res);
      if (method === 'DELETE') {
        const current = await currentSession(req);
        if (current) {
          requireCsrf(req, current);
          await fromStore(sessions.delete(current.idHash));
        }
        return sendJson(res, 200, { signed_out: true }, { 'Set-Cookie': cookie('', 0) });
      }
      throw new ConsoleHttpError(405, 'Method not allowed.');
    }
    if (path === '/console/api/approvals') {
      if (method !== 'GET') throw new ConsoleHttpError(405, 'Method not allowed.');
      return listApprovals(url, res, await requireSession(req));
    }
    const one = ONE_APPROVAL_PATH.exec(path);
    if (one) {
      if (method !== 'GET') throw new ConsoleHttpError(405, 'Method not allowed.');
      const session = await requireSession(req);
      const approval = await approvals.get(one[1]!);
      if (!approval) throw new ConsoleHttpError(404, `No approval ${one[1]!}.`);
      return sendJson(res, 200, {
        now: now().toISOString(),
        approval: forPage(approval, session.principal),
      });
    }
    const match = APPROVAL_PATH.exec(path);
    if (match) {
      if (method !== 'POST') throw new ConsoleHttpError(405, 'Method not allowed.');
      const session = await requireSession(req);
      if (match[2] === 'undo') return requestUndo(req, res, session, match[1]!);
      return decide(req, res, session, match[1]!, match[2] === 'approve');
    }
    throw new ConsoleHttpError(404, 'Not found.');
  }

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    if (url.pathname !== CONSOLE_PREFIX && !url.pathname.startsWith(`${CONSOLE_PREFIX}/`)) return false;
    try {
      await route(req, res, url);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
        return true;
      }
      if (error instanceof ConsoleHttpError) {
        sendJson(
          res,
          error.status,
          { error: { message: error.message } },
          error.status === 503 ? { 'Retry-After': '5' } : {},
        );
      } else if (error instanceof FraudgateError) {
        const status = STATUS_BY_CODE[error.code] ?? 500;
        if (status === 500)
          logger.error('console request failed', { code: error.code, detail: error.detail });
        sendJson(res, status, { error: { code: error.code, message: error.message } });
      } else {
        logger.error('console request failed', { path: url.pathname, error: String(error) });
        sendJson(res, 500, {
          error: { code: ERROR_CODES.INTERNAL, message: 'Internal error; see the server log.' },
        });
      }
    }
    return true;
  };
}
