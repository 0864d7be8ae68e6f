/**
 * The runtime behind every transport: upstream clients, the store (approvals, identities, …), the
 * audit log and the governance pipeline, wired from a resolved configuration. `fraudgate serve`, the
 * tests and the benchmarks all build it the same way.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createSalesforceClient } from './clients/salesforce-client.ts';
import { createSegmentClient } from './clients/segment-client.ts';
import { createSegmentOrigin, originMarkingSegment, type SegmentOrigin } from './clients/segment-origin.ts';
import { createSiftClient } from './clients/sift-client.ts';
import { prepareDataDir } from './data-dir.ts';
import type { UpstreamClients } from './clients/types.ts';
import type { Config, Secrets } from './config.ts';
import { FraudgateError, InvalidInputError } from './errors.ts';
import {
  createApprovalDesk,
  type ApprovalDesk,
  type ApprovalTransaction,
  type DeskTool,
} from './governance/approval-desk.ts';
import type { AuditLog } from './governance/audit.ts';
import { loadAuditKey } from './governance/audit-key.ts';
import { createAuditLedger, type LedgerEngine } from './governance/audit-ledger.ts';
import {
  createCheckpointSigner,
  createCheckpointVerifier,
  loadConfiguredSigningKey,
  type CheckpointVerifier,
} from './governance/audit-signing.ts';
import { openSqliteLedgerStore } from './store/sqlite/audit-ledger-store.ts';
import { createPipeline, type Pipeline, type PipelineDeps } from './governance/pipeline.ts';
import { createBudgets, type Budgets } from './governance/budgets.ts';
import type { BudgetStore } from './store/budget-store.ts';
import { openSqliteBudgetStore } from './store/sqlite/budget-store.ts';
import { createRateLimiter, createRedisRateLimiter, type RateLimiter } from './governance/rate-limit.ts';
import { createRedactor, type Redactor } from './governance/redact.ts';
import { redactingLogger, type Logger } from './logger.ts';
import type { ApprovalStore } from './store/approval-store.ts';
import type { IdentityStore } from './store/identity-store.ts';
import { databasePath, openStore, type Store } from './store/store.ts';
import { configuredFieldCipher, maskUnmatchedIdentities, sealApprovalFields } from './store/field-crypto.ts';
import { openSessionStores, type SessionStores } from './store/session-store.ts';
import { openApprovalSignal, signalTransitions, type ApprovalSignal } from './store/approval-signal.ts';
import type { AnyTool } from './tool.ts';
import type { OutboxStore } from './store/outbox-store.ts';
import { propagatingSift, scoreObservingSift } from './outbox/propagate.ts';

export interface Runtime {
  config: Config;
  /** Every registered tool (the pipeline decides who sees which). */
  tools: readonly AnyTool[];
  pipeline: Pipeline;
  /**
   * A pipeline for callers that must not stall on a human (the lifecycle poller, the Lead watcher):
   * the runtime's own — identities, approvals and their signal, cursor key, budgets, rate limiter,
   * audit, replica — but answering APPROVAL_PENDING at once instead of waiting.
   */
  unattendedPipeline(tools: readonly AnyTool[]): Pipeline;
  desk: ApprovalDesk;
  /** Every piece of durable state (SQLite or PostgreSQL); `approvals` and `identities` are in it. */
  store: Store;
  approvals: ApprovalStore;
  /** Tells of approval transitions (every replica's once listening; src/store/approval-signal.ts). */
  approvalSignal: Pick<ApprovalSignal, 'subscribe'>;
  /** A store transaction with the (sealed) approvals bound to it: a transition and its audit record commit together. */
  approvalTransaction: ApprovalTransaction;
  /** Sift → Segment id mappings and the identity review list. */
  identities: IdentityStore;
  /** This process's audit writer: the one ledger instance every part of the process appends through. */
  audit: AuditLog;
  /** The ledger's storage when this runtime opened the writer (retention prunes it); else undefined. */
  ledgerEngine: LedgerEngine | undefined;
  /** MCP session registry, console sessions and the relay for client answers (HTTP only). */
  sessions: SessionStores;
  /** Rate-limit buckets: in memory, or in Redis shared by the replicas (`rate_limits.store`). */
  rateLimiter: RateLimiter;
  /** Blast-radius budgets: admitted effects and pauses (src/governance/budgets.ts). */
  budgets: Budgets;
  /** The durable outbox: decision webhooks, Segment messages and fraudgate's own applied decisions. */
  outbox: OutboxStore;
  redactor: Redactor;
  /**
   * The upstream clients; Sift's `applyUserDecision` also enqueues the decision (src/outbox/propagate.ts),
   * and every Segment message carries fraudgate's mark (`segmentOrigin`).
   */
  clients: UpstreamClients;
  /** Marks fraudgate's own Segment messages, and knows them when Segment delivers them back (segment-origin.ts). */
  segmentOrigin: SegmentOrigin;
  logger: Logger;
  /** Start the background sweep that executes approved actions and expires overdue approvals. */
  startApprovalSweep(intervalMs?: number): void;
  close(): Promise<void>;
}

