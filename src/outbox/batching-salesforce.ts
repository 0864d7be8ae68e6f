/**
 * A SalesforceClient that coalesces the writes and lookups of concurrent callers.
 *
 * Writes (`update`, `create`, `upsert`, `writeTogether`) are packed into composite requests: up to
 * five sObject Collections subrequests of up to 200 records, one request and one API call for up to
 * 1,000 records. A request goes out as soon as it is full — while a backlog keeps effects coming, by
 * size — and otherwise `windowMs` after its first write, so a shallow queue waits at most the window.
 * A `writeTogether` group always travels in one request, and `upsertAndRead`'s read of the saved
 * record travels in it too, as a query after the writes (when the request has a free slot of its
 * five). Concurrent `lookup`s of one shape become one `IN (...)` query (≤200 values), each caller
 * getting its own rows; queries that go together (a full one waits for the others) share composite
 * requests, five to a call. Other reads pass through.
 *
 * This is how batching and per-effect governance coexist: the outbox worker runs each effect as
 * its own governed tool call (authorize, policy, intent audit, outcome audit), many at once; the
 * tools' writes wait here and go out together. Each caller still gets its own records' results or
 * error, so the pipeline audits each effect's real outcome.
 *
 * Every request is all or none (one `/composite` with allOrNone, its collections too): a group's
 * writes — a decision sync's update carrying its key and its Chatter post — land together or not at
 * all. When Salesforce refuses a record it rolls the whole request back and names the record: the
 * groups owning refused records fail with those refusals (provably unapplied), and the others go
 * again together (at most MAX_ROUNDS requests in all, then each group alone), so one bad record costs
 * one extra call, not the batch. A whole-request failure (timeout, 5xx, REQUEST_LIMIT_EXCEEDED) fails
 * every write in it with each group unchanged or wholly applied; the outbox retries them, and the
 * idempotency keys the writes carry (external-id upserts, the decision sync key) make a repeat of an
 * applied write harmless.
 */
import {
  LOOKUP_VALUES_PER_QUERY,
  lookupKey,
  lookupSoql,
  refusedRecord,
  ROLLED_BACK_CODES,
  saveError,
} from '../clients/salesforce-client.ts';
import { COMPOSITE_COLLECTIONS, CompositePacker, fieldValue } from '../clients/salesforce-composite.ts';
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

/** Requests a batch of write groups goes out in together before the groups Salesforce keeps rolling back go alone. */
const MAX_ROUNDS = 3;

/** Repeats of a failed shared lookup before its callers see the error. */
const LOOKUP_RETRIES = 3;

/** Counts of upstream calls, for the benchmark and the logs. */
export interface BatchingStats {
  /** Composite write requests sent, the collections they carried and the records written. */
  writeCalls: number;
  collectionCalls: number;
  recordsWritten: number;
  /** Groups sent again because a request they were in was rolled back for another group's refusal. */
  rolledBackGroupsResent: number;
  /** Records read back in the write request that wrote them (no API call of their own). */
  readBacksCarried: number;
  /** Lookup queries sent, the API calls that carried them, and the callers' lookups they answered. */
  lookupQueries: number;
  lookupCalls: number;
  lookups: number;
}

/** The batching client. */
export interface BatchingSalesforceClient extends SalesforceClient {
  stats: BatchingStats;
  /** Send whatever is queued now and wait for every call in flight. */
  flush(): Promise<void>;
  /**
   * Let the worker say how many running callers may still write. A request then goes out as soon as
   * each of them is waiting in it (nothing more will come), and past the window it keeps waiting
   * while some may still join — up to ten windows — so slow effects still share one request.
   */
  coordinate(expected: () => number): void;
}

/** Fields to read from an upserted record once it is written, found by the key the upsert carries. */
interface ReadBack {
  shape: Omit<SalesforceLookup, 'values'>;
  value: string;
}

/** One caller's group of writes waiting to go out, with the promise to settle. */
interface PendingGroup {
  writes: SalesforceWrite[];
  results: (SalesforceSaveResult | undefined)[];
  readBack?: ReadBack;
  /** The read-back's rows, when they came with the write. */
  rows?: SalesforceRecord[];
  resolve(answer: { results: SalesforceSaveResult[]; row?: SalesforceRecord }): void;
  reject(error: unknown): void;
}

