/**
 * Token buckets per principal × tool. A bucket holds `capacity` tokens and refills continuously
 * at `per_minute`; a call takes one token or is refused with the time until the next token.
 * In-memory: one process, one set of buckets (several replicas would share them in Redis).
 */
import type { BucketConfig } from '../config.ts';

export interface RateLimitDecision {
  allowed: boolean;
  /** When refused: milliseconds until a token is available. */
  retryAfterMs: number;
  remaining: number;
}

export interface RateLimiter {
  take(key: string, bucket: BucketConfig): RateLimitDecision;
}

export function createRateLimiter(now: () => number = Date.now): RateLimiter {
  const buckets = new Map<string, { tokens: number; updatedAt: number }>();
  return {
    take(key, config) {
      const t = now();
      const refillPerMs = config.per_minute / 60_000;
      const state = buckets.get(key) ?? { tokens: config.capacity, updatedAt: t };
      state.tokens = Math.min(config.capacity, state.tokens + (t - state.updatedAt) * refillPerMs);
      state.updatedAt = t;
      buckets.set(key, state);
      if (state.tokens >= 1) {
        state.tokens -= 1;
        return { allowed: true, retryAfterMs: 0, remaining: Math.floor(state.tokens) };
      }
      return { allowed: false, retryAfterMs: Math.ceil((1 - state.tokens) / refillPerMs), remaining: 0 };
    },
  };
}
