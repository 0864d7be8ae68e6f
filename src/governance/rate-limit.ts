/**
 * Token buckets per principal × tool. A bucket holds `capacity` tokens and refills continuously
 * at `per_minute`; a call takes one token or is refused with the time until the next token.
 *
 * Two stores behind one interface: in-memory (one process) and Redis (several replicas share the
 * buckets; the take is one atomic Lua script, so replicas never over-admit).
 *
 * Redis never holds the key a caller names (a principal id, a client's IP address or IPv6 /64):
 * its buckets are kept under the key's keyed hash ({@link bucketKeyHasher}), so Redis, its dumps and
 * its replicas never hold a raw address. Replicas given the same secret (the audit key) hash alike.
 * The in-process store keeps keys as given: they never leave the process (which holds the request
 * they came from anyway), and every call takes a token, so hashing there would cost each call ~1 µs
 * for nothing.
 */
import { hash } from 'node:crypto';
import type { BucketConfig } from '../config.ts';
import { purposeKey } from './audit-key.ts';

/**
 * At most this many buckets in one process unless a caller says otherwise; past it the least
 * recently used is forgotten (it starts full again, as it would have once refilled). Enough for
 * thousands of principals × every tool; a flood of distinct client networks cannot grow it further.
 */
export const MAX_LOCAL_BUCKETS = 100_000;

// 128 bits (22 base64url characters): no two keys share a bucket at any number of keys.
const KEY_HASH_CHARS = 22;
// SHA-256's block: the HMAC pads are this long.
const BLOCK = 64;
// Keys up to this many UTF-8 bytes are hashed without allocating (principal × tool, client network).
const SCRATCH = 1024;

/**
 * The name a bucket is kept under: HMAC-SHA-256 of the caller's key, truncated to 128 bits,
 * base64url. `secret`: the runtime's audit key, which every replica shares; absent, a random one
 * (this process only).
 *
 * HMAC written out (RFC 2104) over the one-shot `crypto.hash`, with the pads computed once: every
 * call takes a token, and `createHmac` sets its key up again on each use (~3 µs with a KeyObject,
 * ~15 µs with a Buffer, against ~1 µs here). Tests hold it equal to `createHmac`.
 */
export function bucketKeyHasher(secret?: string | Buffer): (key: string) => string {
  const bucketKey = purposeKey(secret, 'fraudgate rate-limit bucket v1');
  const innerPad = Buffer.alloc(BLOCK, 0x36);
  // The outer pad, then the inner digest (32 bytes) written after it on each call.
  const outer = Buffer.alloc(BLOCK + 32, 0x5c);
  for (let i = 0; i < bucketKey.length; i += 1) {
    innerPad[i] = bucketKey[i]! ^ 0x36;
    outer[i] = bucketKey[i]! ^ 0x5c;
  }
  const scratch = Buffer.alloc(BLOCK + SCRATCH);
  innerPad.copy(scratch);
  return (key) => {
    // `write` stops short of a character that does not fit: well under the end, the key is whole.
    const written = scratch.write(key, BLOCK, 'utf8');
    const inner =
      written < SCRATCH - 4
        ? scratch.subarray(0, BLOCK + written)
        : Buffer.concat([innerPad, Buffer.from(key, 'utf8')]);
    outer.write(hash('sha256', inner, 'hex'), BLOCK, 'hex');
    return hash('sha256', outer, 'base64url').slice(0, KEY_HASH_CHARS);
  };
}

export interface RateLimitDecision {
  allowed: boolean;
  /** When refused: milliseconds until a token is available. */
  retryAfterMs: number;
  remaining: number;
  /** Refused because the cost is more than the bucket's capacity: waiting never admits it (retryAfterMs 0). */
  overCapacity?: true;
}

/** A take's cost must be a positive integer: anything else is a bug in the caller, not a refusal. */
function checkCost(cost: number): void {
  if (!Number.isInteger(cost) || cost < 1)
    throw new RangeError(`rate limit cost must be a positive integer, got ${String(cost)}`);
}

