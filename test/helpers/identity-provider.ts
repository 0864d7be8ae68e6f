/**
 * A test identity provider for the bearer-token tests: an ES256 key pair and the JWKS that publishes
 * its public half (kid `k1`), as the authenticator looks keys up. Tests sign their tokens with
 * `privateKey` (jose's SignJWT).
 */
import { createLocalJWKSet, exportJWK, generateKeyPair, type CryptoKey, type JWTVerifyGetKey } from 'jose';

export async function testIdentityProvider(): Promise<{ privateKey: CryptoKey; jwks: JWTVerifyGetKey }> {
  const pair = await generateKeyPair('ES256');
  const jwks = createLocalJWKSet({
    keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }],
  });
  return { privateKey: pair.privateKey, jwks };
}
