/**
 * The job runner on both store engines: two runners (two replicas) contending for one job run it
 * once per due time; a holder that stops heartbeating (killed) is taken over after the lease's ttl;
 * a restarted replica with the same id takes its job back at once; a holder that cannot renew its
 * lease (store unreachable) stops its run before another replica may take over; the fleet view
 * records who ran what; a failing job or a failing store is logged and retried, never thrown. The
 * clock is injected: every "later" below is a clock move, not a wait (the heartbeat's timer is real).
 */
import { describe, expect, it, vi } from 'vitest';
import { createJobRunner, nextDailyRun, type Job, type JobRunner } from '../../src/jobs/job-runner.ts';
import { silentLogger } from '../../src/logger.ts';
import type { Store } from '../../src/store/store.ts';
import type { LeaseStore } from '../../src/store/lease-store.ts';
import { ENGINES } from '../store/engines.ts';

const TTL = 15_000;
const EVERY = 60_000;

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms), set: (ms: number) => void (t = ms) };
}

function runnerOn(
  store: Pick<Store, 'leases' | 'jobs'>,
  replicaId: string,
  now: () => number,
  jobs: Job[],
): JobRunner {
  const runner = createJobRunner({ store, replicaId, logger: silentLogger, leaseTtlMs: TTL, now });
  for (const job of jobs) runner.register(job);
  return runner;
}

/** A job whose runs block until released; `started` resolves when a run begins. */
function gate() {
  let release!: () => void;
  let started!: (replica: string) => void;
  const startedP = new Promise<string>((r) => (started = r));
  const releaseP = new Promise<void>((r) => (release = r));
  return { started: startedP, release, onStart: (replica: string) => started(replica), wait: releaseP };
}

/** A lease store frozen after the first acquire: the holder's process is gone, its heartbeat silent. */
function frozenAfterFirst(leases: LeaseStore): LeaseStore {
  let first = true;
  return {
    ...leases,
    acquire: async (...args) => {
      if (!first) return true;
      first = false;
      return leases.acquire(...args);
    },
    release: async () => false,
  };
}

