#!/usr/bin/env node
/**
 * The `fraudgate` command: composition root and subcommands. COMMANDS below is the one table of
 * commands (name, one-line summary, usage, options, handler): `--help` is generated from it.
 *
 * Conventions: help on stdout, exit 0; usage errors exit 2 with a pointer to the command's
 * `--help`; runtime failures exit 1 with one line (src/startup.ts), never a stack trace.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { POLICY_NAMES } from '../tools/policy-names.ts';
import {
  loadConfig,
  portFrom,
  startupWarnings,
  TOOLSETS,
  type Config,
  type ConfigFlags,
  type LoadedConfig,
  type Secrets,
} from './config.ts';
import { policyNameProblems } from './governance/policy.ts';
import { createLogger, logLevelOf, type Logger } from './logger.ts';
import type { LoadedKeys, Runtime } from './runtime.ts';
import type { Store } from './store/store.ts';
import type { HttpHandler } from './transports/http.ts';
import type { WebhookEndpointOptions } from './webhooks/intake.ts';
import { checkServices, describeFailure, loadServeKeys, probeHttpPort, StartupError } from './startup.ts';
import { prepareDataDir } from './data-dir.ts';
import { UsageError } from './cli/usage.ts';
import { VERSION } from './version.ts';

/** The tools, loaded by the commands that use them (not before `serve` answers a client). */
const loadTools = async () => (await import('../tools/index.ts')).tools;

/**
 * Every option any command takes (parseArgs is strict: an unknown option is a usage error), with
 * the one line `--help` prints for it.
 */
