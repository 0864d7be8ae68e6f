/**
 * Start-up and command failures as one line for the operator: what went wrong and which setting to
 * change. Whatever cannot start (a port in use, an unreachable PostgreSQL or Redis, a data
 * directory this user cannot write) ends here, so the CLI prints one line, exits 1 and leaves no
 * half-started process behind — never a stack trace.
 */
import type { Config, Secrets } from './config.ts';
import { FraudgateError } from './errors.ts';
import { loadAuditKey } from './governance/audit-key.ts';
import { loadConfiguredSigningKey } from './governance/audit-signing.ts';
import type { LoadedKeys } from './runtime.ts';
import { loadDataKey, loadPreviousDataKeys } from './store/field-crypto.ts';

/** A failure to start that names the setting to change (`setting` is the env var or flag). */
export class StartupError extends Error {
  readonly setting: string;
  constructor(setting: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
    this.setting = setting;
  }
}

interface SystemError extends Error {
  code?: string;
  syscall?: string;
  path?: string;
  address?: string;
  port?: number;
}

const UNWRITABLE = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR', 'ENOSPC']);

/** The one line to print for an error that ended a command, or undefined when it is a bug. */
export function describeFailure(error: unknown): string | undefined {
  if (error instanceof StartupError || error instanceof FraudgateError) return error.message;
  if (!(error instanceof Error)) return undefined;
  const e = error as SystemError;
  if (e.code === 'EADDRINUSE' && e.syscall === 'listen') {
    return `port ${e.port} on ${e.address} is already in use: choose another with --port or FRAUDGATE_HTTP_PORT (0 picks a free one), or stop the other process`;
  }
  if (e.code === 'EADDRNOTAVAIL' && e.syscall === 'listen') {
    return `cannot listen on ${e.address}: it is not an address of this machine; fix --host or FRAUDGATE_HTTP_HOST`;
  }
  if (e.code && e.path) {
    if (e.code === 'ENOENT') return `${e.path}: no such file or directory`;
    if (UNWRITABLE.has(e.code))
      return `${e.path}: ${e.code} (${e.syscall ?? 'access'} failed; check its permissions)`;
  }
  return undefined;
}

/** host:port of a connection URL, without user, password or database, for messages. */
function endpoint(url: string, defaultPort: number): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || defaultPort}`;
  } catch {
    return 'an invalid URL';
  }
}

function reason(error: unknown): string {
  const e = error as SystemError & { errors?: SystemError[] };
  return e.code ?? e.errors?.[0]?.code ?? (e.message || 'no answer');
}

/**
 * Before a server starts: the shared services the configuration names must answer, or start-up
 * stops with one line naming the setting. (At run time a lost Redis or PostgreSQL makes calls fail
 * closed instead; this only catches a deployment that could not work at all.) PostgreSQL is checked
 * by `openStore`, which retries for `store_postgres.startup_timeout_ms` before giving up the same way.
 */
export async function checkServices(
  config: Pick<Config, 'rate_limits'>,
  secrets: Pick<Secrets, 'redisUrl'>,
  timeoutMs = 5_000,
): Promise<void> {
  const checks: Promise<void>[] = [];
  // The drivers are loaded only when a check needs them: most commands and the sandbox use neither.
  if (config.rate_limits.store === 'redis' && secrets.redisUrl) {
    const url = secrets.redisUrl;
    checks.push(
      (async () => {
        const { Redis } = await import('ioredis');
        const redis = new Redis(url, {
          lazyConnect: true,
          connectTimeout: timeoutMs,
          // connectTimeout ends at the TCP handshake: a Redis that accepts and never answers (hung)
          // is bounded by these, or start-up would wait forever.
          commandTimeout: timeoutMs,
          socketTimeout: timeoutMs,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        let connectError: unknown; // ioredis reports the socket's error here, and only "closed" below
        redis.on('error', (error) => (connectError ??= error));
        try {
          await redis.connect();
          await redis.ping();
        } catch (error) {
          throw new StartupError(
            'FRAUDGATE_REDIS_URL',
            `Redis at ${endpoint(url, 6379)} does not answer (${reason(connectError ?? error)}): start it or fix FRAUDGATE_REDIS_URL (rate_limits.store is redis)`,
            { cause: error },
          );
        } finally {
          redis.disconnect();
        }
      })(),
    );
  }
  const results = await Promise.allSettled(checks);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Before `serve` answers any client: the keys the runtime will need are present and well formed —
 * FRAUDGATE_DATA_KEY (personal fields at rest) and the audit signing key, both required in live
 * mode. The runtime opens after stdio's handshake (src/transports/stdio.ts), so a deployment
 * missing one is refused here, with one line, rather than after `initialize` was answered. (In
 * sandbox mode both are created in the data directory, as the runtime would; so is the audit key,
 * in any mode without FRAUDGATE_AUDIT_KEY: a local file, nothing the handshake waits on.) The keys
 * loaded here are the ones everything `serve` opens uses: each is read once per start.
 */
export function loadServeKeys(
  config: Pick<Config, 'data_dir' | 'mode'>,
  secrets: Pick<
    Secrets,
    'dataKey' | 'dataKeyPrevious' | 'auditSigningKey' | 'auditSigningKeyFile' | 'auditKey'
  >,
): LoadedKeys {
  return {
    dataKey: loadDataKey(config, secrets),
    previousDataKeys: loadPreviousDataKeys(secrets),
    signingKey: loadConfiguredSigningKey(config, secrets),
    auditKey: loadAuditKey(config, secrets),
  };
}

/**
 * Before `serve --http` registers its replica id: the HTTP port can be bound. The default id is
 * host:port, so a second server on a busy port would otherwise find the first one's id live and
 * report a replica-id twin after watching its heartbeat; a busy port is the port's one-line error
 * (describeFailure), at once. The probe is closed again: the server binds the port itself later, so
 * two servers started on one port at the same moment both pass it; the twin refusal under the
 * default id then says the port may be in use (cli.ts openServe).
 */
export async function probeHttpPort(http: Pick<Config['http'], 'host' | 'port'>): Promise<void> {
  if (http.port === 0) return; // any free port: nothing to collide with
  const { createServer } = await import('node:net');
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host: http.host, port: http.port, exclusive: true }, () => resolve());
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}