/** A lease store that fails every call after the first acquire: the holder lost its store connection. */
function unreachableAfterFirst(leases: LeaseStore): LeaseStore & { calls: () => number } {
  let calls = 0;
  const down = async (): Promise<never> => {
    throw new Error('connection terminated');
  };
  return {
    ...leases,
    acquire: async (...args) => (++calls === 1 ? leases.acquire(...args) : down()),
    release: down,
    calls: () => calls,
  };
}

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`job runner: ${engine.name}`, () => {
    it('two replicas contending for one job run it once per due time, and the fleet view says where', async () => {
      const [a, b] = await engine.open();
      const c = clock();
      const runs: string[] = [];
      const job = (): Job => ({
        name: 'sweep',
        schedule: { every_ms: EVERY },
        run: async ({ replicaId }) => void runs.push(replicaId),
      });
      const ra = runnerOn(a, 'replica-a', c.now, [job()]);
      const rb = runnerOn(b, 'replica-b', c.now, [job()]);
      // Registered; the first run is one interval after the first registration.
      expect([...(await ra.tick()), ...(await rb.tick())]).toEqual([]);
      for (let round = 1; round <= 3; round++) {
        c.advance(EVERY);
        const ran = await Promise.all([ra.tick(), rb.tick()]);
        expect(ran.flat()).toEqual(['sweep']);
        // Looking again at the same time: nobody runs it twice.
        expect([...(await ra.tick()), ...(await rb.tick())]).toEqual([]);
        expect(runs).toHaveLength(round);
      }
      const state = await a.jobs.get('sweep');
      expect(state).toMatchObject({
        schedule: 'every 1 min',
        runs: 3,
        last_status: 'ok',
        last_error: null,
        next_run_at: c.now() + EVERY,
      });
      expect(['replica-a', 'replica-b']).toContain(state!.last_holder);
      // Released after the run: nobody holds it between runs.
      expect(await b.leases.get('sweep')).toBeUndefined();
      await Promise.all([ra.close(), rb.close()]);
    });

    it('a holder that stops heartbeating is taken over after the ttl; the same id reclaims at once', async () => {
      const [a, b] = await engine.open();
      const c = clock();
      const first = gate();
      const second = gate();
      const third = gate();
      const gates = [first, second, third];
      let calls = 0;
      const job: Job = {
        name: 'poller',
        schedule: { every_ms: EVERY },
        run: async ({ replicaId }) => {
          const g = gates[calls++]!;
          g.onStart(replicaId);
          await g.wait;
        },
      };
      // Replica A takes the job, then "dies" mid-run: its heartbeat never renews again.
      const ra = runnerOn({ ...a, leases: frozenAfterFirst(a.leases) }, 'replica-a', c.now, [job]);
      await ra.tick();
      c.advance(EVERY);
      const aRun = ra.tick();
      expect(await first.started).toBe('replica-a');

      // B, while A's lease is live: refused.
      const rb = runnerOn(b, 'replica-b', c.now, [job]);
      c.advance(TTL - 1);
      expect(await rb.tick()).toEqual([]);
      // After the ttl (and B's next look, a tick later): B takes over; the run never finished, so it is still due.
      c.advance(1000);
      const bRun = rb.tick();
      expect(await second.started).toBe('replica-b');
      expect((await a.leases.get('poller'))?.holder).toBe('replica-b');

      // B restarts as the same replica id while its lease is live: it takes the job back at once.
      const rb2 = runnerOn(b, 'replica-b', c.now, [job]);
      c.advance(1000);
      const b2Run = rb2.tick();
      expect(await third.started).toBe('replica-b');

      for (const g of gates) g.release();
      await Promise.all([aRun, bRun, b2Run]);
      await Promise.all([ra.close(), rb.close(), rb2.close()]);
    });

    it('a holder that cannot renew its lease stops the run before the lease expires; the next holder never overlaps it', async () => {
      const [a, b] = await engine.open();
      const c = clock();
      const ttl = 600; // a beat every 100 ms of real time; the ttl itself is on the injected clock
      let running = 0;
      let overlapped = false;
      let aSignal: AbortSignal | undefined;
      const job: Job = {
        name: 'score_sync',
        schedule: { every_ms: EVERY },
        run: async ({ signal, replicaId }) => {
          running += 1;
          if (running > 1) overlapped = true;
          try {
            if (replicaId !== 'replica-a') return;
            aSignal = signal;
            // A job that stops only when told to (at its next safe point).
            await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          } finally {
            running -= 1;
          }
        },
      };
      const aLeases = unreachableAfterFirst(a.leases);
      const runner = (store: Pick<Store, 'leases' | 'jobs'>, replicaId: string) => {
        const r = createJobRunner({ store, replicaId, logger: silentLogger, leaseTtlMs: ttl, now: c.now });
        r.register(job);
        return r;
      };
      const ra = runner({ ...a, leases: aLeases }, 'replica-a');
      const rb = runner(b, 'replica-b');
      expect([...(await ra.tick()), ...(await rb.tick())]).toEqual([]);
      c.advance(EVERY);
      const aRun = ra.tick();
      await vi.waitFor(() => expect(aSignal).toBeDefined());

      // A third of the ttl on, renewals fail: retried every beat, the run goes on.
      c.advance(ttl / 3);
      await vi.waitFor(() => expect(aLeases.calls()).toBeGreaterThanOrEqual(3));
      expect(aSignal!.aborted).toBe(false);

      // Two thirds unrenewed: the run is stopped, a third of the ttl before the lease could expire.
      c.advance(ttl / 3);
      await vi.waitFor(() => expect(aSignal!.aborted).toBe(true), { timeout: 2_000 });
      expect((aSignal!.reason as Error).message).toBe('job lease could not be renewed');
      expect(await aRun).toEqual(['score_sync']);
      expect(await rb.tick()).toEqual([]); // the lease is live until its ttl
      c.advance(ttl / 3 + 1000);
      // Past the ttl: B takes the lease, and the job, which A did not record as run, is still due.
      expect(await rb.tick()).toEqual(['score_sync']);
      expect(overlapped).toBe(false);
      expect(await b.jobs.get('score_sync')).toMatchObject({ last_holder: 'replica-b', runs: 1 });
      await Promise.all([ra.close(), rb.close()]);
    });

    it('a failing job records its error and retries within minutes; a failing store is logged, not thrown', async () => {
      const [a] = await engine.open();
      const c = clock();
      let fail = true;
      const job: Job = {
        name: 'score_sync',
        schedule: { daily_at: '02:00' },
        run: async () => {
          if (fail) throw new Error('Salesforce answered 503');
        },
      };
      let storeDown = false;
      const flaky: Pick<Store, 'leases' | 'jobs'> = {
        leases: a.leases,
        jobs: {
          ...a.jobs,
          get: async (name) => {
            if (storeDown) throw new Error('connection terminated');
            return a.jobs.get(name);
          },
        },
      };
      const runner = runnerOn(flaky, 'replica-a', c.now, [job]);
      await runner.tick();
      const due = nextDailyRun('02:00', c.now());
      expect((await a.jobs.get('score_sync'))?.next_run_at).toBe(due);

      c.set(due);
      storeDown = true;
      expect(await runner.tick()).toEqual([]);
      storeDown = false;
      c.advance(1000);
      expect(await runner.tick()).toEqual(['score_sync']);
      const failed = await a.jobs.get('score_sync');
      expect(failed).toMatchObject({ last_status: 'failed', last_error: 'Salesforce answered 503' });
      // Retried after 5 minutes, not tomorrow.
      expect(failed!.next_run_at).toBe(c.now() + 5 * 60_000);

      fail = false;
      c.set(failed!.next_run_at);
      expect(await runner.tick()).toEqual(['score_sync']);
      const ok = await a.jobs.get('score_sync');
      expect(ok).toMatchObject({ last_status: 'ok', last_error: null, runs: 2 });
      expect(ok!.next_run_at).toBe(nextDailyRun('02:00', c.now()));
      await runner.close();
    });

    it('a changed schedule re-times the job at once; an unchanged one keeps its stored time', async () => {
      const [a, b] = await engine.open();
      const c = clock();
      const noop = async () => {};
      const r1 = runnerOn(a, 'replica-a', c.now, [
        { name: 'retention', schedule: { every_ms: 3_600_000 }, run: noop },
      ]);
      await r1.tick();
      const stored = (await a.jobs.get('retention'))!.next_run_at;
      c.advance(1000);
      // A restart with the same schedule: same due time.
      const r2 = runnerOn(b, 'replica-b', c.now, [
        { name: 'retention', schedule: { every_ms: 3_600_000 }, run: noop },
      ]);
      await r2.tick();
      expect((await a.jobs.get('retention'))!.next_run_at).toBe(stored);
      // A config edit to every minute: due a minute from now.
      const r3 = runnerOn(b, 'replica-b', c.now, [
        { name: 'retention', schedule: { every_ms: 60_000 }, run: noop },
      ]);
      await r3.tick();
      expect(await a.jobs.get('retention')).toMatchObject({
        schedule: 'every 1 min',
        next_run_at: c.now() + 60_000,
      });
      await Promise.all([r1.close(), r2.close(), r3.close()]);
    });
  });
}

