/**
 * The refusal budget when its shared store (Redis) is down: it must not fail open (one ledger record
 * per refusal, for anyone who can make the store fail or wait for it to), but fall back to buckets of
 * the same size in this process, for a principal's refused calls and for webhook senders alike.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { listening } from '../helpers/services.ts';
import { setup } from '../helpers/setup.ts';
import { startTcpForwarder } from '../helpers/tcp-forwarder.ts';
import type { AuditAppendInput, AuditLog, AuditPrincipal, AuditRecord } from '../../src/governance/audit.ts';
import { createRateLimiter, type RateLimiter } from '../../src/governance/rate-limit.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { createRefusalBudget, SHARED_STORE_RETRY_MS } from '../../src/governance/refusal-budget.ts';
import { redisLimiter } from '../../src/runtime.ts';
import { createWebhookRefusals } from '../../src/webhooks/webhook-refusals.ts';

const storeDown: RateLimiter = {
  take: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')),
  ping: async () => false,
  close: async () => {},
};

function memoryAudit() {
  const appended: AuditAppendInput[] = [];
  const audit = {
    append: async (input: AuditAppendInput) => {
      appended.push(input);
      return input as unknown as AuditRecord;
    },
  } as unknown as AuditLog;
  const counted = () => appended.filter((r) => r.event === 'refusals_counted');
  const countedTotal = () => counted().reduce((sum, r) => sum + (r.refusals?.count ?? 0), 0);
  return { audit, appended, counted, countedTotal };
}

// A clock that stands still: no token comes back and no minute passes during the test.
const now = () => new Date(0);
const BUDGET = 3;
const redisUp = await listening(6379);

describe('refusal budget with its rate-limit store down', () => {
  it('records a principal’s refused calls within a local budget and counts the rest', async () => {
    const { audit, appended, counted } = memoryAudit();
    const budget = createRefusalBudget({
      audit,
      rateLimiter: storeDown,
      bucket: { capacity: BUDGET, per_minute: 1 },
      now,
    });
    const principal: AuditPrincipal = { id: 'analyst-1', kind: 'user' };
    const outcomes = [];
    for (let i = 0; i < 50; i += 1) {
      outcomes.push(
        await budget.record(principal, 'unavailable', () => ({
          event: 'unavailable',
          call_id: `call-${i}`,
          principal,
        })),
      );
    }

    expect(appended.filter((r) => r.event === 'unavailable')).toHaveLength(BUDGET);
    expect(outcomes.filter((o) => o.recorded)).toHaveLength(BUDGET);
    for (const outcome of outcomes.slice(BUDGET)) {
      expect(outcome).toEqual({ recorded: false, retryAfterMs: expect.any(Number) });
      if (!outcome.recorded) expect(outcome.retryAfterMs).toBeGreaterThan(0);
    }
    await budget.flush();
    expect(counted()).toHaveLength(1);
    expect(counted()[0]).toMatchObject({
      principal,
      refusals: { count: 50 - BUDGET, by_event: { unavailable: 50 - BUDGET } },
    });
  });

  it('keeps webhook rejections within the endpoint ceiling and counts the rest', async () => {
    const { audit, appended, countedTotal } = memoryAudit();
    const CEILING = 5;
    const refusals = createWebhookRefusals({
      audit,
      rateLimiter: storeDown,
      bucket: { capacity: BUDGET, per_minute: 1 },
      ceiling: { capacity: CEILING, per_minute: 1 },
      redactor: createRedactor({ hashKey: 'test-key' }),
      now,
    });
    const principal: AuditPrincipal = { id: 'webhook:segment', kind: 'service' };
    let total = 0;
    for (let sender = 1; sender <= 20; sender += 1) {
      for (let i = 0; i < 10; i += 1) {
        total += 1;
        await refusals.record(principal, 'segment_webhook', `198.51.100.${sender}`, (target) => ({
          event: 'webhook_rejected',
          call_id: `delivery-${sender}-${i}`,
          principal,
          target,
        }));
      }
    }

    const rejected = appended.filter((r) => r.event === 'webhook_rejected');
    expect(rejected.length).toBeLessThanOrEqual(CEILING);
    await refusals.flush();
    // Nothing goes unrecorded: every rejection without a record of its own is in a count.
    expect(rejected.length + countedTotal()).toBe(total);
    expect(appended.length).toBeLessThanOrEqual(CEILING + 2);
  });
});

describe.skipIf(!redisUp)('refusal budget falling back while Redis is down, through the protocol', () => {
  it('logs one warning when it falls back and one info when Redis answers again, not one per refusal', async () => {
    // Redis reached through a forwarder the test can take down, as if Redis stopped, without touching it.
    const forwarder = await startTcpForwarder({ host: '127.0.0.1', port: 6379 });
    const lines: Record<string, unknown>[] = [];
    const env = await setup({
      config: { rate_limits: { store: 'redis' } },
      redisUrl: `redis://127.0.0.1:${forwarder.port}`,
      logger: createLogger({ write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) }),
    });
    const fellBack = () =>
      lines.filter((l) => String(l.msg).includes('refusal budgets are kept in this process'));
    const sharedAgain = () => lines.filter((l) => String(l.msg).includes('refusal budgets are shared again'));
    try {
      expect((await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError).toBe(false);
      forwarder.down();
      // Invalid calls: refused before the call limiter, so each asks Redis once, for the refusal budget.
      for (let i = 0; i < 3; i += 1) {
        const invalid = await env.callTool('get_sift_score', { user_id: 42 });
        expect(invalid.error.code).toBe('INVALID_INPUT');
      }
      expect(fellBack()).toHaveLength(1);
      expect(fellBack()[0]).toMatchObject({ level: 'warn', error: expect.any(String) });
      expect(sharedAgain()).toHaveLength(0);

      forwarder.restore();
      const until = Date.now() + 15_000;
      while ((await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError) {
        expect(Date.now()).toBeLessThan(until);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // The budget asks Redis again at its first refusal past the pause after its last failure, and
      // hears it: three invalid calls, one line.
      await new Promise((resolve) => setTimeout(resolve, SHARED_STORE_RETRY_MS));
      for (let i = 0; i < 3; i += 1) {
        const invalid = await env.callTool('get_sift_score', { user_id: 42 });
        expect(invalid.error.code).toBe('INVALID_INPUT');
      }
      expect(sharedAgain()).toHaveLength(1);
      expect(sharedAgain()[0]).toMatchObject({ level: 'info' });
      expect(fellBack()).toHaveLength(1);
    } finally {
      await env.close();
      await forwarder.close();
    }
  }, 60_000);
});

describe.skipIf(!redisUp)('refusal budget while Redis hangs', () => {
  it('asks Redis once per pause, not on every refusal: later refusals do not wait out a second timeout', async () => {
    const forwarder = await startTcpForwarder({ host: '127.0.0.1', port: 6379 });
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    // The limiter the runtime builds (the same timeouts), counting the takes the budget attempts.
    const redis = await redisLimiter(`redis://127.0.0.1:${forwarder.port}`, logger, 'refusal-test-key');
    let takes = 0;
    const counted: RateLimiter = { ...redis, take: (key, bucket) => ((takes += 1), redis.take(key, bucket)) };
    let clock = 0;
    const { audit, appended } = memoryAudit();
    const budget = createRefusalBudget({
      audit,
      rateLimiter: counted,
      bucket: { capacity: 100, per_minute: 100 },
      now: () => new Date(clock),
      logger,
    });
    const principal: AuditPrincipal = { id: `analyst-${process.pid}-${Date.now()}`, kind: 'user' };
    const refuse = (i: number) =>
      budget.record(principal, 'unavailable', () => ({ event: 'unavailable', call_id: `c-${i}`, principal }));
    const fellBack = () =>
      lines.filter((l) => String(l.msg).includes('refusal budgets are kept in this process'));
    const sharedAgain = () => lines.filter((l) => String(l.msg).includes('refusal budgets are shared again'));
    try {
      expect(await refuse(0)).toEqual({ recorded: true });
      expect(takes).toBe(1);

      forwarder.stall();
      // The first refusal waits out Redis's command timeout; the next ones, within the pause, do not ask it.
      for (let i = 1; i <= 5; i += 1) expect(await refuse(i)).toEqual({ recorded: true });
      expect(takes).toBe(2);
      expect(fellBack()).toHaveLength(1);

      // Past the pause the next refusal asks again (and, still hung, falls back again without a second warning).
      clock += SHARED_STORE_RETRY_MS;
      expect(await refuse(6)).toEqual({ recorded: true });
      expect(await refuse(7)).toEqual({ recorded: true });
      expect(takes).toBe(3);
      expect(fellBack()).toHaveLength(1);

      forwarder.restore();
      clock += SHARED_STORE_RETRY_MS;
      const until = Date.now() + 15_000;
      while (sharedAgain().length === 0) {
        expect(Date.now()).toBeLessThan(until);
        await refuse(8);
        clock += SHARED_STORE_RETRY_MS;
      }
      expect(sharedAgain()).toHaveLength(1);
      const asked = takes;
      await refuse(9);
      expect(takes).toBe(asked + 1);
      expect(appended.filter((r) => r.event === 'unavailable').length).toBeGreaterThanOrEqual(10);
    } finally {
      await redis.close();
      await forwarder.close();
    }
  }, 30_000);
});

describe('refusal budget of a network known spent', () => {
  it('counts its refusals without asking the store, and they do not move the end of its window', async () => {
    let clock = 0;
    const limiter = createRateLimiter(() => clock);
    // The real limiter, counting the takes the budget asks of it.
    let takes = 0;
    const counting: RateLimiter = {
      ...limiter,
      take: (key, bucket) => ((takes += 1), limiter.take(key, bucket)),
    };
    const { audit, appended, countedTotal } = memoryAudit();
    const refusals = createWebhookRefusals({
      audit,
      rateLimiter: counting,
      bucket: { capacity: BUDGET, per_minute: 1 },
      redactor: createRedactor({ hashKey: 'k' }),
      now: () => new Date(clock),
    });
    const principal: AuditPrincipal = { id: 'automation:segment-webhook', kind: 'automation' };
    const sender = '198.51.100.7';
    const refuse = (i: number) =>
      refusals.record(principal, 'segment_webhook', sender, (target) => ({
        event: 'webhook_rejected',
        call_id: `w-${i}`,
        principal,
        target,
      }));
    for (let i = 0; i <= BUDGET; i += 1) await refuse(i);
    expect(refusals.spent('segment_webhook', sender)).toBe(60_000);
    const asked = takes;

    clock = 30_000;
    for (let i = 0; i < 20; i += 1)
      expect(await refuse(100 + i)).toEqual({ recorded: false, retryAfterMs: 30_000 });
    expect(takes).toBe(asked);
    expect(refusals.spent('segment_webhook', sender)).toBe(30_000);

    // The window ends when the bucket has a token again, as the store said before the flood.
    clock = 60_000;
    expect(refusals.spent('segment_webhook', sender)).toBeUndefined();
    expect(await refuse(200)).toEqual({ recorded: true });
    expect(appended.filter((r) => r.event === 'webhook_rejected')).toHaveLength(BUDGET + 1);
    await refusals.flush();
    expect(countedTotal()).toBe(1 + 20);
  });
});
