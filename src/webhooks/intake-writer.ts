/**
 * Where the webhook endpoints store what they accept: an event and its receipt record, in one
 * transaction with the deliveries that arrived together (a Segment delivery's events and records:
 * one transaction of their own), durable before the 2xx.
 *
 * On SQLite the transaction runs on a writer thread (intake-thread.ts) with a connection of its
 * own, so its statements and its fsync never stall the event loop: the main thread sends each
 * turn's deliveries as one message, and the thread commits the messages that reach it together as
 * one group. On PostgreSQL the outbox's own group commit already waits off the event loop (on the
 * wire), so the store is used as it is: one statement per group (src/store/postgres/outbox-queue.ts).
 */
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Config, Secrets } from '../config.ts';
import { loadConfiguredSigningKey } from '../governance/audit-signing.ts';
import type { AuditLog } from '../governance/audit.ts';
import { loadAuditKey } from '../governance/audit-key.ts';
import type { LoadedKeys } from '../runtime.ts';
import type { DecisionEvent, EnqueuedEvent, OutboxStore } from '../store/outbox-store.ts';
import { configuredDataKeys } from '../store/field-crypto.ts';
import { databasePath } from '../store/store.ts';
import type {
  IntakeBatch,
  IntakeDelivery,
  IntakeItem,
  IntakeReply,
  IntakeRoutedBatch,
  IntakeThreadData,
} from './intake-thread.ts';

/**
 * What the webhook endpoints store through (`OutboxStore.enqueue` for Sift, given a receipt;
 * `enqueueRoutedMany` for a Segment delivery), and its lifetime.
 */
export interface WebhookIntakeStore {
  enqueue: OutboxStore['enqueue'];
  enqueueRoutedMany: OutboxStore['enqueueRoutedMany'];
  close(): Promise<void>;
}

