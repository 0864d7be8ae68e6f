/**
 * Crash test: the worker runs as its own process (`fraudgate outbox work`), is killed with SIGKILL
 * mid-drain, and fresh ones (`outbox work --once`, run until nothing is left) finish the job:
 * nothing lost (every effect done, superseded or — a suppression, in live mode — waiting for a
 * human), nothing duplicated (Segment messageIds, cases, Chatter markers).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyStoredAudit } from '../helpers/audit.ts';
import { decisionBody, liveWorkerEnv, mapLimit, outboxEnv, sign, type OutboxEnv } from './helpers.ts';

const USERS = 150;
const ROUNDS = 3;
const DECISIONS = ['block_user_payment_abuse', 'watch_user_payment_abuse', 'looks_ok_payment_abuse'] as const;

let env: OutboxEnv | undefined;
afterAll(async () => {
  await env?.close();
});

function startWorker(e: OutboxEnv, once: boolean): ChildProcess {
  const configFile = join(e.dataDir, 'worker-config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      sift: { max_retries: 2, timeout_ms: 1500 },
      salesforce: { timeout_ms: 1500 },
      // A short lease so the second worker takes over the killed one's effects quickly.
      automation: { poll_ms: 20, backoff_base_ms: 20, backoff_max_ms: 400, lease_ms: 1500, batch_size: 100 },
    }),
  );
  const env = liveWorkerEnv(e, configFile);
  const child = spawn(process.execPath, ['src/cli.ts', 'outbox', 'work', ...(once ? ['--once'] : [])], {
    cwd: join(import.meta.dirname, '..', '..'),
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    if (!text.includes('ExperimentalWarning') && !text.includes('--trace-warnings'))
      process.stderr.write(text);
  });
  return child;
}

describe('worker crash (SIGKILL) mid-drain', () => {
  it('loses nothing and duplicates nothing after a restart', async () => {
    env = await outboxEnv();
    const e = env;
    const { sift, segment, salesforce } = e.sandbox;
    const last = new Map<string, string>();
    const bodies: string[] = [];
    for (let u = 0; u < USERS; u += 1) {
      sift.setScore(`fg_crash_${u}`, 'payment_abuse', 0.95);
      salesforce.insert('Account', { Name: `Crash ${u}`, Sift_User_Id__c: `fg_crash_${u}` });
    }
    for (let r = 0; r < ROUNDS; r += 1) {
      for (let u = 0; u < USERS; u += 1) {
        const user = `fg_crash_${u}`;
        const decision = DECISIONS[(u + r) % DECISIONS.length] ?? DECISIONS[0];
        const { time } = await sift.consoleApplyDecision({ decisionId: decision, userId: user });
        bodies.push(decisionBody(user, decision, time));
        last.set(user, decision);
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    // Slow Salesforce down a little so the kill lands while effects are in flight.
    salesforce.faults.chaos(0.3, [{ delayMs: 150 }]);

    const first = startWorker(e, false);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      first.once('exit', (_code, signal) => resolve(signal)),
    );
    await mapLimit(bodies, 8, (body) => e.post(body, { 'x-sift-science-signature': sign(body) }));
    const deadline = Date.now() + 60_000;
    while ((await e.automation.store.stats()).done < 120 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    first.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const atKill = await e.automation.store.stats();
    expect(atKill.done).toBeGreaterThan(0);
    expect(atKill.pending + atKill.leased + atKill.unrouted).toBeGreaterThan(0);

    salesforce.faults.clear();
    // `--once` does what is due and exits: effects still backing off, or leased by the killed worker
    // until its leases lapse, are left to the next run, as a scheduler would start it.
    let stats = await e.automation.store.stats();
    for (let run = 0; run < 30 && stats.unrouted + stats.pending + stats.leased > 0; run += 1) {
      const next = startWorker(e, true);
      const code = await new Promise<number | null>((resolve) => next.once('exit', (c) => resolve(c)));
      expect(code).toBe(0);
      stats = await e.automation.store.stats();
      if (stats.unrouted + stats.pending + stats.leased > 0) await new Promise((r) => setTimeout(r, 250));
    }

    expect(stats).toMatchObject({ unrouted: 0, pending: 0, leased: 0, dead: 0 });
    const ids = segment.events.map((m) => m.messageId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [user, decision] of last) expect(segment.profile(user)?.fraud_decision_id).toBe(decision);
    const cases = salesforce
      .records('Case')
      .filter((c) => String(c.Sift_User_Id__c ?? '').startsWith('fg_crash_'));
    expect(new Set(cases.map((c) => c.Sift_User_Id__c)).size).toBe(cases.length);
    const markers = salesforce
      .records('FeedItem')
      .map((f) => `${String(f.ParentId)} ${/\[fraudgate:[0-9a-f]+\]/.exec(String(f.Body))?.[0] ?? ''}`);
    expect(new Set(markers).size).toBe(markers.length);
    // The audit chain survives two writer processes and a kill.
    expect((await verifyStoredAudit(e.config, {}, e.automation.runtime.audit)).ok).toBe(true);
    process.stderr.write(
      `crash: killed at ${JSON.stringify(atKill)}; after restart ${JSON.stringify(stats)}\n`,
    );
  }, 180_000);
});
