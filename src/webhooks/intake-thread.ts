/**
 * The SQLite webhook intake's writer thread (src/webhooks/intake-writer.ts starts it). node:sqlite
 * is synchronous: a group commit's inserts and its fsync on the main thread would stall every
 * request in flight for milliseconds. Here they run beside the event loop, on a connection of
 * this thread's own, while the main thread keeps reading, verifying and answering requests.
 *
 * The transaction is the outbox's own group commit (src/store/outbox-store.ts): the events of the
 * deliveries that arrived together and their receipt records (a Segment delivery: its own
 * transaction, `enqueueRoutedMany`), appended with `appendManyIn` by a
 * ledger instance of the process's writer id. Chaining from the head read inside the transaction
 * (BEGIN IMMEDIATE) keeps that chain whole however this thread's commits interleave with the main
 * ledger's; checkpoints fall due here as they would there (every N records, every T, on close).
 * Everything the thread needs arrives in `workerData`; nothing of the main thread is shared.
 */
import { createPrivateKey } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createAuditLedger, type LedgerEngine } from '../governance/audit-ledger.ts';
import type { AuditAppendInput } from '../governance/audit.ts';
import { createCheckpointSigner } from '../governance/audit-signing.ts';
import { createRedactor } from '../governance/redact.ts';
import { commitLedgerIn, readCheckpoints } from '../store/audit-ledger-sql.ts';
import { createFieldCipher } from '../store/field-crypto.ts';
import {
  createOutboxStore,
  type DecisionEvent,
  type EnqueuedEvent,
  type IntakeReceipt,
  type NewEffect,
} from '../store/outbox-store.ts';
import { openSqliteDatabase } from '../store/sqlite/database.ts';
import { sqliteOutboxQueue } from '../store/sqlite/outbox-queue.ts';

export interface IntakeThreadData {
  /** The SQLite file (the store's, where the ledger lives too). */
  path: string;
  /** The process's ledger writer id: receipts join its chain. */
  writer: string;
  /** Keys the redactor hashes identifiers with (the runtime's audit key). */
  auditKey: string;
  /** The checkpoint signing key, PKCS#8 PEM. */
  signingKeyPem: string;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  /** Seals the effects' arguments at rest, as the main thread's outbox does (FRAUDGATE_DATA_KEY). */
  dataKey: Uint8Array;
  /** Opens what a rotated-out data key sealed (FRAUDGATE_DATA_KEY_PREVIOUS). */
  previousDataKeys: Uint8Array[];
}

/** One delivery to store: its event, when it arrived, and its receipt record. */
export interface IntakeItem {
  event: DecisionEvent;
  now: number;
  receipt: IntakeReceipt;
}

/**
 * The deliveries the main thread received in one turn of its event loop, as the JSON of their
 * {@link IntakeItem}s: one string crosses threads far cheaper than structured-cloning every
 * nested receipt object.
 */
export interface IntakeBatch {
  id: number;
  items: string;
}

/**
 * One Segment delivery (`OutboxStore.enqueueRoutedMany`), as the JSON of an {@link IntakeDelivery}:
 * committed in a transaction of its own, as on the main thread, so it is stored whole or not at all.
 */
export interface IntakeRoutedBatch {
  id: number;
  routed: string;
}

/** A delivery's events with their effects and receipts, and its other records (`also`). */
export interface IntakeDelivery {
  events: { event: DecisionEvent; effects: NewEffect[]; receipt?: IntakeReceipt }[];
  now: number;
  also: AuditAppendInput[];
}

/**
 * Where each delivery went, in order: the stored event's id, negated for a duplicate (ids are
 * positive), as one array of numbers.
 */
export type IntakeReply =
  { id: number; ok: true; stored: number[] } | { id: number; ok: false; error: string; code?: string };

const data = workerData as IntakeThreadData;
const db = openSqliteDatabase(data.path);

const unavailable = (what: string) => () => {
  throw new Error(`${what} is not available on the webhook intake thread`);
};
/** Appends inside the outbox's transactions; on its own only for checkpoints (timed, on close). */
const engine: LedgerEngine = {
  kind: 'sqlite',
  commit: (writer, build) => db.transaction((tx) => commitLedgerIn(tx, writer, build)),
  commitIn: commitLedgerIn,
  scan: unavailable('scan'),
  checkpoints: () => readCheckpoints(db),
  prune: unavailable('prune'),
  ping: () => db.ping(),
  close: async () => undefined,
};
const audit = createAuditLedger({
  engine,
  writer: data.writer,
  redactor: createRedactor({ hashKey: data.auditKey }),
  signer: createCheckpointSigner(createPrivateKey(data.signingKeyPem)),
  checkpointEvery: data.checkpointEvery,
  checkpointIntervalMs: data.checkpointIntervalMs,
});
// Group commit: the batches that reach this thread together (and their items) share one transaction.
const outbox = createOutboxStore(db, sqliteOutboxQueue, {
  groupCommit: true,
  cipher: createFieldCipher(
    Buffer.from(data.dataKey),
    data.previousDataKeys.map((k) => Buffer.from(k)),
  ),
});

/** Commits a batch of Sift deliveries (grouped), or one Segment delivery. */
function store(message: IntakeBatch | IntakeRoutedBatch): Promise<EnqueuedEvent[]> {
  if ('items' in message) {
    const items = JSON.parse(message.items) as IntakeItem[];
    return Promise.all(items.map((i) => outbox.enqueue(i.event, i.now, { audit, receipt: i.receipt })));
  }
  const delivery = JSON.parse(message.routed) as IntakeDelivery;
  return outbox.enqueueRoutedMany(
    delivery.events.map(({ event, effects, receipt }) => ({
      event,
      effects,
      ...(receipt ? { intake: { audit, receipt } } : {}),
    })),
    delivery.now,
    { audit, records: delivery.also },
  );
}

/** Batches not yet answered: closing waits for them. */
const inFlight = new Set<Promise<unknown>>();

const port = parentPort!;
port.on('message', (message: IntakeBatch | IntakeRoutedBatch | 'close') => {
  if (message === 'close') {
    void (async () => {
      await Promise.allSettled([...inFlight]);
      // Seals what this thread appended, so a verifier finds the chain complete.
      await audit.close().catch(() => undefined);
      await db.close();
      port.close();
    })();
    return;
  }
  const done = store(message).then(
    (stored) =>
      port.postMessage({
        id: message.id,
        ok: true,
        stored: stored.map((e) => (e.duplicate ? -e.id : e.id)),
      } satisfies IntakeReply),
    (error: unknown) => {
      const e = error as { message?: string; code?: string };
      port.postMessage({
        id: message.id,
        ok: false,
        error: e.message ?? String(error),
        ...(e.code ? { code: e.code } : {}),
      } satisfies IntakeReply);
    },
  );
  inFlight.add(done);
  void done.finally(() => inFlight.delete(done));
});