const OPTIONS = {
  sandbox: { type: 'boolean' },
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  'read-only': { type: 'boolean' },
  toolsets: { type: 'string' },
  http: { type: 'boolean' },
  host: { type: 'string' },
  port: { type: 'string' },
  json: { type: 'boolean' },
  all: { type: 'boolean' },
  limit: { type: 'string' },
  as: { type: 'string' },
  reason: { type: 'string' },
  file: { type: 'string' },
  'public-key': { type: 'string', multiple: true },
  witness: { type: 'string' },
  out: { type: 'string' },
  since: { type: 'string' },
  format: { type: 'string' },
  write: { type: 'boolean' },
  check: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  once: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

type OptionName = keyof typeof OPTIONS;

const OPTION_HELP: Record<OptionName, string> = {
  sandbox: 'use the built-in emulators of Sift, Segment and Salesforce even if credentials are set',
  config: 'FILE  JSON configuration file (also FRAUDGATE_CONFIG)',
  'data-dir': 'DIR  where the database, audit log and keys live (also FRAUDGATE_DATA_DIR)',
  'read-only': 'expose read tools only (also FRAUDGATE_READ_ONLY)',
  toolsets:
    'LIST  comma-separated toolsets to expose: sift,segment,salesforce,triage (core, the approval and undo tools, is always exposed)',
  http: 'serve Streamable HTTP (with the approval console) instead of stdio',
  host: 'HOST  HTTP listen address (default 127.0.0.1; also FRAUDGATE_HTTP_HOST)',
  port: 'PORT  HTTP port (default 8787, 0 = any free port; also FRAUDGATE_HTTP_PORT)',
  json: 'print JSON instead of text',
  all: 'include finished items, not only the ones needing attention',
  limit: 'N  list at most N (default 500), newest first',
  as: 'NAME  no longer accepted: the actor is who FRAUDGATE_APPROVER_TOKEN authenticates',
  reason: 'TEXT  why (recorded in the audit log)',
  file: 'PATH  the file to read instead of the default',
  'public-key':
    'FILE  an Ed25519 public key (PEM) to trust for audit checkpoints; repeat it to trust each key of a rotation',
  witness: 'FILE  a witness taken by `audit witness`: fail if the ledger no longer reaches it',
  out: 'FILE  write to this file (whole, via a rename) instead of stdout',
  since: 'ISO-TIME  export from this time (each writer from its last checkpoint before it)',
  format: 'FORMAT  export format: jsonl (JSON Lines, the default)',
  write: 'rewrite the generated section in place',
  check: 'exit 1 when the generated section is out of date',
  'dry-run': 'show what would change, change nothing',
  once: 'do the work that is due, then exit',
  help: 'show help for fraudgate or a command',
  version: 'print the version',
};

/** Options every command accepts. */
const COMMON_OPTIONS: OptionName[] = ['config', 'data-dir', 'sandbox', 'help'];

interface Command {
  name: string;
  /** One line for `fraudgate --help`. */
  summary: string;
  /** Synopsis lines for `fraudgate <command> --help` (without the leading `fraudgate`). */
  usage: string[];
  /** Options beyond COMMON_OPTIONS. */
  options: OptionName[];
  /** Paragraphs printed after the options. */
  notes?: string[];
  run(args: string[], values: CliValues): Promise<number>;
}

const OPERATOR_CREDENTIAL =
  "Deciding approvals, mapping identities and retrying or dropping outbox effects need an approver's own credential (an API key or JWT the server accepts): FRAUDGATE_APPROVER_TOKEN, or a prompt on a terminal.";

/** The commands, in the order `fraudgate --help` lists them. */
const COMMANDS: Command[] = [
  {
    name: 'serve',
    summary:
      'run the MCP server (stdio; --http for Streamable HTTP with the approval console); the default command',
    usage: ['serve [--http [--host HOST] [--port PORT]] [--read-only] [--toolsets LIST]'],
    options: ['http', 'host', 'port', 'read-only', 'toolsets'],
    async run(_args, values) {
      await serve(configure(values, true), values.http === true);
      return -1; // keep running until stdin closes (stdio) or a signal (HTTP)
    },
  },
  {
    name: 'approvals',
    summary: 'list, show, approve or deny approvals of destructive calls',
    usage: [
      'approvals list [--all] [--json]',
      'approvals show ID [--json]',
      'approvals approve ID [--reason TEXT]',
      'approvals deny ID --reason TEXT',
    ],
    options: ['all', 'json', 'reason'],
    notes: [OPERATOR_CREDENTIAL],
    run: async (args, values) =>
      (await import('./cli/approvals.ts')).runApprovalsCommand(args, values, configure(values)),
  },
  {
    name: 'audit',
    summary: 'verify, export or witness the audit ledger',
    usage: [
      'audit verify [--file PATH] [--public-key FILE]... [--witness FILE]',
      'audit export [--since ISO-TIME] [--format jsonl]',
      'audit witness [--out FILE] [--public-key FILE]...',
    ],
    options: ['file', 'public-key', 'witness', 'out', 'since', 'format'],
    notes: [
      "verify checks every writer's hash chain against checkpoints signed by a trusted key (each --public-key given, so both keys across a rotation; else the public half of FRAUDGATE_AUDIT_SIGNING_KEY[_FILE]) and names the first bad record; --file reads an export or a legacy audit.jsonl instead of the store.",
      'witness prints the newest signed checkpoint of every writer as JSON: schedule it and ship the file off this host. verify --witness FILE then fails when a witnessed writer is gone, ends before the witnessed seq, or holds another record there (the store cut back or erased, which the store alone cannot show).',
    ],
    run: async (args, values) =>
      (await import('./cli/audit.ts')).runAuditCommand(args, values, configure(values)),
  },
  {
    name: 'data-key',
    summary:
      'data-key rotation: which key sealed the stored personal fields; reseal them under the current key',
    usage: ['data-key status [--json]', 'data-key reseal'],
    options: ['json'],
    notes: [
      'Rotating FRAUDGATE_DATA_KEY: set the old key as FRAUDGATE_DATA_KEY_PREVIOUS (read only) and the new one as FRAUDGATE_DATA_KEY on every replica, run reseal, and drop the previous key once status counts only the current key (exit 0).',
    ],
    run: async (args, values) =>
      (await import('./cli/data-key.ts')).runDataKeyCommand(args, values, configure(values)),
  },
  {
    name: 'identities',
    summary: 'map Sift user ids to Segment user ids; the identity review list',
    usage: [
      'identities map SIFT_ID SEGMENT_ID',
      'identities unmap SIFT_ID',
      'identities list [--json]',
      'identities unmatched [--json]',
    ],
    options: ['json'],
    notes: [OPERATOR_CREDENTIAL],
    run: async (args, values) =>
      (await import('./cli/identities.ts')).runIdentitiesCommand(args, values, configure(values)),
  },
  {
    name: 'outbox',
    summary: 'dead letters and waiting effects of decision webhooks; run the outbox worker',
    usage: [
      'outbox list [--all] [--limit N] [--json]',
      'outbox show ID [--json]',
      'outbox retry ID [--reason TEXT]',
      'outbox drop ID [--reason TEXT]',
      'outbox work [--once]',
    ],
    options: ['all', 'limit', 'json', 'reason', 'once'],
    notes: [
      OPERATOR_CREDENTIAL,
      'work --once runs the effects that are due now and exits, leaving those waiting out a backoff to a later run; it prints one line on stderr (done, deferred until when, failed) and exits 1 only when an effect failed for good (a dead letter). work needs the upstream APIs: in sandbox mode it is refused (exit 1), since serve --http runs the worker itself.',
    ],
    run: async (args, values) =>
      (await import('./cli/outbox.ts')).runOutboxCommand(args, values, configure(values, args[0] === 'work')),
  },
  {
    name: 'budgets',
    summary: 'blast-radius budgets: list paused budgets, lift a pause',
    usage: ['budgets list [--json]', 'budgets lift PRINCIPAL KEY'],
    options: ['json'],
    notes: [
      "Lifting a pause needs an approver's own credential (FRAUDGATE_APPROVER_TOKEN, or a prompt on a terminal) and is audited under it.",
    ],
    run: async (args, values) =>
      (await import('./cli/budgets.ts')).runBudgetsCommand(args, values, configure(values)),
  },
  {
    name: 'sync',
    summary:
      'scheduled jobs: Sift scores onto Salesforce accounts, Salesforce outcomes back to Sift, new Leads enriched',
    usage: ['sync scores [--dry-run]', 'sync feedback [--once]', 'sync leads [--once]'],
    options: ['dry-run', 'once'],
    run: async (args, values) =>
      (await import('./cli/sync.ts')).runSyncCommand(
        args,
        values,
        configure(values, true),
        await loadTools(),
      ),
  },
  {
    name: 'jobs',
    summary: 'background jobs of serve across the fleet: schedule, last and next run, last error, holder',
    usage: ['jobs [--json]'],
    options: ['json'],
    notes: [
      'Jobs run inside `fraudgate serve`, each on one replica at a time under a lease in the store; configure them under `jobs.<name>` (README "Background jobs").',
    ],
    run: async (args, values) =>
      (await import('./cli/jobs.ts')).runJobsCommand(args, values, configure(values)),
  },
  {
    name: 'sandbox',
    summary: 'the built-in emulators: what they hold for a user, or start them over from the demo data',
    usage: ['sandbox show USER_ID [--json]', 'sandbox reset'],
    options: ['json'],
    run: async (args, values) =>
      (await import('./cli/sandbox.ts')).runSandboxCommand(args, values, configure(values)),
  },
  {
    name: 'docs',
    summary: "regenerate or check the README's tool table (in a checkout)",
    usage: ['docs tools [--write | --check]'],
    options: ['write', 'check'],
    run: async (args, values) =>
      (await import('./cli/docs.ts')).runDocsCommand(args, values, await loadTools()),
  },
];

function optionLines(names: OptionName[]): string[] {
  // OPTION_HELP texts of options with a value start with the value's name: "FILE  JSON …", "ISO-TIME  …".
  const parts = (name: OptionName) => {
    const spec = OPTIONS[name] as { short?: string };
    const match = /^([A-Z][A-Z-]*) {2}(.*)$/.exec(OPTION_HELP[name]);
    const [arg, text] = match ? [match[1], match[2]] : ['', OPTION_HELP[name]];
    return { label: `${spec.short ? `-${spec.short}, ` : '    '}--${name}${arg ? ` ${arg}` : ''}`, text };
  };
  const width = Math.max(...names.map((n) => parts(n).label.length)) + 2;
  return names.map((n) => `  ${parts(n).label.padEnd(width)}${parts(n).text}`);
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    `fraudgate ${VERSION}: governed MCP access to Sift, Segment and Salesforce`,
    '',
    'Usage: fraudgate [command] [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    `  ${'help'.padEnd(width)}show this help, or a command's (fraudgate help COMMAND)`,
    '',
    'Options:',
    ...optionLines([...COMMON_OPTIONS, 'version']),
    '',
    'Run `fraudgate COMMAND --help` for its usage and options.',
  ].join('\n');
}

function commandHelp(command: Command): string {
  return [
    `fraudgate ${command.name}: ${command.summary}`,
    '',
    'Usage:',
    ...command.usage.map((u) => `  fraudgate ${u}`),
    '',
    'Options:',
    ...optionLines([...command.options, ...COMMON_OPTIONS]),
    ...(command.notes ?? []).flatMap((note) => ['', note]),
  ].join('\n');
}

export type CliValues = ReturnType<
  typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>
>['values'];

function configFlags(values: CliValues): ConfigFlags {
  return {
    configFile: values.config,
    sandbox: values.sandbox,
    dataDir: values['data-dir'],
    readOnly: values['read-only'],
    toolsets: values.toolsets === undefined ? undefined : toolsetsOf(values.toolsets),
    httpHost: values.host,
    httpPort: values.port === undefined ? undefined : portOf(values.port),
  };
}

/** `--toolsets`: names from TOOLSETS, comma-separated. */
function toolsetsOf(text: string): string[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  // No names is not "no filter": an empty list would replace a config's toolsets and expose them all.
  if (names.length === 0) {
    throw new UsageError([
      {
        field: '--toolsets',
        message: `no toolset given: name at least one of ${TOOLSETS.join(', ')}, comma-separated, or leave the flag out to use the config's`,
      },
    ]);
  }
  const unknown = names.filter((name) => !(TOOLSETS as readonly string[]).includes(name));
  if (unknown.length > 0) {
    throw new UsageError([
      {
        field: '--toolsets',
        message: `${unknown.map((n) => `'${n}'`).join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not one of ${TOOLSETS.join(', ')}: give a comma-separated list of them`,
      },
    ]);
  }
  return names;
}