describe('schedules', () => {
  it('daily_at is the next HH:MM in UTC, strictly after the given time', () => {
    const t = Date.parse('2026-11-30T01:59:59.999Z');
    expect(new Date(nextDailyRun('02:00', t)).toISOString()).toBe('2026-11-30T02:00:00.000Z');
    expect(new Date(nextDailyRun('02:00', t + 1)).toISOString()).toBe('2026-12-01T02:00:00.000Z');
    expect(new Date(nextDailyRun('23:30', Date.parse('2026-12-31T23:31:00Z'))).toISOString()).toBe(
      '2027-01-01T23:30:00.000Z',
    );
  });

  it('refuses a job registered twice or with a schedule that cannot run', () => {
    const runner = createJobRunner({
      store: {} as Pick<Store, 'leases' | 'jobs'>,
      replicaId: 'r',
      logger: silentLogger,
    });
    const run = async () => {};
    runner.register({ name: 'a', schedule: { every_ms: 1000 }, run });
    expect(() => runner.register({ name: 'a', schedule: { every_ms: 1000 }, run })).toThrow(/twice/);
    expect(() => runner.register({ name: 'b', schedule: { daily_at: '24:00' }, run })).toThrow(/HH:MM/);
    expect(() => runner.register({ name: 'c', schedule: { every_ms: 0 }, run })).toThrow(/every_ms/);
  });
});
