/**
 * The seam between bearer credentials and principals, shared by the HTTP transport and the
 * approval console: given a raw bearer token, who is it? Implementations: configured API keys
 * (stored as hashes), JWTs from the organisation's identity provider, and the sandbox dev token.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { JWTVerifyGetKey } from 'jose';
import type { Config } from '../config.ts';
import type { Principal } from '../tool.ts';
import { normalizeIdentity } from './identity.ts';

export type AuthResult =
  | {
      ok: true;
      principal: Principal;
      /** Epoch seconds; API keys never expire. */
      expiresAt?: number;
      /**
       * Which configured credential proved it (an API key or a sandbox token), as an opaque id that
       * reveals nothing of the key; absent for JWTs, which carry their own expiry. See `stillHolds`.
       */
      credential?: string;
      /** For a JWT that stands for an application, not a person: why (claim names only, no values). */
      serviceBecause?: string;
    }
  | {
      ok: false;
      /** Why, safe to show (no token material). */
      reason: string;
      /** The token is genuine but grants no usable role: 403 rather than 401. */
      forbidden?: boolean;
    };

export type Authenticator = ((token: string) => Promise<AuthResult>) & {
  /**
   * Whether the credential `credential` (from an earlier AuthResult) is still configured and still
   * stands for this principal (same id, kind and role): something that outlives a sign-in (a
   * console session) asks this on every use, so removing or changing a key ends it.
   */
  stillHolds?: (credential: string, principal: Principal) => boolean;
};

/** The opaque id of a configured credential, from the SHA-256 hex digest of its token. */
const credentialId = (digestHex: string) =>
  'c' + createHash('sha256').update(`fraudgate credential:${digestHex}`).digest('hex').slice(0, 32);

/** The principal the sandbox dev token stands for. */
export const SANDBOX_DEV_PRINCIPAL: Principal = { id: 'sandbox-dev', kind: 'user', role: 'admin' };

/**
 * Sandbox personas, so a newcomer can watch an analyst's request be approved by a different person:
 * their tokens are derived from the dev token (stable for a given FRAUDGATE_DEV_TOKEN).
 */
export const SANDBOX_PERSONAS: readonly Principal[] = [
  { id: 'sandbox-analyst@example.com', kind: 'user', role: 'analyst' },
  { id: 'sandbox-approver@example.com', kind: 'user', role: 'approver' },
];

/** The token of a sandbox persona, derived from the dev token. */
export function sandboxPersonaToken(devToken: string, persona: Principal): string {
  return createHmac('sha256', devToken).update(persona.id).digest('base64url').slice(0, 32);
}

/**
 * Claims that name the OAuth client; when one equals `sub`, the token's subject is the client itself.
 * RFC 9068 `client_id`, Okta `cid`, OIDC `azp`, Entra v1 `appid`.
 */
const CLIENT_ID_CLAIMS = ['client_id', 'cid', 'azp', 'appid'] as const;

/**
 * Why a token is an application's own (an OAuth client-credentials grant or a service account), not
 * one a person signed in for, or undefined when it carries no such marker. Auth0 marks those tokens
 * `gty: client-credentials`; RFC 9068 and Okta give them the client id as `sub` (`client_id`, `cid`);
 * Entra app-only tokens carry `idtyp: app`; Keycloak's service-account user is named
 * `service-account-<client>` and its tokens carry `clientHost` / `clientAddress`. The text names
 * claims, never their values.
 */
export function machineMarker(payload: Record<string, unknown>): string | undefined {
  if (payload.gty === 'client-credentials') return "its 'gty' is client-credentials";
  for (const claim of CLIENT_ID_CLAIMS) {
    const value = payload[claim];
    if (typeof value === 'string' && value !== '' && value === payload.sub)
      return `its '${claim}' equals its 'sub'`;
  }
  if (payload.idtyp === 'app') return "its 'idtyp' is app";
  const username = payload.preferred_username;
  if (typeof username === 'string' && username.toLowerCase().startsWith('service-account-'))
    return "its 'preferred_username' names a service account";
  // Keycloak's service-account client scope maps these session notes only for client-credentials grants.
  for (const claim of ['clientHost', 'clientAddress'])
    if (payload[claim] !== undefined) return `it carries '${claim}' (a service account's)`;
  return undefined;
}