/** `--port`: a whole number 1–65535, or 0 for any free port (as its help says). */
function portOf(text: string): number {
  const port = portFrom(text);
  if (port === undefined) {
    throw new UsageError([
      {
        field: '--port',
        message: `'${text}' is not a port: give a whole number from 1 to 65535, or 0 for any free port`,
      },
    ]);
  }
  return port;
}

/**
 * The resolved configuration, with its data directory created private (or one line saying why not).
 * `servesCalls`: the command takes tool calls, so its rate-limit store must be reachable as configured.
 */
function configure(values: CliValues, servesCalls = false): LoadedConfig {
  // Policy keys name tools, which the config schema does not know: checked before any command runs
  // (by their names alone: the tools themselves load only where a command uses them), and listed
  // with the schema's problems when there are some.
  const loaded = loadConfig({
    ...configFlags(values),
    servesCalls,
    problems: (config) => policyNameProblems(POLICY_NAMES, config),
  });
  prepareDataDir(loaded.config.data_dir);
  return loaded;
}

async function serve(loaded: LoadedConfig, http = false): Promise<void> {
  const logger = createLogger();
  // Keys a live deployment must be given are refused here, before any client is answered; what
  // opens afterwards uses these instead of loading them again.
  const keys = loadServeKeys(loaded.config, loaded.secrets);
  const { config: known } = loaded;
  process.stderr.write(
    known.mode === 'sandbox'
      ? `fraudgate: sandbox mode: Sift, Segment and Salesforce are built-in emulators with demo data (${loaded.modeReason}); data dir ${known.data_dir}\n`
      : `fraudgate: live mode (${loaded.modeReason}); data dir ${known.data_dir}\n`,
  );
  if (!known.analyst && !http) {
    process.stderr.write(
      'fraudgate: FRAUDGATE_ANALYST is not set: read tools work, write tools will refuse.\n',
    );
  }
  if (!http) {
    // stdio answers the handshake while the runtime opens; calls wait for it (src/transports/stdio.ts).
    const { serveStdio } = await import('./transports/stdio.ts');
    await serveStdio({
      analyst: loaded.config.analyst,
      logger,
      open: () => openServe(loaded, keys, logger, 'stdio'),
      onClosed: () => process.exit(0),
      refusalLogBudget: loaded.config.rate_limits.refusals,
    });
    return;
  }
  const { runtime, secrets, mounts, close } = await openServe(loaded, keys, logger, 'http');
  await serveHttp(runtime, secrets.devToken, close, mounts);
}

