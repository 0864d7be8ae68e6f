/**
 * The log budget for refused work (src/log-budget.ts): within it each refusal gets its line; past it
 * refusals are counted for a minute and written as one summary line per principal, by outcome.
 */
import { describe, expect, it } from 'vitest';
import { createLogBudget, LOG_SUMMARY_INTERVAL_MS } from '../src/log-budget.ts';
import { createLogger } from '../src/logger.ts';

function budget() {
  const lines: Record<string, unknown>[] = [];
  let t = Date.parse('2026-01-01T00:00:00Z');
  const logger = createLogger({ write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const logBudget = createLogBudget({ logger, bucket: { capacity: 5, per_minute: 60 }, now: () => t });
  return { lines, logBudget, advance: (ms: number) => (t += ms) };
}

describe('log budget', () => {
  it('1,000 refusals in a burst: the budget in lines, then one summary with the count by outcome', () => {
    const { lines, logBudget } = budget();
    let allowed = 0;
    for (let i = 0; i < 1000; i++) if (logBudget.allow('ana', i % 2 ? 'RATE_LIMITED' : 'http_429')) allowed++;
    expect(allowed).toBe(5);
    expect(lines).toHaveLength(0);
    logBudget.flush();
    expect(lines).toEqual([
      expect.objectContaining({
        msg: 'log lines over budget',
        principal: 'ana',
        count: 995,
        by_outcome: { RATE_LIMITED: 498, http_429: 497 },
      }),
    ]);
  });

  it('a sustained flood gets one summary a minute, however the budget refills meanwhile; others keep their own', () => {
    const { lines, logBudget, advance } = budget();
    let allowed = 0;
    // Ten refusals a second for three minutes: the bucket refills one a second.
    for (let s = 0; s < 180; s++) {
      for (let i = 0; i < 10; i++) if (logBudget.allow('ana', 'RATE_LIMITED')) allowed++;
      advance(1000);
    }
    expect(logBudget.allow('bob', 'FORBIDDEN')).toBe(true);
    logBudget.flush(LOG_SUMMARY_INTERVAL_MS);
    const summaries = lines.filter((l) => l.msg === 'log lines over budget');
    expect(summaries).toHaveLength(3);
    expect(summaries.every((l) => l.principal === 'ana')).toBe(true);
    expect(allowed + summaries.reduce((n, l) => n + (l.count as number), 0)).toBe(1800);
    // At most the bucket a minute: its capacity, then one a second once a minute's count ends.
    expect(allowed).toBeLessThanOrEqual(5 * 3);
  });
});
