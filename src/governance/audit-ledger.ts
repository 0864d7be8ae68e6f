/**
 * The audit ledger: records in the store, one hash chain per writer, group-committed, sealed by
 * signed checkpoints (shared/docs/architecture.md, "Audit"; the record format is in `audit.ts`).
 *
 * Writers. Each process (or replica, with a stable FRAUDGATE_REPLICA_ID) appends to its own chain,
 * so replicas never wait on each other. The head of a chain is read and advanced inside the commit's
 * transaction under a per-writer lock, so two processes that share a writer id still never fork it.
 *
 * Group commit. Appends that arrive while a commit is in flight go into the next one: one
 * transaction, one sync, many records. `append` resolves once its record is durable; `enqueue`
 * (reads) does not wait, and its record is durable within one commit (the next group). If a commit
 * fails, waiting appends reject, enqueued records stay queued and are retried, and until a commit
 * succeeds again `assertWritable` refuses new calls (fail closed); so it does while a commit has been
 * in flight longer than `commitStallMs` (a store that hangs instead of failing).
 *
 * Checkpoints. A writer's first commit signs a seq-0 checkpoint (its chain exists, under this
 * key); then every `checkpointEvery` records or `checkpointIntervalMs`, and on close, it signs its
 * head. `verifyLedger` needs a trusted public key (see `audit-signing.ts`).
 */
import {
  auditError,
  bodyOfExportLine,
  buildAuditPayload,
  callTraceId,
  encodeAuditBody,
  exportRecordLine,
  isAuditEvent,
  readLines,
  verifyLegacyAuditFile,
  type AuditAppendInput,
  type AuditLog,
  type AuditPayload,
  type AuditRecord,
} from './audit.ts';
import { chainHash, GENESIS_HASH, WRITER_ID_SHAPE } from './audit-chain.ts';
import {
  describeTrustedKeys,
  type AuditCheckpoint,
  type CheckpointSigner,
  type CheckpointVerifier,
} from './audit-signing.ts';
import type { AuditWitness, WitnessEntry } from './audit-witness.ts';
import type { Redactor } from './redact.ts';
import type { SqlExecutor } from '../store/sql.ts';

/** One stored record: the chain header and the canonical body that was hashed. */
export interface LedgerRow {
  writer: string;
  seq: number;
  ts: string;
  body: string;
  prev_hash: string;
  hash: string;
}

/** A writer's chain head as stored: its last record and its last checkpoint. */
export interface LedgerHead {
  seq: number;
  hash: string;
  sealed_seq: number;
  sealed_at: string;
}

/** What one commit writes for one writer, built from the head read inside the transaction. */
export interface LedgerCommit {
  rows: LedgerRow[];
  checkpoints: AuditCheckpoint[];
  head: LedgerHead;
}

/**
 * Thrown by an engine's `commit` or `commitIn`, before anything is sent, for a group holding records
 * it cannot store (PostgreSQL: a separator of its commit statement's columns, which only a bug puts
 * in a canonical body). `refused` are their positions in the group. The ledger replaces each with a
 * record saying so and commits the group again, so one bad record never stalls a writer.
 */
export class LedgerRecordRefusedError extends Error {
  override readonly name = 'LedgerRecordRefusedError';
  readonly refused: readonly number[];
  constructor(message: string, refused: readonly number[]) {
    super(message);
    this.refused = refused;
  }
}

/** A group chained by the engine itself ({@link LedgerEngine.chain}). */
export interface ChainedGroup {
  firstSeq: number;
  firstPrevHash: string;
  /** The records' hashes, 64 hex characters each, concatenated in order. */
  hashes: string;
  head: LedgerHead;
}

/**
 * Storage for the ledger, one per engine (`src/store/sqlite`, `src/store/postgres`). Signing and
 * verification happen here, identically for both; so does chaining, except on an engine that
 * offers `chain` (SQLite hashes on its writer thread, with the same {@link chainHash}).
 */
