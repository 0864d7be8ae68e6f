/**
 * Reading new Salesforce rows after a watermark, each exactly once (shared/contracts/triggers.md
 * §3.2, §3.4): the lifecycle poller reads `AccountHistory`, the Lead watcher new `Lead`s, both by
 * `CreatedDate`.
 *
 * Salesforce stamps `CreatedDate` in whole seconds, and a transaction can commit after one stamped
 * later, so a strict `CreatedDate > watermark` loses rows. Each pass re-reads an overlap window behind
 * the watermark instead, pages through it by `(CreatedDate, Id)`, and skips the rows the store
 * remembers as handled (`sync_handled`); rows older than the window are forgotten again.
 *
 * The first pass is a baseline: everything up to the newest existing row counts as handled and
 * nothing is acted on (no backfill of history that predates fraudgate).
 */
import { soqlQuote } from '../clients/salesforce-client.ts';
import type { SalesforceClient, SalesforceRecord } from '../clients/types.ts';
import type { HandledRecord, SyncStateStore, Watermark } from '../store/sync-state-store.ts';

/** What the caller did with one row. */
export type RowOutcome =
  /** Done; remembered with the rest of the page. */
  | 'handled'
  /** Done, and it reached an upstream: remembered at once so a crash repeats at most this row. */
  | 'handled_now'
  /** Not done (a retryable failure): the pass stops here and the next one starts again at this row. */
  | 'retry_later';

export type WatchedRow = SalesforceRecord & { Id: string; CreatedDate: string };

export interface RecordWatch {
  /** Name of the watermark and handled set in the sync state. */
  watcher: string;
  /** `Id, CreatedDate, …` (must include both). */
  fields: string;
  from: string;
  /** SOQL condition every row must meet (ANDed), or undefined. */
  filter?: string;
  batchSize: number;
  overlapMs: number;
}

export interface WatchResult {
  /** Rows read, including those skipped as handled. */
  scanned: number;
  /** True when no watermark existed: existing rows were marked handled, nothing was acted on. */
  baseline: boolean;
  /** True when a row asked to be retried: the pass stopped there. */
  deferred: boolean;
  watermark: Watermark | undefined;
}

/** A Salesforce datetime (`…+0000`) or ISO string → ISO-8601 UTC with `Z` (stored and compared as text). */
export function isoUtc(value: string): string {
  const ms = Date.parse(value.replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  if (Number.isNaN(ms)) throw new Error(`unreadable Salesforce datetime ${value}`);
  return new Date(ms).toISOString();
}

const EPOCH = '1970-01-01T00:00:00.000Z';

function later(a: Watermark | undefined, b: Watermark): Watermark {
  if (!a) return b;
  return a.modstamp > b.modstamp || (a.modstamp === b.modstamp && a.id >= b.id) ? a : b;
}

/**
 * One pass over the rows after the watermark (minus the overlap), in `(CreatedDate, Id)` order,
 * calling `onRow` for each row not handled yet. `onRow` is not called during the baseline.
 */
export async function watchOnce<R extends WatchedRow>(
  watch: RecordWatch,
  deps: { salesforce: SalesforceClient; state: SyncStateStore; signal?: AbortSignal },
  onRow: (row: R) => Promise<RowOutcome>,
): Promise<WatchResult> {
  const { salesforce, state, signal } = deps;
  const stored = await state.getWatermark(watch.watcher);
  const baseline = stored === undefined;
  const conditions = (extra: string[]) => {
    const all = [...(watch.filter ? [`(${watch.filter})`] : []), ...extra];
    return all.length > 0 ? `WHERE ${all.join(' AND ')}` : '';
  };
  let upper: string | undefined;
  let since = stored ? new Date(Date.parse(stored.modstamp) - watch.overlapMs).toISOString() : EPOCH;
  if (baseline) {
    const [newest] = await salesforce.query<R>(
      `SELECT Id, CreatedDate FROM ${watch.from} ${conditions([])} ORDER BY CreatedDate DESC, Id DESC LIMIT 1`,
      { signal },
    );
    if (!newest) {
      // Nothing yet: every row that appears from now on is new.
      const watermark = { modstamp: EPOCH, id: '' };
      await state.markHandled(watch.watcher, watermark, []);
      return { scanned: 0, baseline, deferred: false, watermark };
    }
    upper = isoUtc(newest.CreatedDate);
    since = new Date(Date.parse(upper) - watch.overlapMs).toISOString();
  }

  let watermark = stored;
  let after: Watermark | undefined;
  let scanned = 0;
  const forgetBefore = () =>
    watermark ? new Date(Date.parse(watermark.modstamp) - watch.overlapMs).toISOString() : undefined;
  const remember = async (rows: HandledRecord[]) => {
    if (!watermark) return;
    await state.markHandled(watch.watcher, watermark, rows, forgetBefore());
  };

  for (;;) {
    const extra = [`CreatedDate >= ${since}`];
    if (upper) extra.push(`CreatedDate <= ${upper}`);
    if (after)
      extra.push(
        `(CreatedDate > ${after.modstamp} OR (CreatedDate = ${after.modstamp} AND Id > ${soqlQuote(after.id)}))`,
      );
    const page = await salesforce.query<R>(
      `SELECT ${watch.fields} FROM ${watch.from} ${conditions(extra)} ORDER BY CreatedDate ASC, Id ASC LIMIT ${watch.batchSize}`,
      { signal },
    );
    if (page.length === 0) break;
    scanned += page.length;
    const done = await state.handled(
      watch.watcher,
      page.map((r) => r.Id),
    );
    let pending: HandledRecord[] = [];
    for (const row of page) {
      const position = { modstamp: isoUtc(row.CreatedDate), id: row.Id };
      after = position;
      if (done.has(row.Id)) continue;
      const outcome = baseline ? 'handled' : await onRow(row);
      if (outcome === 'retry_later') {
        await remember(pending);
        return { scanned, baseline, deferred: true, watermark };
      }
      watermark = later(watermark, position);
      pending.push({ id: row.Id, stampedAt: position.modstamp });
      if (outcome === 'handled_now') {
        await remember(pending);
        pending = [];
      }
    }
    await remember(pending);
    if (page.length < watch.batchSize) break;
  }
  if (baseline && !watermark) {
    watermark = { modstamp: upper ?? EPOCH, id: '' };
    await remember([]);
  }
  return { scanned, baseline, deferred: false, watermark };
}

/** Call `poll` every `intervalMs` until the signal aborts; a failed poll is reported and the next one comes on time. */
export async function runEvery(
  intervalMs: number,
  signal: AbortSignal,
  poll: () => Promise<void>,
  onError: (error: unknown) => void,
): Promise<void> {
  while (!signal.aborted) {
    try {
      await poll();
    } catch (error) {
      if (signal.aborted) break;
      onError(error);
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, intervalMs);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
