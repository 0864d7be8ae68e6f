/**
 * A fleet of `fraudgate serve --http` processes for the end-to-end replica tests: each replica its
 * own data dir, all on one PostgreSQL schema (random per test file, dropped at the end) and one
 * Redis, in live mode against emulators the test started (so every replica hits the same Sift,
 * Segment and Salesforce). A replica can be SIGKILLed and started again under the same replica id
 * and data dir, as an orchestrator restarts a crashed pod.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Sandbox } from '../../src/sandbox/sandbox.ts';
import { listening } from './services.ts';

export const CLI = join(import.meta.dirname, '../../src/cli.ts');
export const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.FRAUDGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Whether PostgreSQL and Redis are both up; if not, says on stderr that `test` is skipped. */
export async function fleetServicesAvailable(test: string): Promise<boolean> {
  const available = (await listening(5432)) && (await listening(6379));
  if (!available) {
    process.stderr.write(
      `${test}: skipped: needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379\n`,
    );
  }
  return available;
}

/** The end of a process's stderr, from the crash report if there is one (log lines come before it). */
function lastWords(stderr: string): string {
  const crash = stderr.lastIndexOf('\nnode:');
  return crash >= 0 ? stderr.slice(crash, crash + 6000) : stderr.slice(-4000);
}

/**
 * Poll `check` until it holds or `timeoutMs` passes: a bounded wait for a state, not a timing
 * assertion. A check that throws (a replica refusing while the database is away) counts as not yet.
 */
export async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  pauseMs = 100,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return true;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  return check();
}

/**
 * Deliver a Sift decision webhook like Sift: signed (sha256) with `key`, and delivered again until
 * acknowledged (a dead replica behind the proxy answers 502, one without its database 503).
 * Returns every status seen and the acknowledgement's `status` (accepted | duplicate).
 */
export async function deliverSiftWebhook(
  baseUrl: string,
  key: string,
  body: string,
): Promise<{ statuses: number[]; status: string }> {
  const signature = `sha256=${createHmac('sha256', key).update(body).digest('hex')}`;
  const statuses: number[] = [];
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const res = await fetch(`${baseUrl}/webhooks/sift`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-sift-science-signature': signature },
      body,
    }).catch(() => undefined);
    statuses.push(res?.status ?? 0);
    const text = (await res?.text()) ?? '';
    if (res?.status === 200) return { statuses, status: (JSON.parse(text) as { status: string }).status };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`webhook never acknowledged (answers ${statuses.join(' ')}): ${body}`);
}

