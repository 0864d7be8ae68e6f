/**
 * A SalesforceClient that coalesces single-record writes from concurrent callers into sObject
 * Collections calls (≤200 records each): `update` → `updateMany`, `create` → `createMany`, `upsert` →
 * `upsertMany` (collections upsert by external id). Concurrent `lookup`s of one shape become one
 * `IN (...)` query (≤200 values), each caller getting its own rows; other reads pass through.
 *
 * This is how batching and per-effect governance coexist: the outbox worker runs each effect as
 * its own governed tool call (authorize, policy, intent audit, outcome audit), many at once; the
 * tools' writes wait here for up to `windowMs` (or until 200 are queued) and go
 * out together. Each caller still gets its own record's result or error, so the pipeline audits
 * each effect's real outcome. A whole-call failure (timeout, 5xx, REQUEST_LIMIT_EXCEEDED) fails
 * every record of that call; the outbox retries them (updates are idempotent; the Chatter tool
 * checks its marker before posting again).
 */
import { LOOKUP_VALUES_PER_QUERY, lookupKey, lookupSoql } from '../clients/salesforce-client.ts';
import { UpstreamError } from '../errors.ts';
import type {
  RequestOptions,
  SalesforceClient,
  SalesforceLookup,
  SalesforceRecord,
  SalesforceSaveResult,
} from '../clients/types.ts';

const COLLECTION_LIMIT = 200;

interface Waiter<T> {
  record: T;
  resolve(result: SalesforceSaveResult): void;
  reject(error: unknown): void;
}

interface Queue {
  items: Waiter<SalesforceRecord>[];
  /** Record identities (Id or external id) in this batch: a second write to one record waits for the next. */
  identities: Set<string>;
  send: (records: SalesforceRecord[]) => Promise<SalesforceSaveResult[]>;
  timer?: NodeJS.Timeout;
}

