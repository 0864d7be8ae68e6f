/**
 * A JWT an application got for itself is a service, never a person, whichever identity provider
 * minted it: refused at console sign-in (403), by the approval desk and by the CLI's approver check.
 * Fails closed: known machine markers (Auth0 `gty`, RFC 9068 / Okta / OIDC client id equal to `sub`,
 * Entra `idtyp: app`, Keycloak `service-account-` users) always make a service, and
 * `auth.jwt.human_claim` can require what only a person's token carries.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWTVerifyGetKey } from 'jose';
import { createAuthenticator, type Authenticator } from '../../src/auth/authenticator.ts';
import { runApprovalsCommand } from '../../src/cli/approvals.ts';
import { DEFAULTS, type Config, type LoadedConfig } from '../../src/config.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { createApprovalDesk } from '../../src/governance/approval-desk.ts';
import { silentLogger } from '../../src/logger.ts';
import { openSessionStores, type SessionStores } from '../../src/store/session-store.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { openTestLedger } from '../helpers/audit.ts';
import { testIdentityProvider } from '../helpers/identity-provider.ts';
import { createFieldCipher, loadDataKey, sealApprovalFields } from '../../src/store/field-crypto.ts';
import { labelRequest } from '../helpers/approvals.ts';

const ISSUER = 'https://idp.example.com/';
const AUDIENCE = 'http://127.0.0.1/mcp';
type JwtConfig = NonNullable<Config['auth']['jwt']>;
const JWT_CONFIG: JwtConfig = {
  issuer: ISSUER,
  audience: AUDIENCE,
  jwks_url: 'https://idp.example.com/jwks',
  role_claim: 'role',
  subject_claim: 'sub',
};

/** Application tokens as each provider shapes them, and the claim the refusal must name. */
const MACHINE_TOKENS: [provider: string, claims: Record<string, unknown>, named: string][] = [
  ['Auth0 client credentials', { sub: 'xK2b@clients', azp: 'xK2b', gty: 'client-credentials' }, 'gty'],
  ['RFC 9068 client credentials', { sub: 'svc-123', client_id: 'svc-123' }, 'client_id'],
  ['Okta client credentials', { sub: '0oa8clientid', cid: '0oa8clientid', scp: ['fraud'] }, 'cid'],
  ['OIDC azp = sub', { sub: 'reporting-client', azp: 'reporting-client' }, 'azp'],
  ['Entra v1 appid = sub', { sub: '4f1e-app', appid: '4f1e-app' }, 'appid'],
  [
    'Keycloak service account',
    {
      sub: '6a1f7c3e-2b7d-4c55-9d7e-0f1b2c3d4e5f',
      azp: 'reporting-bot',
      client_id: 'reporting-bot',
      preferred_username: 'service-account-reporting-bot',
      email_verified: false,
    },
    'preferred_username',
  ],
  [
    'Keycloak service account, username mapped away',
    { sub: '0d3c1f2e-5a6b-4c7d-8e9f-a0b1c2d3e4f5', azp: 'ledger-bot', clientHost: '10.0.0.7' },
    'clientHost',
  ],
  [
    'Entra app-only',
    {
      sub: '9d2b-service-principal',
      oid: '9d2b-service-principal',
      azp: 'c0ffee-app',
      appid: 'c0ffee-app',
      idtyp: 'app',
    },
    'idtyp',
  ],
];

/** People's tokens from the same providers: they sign in and decide. */
const HUMAN_TOKENS: [provider: string, claims: Record<string, unknown>][] = [
  ['Auth0 user', { sub: 'auth0|alice', azp: 'console-app' }],
  ['Okta user', { sub: 'olive@example.com', cid: '0oa8console', uid: '00u1olive' }],
  [
    'Keycloak user',
    {
      sub: '1c9e2f00-aaaa-4bbb-8ccc-1234567890ab',
      azp: 'fraudgate-console',
      preferred_username: 'kim',
      email_verified: true,
    },
  ],
  ['Entra user', { sub: 'pairwise-erin', oid: 'erin-oid', appid: 'console-app', idtyp: 'user' }],
];

