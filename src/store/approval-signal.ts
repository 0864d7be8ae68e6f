/**
 * Wake-ups for calls waiting on a human decision: when an approval is decided (or finishes
 * executing), the call waiting for it wakes at once instead of at its next poll. With PostgreSQL the
 * signal crosses replicas (NOTIFY on `<schema>_approvals`, one LISTEN connection per replica), so a
 * call waiting on replica A wakes when an approver decides on B. With SQLite it is in-process: the
 * console and the waiting call share the `serve` process, and a decision made by another process on
 * the same file (the `approvals` CLI) is noticed within 100 ms by a cheap check that runs only while
 * calls wait (sqlite/approval-watch.ts).
 *
 * Polling stays as the fallback (a signal lost while the LISTEN connection reconnects costs one
 * poll interval, never a decision). Signals carry only the approval id; waiters re-read the store.
 *
 * No lost wake-ups: a waiter reads `version(id)` before it reads the approval, and `wait` returns at
 * once when a signal for `id` arrived since that version.
 */
import type { Config, Secrets } from '../config.ts';
import type { ApprovalStore } from './approval-store.ts';
import { createCrossProcessWatch, type CrossProcessWatch } from './sqlite/approval-watch.ts';
import { openSqliteDatabase, sqliteDataVersion } from './sqlite/database.ts';
import type { SqlDatabase } from './sql.ts';
import type { Store } from './store.ts';

export interface ApprovalSignal {
  /** Tell every waiter (every replica on PostgreSQL; this process on SQLite) that `approvalId` changed. */
  publish(approvalId: string): Promise<void>;
  /** How many signals for `approvalId` this process has seen (read it before reading the approval). */
  version(approvalId: string): number;
  /**
   * Resolves after `ms`, or sooner once a signal for `approvalId` newer than `seenVersion` arrives or
   * `abort` aborts.
   */
  wait(approvalId: string, ms: number, seenVersion: number, abort?: AbortSignal): Promise<void>;
  /**
   * Call `listener` on every signal this process sees, for any approval (e.g. the outbox worker
   * settling what waited on it); returns the unsubscribe. Other replicas' only after `listen()`.
   */
  subscribe(listener: (approvalId: string) => void): () => void;
  /** Start receiving other replicas' signals now (serving processes; a CLI that only publishes skips it). */
  listen(): Promise<void>;
  close(): Promise<void>;
}

/** Signals remembered per process, so a version outlives a waiter's read; oldest dropped beyond this. */
const REMEMBERED = 10_000;

/**
 * The waiters and versions of one process; `deliver` is what a received signal calls. `onWait` is
 * told each time a call starts waiting (the SQLite cross-process watch starts its timer).
 */
export function createSignalBoard(onWait?: () => void) {
  const versions = new Map<string, number>();
  const waiters = new Map<string, Set<() => void>>();
  const subscribers = new Set<(id: string) => void>();
  return {
    subscribe(listener: (id: string) => void): () => void {
      subscribers.add(listener);
      return () => subscribers.delete(listener);
    },
    version: (id: string) => versions.get(id) ?? 0,
    /** The ids some call is waiting on now. */
    waiting: (): string[] => [...waiters.keys()],
    deliver(id: string) {
      const next = (versions.get(id) ?? 0) + 1;
      versions.delete(id);
      versions.set(id, next);
      if (versions.size > REMEMBERED) versions.delete(versions.keys().next().value!);
      for (const wake of waiters.get(id) ?? []) wake();
      for (const listener of subscribers) listener(id);
    },
    wait(id: string, ms: number, seen: number, abort?: AbortSignal): Promise<void> {
      if ((versions.get(id) ?? 0) > seen || abort?.aborted) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const set = waiters.get(id) ?? new Set();
        waiters.set(id, set);
        const done = () => {
          clearTimeout(timer);
          set.delete(done);
          if (set.size === 0) waiters.delete(id);
          abort?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, ms));
        set.add(done);
        abort?.addEventListener('abort', done, { once: true });
        onWait?.();
      });
    },
  };
}