/**
 * The keys `serve` loads once, before anything opens (src/startup.ts `loadServeKeys`), and hands to
 * everything it opens so none loads them again. Whoever is not given them loads each where it is
 * first needed, with the same refusals (the CLI commands, the tests).
 */
export interface LoadedKeys {
  /** Seals personal fields at rest (FRAUDGATE_DATA_KEY; src/store/field-crypto.ts). */
  dataKey: Buffer;
  /** Open what a rotated-out data key sealed (FRAUDGATE_DATA_KEY_PREVIOUS); never seal. */
  previousDataKeys?: Buffer[];
  /** Signs audit checkpoints (src/governance/audit-signing.ts). */
  signingKey: KeyObject;
  /** Keys the audit log's hashes of personal data and seals list cursors (src/governance/audit-key.ts). */
  auditKey: string;
}

/** Where versions before the ledger kept the audit log; `fraudgate audit verify --file` still checks it. */
export const legacyAuditPath = (config: Pick<Config, 'data_dir'>) => join(config.data_dir, 'audit.jsonl');

/**
 * This process's replica id: FRAUDGATE_REPLICA_ID (`replica_id`), else host name + HTTP port, which
 * stays the same across restarts so a restarted replica takes its own leases back at once. Processes
 * without a stable port (stdio, port 0, workers) add their pid: two of them on one host must differ
 * (several stdio servers may share a data dir). A `serve` started later on the host settles what a
 * dead one of those left executing (replica-registration.ts `takeOverDeadSiblings`).
 */
export function replicaIdFor(
  config: Pick<Config, 'replica_id' | 'http'>,
  role: 'http' | 'stdio' | 'worker',
): string {
  if (config.replica_id) return config.replica_id;
  if (role === 'http' && config.http.port !== 0) return `${hostname()}:${config.http.port}`;
  return `${hostname()}:${role}:${process.pid}`;
}

/**
 * Open the configured store, logging (not crashing on) connection failures and start-up waits.
 * One per process: pass it to `openRuntime` and `openAutomation` so they share it.
 */
export async function openConfiguredStore(
  config: Config,
  secrets: Secrets,
  logger: Logger,
  keys?: LoadedKeys,
): Promise<Store> {
  let lastWarning = 0;
  return openStore(config, secrets, {
    // The outbox's personal fields are sealed under the same data key as approvals'.
    cipher: configuredFieldCipher(config, secrets, keys),
    onConnectionError(error) {
      // pg replaces the connection on next use; one warning a minute is enough for the operator.
      if (Date.now() - lastWarning < 60_000) return;
      lastWarning = Date.now();
      logger.warn('store connection lost; reconnecting on next use', { error: error.message });
    },
    onWaiting: (message) => logger.warn(message),
  });
}

/**
 * This process's audit writer id. `serve` passes FRAUDGATE_REPLICA_ID when set, so a restarted
 * replica continues its chain; every other process (CLI commands, tests) gets its own.
 */
export function auditWriterId(replicaId?: string): string {
  return replicaId ?? `${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}:${process.pid}`;
}

/**
 * The ledger's storage: the configured store's engine, so with `store: postgres` every replica
 * appends its own chain to one shared ledger and `audit verify` on any replica checks them all.
 * Given the process's store, the ledger runs on it (its SQLite connection, its PostgreSQL pool)
 * rather than on a handle of its own; commands that opened no store get one for the ledger alone.
 */
