/**
 * Token buckets per principal × tool. A bucket holds `capacity` tokens and refills continuously
 * at `per_minute`; a call takes one token or is refused with the time until the next token.
 *
 * Two stores behind one interface: in-memory (one process) and Redis (several replicas share the
 * buckets; the take is one atomic Lua script, so replicas never over-admit).
 */
import type { BucketConfig } from '../config.ts';

export interface RateLimitDecision {
  allowed: boolean;
  /** When refused: milliseconds until a token is available. */
  retryAfterMs: number;
  remaining: number;
}

export interface RateLimiter {
  /** Take one token. Rejects only when the store itself is unreachable (callers fail closed). */
  take(key: string, bucket: BucketConfig): Promise<RateLimitDecision>;
  /**
   * The same, answered at once, by a store in this process: the pipeline takes a token without an
   * await (a turn of the event loop's microtasks on every call). Absent for remote stores.
   */
  takeNow?(key: string, bucket: BucketConfig): RateLimitDecision;
  /** Whether the store answers now (for /readyz); never rejects. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** The bucket arithmetic, shared by both stores (the Lua script mirrors it). */
function refill(tokens: number, updatedAt: number, now: number, config: BucketConfig) {
  const refillPerMs = config.per_minute / 60_000;
  const current = Math.min(config.capacity, tokens + Math.max(0, now - updatedAt) * refillPerMs);
  if (current >= 1)
    return {
      tokens: current - 1,
      decision: { allowed: true, retryAfterMs: 0, remaining: Math.floor(current - 1) },
    };
  return {
    tokens: current,
    decision: { allowed: false, retryAfterMs: Math.ceil((1 - current) / refillPerMs), remaining: 0 },
  };
}

/**
 * Buckets in this process. With `maxKeys`, at most that many buckets are kept, the least recently
 * used forgotten first (its key starts full again): for keys that callers do not choose from a
 * bounded set, such as client networks.
 */
export function createRateLimiter(
  now: () => number = Date.now,
  options: { maxKeys?: number } = {},
): RateLimiter {
  const buckets = new Map<string, { tokens: number; updatedAt: number }>();
  const maxKeys = options.maxKeys ?? Infinity;
  const takeNow = (key: string, config: BucketConfig): RateLimitDecision => {
    const t = now();
    const state = buckets.get(key);
    if (!state) {
      if (buckets.size >= maxKeys) {
        const oldest = buckets.keys().next().value;
        if (oldest !== undefined) buckets.delete(oldest);
      }
      const { tokens, decision } = refill(config.capacity, t, t, config);
      buckets.set(key, { tokens, updatedAt: t });
      return decision;
    }
    if (maxKeys !== Infinity) {
      // Map order is insertion order: re-inserting keeps the busiest keys last, away from eviction.
      buckets.delete(key);
      buckets.set(key, state);
    }
    const { tokens, decision } = refill(state.tokens, state.updatedAt, t, config);
    state.tokens = tokens;
    state.updatedAt = t;
    return decision;
  };
  return {
    takeNow,
    async take(key, config) {
      return takeNow(key, config);
    },
    async ping() {
      return true;
    },
    async close() {},
  };
}

/** The minimal Redis surface the limiter needs (ioredis implements it). */
export interface RedisLike {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  ping(): Promise<unknown>;
  quit(): Promise<unknown>;
}

// KEYS[1] bucket; ARGV: capacity, per_minute, now_ms, ttl_ms. Returns {allowed, retry_after_ms, remaining}.
const TAKE_SCRIPT = `
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 60000
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * per_ms)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, retry, math.floor(tokens)}
`;

/**
 * Buckets in Redis. Time comes from this process (replicas are assumed NTP-synchronised; a skew
 * only shifts refill by that much). Keys expire once a bucket would be full again.
 */
export function createRedisRateLimiter(
  redis: RedisLike,
  options: { prefix?: string; now?: () => number } = {},
): RateLimiter {
  const prefix = options.prefix ?? 'fraudgate:ratelimit:';
  const now = options.now ?? Date.now;
  return {
    async take(key, config) {
      const fullAfterMs = Math.ceil((config.capacity / config.per_minute) * 60_000) + 1000;
      const reply = (await redis.eval(
        TAKE_SCRIPT,
        1,
        prefix + key,
        config.capacity,
        config.per_minute,
        now(),
        fullAfterMs,
      )) as [number, number, number];
      return { allowed: reply[0] === 1, retryAfterMs: reply[1], remaining: reply[2] };
    },
    async ping() {
      // ioredis queues commands while it reconnects; a probe must answer quickly either way.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 1000);
      });
      const answer = redis.ping().then(
        () => true,
        () => false,
      );
      try {
        return await Promise.race([answer, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      await redis.quit();
    },
  };
}

/** Same arithmetic as the Lua script, exported so tests can compare the two stores. */
export const bucketArithmetic = refill;