export interface LedgerEngine {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * In one transaction: lock `writer`'s head (so concurrent commits of the same writer serialise;
   * other writers are not blocked), read it (undefined for a new writer), write what `build`
   * returns, store the new head. `build` is synchronous and may run again if the engine retries.
   */
  commit(writer: string, build: (head: LedgerHead | undefined) => LedgerCommit): Promise<void>;
  /**
   * `commit`, inside the caller's open transaction `tx` on this engine's database: what `build`
   * returns commits or rolls back with the caller's changes (see `src/store/audit-ledger-sql.ts`).
   */
  commitIn(
    tx: SqlExecutor,
    writer: string,
    build: (head: LedgerHead | undefined) => LedgerCommit,
  ): Promise<void>;
  /**
   * Optional (SQLite, whose writer thread has the head at hand): chains `records` itself, from the
   * head it reads inside the transaction, and writes them with `checkpoints` (heads it returned
   * earlier, signed by the ledger) and, when `writer` has no chain yet, `genesis` (its seq-0
   * checkpoint). An engine without it is given rows chained by the ledger (`commit`).
   */
  chain?(
    writer: string,
    group: {
      records: readonly { ts: string; body: string }[];
      checkpoints: readonly AuditCheckpoint[];
      genesis: AuditCheckpoint | undefined;
    },
  ): Promise<ChainedGroup>;
  /**
   * Every record, in insertion order (per writer that is seq order), in batches, as of one moment:
   * a writer's records are a prefix of its chain, never one with a gap a later commit fills.
   */
  scan(batchSize?: number): AsyncIterable<LedgerRow[]>;
  checkpoints(): Promise<AuditCheckpoint[]>;
  /**
   * Optional (an engine whose commit can fail after the server committed it: PostgreSQL, when the
   * connection drops before the answer): whether `writer`'s record `seq` with this hash is stored.
   */
  isStored?(writer: string, seq: number, hash: string): Promise<boolean>;
  /** Deletes `writer`'s records up to `throughSeq` and its checkpoints before it, in one transaction. */
  prune(writer: string, throughSeq: number): Promise<number>;
  /** Whether the engine answers (for `/readyz`). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface AuditLedgerOptions {
  engine: LedgerEngine;
  writer: string;
  redactor: Redactor;
  signer: CheckpointSigner;
  /** Sign the head after this many records. Default 1,000. */
  checkpointEvery?: number;
  /** ...or once this long has passed since the last checkpoint and records are unsealed. Default 10 s. */
  checkpointIntervalMs?: number;
  /** How often a failing ledger retries its queued records. Default 1 s. */
  retryMs?: number;
  /**
   * How long write-behind records (reads) may wait for company before their own commit: reads
   * share commits instead of paying an fsync each (an append that waits, `flush` and `close`
   * commit them at once). Default 50 ms.
   */
  writeBehindLingerMs?: number;
  /** Clock for `ts`; tests pin it. */
  now?: () => Date;
  /**
   * A commit still in flight after this long makes the ledger unhealthy (calls refused, `/readyz`
   * not ready) until one succeeds: a store that hangs rather than fails (a held lock, a stalled
   * server) must not leave calls queueing behind it while the replica looks ready. Default 15 s.
   */
  commitStallMs?: number;
  /** Told about commit failures and recoveries (the operator needs to know; calls are refused meanwhile). */
  onHealthChange?: (health: { ok: true } | { ok: false; reason: string }) => void;
}

/** Most records one commit carries: bounds a transaction's size and the wait of its last record. */
const MAX_GROUP = 2048;
/** Commits of this process's writer running at once (see `pump`). */
const MAX_IN_FLIGHT = 2;
/** Queues shorter than twice this go in one commit: splitting them would cost more commits than it overlaps. */
const MIN_SPLIT_GROUP = 32;

interface Queued {
  /** The redacted payload (to resolve `append` with, without parsing the body back). */
  payload: AuditPayload;
  body: string;
  ts: string;
  resolve?: (record: AuditRecord) => void;
  reject?: (error: unknown) => void;
}

/**
 * A write-behind record as enqueued: what the call supplied, its time and its trace, built into a
 * {@link Queued} record (redaction, canonical body) when its group commits. A read's answer then
 * waits for none of that work, which happens once per group, off the call's path.
 */
interface Deferred {
  input: AuditAppendInput;
  at: number;
  traceId: string | null;
}