/**
 * One board per SQLite database in this process: every runtime on the file shares its signals, and
 * one cross-process watch (on its own handle of the file's shared connection, so it outlives any one
 * runtime's) feeds it other processes' decisions. Kept while a signal on the file is open.
 */
interface FileBoard {
  board: ReturnType<typeof createSignalBoard>;
  watch?: { watch: CrossProcessWatch; db: SqlDatabase };
  refs: number;
}
const inProcessBoards = new Map<string, FileBoard>();

/**
 * Signals within this process. With `watchFile`, `location` is the SQLite file, and decisions that
 * other processes commit to it wake this process's waiters too.
 */
function createInProcessApprovalSignal(
  location: string,
  options: { watchFile?: boolean; onError?: (error: Error) => void } = {},
): ApprovalSignal {
  let entry = inProcessBoards.get(location);
  if (!entry) {
    let watch: CrossProcessWatch | undefined;
    const board = createSignalBoard(() => watch?.kick());
    entry = { board, refs: 0 };
    if (options.watchFile && location !== ':memory:') {
      const db = openSqliteDatabase(location);
      const onError = options.onError ?? (() => undefined);
      watch = createCrossProcessWatch({
        waiting: board.waiting,
        deliver: board.deliver,
        dataVersion: () => sqliteDataVersion(location),
        sql: db,
        onError: (error) => onError(error instanceof Error ? error : new Error(String(error))),
      });
      entry.watch = { watch, db };
    }
    inProcessBoards.set(location, entry);
  }
  const e = entry;
  e.refs += 1;
  let closed = false;
  return {
    publish: async (id) => e.board.deliver(id),
    version(id) {
      e.watch?.watch.observe(id);
      return e.board.version(id);
    },
    wait: (id, ms, seen, abort) => e.board.wait(id, ms, seen, abort),
    subscribe: (listener) => e.board.subscribe(listener),
    listen: async () => {},
    async close() {
      if (closed) return;
      closed = true;
      e.refs -= 1;
      if (e.refs > 0) return;
      if (inProcessBoards.get(location) === e) inProcessBoards.delete(location);
      if (e.watch) {
        e.watch.watch.stop();
        await e.watch.db.close();
      }
    },
  };
}

/** The signal for the store's engine (PostgreSQL's loads `pg` only when configured). */
export async function openApprovalSignal(
  store: Pick<Store, 'engine' | 'sql' | 'location'>,
  config: Pick<Config, 'store_postgres'>,
  secrets: Pick<Secrets, 'postgresUrl'>,
  onConnectionError: (error: Error) => void = () => undefined,
): Promise<ApprovalSignal> {
  if (store.engine !== 'postgres' || !secrets.postgresUrl) {
    return createInProcessApprovalSignal(store.location, {
      watchFile: store.engine === 'sqlite',
      onError: onConnectionError,
    });
  }
  const { openPostgresApprovalSignal } = await import('./postgres/approval-signal.ts');
  return openPostgresApprovalSignal(
    secrets.postgresUrl,
    config.store_postgres.schema,
    store.sql,
    onConnectionError,
  );
}

/**
 * `approvals` whose every successful transition (approved, denied, expired, executing, executed,
 * failed, …) calls `onMoved(id)`: outside a transaction, publish at once; inside one, collect the
 * ids and publish after the commit (a waiter woken before it would read the old state).
 */
export function signalTransitions(approvals: ApprovalStore, onMoved: (id: string) => void): ApprovalStore {
  return {
    ...approvals,
    async transition(id, from, to, patch, claim, unexpiredAt) {
      const moved = await approvals.transition(id, from, to, patch, claim, unexpiredAt);
      if (moved) onMoved(id);
      return moved;
    },
  };
}
