/**
 * A SalesforceClient that coalesces single-record writes from concurrent callers into sObject
 * Collections calls (≤200 records each): `update` → `updateMany`, `create` → `createMany`. Reads
 * and upserts pass through.
 *
 * This is how batching and per-effect governance coexist: the outbox worker runs each effect as
 * its own governed tool call (authorize, policy, intent audit, outcome audit), many at once; the
 * tools' `update`/`create` calls wait here for up to `windowMs` (or until 200 are queued) and go
 * out together. Each caller still gets its own record's result or error, so the pipeline audits
 * each effect's real outcome. A whole-call failure (timeout, 5xx, REQUEST_LIMIT_EXCEEDED) fails
 * every record of that call; the outbox retries them (updates are idempotent; the Chatter tool
 * checks its marker before posting again).
 */
import { UpstreamError } from '../errors.ts';
import type {
  RequestOptions,
  SalesforceClient,
  SalesforceRecord,
  SalesforceSaveResult,
} from '../clients/types.ts';

const COLLECTION_LIMIT = 200;

interface Waiter<T> {
  record: T;
  resolve(result: SalesforceSaveResult): void;
  reject(error: unknown): void;
}

interface Queue<T> {
  items: Waiter<T>[];
  timer?: NodeJS.Timeout;
}

/** Counts of upstream write calls, for the benchmark and the logs. */
export interface BatchingStats {
  collectionCalls: number;
  recordsWritten: number;
}

function recordError(sobject: string, result: SalesforceSaveResult): UpstreamError {
  const first = result.errors[0];
  return new UpstreamError(`Salesforce refused the ${sobject} write: ${first?.message ?? 'unknown error'}`, {
    service: 'salesforce',
    status: 400,
    ...(first ? { upstreamCode: first.statusCode } : {}),
    retryable: false,
  });
}

export function createBatchingSalesforceClient(
  inner: SalesforceClient,
  options: { windowMs: number },
): SalesforceClient & { stats: BatchingStats; flush(): Promise<void> } {
  const stats: BatchingStats = { collectionCalls: 0, recordsWritten: 0 };
  const updates = new Map<string, Queue<SalesforceRecord & { Id: string }>>();
  const creates = new Map<string, Queue<SalesforceRecord>>();
  const inFlight = new Set<Promise<void>>();

  function flushQueue<T extends SalesforceRecord>(
    queues: Map<string, Queue<T>>,
    sobject: string,
    send: (records: T[]) => Promise<SalesforceSaveResult[]>,
  ): void {
    const queue = queues.get(sobject);
    if (!queue || queue.items.length === 0) return;
    if (queue.timer) clearTimeout(queue.timer);
    queues.delete(sobject);
    const batch = queue.items;
    stats.collectionCalls += 1;
    const done = send(batch.map((w) => w.record)).then(
      (results) => {
        batch.forEach((waiter, i) => {
          const result = results[i];
          if (!result)
            waiter.reject(
              new UpstreamError('Salesforce returned too few results.', {
                service: 'salesforce',
                retryable: true,
              }),
            );
          else if (result.success) {
            stats.recordsWritten += 1;
            waiter.resolve(result);
          } else waiter.reject(recordError(sobject, result));
        });
      },
      (error: unknown) => {
        for (const waiter of batch) waiter.reject(error);
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  }

  function enqueue<T extends SalesforceRecord>(
    queues: Map<string, Queue<T>>,
    sobject: string,
    record: T,
    send: (records: T[]) => Promise<SalesforceSaveResult[]>,
  ): Promise<SalesforceSaveResult> {
    return new Promise((resolve, reject) => {
      let queue = queues.get(sobject);
      if (!queue) {
        queue = { items: [] };
        queues.set(sobject, queue);
        queue.timer = setTimeout(() => flushQueue(queues, sobject, send), options.windowMs);
      }
      queue.items.push({ record, resolve, reject });
      if (queue.items.length >= COLLECTION_LIMIT) flushQueue(queues, sobject, send);
    });
  }

  return {
    ...inner,
    query: (soql, o) => inner.query(soql, o),
    queryPage: (c, o) => inner.queryPage(c, o),
    retrieve: (s, id, o) => inner.retrieve(s, id, o),
    upsert: (s, f, r, o) => inner.upsert(s, f, r, o),
    updateMany: (s, r, o) => inner.updateMany(s, r, o),
    createMany: (s, r, o) => inner.createMany(s, r, o),
    apiUsage: () => inner.apiUsage(),
    close: () => inner.close(),
    stats,
    async update(sobject: string, record: SalesforceRecord & { Id: string }, _options?: RequestOptions) {
      await enqueue(updates, sobject, record, (records) => inner.updateMany(sobject, records));
    },
    async create(sobject: string, record: SalesforceRecord, _options?: RequestOptions) {
      const result = await enqueue(creates, sobject, record, (records) => inner.createMany(sobject, records));
      return { id: result.id };
    },
    /** Send whatever is queued now and wait for every call in flight. */
    async flush() {
      for (const sobject of [...updates.keys()])
        flushQueue(updates, sobject, (r) => inner.updateMany(sobject, r));
      for (const sobject of [...creates.keys()])
        flushQueue(creates, sobject, (r) => inner.createMany(sobject, r));
      await Promise.allSettled([...inFlight]);
    },
  };
}
