/**
 * Rate-limit buckets: the in-memory store, the Redis store shared by replicas (skipped with a
 * message where no Redis listens on 127.0.0.1:6379), and failing closed when Redis is down.
 */
import { createHmac, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  bucketKeyHasher,
  createRateLimiter,
  createRedisRateLimiter,
  MAX_LOCAL_BUCKETS,
  TAKE_SCRIPT,
} from '../../src/governance/rate-limit.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { createLogger } from '../../src/logger.ts';
import { checkServices } from '../../src/startup.ts';
import { listening } from '../helpers/services.ts';
import { startTcpForwarder } from '../helpers/tcp-forwarder.ts';
import { setup } from '../helpers/setup.ts';

const BUCKET = { capacity: 2, per_minute: 60 }; // one token a second

const redisUp = await listening(6379);
if (!redisUp) console.warn('rate-limit tests: no Redis on 127.0.0.1:6379, skipping the Redis store tests');

describe('in-memory buckets', () => {
  it('admit the burst, refuse with the time to the next token, refill with time', async () => {
    let t = 1_000_000;
    const limiter = createRateLimiter(() => t);
    expect((await limiter.take('k', BUCKET)).allowed).toBe(true);
    expect((await limiter.take('k', BUCKET)).allowed).toBe(true);
    const refused = await limiter.take('k', BUCKET);
    expect(refused).toMatchObject({ allowed: false });
    expect(refused.retryAfterMs).toBe(1000);
    t += 1000;
    expect((await limiter.take('k', BUCKET)).allowed).toBe(true);
    expect((await limiter.take('other', BUCKET)).allowed).toBe(true);
  });

  it('answer at once (takeNow, which the pipeline uses) from the same buckets as take', async () => {
    let t = 1_000_000;
    const limiter = createRateLimiter(() => t);
    const first = limiter.takeNow?.('k', BUCKET);
    expect(first).not.toBeInstanceOf(Promise);
    expect(first).toMatchObject({ allowed: true, remaining: 1 });
    expect((await limiter.take('k', BUCKET)).allowed).toBe(true);
    expect(limiter.takeNow?.('k', BUCKET)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
    t += 1000;
    expect(limiter.takeNow?.('k', BUCKET)).toMatchObject({ allowed: true, remaining: 0 });
  });

  it('credit a clock stepped back and forward again only once', async () => {
    let t = 1_000_000;
    const limiter = createRateLimiter(() => t);
    const bucket = { capacity: 5, per_minute: 60 };
    let allowed = 0;
    // 100 calls over 10 s, the clock stepping 2 s back and forward on every call: honest is 5 + 10.
    for (let i = 0; i < 100; i += 1) {
      t = 1_000_000 + i * 100 + (i % 2 ? 0 : 2000);
      if ((await limiter.take('k', bucket)).allowed) allowed += 1;
    }
    expect(allowed).toBeLessThanOrEqual(5 + 10 + 2);
  });

  it('keep at most maxKeys buckets, forgetting the least recently used first', async () => {
    const one = { capacity: 1, per_minute: 1 };
    const limiter = createRateLimiter(() => 0, { maxKeys: 2 });
    expect((await limiter.take('a', one)).allowed).toBe(true);
    expect((await limiter.take('b', one)).allowed).toBe(true);
    // `a` used again, so `b` is now the least recently used: a third key evicts it.
    expect((await limiter.take('a', one)).allowed).toBe(false);
    expect((await limiter.take('c', one)).allowed).toBe(true);
    expect((await limiter.take('a', one)).allowed).toBe(false);
    expect((await limiter.take('b', one)).allowed).toBe(true);
  });

  it('hold a bounded number of buckets by default, however many distinct keys come; an active key keeps its own', () => {
    const t = 1_000_000;
    const limiter = createRateLimiter(() => t);
    const one = { capacity: 1, per_minute: 1 };
    expect(limiter.takeNow('active', one).allowed).toBe(true);
    expect(limiter.takeNow('active', one).allowed).toBe(false);
    // A flood of distinct client networks (IPv6 /64s), the active key calling on all the while.
    const flood = MAX_LOCAL_BUCKETS + 5_000;
    for (let i = 0; i < flood; i += 1) {
      limiter.takeNow(
        `segment_webhook\u00002001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::`,
        one,
      );
      if (i % 10_000 === 0) expect(limiter.takeNow('active', one).allowed).toBe(false);
      if (i % 1_000 === 0) expect(limiter.size()).toBeLessThanOrEqual(MAX_LOCAL_BUCKETS);
    }
    expect(limiter.size()).toBe(MAX_LOCAL_BUCKETS);
    // Still limited: its bucket was never the least recently used, so never forgotten.
    expect(limiter.takeNow('active', one)).toMatchObject({ allowed: false, retryAfterMs: 60_000 });
  });
});

describe('a take that costs N tokens (both stores alike)', () => {
  const clients: Redis[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
  });
  const stores = [
    ['memory', (now: () => number) => createRateLimiter(now)],
    ...(redisUp
      ? ([
          [
            'redis',
            (now: () => number) => {
              const r = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
              clients.push(r);
              return createRedisRateLimiter(r, {
                prefix: `fraudgate-test:cost:${randomUUID()}:`,
                now,
                keySecret: 'cost-test',
              });
            },
          ],
        ] as const)
      : []),
  ] as const;

  it.each(stores)(
    '%s: takes N or nothing; a cost over the capacity is refused for good; 0, negative or fractional costs throw',
    async (_name, make) => {
      let t = 7_000_000;
      const store = make(() => t);
      const bucket = { capacity: 5, per_minute: 60 };
      expect(await store.take('k', bucket, 3)).toMatchObject({ allowed: true, remaining: 2 });
      expect(await store.take('k', bucket, 3)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
      // Over the capacity: never admitted, whatever the wait, and it takes nothing.
      const over = await store.take('k', bucket, 9);
      expect(over).toMatchObject({ allowed: false, overCapacity: true, retryAfterMs: 0 });
      t += 60_000;
      expect(await store.take('k', bucket, 6)).toMatchObject({ allowed: false, overCapacity: true });
      for (const cost of [0, -4, 1.5, Number.NaN])
        await expect(store.take('k', bucket, cost)).rejects.toThrow(/positive integer/);
      // Nothing above minted or took a token: the full bucket still holds exactly five.
      expect(await store.take('k', bucket, 5)).toMatchObject({ allowed: true, remaining: 0 });
      expect(await store.take('k', bucket, 1)).toMatchObject({ allowed: false });
    },
  );

  it.skipIf(!redisUp)('the Lua script itself refuses a cost that is not a positive integer', async () => {
    const r = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
    clients.push(r);
    const key = `fraudgate-test:cost-lua:${randomUUID()}`;
    for (const cost of [0, -4, 1.5])
      await expect(r.eval(TAKE_SCRIPT, 1, key, 5, 60, 7_000_000, 60_000, cost)).rejects.toThrow(
        /positive integer/,
      );
    expect(await r.exists(key)).toBe(0);
  });
});

describe('bucket names', () => {
  it('are HMAC-SHA-256 under a key derived from the secret, truncated to 128 bits (base64url)', () => {
    const bucketKey = createHmac('sha256', 'the-audit-key').update('fraudgate rate-limit bucket v1').digest();
    const hmac = (key: string) =>
      createHmac('sha256', bucketKey).update(key).digest('base64url').slice(0, 22);
    const hashed = bucketKeyHasher('the-audit-key');
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'grapheme', maxLength: 300 }), fc.string({ maxLength: 3000 })),
        (key) => {
          expect(hashed(key)).toBe(hmac(key));
        },
      ),
      { numRuns: 500 },
    );
    // Past the scratch buffer, and a multi-byte character across its end.
    for (const key of ['x'.repeat(1019), 'x'.repeat(1020), `${'x'.repeat(1018)}é€😀`, 'ü'.repeat(5000), ''])
      expect(hashed(key)).toBe(hmac(key));
  });

  it('are the same for the same secret (replicas), other for another, and never the key', () => {
    const key = 'refusals\u0000scope\u0000segment_webhook\u0000203.0.113.7';
    expect(bucketKeyHasher('shared')(key)).toBe(bucketKeyHasher('shared')(key));
    expect(bucketKeyHasher('other')(key)).not.toBe(bucketKeyHasher('shared')(key));
    expect(bucketKeyHasher('shared')(key)).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });
});