export interface ReplicaProcess {
  name: string;
  child: ChildProcess;
  /** Base URL (no path): `${url}/mcp`, `${url}/readyz`, `${url}/webhooks/sift`. */
  url: string;
  env: NodeJS.ProcessEnv;
  stderr: () => string;
  /** Resolves with the exit code or signal once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface Fleet {
  root: string;
  schema: string;
  /** Start (or start again, same id and data dir) the replica `name`; resolves once it listens. */
  start(name: string): Promise<ReplicaProcess>;
  /** SIGKILL: no shutdown hooks, leases and connections left as they are. */
  kill(replica: ReplicaProcess): Promise<void>;
  /** A `fraudgate` command with the replica's environment (e.g. `audit verify`, `outbox list`). */
  cli(replica: ReplicaProcess, args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** A client on the fleet's schema (closed by `close`). */
  sql(): Promise<pg.Client>;
  /** SIGTERM every replica still running, drop the schema, remove the data dirs. */
  close(): Promise<void>;
}

export interface FleetOptions {
  sandbox: Sandbox;
  /** Schema and temp dir prefix, e.g. `fg_kill`. */
  prefix: string;
  /** The config file every replica reads (`store`, `store_postgres` and `rate_limits.store` are set here). */
  config: Record<string, unknown>;
  /** Extra environment for every replica (e.g. SIFT_WEBHOOK_KEYS). */
  env?: Record<string, string>;
}

export function createFleet(options: FleetOptions): Fleet {
  const { sandbox } = options;
  const schema = `${options.prefix}_${process.pid}_${randomBytes(3).toString('hex')}`;
  const root = mkdtempSync(join(tmpdir(), `fraudgate-${options.prefix}-`));
  // Shared by every replica: the audit key, the checkpoint signing key and the data key.
  const dataKey = randomBytes(32).toString('hex');
  const signingKey = generateKeyPairSync('ed25519')
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
  writeFileSync(
    join(root, 'fraudgate.json'),
    JSON.stringify({
      ...options.config,
      store: 'postgres',
      store_postgres: { schema },
      rate_limits: { ...(options.config.rate_limits as object | undefined), store: 'redis' },
    }),
  );
  const running = new Set<ReplicaProcess>();
  const stopping = new Set<ReplicaProcess>();
  const clients: pg.Client[] = [];

  const envFor = (name: string): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '',
    HOME: root,
    FRAUDGATE_CONFIG: join(root, 'fraudgate.json'),
    FRAUDGATE_DATA_DIR: join(root, name),
    FRAUDGATE_REPLICA_ID: name,
    FRAUDGATE_POSTGRES_URL: PG_URL,
    FRAUDGATE_REDIS_URL: REDIS_URL,
    FRAUDGATE_AUDIT_KEY: 'e2e-shared-audit-key-0123456789abcdef',
    FRAUDGATE_AUDIT_SIGNING_KEY: signingKey,
    // Personal fields are encrypted at rest; every replica needs the same key.
    FRAUDGATE_DATA_KEY: dataKey,
    FRAUDGATE_LOG_LEVEL: 'warn',
    // Live mode, pointed at the emulators the test started: every replica reaches the same upstreams.
    SIFT_API_KEY: sandbox.secrets.siftApiKey,
    SIFT_ACCOUNT_ID: sandbox.config.sift.account_id,
    SIFT_BASE_URL: sandbox.config.sift.base_url,
    SEGMENT_WRITE_KEY: sandbox.secrets.segmentWriteKey,
    SEGMENT_PROFILE_TOKEN: sandbox.secrets.segmentProfileToken,
    SEGMENT_SPACE_ID: sandbox.config.segment.space_id,
    SEGMENT_HOST: sandbox.config.segment.host,
    SEGMENT_PROFILE_BASE_URL: sandbox.config.segment.profile_base_url,
    SALESFORCE_CLIENT_ID: sandbox.secrets.salesforceClientId,
    SALESFORCE_CLIENT_SECRET: sandbox.secrets.salesforceClientSecret,
    SALESFORCE_LOGIN_URL: sandbox.config.salesforce.login_url,
    ...options.env,
  });

  const stopped = (replica: ReplicaProcess, signal: NodeJS.Signals) => {
    stopping.add(replica);
    if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill(signal);
    return replica.exited.then(() => undefined);
  };

  return {
    root,
    schema,
    start(name) {
      const env = envFor(name);
      const child = spawn(process.execPath, [CLI, 'serve', '--http', '--port', '0'], {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('exit', (code, signal) => resolve({ code, signal })),
      );
      let stderr = '';
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${stderr}`)), 60_000);
        child.stderr!.on('data', (chunk: Buffer) => {
          const first = !/MCP endpoint/.test(stderr);
          stderr += chunk.toString();
          const match = /MCP endpoint \(Streamable HTTP\): (http:\/\/\S+)\/mcp/.exec(stderr);
          if (match && first) {
            clearTimeout(timer);
            const replica: ReplicaProcess = {
              name,
              child,
              url: match[1]!,
              env,
              stderr: () => stderr,
              exited,
            };
            running.add(replica);
            void exited.then(({ code, signal }) => {
              running.delete(replica);
              // An exit nobody asked for is what the test is about: show why.
              if (!stopping.has(replica))
                process.stderr.write(`${name} exited (${code ?? signal}):\n${lastWords(stderr)}\n`);
            });
            resolve(replica);
          }
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`${name} exited with ${code ?? signal}:\n${stderr}`));
        });
      });
    },
    kill: (replica) => stopped(replica, 'SIGKILL'),
    cli: (replica, args) =>
      promisify(execFile)(process.execPath, [CLI, ...args], { env: replica.env }).then(
        (out) => ({ code: 0, ...out }),
        (error: { code: number; stdout: string; stderr: string }) => error,
      ),
    async sql() {
      const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
      await client.connect();
      clients.push(client);
      return client;
    },
    async close() {
      await Promise.all([...running].map((r) => stopped(r, 'SIGTERM')));
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