/** The thread's module beside this one, whether running from sources (.ts) or a build (.js). */
const THREAD_URL = new URL(`./intake-thread${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

/**
 * The intake store for this process: the SQLite writer thread, or the outbox itself on PostgreSQL.
 * `audit` is the process's ledger: on SQLite the thread appends receipts under its writer id, and
 * signs its checkpoints with the signing key of `keys` (default: loaded here).
 */
export function openWebhookIntakeStore(options: {
  config: Config;
  secrets: Secrets;
  outbox: OutboxStore;
  audit: AuditLog;
  keys?: LoadedKeys;
}): WebhookIntakeStore {
  const { config, secrets, outbox, audit, keys } = options;
  if (config.store === 'postgres') {
    return {
      enqueue: outbox.enqueue,
      enqueueRoutedMany: outbox.enqueueRoutedMany,
      close: async () => undefined,
    };
  }
  return openSqliteIntakeWriter({
    path: databasePath(config),
    writer: audit.writer,
    auditKey: keys?.auditKey ?? loadAuditKey(config, secrets),
    signingKeyPem: (keys?.signingKey ?? loadConfiguredSigningKey(config, secrets))
      .export({ type: 'pkcs8', format: 'pem' })
      .toString(),
    checkpointEvery: config.audit.checkpoint_every,
    checkpointIntervalMs: config.audit.checkpoint_interval_ms,
    ...configuredDataKeys(config, secrets, keys),
  });
}

function openSqliteIntakeWriter(data: IntakeThreadData): WebhookIntakeStore {
  type Waiting = { resolve: (stored: EnqueuedEvent) => void; reject: (error: unknown) => void };
  type Job =
    | { kind: 'events'; items: IntakeItem[]; waiters: Waiting[] }
    | {
        kind: 'routed';
        routed: string;
        resolve: (stored: EnqueuedEvent[]) => void;
        reject: (error: unknown) => void;
      };
  /** The job the thread is committing (one at a time; see `send`). */
  let inFlight: Job | undefined;
  /** In order of arrival; Sift deliveries arriving one after another join one `events` job. */
  const pending: Job[] = [];
  let nextId = 0;
  /** A send is due on the next turn (deliveries of this turn join it). */
  let scheduled = false;
  let closed = false;
  let thread: Worker | undefined;

  const fail = (job: Job | undefined, error: unknown) => {
    if (job?.kind === 'events') for (const w of job.waiters) w.reject(error);
    else job?.reject(error);
  };
  const failAll = (reason: string) => {
    const job = inFlight;
    inFlight = undefined;
    fail(job, new Error(reason));
  };
  const start = (): Worker => {
    const worker = new Worker(THREAD_URL, { workerData: data });
    // Idle, the thread does not keep the process alive; with a commit in flight it must.
    worker.unref();
    worker.on('message', (reply: IntakeReply) => {
      const job = inFlight;
      inFlight = undefined;
      worker.unref();
      if (!reply.ok) {
        fail(job, Object.assign(new Error(reply.error), reply.code ? { code: reply.code } : {}));
      } else {
        const stored = reply.stored.map((id) => ({ id: Math.abs(id), duplicate: id < 0 }));
        if (job?.kind === 'events') job.waiters.forEach((w, i) => w.resolve(stored[i]!));
        else job?.resolve(stored);
      }
      // What arrived while this job committed goes next.
      send();
    });
    worker.on('error', (error) => failAll(`webhook intake thread failed: ${error.message}`));
    worker.on('exit', () => {
      if (thread === worker) thread = undefined;
      failAll('webhook intake thread stopped');
      send();
    });
    return worker;
  };
  const idleWaiters: (() => void)[] = [];
  /**
   * Sends the oldest job waiting, unless one is committing: the thread commits one group at a time
   * anyway, so the Sift deliveries that arrive meanwhile (over several turns) go as one message
   * when it ends. One message per commit, not one per turn of the event loop, keeps the main
   * thread's share of the hand-over small.
   */
  const send = () => {
    scheduled = false;
    if (inFlight) return;
    const job = pending.shift();
    if (!job) {
      for (const resolve of idleWaiters.splice(0)) resolve();
      return;
    }
    const worker = (thread ??= start());
    const id = ++nextId;
    worker.ref();
    inFlight = job;
    worker.postMessage(
      job.kind === 'events'
        ? ({ id, items: JSON.stringify(job.items) } satisfies IntakeBatch)
        : ({ id, routed: job.routed } satisfies IntakeRoutedBatch),
    );
  };
  const queue = (job: Job) => {
    pending.push(job);
    if (!scheduled && !inFlight) {
      scheduled = true;
      setImmediate(send);
    }
  };
  /** Refuses a record for another ledger writer than the thread's (it would join the wrong chain). */
  const checkWriter = (audit: AuditLog) => {
    if (audit.writer !== data.writer) {
      throw new Error(`receipt for ledger writer ${audit.writer}; this intake appends as ${data.writer}`);
    }
  };

  return {
    enqueue(event: DecisionEvent, now = Date.now(), intake) {
      if (closed) return Promise.reject(new Error('the webhook intake is closed'));
      if (!intake) {
        return Promise.reject(new Error('the webhook intake stores events with their receipt record only'));
      }
      try {
        checkWriter(intake.audit);
      } catch (error) {
        return Promise.reject(error);
      }
      return new Promise<EnqueuedEvent>((resolve, reject) => {
        const waiter = { resolve, reject };
        const item = { event, now, receipt: intake.receipt };
        const last = pending.at(-1);
        if (last?.kind === 'events') {
          last.items.push(item);
          last.waiters.push(waiter);
        } else queue({ kind: 'events', items: [item], waiters: [waiter] });
      });
    },
    enqueueRoutedMany(events, now = Date.now(), also) {
      if (closed) return Promise.reject(new Error('the webhook intake is closed'));
      let routed: string;
      try {
        for (const { intake } of events) if (intake) checkWriter(intake.audit);
        if (also) checkWriter(also.audit);
        routed = JSON.stringify({
          events: events.map(({ event, effects, intake }) => ({
            event,
            effects,
            ...(intake ? { receipt: intake.receipt } : {}),
          })),
          now,
          also: also?.records ?? [],
        } satisfies IntakeDelivery);
      } catch (error) {
        return Promise.reject(error);
      }
      return new Promise<EnqueuedEvent[]>((resolve, reject) =>
        queue({ kind: 'routed', routed, resolve, reject }),
      );
    },
    async close() {
      if (closed) return;
      closed = true;
      if (inFlight || pending.length > 0) {
        const idle = new Promise<void>((resolve) => idleWaiters.push(resolve));
        send();
        await idle;
      }
      const worker = thread;
      if (!worker) return;
      // Kept alive until the thread has sealed its records and closed its connection.
      worker.ref();
      const stopped = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage('close');
      await stopped;
    },
  };
}
