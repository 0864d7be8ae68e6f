/**
 * The console handler over raw HTTP, no browser: mounting contract, headers, session lifetime,
 * cookie flags, body rules, sign-in throttling and error mapping. The browser tests cover the page.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { createAuthenticator, type Authenticator } from '../../src/auth/authenticator.ts';
import { createConsoleHandler, type ConsoleDeps } from '../../src/console/console.ts';
import { createApprovalDesk } from '../../src/governance/approval-desk.ts';
import type { AuditLog } from '../../src/governance/audit.ts';
import { openTestLedger } from '../helpers/audit.ts';
import { testIdentityProvider } from '../helpers/identity-provider.ts';
import { silentLogger } from '../../src/logger.ts';
import { DEFAULTS } from '../../src/config.ts';
import type { ApprovalStore } from '../../src/store/approval-store.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { openSessionStores, type SessionStores } from '../../src/store/session-store.ts';
import type { Principal } from '../../src/tool.ts';
import { labelRequest } from '../helpers/approvals.ts';

const APPROVER: Principal = { id: 'alice.approver@example.com', kind: 'user', role: 'approver' };
const authenticate: Authenticator = async (token) => {
  if (token === 'approver-token') return { ok: true, principal: APPROVER };
  if (token === 'short-lived')
    return { ok: true, principal: APPROVER, expiresAt: Math.floor(clock / 1000) + 60 };
  return { ok: false, reason: 'unknown or invalid token' };
};

/** One fake clock for the console and the desk, so expiry and session lifetimes are tested without sleeping. */
let clock = Date.now();
let dir: string;
let audit: AuditLog;
let ledger: ReturnType<typeof openTestLedger>;
let approvals: ApprovalStore;
let store: Store;
let sessions: SessionStores;
let server: Server;
let base: string;