export function createAuditLedger(options: AuditLedgerOptions): AuditLog {
  const { engine, writer, redactor, signer } = options;
  if (!WRITER_ID_SHAPE.test(writer)) {
    throw auditError(
      'The audit writer id is invalid.',
      `writer ${JSON.stringify(writer)} must match ${WRITER_ID_SHAPE.source} (set FRAUDGATE_REPLICA_ID accordingly)`,
    );
  }
  const every = options.checkpointEvery ?? 1000;
  const intervalMs = options.checkpointIntervalMs ?? 10_000;
  const retryMs = options.retryMs ?? 1000;
  const lingerMs = options.writeBehindLingerMs ?? 50;
  const stallMs = options.commitStallMs ?? 15_000;
  /** Pending while write-behind records wait for company; once it fires they commit (`lingerDue`). */
  let lingerTimer: NodeJS.Timeout | undefined;
  let lingerDue = false;
  /** Queued records whose `append` waits: they commit at once (the next turn), not after the linger. */
  let waitingInQueue = 0;
  /** `flush` or `close` asked for everything queued to commit now. */
  let hurry = false;
  const now = options.now ?? (() => new Date());

  let queue: (Queued | Deferred)[] = [];
  let inFlight = 0;
  /** A commit is scheduled for the next turn of the event loop. */
  let scheduled = false;
  /** After a failed commit, no new ones start until the retry timer (or another commit succeeding). */
  let paused = false;
  const idleWaiters: (() => void)[] = [];
  let closed = false;
  let sealRequested = false;
  let failure: string | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  /** What this process last committed, to know whether a timed checkpoint has anything to seal. */
  let known = { seq: 0, sealed: 0 };

  const setHealth = (reason: string | undefined) => {
    if (reason === failure) return;
    failure = reason;
    options.onHealthChange?.(reason === undefined ? { ok: true } : { ok: false, reason });
  };

  /** Marks the ledger unhealthy if the commit started now is still in flight after `stallMs`; call the result when it ends. */
  const watchForStall = () => {
    const timer = setTimeout(
      () =>
        setHealth(
          `an audit commit has been in flight for more than ${stallMs} ms (the store is stalled or a lock is held)`,
        ),
      stallMs,
    );
    timer.unref();
    return () => clearTimeout(timer);
  };

  const seal = (w: string, seq: number, hash: string, at: Date) =>
    signer.sign({ writer: w, seq, hash, ts: at.toISOString() });

  const build =
    (batch: Queued[]) =>
    (stored: LedgerHead | undefined): LedgerCommit => {
      const at = now();
      const checkpoints: AuditCheckpoint[] = [];
      let head = stored;
      if (!head) {
        // A new chain: its seq-0 checkpoint proves it was started by a holder of the key.
        checkpoints.push(seal(writer, 0, GENESIS_HASH, at));
        head = { seq: 0, hash: GENESIS_HASH, sealed_seq: 0, sealed_at: at.toISOString() };
      }
      let { seq, hash } = head;
      const rows = batch.map((q) => {
        const prev = hash;
        seq += 1;
        hash = chainHash(writer, seq, prev, q.body);
        return { writer, seq, ts: q.ts, body: q.body, prev_hash: prev, hash };
      });
      let { sealed_seq, sealed_at } = head;
      const due =
        seq - sealed_seq >= every || at.getTime() - Date.parse(sealed_at) >= intervalMs || sealRequested;
      if (due && seq > sealed_seq) {
        checkpoints.push(seal(writer, seq, hash, at));
        sealed_seq = seq;
        sealed_at = at.toISOString();
      }
      return { rows, checkpoints, head: { seq, hash, sealed_seq, sealed_at } };
    };

  /**
   * Write-behind records of failed commits that may have landed all the same (the connection lost
   * after the server committed, before it answered), with the last record each sent: before they
   * go again, the store is asked whether that record is there. A group commits whole or not at
   * all, so if it is, the group's records are stored and are dropped, not committed a second time.
   *
   * While any group is in doubt, commits run one at a time (`pump`) and the one that settles them
   * drops landed records from the whole queue, not just from its own batch: a failed commit's
   * records go back to the front of the queue, so a group's records may have been split across
   * the next batches, and a second commit taken meanwhile would send its part unchecked.
   */
  let inDoubt: { seq: number; hash: string; records: Set<Queued> }[] = [];

  /**
   * Settles the in-doubt groups: drops the records of those the store already holds from `batch`
   * and from the queue, and returns `batch` without them. Throws (keeping them in doubt) when the
   * store cannot tell. Runs with no other commit in flight (see `pump`), so no landed record is
   * anywhere but in `batch` or the queue.
   */
  const withoutLanded = async (batch: Queued[]): Promise<Queued[]> => {
    if (inDoubt.length === 0 || !engine.isStored) return batch;
    const groups = inDoubt;
    const landed = new Set<Queued | Deferred>();
    for (const group of groups) {
      if (await engine.isStored(writer, group.seq, group.hash)) {
        for (const q of group.records) landed.add(q);
      }
    }
    inDoubt = inDoubt.filter((group) => !groups.includes(group));
    if (landed.size === 0) return batch;
    queue = queue.filter((q) => !landed.has(q));
    return batch.filter((q) => !landed.has(q));
  };

  /** A failed commit: waiting appends reject at once, write-behind records wait for the retry. */
  const commitFailed = (batch: Queued[], error: unknown) => {
    const reason = error instanceof Error ? error.message : String(error);
    setHealth(reason);
    paused = true;
    const failed = auditError(
      'The audit ledger could not be written.',
      `commit of ${batch.length} records for writer ${writer} failed: ${reason}`,
      error,
      true,
    );
    const kept = batch.filter((q) => !q.reject);
    // (waitingInQueue is unchanged: only write-behind records go back.)
    for (const q of batch) q.reject?.(failed);
    queue = [...kept, ...queue];
    if (!closed) {
      retryTimer ??= setTimeout(() => {
        retryTimer = undefined;
        paused = false;
        // Even with nothing queued, a commit (of the head alone) probes whether writing works again.
        sealRequested = true;
        kick();
      }, retryMs);
      retryTimer.unref();
    }
  };

  /** Commits the records of `batch` (and a due checkpoint); settles their appends either way. */
  const commitBatch = async (taken: Queued[]): Promise<void> => {
    if (engine.chain) return commitChained(taken);
    let committed: LedgerCommit | undefined;
    const sealing = sealRequested;
    const ended = watchForStall();
    let batch = taken;
    try {
      batch = await withoutLanded(taken);
      await commitStandingIn(batch, () => engine.commit(writer, (head) => (committed = build(batch)(head))));
    } catch (error) {
      const last = committed?.rows.at(-1);
      const writeBehind = batch.filter((q) => !q.reject);
      if (last && writeBehind.length > 0 && engine.isStored) {
        inDoubt.push({ seq: last.seq, hash: last.hash, records: new Set(writeBehind) });
      }
      commitFailed(batch, error);
      return;
    } finally {
      ended();
    }
    if (sealing) sealRequested = false;
    paused = false;
    setHealth(undefined);
    const done = committed!;
    if (done.head.seq >= known.seq) known = { seq: done.head.seq, sealed: done.head.sealed_seq };
    done.rows.forEach((row, i) => {
      const q = batch[i]!;
      q.resolve?.({ v: 2, writer, seq: row.seq, prev_hash: row.prev_hash, hash: row.hash, ...q.payload });
    });
  };

  /**
   * Checkpoints signed for heads the engine returned, written with the next commit. Engines that
   * chain records themselves ({@link LedgerEngine.chain}) tell the head only after the commit, so
   * the checkpoint sealing it follows one commit later (records after a writer's newest checkpoint
   * are reported as unsealed until then, as ever).
   */
  let pendingSeals: AuditCheckpoint[] = [];
  /** The newest head this process signed, so commits in flight meanwhile do not sign it again. */
  let signed = { seq: 0, at: 0 };
  /**
   * The seq-0 checkpoint a new chain starts with, signed once and carried by every chained commit:
   * the engine uses it only when it finds no chain (the first commit, or a store emptied meanwhile).
   */
  let genesis: AuditCheckpoint | undefined;

  /** {@link commitBatch} on an engine that chains the records itself (SQLite: on its writer thread, off the event loop). */
  const commitChained = async (batch: Queued[]): Promise<void> => {
    const sealing = sealRequested;
    const checkpoints = pendingSeals;
    pendingSeals = [];
    let group: ChainedGroup;
    const ended = watchForStall();
    try {
      group = await engine.chain!(writer, {
        records: batch,
        checkpoints,
        // A new chain: its seq-0 checkpoint proves it was started by a holder of the key.
        genesis: (genesis ??= seal(writer, 0, GENESIS_HASH, now())),
      });
    } catch (error) {
      pendingSeals = [...checkpoints, ...pendingSeals];
      commitFailed(batch, error);
      return;
    } finally {
      ended();
    }
    if (sealing) sealRequested = false;
    paused = false;
    setHealth(undefined);
    const { head, hashes, firstSeq, firstPrevHash } = group;
    if (head.seq >= known.seq) known = { seq: head.seq, sealed: head.sealed_seq };
    batch.forEach((q, i) => {
      q.resolve?.({
        v: 2,
        writer,
        seq: firstSeq + i,
        prev_hash: i === 0 ? firstPrevHash : hashes.slice(64 * (i - 1), 64 * i),
        hash: hashes.slice(64 * i, 64 * (i + 1)),
        ...q.payload,
      });
    });
    const at = now();
    // A head behind the one signed means the chain started afresh (an emptied store): that
    // signature seals nothing there any more.
    if (signed.seq > head.seq) signed = { seq: 0, at: 0 };
    const sealedSeq = Math.max(head.sealed_seq, signed.seq);
    const sealedAt = Math.max(Date.parse(head.sealed_at), signed.at);
    const due = head.seq - sealedSeq >= every || at.getTime() - sealedAt >= intervalMs || sealing;
    if (due && head.seq > sealedSeq) {
      pendingSeals.push(seal(writer, head.seq, head.hash, at));
      signed = { seq: head.seq, at: at.getTime() };
      kick();
    }
  };

  /**
   * Splitting pays only where the store writes one half while the other is chained and handed over
   * (SQLite's writer thread). PostgreSQL sends a writer's commits one after another, so a split
   * there only added a commit (statement, compare-and-set, WAL flush) for the same records, and kept
   * the appenders in two half-size cohorts for good: at 256 appenders, ~2-3 µs more PostgreSQL CPU
   * and more client CPU per append (bench ledger_appends_postgres).
   */
  const splitPays = engine.chain !== undefined;

  /**
   * Starts commits while fewer than {@link MAX_IN_FLIGHT} are running. On SQLite a large queue with
   * nothing in flight is split in two, so the second half is chained and sent while the store writes the
   * first, and from then on each group is built while the previous one commits. The engines keep
   * a writer's commits in order (the SQLite writer thread takes them one by one; PostgreSQL's head
   * lock makes the second wait), and a commit chained from a head that then failed is re-chained.
   *
   * A queue of write-behind records alone waits for its linger deadline (or for an append, a seal,
   * `flush` or `close`), also when a commit has just finished: starting one at once would commit
   * reads a few at a time, paying a commit (and an fsync) per handful of records while reads arrive.
   */
  const pump = () => {
    scheduled = false;
    while (
      inFlight < MAX_IN_FLIGHT &&
      // In-doubt groups are settled by a commit running alone (see `inDoubt`).
      (inDoubt.length === 0 || inFlight === 0) &&
      !paused &&
      (queue.length > 0 || sealRequested || pendingSeals.length > 0)
    ) {
      if (!sealRequested && !hurry && !lingerDue && waitingInQueue === 0 && pendingSeals.length === 0) break;
      const size =
        splitPays && inFlight === 0 && queue.length >= 2 * MIN_SPLIT_GROUP
          ? Math.ceil(queue.length / 2)
          : MAX_GROUP;
      const batch = queue.splice(0, Math.min(size, MAX_GROUP)).map(built);
      for (const q of batch) if (q.resolve) waitingInQueue -= 1;
      inFlight += 1;
      void commitBatch(batch).finally(() => {
        inFlight -= 1;
        pump();
      });
    }
    if (queue.length === 0) {
      hurry = false;
      lingerDue = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      lingerTimer = undefined;
    } else if (!paused) {
      armLinger();
    }
    if (inFlight === 0 && !scheduled) for (const resolve of idleWaiters.splice(0)) resolve();
  };

  /** Resolves once nothing is scheduled or in flight (everything queued committed, or the ledger failing). */
  const idle = () =>
    inFlight === 0 && !scheduled
      ? Promise.resolve()
      : new Promise<void>((resolve) => idleWaiters.push(resolve));

  /**
   * Runs {@link pump} on the next turn of the event loop, so every append made in this turn joins
   * its commit (the SQLite engine commits synchronously: started at once, it would take one record).
   */
  const kick = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(pump);
  };
  /** Lets write-behind records wait at most `lingerMs` for company (a no-op while a deadline is set). */
  const armLinger = () => {
    if (lingerTimer || lingerDue) return;
    lingerTimer = setTimeout(() => {
      lingerTimer = undefined;
      lingerDue = true;
      kick();
    }, lingerMs);
    lingerTimer.unref();
  };
  /** Commits everything queued now, write-behind records included (`flush`, `close`). */
  const kickNow = () => {
    hurry = true;
    kick();
  };

  const sealTimer = setInterval(
    () => {
      if (known.seq > known.sealed || queue.length > 0) {
        sealRequested = true;
        kick();
      }
      // Timers take at most 2^31-1 ms; a longer interval would fire at once, every millisecond.
    },
    Math.min(intervalMs, 2 ** 31 - 1),
  );
  sealTimer.unref();

  const checkEvent = (input: AuditAppendInput) => {
    if (!isAuditEvent(input.event)) {
      throw auditError('Unknown audit event.', `event ${String(input.event)}`);
    }
  };

  const toQueued = (input: AuditAppendInput, at = now(), traceId = callTraceId(input)): Queued => {
    checkEvent(input);
    const payload = buildAuditPayload(input, at, redactor, traceId);
    return { payload, body: encodeAuditBody(payload), ts: payload.ts };
  };

  /**
   * A record standing in for one that could not be built (a bug: the redactor threw) or that the
   * store refused: the call keeps a record that says so, naming the error's class, built without
   * the redactor from fields that need none, so it cannot fail too (and lose the group).
   */
  const standIn = (
    of: Pick<AuditPayload, 'event' | 'call_id' | 'tool' | 'principal' | 'trace_id' | 'ts'>,
    failed: 'built' | 'stored',
    error: unknown,
  ): Queued => {
    const payload: AuditPayload = {
      call_id: of.call_id,
      detail: `the audit record could not be ${failed} (${error instanceof Error ? error.name : 'error'})`,
      event: of.event,
      principal: of.principal,
      tool: of.tool,
      trace_id: of.trace_id,
      // Re-formatted (now, when unreadable): the refused record's own ts may be what was refused.
      ts: wellFormedTime(of.ts),
    };
    return { payload, body: encodeAuditBody(payload), ts: payload.ts };
  };
  const wellFormedTime = (ts: string): string => {
    const ms = Date.parse(ts);
    return Number.isNaN(ms) ? now().toISOString() : new Date(ms).toISOString();
  };

  /** A queued record ready to commit: a write-behind one is built now, at its enqueue time and trace. */
  const built = (q: Queued | Deferred): Queued => {
    if (!('input' in q)) return q;
    try {
      return toQueued(q.input, new Date(q.at), q.traceId);
    } catch (error) {
      // A bug (the redactor threw; the event was checked when enqueued).
      const { event, call_id, tool, principal } = q.input;
      const ts = new Date(q.at).toISOString();
      return standIn(
        { event, call_id, tool, principal, trace_id: q.traceId ?? undefined, ts },
        'built',
        error,
      );
    }
  };

  /**
   * Runs `commit` (which builds from `batch` as it stands); when the engine refuses records of it,
   * replaces them in `batch` by stand-ins (an append waiting for one gets the stand-in) and runs it
   * once more. Nothing was sent the first time.
   */
  const commitStandingIn = async (batch: Queued[], commit: () => Promise<void>) => {
    try {
      await commit();
    } catch (error) {
      if (!(error instanceof LedgerRecordRefusedError)) throw error;
      for (const i of error.refused) {
        const q = batch[i];
        if (q) batch[i] = { ...standIn(q.payload, 'stored', error), resolve: q.resolve, reject: q.reject };
      }
      await commit();
    }
  };

  const appendManyIn = async (
    tx: SqlExecutor,
    inputs: readonly AuditAppendInput[],
  ): Promise<AuditRecord[]> => {
    if (closed) throw auditError('The audit log is closed.', `append after close (${writer})`);
    if (tx.engine !== engine.kind) {
      throw auditError(
        'The audit record cannot join this transaction.',
        `transaction on ${tx.engine}, ledger on ${engine.kind}`,
      );
    }
    if (inputs.length === 0) return [];
    const batch = inputs.map((input) => toQueued(input));
    let committed: LedgerCommit | undefined;
    try {
      await commitStandingIn(batch, () =>
        engine.commitIn(tx, writer, (head) => (committed = build(batch)(head))),
      );
    } catch (error) {
      throw auditError(
        'The audit ledger could not be written.',
        `append in a transaction for writer ${writer} failed: ${error instanceof Error ? error.message : String(error)}`,
        error,
        true,
      );
    }
    const done = committed!;
    // Whether the caller's transaction commits is not known here; if it rolls back, a later seal
    // finds nothing new to sign, which costs one head write.
    if (done.head.seq >= known.seq) known = { seq: done.head.seq, sealed: done.head.sealed_seq };
    return done.rows.map((row, i) => ({
      v: 2,
      writer,
      seq: row.seq,
      prev_hash: row.prev_hash,
      hash: row.hash,
      ...batch[i]!.payload,
    }));
  };

  return {
    writer,
    append(input) {
      if (closed)
        return Promise.reject(auditError('The audit log is closed.', `append after close (${writer})`));
      let queued: Queued;
      try {
        queued = toQueued(input);
      } catch (error) {
        return Promise.reject(error);
      }
      const result = new Promise<AuditRecord>((resolve, reject) => {
        queued.resolve = resolve;
        queued.reject = reject;
      });
      queue.push(queued);
      waitingInQueue += 1;
      kick();
      return result;
    },
    async appendIn(tx, input) {
      const [record] = await appendManyIn(tx, [input]);
      return record!;
    },
    appendManyIn: (tx, inputs) => appendManyIn(tx, inputs),
    enqueue(input) {
      if (closed) throw auditError('The audit log is closed.', `enqueue after close (${writer})`);
      checkEvent(input);
      queue.push({
        input,
        at: now().getTime(),
        // The calling span's trace, taken now: the record is built later, in another span.
        traceId: callTraceId(input),
      });
      // Committed by the deadline, or sooner with an append's commit; a pump on its way arms it.
      if (!scheduled) armLinger();
    },
    assertWritable() {
      if (failure !== undefined) {
        throw auditError(
          'The audit ledger cannot be written, so fraudgate refuses calls until it can. Try again shortly; the operator should check the store (see the server log and /readyz).',
          `audit ledger failing: ${failure}`,
          undefined,
          true,
        );
      }
    },
    health() {
      return failure === undefined ? { ok: true } : { ok: false, reason: failure };
    },
    async flush() {
      if (queue.length > 0) kickNow();
      await idle();
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sealTimer);
      if (queue.length > 0) kickNow();
      if (retryTimer) clearTimeout(retryTimer);
      retryTimer = undefined;
      await idle();
      // Seal what this process wrote, so a verifier sees its chain complete.
      if (known.seq > known.sealed || queue.length > 0) {
        paused = false;
        sealRequested = true;
        kick();
        await idle();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Verification

/** Where the first bad record is: writer and seq, plus the line number when reading a file. */
export interface LedgerFault {
  writer: string;
  seq: number;
  line?: number;
  reason: string;
}

export type LedgerVerifyResult =
  | {
      ok: true;
      records: number;
      writers: number;
      checkpoints: number;
      /** Records after their writer's newest checkpoint: intact so far, sealed by the next checkpoint. */
      unsealed: number;
    }
  | ({ ok: false; records: number } & LedgerFault);

interface WriterState {
  /** Checkpoints by seq, and the earliest one (the anchor the remaining records chain from). */
  checkpoints: Map<number, AuditCheckpoint>;
  anchor: AuditCheckpoint;
  maxSealed: number;
  seq?: number;
  hash?: string;
}

/**
 * Walks every writer's chain against checkpoints signed by the trusted key. Finds, and names the
 * first record of: an edit (hash mismatch), a deletion, insertion or reordering (seq or prev_hash
 * breaks), a chain start with no signed checkpoint (earlier records deleted, or a chain written
 * without the key), a checkpoint whose record differs (re-chain) or is gone (the newest records cut
 * back past it), and a checkpoint whose signature fails (forged). Records after a writer's newest
 * checkpoint cannot be told from forgeries until the next checkpoint seals them: they are counted
 * as `unsealed`.
 *
 * With a witness (audit-witness.ts, taken earlier and kept off the box), also what the store alone
 * cannot show: a witnessed writer that is gone, whose records end before the witnessed seq, or
 * whose record there has another hash (cut back to an earlier checkpoint, or re-chained).
 */
class ChainChecker {
  private readonly writers = new Map<string, WriterState>();
  private readonly witnessed = new Map<string, WitnessEntry>();
  private readonly witnessTakenAt: string | undefined;
  records = 0;
  fault: LedgerFault | undefined;

  constructor(verifier: CheckpointVerifier, checkpoints: readonly AuditCheckpoint[], witness?: AuditWitness) {
    this.witnessTakenAt = witness?.taken_at;
    for (const entry of witness?.writers ?? []) this.witnessed.set(entry.writer, entry);
    for (const cp of checkpoints) {
      if (!verifier.verify(cp)) {
        this.fault = {
          writer: cp.writer,
          seq: cp.seq,
          reason: verifier.keyIds.includes(cp.key_id)
            ? 'checkpoint signature does not verify (checkpoint forged or altered)'
            : `checkpoint signed by key ${cp.key_id}, not ${describeTrustedKeys(verifier)} (re-signed by someone else, or verify with the right --public-key)`,
        };
        return;
      }
      const state = this.writers.get(cp.writer);
      if (!state) {
        this.writers.set(cp.writer, {
          checkpoints: new Map([[cp.seq, cp]]),
          anchor: cp,
          maxSealed: cp.seq,
        });
        continue;
      }
      state.checkpoints.set(cp.seq, cp);
      if (cp.seq < state.anchor.seq) state.anchor = cp;
      if (cp.seq > state.maxSealed) state.maxSealed = cp.seq;
    }
  }

  /** Checks one record; false once a fault is found. */
  check(row: LedgerRow, line?: number): boolean {
    if (this.fault) return false;
    const fail = (reason: string) => {
      this.fault = { writer: row.writer, seq: row.seq, reason, ...(line === undefined ? {} : { line }) };
      return false;
    };
    const state = this.writers.get(row.writer);
    if (!state) {
      return fail('this writer has no signed checkpoint (records forged, or its checkpoints deleted)');
    }
    if (state.seq === undefined) {
      const { anchor } = state;
      if (row.seq !== anchor.seq + 1 || row.prev_hash !== anchor.hash) {
        return fail(
          row.seq > anchor.seq + 1
            ? `records ${anchor.seq + 1}..${row.seq - 1} are missing (deleted)`
            : `record does not follow the writer's earliest checkpoint (seq ${anchor.seq}): records deleted, inserted or re-chained`,
        );
      }
    } else if (row.seq !== state.seq + 1) {
      return fail(
        `seq ${row.seq} where ${state.seq + 1} was expected (record deleted, inserted or reordered)`,
      );
    } else if (row.prev_hash !== state.hash) {
      return fail('prev_hash does not match the previous record (record deleted, inserted or reordered)');
    }
    if (chainHash(row.writer, row.seq, row.prev_hash, row.body) !== row.hash) {
      return fail('hash mismatch (record edited)');
    }
    const cp = state.checkpoints.get(row.seq);
    if (cp && cp.hash !== row.hash) {
      return fail('differs from the signed checkpoint at this seq (records re-chained without the key)');
    }
    const witnessed = this.witnessed.get(row.writer);
    if (witnessed?.seq === row.seq && witnessed.hash !== row.hash) {
      return fail(
        `differs from the record the witness of ${this.witnessTakenAt} saw at this seq (records re-chained)`,
      );
    }
    state.seq = row.seq;
    state.hash = row.hash;
    this.records += 1;
    return true;
  }

  /** The first witnessed writer the ledger no longer reaches (after every record was checked). */
  private witnessFault(): LedgerFault | undefined {
    const taken = `the witness of ${this.witnessTakenAt}`;
    for (const w of this.witnessed.values()) {
      const state = this.writers.get(w.writer);
      if (!state) {
        return {
          writer: w.writer,
          seq: w.seq,
          reason: `writer missing: ${taken} saw its chain at seq ${w.seq} (writer erased)`,
        };
      }
      const last = state.seq ?? state.anchor.seq;
      if (last < w.seq) {
        return {
          writer: w.writer,
          seq: last + 1,
          reason: `missing: ${taken} saw seq ${w.seq} but the chain ends at ${last} (newest records and checkpoints cut)`,
        };
      }
      // Retention may have pruned the witnessed record: then the signed anchor after it stands
      // for it, and at the anchor's own seq the anchor's hash must be the witnessed one.
      if (state.anchor.seq === w.seq && state.anchor.hash !== w.hash) {
        return {
          writer: w.writer,
          seq: w.seq,
          reason: `the checkpoint at this seq differs from the one ${taken} saw (records re-chained)`,
        };
      }
    }
    return undefined;
  }

  finish(): LedgerVerifyResult {
    if (!this.fault) {
      for (const [writer, state] of this.writers) {
        const last = state.seq ?? state.anchor.seq;
        if (state.maxSealed > last) {
          this.fault = {
            writer,
            seq: last + 1,
            reason: `missing: a signed checkpoint seals seq ${state.maxSealed} but the chain ends at ${last} (newest records removed)`,
          };
          break;
        }
      }
    }
    if (!this.fault) this.fault = this.witnessFault();
    if (this.fault) return { ok: false, records: this.records, ...this.fault };
    let unsealed = 0;
    let checkpoints = 0;
    for (const state of this.writers.values()) {
      unsealed += (state.seq ?? state.anchor.seq) - state.maxSealed;
      checkpoints += state.checkpoints.size;
    }
    return { ok: true, records: this.records, writers: this.writers.size, checkpoints, unsealed };
  }
}

/** How far a verification has got, for a progress display: the records verified so far. */
export interface VerifyOptions {
  onProgress?: (verified: number) => void;
  /** A witness read with `readWitness` (its signatures checked): the ledger must still reach it. */
  witness?: AuditWitness;
}

/** Verifies the ledger in a store; `onProgress` hears after every batch read. */
export async function verifyLedger(
  engine: LedgerEngine,
  verifier: CheckpointVerifier,
  options: VerifyOptions = {},
): Promise<LedgerVerifyResult> {
  const checker = new ChainChecker(verifier, await engine.checkpoints(), options.witness);
  for await (const batch of engine.scan()) {
    for (const row of batch) if (!checker.check(row)) return checker.finish();
    options.onProgress?.(checker.records);
  }
  return checker.finish();
}

/** Records between two progress reports while verifying a file. */
const FILE_PROGRESS_EVERY = 1000;

const CHECKPOINT_LINE = '{"v":2,"type":"checkpoint",';

/** A checkpoint as one line of an export. */
export function exportCheckpointLine(cp: AuditCheckpoint): string {
  return `${CHECKPOINT_LINE}${JSON.stringify(cp).slice(1)}`;
}

export type FileVerifyResult =
  | (LedgerVerifyResult & { format: 'ledger' })
  | ({ format: 'legacy' } & (
      | { ok: true; records: number; last_hash: string }
      | { ok: false; records: number; line: number; reason: string }
    ));

/**
 * Verifies an exported file (`fraudgate audit export`), or a legacy `audit.jsonl` (whose records
 * carry no writer and no checkpoints; it is verified as before). `onProgress` hears every
 * thousand records of an export and once at its end.
 */
export async function verifyAuditFile(
  path: string,
  verifier: CheckpointVerifier,
  options: VerifyOptions = {},
): Promise<FileVerifyResult> {
  let first: string | undefined;
  for await (const { text } of readLines(path)) {
    first = text;
    break;
  }
  if (first !== undefined && first.startsWith('{"v":1')) {
    return { format: 'legacy', ...(await verifyLegacyAuditFile(path)) };
  }
  // Pass 1: the checkpoints (few), so records can be checked against them in one streaming pass.
  const checkpoints: AuditCheckpoint[] = [];
  for await (const { text, number } of readLines(path)) {
    if (!text.startsWith(CHECKPOINT_LINE)) continue;
    const cp = parseCheckpoint(text);
    if (!cp) {
      return {
        format: 'ledger',
        ok: false,
        records: 0,
        writer: '?',
        seq: 0,
        line: number,
        reason: 'malformed checkpoint line',
      };
    }
    checkpoints.push(cp);
  }
  const checker = new ChainChecker(verifier, checkpoints, options.witness);
  for await (const { text, number, terminated } of readLines(path)) {
    if (text.startsWith(CHECKPOINT_LINE)) continue;
    const row = terminated ? parseRecordLine(text) : undefined;
    if (!row) {
      const finish = checker.finish();
      if (!finish.ok) return { format: 'ledger', ...finish };
      return {
        format: 'ledger',
        ok: false,
        records: checker.records,
        writer: '?',
        seq: 0,
        line: number,
        reason: terminated
          ? 'not a ledger record (edited or damaged line)'
          : 'line has no newline (truncated)',
      };
    }
    if (!checker.check(row, number)) break;
    if (checker.records % FILE_PROGRESS_EVERY === 0) options.onProgress?.(checker.records);
  }
  options.onProgress?.(checker.records);
  return { format: 'ledger', ...checker.finish() };
}

function parseCheckpoint(text: string): AuditCheckpoint | undefined {
  try {
    const c = JSON.parse(text) as Record<string, unknown>;
    if (
      typeof c.writer === 'string' &&
      Number.isSafeInteger(c.seq) &&
      typeof c.hash === 'string' &&
      typeof c.ts === 'string' &&
      typeof c.key_id === 'string' &&
      typeof c.signature === 'string'
    ) {
      return {
        writer: c.writer,
        seq: c.seq as number,
        hash: c.hash,
        ts: c.ts,
        key_id: c.key_id,
        signature: c.signature,
      };
    }
  } catch {
    // fall through: malformed
  }
  return undefined;
}

function parseRecordLine(text: string): LedgerRow | undefined {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (
    r.v !== 2 ||
    typeof r.writer !== 'string' ||
    !Number.isSafeInteger(r.seq) ||
    typeof r.prev_hash !== 'string' ||
    typeof r.hash !== 'string' ||
    typeof r.ts !== 'string'
  ) {
    return undefined;
  }
  const header = { writer: r.writer, seq: r.seq as number, prev_hash: r.prev_hash, hash: r.hash };
  // The body must be the exact text that was hashed: a re-serialised line no longer verifies.
  const body = bodyOfExportLine(text, header);
  return body === undefined ? undefined : { ...header, ts: r.ts, body };
}

// ---------------------------------------------------------------------------------------------
// Export and retention

/**
 * Streams the ledger as JSON Lines for a SIEM: the checkpoints first, then every record (flat
 * objects, the hashed body spliced in verbatim so the file verifies on its own). With `since`,
 * each writer starts at its newest checkpoint before that time (a few earlier records may be
 * included) so the export still chains from a signed anchor.
 */
export async function* exportLedger(
  engine: LedgerEngine,
  options: { since?: Date } = {},
): AsyncGenerator<string> {
  const all = await engine.checkpoints();
  const startAfter = new Map<string, number>();
  if (options.since) {
    const since = options.since.getTime();
    for (const cp of all) {
      if (Date.parse(cp.ts) >= since) continue;
      if ((startAfter.get(cp.writer) ?? -1) < cp.seq) startAfter.set(cp.writer, cp.seq);
    }
  }
  const from = (writer: string) => startAfter.get(writer) ?? -1;
  for (const cp of all) if (cp.seq >= from(cp.writer)) yield `${exportCheckpointLine(cp)}\n`;
  for await (const batch of engine.scan()) {
    let chunk = '';
    for (const row of batch) {
      if (row.seq <= from(row.writer)) continue;
      chunk += `${exportRecordLine(row.writer, row.seq, row.prev_hash, row.hash, row.body)}\n`;
    }
    if (chunk) yield chunk;
  }
}

/**
 * Retention: per writer, deletes the records sealed by its newest checkpoint older than `before`,
 * and the checkpoints before that one, which stays as the signed anchor of what remains. Records
 * after the last checkpoint are kept until one seals them, so the remainder always verifies.
 */
export async function pruneLedger(engine: LedgerEngine, before: Date): Promise<{ records: number }> {
  const cutoff = before.getTime();
  const anchors = new Map<string, number>();
  for (const cp of await engine.checkpoints()) {
    if (Date.parse(cp.ts) >= cutoff) continue;
    if ((anchors.get(cp.writer) ?? -1) < cp.seq) anchors.set(cp.writer, cp.seq);
  }
  let records = 0;
  for (const [writer, seq] of anchors) records += await engine.prune(writer, seq);
  return { records };
}
