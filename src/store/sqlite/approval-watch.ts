/**
 * Approval wake-ups across processes on one SQLite file: a decision made by another process (the
 * `fraudgate approvals` CLI, a second `serve`) wakes the calls waiting in this one within
 * {@link CROSS_PROCESS_CHECK_MS}, instead of at their next poll (`approvals.poll_ms`).
 *
 * While calls wait, a timer reads `PRAGMA data_version` (no table read, no lock): it changes only
 * when another connection committed. Other connections commit often (the ledger's worker thread,
 * `outbox work`), so a change alone wakes nobody: it triggers one query of the waited approvals'
 * states, and only the approvals whose state moved are delivered. Without waiters the timer stops.
 *
 * No lost wake-ups: a waiter reads `version(id)` (which notes the data version) before it reads the
 * approval. An approval the watch has not read yet is delivered unless no other connection
 * committed between that note and the watch's read; one it has read is delivered when its state
 * differs from that read. Approval states only move forward, so an equal state means nothing the
 * waiter has not seen. A spurious wake-up costs the waiter one re-read; the poll stays as fallback.
 */
import type { SqlExecutor } from '../sql.ts';

/** How often waiting calls check for other processes' commits (one pragma; one query after a commit). */
const CROSS_PROCESS_CHECK_MS = 100;

/** Approvals with notes kept between checks; beyond it the notes are dropped (spurious wake-ups, never lost ones). */
const MAX_NOTED = 10_000;

export interface CrossProcessWatchOptions {
  /** The ids with a waiting call now. */
  waiting(): readonly string[];
  deliver(id: string): void;
  /** `PRAGMA data_version` of this process's connection (undefined: not open). */
  dataVersion(): number | undefined;
  sql: Pick<SqlExecutor, 'query'>;
  onError?: (error: unknown) => void;
  intervalMs?: number;
}

export interface CrossProcessWatch {
  /** A waiter is about to read `id`: note the data version its read will reflect. */
  observe(id: string): void;
  /** A waiter registered: make sure the timer runs. */
  kick(): void;
  /** One check now (what the timer runs). */
  check(): Promise<void>;
  stop(): void;
}

export function createCrossProcessWatch(options: CrossProcessWatchOptions): CrossProcessWatch {
  const intervalMs = options.intervalMs ?? CROSS_PROCESS_CHECK_MS;
  /** State (and decision/execution times) of each waited approval as of the watch's last read. */
  const known = new Map<string, string>();
  /** Data versions noted by waiters since the watch last read the approval. */
  const observed = new Map<string, Set<number>>();
  let lastVersion: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let checking = false;
  let failing = false;

  async function fingerprints(ids: readonly string[]): Promise<Map<string, string>> {
    const rows = await options.sql.query<{
      id: string;
      state: string;
      decided_at: string | null;
      executed_at: string | null;
    }>(
      `SELECT id, state, decided_at, executed_at FROM approvals WHERE id IN (${ids.map((_, i) => `$${i + 1}`).join(', ')})`,
      ids,
    );
    return new Map(rows.map((r) => [r.id, `${r.state}|${r.decided_at ?? ''}|${r.executed_at ?? ''}`]));
  }

  async function check(): Promise<void> {
    const ids = options.waiting();
    for (const id of known.keys()) if (!ids.includes(id)) known.delete(id);
    // Notes of calls that never waited (their approval was already final); a note dropped here
    // costs at most one spurious wake-up.
    for (const id of observed.keys()) if (!ids.includes(id)) observed.delete(id);
    if (ids.length === 0) {
      stop();
      lastVersion = undefined;
      return;
    }
    const before = options.dataVersion();
    if (before === undefined) return;
    const unread = ids.filter((id) => !known.has(id));
    const changed = before !== lastVersion;
    if (!changed && unread.length === 0) return;
    const reading = changed ? ids : unread;
    const states = await fingerprints(reading);
    const after = options.dataVersion();
    lastVersion = before;
    for (const id of reading) {
      const state = states.get(id) ?? 'missing';
      const previous = known.get(id);
      const notes = observed.get(id);
      observed.delete(id);
      known.set(id, state);
      if (previous !== undefined) {
        if (previous !== state) options.deliver(id);
        continue;
      }
      // First read: the waiter may have read before another process's commit this read reflects.
      const quiet = notes !== undefined && after === before && [...notes].every((v) => v === before);
      if (!quiet) options.deliver(id);
    }
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = undefined;
  }

  return {
    observe(id) {
      const version = options.dataVersion();
      if (version === undefined) return;
      if (observed.size >= MAX_NOTED && !observed.has(id)) observed.clear();
      const notes = observed.get(id) ?? new Set<number>();
      notes.add(version);
      observed.set(id, notes);
    },
    kick() {
      if (timer) return;
      timer = setInterval(() => {
        if (checking) return;
        checking = true;
        check()
          .then(() => {
            failing = false;
          })
          .catch((error: unknown) => {
            // Told once per outage, not every interval; waiters keep their poll meanwhile.
            if (!failing) options.onError?.(error);
            failing = true;
          })
          .finally(() => {
            checking = false;
          });
      }, intervalMs);
      timer.unref();
    },
    check,
    stop,
  };
}
