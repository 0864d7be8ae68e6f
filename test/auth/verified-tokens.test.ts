/**
 * The authenticator remembers tokens it verified (every MCP request carries one), never past the
 * token's expiry nor longer than VERIFIED_TOKEN_TTL_MS, and never remembers a refusal.
 */
import { SignJWT, type CryptoKey, type JWTVerifyGetKey } from 'jose';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuthenticator, VERIFIED_TOKEN_TTL_MS } from '../../src/auth/authenticator.ts';
import { testIdentityProvider } from '../helpers/identity-provider.ts';

const ISSUER = 'https://idp.example.com/';
const AUDIENCE = 'http://127.0.0.1:8787/mcp';

let privateKey: CryptoKey;
let keys: JWTVerifyGetKey;
beforeAll(async () => {
  ({ privateKey, jwks: keys } = await testIdentityProvider());
});
afterEach(() => {
  vi.useRealTimers();
});

/** An authenticator whose key lookups are counted: one lookup per signature verification. */
function counted() {
  const verifications = { count: 0 };
  const jwks: JWTVerifyGetKey = (header, token) => {
    verifications.count += 1;
    return keys(header, token);
  };
  const auth = createAuthenticator({
    mode: 'live',
    audience: AUDIENCE,
    jwks,
    auth: {
      key_hashes: [],
      jwt: {
        issuer: ISSUER,
        jwks_url: 'https://idp.example.com/jwks',
        role_claim: 'role',
        subject_claim: 'sub',
      },
    },
  });
  return { auth, verifications };
}

const jwt = (expiresAt: number) =>
  new SignJWT({ role: 'analyst' })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject('Ana.Analyst@Example.com')
    .setIssuedAt()
    .setExpirationTime(expiresAt)
    .sign(privateKey);

describe('verified tokens', () => {
  it('a token verified once is accepted again without verifying, until the remembering time is up', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { auth, verifications } = counted();
    const token = await jwt(Math.floor(Date.now() / 1000) + 3600);
    const first = await auth(token);
    const second = await auth(token);
    expect(first).toMatchObject({ ok: true, principal: { id: 'ana.analyst@example.com', role: 'analyst' } });
    expect(second).toEqual(first);
    expect(verifications.count).toBe(1);
    vi.setSystemTime(Date.now() + VERIFIED_TOKEN_TTL_MS + 1);
    expect((await auth(token)).ok).toBe(true);
    expect(verifications.count).toBe(2);
  });

  it('a remembered token is refused once it expires', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { auth } = counted();
    const token = await jwt(Math.floor(Date.now() / 1000) + 5);
    expect((await auth(token)).ok).toBe(true);
    vi.setSystemTime(Date.now() + 6_000);
    expect(await auth(token)).toEqual({ ok: false, reason: 'token expired' });
  });

  it('a refusal is not remembered: every attempt with a bad token is verified', async () => {
    const { auth, verifications } = counted();
    const token = await jwt(Math.floor(Date.now() / 1000) + 3600);
    const forged = `${token.slice(0, -4)}AAAA`;
    expect((await auth(forged)).ok).toBe(false);
    expect((await auth(forged)).ok).toBe(false);
    expect(verifications.count).toBe(2);
  });
});
