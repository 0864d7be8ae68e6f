/**
 * Log lines for refused work (tool calls the refusal budget covers, MCP requests over a principal's
 * request budget) go through a budget per principal, as their audit records do
 * (src/governance/refusal-budget.ts): within `bucket` each refusal gets its line; past it they are
 * only counted for a minute, then written as one `log lines over budget` line with the count by
 * outcome (by the next refusal, the summary timer, or `flush`/`close` on shutdown); then the
 * budget decides again. One caller refused thousands of times a second
 * writes a bounded number of lines; successful work keeps its own line (the rate limits bound it).
 *
 * In this process only: logs are a process's own, so there is nothing to share between replicas.
 */
import type { BucketConfig } from './config.ts';
import { createRateLimiter } from './governance/rate-limit.ts';
import type { Logger } from './logger.ts';

/** How often, at most, a principal over its budget gets a summary line. */
export const LOG_SUMMARY_INTERVAL_MS = 60_000;

/** At most this many principals' counts are held; past it the oldest count is written out. */
const MAX_TALLIES = 10_000;

export interface LogBudget {
  /**
   * Whether a refusal of `principal` (`outcome`: its code or status) gets its own line now; false:
   * it was counted into the principal's summary instead.
   */
  allow(principal: string, outcome: string): boolean;
  /** Writes the pending summaries (shutdown, or a timer). `olderThanMs`: only those counting this long. */
  flush(olderThanMs?: number): void;
  /** Stops the summary timer (if any) and writes all pending summaries: on shutdown. */
  close(): void;
}

interface Tally {
  since: string;
  sinceMs: number;
  count: number;
  outcomes: Record<string, number>;
}

export function createLogBudget(deps: {
  logger: Pick<Logger, 'warn'>;
  bucket: BucketConfig;
  now?: () => number;
  /**
   * Every this many ms (an unref'd timer), the summaries counting a minute or more are written, so a
   * flood that stops still gets its summary within a minute and this. None when omitted.
   */
  summaryEveryMs?: number;
}): LogBudget {
  const now = deps.now ?? Date.now;
  const buckets = createRateLimiter(now, { maxKeys: MAX_TALLIES });
  const tallies = new Map<string, Tally>();

  const write = (principal: string) => {
    const tally = tallies.get(principal);
    if (!tally) return;
    tallies.delete(principal);
    deps.logger.warn('log lines over budget', {
      principal,
      count: tally.count,
      since: tally.since,
      by_outcome: tally.outcomes,
    });
  };

  const flush = (olderThanMs = 0) => {
    const t = now();
    for (const [principal, tally] of [...tallies]) if (t - tally.sinceMs >= olderThanMs) write(principal);
  };
  const timer =
    deps.summaryEveryMs === undefined
      ? undefined
      : setInterval(() => flush(LOG_SUMMARY_INTERVAL_MS), deps.summaryEveryMs);
  timer?.unref();

  return {
    allow(principal, outcome) {
      const t = now();
      let tally = tallies.get(principal);
      // A minute's count, once started, runs to its end: one summary a minute, whatever refills.
      if (tally && t - tally.sinceMs >= LOG_SUMMARY_INTERVAL_MS) {
        write(principal);
        tally = undefined;
      }
      if (!tally && buckets.takeNow(principal, deps.bucket).allowed) return true;
      if (!tally) {
        if (tallies.size >= MAX_TALLIES) write(tallies.keys().next().value!);
        tally = { since: new Date(t).toISOString(), sinceMs: t, count: 0, outcomes: {} };
        tallies.set(principal, tally);
      }
      tally.count += 1;
      tally.outcomes[outcome] = (tally.outcomes[outcome] ?? 0) + 1;
      return false;
    },
    flush,
    close() {
      clearInterval(timer);
      flush();
    },
  };
}