/** Counts of upstream write calls, for the benchmark and the logs. */
export interface BatchingStats {
  collectionCalls: number;
  recordsWritten: number;
  /** Lookup queries sent, and the callers' lookups they answered. */
  lookupQueries: number;
  lookups: number;
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

/** Concurrent lookups of one shape (object, field, select, condition, order), waiting to go out as one query. */
interface LookupBatch {
  shape: Omit<SalesforceLookup, 'values'>;
  /** Distinct values by match key: each is asked once however many callers want it. */
  values: Map<string, string>;
  waiters: { keys: Set<string>; resolve(rows: SalesforceRecord[]): void; reject(error: unknown): void }[];
  firstAt: number;
  timer?: NodeJS.Timeout;
}

export function createBatchingSalesforceClient(
  inner: SalesforceClient,
  options: {
    windowMs: number;
    /**
     * A lookup batch goes out once no new lookup has joined it for this long (default: a twentieth
     * of the window, at least 1 ms), at 200 values, or `windowMs` after it opened: effects
     * started together reach their lookups within moments of each other, so a short quiet period
     * gathers them without making every effect wait out the write window.
     */
    lookupQuietMs?: number;
  },
): SalesforceClient & { stats: BatchingStats; flush(): Promise<void> } {
  const stats: BatchingStats = { collectionCalls: 0, recordsWritten: 0, lookupQueries: 0, lookups: 0 };
  const lookupQuietMs = options.lookupQuietMs ?? Math.max(1, Math.floor(options.windowMs / 20));
  /** One queue per operation and object (and external-id field), e.g. `update\0Account`. */
  const queues = new Map<string, Queue>();
  const inFlight = new Set<Promise<void>>();

  function flushQueue(key: string): void {
    const queue = queues.get(key);
    if (!queue) return;
    if (queue.timer) clearTimeout(queue.timer);
    queues.delete(key);
    const batch = queue.items;
    if (batch.length === 0) return;
    const sobject = key.split('\u0000')[1] ?? '';
    stats.collectionCalls += 1;
    const done = queue.send(batch.map((w) => w.record)).then(
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

  function enqueue(
    key: string,
    identity: string | undefined,
    record: SalesforceRecord,
    send: Queue['send'],
  ): Promise<SalesforceSaveResult> {
    return new Promise((resolve, reject) => {
      let queue = queues.get(key);
      // Salesforce refuses one record twice in a collection; the later write goes in the next call.
      if (queue && identity !== undefined && queue.identities.has(identity)) {
        flushQueue(key);
        queue = undefined;
      }
      if (!queue) {
        const fresh: Queue = { items: [], identities: new Set(), send };
        fresh.timer = setTimeout(() => flushQueue(key), options.windowMs);
        queues.set(key, fresh);
        queue = fresh;
      }
      queue.items.push({ record, resolve, reject });
      if (identity !== undefined) queue.identities.add(identity);
      if (queue.items.length >= COLLECTION_LIMIT) flushQueue(key);
    });
  }

  const lookupBatches = new Map<string, LookupBatch>();

  function flushLookups(key: string): void {
    const batch = lookupBatches.get(key);
    if (!batch) return;
    if (batch.timer) clearTimeout(batch.timer);
    lookupBatches.delete(key);
    stats.lookupQueries += 1;
    const field = batch.shape.field.toLowerCase();
    const done = inner.lookup({ ...batch.shape, values: [...batch.values.values()] }).then(
      (rows) => {
        for (const waiter of batch.waiters) {
          waiter.resolve(
            rows.filter((row) => {
              const name = Object.keys(row).find((k) => k.toLowerCase() === field);
              return name !== undefined && waiter.keys.has(lookupKey(row[name]));
            }),
          );
        }
      },
      (error: unknown) => {
        for (const waiter of batch.waiters) waiter.reject(error);
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  }

  function scheduleLookups(key: string, batch: LookupBatch): void {
    if (batch.timer) clearTimeout(batch.timer);
    const left = options.windowMs - (Date.now() - batch.firstAt);
    batch.timer = setTimeout(() => flushLookups(key), Math.max(0, Math.min(lookupQuietMs, left)));
  }

  async function lookup<T extends SalesforceRecord>(request: SalesforceLookup): Promise<T[]> {
    const { values, ...shape } = request;
    // Checked here, before it can spoil a query shared with others.
    lookupSoql(shape, []);
    const key = JSON.stringify([shape.sobject, shape.field, [...shape.select], shape.where, shape.orderBy]);
    const keys = new Set(values.map(lookupKey));
    stats.lookups += 1;
    if (keys.size === 0) return [];
    return new Promise<T[]>((resolve, reject) => {
      let batch = lookupBatches.get(key);
      const fresh = [...keys].filter((k) => !batch?.values.has(k)).length;
      if (batch && batch.values.size + fresh > LOOKUP_VALUES_PER_QUERY) {
        flushLookups(key);
        batch = undefined;
      }
      if (!batch) {
        batch = { shape, values: new Map(), waiters: [], firstAt: Date.now() };
        lookupBatches.set(key, batch);
      }
      for (const value of values)
        if (!batch.values.has(lookupKey(value))) batch.values.set(lookupKey(value), value);
      batch.waiters.push({ keys, resolve: (rows) => resolve(rows as T[]), reject });
      if (batch.values.size >= LOOKUP_VALUES_PER_QUERY) flushLookups(key);
      else scheduleLookups(key, batch);
    });
  }

  return {
    ...inner,
    lookup: (request) => lookup(request),
    query: (soql, o) => inner.query(soql, o),
    queryPage: (c, o) => inner.queryPage(c, o),
    retrieve: (s, id, o) => inner.retrieve(s, id, o),
    updateMany: (s, r, o) => inner.updateMany(s, r, o),
    createMany: (s, r, o) => inner.createMany(s, r, o),
    apiUsage: () => inner.apiUsage(),
    close: () => inner.close(),
    stats,
    async update(sobject: string, record: SalesforceRecord & { Id: string }, _options?: RequestOptions) {
      await enqueue(`update\u0000${sobject}`, record.Id, record, (records) =>
        inner.updateMany(sobject, records as (SalesforceRecord & { Id: string })[]),
      );
    },
    async create(sobject: string, record: SalesforceRecord, _options?: RequestOptions) {
      const result = await enqueue(`create\u0000${sobject}`, undefined, record, (records) =>
        inner.createMany(sobject, records),
      );
      return { id: result.id };
    },
    async upsert(
      sobject: string,
      externalIdField: string,
      record: SalesforceRecord,
      options?: RequestOptions,
    ) {
      const upsertMany = inner.upsertMany?.bind(inner);
      if (!upsertMany) return inner.upsert(sobject, externalIdField, record, options);
      const field = Object.keys(record).find((k) => k.toLowerCase() === externalIdField.toLowerCase());
      const value = field === undefined ? undefined : record[field];
      const result = await enqueue(
        `upsert\u0000${sobject}\u0000${externalIdField}`,
        value === undefined ? undefined : String(value),
        record,
        (records) => upsertMany(sobject, externalIdField, records),
      );
      return { id: result.id, created: result.created === true };
    },
    /** Send whatever is queued now and wait for every call in flight. */
    async flush() {
      for (const key of [...lookupBatches.keys()]) flushLookups(key);
      for (const key of [...queues.keys()]) flushQueue(key);
      await Promise.allSettled([...inFlight]);
    },
  };
}
