/**
 * One person, one identity (issue 13, item 7): ids are normalized once at every edge (API keys,
 * JWT subjects, the stdio analyst), so four-eyes sees `Ana.Analyst@Example.com` and
 * `ana.analyst@example.com` as the same person; a JWT issued in the future is refused.
 */
import { createHash } from 'node:crypto';
import { SignJWT, type CryptoKey, type JWTVerifyGetKey } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator, MAX_CLOCK_SKEW_SECONDS } from '../../src/auth/authenticator.ts';
import { normalizeIdentity } from '../../src/auth/identity.ts';
import { stdioPrincipal } from '../../src/transports/stdio.ts';
import { setup } from '../helpers/setup.ts';
import { testIdentityProvider } from '../helpers/identity-provider.ts';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const ISSUER = 'https://idp.example.com/';
const AUDIENCE = 'http://127.0.0.1:8787/mcp';

let privateKey: CryptoKey;
let jwks: JWTVerifyGetKey;
beforeAll(async () => {
  ({ privateKey, jwks } = await testIdentityProvider());
});

const authenticator = () =>
  createAuthenticator({
    mode: 'live',
    audience: AUDIENCE,
    jwks,
    auth: {
      key_hashes: [
        {
          sha256: sha('approver-key'),
          principal: ' Ana.Analyst@Example.com',
          kind: 'user',
          role: 'approver',
        },
      ],
      jwt: {
        issuer: ISSUER,
        jwks_url: 'https://idp.example.com/jwks',
        role_claim: 'role',
        subject_claim: 'sub',
      },
    },
  });

const jwt = (claims: { sub: string; iat?: number }) => {
  const builder = new SignJWT({ role: 'analyst' })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(claims.sub)
    .setExpirationTime('1h');
  if (claims.iat !== undefined) builder.setIssuedAt(claims.iat);
  return builder.sign(privateKey);
};

describe('identity normalization', () => {
  it('case-folds emails, trims and applies Unicode NFC; other ids keep their case', () => {
    expect(normalizeIdentity('  Ana.Analyst@Example.COM ')).toBe('ana.analyst@example.com');
    // `é` as e + combining acute (NFD) and as one code point (NFC) are one person.
    expect(normalizeIdentity('Jose\u0301@Example.com')).toBe(normalizeIdentity('jos\u00e9@example.com'));
    expect(normalizeIdentity(' svc-Outbox ')).toBe('svc-Outbox');
  });

  it('every edge normalizes: API-key principals, JWT subjects and the stdio analyst', async () => {
    const auth = authenticator();
    const key = await auth('approver-key');
    expect(key.ok && key.principal.id).toBe('ana.analyst@example.com');
    const token = await jwt({ sub: 'Bob.Analyst@EXAMPLE.com' });
    const fromJwt = await auth(token);
    expect(fromJwt.ok && fromJwt.principal.id).toBe('bob.analyst@example.com');
    expect(stdioPrincipal(' Ana.Analyst@Example.com').id).toBe('ana.analyst@example.com');
  });

  it('four-eyes: an approver key configured as Ana.Analyst@Example.com cannot approve a request by ana.analyst@example.com', async () => {
    const env = await setup({
      config: { approvals: { tools: { apply_label: 'four_eyes' } } },
      principal: stdioPrincipal('ana.analyst@example.com'),
    });
    try {
      const pending = await env.callTool('apply_label', {
        user_id: 'sandbox-high-risk',
        abuse_type: 'payment_abuse',
        is_bad: true,
        description: 'chargeback confirmed',
      });
      expect(pending.error.code).toBe('APPROVAL_PENDING');
      const result = await authenticator()('approver-key');
      if (!result.ok) throw new Error(result.reason);
      await expect(
        env.runtime.pipeline.decide(pending.error.approval_id as string, {
          approve: true,
          approver: result.principal,
        }),
      ).rejects.toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('Four-eyes') });
    } finally {
      await env.close();
    }
  });
});

describe('JWT issued-at', () => {
  it(`refuses a token issued more than ${MAX_CLOCK_SKEW_SECONDS} s in the future, accepts small skew`, async () => {
    const auth = authenticator();
    const now = Math.floor(Date.now() / 1000);
    const future = await auth(await jwt({ sub: 'ana@example.com', iat: now + 3600 }));
    expect(future).toMatchObject({ ok: false, reason: expect.stringContaining("'iat'") });
    expect((await auth(await jwt({ sub: 'ana@example.com', iat: now + 10 }))).ok).toBe(true);
    expect((await auth(await jwt({ sub: 'ana@example.com', iat: now - 60 }))).ok).toBe(true);
  });
});
