/**
 * A SalesforceClient that coalesces the writes and lookups of concurrent callers.
 *
 * Writes (`update`, `create`, `upsert`, `writeTogether`) are packed into composite requests: up to
 * five sObject Collections subrequests of up to 200 records, one request and one API call for up to
 * 1,000 records. A request goes out as soon as it is full — while a backlog keeps effects coming, by
 * size — and otherwise `windowMs` after its first write, so a shallow queue waits at most the window.
 * A `writeTogether` group always travels in one request. Concurrent `lookup`s of one shape become
 * one `IN (...)` query (≤200 values), each caller getting its own rows; other reads pass through.
 *
 * This is how batching and per-effect governance coexist: the outbox worker runs each effect as
 * its own governed tool call (authorize, policy, intent audit, outcome audit), many at once; the
 * tools' writes wait here and go out together. Each caller still gets its own records' results or
 * error, so the pipeline audits each effect's real outcome. A whole-request failure (timeout, 5xx,
 * REQUEST_LIMIT_EXCEEDED) fails every write in it; the outbox retries them, and the idempotency keys
 * the writes carry (external-id upserts, the decision sync key) make a repeat of an applied write
 * harmless.
 */
import { LOOKUP_VALUES_PER_QUERY, lookupKey, lookupSoql, saveError } from '../clients/salesforce-client.ts';
import { CompositePacker } from '../clients/salesforce-composite.ts';
import { InvalidInputError, UpstreamError } from '../errors.ts';
import type {
  SalesforceClient,
  SalesforceLookup,
  SalesforceRecord,
  SalesforceSaveResult,
  SalesforceWrite,
} from '../clients/types.ts';

/** How long an answer about configuration records (queues) is reused. */
const CONFIGURATION_TTL_MS = 5 * 60_000;

/** Repeats of a failed shared lookup before its callers see the error. */
const LOOKUP_RETRIES = 3;

/** Counts of upstream calls, for the benchmark and the logs. */
export interface BatchingStats {
  /** Composite write requests sent, the collections they carried and the records written. */
  writeCalls: number;
  collectionCalls: number;
  recordsWritten: number;
  /** Lookup queries sent, and the callers' lookups they answered. */
  lookupQueries: number;
  lookups: number;
}

/** The batching client. */
export interface BatchingSalesforceClient extends SalesforceClient {
  stats: BatchingStats;
  /** Send whatever is queued now and wait for every call in flight. */
  flush(): Promise<void>;
}