type HumanClaim = NonNullable<NonNullable<Config['auth']['jwt']>['human_claim']>;

/** Whether the token carries what `auth.jwt.human_claim` requires of a person. */
function carriesHumanClaim(payload: Record<string, unknown>, rule: HumanClaim): boolean {
  const value = payload[rule.name];
  const found = Array.isArray(value) ? value : [value];
  if (!rule.values) return found.some((v) => v !== undefined && v !== null && v !== '' && v !== false);
  return found.some((v) => rule.values!.includes(v as string | number | boolean));
}

/**
 * Why a verified JWT's principal is a service rather than a person, or undefined for a person's.
 * Fails closed: a machine marker makes it a service whatever else it carries, and with
 * `auth.jwt.human_claim` set, so does lacking that claim. A service may call tools; it never signs
 * in to the console or decides approvals.
 */
export function whyServiceToken(
  payload: Record<string, unknown>,
  humanClaim: HumanClaim | undefined,
): string | undefined {
  const marker = machineMarker(payload);
  if (marker) return marker;
  if (humanClaim && !carriesHumanClaim(payload, humanClaim)) {
    return humanClaim.values
      ? `its '${humanClaim.name}' is not one of the values auth.jwt.human_claim requires of a person`
      : `it lacks the '${humanClaim.name}' claim auth.jwt.human_claim requires of a person`;
  }
  return undefined;
}

const ROLE_RANK: readonly Principal['role'][] = ['admin', 'analyst', 'approver', 'viewer'];

export interface AuthenticatorOptions {
  mode: Config['mode'];
  auth: Config['auth'];
  /** The audience a JWT must carry when `auth.jwt.audience` is unset: this server's MCP URL. */
  audience: string;
  /** Accepted as an admin token in sandbox mode only; ignored in live mode. */
  devToken?: string;
  /** Verification keys for JWTs; default: the remote JWKS at `auth.jwt.jwks_url` (cached by jose). */
  jwks?: JWTVerifyGetKey;
}

/** How long a verified token is accepted without verifying it again (never past its own expiry). */
export const VERIFIED_TOKEN_TTL_MS = 60_000;
/** Tokens remembered at most (the oldest goes first): one per active client is the expected load. */
const VERIFIED_TOKENS_KEPT = 1_000;

const sha256 = (value: string) => createHash('sha256').update(value).digest();

/**
 * How far in the future a JWT's `iat` may be: clocks drift a little, but a token "issued" later
 * than that was minted wrongly or to outlive its real lifetime.
 */
export const MAX_CLOCK_SKEW_SECONDS = 60;

/** The strongest fraudgate role named by a claim (a string, a space-separated string or an array). */
function roleFrom(claim: unknown): Principal['role'] | undefined {
  const names = Array.isArray(claim) ? claim : typeof claim === 'string' ? claim.split(/\s+/) : [];
  return ROLE_RANK.find((role) => names.includes(role));
}