async function serve(options: Partial<ConsoleDeps> = {}) {
  const handler = createConsoleHandler({
    runtime: {
      approvals,
      desk: createApprovalDesk({ approvals, audit, logger: silentLogger, now: () => new Date(clock) }),
      logger: silentLogger,
      sessions,
    },
    authenticate,
    now: () => new Date(clock),
    ...options,
  });
  server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(418).end('not mine');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function signIn(token = 'approver-token') {
  const res = await fetch(`${base}/console/api/session`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  const body = (await res.json()) as { csrf_token: string; error?: { message: string } };
  const cookie = res.headers.get('set-cookie') ?? '';
  return { res, body, csrf: body.csrf_token, cookie, jar: cookie.split(';')[0] ?? '' };
}

async function pending(id: string, overrides: { requester?: string; expires_at?: string } = {}) {
  await approvals.create(labelRequest(id, overrides, clock));
}

beforeEach(async () => {
  clock = Date.now();
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-console-'));
  ledger = openTestLedger(dir);
  audit = ledger.audit;
  store = await openStore({ ...DEFAULTS, data_dir: dir }, {});
  approvals = store.approvals;
  sessions = await openSessionStores(store, DEFAULTS, {});
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await ledger.close();
  await store.close();
  await sessions.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('console handler', () => {
  it('handles /console and below only, and sends the security headers on pages and JSON', async () => {
    await serve();
    expect((await fetch(`${base}/mcp`)).status).toBe(418);
    expect((await fetch(`${base}/consoles`)).status).toBe(418);
    for (const path of ['/console', '/console/', '/console/assets/console.js', '/console/api/approvals']) {
      const res = await fetch(`${base}${path}`);
      expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    }
    expect((await fetch(`${base}/console/api/approvals`)).status).toBe(401);
    const missing = await fetch(`${base}/console/assets/../console.ts`);
    expect(missing.status).toBe(404);
    expect(
      ((await fetch(`${base}/console/nope`)).headers.get('content-type') ?? '').startsWith(
        'application/json',
      ),
    ).toBe(true);
  });

  it('sets Secure when configured; the session ends when idle, at its TTL, or at the token expiry', async () => {
    await serve({ secureCookies: true, idleTimeoutMs: 60_000, sessionTtlMs: 10 * 60_000 });
    const { cookie, jar } = await signIn();
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).toMatch(/Path=\/console/);
    expect(cookie).toMatch(/Secure/);
    const session = () =>
      fetch(`${base}/console/api/session`, { headers: { Cookie: jar } }).then((r) => r.status);
    clock += 59_000;
    expect(await session()).toBe(200);
    clock += 61_000;
    expect(await session()).toBe(401);

    const shortLived = await signIn('short-lived');
    expect(shortLived.cookie).toMatch(/Max-Age=60/);
    clock += 61_000;
    expect(
      await fetch(`${base}/console/api/session`, { headers: { Cookie: shortLived.jar } }).then(
        (r) => r.status,
      ),
    ).toBe(401);
  });

  it('maps decision failures to JSON statuses and demands JSON bodies of bounded size', async () => {
    await serve();
    const { csrf, jar } = await signIn();
    const post = (path: string, body: string, type = 'application/json') =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'Content-Type': type, Cookie: jar, 'X-CSRF-Token': csrf },
        body,
      });

    expect((await post('/console/api/approvals/apr_missing/approve', '{}')).status).toBe(404);
    await pending('apr_one');
    const deny = await post('/console/api/approvals/apr_one/deny', '{}');
    expect(deny.status).toBe(400);
    expect(((await deny.json()) as { error: { message: string } }).error.message).toContain('reason');
    expect(
      (await post('/console/api/approvals/apr_one/approve', 'reason=x', 'application/x-www-form-urlencoded'))
        .status,
    ).toBe(415);
    expect(
      (await post('/console/api/approvals/apr_one/approve', JSON.stringify({ reason: 'x'.repeat(20_000) })))
        .status,
    ).toBe(413);
    expect((await post('/console/api/approvals/apr_one/approve', '{')).status).toBe(400);
    expect((await approvals.get('apr_one'))?.state).toBe('pending');

    const ok = await post(
      '/console/api/approvals/apr_one/approve',
      JSON.stringify({ reason: 'looks right' }),
    );
    expect(ok.status).toBe(200);
    expect(await approvals.get('apr_one')).toMatchObject({
      state: 'approved',
      decided_by: APPROVER.id,
      reason: 'looks right',
    });
    expect(
      (await post('/console/api/approvals/apr_one/deny', JSON.stringify({ reason: 'late' }))).status,
    ).toBe(409);
  });

  it('lists pending oldest first and history, expiring overdue approvals first', async () => {
    await serve();
    const { jar } = await signIn();
    await pending('apr_old', { expires_at: new Date(clock + 1000).toISOString() });
    clock += 10;
    await pending('apr_new');
    const list = async (view: string) =>
      (
        (await (
          await fetch(`${base}/console/api/approvals?view=${view}`, { headers: { Cookie: jar } })
        ).json()) as {
          approvals: { id: string; state: string }[];
        }
      ).approvals.map((a) => `${a.id}:${a.state}`);
    expect(await list('pending')).toEqual(['apr_old:pending', 'apr_new:pending']);
    clock += 2000;
    expect(await list('pending')).toEqual(['apr_new:pending']);
    expect(await list('history')).toEqual(['apr_old:expired']);
    expect((await fetch(`${base}/console/api/approvals?view=all`, { headers: { Cookie: jar } })).status).toBe(
      400,
    );
  });

  it('pages pending oldest first with a cursor and a total: a flood of newer requests hides none', async () => {
    await serve();
    const { jar } = await signIn();
    // The real request first (expires soonest), then 200 newer ones.
    await approvals.create(labelRequest('apr_oldest', {}, clock - 60_000));
    for (let i = 0; i < 200; i++)
      await approvals.create(labelRequest(`apr_flood${String(i).padStart(4, '0')}`, {}, clock + i));
    type Page = { total: number; next?: string; approvals: { id: string }[] };
    const page = async (query: string) => {
      const res = await fetch(`${base}/console/api/approvals?${query}`, { headers: { Cookie: jar } });
      return { status: res.status, body: (await res.json()) as Page };
    };
    const first = await page('view=pending');
    expect(first.body.total).toBe(201);
    expect(first.body.approvals).toHaveLength(200);
    expect(first.body.approvals[0]?.id).toBe('apr_oldest');
    expect(first.body.next).toEqual(expect.any(String));
    const second = await page(`view=pending&after=${encodeURIComponent(first.body.next!)}`);
    expect(second.body.approvals.map((a) => a.id)).toEqual(['apr_flood0199']);
    expect(second.body.total).toBe(201);
    expect(second.body.next).toBeUndefined();
    expect((await page('view=pending&after=garbage')).status).toBe(400);
    const history = await page('view=history');
    expect(history.body).toMatchObject({ total: 0, approvals: [] });
  });

  it('background polls (X-Console-Poll: 1) do not keep a session alive; user requests do', async () => {
    await serve({ idleTimeoutMs: 60_000 });
    const { jar } = await signIn();
    const poll = () =>
      fetch(`${base}/console/api/approvals?view=pending`, {
        headers: { Cookie: jar, 'X-Console-Poll': '1' },
      }).then((r) => r.status);
    clock += 40_000;
    expect(await poll()).toBe(200);
    clock += 40_000;
    // 80 s since the last user request: the polls in between did not count.
    expect(await poll()).toBe(401);
    expect(
      await fetch(`${base}/console/api/session`, { headers: { Cookie: jar } }).then((r) => r.status),
    ).toBe(401);

    const other = await signIn();
    const visit = () =>
      fetch(`${base}/console/api/session`, { headers: { Cookie: other.jar } }).then((r) => r.status);
    clock += 40_000;
    expect(await visit()).toBe(200);
    clock += 40_000;
    expect(await visit()).toBe(200);
  });

  it('throttles failed sign-ins from one address; a token that verifies still signs in from it', async () => {
    await serve();
    for (let i = 0; i < 10; i++) expect((await signIn('wrong')).res.status).toBe(401);
    expect((await signIn('wrong')).res.status).toBe(429);
    // Everyone behind one proxy may share the address: garbage must not lock a real approver out.
    expect((await signIn('approver-token')).res.status).toBe(200);
    expect((await signIn('wrong')).res.status).toBe(429);
    clock += 5 * 60_000;
    expect((await signIn('wrong')).res.status).toBe(401);
  });
});

