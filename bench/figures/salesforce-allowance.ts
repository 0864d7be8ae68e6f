/**
 * Salesforce allowance: decision webhooks → outbox → effects, counting the API calls each
 * upstream saw per 1,000 decisions. fraudgate is the worker as shipped (Salesforce writes coalesced
 * into sObject Collections, Segment batches); the baseline is the same worker with batching off
 * (one request per record). Every user has one decision (no superseding) and an Account, so each
 * decision makes Segment traits + track and a Salesforce field update + Chatter post; blocks add a
 * case and a suppression. Upstream answers are delayed by BENCH_UPSTREAM_LATENCY_MS (default 40):
 * real SaaS APIs answer in tens of milliseconds, and without it a batch window is all cost.
 *
 * BENCH_DECISIONS (default 1,000, the figure's unit: fewer leave per-batch costs unamortised) sets
 * the number of decisions; BENCH_WINDOW_MS the batch window (default: the shipped 1 s);
 * BENCH_BATCH_SIZE the effects a worker tick runs together (default: the shipped
 * `automation.batch_size`). The outbox is drained tick by tick, and each tick that runs Salesforce
 * effects sends at least one write request: writes ≥ ticks = effects / batch size. Writes are the
 * non-GET calls (composite requests, a read-back query riding in one included); the rest are reads
 * (lookup queries).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Figure, Measurement } from '../harness.ts';
import { startSiftWebhookServer } from './ingest.ts';
import { postWebhooks } from './load.ts';
import { tools } from '../../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config } from '../../src/config.ts';
import { silentLogger } from '../../src/logger.ts';
import { openAutomation } from '../../src/outbox/automation.ts';
import type { JournalEntry } from '../../src/sandbox/emulator-http.ts';
import { startSandbox } from '../../src/sandbox/sandbox.ts';

const KEY = 'bench-signature-key';
const DECISIONS = ['block_user_payment_abuse', 'watch_user_payment_abuse', 'looks_ok_payment_abuse'] as const;
type Service = 'sift' | 'segment' | 'salesforce';

const isWrite = (service: Service, e: JournalEntry) =>
  service === 'segment'
    ? e.path.startsWith('/v1/')
    : service === 'salesforce'
      ? e.method !== 'GET' && !e.path.includes('/oauth2/') && !onlyReads(e)
      : e.method !== 'GET';

/** A composite request whose subrequests are all GETs (lookups sent together) writes nothing. */
const onlyReads = (e: JournalEntry) =>
  e.path.endsWith('/composite') &&
  ((e.body as { compositeRequest?: { method?: string }[] } | undefined)?.compositeRequest ?? []).every(
    (sub) => sub.method === 'GET',
  );

/** One full run: N webhooks ingested by 32 senders, then the outbox drained; calls per 1,000 decisions. */
export async function runOutbox(
  mode: 'batched' | 'naive',
  n: number,
  latencyMs: number,
): Promise<Measurement> {
  const sandbox = await startSandbox(DEFAULTS);
  const dataDir = mkdtempSync(join(tmpdir(), `fraudgate-bench-${mode}-`));
  try {
    const config: Config = {
      ...mergeConfig(DEFAULTS, {
        approvals: { tools: { suppress_user: 'none' } },
        // A third of the decisions are blocks: more suppressions than the default hourly budget allows.
        budgets: { limits: { suppress_user: { max_effects: 1_000_000 } } },
        automation: {
          poll_ms: 20,
          batch_window_ms: Number(process.env.BENCH_WINDOW_MS ?? 1000),
          ...(process.env.BENCH_BATCH_SIZE ? { batch_size: Number(process.env.BENCH_BATCH_SIZE) } : {}),
        },
      }),
      ...sandbox.config,
      data_dir: dataDir,
      mode: 'sandbox',
    };
    const automation = await openAutomation({
      config,
      secrets: { ...sandbox.secrets, auditKey: 'bench-audit-key' },
      tools,
      logger: silentLogger,
      batching: mode === 'batched',
    });
    const server = await startSiftWebhookServer(automation.store, automation.runtime.audit, KEY);

    const bodies: string[] = [];
    for (let u = 0; u < n; u += 1) {
      const user = `bench_${u}`;
      sandbox.sift.setScore(user, 'payment_abuse', 0.95);
      sandbox.salesforce.insert('Account', { Name: `Bench ${u}`, Sift_User_Id__c: user });
      const decision = DECISIONS[u % DECISIONS.length] ?? DECISIONS[0];
      const { time } = await sandbox.sift.consoleApplyDecision({ decisionId: decision, userId: user });
      bodies.push(JSON.stringify({ entity: { type: 'user', id: user }, decision: { id: decision }, time }));
    }
    for (const s of [sandbox.sift, sandbox.segment, sandbox.salesforce]) {
      s.clearJournal();
      if (latencyMs > 0) s.faults.chaos(1, [{ delayMs: latencyMs }]);
    }

    const ingestPerS = await postWebhooks(server.url, KEY, bodies, 32);
    const drainStart = performance.now();
    const drained = await automation.worker.drain({ timeoutMs: 10 * 60 * 1000 });
    const drainS = (performance.now() - drainStart) / 1000;
    if (!drained) throw new Error('drain did not finish');
    const stats = await automation.store.stats();
    if (stats.dead > 0) throw new Error(`dead letters: ${stats.dead}`);

    const per1000 = (x: number) => Math.round((x * 1000) / n);
    const count = (service: Service, writes?: boolean) =>
      sandbox[service].journal.filter(
        (e) => !e.path.includes('/oauth2/') && (writes === undefined || isWrite(service, e) === writes),
      ).length;
    await server.close();
    await automation.close();
    return {
      value: per1000(count('salesforce')),
      extra: {
        salesforce_writes: per1000(count('salesforce', true)),
        all_calls: per1000(count('sift') + count('segment') + count('salesforce')),
        segment_writes: per1000(count('segment', true)),
        effects: stats.done,
        drain_effects_per_s: stats.done / drainS,
        ingest_per_s: ingestPerS,
      },
    };
  } finally {
    await sandbox.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export const salesforceAllowance: Figure = {
  id: 'salesforce_calls_per_1000',
  title: 'Salesforce API calls per 1,000 decisions',
  unit: 'calls',
  better: 'lower',
  baseline: 'same worker, one request per record',
  target: '≤ 30 in all, ≤ 6 writes',
  met: (r) => r.fraudgate.median <= 30 && (r.fraudgate.extra.salesforce_writes ?? Infinity) <= 6,
  rounds: () => 1,
  warmup: false,
  async open() {
    const n = Math.min(5000, Math.max(10, Number(process.env.BENCH_DECISIONS ?? 1000)));
    const latency = Math.max(0, Number(process.env.BENCH_UPSTREAM_LATENCY_MS ?? 40));
    // A short unmeasured run first, so JIT warm-up and first-time file creation count against neither mode.
    await runOutbox('batched', 30, latency);
    return {
      fraudgate: () => runOutbox('batched', n, latency),
      baseline: () => runOutbox('naive', n, latency),
      close: async () => {},
    };
  },
};