export async function openLedgerEngine(
  config: Pick<Config, 'data_dir' | 'store' | 'store_postgres'>,
  secrets: Pick<Secrets, 'postgresUrl'>,
  options: { store?: Pick<Store, 'engine' | 'sql'>; onError?: (error: Error) => void } = {},
): Promise<LedgerEngine> {
  // SQLite: the process's connections to a file are shared already (src/store/sqlite/database.ts).
  if (config.store !== 'postgres') return openSqliteLedgerStore(databasePath(config));
  const { openPostgresLedgerStore } = await import('./store/postgres/audit-ledger-store.ts');
  if (options.store?.engine === 'postgres') return openPostgresLedgerStore({ sql: options.store.sql });
  if (!secrets.postgresUrl)
    throw new InvalidInputError(
      [{ field: 'FRAUDGATE_POSTGRES_URL', message: 'is required when store is postgres' }],
      'Missing PostgreSQL URL',
    );
  return openPostgresLedgerStore({
    url: secrets.postgresUrl,
    schema: config.store_postgres.schema,
    ...(options.onError ? { onError: options.onError } : {}),
  });
}

/** The public key that checks checkpoints, from the configured signing key (see audit-signing.ts). */
export function trustedAuditVerifier(config: Config, secrets: Secrets): CheckpointVerifier {
  const key = loadConfiguredSigningKey(config, secrets);
  return createCheckpointVerifier(createPublicKey(key));
}

/**
 * Opens this process's ledger writer. Refuses (fail closed) without a signing key in live mode.
 * Retention (`audit.retention_days`) is the `audit_retention` job of `serve` (src/jobs/serve-jobs.ts).
 */
export async function openAuditLedger(
  config: Config,
  secrets: Secrets,
  redactor: Redactor,
  logger: Logger,
  writer = auditWriterId(),
  /** The process's store: the ledger runs on it (see `openLedgerEngine`). */
  store?: Store,
  /** Already loaded (`LoadedKeys`); default: loaded here. */
  signingKey?: KeyObject,
): Promise<AuditLog & { engine: LedgerEngine }> {
  const signer = createCheckpointSigner(signingKey ?? loadConfiguredSigningKey(config, secrets));
  const engine = await openLedgerEngine(config, secrets, {
    ...(store ? { store } : {}),
    onError: (error) =>
      logger.warn('audit ledger lost its PostgreSQL connection; commits retry on a new one', {
        error: error.message,
      }),
  });
  const ledger = createAuditLedger({
    engine,
    writer,
    redactor,
    signer,
    checkpointEvery: config.audit.checkpoint_every,
    checkpointIntervalMs: config.audit.checkpoint_interval_ms,
    onHealthChange: (health) =>
      health.ok
        ? logger.info('audit ledger writable again')
        : logger.error('audit ledger cannot write: calls are refused until it can', { error: health.reason }),
  });
  return {
    ...ledger,
    writer: ledger.writer,
    engine,
    async close() {
      await ledger.close();
      await engine.close();
    },
  };
}

/**
 * Where budgets live: PostgreSQL when the fleet shares one (`store: postgres`), so every replica
 * counts against the same ceilings; else the data directory's SQLite file.
 */
export async function openBudgetStore(
  config: Config,
  secrets: Pick<Secrets, 'postgresUrl'>,
  logger: Logger,
): Promise<BudgetStore> {
  if (config.store === 'postgres' && secrets.postgresUrl) {
    // Loaded only here: a single-host deployment never loads the PostgreSQL driver.
    const { openPostgresBudgetStore } = await import('./store/postgres/budget-store.ts');
    return openPostgresBudgetStore(secrets.postgresUrl, {
      schema: config.store_postgres.schema,
      onError: (error) =>
        logger.warn('budget store (PostgreSQL) connection lost; reconnecting', { error: error.message }),
    });
  }
  return openSqliteBudgetStore(databasePath(config));
}

/**
 * The store, audit log and approval desk only: what the `approvals` and `outbox` CLI commands need.
 * `close()` closes what it opened: the store only when it was not given one, the ledger writer only
 * when it was not given one.
 */