describe('console credentials: people only, and only while their key is configured', () => {
  const digest = (token: string) => createHash('sha256').update(token).digest('hex');
  const key = (token: string, principal: string, kind: 'user' | 'service', role: 'approver' | 'admin') => ({
    sha256: digest(token),
    principal,
    kind,
    role,
  });
  const keyAuth = (keys: ReturnType<typeof key>[]) =>
    createAuthenticator({ mode: 'live', audience: 'http://127.0.0.1/mcp', auth: { key_hashes: keys } });
  const HUMAN = key('alice-key', APPROVER.id, 'user', 'approver');
  const BOT = key('bot-key', 'ops-bot', 'service', 'admin');

  it('a service credential, even an admin, cannot sign in (403, says to use a person’s credential)', async () => {
    await serve({ authenticate: keyAuth([HUMAN, BOT]) });
    const bot = await signIn('bot-key');
    expect(bot.res.status).toBe(403);
    expect(bot.body.error?.message).toMatch(/service credential.*own API key/);
    expect(bot.cookie).toBe('');
    expect((await signIn('alice-key')).res.status).toBe(200);
  });

  it('a session from before credential binding (a cookie without it) has ended: 401, sign in again', async () => {
    await serve({ authenticate: keyAuth([HUMAN]) });
    const alice = await signIn('alice-key');
    expect(alice.jar).toMatch(/^fraudgate_console=[\w-]+\.c[0-9a-f]{32}$/);
    // As an older version stored it: the cookie is the random part alone, its digest the store key.
    const legacy = 'legacy-session-cookie-0123456789abcdefghijklmnop';
    const at = Date.now();
    const legacyHash = createHash('sha256').update(legacy).digest('hex');
    await sessions.consoleSessions.create(
      {
        id_hash: legacyHash,
        principal: APPROVER,
        created_at: at,
        expires_at: at + 3_600_000,
        last_seen_at: at,
      },
      1000,
    );
    const legacyCookie = `fraudgate_console=${legacy}`;
    const res = await fetch(`${base}/console/api/approvals`, { headers: { Cookie: legacyCookie } });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/Sign in again/);
    expect(await sessions.consoleSessions.get(legacyHash, Date.now(), 60_000)).toBeUndefined();
    // Sessions signed in now carry their binding and go on working, a JWT's as much as an API key's.
    expect(
      await fetch(`${base}/console/api/session`, { headers: { Cookie: alice.jar } }).then((r) => r.status),
    ).toBe(200);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await serve();
    const jwtLike = await signIn('approver-token');
    expect(jwtLike.jar).toMatch(/\.exp$/);
    expect(
      await fetch(`${base}/console/api/session`, { headers: { Cookie: jwtLike.jar } }).then((r) => r.status),
    ).toBe(200);
  });

  it('a session ends once its API key is removed from the configuration, or changes role', async () => {
    await serve({ authenticate: keyAuth([HUMAN]) });
    const alice = await signIn('alice-key');
    await pending('apr_revoked');
    const list = () =>
      fetch(`${base}/console/api/approvals`, { headers: { Cookie: alice.jar } }).then((r) => r.status);
    expect(await list()).toBe(200);

    // The same store (sessions survive restarts): the key is gone from the new configuration.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await serve({ authenticate: keyAuth([]) });
    expect(await list()).toBe(401);
    const approve = await fetch(`${base}/console/api/approvals/apr_revoked/approve`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Cookie: alice.jar, 'X-CSRF-Token': alice.csrf },
      body: '{}',
    });
    expect(approve.status).toBe(401);
    expect((await approvals.get('apr_revoked'))?.state).toBe('pending');

    // Put back, but with another role: the old session does not come back either.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await serve({ authenticate: keyAuth([HUMAN]) });
    const again = await signIn('alice-key');
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await serve({ authenticate: keyAuth([{ ...HUMAN, role: 'admin' }]) });
    expect(
      await fetch(`${base}/console/api/approvals`, { headers: { Cookie: again.jar } }).then((r) => r.status),
    ).toBe(401);
  });

  it('a client-credentials JWT (gty, or client_id = sub) is a service: refused; a person’s JWT signs in', async () => {
    const { privateKey, jwks } = await testIdentityProvider();
    const audience = 'http://127.0.0.1/mcp';
    const issuer = 'https://idp.example.com/';
    await serve({
      authenticate: createAuthenticator({
        mode: 'live',
        audience,
        jwks,
        auth: {
          key_hashes: [],
          jwt: { issuer, jwks_url: 'https://idp.example.com/jwks', role_claim: 'role', subject_claim: 'sub' },
        },
      }),
    });
    const token = (subject: string, claims: Record<string, unknown>) =>
      new SignJWT({ role: 'approver', ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(subject)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(privateKey);
    const machine = await signIn(await token('ci-pipeline@clients', { gty: 'client-credentials' }));
    expect(machine.res.status).toBe(403);
    expect(machine.body.error?.message).toMatch(/service credential/);
    expect((await signIn(await token('svc-123', { client_id: 'svc-123' }))).res.status).toBe(403);
    const person = await signIn(await token(APPROVER.id, { client_id: 'console-app' }));
    expect(person.res.status).toBe(200);
  });
});
