/**
 * One live process per replica id. Job leases, outbox leases and approval claims belong to the
 * replica id, so a `serve` restarted under its id takes its predecessor's work back at once and
 * settles what it died executing. Two LIVE processes with one id (a copied config, two pods given the
 * same FRAUDGATE_REPLICA_ID) would do that to each other all the time: each takes the other's leases
 * and may re-run the other's in-flight executions. The replica-instance row (src/store/
 * replica-instance-store.ts) tells the two cases apart by its heartbeat:
 *
 * - no row: register and go;
 * - a row of another process, however old its last beat looks: watch its beat counter for the whole
 *   watch window. If it beats meanwhile, a live twin holds the id: refuse to start (fail closed). If
 *   not, its process is gone (SIGKILL, crash): take over.
 *
 * Liveness is never judged by comparing the row's `heartbeat_at` with this process's clock: written
 * on another host, it is off by that host's clock skew, and a starting process whose clock ran ahead
 * would take a live holder's id at once (the holder would stop, and the newcomer would re-run its
 * in-flight executions). Only the counter moving, seen on this process's own monotonic clock, counts.
 * The cost: a start after a SIGKILL always waits the window (a clean stop deletes the row, so the next
 * start waits for nothing).
 *
 * The heartbeat is a third of the job lease, at most 500 ms, and the window ten beats (5 s): a
 * holder's beat must not pause that long. On PostgreSQL the beat has its own connection
 * (src/store/store.ts), so a pool saturated by the calls' statements (which may queue for a minute)
 * does not hold it back; what remains is this process's event loop and the server's answer. A short
 * window costs no safety: it is only watched when a process starts under an id whose row is there.
 * A process whose row was taken over (it was paused or stalled past the window, say) learns it at
 * its next beat and stops (`onLost`) instead of running as a twin.
 *
 * A row's nonce also carries its process's identity where /proc tells it (src/process-identity.ts:
 * boot id, pid namespace, pid, start time). The pid-carrying ids of other processes (siblings on one
 * data dir, `takeOverDeadSiblings`) are judged by it alone, never by a still beat counter: a sibling
 * paused past the window is alive, and taking it over would settle calls it is still running. The
 * identity rides in the nonce rather than a column of its own: the nonce is already "which process
 * holds the id", so no migration is needed and rows of older versions (a bare UUID) simply carry no
 * identity, which means "not provably gone".
 */
import { randomUUID } from 'node:crypto';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import {
  formatProcessIdentity,
  isProcessGone,
  ownProcessIdentity,
  parseProcessIdentity,
} from './process-identity.ts';
import { StartupError } from './startup.ts';
import type { ReplicaInstance, ReplicaInstanceStore } from './store/replica-instance-store.ts';

export interface ReplicaHeartbeat {
  periodMs: number;
  /** Watched this long without a beat (on the watcher's own clock): the holder is gone. */
  expiryMs: number;
}

/** Beats a starting process watches for before it takes an id over (see the module comment). */
const BEATS_PER_WINDOW = 10;