export interface RateLimiter {
  /**
   * Take one token (`cost` tokens, all or none: a JSON-RPC batch of N requests costs N; a cost over
   * the capacity is refused with `overCapacity`, never admitted). Rejects when the store itself is
   * unreachable (callers fail closed), and (a RangeError) for a cost that is not a positive integer.
   */
  take(key: string, bucket: BucketConfig, cost?: number): Promise<RateLimitDecision>;
  /**
   * The same, answered at once, by a store in this process: the pipeline takes a token without an
   * await (a turn of the event loop's microtasks on every call). Absent for remote stores.
   */
  takeNow?(key: string, bucket: BucketConfig, cost?: number): RateLimitDecision;
  /** Whether the store answers now (for /readyz); never rejects. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** The bucket arithmetic, shared by both stores (the Lua script mirrors it). */
function refill(tokens: number, updatedAt: number, now: number, config: BucketConfig, cost = 1) {
  const refillPerMs = config.per_minute / 60_000;
  const current = Math.min(config.capacity, tokens + Math.max(0, now - updatedAt) * refillPerMs);
  const need = cost;
  if (need > config.capacity)
    return {
      tokens: current,
      decision: {
        allowed: false,
        retryAfterMs: 0,
        remaining: Math.floor(current),
        overCapacity: true as const,
      },
    };
  if (current >= need)
    return {
      tokens: current - need,
      decision: { allowed: true, retryAfterMs: 0, remaining: Math.floor(current - need) },
    };
  return {
    tokens: current,
    decision: { allowed: false, retryAfterMs: Math.ceil((need - current) / refillPerMs), remaining: 0 },
  };
}

/** The in-process store, which can say how many buckets it holds. */
export interface LocalRateLimiter extends RateLimiter {
  takeNow(key: string, bucket: BucketConfig, cost?: number): RateLimitDecision;
  /** How many buckets are held now (never more than `maxKeys`). */
  size(): number;
}

/**
 * Buckets in this process: at most `maxKeys` ({@link MAX_LOCAL_BUCKETS} by default), the least
 * recently used forgotten first (its key starts full again), since callers do not choose every key
 * from a bounded set (client networks). Keys are kept as given (see the top of this file).
 */
export function createRateLimiter(
  now: () => number = Date.now,
  options: { maxKeys?: number } = {},
): LocalRateLimiter {
  const buckets = new Map<string, { tokens: number; updatedAt: number }>();
  const maxKeys = options.maxKeys ?? MAX_LOCAL_BUCKETS;
  const takeNow = (key: string, config: BucketConfig, cost = 1): RateLimitDecision => {
    checkCost(cost);
    const t = now();
    const state = buckets.get(key);
    if (!state) {
      if (buckets.size >= maxKeys) {
        const oldest = buckets.keys().next().value;
        if (oldest !== undefined) buckets.delete(oldest);
      }
      const { tokens, decision } = refill(config.capacity, t, t, config, cost);
      buckets.set(key, { tokens, updatedAt: t });
      return decision;
    }
    // Map order is insertion order: re-inserting keeps the busiest keys last, away from eviction.
    buckets.delete(key);
    buckets.set(key, state);
    const { tokens, decision } = refill(state.tokens, state.updatedAt, t, config, cost);
    state.tokens = tokens;
    // Never backwards (a clock stepped back): the step would be credited again as refill.
    state.updatedAt = Math.max(state.updatedAt, t);
    return decision;
  };
  return {
    takeNow,
    async take(key, config, cost) {
      return takeNow(key, config, cost);
    },
    async ping() {
      return true;
    },
    async close() {},
    size: () => buckets.size,
  };
}

/** The minimal Redis surface the limiter needs (ioredis implements it). */
export interface RedisLike {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  ping(): Promise<unknown>;
  quit(): Promise<unknown>;
}

// KEYS[1] bucket; ARGV: capacity, per_minute, now_ms ('' = Redis's own clock), ttl_ms, cost.
// Returns {allowed, retry_after_ms, remaining}; retry_after_ms -1: the cost exceeds the capacity.
// Time is Redis's (TIME; a script calling it may still write: effects replication, Redis >= 5), so
// replicas whose clocks differ read one clock. updated_at never moves backwards, even so: a
// failover to a Redis whose clock lags, or a caller's clock, must not credit the difference twice.
export const TAKE_SCRIPT = `
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 60000
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * per_ms)
local need = tonumber(ARGV[5]) or 1
if need < 1 or need % 1 ~= 0 then
  return redis.error_reply('rate limit cost must be a positive integer')
end
local allowed = 0
local retry = 0
if need > capacity then
  retry = -1
elseif tokens >= need then
  tokens = tokens - need
  allowed = 1
else
  retry = math.ceil((need - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_at', tostring(math.max(now, updated)))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, retry, math.floor(tokens)}
`;

/**
 * Buckets in Redis. Time is Redis's own clock, read inside the script, so replicas whose clocks
 * differ cannot be credited the difference as refill by taking in turn. `now` (tests only) sends
 * this process's time instead; even then a bucket's time never moves backwards. Keys expire once a
 * bucket would be full again. `keySecret`: the same on every replica, or they would keep a bucket
 * each ({@link bucketKeyHasher}).
 */
export function createRedisRateLimiter(
  redis: RedisLike,
  options: { prefix?: string; now?: () => number; keySecret: string | Buffer },
): RateLimiter {
  const prefix = options.prefix ?? 'fraudgate:ratelimit:';
  const now = options.now;
  const hashKey = bucketKeyHasher(options.keySecret);
  return {
    async take(rawKey, config, cost = 1) {
      checkCost(cost);
      const key = hashKey(rawKey);
      const fullAfterMs = Math.ceil((config.capacity / config.per_minute) * 60_000) + 1000;
      const reply = (await redis.eval(
        TAKE_SCRIPT,
        1,
        prefix + key,
        config.capacity,
        config.per_minute,
        now ? now() : '',
        fullAfterMs,
        cost,
      )) as [number, number, number];
      if (reply[1] === -1)
        return { allowed: false, retryAfterMs: 0, remaining: reply[2], overCapacity: true };
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