/**
 * What `serve` runs on either transport: the service checks, tracing, the sandbox's emulators (in
 * sandbox mode), the store, the runtime and the background jobs; over HTTP also the webhook
 * endpoints and the outbox worker. Everything here is imported when needed, not at start-up: a
 * stdio session answers `initialize` before any of it (npm run bench). `close()` stops it all.
 */
async function openServe(loaded: LoadedConfig, keys: LoadedKeys, logger: Logger, role: 'http' | 'stdio') {
  // A busy port is said as such before the replica id (by default host:port) is registered.
  if (role === 'http') await probeHttpPort(loaded.config.http);
  await checkServices(loaded.config, loaded.secrets);
  for (const warning of startupWarnings(loaded.config)) logger.warn(warning);
  // Traces only when an OTLP endpoint is configured; otherwise the SDK is never loaded.
  const { startTracing, tracingRequested } = await import('./tracing.ts');
  const tracing = tracingRequested() ? await startTracing() : undefined;
  const { config, secrets, sandbox } =
    loaded.config.mode === 'sandbox'
      ? await (await import('./sandbox/sandbox.ts')).resolveUpstreams(loaded.config, loaded.secrets)
      : { config: loaded.config, secrets: loaded.secrets, sandbox: undefined };
  if (sandbox) {
    process.stderr.write(
      `fraudgate: the sandbox keeps its data in the data dir across restarts (fraudgate sandbox reset starts it over)\n`,
    );
  } else if (config.mode === 'sandbox') {
    process.stderr.write(
      `fraudgate: using the sandbox of the fraudgate process already running on this data dir\n`,
    );
  }
  const [
    { openConfiguredStore, openRuntime, replicaIdFor },
    { isPidReplicaIdOf, registerReplica, replicaHeartbeat, takeOverDeadSiblings },
    tools,
  ] = await Promise.all([import('./runtime.ts'), import('./replica-registration.ts'), loadTools()]);
  // One store per process, shared by the MCP runtime and the automation worker.
  const store = await openConfiguredStore(config, secrets, logger, keys).catch(async (error: unknown) => {
    // Unreachable store: stop the emulators too, so the process exits instead of idling without listening.
    await sandbox?.close();
    throw error;
  });
  const replicaId = replicaIdFor(config, role);
  // Before any lease or claim under the id: refuses while another live process holds it.
  const registration = await registerReplica({
    store,
    replicaId,
    heartbeat: replicaHeartbeat(config),
    logger,
    onLost(message) {
      // At once, not through close(): closing would release job leases that are the new holder's now.
      logger.error(message, { replica_id: replicaId });
      process.exit(1);
    },
  }).catch(async (error: unknown) => {
    await store.close();
    await sandbox?.close();
    // The default id host:port: another `serve` started on this port at the same moment passed the
    // port probe too (neither had bound yet), so it looks like a twin rather than a busy port.
    if (
      error instanceof StartupError &&
      error.setting === 'FRAUDGATE_REPLICA_ID' &&
      role === 'http' &&
      !config.replica_id &&
      config.http.port !== 0
    ) {
      throw new StartupError(
        error.setting,
        `${error.message}; as this id is the default host:port, port ${config.http.port} may also be in use by ` +
          'another fraudgate serve started at the same moment: give each its own port (--port, FRAUDGATE_HTTP_PORT)',
        { cause: error },
      );
    }
    throw error;
  });
  // Claims under replicaId from before the registration are its predecessor's.
  const replicaStartedAt = registration.startedAt;
  const runtime = await openRuntime({
    config,
    secrets,
    tools,
    logger,
    store,
    keys,
    // An explicit replica id continues this replica's audit chain across restarts.
    ...(config.replica_id ? { auditWriter: config.replica_id } : {}),
    replicaId,
    replicaStartedAt,
  });
  // What the previous process under this replica id died executing is settled now, not on the first
  // approval sweep this replica happens to run (it may not hold that job's lease for a long time).
  const closing = new AbortController();
  const recovery = (async () => {
    await runtime.pipeline.recoverInterrupted();
    // Without FRAUDGATE_REPLICA_ID a stdio (or --port 0) server's id carries its pid, so no restart
    // comes back under it: what this host's dead ones left executing is settled here instead, once
    // their processes are provably gone (live ones sharing the data dir, even paused, are left alone).
    if (config.replica_id) return;
    const host = hostname();
    const dead = await takeOverDeadSiblings({
      store,
      siblings: (id) => id !== replicaId && isPidReplicaIdOf(host, id),
      logger,
      signal: closing.signal,
    });
    if (dead.replicaIds.length === 0) return;
    try {
      await runtime.pipeline.recoverInterrupted(dead.replicaIds);
    } finally {
      await dead.release();
    }
  })().catch((error: unknown) =>
    // An approval's error may quote its arguments: the redacting logger.
    runtime.logger.error('recovering interrupted approvals failed', { error: String(error) }),
  );
  // Background jobs (approval sweep, lifecycle feedback, score sync, retention), each on one replica of the fleet at a time.
  const jobs = await startServeJobs(runtime, replicaId);
  // Everything is loaded now: the code V8 compiled is kept for the next start (bin/fraudgate.js
  // enables the cache) even if this process is killed rather than closed.
  (await import('node:module')).flushCompileCache();
  const webhooks =
    role === 'http'
      ? await openWebhooks({
          config,
          secrets,
          runtime,
          store,
          keys,
          owner: replicaId,
          replicaStartedAt,
        })
      : undefined;
  return {
    secrets,
    runtime,
    /** The webhook endpoints to mount beside MCP (HTTP only). */
    mounts: webhooks?.mounts ?? [],
    /**
     * The jobs stop first (no new work), then the webhook intake drains and the outbox worker
     * stops, while the runtime and the store they write through are still open; the store closes
     * after every user of it, and the emulators and tracing last.
     */
    async close() {
      await jobs.close();
      closing.abort(); // a takeover of dead siblings' rows still going takes no further row
      await recovery;
      await webhooks?.close();
      await runtime.close();
      await registration.close();
      await store.close();
      await sandbox?.close();
      await tracing?.shutdown();
    },
  };
}