describe.skipIf(!redisUp)('Redis buckets (shared by replicas)', () => {
  const clients: Redis[] = [];
  const redis = () => {
    const r = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
    clients.push(r);
    return r;
  };
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
  });

  it('two replicas share one bucket and never over-admit, even concurrently', async () => {
    let t = 5_000_000;
    const prefix = `fraudgate-test:${randomUUID()}:`;
    // Two replicas: their own connections, the same secret (the audit key every replica shares).
    const a = createRedisRateLimiter(redis(), { prefix, now: () => t, keySecret: 'shared-audit-key' });
    const b = createRedisRateLimiter(redis(), { prefix, now: () => t, keySecret: 'shared-audit-key' });
    const bucket = { capacity: 5, per_minute: 60 };
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).take('analyst\u0000tool', bucket)),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    expect(results.find((r) => !r.allowed)?.retryAfterMs).toBe(1000);
    t += 2000;
    expect((await a.take('analyst\u0000tool', bucket)).allowed).toBe(true);
    expect((await b.take('analyst\u0000tool', bucket)).allowed).toBe(true);
    expect((await a.take('analyst\u0000tool', bucket)).allowed).toBe(false);
  });

  it('replicas whose clocks differ by 2 s, taking in turn, are not credited the difference', async () => {
    const prefix = `fraudgate-test:redis2:${randomUUID()}:`;
    const bucket = { capacity: 5, per_minute: 60 };
    let real = 5_000_000;
    const ahead = createRedisRateLimiter(redis(), { prefix, now: () => real + 2000, keySecret: 'shared' });
    const behind = createRedisRateLimiter(redis(), { prefix, now: () => real, keySecret: 'shared' });
    let allowed = 0;
    // 100 calls over 10 s alternating replicas: honest is the burst (5) plus 10 s of refill (10).
    for (let i = 0; i < 100; i += 1) {
      real = 5_000_000 + i * 100;
      if ((await (i % 2 ? behind : ahead).take('analyst\u0000tool', bucket)).allowed) allowed += 1;
    }
    expect(allowed).toBeLessThanOrEqual(5 + 10 + 2);
  });

  it("time is Redis's: this process's clock jumping an hour refills nothing", async () => {
    const prefix = `fraudgate-test:redis2:${randomUUID()}:`;
    const bucket = { capacity: 2, per_minute: 1 };
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() });
    try {
      const limiter = createRedisRateLimiter(redis(), { prefix, keySecret: 'shared' });
      expect((await limiter.take('k', bucket)).allowed).toBe(true);
      expect((await limiter.take('k', bucket)).allowed).toBe(true);
      vi.setSystemTime(Date.now() + 3_600_000);
      expect(await limiter.take('k', bucket)).toMatchObject({ allowed: false });
    } finally {
      vi.useRealTimers();
    }
  });

  it('through the protocol: a second replica sees the first one spend the bucket', async () => {
    const principal = {
      id: `rl-${randomUUID()}@example.com`,
      kind: 'user' as const,
      role: 'analyst' as const,
    };
    const config = {
      rate_limits: { store: 'redis' as const, tools: { get_sift_score: { capacity: 2, per_minute: 1 } } },
    };
    const one = await setup({ principal, config });
    const two = await setup({ principal, config, sandbox: one.sandbox });
    try {
      expect((await one.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError).toBe(false);
      expect((await two.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError).toBe(false);
      const limited = await one.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
      expect(limited.error.code).toBe('RATE_LIMITED');
    } finally {
      await two.client.close();
      await two.runtime.close();
      await one.close();
    }
  });
});