export async function openGovernanceState(
  config: Config,
  secrets: Secrets,
  logger: Logger,
  options: {
    audit?: AuditLog;
    writer?: string;
    store?: Store;
    keys?: LoadedKeys;
    /** The tools, so decisions apply the current policy (read-only mode, toolsets, a tightened mode). */
    tools?: readonly DeskTool[];
  } = {},
) {
  prepareDataDir(config.data_dir);
  const auditKey = options.keys?.auditKey ?? loadAuditKey(config, secrets);
  const redactor = createRedactor({ hashKey: auditKey });
  const raw = options.store ?? (await openConfiguredStore(config, secrets, logger, options.keys));
  let audit: AuditLog;
  let ledgerEngine: LedgerEngine | undefined;
  let cipher;
  try {
    if (options.audit) audit = options.audit;
    else {
      const opened = await openAuditLedger(
        config,
        secrets,
        redactor,
        logger,
        options.writer,
        raw,
        options.keys?.signingKey,
      );
      audit = opened;
      ledgerEngine = opened.engine;
    }
    cipher = configuredFieldCipher(config, secrets, options.keys);
  } catch (error) {
    if (!options.store) await raw.close();
    throw error;
  }
  // Personal fields at rest: approval arguments and reasons sealed (FRAUDGATE_DATA_KEY), the identity
  // review list masked (src/store/field-crypto.ts). Everyone reads approvals through these wrappers.
  // Every approval transition wakes the calls waiting on it, on every replica (approval-signal.ts).
  const approvalSignal = await openApprovalSignal(raw, config, secrets, (error) =>
    logger.warn('approval wake-up connection lost; waiting calls poll until it is back', {
      error: error.message,
    }),
  );
  const publish = (id: string) =>
    void approvalSignal.publish(id).catch((error: unknown) =>
      logger.warn('approval wake-up not sent; waiting calls see it at their next poll', {
        error: String(error),
      }),
    );
  // An approval whose sealed fields do not open is left out of every list (which must not break on
  // it) and refused by get/decide/execute; the log names it, never its content.
  // One sealed under a key this replica lacks (a rotation under way) is valid elsewhere: said once per key.
  const lackingKeys = new Set<string>();
  const unreadableApproval = (id: string, error: unknown) => {
    const keyId = error instanceof FraudgateError ? error.data.key_id : undefined;
    if (typeof keyId !== 'string') {
      logger.error(
        'approval unreadable: its sealed arguments do not open under FRAUDGATE_DATA_KEY; left out',
        {
          approval_id: id,
        },
      );
    } else if (!lackingKeys.has(keyId)) {
      lackingKeys.add(keyId);
      logger.warn(
        'approvals sealed under a data key this replica does not hold are left to replicas that hold it',
        {
          key_id: keyId,
          approval_id: id,
        },
      );
    }
  };
  const approvals = signalTransitions(sealApprovalFields(raw.approvals, cipher, unreadableApproval), publish);
  const identities = maskUnmatchedIdentities(raw.identities, (value) => redactor.redactValue(value));
  const store: Store = { ...raw, approvals, identities };
  // The ledger lives in the store's database, so a transition and its record share one transaction.
  const approvalTransaction: ApprovalTransaction = async (fn) => {
    const moved: string[] = [];
    const result = await raw.transaction((tx) =>
      fn({
        approvals: signalTransitions(sealApprovalFields(tx.approvals, cipher, unreadableApproval), (id) =>
          moved.push(id),
        ),
        sql: tx.sql,
      }),
    );
    for (const id of moved) publish(id);
    return result;
  };
  const desk = createApprovalDesk({
    approvals,
    audit,
    logger,
    transaction: approvalTransaction,
    ...(options.tools ? { policy: { tools: options.tools, config } } : {}),
  });
  return {
    auditKey,
    redactor,
    audit,
    ledgerEngine,
    store,
    approvals,
    approvalTransaction,
    identities,
    desk,
    approvalSignal,
    async close() {
      await approvalSignal.close();
      if (!options.audit) await audit.close();
      if (!options.store) await raw.close();
    },
  };
}