/**
 * The webhook side of `serve --http`: decision webhooks land in the outbox, and this process also
 * runs the worker (more can run with `outbox work`). One store and one ledger writer per process:
 * the automation side shares the MCP side's. `close()` drains the intake, then stops the worker.
 */
async function openWebhooks(options: {
  config: Config;
  secrets: Secrets;
  runtime: Runtime;
  store: Store;
  keys: LoadedKeys;
  owner: string;
  replicaStartedAt: Date;
}): Promise<{ mounts: HttpHandler[]; close(): Promise<void> }> {
  const { config, secrets, runtime, store, keys, owner, replicaStartedAt } = options;
  // The runtime's logger, not the process's raw one: the webhook handlers and the outbox worker log
  // error texts (a failed enqueue, a routing or vendor error) that may carry an email or an IP, and
  // the runtime's passes every field through the audit redactor first.
  const logger = runtime.logger;
  const [
    { openAutomation },
    { createSiftWebhookHandler },
    { createSegmentWebhookHandler },
    { siftUserResolver },
    { openWebhookIntakeStore },
    { createWebhookRefusals },
  ] = await Promise.all([
    import('./outbox/automation.ts'),
    import('./webhooks/sift-webhook.ts'),
    import('./webhooks/segment-webhook.ts'),
    import('./webhooks/segment-mapping.ts'),
    import('./webhooks/intake-writer.ts'),
    import('./webhooks/webhook-refusals.ts'),
  ]);
  const automation = await openAutomation({
    config,
    secrets,
    tools: runtime.tools,
    logger,
    store,
    audit: runtime.audit,
    keys,
    owner,
    replicaStartedAt,
  });
  automation.worker.start();
  // Webhooks and their receipt records commit off the event loop (a writer thread on SQLite).
  const intake = openWebhookIntakeStore({
    config,
    secrets,
    outbox: automation.store,
    audit: runtime.audit,
    keys,
  });
  // Rejected webhooks are audited within refusal budgets per client network and per endpoint, in the
  // MCP calls' limiter (shared by the replicas with rate_limits.store: redis), so no set of senders
  // can grow the ledger at will.
  const webhookRefusals = createWebhookRefusals({
    audit: runtime.audit,
    rateLimiter: runtime.rateLimiter,
    bucket: config.rate_limits.refusals,
    redactor: runtime.redactor,
    logger: runtime.logger,
  });
  // What both endpoints share; each adds where it stores and how it checks signatures.
  const endpoint: WebhookEndpointOptions = {
    audit: runtime.audit,
    logger,
    bodyLimitBytes: config.http.body_limit_bytes,
    refusals: webhookRefusals,
    trustedProxies: config.http.trusted_proxies,
    onEnqueued: () => automation.worker.wake(),
  };
  const webhook = createSiftWebhookHandler({
    ...endpoint,
    outbox: intake,
    keys: secrets.siftWebhookKeys ?? [],
  });
  // Segment events (Webhooks destination) become send_sift_event effects in the same outbox.
  const segmentWebhook = createSegmentWebhookHandler({
    ...endpoint,
    // Through the intake too: on SQLite a delivery of thousands of messages commits on its thread.
    store: (deliveries, also) => intake.enqueueRoutedMany(deliveries, Date.now(), also),
    secret: secrets.segmentWebhookSecret,
    mapping: config.mapping,
    siftUsersFor: siftUserResolver((ids) => runtime.identities.mappingsForSegmentUsers(ids), config.identity),
    origin: runtime.segmentOrigin,
  });
  return {
    mounts: [webhook, segmentWebhook],
    async close() {
      await intake.close();
      // The counts past the budget are written while the ledger is still open.
      await webhookRefusals
        .flush()
        .catch((error: unknown) =>
          logger.error('audit write failed', { event: 'refusals_counted', error: String(error) }),
        );
      await automation.close();
    },
  };
}