/** Concurrent lookups of one shape (object, field, select, condition, order), waiting to go out as one query. */
interface LookupBatch {
  shape: Omit<SalesforceLookup, 'values'>;
  /** Distinct values by match key: each is asked once however many callers want it. */
  values: Map<string, string>;
  waiters: { keys: Set<string>; resolve(rows: SalesforceRecord[]): void; reject(error: unknown): void }[];
  firstAt: number;
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
    rolledBackGroupsResent: 0,
    readBacksCarried: 0,
    lookupQueries: 0,
    lookupCalls: 0,
    lookups: 0,
  };
  const lookupQuietMs = options.lookupQuietMs ?? Math.max(1, Math.floor(options.windowMs / 20));
  const inFlight = new Set<Promise<void>>();
  /** The composite request being filled, and when it goes out if it does not fill first. */
  let packer = new CompositePacker<{ group: PendingGroup; index: number }>();
  let groups: PendingGroup[] = [];
  let timer: NodeJS.Timeout | undefined;
  let openedAt: number | undefined;
  let expected: (() => number) | undefined;

  function due(): void {
    timer = undefined;
    const waited = Date.now() - (openedAt ?? Date.now());
    if (!expected || groups.length >= expected() || waited >= options.windowMs * 10) send();
    else timer = setTimeout(due, Math.max(5, Math.floor(options.windowMs / 10)));
  }

  function send(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    openedAt = undefined;
    const sending = packer;
    const waiting = groups;
    packer = new CompositePacker();
    groups = [];
    if (sending.size === 0) return;
    const done = dispatch(sending, waiting, 1);
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  }

  /**
   * Send one packed request (all or none) and settle its groups. When Salesforce rolls it back, the
   * groups owning the records it refused fail with those refusals (nothing of theirs was applied);
   * the others go again together, for up to MAX_ROUNDS requests, then each alone (`round` 'alone').
   */
  function dispatch(
    sending: CompositePacker<{ group: PendingGroup; index: number }>,
    waiting: PendingGroup[],
    round: number | 'alone',
    carry = true,
  ): Promise<void> {
    stats.writeCalls += 1;
    stats.collectionCalls += sending.collections.length;
    // Read-backs travel in the request's free subrequest slots (five collections and queries in all),
    // as queries after the writes; any that do not fit are looked up once their writes are done.
    const readBacks: { lookup: SalesforceLookup & { values: string[] }; groups: PendingGroup[] }[] = [];
    const open = new Map<string, (typeof readBacks)[number]>();
    for (const group of waiting) {
      if (!group.readBack) continue;
      const { shape, value } = group.readBack;
      const key = JSON.stringify(shape);
      let entry = open.get(key);
      if (!entry || entry.lookup.values.length >= LOOKUP_VALUES_PER_QUERY) {
        entry = { lookup: { ...shape, values: [] }, groups: [] };
        open.set(key, entry);
        readBacks.push(entry);
      }
      entry.lookup.values.push(value);
      entry.groups.push(group);
    }
    const carried = carry ? readBacks.slice(0, COMPOSITE_COLLECTIONS - sending.collections.length) : [];
    return inner
      .writeThenLookup(
        sending.requests(),
        carried.map((r) => r.lookup),
      )
      .then(
        async ({ saved: answers, found }) => {
          for (const group of waiting) group.results = [];
          sending.collections.forEach((collection, c) =>
            collection.items.forEach(({ item }, r) => {
              const { group, index } = item;
              group.results[index] = answers[c]?.[r] ?? {
                id: '',
                success: false,
                errors: [
                  { statusCode: 'UNKNOWN_EXCEPTION', message: 'Salesforce returned too few results.' },
                ],
              };
            }),
          );
          if (!waiting.every((g) => g.results.every((r) => r?.success))) {
            // A refused read-back query rolls the writes back too (all or none): the same request
            // again without its read-backs, which are then looked up on their own.
            const queryRefused = found.some(
              (rows) => rows instanceof UpstreamError && !ROLLED_BACK_CODES.has(String(rows.upstreamCode)),
            );
            if (queryRefused && waiting.every((g) => refusedRecord(g.results as SalesforceSaveResult[]) < 0))
              return dispatch(sending, waiting, round, false);
            return afterRollback(waiting, round);
          }
          stats.recordsWritten += sending.size;
          stats.readBacksCarried += carried.reduce((n, r) => n + r.groups.length, 0);
          carried.forEach((readBack, i) => {
            const rows = found[i];
            if (rows instanceof Error || rows === undefined) return;
            const field = readBack.lookup.field;
            for (const group of readBack.groups) {
              const key = lookupKey(group.readBack?.value);
              group.rows = rows.filter((row) => lookupKey(fieldValue(row, field)) === key);
            }
          });
          for (const group of waiting) {
            const results = group.results as SalesforceSaveResult[];
            if (group.readBack && !group.rows?.length) {
              // Not carried (no free slot), its query refused or the row not seen: a lookup of its
              // own, batched with others.
              const { shape, value } = group.readBack;
              lookup({ ...shape, values: [value] }).then(
                (rows) => group.resolve({ results, ...(rows[0] ? { row: rows[0] } : {}) }),
                (error: unknown) => group.reject(error),
              );
            } else group.resolve({ results, ...(group.rows?.[0] ? { row: group.rows[0] } : {}) });
          }
        },
        (error: unknown) => {
          // No answer, or one refusing the whole request: all or none, so each group is unchanged or
          // wholly applied, and its idempotency keys make the outbox's retry harmless.
          for (const group of waiting) group.reject(error);
        },
      );
  }

  /** After a rolled-back request: fail the groups Salesforce refused, send the others again. */
  async function afterRollback(waiting: PendingGroup[], round: number | 'alone'): Promise<void> {
    const rest: PendingGroup[] = [];
    for (const group of waiting) {
      const results = group.results as SalesforceSaveResult[];
      const refused = refusedRecord(results);
      // Alone, a group whose failure names no record of its own still failed.
      const failed = refused >= 0 ? refused : round === 'alone' ? results.findIndex((r) => !r.success) : -1;
      if (failed >= 0)
        group.reject(
          saveError(group.writes[failed] as SalesforceWrite, results[failed] as SalesforceSaveResult),
        );
      else rest.push(group);
    }
    if (rest.length === 0) return;
    stats.rolledBackGroupsResent += rest.length;
    // Together again while each round names a refused group; else (or past the rounds) alone, so
    // one group Salesforce keeps refusing cannot hold the others back.
    const together = round !== 'alone' && round < MAX_ROUNDS && rest.length < waiting.length;
    const batches = together ? pack(rest) : rest.map((group) => pack([group])[0]);
    await Promise.all(
      batches.map((batch) =>
        batch ? dispatch(batch.packer, batch.groups, together ? (round as number) + 1 : 'alone') : undefined,
      ),
    );
  }

  /** Groups packed into as few requests as they fit. */
  function pack(
    list: PendingGroup[],
  ): { packer: CompositePacker<{ group: PendingGroup; index: number }>; groups: PendingGroup[] }[] {
    const out: ReturnType<typeof pack> = [];
    let current: ReturnType<typeof pack>[number] | undefined;
    for (const group of list) {
      const entries = group.writes.map((write, index) => ({ write, item: { group, index } }));
      if (!current || !current.packer.tryAdd(entries)) {
        current = { packer: new CompositePacker(), groups: [] };
        out.push(current);
        current.packer.tryAdd(entries);
      }
      current.groups.push(group);
    }
    return out;
  }

  function writeGroup(
    writes: SalesforceWrite[],
    readBack?: ReadBack,
  ): Promise<{ results: SalesforceSaveResult[]; row?: SalesforceRecord }> {
    return new Promise((resolve, reject) => {
      const group: PendingGroup = { writes, results: [], resolve, reject, ...(readBack ? { readBack } : {}) };
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
      openedAt ??= Date.now();
      if (expected && groups.length >= expected()) send();
      else timer ??= setTimeout(due, options.windowMs);
    });
  }

  const lookupBatches = new Map<string, LookupBatch>();
  /**
   * Batches that reached 200 values: closed to newcomers but not sent alone — they wait for the
   * others (same quiet period and window) and go with them, five queries to a composite request.
   */
  let fullBatches: LookupBatch[] = [];

  /** One quiet-period timer for every open lookup batch: lookups that arrive together go together. */
  let lookupTimer: NodeJS.Timeout | undefined;

  /**
   * Send every open lookup batch: one alone as a plain query, several (an effect's Account, Contact
   * and Case lookups, which arrive together) as query subrequests of composite requests, up to five
   * queries per request — one API call instead of one per object.
   */
  function flushLookups(): void {
    if (lookupTimer) clearTimeout(lookupTimer);
    lookupTimer = undefined;
    const batches = [...fullBatches, ...lookupBatches.values()];
    fullBatches = [];
    lookupBatches.clear();
    for (let i = 0; i < batches.length; i += COMPOSITE_COLLECTIONS)
      sendLookups(batches.slice(i, i + COMPOSITE_COLLECTIONS));
  }

  function sendLookups(batches: LookupBatch[]): void {
    stats.lookupQueries += batches.length;
    stats.lookupCalls += 1;
    const requests = batches.map((b) => ({ ...b.shape, values: [...b.values.values()] }));
    const done = lookupWithRetries(requests).then(
      (answers) =>
        batches.forEach((batch, i) => {
          const answer =
            answers[i] ??
            new UpstreamError('Salesforce answered too few lookups.', {
              service: 'salesforce',
              retryable: true,
            });
          if (answer instanceof Error) {
            for (const waiter of batch.waiters) waiter.reject(answer);
            return;
          }
          const field = batch.shape.field.toLowerCase();
          for (const waiter of batch.waiters) {
            waiter.resolve(
              answer.filter((row) => {
                const name = Object.keys(row).find((k) => k.toLowerCase() === field);
                return name !== undefined && waiter.keys.has(lookupKey(row[name]));
              }),
            );
          }
        }),
      (error: unknown) => {
        for (const batch of batches) for (const waiter of batch.waiters) waiter.reject(error);
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  }

  /**
   * A shared lookup is retried here (reads are safe to repeat) rather than failing every caller:
   * one failed query would otherwise send a whole batch of effects back through the outbox.
   */
  async function lookupWithRetries(requests: SalesforceLookup[]): Promise<(SalesforceRecord[] | Error)[]> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const [only] = requests;
        if (requests.length === 1 && only) return [await inner.lookup(only)];
        return await inner.lookupTogether(requests);
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

  function closeLookupBatch(key: string, batch: LookupBatch): void {
    lookupBatches.delete(key);
    fullBatches.push(batch);
  }

  /** The open batches go once no lookup has joined any of them for the quiet period, or the window after the oldest opened. */
  function scheduleLookups(): void {
    if (lookupTimer) clearTimeout(lookupTimer);
    lookupTimer = undefined;
    if (fullBatches.length === 0 && lookupBatches.size === 0) return;
    const oldest = Math.min(...[...fullBatches, ...lookupBatches.values()].map((b) => b.firstAt));
    const left = options.windowMs - (Date.now() - oldest);
    lookupTimer = setTimeout(flushLookups, Math.max(0, Math.min(lookupQuietMs, left)));
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
        closeLookupBatch(key, batch);
        batch = undefined;
      }
      if (!batch) {
        batch = { shape, values: new Map(), waiters: [], firstAt: Date.now() };
        lookupBatches.set(key, batch);
      }
      for (const value of values)
        if (!batch.values.has(lookupKey(value))) batch.values.set(lookupKey(value), value);
      batch.waiters.push({ keys, resolve: (rows) => resolve(rows as T[]), reject });
      if (batch.values.size >= LOOKUP_VALUES_PER_QUERY) closeLookupBatch(key, batch);
      // A composite request's worth of full queries goes at once; anything less waits for company.
      if (fullBatches.length >= COMPOSITE_COLLECTIONS)
        sendLookups(fullBatches.splice(0, COMPOSITE_COLLECTIONS));
      scheduleLookups();
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
    writeThenLookup: (c, l, o) => inner.writeThenLookup(c, l, o),
    writeTogether: async (writes) => (await writeGroup(writes)).results,
    async update(sobject: string, record: SalesforceRecord & { Id: string }) {
      await writeGroup([{ op: 'update', sobject, record }]);
    },
    async create(sobject: string, record: SalesforceRecord) {
      const {
        results: [result],
      } = await writeGroup([{ op: 'create', sobject, record }]);
      return { id: result?.id ?? '' };
    },
    async upsert(sobject: string, externalIdField: string, record: SalesforceRecord) {
      const {
        results: [result],
      } = await writeGroup([{ op: 'upsert', sobject, externalIdField, record }]);
      return { id: result?.id ?? '', created: result?.created === true };
    },
    async upsertAndRead<T extends SalesforceRecord = SalesforceRecord>(
      sobject: string,
      externalIdField: string,
      record: SalesforceRecord,
      select: readonly string[],
    ): Promise<{ id: string; created: boolean; row: T | undefined }> {
      const value = fieldValue(record, externalIdField);
      if (typeof value !== 'string' && typeof value !== 'number')
        throw new InvalidInputError([
          { field: externalIdField, message: 'the record must carry the external id value' },
        ]);
      const shape = { sobject, field: externalIdField, select };
      // Checked here, before it can spoil the write request shared with others.
      lookupSoql(shape, []);
      const {
        results: [result],
        row,
      } = await writeGroup([{ op: 'upsert', sobject, externalIdField, record }], {
        shape,
        value: String(value),
      });
      return { id: result?.id ?? '', created: result?.created === true, row: row as T | undefined };
    },
    /** Send whatever is queued now and wait for every call in flight. */
    coordinate(count) {
      expected = count;
    },
    async flush() {
      flushLookups();
      send();
      await Promise.allSettled([...inFlight]);
    },
  };
}
