/**
 * One live process per replica id. Job leases, outbox leases and approval claims belong to the
 * replica id, so a `serve` restarted under its id takes its predecessor's work back at once and
 * settles what it died executing. Two LIVE processes with one id (a copied config, two pods given the
 * same FRAUDGATE_REPLICA_ID) would do that to each other all the time: each takes the other's leases
 * and may re-run the other's in-flight executions. The replica-instance row (src/store/
 * replica-instance-store.ts) tells the two cases apart by its heartbeat:
 *
 * - no row: register and go;
 * - a row that has not beaten for the expiry: its process is gone (SIGKILL, crash); take it over;
 * - a row beating recently: watch it until it would have expired. If it beats meanwhile, a live
 *   twin holds the id: refuse to start (fail closed). If not, it died moments ago: take over.
 *
 * The heartbeat is a third of the job lease, at most 500 ms, and the expiry three beats: a replica
 * killed and restarted at once waits at most 1.5 s (less the time it took to start), and a twin
 * beating on time is seen beating twice in that. A short expiry costs no safety: it is only read when
 * a process starts under an id whose row is still there. A process whose row was taken over (it was
 * paused or stalled past the expiry, say) learns it at its next beat and stops (`onLost`) instead of
 * running as a twin.
 *
 * Ages are measured on the callers' clocks like leases' (keep clocks in sync); whether a twin beat
 * is a counter, not a clock.
 */
import { randomUUID } from 'node:crypto';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import { StartupError } from './startup.ts';
import type { ReplicaInstance, ReplicaInstanceStore } from './store/replica-instance-store.ts';

export interface ReplicaHeartbeat {
  periodMs: number;
  /** No beat for this long: the holder is gone. */
  expiryMs: number;
}

export function replicaHeartbeat(config: Pick<Config, 'jobs'>): ReplicaHeartbeat {
  // Several beats per job lease: a process that lost its id stops before its leases could run twice.
  const periodMs = Math.min(500, Math.floor(config.jobs.lease_ttl_ms / 3));
  return { periodMs, expiryMs: 3 * periodMs };
}

/** Rows not beaten for a day are processes killed long ago (stdio ids carry a pid): deleted. */
const FORGET_AFTER_MS = 24 * 60 * 60 * 1000;

export interface ReplicaRegistration {
  replicaId: string;
  /** When this process took the id: claims under it from before are its predecessor's. */
  startedAt: Date;
  /** Stop beating and let the id go (a clean shutdown: the next start need not wait). */
  close(): Promise<void>;
}

export function twinMessage(replicaId: string): string {
  return (
    `another live process uses replica id ${replicaId}; give each replica its own id ` +
    '(FRAUDGATE_REPLICA_ID, or replica_id in the config file), or stop the other process first'
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function registerReplica(options: {
  store: { replicas: ReplicaInstanceStore };
  replicaId: string;
  heartbeat: ReplicaHeartbeat;
  logger: Logger;
  /** The id was taken over by another process: stop now (`serve` exits). */
  onLost(message: string): void;
  now?: () => number;
}): Promise<ReplicaRegistration> {
  const { replicaId, logger } = options;
  const replicas = options.store.replicas;
  const { periodMs, expiryMs } = options.heartbeat;
  const now = options.now ?? Date.now;
  const nonce = randomUUID();

  const take = async (): Promise<number> => {
    for (;;) {
      const at = now();
      const row = await replicas.get(replicaId);
      if (!row) {
        if (await replicas.insert(replicaId, nonce, at)) return at;
        continue;
      }
      const age = at - row.heartbeat_at;
      if (age >= expiryMs) {
        if (await replicas.takeOver(replicaId, nonce, row, at)) return at;
        continue;
      }
      // Beat recently: live, or killed moments ago. Watch it until it would have expired.
      const watchMs = Math.min(expiryMs, expiryMs - age);
      logger.info('replica id was in use moments ago; watching its heartbeat before taking it over', {
        replica_id: replicaId,
        wait_ms: watchMs,
      });
      const moved = await watch(row, at + watchMs);
      if (moved === 'beat') throw new StartupError('FRAUDGATE_REPLICA_ID', twinMessage(replicaId));
      const after = now();
      if (moved === 'quiet' && (await replicas.takeOver(replicaId, nonce, row, after))) return after;
      // Gone (a clean shutdown) or taken by another starting process: look again.
    }
  };

  const watch = async (seen: ReplicaInstance, until: number): Promise<'beat' | 'quiet' | 'changed'> => {
    const pollMs = Math.max(25, Math.floor(periodMs / 4));
    while (now() < until) {
      await sleep(Math.min(pollMs, Math.max(1, until - now())));
      const row = await replicas.get(replicaId);
      if (!row || row.nonce !== seen.nonce) return 'changed';
      if (row.beats !== seen.beats) return 'beat';
    }
    return 'quiet';
  };

  const startedAt = await take();
  await replicas.forget(startedAt - FORGET_AFTER_MS).catch(() => 0);

  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let failing = false;
  const beat = async () => {
    try {
      if (!(await replicas.beat(replicaId, nonce, now()))) {
        if (closed) return;
        closed = true;
        options.onLost(
          `replica id ${replicaId} was taken over by another process (this one stopped beating for over ` +
            `${expiryMs} ms, e.g. paused): stopping so the two do not run as twins; ` +
            'give each replica its own id (FRAUDGATE_REPLICA_ID, or replica_id in the config file)',
        );
        return;
      }
      if (failing) logger.info('replica heartbeat written again', { replica_id: replicaId });
      failing = false;
    } catch (error) {
      // A store outage is no sign of a twin: a starting twin cannot register through it either.
      if (!failing) {
        logger.warn('replica heartbeat not written; retrying', {
          replica_id: replicaId,
          error: error instanceof Error ? error.message : String(error),
        });
      }
      failing = true;
    }
  };
  let beating: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (closed) return;
    timer = setTimeout(() => {
      beating = beat().finally(schedule);
    }, periodMs);
    timer.unref();
  };
  schedule();

  return {
    replicaId,
    startedAt: new Date(startedAt),
    async close() {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      await beating;
      await replicas.release(replicaId, nonce).catch((error: unknown) =>
        logger.warn('replica id not released; the next start under it waits for its heartbeat to expire', {
          replica_id: replicaId,
          error: error instanceof Error ? error.message : String(error),
        }),
      );
    },
  };
}
