/**
 * One live process per replica id, on both engines: the replica-instance row's SQL (register,
 * heartbeat, compare-and-swap takeover, release by the holder only, old rows forgotten), and the
 * registration built on it: a live twin is refused with a message naming the setting (also when the
 * starting process's clock runs ahead, and on PostgreSQL while the holder's pool is saturated), a
 * holder that stopped beating (SIGKILL) is taken over after a whole watch window however old its
 * last beat looks, a clean shutdown lets the next start go at once, and a process whose id was taken
 * over learns it at its next beat.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import {
  formatProcessIdentity,
  ownProcessIdentity,
  processIdentityOf,
  type ProcessIdentity,
} from '../../src/process-identity.ts';
import {
  isPidReplicaIdOf,
  registerReplica,
  replicaHeartbeat,
  takeOverDeadSiblings,
  type ReplicaRegistration,
} from '../../src/replica-registration.ts';
import { StartupError } from '../../src/startup.ts';
import type { Store } from '../../src/store/store.ts';
import { ENGINES } from './engines.ts';

const HEARTBEAT = { periodMs: 100, expiryMs: 300 };
const logger = createLogger({ level: 'error' });

const register = (
  store: Store,
  replicaId: string,
  onLost: (message: string) => void = () => undefined,
  now?: () => number,
) => registerReplica({ store, replicaId, heartbeat: HEARTBEAT, logger, onLost, ...(now ? { now } : {}) });

const refusalOf = (registering: Promise<ReplicaRegistration>) =>
  registering.then(
    async (registration) => {
      await registration.close();
      return undefined;
    },
    (error: unknown) => error,
  );

const TWIN_REFUSAL = (replicaId: string) =>
  `another live process uses replica id ${replicaId}; give each replica its own id ` +
  '(FRAUDGATE_REPLICA_ID, or replica_id in the config file), or stop the other process first';

it('the heartbeat is a third of the job lease, at most 500 ms; the watch window ten beats', () => {
  expect(replicaHeartbeat({ jobs: { lease_ttl_ms: 15_000 } } as never)).toEqual({
    periodMs: 500,
    expiryMs: 5_000,
  });
  expect(replicaHeartbeat({ jobs: { lease_ttl_ms: 1_200 } } as never)).toEqual({
    periodMs: 400,
    expiryMs: 4_000,
  });
});

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`replica instances: ${engine.name}`, () => {
    it('insert once; beat and release by the holder only; takeover only from the instance seen', async () => {
      const [a, b] = await engine.open();
      const t0 = 1_000_000;
      expect(await a.replicas.insert('r1', 'n1', t0)).toBe(true);
      expect(await b.replicas.insert('r1', 'n2', t0)).toBe(false);
      expect(await b.replicas.beat('r1', 'n1', t0 + 100)).toBe(true);
      expect(await b.replicas.beat('r1', 'n2', t0 + 100)).toBe(false);
      const seen = (await a.replicas.get('r1'))!;
      expect(seen).toEqual({
        replica_id: 'r1',
        nonce: 'n1',
        started_at: t0,
        heartbeat_at: t0 + 100,
        beats: 1,
      });
      // It beat again after n2 looked: n2's takeover loses, n3's (which saw the new beat) wins.
      expect(await a.replicas.beat('r1', 'n1', t0 + 200)).toBe(true);
      expect(await b.replicas.takeOver('r1', 'n2', seen, t0 + 500)).toBe(false);
      expect(await b.replicas.takeOver('r1', 'n3', (await b.replicas.get('r1'))!, t0 + 600)).toBe(true);
      expect(await a.replicas.beat('r1', 'n1', t0 + 700)).toBe(false);
      expect(await a.replicas.release('r1', 'n1')).toBe(false);
      expect(await a.replicas.get('r1')).toMatchObject({ nonce: 'n3', started_at: t0 + 600, beats: 0 });
      expect(await a.replicas.release('r1', 'n3')).toBe(true);
      expect(await a.replicas.get('r1')).toBeUndefined();
      // Rows not beaten since a time are forgotten, others kept.
      await a.replicas.insert('old', 'n4', t0);
      await a.replicas.insert('new', 'n5', t0 + 10_000);
      expect(await a.replicas.forget(t0 + 5_000)).toBe(1);
      expect(await a.replicas.get('new')).toBeDefined();
    });

    it('dead siblings: every row listed; of those asked about, only ones whose process is provably gone taken over', async () => {
      const [a, b] = await engine.open();
      const t0 = 2_000_000;
      const here = ownProcessIdentity();
      // Processes of this boot and pid namespace: pids that no process holds (pid_max is at most 2^22),
      // and this test's parent, alive though it never beats (as a paused server's would not).
      const nonceOf = (identity: ProcessIdentity | undefined) =>
        identity ? `n ${formatProcessIdentity(identity)}` : 'n-without-identity';
      const gone = (pid: number) => here && { ...here, pid };
      const nonces: Record<string, string> = {
        'h:stdio:1': nonceOf(gone(2_147_483_001)),
        'h:stdio:2': nonceOf(processIdentityOf(process.ppid)),
        'h:http:3': nonceOf(gone(2_147_483_003)),
        'other:stdio:4': nonceOf(gone(2_147_483_004)),
        // A row of a version that records no identity, or of a host without /proc.
        'h:stdio:5': 'n-without-identity',
        // The pid of a live process, reused: its start time differs from the one recorded.
        'h:stdio:6': nonceOf(here && { ...here, pid: process.ppid, startTicks: '1' }),
      };
      for (const [id, nonce] of Object.entries(nonces)) {
        expect(await a.replicas.insert(id, nonce, t0)).toBe(true);
      }
      expect((await b.replicas.list()).map((r) => r.replica_id).sort()).toEqual([
        'h:http:3',
        'h:stdio:1',
        'h:stdio:2',
        'h:stdio:5',
        'h:stdio:6',
        'other:stdio:4',
      ]);
      expect(await b.replicas.list()).toContainEqual({
        replica_id: 'h:stdio:1',
        nonce: nonces['h:stdio:1'],
        started_at: t0,
        heartbeat_at: t0,
        beats: 0,
      });
      // A server closing meanwhile takes nothing over.
      const aborted = await takeOverDeadSiblings({
        store: b,
        siblings: (id) => isPidReplicaIdOf('h', id),
        logger,
        signal: AbortSignal.abort(),
      });
      expect(aborted.replicaIds).toEqual([]);
      expect(await a.replicas.get('h:stdio:1')).toMatchObject({ nonce: nonces['h:stdio:1'] });
      const dead = await takeOverDeadSiblings({
        store: b,
        siblings: (id) => isPidReplicaIdOf('h', id),
        logger,
      });
      // Where /proc cannot tell (macOS), nothing is provably gone: all is left to the 10-minute sweep.
      expect(dead.replicaIds.sort()).toEqual(here ? ['h:http:3', 'h:stdio:1', 'h:stdio:6'] : []);
      if (here) {
        // Taken over: a holder that came back would learn it at its next beat.
        expect(await a.replicas.beat('h:stdio:1', nonces['h:stdio:1']!, t0 + 1)).toBe(false);
      }
      // The live one is left alone however long it has not beaten.
      expect(await a.replicas.beat('h:stdio:2', nonces['h:stdio:2']!, t0 + 1)).toBe(true);
      await dead.release();
      expect((await a.replicas.list()).map((r) => r.replica_id).sort()).toEqual(
        here
          ? ['h:stdio:2', 'h:stdio:5', 'other:stdio:4']
          : ['h:http:3', 'h:stdio:1', 'h:stdio:2', 'h:stdio:5', 'h:stdio:6', 'other:stdio:4'],
      );
    });

    it('a live twin is refused; a killed holder is taken over after a whole window, however old its beat looks', async () => {
      const [a, b] = await engine.open();
      const first = await register(a, 'twin-r');
      try {
        const refusal = await refusalOf(register(b, 'twin-r'));
        expect(refusal).toBeInstanceOf(StartupError);
        expect((refusal as StartupError).message).toBe(TWIN_REFUSAL('twin-r'));
        // The refused start changed nothing: the first still holds the id.
        expect((await a.replicas.get('twin-r'))?.started_at).toBe(first.startedAt.getTime());
      } finally {
        await first.close();
      }

      // Holders that died (SIGKILL: no release, no more beats) a moment ago, and long ago as far as
      // the row's clock says: both are watched for the whole window before they are taken over.
      for (const [replicaId, lastBeat] of [
        ['killed-r', Date.now()],
        ['killed-long-ago-r', Date.now() - 60_000],
      ] as const) {
        await a.replicas.insert(replicaId, 'dead-process', lastBeat);
        const began = performance.now();
        const next = await register(b, replicaId);
        const waited = performance.now() - began;
        try {
          expect(waited).toBeGreaterThanOrEqual(HEARTBEAT.expiryMs);
          expect(waited).toBeLessThan(HEARTBEAT.expiryMs + 400);
          expect((await a.replicas.get(replicaId))?.nonce).not.toBe('dead-process');
        } finally {
          await next.close();
        }
      }
    });

    it('a start whose clock runs ahead of the live holder is refused, and the holder keeps its id', async () => {
      const [a, b] = await engine.open();
      const lost: string[] = [];
      const holder = await register(a, 'skew-r', (m) => lost.push(m));
      try {
        await sleep(2 * HEARTBEAT.periodMs);
        // Two seconds ahead: by its clock the holder last beat long past the window.
        const refusal = await refusalOf(register(b, 'skew-r', undefined, () => Date.now() + 2_000));
        expect(refusal).toBeInstanceOf(StartupError);
        expect((refusal as StartupError).message).toBe(TWIN_REFUSAL('skew-r'));
        await sleep(2 * HEARTBEAT.periodMs);
        expect(lost).toEqual([]);
        expect((await a.replicas.get('skew-r'))?.started_at).toBe(holder.startedAt.getTime());
      } finally {
        await holder.close();
      }
    });

    it.skipIf(engine.name !== 'PostgreSQL')(
      'the heartbeat does not queue behind a saturated pool: a twin started meanwhile is refused',
      async () => {
        const [a, b] = await engine.open();
        const lost: string[] = [];
        const holder = await register(a, 'busy-r', (m) => lost.push(m));
        // Twice the pool (4) in statements of half a second, for longer than the twin watches.
        let saturating = true;
        const load = Array.from({ length: 8 }, async () => {
          while (saturating) await a.sql.query('SELECT pg_sleep(0.5)');
        });
        try {
          await sleep(HEARTBEAT.periodMs);
          const refusal = await refusalOf(register(b, 'busy-r'));
          expect((refusal as StartupError | undefined)?.message).toBe(TWIN_REFUSAL('busy-r'));
          expect(lost).toEqual([]);
        } finally {
          saturating = false;
          await Promise.all(load);
          await holder.close();
        }
      },
    );

    it('a clean shutdown lets the next start go at once; a taken-over process learns it at its next beat', async () => {
      const [a, b] = await engine.open();
      const first = await register(a, 'clean-r');
      await first.close();
      const began = Date.now();
      const second = await register(b, 'clean-r');
      expect(Date.now() - began).toBeLessThan(HEARTBEAT.periodMs);
      await second.close();

      const lost: string[] = [];
      let paused: ReplicaRegistration | undefined = await register(a, 'paused-r', (m) => lost.push(m));
      try {
        // What a start sees after this process was paused past the expiry: it takes the id over.
        const row = (await b.replicas.get('paused-r'))!;
        expect(await b.replicas.takeOver('paused-r', 'newcomer', row, Date.now())).toBe(true);
        for (let i = 0; i < 20 && lost.length === 0; i++) await sleep(50);
        expect(lost).toEqual([
          'replica id paused-r was taken over by another process (this one stopped beating for over 300 ms, ' +
            'e.g. paused): stopping so the two do not run as twins; give each replica its own id ' +
            '(FRAUDGATE_REPLICA_ID, or replica_id in the config file)',
        ]);
        await paused.close();
        paused = undefined;
        // Its close does not release the newcomer's row.
        expect((await b.replicas.get('paused-r'))?.nonce).toBe('newcomer');
      } finally {
        await paused?.close();
      }
    });
  });
}
