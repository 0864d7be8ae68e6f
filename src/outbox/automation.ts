/**
 * Composition of the automation side: an automation runtime (its own pipeline over batching
 * clients, same approval store, audit log and policy as the MCP side), the outbox store and the
 * worker. Used by `fraudgate serve --http` (webhook + worker in one process), by
 * `fraudgate outbox work` (a worker process on its own), by the tests and by the benchmark.
 */
import type { SiftClient, SiftDecisionDefinition, UpstreamClients } from '../clients/types.ts';
import { createSegmentClient } from '../clients/segment-client.ts';
import type { Config, Secrets } from '../config.ts';
import type { AuditLog } from '../governance/audit.ts';
import type { Logger } from '../logger.ts';
import { createClients, openRuntime, type LoadedKeys, type Runtime } from '../runtime.ts';
import type { AnyTool } from '../tool.ts';
import { createBatchingSalesforceClient, type BatchingStats } from './batching-salesforce.ts';
import type { OutboxStore } from '../store/outbox-store.ts';
import type { Store } from '../store/store.ts';
import { automationConfig, createOutboxWorker, type OutboxWorker } from './outbox-worker.ts';

export interface Automation {
  runtime: Runtime;
  store: OutboxStore;
  worker: OutboxWorker;
  salesforceStats: BatchingStats;
  close(): Promise<void>;
}

/**
 * The decisions catalogue changes only when someone edits decisions in the Sift console, yet every
 * sync tool reads it to categorise the user's decision: one read per minute serves every effect.
 */
function cachingCatalogue(sift: SiftClient, ttlMs = 60_000): SiftClient {
  const cache = new Map<string, { at: number; value: Promise<SiftDecisionDefinition[]> }>();
  return {
    ...sift,
    getUserScore: (u, o) => sift.getUserScore(u, o),
    addLabel: (u, l, o) => sift.addLabel(u, l, o),
    removeLabel: (u, a, o) => sift.removeLabel(u, a, o),
    getUserDecisions: (u, o) => sift.getUserDecisions(u, o),
    applyUserDecision: (u, i, o) => sift.applyUserDecision(u, i, o),
    sendEvent: (e, o) => sift.sendEvent(e, o),
    close: () => sift.close(),
    listDecisions(filter, options) {
      const key = JSON.stringify(filter ?? {});
      const hit = cache.get(key);
      if (hit && Date.now() - hit.at < ttlMs) return hit.value;
      const value = sift.listDecisions(filter, options);
      cache.set(key, { at: Date.now(), value });
      // A failed read is not cached: the next effect asks again.
      value.catch(() => cache.delete(key));
      return value;
    },
  };
}

/**
 * Clients for automated effects: Segment with larger batches (`segment_batch_size`; the library
 * also caps a batch at ~500 KB, Segment's limit), Salesforce writes coalesced into collections.
 */
export function createAutomationClients(
  config: Config,
  secrets: Secrets,
  base?: UpstreamClients,
  batching = true,
) {
  const clients = base ?? createClients(config, secrets);
  const segment = createSegmentClient({
    writeKey: secrets.segmentWriteKey ?? '',
    host: config.segment.host,
    profileBaseUrl: config.segment.profile_base_url,
    spaceId: config.segment.space_id ?? '',
    profileToken: secrets.segmentProfileToken ?? '',
    deliveryTimeoutMs: config.segment.delivery_timeout_ms,
    profileTimeoutMs: config.segment.timeout_ms,
    // The naive baseline (benchmark only) sends one message per request.
    flushAt: batching ? config.automation.segment_batch_size : 1,
    flushInterval: batching ? Math.max(1, config.automation.batch_window_ms) : 1,
  });
  // Replaced by the batching-tuned client above; a caller's own clients stay theirs to close.
  if (!base) void clients.segment.close();
  const salesforce = createBatchingSalesforceClient(clients.salesforce, {
    windowMs: config.automation.batch_window_ms,
  });
  return {
    sift: cachingCatalogue(clients.sift),
    segment,
    salesforce: batching ? salesforce : clients.salesforce,
    batcher: salesforce,
  };
}

export async function openAutomation(options: {
  config: Config;
  secrets: Secrets;
  tools: readonly AnyTool[];
  logger: Logger;
  /** Prebuilt base clients (tests); default from config and secrets. */
  clients?: UpstreamClients;
  /** The replica id (`serve`): the worker's lease owner, and the executor its approvals carry. */
  owner?: string;
  /** When this process took `owner` as its replica id (`serve`: the MCP runtime's too). */
  replicaStartedAt?: Date;
  /** false: one upstream request per record (the benchmark's naive baseline). */
  batching?: boolean;
  /** The process's store (shared with its MCP runtime); default: opened here and closed by `close()`. */
  store?: Store;
  /** The process's ledger writer, when another runtime already opened it (one per process). */
  audit?: AuditLog;
  /** The keys the process loaded at start-up; default: loaded by the runtime. */
  keys?: LoadedKeys;
}): Promise<Automation> {
  const config = automationConfig(options.config);
  const clients = createAutomationClients(config, options.secrets, options.clients, options.batching ?? true);
  const runtime = await openRuntime({
    config,
    secrets: options.secrets,
    tools: options.tools,
    logger: options.logger,
    clients,
    observeScores: false,
    // The outbox owner is the replica id (`serve`): its approvals resume after a restart like its leases.
    ...(options.owner ? { replicaId: options.owner } : {}),
    ...(options.replicaStartedAt ? { replicaStartedAt: options.replicaStartedAt } : {}),
    ...(options.store ? { store: options.store } : {}),
    ...(options.audit ? { audit: options.audit } : {}),
    ...(options.keys ? { keys: options.keys } : {}),
  });
  // The runtime's outbox: where this automation's own applied decisions are enqueued too.
  const store = runtime.outbox;
  const worker = createOutboxWorker({
    runtime,
    store,
    transaction: (fn) => runtime.store.transaction((tx) => fn({ outbox: tx.outbox, sql: tx.sql })),
    toolNames: new Set(options.tools.map((t) => t.name)),
    ...(options.owner ? { owner: options.owner } : {}),
  }); // Effects running together share one write request: it goes once each of them has queued its writes.
  if (options.batching !== false) clients.batcher.coordinate(() => worker.salesforceWriters());

  return {
    runtime,
    store,
    worker,
    salesforceStats: clients.batcher.stats,
    async close() {
      await worker.stop();
      await clients.batcher.flush();
      await runtime.close();
    },
  };
}
