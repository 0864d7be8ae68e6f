/**
 * The seam between bearer credentials and principals, shared by the HTTP transport and the
 * approval console: given a raw bearer token, who is it? Implementations: configured API keys
 * (stored as hashes), JWTs from the organisation's identity provider, and the sandbox dev token.
 */
import type { Principal } from '../tool.ts';

export type AuthResult =
  | { ok: true; principal: Principal; /** Epoch seconds; API keys never expire. */ expiresAt?: number }
  | { ok: false; /** Why, safe to show (no token material). */ reason: string };

export type Authenticator = (token: string) => Promise<AuthResult>;
