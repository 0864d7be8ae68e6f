/**
 * The console's sign-in throttle keys on what it can trust (issue 13, item 4): the client address;
 * behind a configured proxy the forwarded client address is the key, and a forged
 * `X-Forwarded-For` from an untrusted peer is ignored. Garbage tokens from one address — or from
 * everyone behind one reverse proxy — never lock out an approver whose token verifies: a throttled
 * address still gets its tokens checked, and only those that do not verify get 429 (unlogged). The
 * tokens are high-entropy, so the throttle bounds the cost of garbage; it is not a guessing defence.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/auth/authenticator.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { createApprovalDesk } from '../../src/governance/approval-desk.ts';
import type { AuditLog } from '../../src/governance/audit.ts';
import { silentLogger } from '../../src/logger.ts';
import { DEFAULTS } from '../../src/config.ts';
import type { ApprovalStore } from '../../src/store/approval-store.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { openSessionStores, type SessionStores } from '../../src/store/session-store.ts';
import { openTestLedger } from '../helpers/audit.ts';

const authenticate: Authenticator = async (token) => {
  if (token === 'approver-token')
    return { ok: true, principal: { id: 'ola.approver@example.com', kind: 'user', role: 'approver' } };
  if (token === 'viewer-token')
    return { ok: true, principal: { id: 'vic.viewer@example.com', kind: 'user', role: 'viewer' } };
  return { ok: false, reason: 'invalid token' };
};

let dir: string;
let audit: AuditLog;
let ledger: ReturnType<typeof openTestLedger>;
let approvals: ApprovalStore;
let store: Store;
let sessions: SessionStores;
let server: Server;
let base: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-throttle-'));
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

async function serve(trustedProxies?: string[]) {
  const handler = createConsoleHandler({
    runtime: {
      approvals,
      desk: createApprovalDesk({ approvals, audit, logger: silentLogger }),
      logger: silentLogger,
      sessions,
    },
    authenticate,
    ...(trustedProxies ? { trustedProxies } : {}),
  });
  server = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function signIn(token: string, forwardedFor?: string): Promise<number> {
  const res = await fetch(`${base}/console/api/session`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      ...(forwardedFor ? { 'X-Forwarded-For': forwardedFor } : {}),
    },
    body: JSON.stringify({ token }),
  });
  await res.body?.cancel();
  return res.status;
}

describe('console sign-in throttle', () => {
  it('garbage tokens from a shared address never lock out an approver whose token verifies', async () => {
    await serve();
    for (let i = 0; i < 25; i++) expect(await signIn(`garbage-${i}`)).toBeOneOf([401, 429]);
    expect(await signIn('garbage-more')).toBe(429);
    expect(await signIn('approver-token')).toBe(200);
    // Signing in clears nothing for the garbage: the address stays throttled.
    expect(await signIn('garbage-after')).toBe(429);
  });

  it('behind a configured proxy, failures count per forwarded client address', async () => {
    await serve(['127.0.0.1']);
    for (let i = 0; i < 10; i++) expect(await signIn('garbage', '198.51.100.7')).toBe(401);
    expect(await signIn('garbage', '198.51.100.7')).toBe(429);
    // Another user behind the same proxy is not affected by the first one's failures.
    expect(await signIn('garbage', '198.51.100.8')).toBe(401);
    expect(await signIn('approver-token', '198.51.100.8')).toBe(200);
    // Client-written entries left of the proxy's own are ignored: the right-most hop is the key.
    expect(await signIn('garbage', '203.0.113.1, 198.51.100.7')).toBe(429);
  });

  it('X-Forwarded-For from a peer that is not a configured proxy is ignored', async () => {
    await serve();
    for (let i = 0; i < 10; i++) expect(await signIn('garbage', `198.51.100.${i}`)).toBe(401);
    expect(await signIn('garbage', '198.51.100.99')).toBe(429);
  });

  it('a genuine token without a console role is throttled per principal, not per address', async () => {
    await serve();
    for (let i = 0; i < 10; i++) expect(await signIn('viewer-token')).toBe(403);
    expect(await signIn('viewer-token')).toBe(429);
    expect(await signIn('approver-token')).toBe(200);
    expect(await signIn('garbage')).toBe(401);
  });
});
