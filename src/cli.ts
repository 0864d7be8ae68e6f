#!/usr/bin/env node
/**
 * The `fraudgate` command: composition root and subcommands.
 *
 *   fraudgate [serve] [--sandbox] [--config FILE] [--data-dir DIR] [--read-only] [--toolsets a,b]
 *                     [--http [--host 127.0.0.1] [--port N]]
 *   fraudgate approvals list [--all] [--json] | show ID [--json] | approve ID [--reason TEXT]
 *                       | deny ID --reason TEXT
 *     (deciding, mapping identities and retrying/dropping outbox effects need an approver's credential:
 *      FRAUDGATE_APPROVER_TOKEN, or a prompt on a terminal)
 *   fraudgate audit verify [--file PATH] [--public-key FILE] | export [--since ISO-TIME] [--format jsonl]
 *   fraudgate docs tools [--write | --check]
 *   fraudgate identities map SIFT_ID SEGMENT_ID | unmap SIFT_ID | list | unmatched
 *   fraudgate outbox list [--all] [--json] | show ID | retry ID | drop ID | work [--once]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { tools } from '../tools/index.ts';
import { runApprovalsCommand } from './cli/approvals.ts';
import { runAuditCommand } from './cli/audit.ts';
import { runDocsCommand } from './cli/docs.ts';
import { runIdentitiesCommand } from './cli/identities.ts';
import { loadConfig, type ConfigFlags, type LoadedConfig } from './config.ts';
import { FraudgateError } from './errors.ts';
import { checkPolicyNames } from './governance/policy.ts';
import { createLogger } from './logger.ts';
import { openRuntime, type Runtime } from './runtime.ts';
import { resolveUpstreams } from './sandbox/sandbox.ts';
import { runSyncCommand } from './cli/sync.ts';
import { runOutboxCommand } from './cli/outbox.ts';
import { openAutomation } from './outbox/automation.ts';
import { createSiftWebhookHandler } from './webhooks/sift-webhook.ts';
import { SANDBOX_PERSONAS, sandboxPersonaToken } from './auth/authenticator.ts';
import { createConsoleHandler } from './console/console.ts';
import { startHttpServer, type HttpHandler } from './transports/http.ts';
import { serveStdio } from './transports/stdio.ts';

const USAGE = `Usage:
  fraudgate [serve] [--sandbox] [--config FILE] [--data-dir DIR] [--read-only] [--toolsets sift,segment,...]
                  [--http [--host 127.0.0.1] [--port 8787]]
  fraudgate approvals list [--all] [--json]
  fraudgate approvals show ID [--json]
  fraudgate approvals approve ID [--reason TEXT]
  fraudgate approvals deny ID --reason TEXT
  fraudgate audit verify [--file PATH] [--public-key FILE]
  fraudgate audit export [--since ISO-TIME] [--format jsonl]
  fraudgate docs tools [--write | --check]
  fraudgate sync scores [--dry-run]
  fraudgate sync feedback [--once]
  fraudgate identities map SIFT_ID SEGMENT_ID | unmap SIFT_ID | list [--json] | unmatched [--json]
  fraudgate outbox list [--all] [--json] | show ID [--json] | retry ID [--reason TEXT] | drop ID [--reason TEXT] | work [--once]
Deciding approvals, mapping identities and retrying or dropping outbox effects need an approver's own
credential (an API key or JWT the server accepts): FRAUDGATE_APPROVER_TOKEN, or a prompt on a terminal.`;

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
  as: { type: 'string' },
  reason: { type: 'string' },
  file: { type: 'string' },
  'public-key': { type: 'string' },
  since: { type: 'string' },
  format: { type: 'string' },
  write: { type: 'boolean' },
  check: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  once: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export type CliValues = ReturnType<
  typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>
>['values'];

function configFlags(values: CliValues): ConfigFlags {
  return {
    configFile: values.config,
    sandbox: values.sandbox,
    dataDir: values['data-dir'],
    readOnly: values['read-only'],
    toolsets: values.toolsets
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    httpHost: values.host,
    httpPort: values.port === undefined ? undefined : Number(values.port),
  };
}

async function serve(loaded: LoadedConfig, http = false): Promise<void> {
  const logger = createLogger();
  const { config, secrets, sandbox } = await resolveUpstreams(loaded.config, loaded.secrets);
  if (sandbox) {
    process.stderr.write(
      `fraudgate: sandbox mode: Sift, Segment and Salesforce are built-in emulators with demo data (${loaded.modeReason}); data dir ${config.data_dir}\n`,
    );
  } else {
    process.stderr.write(`fraudgate: live mode (${loaded.modeReason}); data dir ${config.data_dir}\n`);
  }
  if (!config.analyst && !http) {
    process.stderr.write(
      'fraudgate: FRAUDGATE_ANALYST is not set: read tools work, write tools will refuse.\n',
    );
  }
  const replicaId = process.env.FRAUDGATE_REPLICA_ID?.trim();
  const runtime = await openRuntime({
    config,
    secrets,
    tools,
    logger,
    ...(replicaId ? { auditWriter: replicaId } : {}),
  });
  runtime.startApprovalSweep();
  if (http) {
    // Decision webhooks land in the outbox; this process also runs the worker (more can run with `outbox work`).
    // One ledger writer per process: the automation side appends through the MCP side's.
    const automation = await openAutomation({ config, secrets, tools, logger, audit: runtime.audit });
    automation.worker.start();
    const webhook = createSiftWebhookHandler({
      outbox: automation.store,
      keys: secrets.siftWebhookKeys ?? [],
      audit: runtime.audit,
      logger,
      bodyLimitBytes: config.http.body_limit_bytes,
      onEnqueued: () => automation.worker.wake(),
    });
    await serveHttp(
      runtime,
      secrets.devToken,
      async () => {
        await automation.close();
        await runtime.close();
        await sandbox?.close();
      },
      [webhook],
    );
    return;
  }
  await serveStdio(runtime, async () => {
    await runtime.close();
    await sandbox?.close();
    process.exit(0);
  });
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
  const sandbox = runtime.config.mode === 'sandbox';
  const devToken = sandbox ? (envDevToken ?? randomBytes(24).toString('base64url')) : undefined;
  const handle = await startHttpServer(runtime, {
    ...(devToken ? { devToken } : {}),
    extraHandlers: ({ authenticator }) => [
      ...mounts,
      createConsoleHandler({
        runtime,
        authenticate: authenticator,
        secureCookies: runtime.config.http.public_url?.startsWith('https:') ?? false,
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
    // The Inspector needs Node >= 22.19: the pinned Node in node_modules/.bin goes first on PATH.
    `fraudgate: try it: PATH="$PWD/node_modules/.bin:$PATH" mcp-inspector --cli ${handle.mcpUrl} --transport http --header "Authorization: Bearer ${devToken ?? '<token>'}" --method tools/list`,
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

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    process.stderr.write(`fraudgate: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stderr.write(USAGE + '\n');
    return 0;
  }
  if (values.as !== undefined) {
    // A name typed on the command line proves nothing; refuse it loudly rather than ignore it.
    process.stderr.write(
      'fraudgate: --as is no longer accepted: the actor is whoever FRAUDGATE_APPROVER_TOKEN (or the terminal prompt) authenticates; remove --as and set your own approver token.\n',
    );
    return 2;
  }
  const [command = 'serve', ...rest] = positionals;
  try {
    if (command === 'docs') return await runDocsCommand(rest, values, tools);
    const loaded = loadConfig(configFlags(values));
    // Policy keys name tools, which the config schema does not know: checked here, before any command runs.
    checkPolicyNames(tools, loaded.config);
    switch (command) {
      case 'serve':
        await serve(loaded, values.http === true);
        return -1; // keep running until stdin closes (stdio) or a signal (HTTP)
      case 'approvals':
        return await runApprovalsCommand(rest, values, loaded);
      case 'audit':
        return await runAuditCommand(rest, values, loaded);
      case 'identities':
        return await runIdentitiesCommand(rest, values, loaded);
      case 'outbox':
        return await runOutboxCommand(rest, values, loaded);
      case 'sync':
        return await runSyncCommand(rest, values, loaded, tools);
      default:
        process.stderr.write(`fraudgate: unknown command '${command}'\n${USAGE}\n`);
        return 2;
    }
  } catch (error) {
    if (error instanceof FraudgateError) {
      process.stderr.write(`fraudgate: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** Run the CLI with this process's arguments and set the exit code. */
export function runCli(): void {
  main(process.argv.slice(2)).then(
    (code) => {
      if (code >= 0) process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(
        `fraudgate: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exitCode = 1;
    },
  );
}

if (import.meta.main) runCli();