export function createClients(config: Config, secrets: Secrets): UpstreamClients {
  const missing = (name: string): never => {
    throw new InvalidInputError(
      [{ field: name, message: 'is required to reach the upstream API' }],
      'Missing credentials',
    );
  };
  const sf = config.salesforce;
  return {
    sift: createSiftClient({
      baseUrl: config.sift.base_url,
      apiKey: secrets.siftApiKey ?? missing('SIFT_API_KEY'),
      accountId: config.sift.account_id ?? missing('SIFT_ACCOUNT_ID'),
      timeoutMs: config.sift.timeout_ms,
      maxRetries: config.sift.max_retries,
    }),
    segment: createSegmentClient({
      writeKey: secrets.segmentWriteKey ?? missing('SEGMENT_WRITE_KEY'),
      host: config.segment.host,
      profileBaseUrl: config.segment.profile_base_url,
      spaceId: config.segment.space_id ?? missing('SEGMENT_SPACE_ID'),
      profileToken: secrets.segmentProfileToken ?? missing('SEGMENT_PROFILE_TOKEN'),
      deliveryTimeoutMs: config.segment.delivery_timeout_ms,
      profileTimeoutMs: config.segment.timeout_ms,
    }),
    salesforce: createSalesforceClient({
      loginUrl: sf.login_url,
      apiVersion: sf.api_version,
      timeoutMs: sf.timeout_ms,
      auth:
        sf.auth_flow === 'password'
          ? {
              flow: 'password',
              clientId: secrets.salesforceClientId ?? missing('SALESFORCE_CLIENT_ID'),
              clientSecret: secrets.salesforceClientSecret ?? missing('SALESFORCE_CLIENT_SECRET'),
              username: secrets.salesforceUsername ?? missing('SALESFORCE_USERNAME'),
              password: secrets.salesforcePassword ?? missing('SALESFORCE_PASSWORD'),
            }
          : {
              flow: 'client_credentials',
              clientId: secrets.salesforceClientId ?? missing('SALESFORCE_CLIENT_ID'),
              clientSecret: secrets.salesforceClientSecret ?? missing('SALESFORCE_CLIENT_SECRET'),
            },
    }),
  };
}

/**
 * How long a call waits for Redis (a bucket take) before it is refused as unavailable (retryable,
 * audited). A take answers in well under a millisecond; this only bounds a Redis that stopped
 * answering without closing the connection (hung, or a path that drops packets), which would
 * otherwise hold every call forever.
 */
const REDIS_COMMAND_TIMEOUT_MS = 1_500;

/**
 * Shared buckets in Redis. Every command is bounded, whether Redis is down (connection refused or
 * closed: fails at once) or hung (open connection, no answer: fails after
 * {@link REDIS_COMMAND_TIMEOUT_MS}), so calls fail closed instead of hanging.
 */
export async function redisLimiter(url: string, logger: Logger, keySecret: string) {
  // Loaded only when configured: the default in-memory limiter should not pay ioredis's load time.
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    // A connection that sent a command and hears nothing for this long is dropped and opened again:
    // a late reply on it could otherwise answer a later command, and a new one finds Redis once it is back.
    socketTimeout: REDIS_COMMAND_TIMEOUT_MS,
    // A take the caller was already refused for must not run later, on the next connection.
    autoResendUnfulfilledCommands: false,
    // Idle connections are probed after 5 s, so one whose peer vanished is noticed between calls.
    keepAlive: 5_000,
  });
  let lastWarning = 0;
  redis.on('error', (error: Error) => {
    // ioredis reconnects on its own; one warning a minute is enough for the operator.
    if (Date.now() - lastWarning < 60_000) return;
    lastWarning = Date.now();
    logger.warn('rate-limit store (Redis) unavailable; calls are refused until it is back', {
      error: error.message,
    });
  });
  return createRedisRateLimiter(redis, { keySecret });
}