/** The job runner of `serve`, with every configured job registered and ticking. */
async function startServeJobs(runtime: Runtime, replicaId: string) {
  const [{ createJobRunner }, { registerServeJobs }] = await Promise.all([
    import('./jobs/job-runner.ts'),
    import('./jobs/serve-jobs.ts'),
  ]);
  const runner = createJobRunner({
    store: runtime.store,
    replicaId,
    logger: runtime.logger,
    leaseTtlMs: runtime.config.jobs.lease_ttl_ms,
    // Stored errors are shown by `fraudgate jobs`: personal data in them is masked like the audit's.
    redact: (text) => String(runtime.redactor.redactValue(text)),
  });
  registerServeJobs(runner, runtime, runtime.tools);
  runner.start();
  return runner;
}

/**
 * `serve --http`: prints (on stderr) the MCP URL, in sandbox mode a development token, the console
 * URL and an MCP Inspector one-liner. The dev token exists only in sandbox mode; live mode accepts
 * only configured API keys and JWTs.
 */
async function serveHttp(
  runtime: Runtime,
  envDevToken: string | undefined,
  onClose: () => Promise<void>,
  mounts: HttpHandler[] = [],
): Promise<void> {
  const [
    { startHttpServer },
    { createConsoleHandler },
    { SANDBOX_PERSONAS, sandboxPersonaToken },
    { sandboxDevToken },
  ] = await Promise.all([
    import('./transports/http.ts'),
    import('./console/console.ts'),
    import('./auth/authenticator.ts'),
    import('./sandbox/sandbox.ts'),
  ]);
  const sandbox = runtime.config.mode === 'sandbox';
  // The sandbox's token is kept in the data dir, so clients configured with it survive a restart.
  const devToken = sandbox ? sandboxDevToken(runtime.config.data_dir, envDevToken) : undefined;
  const handle = await startHttpServer(runtime, {
    ...(devToken ? { devToken } : {}),
    extraHandlers: ({ authenticator, allowedOrigins }) => [
      ...mounts,
      createConsoleHandler({
        runtime,
        authenticate: authenticator,
        allowedOrigins,
        secureCookies: runtime.config.http.public_url?.startsWith('https:') ?? false,
        trustedProxies: runtime.config.http.trusted_proxies,
      }),
    ],
  });
  const base = handle.mcpUrl.replace(/\/mcp$/, '');
  const lines = [
    `fraudgate: MCP endpoint (Streamable HTTP): ${handle.mcpUrl}`,
    devToken
      ? `fraudgate: development token (sandbox only, role admin): ${devToken}`
      : 'fraudgate: clients need a configured API key or a JWT from the identity provider (auth.key_hashes / auth.jwt)',
    ...(devToken
      ? SANDBOX_PERSONAS.map(
          (p) => `fraudgate: sandbox ${p.role} ${p.id}: token ${sandboxPersonaToken(devToken, p)}`,
        )
      : []),
    `fraudgate: approval console: ${base}/console`,
    `fraudgate: try it: ${inspectorCommand(handle.mcpUrl, devToken ?? '<token>', inspectorBinDir())}`,
  ];
  process.stderr.write(lines.join('\n') + '\n');
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void handle
      .close()
      .then(onClose)
      .finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * Where a checkout's MCP Inspector is (`node_modules/.bin` of the package root `root`, which holds
 * it as a devDependency), or undefined outside a checkout (`npm install -g fraudgate` installs no
 * devDependencies). `root` defaults to this package's: src/cli.ts in a checkout, dist/src/cli.js built.
 */
