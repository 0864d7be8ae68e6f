/**
 * The refusal budget when its shared store (Redis) is down: it must not fail open (one ledger record
 * per refusal, for anyone who can make the store fail or wait for it to), but fall back to buckets of
 * the same size in this process, for a principal's refused calls and for webhook senders alike.
 */
import { describe, expect, it } from 'vitest';
import type { AuditAppendInput, AuditLog, AuditPrincipal, AuditRecord } from '../../src/governance/audit.ts';
import type { RateLimiter } from '../../src/governance/rate-limit.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { createRefusalBudget } from '../../src/governance/refusal-budget.ts';
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