export async function openRuntime(options: {
  config: Config;
  secrets: Secrets;
  tools: readonly AnyTool[];
  logger: Logger;
  /** Inject clients (e.g. already built for the sandbox); default: built from config and secrets. */
  clients?: UpstreamClients;
  /**
   * Another runtime's ledger writer, shared so a process has one (the automation side of
   * `serve --http`); its owner closes it. Default: open this process's own.
   */
  audit?: AuditLog;
  /** The ledger writer id when opening one (`serve` passes FRAUDGATE_REPLICA_ID). */
  auditWriter?: string;
  /**
   * This replica's id (`replicaIdFor`), passed by `serve` only: approvals this runtime executes carry
   * it, so the replica restarted under the same id resumes those it died running (PipelineDeps).
   */
  replicaId?: string;
  /** When this process took `replicaId` (PipelineDeps.startedAt); default: when the runtime opens. */
  replicaStartedAt?: Date;
  /** The process's store; default: opened here (and closed by `close()`). */
  store?: Store;
  /** The keys the process loaded at start-up; default: loaded here. */
  keys?: LoadedKeys;
  /**
   * Feed the scores this runtime reads to the score-change trigger (`automation.score_trigger.from_reads`).
   * The automation runtime, which runs the trigger's effects, passes false: its reads must not set it off again.
   */
  observeScores?: boolean;
}): Promise<Runtime> {
  const { config, secrets } = options;
  const { close: closeState, ...state } = await openGovernanceState(config, secrets, options.logger, {
    ...(options.audit ? { audit: options.audit } : {}),
    ...(options.auditWriter ? { writer: options.auditWriter } : {}),
    ...(options.store ? { store: options.store } : {}),
    ...(options.keys ? { keys: options.keys } : {}),
    tools: options.tools,
  });
  // Everything the runtime (and whoever uses runtime.logger) logs passes the audit redactor.
  const logger = redactingLogger(options.logger, (value) => state.redactor.redactValue(value));
  const outbox = state.store.outbox;
  const upstream = options.clients ?? createClients(config, secrets);
  // Every decision this process applies reaches the outbox like a Sift webhook would.
  const propagating = propagatingSift(upstream.sift, outbox);
  const observe = (options.observeScores ?? true) && config.automation.score_trigger.from_reads;
  // …and every score it reads reaches the score-change trigger (tools, the score sync, the watchers).
  // …and every Segment message it writes is marked as its own, so the Segment webhook does not send
  // it back to Sift when Segment's Webhooks destination delivers it (keyed by the shared audit key).
  const segmentOrigin = createSegmentOrigin(state.auditKey);
  const clients = {
    ...upstream,
    sift: observe ? scoreObservingSift(propagating, outbox) : propagating,
    segment: originMarkingSegment(upstream.segment, segmentOrigin),
  };
  // Redis keeps buckets under keyed hashes of principal ids and client addresses, keyed by the audit
  // key, which every replica shares, so replicas name a bucket alike.
  const rateLimiter =
    config.rate_limits.store === 'redis' && secrets.redisUrl
      ? await redisLimiter(secrets.redisUrl, logger, state.auditKey)
      : createRateLimiter(Date.now);
  const budgets = createBudgets({
    store: await openBudgetStore(config, secrets, logger),
    config,
    audit: state.audit,
    logger,
  });
  const pipelineDeps: PipelineDeps = {
    tools: options.tools,
    config,
    clients,
    budgets,
    approvals: state.approvals,
    approvalTransaction: state.approvalTransaction,
    approvalSignal: state.approvalSignal,
    identities: state.identities,
    cursorKey: state.auditKey,
    audit: state.audit,
    redactor: state.redactor,
    rateLimiter,
    logger,
    ...(options.replicaId ? { replicaId: options.replicaId } : {}),
    ...(options.replicaStartedAt ? { startedAt: options.replicaStartedAt } : {}),
  };
  const pipeline = createPipeline(pipelineDeps);
  // A runtime whose calls wait for decisions hears other replicas' from now on (the automation's never wait).
  if (config.approvals.wait_ms > 0) await state.approvalSignal.listen();
  // Sessions live in the store like everything else; with PostgreSQL every replica shares them.
  const sessions = await openSessionStores(state.store, config, secrets, (error) =>
    logger.warn('session relay connection lost; reconnecting', { error: error.message }),
  );
  let sweep: NodeJS.Timeout | undefined;
  let sweeping = false;
  return {
    config,
    tools: options.tools,
    pipeline,
    unattendedPipeline: (tools) =>
      createPipeline({
        ...pipelineDeps,
        tools,
        config: { ...config, approvals: { ...config.approvals, wait_ms: 0 } },
      }),
    ...state,
    sessions,
    rateLimiter,
    budgets,
    outbox,
    clients,
    segmentOrigin,
    logger,
    startApprovalSweep(intervalMs = Math.max(500, config.approvals.poll_ms * 4)) {
      sweep ??= setInterval(() => {
        if (sweeping) return;
        sweeping = true;
        pipeline
          .processApprovals()
          .catch((error: unknown) => logger.error('approval sweep failed', { error: String(error) }))
          .finally(() => {
            sweeping = false;
          });
      }, intervalMs);
      sweep.unref();
    },
    async close() {
      if (sweep) clearInterval(sweep);
      await Promise.allSettled([clients.sift.close(), clients.segment.close(), clients.salesforce.close()]);
      await pipeline
        .close()
        .catch((error: unknown) =>
          logger.error('pending audit records could not be written', { error: String(error) }),
        );
      await rateLimiter.close().catch(() => undefined);
      await sessions.close();
      await budgets.close();
      await closeState();
    },
  };
}