export function inspectorBinDir(
  root = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '..' : '../..', import.meta.url)),
): string | undefined {
  const bin = join(root, 'node_modules', '.bin');
  return existsSync(join(bin, 'mcp-inspector')) ? bin : undefined;
}

/** The MCP Inspector command line that lists the tools: a checkout's own Inspector, else npx's. */
export function inspectorCommand(mcpUrl: string, token: string, binDir: string | undefined): string {
  const args = `--cli ${mcpUrl} --transport http --header "Authorization: Bearer ${token}" --method tools/list`;
  // The Inspector needs Node >= 22.19: a checkout's pinned Node in node_modules/.bin goes first on PATH.
  return binDir
    ? `PATH="${binDir}:$PATH" mcp-inspector ${args}`
    : `npx @modelcontextprotocol/inspector ${args}`;
}

/** The command a command line names, found leniently (for pointing a malformed one at its help). */
function commandNamed(argv: string[]): Command | undefined {
  const { positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false });
  const name = positionals[0] === 'help' ? positionals[1] : positionals[0];
  return COMMANDS.find((c) => c.name === name);
}

/** Run one command line; resolves to the exit code (-1: a server that keeps the process alive). */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    // parseArgs' own wording, minus its advice about `--` (which never applies here).
    const reason = (error as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    const command = commandNamed(argv);
    process.stderr.write(
      command
        ? `fraudgate: ${reason}\nRun \`fraudgate ${command.name} --help\` for its options.\n`
        : `fraudgate: ${reason}\nRun \`fraudgate --help\` for the commands and options.\n`,
    );
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(VERSION + '\n');
    return 0;
  }
  let [name = 'serve', ...rest] = positionals;
  let help = values.help === true;
  if (name === 'help') {
    help = true;
    name = rest[0] ?? '';
    rest = [];
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (help) {
    if (!command && name !== '') {
      process.stderr.write(
        `fraudgate: unknown command '${name}'\nRun \`fraudgate --help\` for the commands.\n`,
      );
      return 2;
    }
    process.stdout.write((command && positionals.length > 0 ? commandHelp(command) : mainHelp()) + '\n');
    return 0;
  }
  if (!command) {
    process.stderr.write(
      `fraudgate: unknown command '${name}'\nRun \`fraudgate --help\` for the commands.\n`,
    );
    return 2;
  }
  if (values.as !== undefined) {
    // A name typed on the command line proves nothing; refuse it loudly rather than ignore it.
    process.stderr.write(
      'fraudgate: --as is no longer accepted: the actor is whoever FRAUDGATE_APPROVER_TOKEN (or the terminal prompt) authenticates; remove --as and set your own approver token.\n',
    );
    return 2;
  }
  const unexpected = Object.keys(values).filter(
    (key) => ![...command.options, ...COMMON_OPTIONS].includes(key as OptionName),
  );
  if (unexpected.length > 0) {
    process.stderr.write(
      `fraudgate: ${command.name} does not take ${unexpected.map((k) => `--${k}`).join(', ')}\n` +
        `Run \`fraudgate ${command.name} --help\` for its options.\n`,
    );
    return 2;
  }
  try {
    return await command.run(rest, values);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(
        `fraudgate: ${error.message}\nRun \`fraudgate ${command.name} --help\` for its usage.\n`,
      );
      return 2;
    }
    const line = describeFailure(error);
    if (line === undefined) throw error;
    process.stderr.write(`fraudgate: ${line}\n`);
    return 1;
  }
}

/** Run the CLI with this process's arguments and set the exit code. */
export function runCli(): void {
  // Everything this process writes (database, WAL, audit log, keys, sandbox state) is private.
  process.umask(0o077);
  main(process.argv.slice(2)).then(
    (code) => {
      // A failure exits at once: a half-started server (sandbox emulators, sweeps) must not linger.
      if (code > 0) process.exit(code);
      if (code === 0) process.exitCode = 0;
    },
    (error: unknown) => {
      // A bug: one line for the operator; the stack only when asked for (FRAUDGATE_LOG_LEVEL=debug).
      const debug = logLevelOf(process.env.FRAUDGATE_LOG_LEVEL) === 'debug';
      const detail =
        error instanceof Error ? (debug ? (error.stack ?? error.message) : error.message) : String(error);
      process.stderr.write(
        `fraudgate: internal error: ${detail}${debug ? '' : ' (FRAUDGATE_LOG_LEVEL=debug shows where)'}\n`,
      );
      // Whatever was started (emulators, sweeps, servers) must not keep a failed process alive.
      process.exit(1);
    },
  );
}

if (import.meta.main) runCli();