export function replicaHeartbeat(config: Pick<Config, 'jobs'>): ReplicaHeartbeat {
  // Several beats per job lease: a process that lost its id stops before its leases could run twice.
  const periodMs = Math.min(500, Math.floor(config.jobs.lease_ttl_ms / 3));
  return { periodMs, expiryMs: BEATS_PER_WINDOW * periodMs };
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

/** A random nonce per process, followed by the process's identity where /proc tells it. */
export function processNonce(): string {
  const identity = ownProcessIdentity();
  return identity ? `${randomUUID()} ${formatProcessIdentity(identity)}` : randomUUID();
}

/** Whether the process that wrote `nonce` (processNonce) has provably ended; false if it cannot be told. */
export function isNonceHolderGone(nonce: string): boolean {
  const identity = parseProcessIdentity(nonce.split(' ')[1] ?? '');
  return identity !== undefined && isProcessGone(identity);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Watches `seen` for a whole expiry on this process's monotonic clock (wall clocks may step). */
async function watchRow(
  replicas: ReplicaInstanceStore,
  seen: ReplicaInstance,
  { periodMs, expiryMs }: ReplicaHeartbeat,
): Promise<'beat' | 'quiet' | 'changed'> {
  const pollMs = Math.max(25, Math.floor(periodMs / 4));
  const until = performance.now() + expiryMs;
  while (performance.now() < until) {
    await sleep(Math.min(pollMs, Math.max(1, until - performance.now())));
    const row = await replicas.get(seen.replica_id);
    if (!row || row.nonce !== seen.nonce) return 'changed';
    if (row.beats !== seen.beats) return 'beat';
  }
  return 'quiet';
}

/**
 * The default replica ids that carry a pid (`serve` on stdio or on --port 0: several may share one
 * data dir, so each needs its own id) of this host's processes; see runtime.ts `replicaIdFor`.
 */
export function isPidReplicaIdOf(host: string, replicaId: string): boolean {
  const prefix = `${host}:`;
  return replicaId.startsWith(prefix) && /^(stdio|http):\d+$/.test(replicaId.slice(prefix.length));
}

/**
 * A `serve` whose id carries its pid is never restarted under that id, so what a predecessor killed
 * mid-call left `executing` would wait for the 10-minute sweep. Instead, at start, every row of
 * `siblings` (this host's other pid ids) whose process is provably gone (isNonceHolderGone: same
 * boot and pid namespace, and its pid free or reused) is taken over (a compare-and-set on its nonce
 * and count, so of several starting processes one wins). Any other row is left alone, its claims to
 * the 10-minute sweep: a process paused or stalled (SIGSTOP, a debugger), one of another machine or
 * container sharing the hostname, one of a version that records no identity, or any where /proc is
 * absent. A beat counter that stood still proves nothing here: a paused process beats no more than a
 * dead one. Returns the ids taken over, whose claims the caller settles
 * (pipeline.recoverInterrupted), then `release()` deletes their rows. `signal` (the server closing)
 * ends it at once, taking nothing over.
 */
export async function takeOverDeadSiblings(options: {
  store: { replicas: ReplicaInstanceStore };
  siblings: (replicaId: string) => boolean;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => number;
}): Promise<{ replicaIds: string[]; release(): Promise<void> }> {
  const { replicas } = options.store;
  const now = options.now ?? Date.now;
  const nonce = processNonce();
  const rows = (await replicas.list()).filter((row) => options.siblings(row.replica_id));
  const taken: string[] = [];
  for (const row of rows) {
    if (options.signal?.aborted) break;
    if (!isNonceHolderGone(row.nonce)) continue;
    if (await replicas.takeOver(row.replica_id, nonce, row, now())) taken.push(row.replica_id);
  }
  if (taken.length > 0) {
    options.logger.info('settling what stopped processes of this host left executing', {
      replica_ids: taken.join(', '),
    });
  }
  return {
    replicaIds: taken,
    async release() {
      await Promise.all(taken.map((id) => replicas.release(id, nonce).catch(() => false)));
    },
  };
}

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
  const nonce = processNonce();

  const take = async (): Promise<number> => {
    for (;;) {
      const row = await replicas.get(replicaId);
      if (!row) {
        const at = now();
        if (await replicas.insert(replicaId, nonce, at)) return at;
        continue;
      }
      // Live, or killed some time ago: only its beat counter can tell, never its age on our clock.
      logger.info('replica id is held by another process, or was until it died; watching its heartbeat', {
        replica_id: replicaId,
        wait_ms: expiryMs,
      });
      const moved = await watch(row);
      if (moved === 'beat') throw new StartupError('FRAUDGATE_REPLICA_ID', twinMessage(replicaId));
      const at = now();
      if (moved === 'quiet' && (await replicas.takeOver(replicaId, nonce, row, at))) return at;
      // Gone (a clean shutdown) or taken by another starting process: look again.
    }
  };

  const watch = (seen: ReplicaInstance) => watchRow(replicas, seen, options.heartbeat);

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