let dir: string;
let store: Store;
let sessions: SessionStores;
let ledger: ReturnType<typeof openTestLedger>;
let server: Server | undefined;
let privateKey: CryptoKey;
let jwks: JWTVerifyGetKey;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-machine-'));
  ledger = openTestLedger(dir);
  store = await openStore({ ...DEFAULTS, data_dir: dir }, {});
  sessions = await openSessionStores(store, DEFAULTS, {});
  ({ privateKey, jwks } = await testIdentityProvider());
});

afterEach(async () => {
  if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
  server = undefined;
  await ledger.close();
  await store.close();
  await sessions.close();
  rmSync(dir, { recursive: true, force: true });
});

const sign = (claims: Record<string, unknown>, key = privateKey) =>
  new SignJWT({ role: 'approver', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(key);

const authenticatorWith = (jwt: Partial<JwtConfig> = {}): Authenticator =>
  createAuthenticator({
    mode: 'live',
    audience: AUDIENCE,
    jwks,
    auth: { key_hashes: [], jwt: { ...JWT_CONFIG, ...jwt } },
  });

let approvalCount = 0;
async function pendingApproval(): Promise<string> {
  const id = `apr_machine${String(++approvalCount).padStart(12, '0')}`;
  await store.approvals.create(labelRequest(id));
  return id;
}

/** The console on a loopback port, with a desk; returns how to sign in. */
async function consoleWith(authenticate: Authenticator) {
  const desk = createApprovalDesk({ approvals: store.approvals, audit: ledger.audit, logger: silentLogger });
  const handler = createConsoleHandler({
    runtime: { approvals: store.approvals, desk, logger: silentLogger, sessions },
    authenticate,
  });
  server = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const signIn = async (token: string) => {
    const res = await fetch(`${base}/console/api/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token }),
    });
    const body = (await res.json()) as { error?: { message: string } };
    return { status: res.status, message: body.error?.message ?? '' };
  };
  return { desk, signIn };
}

describe('machine JWTs are services: no console, no decisions', () => {
  it.each(MACHINE_TOKENS)(
    '%s: refused at console sign-in (403, naming the claim) and at the desk',
    async (_provider, claims, named) => {
      const authenticate = authenticatorWith();
      const { desk, signIn } = await consoleWith(authenticate);
      const token = await sign(claims);

      const refused = await signIn(token);
      expect(refused.status).toBe(403);
      expect(refused.message).toMatch(/is a service credential/);
      expect(refused.message).toContain(`'${named}'`);
      // Claim names only: no per-token value (the subject aside, which is the principal) is echoed.
      for (const name of ['azp', 'appid', 'client_id', 'cid', 'oid', 'preferred_username', 'clientHost']) {
        const value = claims[name];
        if (typeof value === 'string' && value !== claims.sub) expect(refused.message).not.toContain(value);
      }

      const result = await authenticate(token);
      expect(result.ok && result.principal.kind).toBe('service');
      if (!result.ok) return;
      const id = await pendingApproval();
      await expect(desk.decide(id, { approve: true, approver: result.principal })).rejects.toThrow(
        /service credential, which cannot decide approvals/,
      );
      expect((await store.approvals.get(id))?.state).toBe('pending');
    },
  );

  it.each(HUMAN_TOKENS)('%s: a person signs in and decides', async (_provider, claims) => {
    const authenticate = authenticatorWith();
    const { desk, signIn } = await consoleWith(authenticate);
    const token = await sign(claims);
    expect((await signIn(token)).status).toBe(200);
    const result = await authenticate(token);
    expect(result.ok && result.principal.kind).toBe('user');
    if (!result.ok) return;
    const id = await pendingApproval();
    expect((await desk.decide(id, { approve: true, approver: result.principal })).state).toBe('approved');
  });
});

describe('auth.jwt.human_claim: a person’s token must carry it', () => {
  it('a claim that must be present (Okta uid): a token without it is a service, even with no machine marker', async () => {
    const { signIn } = await consoleWith(authenticatorWith({ human_claim: { name: 'uid' } }));
    // An application token the markers do not recognise: its client id is not its subject.
    const unmarked = await signIn(await sign({ sub: 'batch-job', cid: '0oa8other' }));
    expect(unmarked.status).toBe(403);
    expect(unmarked.message).toMatch(
      /service credential \(it lacks the 'uid' claim auth\.jwt\.human_claim requires of a person\)/,
    );
    expect((await signIn(await sign({ sub: 'batch-job', uid: '' }))).status).toBe(403);
    expect((await signIn(await sign({ sub: 'olive@example.com', uid: '00u1olive' }))).status).toBe(200);
  });

  it('a claim with allowed values (idtyp user, email_verified true, or one of an array claim)', async () => {
    const idtyp = await consoleWith(authenticatorWith({ human_claim: { name: 'idtyp', values: ['user'] } }));
    const none = await idtyp.signIn(await sign({ sub: 'no-idtyp' }));
    expect(none.status).toBe(403);
    expect(none.message).toMatch(/'idtyp' is not one of the values auth\.jwt\.human_claim requires/);
    expect((await idtyp.signIn(await sign({ sub: 'erin', idtyp: 'device' }))).status).toBe(403);
    expect((await idtyp.signIn(await sign({ sub: 'erin', idtyp: 'user' }))).status).toBe(200);
    await new Promise<void>((resolve) => server!.close(() => resolve()));

    const verified = await consoleWith(
      authenticatorWith({ human_claim: { name: 'email_verified', values: [true] } }),
    );
    expect((await verified.signIn(await sign({ sub: 'kim', email_verified: false }))).status).toBe(403);
    expect((await verified.signIn(await sign({ sub: 'kim', email_verified: 'true' }))).status).toBe(403);
    expect((await verified.signIn(await sign({ sub: 'kim', email_verified: true }))).status).toBe(200);
    await new Promise<void>((resolve) => server!.close(() => resolve()));

    const amr = await consoleWith(
      authenticatorWith({ human_claim: { name: 'amr', values: ['pwd', 'mfa'] } }),
    );
    expect((await amr.signIn(await sign({ sub: 'kim', amr: ['mfa', 'otp'] }))).status).toBe(200);
    expect((await amr.signIn(await sign({ sub: 'kim2', amr: ['client_secret'] }))).status).toBe(403);
  });

  it('a machine marker wins over the human claim', async () => {
    const { signIn } = await consoleWith(
      authenticatorWith({ human_claim: { name: 'email_verified', values: [true] } }),
    );
    const keycloakBot = await signIn(
      await sign({
        sub: '6a1f7c3e-2b7d-4c55-9d7e-0f1b2c3d4e5f',
        preferred_username: 'service-account-reporting-bot',
        email_verified: true,
      }),
    );
    expect(keycloakBot.status).toBe(403);
    expect(keycloakBot.message).toContain("'preferred_username'");
  });
});

describe('CLI approver credential: the same rules for JWTs', () => {
  it('a machine JWT (Okta cid = sub) cannot approve from the CLI; a person’s can', async () => {
    // The CLI builds its own authenticator from config, so the JWKS is served over HTTP here.
    const pair = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' };
    server = createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
    // Stored as the server stores it (sealed under the data directory's key): the CLI reads it so.
    const id = 'apr_machinesealed000000';
    const cipher = createFieldCipher(loadDataKey({ ...DEFAULTS, data_dir: dir }, {}));
    await sealApprovalFields(store.approvals, cipher).create(labelRequest(id));
    const loaded = (token: string): LoadedConfig => ({
      config: {
        ...DEFAULTS,
        data_dir: dir,
        auth: { key_hashes: [], jwt: { ...JWT_CONFIG, jwks_url: jwksUrl } },
      },
      secrets: { auditKey: 'test-audit-key', approverToken: token },
      modeReason: 'test',
    });
    const approve = async (token: string) => {
      const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
      try {
        return await runApprovalsCommand(['approve', id], {}, loaded(token));
      } finally {
        write.mockRestore();
      }
    };
    await expect(
      approve(await sign({ sub: '0oa8clientid', cid: '0oa8clientid' }, pair.privateKey)),
    ).rejects.toThrow(
      /0oa8clientid is a service credential \(its 'cid' equals its 'sub'\); only a person may/,
    );
    await approve(
      await sign({ sub: 'olive@example.com', cid: '0oa8console', uid: '00u1olive' }, pair.privateKey),
    );
    expect((await store.approvals.get(id))?.state).toBe('approved');
  });
});