/**
 * The Authenticator for HTTP and the console: configured API keys (compared by SHA-256, so the
 * config never holds a usable key), JWTs verified for signature, issuer, audience and expiry, and
 * in sandbox mode the dev token. Failure reasons never echo token material.
 */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const keys = new Map(options.auth.key_hashes.map((k) => [k.sha256, k]));
  const jwtConfig = options.auth.jwt;
  // jose is loaded with the first JWT, not at start-up: stdio and API-key deployments never need it.
  let jwks = options.jwks;
  const jose = async () => {
    const loaded = await import('jose');
    if (jwtConfig) jwks ??= loaded.createRemoteJWKSet(new URL(jwtConfig.jwks_url));
    return loaded;
  };
  const devDigest = options.mode === 'sandbox' && options.devToken ? sha256(options.devToken) : undefined;
  const personas = new Map(
    options.mode === 'sandbox' && options.devToken
      ? SANDBOX_PERSONAS.map(
          (p) => [sha256(sandboxPersonaToken(options.devToken!, p)).toString('hex'), p] as const,
        )
      : [],
  );

  // Every principal leaves here with its id normalized: one person, one id (identity.ts).
  const authenticate: Authenticator = async (token) => {
    if (!token) return { ok: false, reason: 'missing bearer token' };
    const digest = sha256(token);
    // Constant-time: the dev token is a plain secret, not a hash lookup.
    const hex = digest.toString('hex');
    if (devDigest && timingSafeEqual(digest, devDigest))
      return { ok: true, principal: SANDBOX_DEV_PRINCIPAL, credential: credentialId(hex) };
    const persona = personas.get(hex);
    if (persona) return { ok: true, principal: persona, credential: credentialId(hex) };
    const key = keys.get(hex);
    if (key)
      return {
        ok: true,
        principal: { id: key.principal, kind: key.kind, role: key.role },
        credential: credentialId(hex),
      };
    if (!jwtConfig || token.split('.').length !== 3) return { ok: false, reason: 'invalid token' };
    const { jwtVerify, errors: joseErrors } = await jose();
    if (!jwks) return { ok: false, reason: 'invalid token' };
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer: jwtConfig.issuer,
        audience: jwtConfig.audience ?? options.audience,
        requiredClaims: ['exp'],
        ...(jwtConfig.algorithms ? { algorithms: jwtConfig.algorithms } : {}),
      });
      if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + MAX_CLOCK_SKEW_SECONDS) {
        return {
          ok: false,
          reason: "token is issued in the future ('iat'); check the identity provider's clock",
        };
      }
      const subject = payload[jwtConfig.subject_claim];
      if (typeof subject !== 'string' || subject === '') {
        return { ok: false, reason: `token has no '${jwtConfig.subject_claim}' claim` };
      }
      const role = roleFrom(payload[jwtConfig.role_claim]);
      if (!role) {
        return {
          ok: false,
          forbidden: true,
          reason: `token grants no fraudgate role (claim '${jwtConfig.role_claim}' must name viewer, analyst, approver or admin)`,
        };
      }
      const serviceBecause = whyServiceToken(payload, jwtConfig.human_claim);
      return {
        ok: true,
        principal: { id: subject, kind: serviceBecause ? 'service' : 'user', role },
        expiresAt: payload.exp,
        ...(serviceBecause ? { serviceBecause } : {}),
      };
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) return { ok: false, reason: 'token expired' };
      if (error instanceof joseErrors.JWTClaimValidationFailed) {
        if (error.claim === 'aud')
          return { ok: false, reason: 'token was not issued for this server (audience)' };
        if (error.claim === 'iss') return { ok: false, reason: 'token issuer is not trusted' };
        return { ok: false, reason: `token claim '${error.claim}' is invalid` };
      }
      return { ok: false, reason: 'invalid token' };
    }
  };
  // Every MCP request carries its token: a verified one is remembered (never past its expiry), so a
  // session's calls do not pay a digest, a JWT signature check and normalization each. Refusals are
  // not remembered: a bad token costs its sender a verification every time.
  const verified = new Map<string, { result: AuthResult & { ok: true }; until: number }>();
  // Every configured credential's id → the principal it stands for now.
  const configured = new Map<string, Principal>([
    ...(devDigest ? [[credentialId(devDigest.toString('hex')), SANDBOX_DEV_PRINCIPAL] as const] : []),
    ...[...personas].map(([hex, p]) => [credentialId(hex), p] as const),
    ...[...keys.values()].map(
      (k) => [credentialId(k.sha256), { id: k.principal, kind: k.kind, role: k.role }] as const,
    ),
  ]);
  const stillHolds = (credential: string, principal: Principal): boolean => {
    const now = configured.get(credential);
    return (
      now !== undefined &&
      normalizeIdentity(now.id) === normalizeIdentity(principal.id) &&
      now.kind === principal.kind &&
      now.role === principal.role
    );
  };
  const cached = async (token: string): Promise<AuthResult> => {
    const now = Date.now();
    const hit = verified.get(token);
    if (hit && hit.until > now) return hit.result;
    if (hit) verified.delete(token);
    const result = await authenticate(token);
    if (!result.ok) return result;
    const principal = Object.freeze({ ...result.principal, id: normalizeIdentity(result.principal.id) });
    const accepted = Object.freeze({ ...result, principal });
    const until = Math.min(now + VERIFIED_TOKEN_TTL_MS, (result.expiresAt ?? Infinity) * 1000);
    if (until > now) {
      if (verified.size >= VERIFIED_TOKENS_KEPT) verified.delete(verified.keys().next().value!);
      verified.set(token, { result: accepted, until });
    }
    return accepted;
  };
  return Object.assign(cached, { stillHolds });
}
