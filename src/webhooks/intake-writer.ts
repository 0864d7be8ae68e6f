/**
 * Where the webhook endpoints store what they accept: an event and its receipt record, in one
 * transaction with the deliveries that arrived together, durable before the 2xx.
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
import { databasePath } from '../store/store.ts';
import type { IntakeBatch, IntakeItem, IntakeReply, IntakeThreadData } from './intake-thread.ts';

/** What a webhook endpoint stores through (`OutboxStore.enqueue`, given a receipt), and its lifetime. */
export interface WebhookIntakeStore {
  enqueue: OutboxStore['enqueue'];
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
  if (config.store === 'postgres') return { enqueue: outbox.enqueue, close: async () => undefined };
  return openSqliteIntakeWriter({
    path: databasePath(config),
    writer: audit.writer,
    auditKey: keys?.auditKey ?? loadAuditKey(config, secrets),
    signingKeyPem: (keys?.signingKey ?? loadConfiguredSigningKey(config, secrets))
      .export({ type: 'pkcs8', format: 'pem' })
      .toString(),
    checkpointEvery: config.audit.checkpoint_every,
    checkpointIntervalMs: config.audit.checkpoint_interval_ms,
  });
}

function openSqliteIntakeWriter(data: IntakeThreadData): WebhookIntakeStore {
  type Waiting = { resolve: (stored: EnqueuedEvent) => void; reject: (error: unknown) => void };
  /** The deliveries of the batch the thread is committing (one at a time; see `send`). */
  let inFlight: Waiting[] | undefined;
  let pending: { item: IntakeItem; waiter: Waiting }[] = [];
  let nextId = 0;
  /** A send is due on the next turn (deliveries of this turn join it). */
  let scheduled = false;
  let closed = false;
  let thread: Worker | undefined;

  const failAll = (reason: string) => {
    const error = new Error(reason);
    const waiters = inFlight ?? [];
    inFlight = undefined;
    for (const w of waiters) w.reject(error);
  };
  const start = (): Worker => {
    const worker = new Worker(THREAD_URL, { workerData: data });
    // Idle, the thread does not keep the process alive; with a commit in flight it must.
    worker.unref();
    worker.on('message', (reply: IntakeReply) => {
      const waiters = inFlight ?? [];
      inFlight = undefined;
      worker.unref();
      if (reply.ok) {
        waiters.forEach((w, i) => {
          const id = reply.stored[i]!;
          w.resolve({ id: Math.abs(id), duplicate: id < 0 });
        });
      } else {
        const error = Object.assign(new Error(reply.error), reply.code ? { code: reply.code } : {});
        for (const w of waiters) w.reject(error);
      }
      // What arrived while this batch committed goes as the next one.
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
   * Sends the deliveries waiting as one batch, unless one is committing: the thread commits one
   * group at a time anyway, so what arrives meanwhile (over several turns) goes as one message
   * when it ends. One message per commit, not one per turn of the event loop, keeps the main
   * thread's share of the hand-over small.
   */
  const send = () => {
    scheduled = false;
    if (inFlight) return;
    const batch = pending;
    pending = [];
    if (batch.length === 0) {
      for (const resolve of idleWaiters.splice(0)) resolve();
      return;
    }
    const worker = (thread ??= start());
    const id = ++nextId;
    worker.ref();
    inFlight = batch.map((p) => p.waiter);
    worker.postMessage({ id, items: JSON.stringify(batch.map((p) => p.item)) } satisfies IntakeBatch);
  };

  return {
    enqueue(event: DecisionEvent, now = Date.now(), intake) {
      if (closed) return Promise.reject(new Error('the webhook intake is closed'));
      if (!intake) {
        return Promise.reject(new Error('the webhook intake stores events with their receipt record only'));
      }
      if (intake.audit.writer !== data.writer) {
        return Promise.reject(
          new Error(
            `receipt for ledger writer ${intake.audit.writer}; this intake appends as ${data.writer}`,
          ),
        );
      }
      return new Promise<EnqueuedEvent>((resolve, reject) => {
        pending.push({ item: { event, now, receipt: intake.receipt }, waiter: { resolve, reject } });
        if (!scheduled && !inFlight) {
          scheduled = true;
          setImmediate(send);
        }
      });
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