/** One caller's group of writes waiting to go out, with the promise to settle. */
interface PendingGroup {
  writes: SalesforceWrite[];
  results: (SalesforceSaveResult | undefined)[];
  resolve(results: SalesforceSaveResult[]): void;
  reject(error: unknown): void;
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
): BatchingSalesforceClient {
  const stats: BatchingStats = {
    writeCalls: 0,
    collectionCalls: 0,
    recordsWritten: 0,
    lookupQueries: 0,
    lookups: 0,
  };
  const lookupQuietMs = options.lookupQuietMs ?? Math.max(1, Math.floor(options.windowMs / 20));
  const inFlight = new Set<Promise<void>>();
  /** The composite request being filled, and when it goes out if it does not fill first. */
  let packer = new CompositePacker<{ group: PendingGroup; index: number }>();
  let groups: PendingGroup[] = [];
  let timer: NodeJS.Timeout | undefined;

  function send(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const sending = packer;
    const waiting = groups;
    packer = new CompositePacker();
    groups = [];
    if (sending.size === 0) return;
    stats.writeCalls += 1;
    stats.collectionCalls += sending.collections.length;
    const done = inner.writeCollections(sending.requests()).then(
      (answers) => {
        sending.collections.forEach((collection, c) =>
          collection.items.forEach(({ item }, r) => {
            const result = answers[c]?.[r];
            if (result?.success) stats.recordsWritten += 1;
            const { group, index } = item;
            group.results[index] = result ?? {
              id: '',
              success: false,
              errors: [{ statusCode: 'UNKNOWN_EXCEPTION', message: 'Salesforce returned too few results.' }],
            };
          }),
        );
        for (const group of waiting) {
          const results = group.results as SalesforceSaveResult[];
          const failed = results.findIndex((r) => !r.success);
          if (failed >= 0)
            group.reject(
              saveError(group.writes[failed] as SalesforceWrite, results[failed] as SalesforceSaveResult),
            );
          else group.resolve(results);
        }
      },
      (error: unknown) => {
        for (const group of waiting) group.reject(error);
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  }

  function writeGroup(writes: SalesforceWrite[]): Promise<SalesforceSaveResult[]> {
    return new Promise((resolve, reject) => {
      const group: PendingGroup = { writes, results: [], resolve, reject };
      const entries = writes.map((write, index) => ({ write, item: { group, index } }));
      if (!packer.tryAdd(entries)) {
        // Full: this request goes now (by size), the group opens the next one.
        send();
        if (!packer.tryAdd(entries)) {
          reject(
            new InvalidInputError([
              { field: 'writes', message: 'more writes than one composite request carries' },
            ]),
          );
          return;
        }
      }
      groups.push(group);
      timer ??= setTimeout(send, options.windowMs);
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
    const done = lookupWithRetries({ ...batch.shape, values: [...batch.values.values()] }).then(
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

  /**
   * A shared lookup is retried here (reads are safe to repeat) rather than failing every caller:
   * one failed query would otherwise send a whole batch of effects back through the outbox.
   */
  async function lookupWithRetries(request: SalesforceLookup): Promise<SalesforceRecord[]> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await inner.lookup(request);
      } catch (error) {
        const again =
          attempt < LOOKUP_RETRIES &&
          error instanceof UpstreamError &&
          error.retryable &&
          error.upstreamCode !== 'REQUEST_LIMIT_EXCEEDED';
        if (!again) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt * (0.5 + Math.random() / 2)));
      }
    }
  }

  function scheduleLookups(key: string, batch: LookupBatch): void {
    if (batch.timer) clearTimeout(batch.timer);
    const left = options.windowMs - (Date.now() - batch.firstAt);
    batch.timer = setTimeout(() => flushLookups(key), Math.max(0, Math.min(lookupQuietMs, left)));
  }

  /**
   * Queues (Group) are configuration that admins change, not data the effects change: an answer
   * that found the record is kept for CONFIGURATION_TTL_MS instead of being asked for every batch.
   */
  const configuration = new Map<string, { at: number; rows: Promise<SalesforceRecord[]> }>();
  async function configurationLookup<T extends SalesforceRecord>(request: SalesforceLookup): Promise<T[]> {
    const key = JSON.stringify(request);
    const hit = configuration.get(key);
    if (hit && Date.now() - hit.at < CONFIGURATION_TTL_MS) return (await hit.rows) as T[];
    const rows = lookup<T>(request);
    configuration.set(key, { at: Date.now(), rows });
    // A failed or empty answer is not kept: the next effect asks again (e.g. after the admin adds the queue).
    const dropIfUseless = () => {
      if (configuration.get(key)?.rows === rows) configuration.delete(key);
    };
    rows.then((r) => r.length === 0 && dropIfUseless(), dropIfUseless);
    return rows;
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
    lookup: (request) => (request.sobject === 'Group' ? configurationLookup(request) : lookup(request)),
    query: (soql, o) => inner.query(soql, o),
    queryPage: (c, o) => inner.queryPage(c, o),
    retrieve: (s, id, o) => inner.retrieve(s, id, o),
    updateMany: (s, r, o) => inner.updateMany(s, r, o),
    createMany: (s, r, o) => inner.createMany(s, r, o),
    apiUsage: () => inner.apiUsage(),
    close: () => inner.close(),
    stats,
    writeCollections: (c, o) => inner.writeCollections(c, o),
    writeTogether: (writes) => writeGroup(writes),
    async update(sobject: string, record: SalesforceRecord & { Id: string }) {
      await writeGroup([{ op: 'update', sobject, record }]);
    },
    async create(sobject: string, record: SalesforceRecord) {
      const [result] = await writeGroup([{ op: 'create', sobject, record }]);
      return { id: result?.id ?? '' };
    },
    async upsert(sobject: string, externalIdField: string, record: SalesforceRecord) {
      const [result] = await writeGroup([{ op: 'upsert', sobject, externalIdField, record }]);
      return { id: result?.id ?? '', created: result?.created === true };
    },
    /** Send whatever is queued now and wait for every call in flight. */
    async flush() {
      for (const key of [...lookupBatches.keys()]) flushLookups(key);
      send();
      await Promise.allSettled([...inFlight]);
    },
  };
}