describe('Redis down', () => {
  it('fails closed: nothing runs, the error is retryable, says why and is audited; readiness says so', async () => {
    const env = await setup({ config: { rate_limits: { store: 'redis' } }, redisUrl: 'redis://127.0.0.1:1' });
    try {
      const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
      // An outage the caller can retry through, not a bug (INTERNAL).
      expect(result.error).toMatchObject({ code: 'UPSTREAM_ERROR', retryable: true });
      expect(result.error.message).toContain('rate-limit store is unavailable');
      expect(env.sandbox.sift.journal).toHaveLength(0);
      const records = await storedAuditRecords(env.config, env.runtime.audit);
      expect(records.filter((r) => r.event === 'unavailable')).toMatchObject([
        { tool: 'get_sift_score', outcome: { code: 'UPSTREAM_ERROR', retryable: true } },
      ]);
      // What /readyz reports for Redis.
      expect(await env.runtime.rateLimiter.ping()).toBe(false);
    } finally {
      await env.close();
    }
  });
});

describe.skipIf(!redisUp)('Redis hung (connections open, nothing answers)', () => {
  it('calls are refused retryable and audited instead of hanging, and pass again once it answers', async () => {
    // Redis reached through a forwarder that can stop forwarding without closing a connection.
    const forwarder = await startTcpForwarder({ host: '127.0.0.1', port: 6379 });
    const lines: Record<string, unknown>[] = [];
    const env = await setup({
      config: { rate_limits: { store: 'redis' } },
      redisUrl: `redis://127.0.0.1:${forwarder.port}`,
      logger: createLogger({ write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) }),
    });
    try {
      expect((await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError).toBe(false);
      const upstreamCalls = env.sandbox.sift.journal.length;
      forwarder.stall();
      for (let i = 0; i < 2; i += 1) {
        const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
        expect(result.error).toMatchObject({ code: 'UPSTREAM_ERROR', retryable: true });
        expect(result.error.message).toContain('rate-limit store is unavailable');
      }
      expect(env.sandbox.sift.journal).toHaveLength(upstreamCalls);
      const records = await storedAuditRecords(env.config, env.runtime.audit);
      expect(records.filter((r) => r.event === 'unavailable')).toMatchObject([
        { tool: 'get_sift_score', outcome: { code: 'UPSTREAM_ERROR', retryable: true } },
        { tool: 'get_sift_score', outcome: { code: 'UPSTREAM_ERROR', retryable: true } },
      ]);
      // The refusals' own budget, in the same Redis, fell back to this process rather than hang.
      expect(
        lines.filter((l) => String(l.msg).includes('refusal budgets are kept in this process')),
      ).toHaveLength(1);

      forwarder.restore();
      const until = Date.now() + 15_000;
      while ((await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError) {
        expect(Date.now()).toBeLessThan(until);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      await env.close();
      await forwarder.close();
    }
  }, 40_000);

  it('start-up names FRAUDGATE_REDIS_URL instead of waiting forever', async () => {
    const forwarder = await startTcpForwarder({ host: '127.0.0.1', port: 6379 });
    forwarder.stall();
    try {
      await expect(
        checkServices(
          { rate_limits: { store: 'redis' } } as Parameters<typeof checkServices>[0],
          { redisUrl: `redis://127.0.0.1:${forwarder.port}` },
          1_000,
        ),
      ).rejects.toThrow(/does not answer.*FRAUDGATE_REDIS_URL/);
    } finally {
      await forwarder.close();
    }
  }, 20_000);
});
