/**
 * The sandbox: all three emulators started together with their demo data, plus the client
 * settings that point the real clients at them. Used by `fraudgate serve` when no credentials are
 * configured (or with --sandbox), by the tests and by the benchmarks.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import type { Config, Secrets } from '../config.ts';
import { InvalidInputError } from '../errors.ts';
import type { EmulatorState } from './emulator-http.ts';
import { startSalesforceEmulator, type SalesforceEmulator } from './salesforce-emulator.ts';
import { startSegmentEmulator, type SegmentEmulator } from './segment-emulator.ts';
import { startSiftEmulator, type SiftEmulator } from './sift-emulator.ts';

export interface Sandbox {
  sift: SiftEmulator;
  segment: SegmentEmulator;
  salesforce: SalesforceEmulator;
  /** Config overrides that point every client at the emulators. */
  config: Pick<Config, 'sift' | 'segment' | 'salesforce'>;
  /** The emulators' credentials, in the shape live mode reads from the environment. */
  secrets: Secrets;
  close(): Promise<void>;
}

export async function startSandbox(
  base: Pick<Config, 'sift' | 'segment' | 'salesforce'>,
  options: { seed?: boolean } = {},
): Promise<Sandbox> {
  const [sift, segment, salesforce] = await Promise.all([
    startSiftEmulator({ seed: options.seed ?? true }),
    startSegmentEmulator({ seed: options.seed ?? true }),
    startSalesforceEmulator({ seed: options.seed ?? true }),
  ]);
  return {
    sift,
    segment,
    salesforce,
    config: {
      sift: { ...base.sift, base_url: sift.url, account_id: sift.accountId },
      segment: {
        ...base.segment,
        host: segment.url,
        profile_base_url: segment.url,
        space_id: segment.spaceId,
      },
      salesforce: { ...base.salesforce, login_url: salesforce.url, auth_flow: 'client_credentials' },
    },
    secrets: {
      siftApiKey: sift.apiKey,
      segmentWriteKey: segment.writeKey,
      segmentProfileToken: segment.profileToken,
      salesforceClientId: salesforce.credentials.clientId,
      salesforceClientSecret: salesforce.credentials.clientSecret,
    },
    async close() {
      await Promise.all([sift.close(), segment.close(), salesforce.close()]);
    },
  };
}

/** Files of the sandbox in the data directory (all 0600, like everything there). */
const STATE_FILE = 'sandbox-state.bin';
const ENDPOINTS_FILE = 'sandbox.json';
const DEV_TOKEN_FILE = 'sandbox-dev-token';

/** What a running sandbox publishes so other fraudgate processes on the data dir use it too. */
interface PublishedSandbox {
  pid: number;
  config: Sandbox['config'];
  secrets: Secrets;
}

function writePrivate(path: string, data: string | Buffer): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, path); // atomic: a reader never sees half a file
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), timeout: timeoutMs });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

/** The sandbox another live fraudgate process runs on this data dir, if any. */
async function runningSandbox(dataDir: string): Promise<PublishedSandbox | undefined> {
  let published: PublishedSandbox;
  try {
    published = JSON.parse(readFileSync(join(dataDir, ENDPOINTS_FILE), 'utf8')) as PublishedSandbox;
  } catch {
    return undefined;
  }
  if (published.pid === process.pid || !isAlive(published.pid)) return undefined;
  const urls = [
    published.config.sift.base_url,
    published.config.segment.host,
    published.config.salesforce.login_url,
  ];
  return (await Promise.all(urls.map((url) => answers(url)))).every(Boolean) ? published : undefined;
}

/**
 * Start the emulators with the data this data dir's sandbox had (demo data the first time), save
 * their data after every change (and on close), and publish their addresses so that other
 * fraudgate processes on the same data dir — a second server, `sync scores`, `sandbox show` —
 * use these emulators instead of starting their own.
 */
export async function startPersistentSandbox(
  base: Pick<Config, 'sift' | 'segment' | 'salesforce'>,
  dataDir: string,
): Promise<Sandbox> {
  const sandbox = await startSandbox(base);
  const emulators = { sift: sandbox.sift, segment: sandbox.segment, salesforce: sandbox.salesforce };
  const statePath = join(dataDir, STATE_FILE);
  if (existsSync(statePath)) {
    const saved = deserialize(readFileSync(statePath)) as Record<keyof typeof emulators, EmulatorState>;
    for (const [name, emulator] of Object.entries(emulators))
      emulator.importState(saved[name as keyof typeof emulators]);
  }
  const save = () =>
    writePrivate(
      statePath,
      serialize(Object.fromEntries(Object.entries(emulators).map(([name, e]) => [name, e.exportState()]))),
    );
  let pending: NodeJS.Timeout | undefined;
  const schedule = () => {
    // Coalesce a burst of writes into one save; close() saves whatever is still pending.
    pending ??= setTimeout(() => {
      pending = undefined;
      save();
    }, 50);
    pending.unref();
  };
  for (const emulator of Object.values(emulators)) emulator.onWrite(schedule);
  const endpointsPath = join(dataDir, ENDPOINTS_FILE);
  writePrivate(
    endpointsPath,
    JSON.stringify({
      pid: process.pid,
      config: sandbox.config,
      secrets: sandbox.secrets,
    } satisfies PublishedSandbox),
  );
  return {
    ...sandbox,
    async close() {
      if (pending) clearTimeout(pending);
      pending = undefined;
      save();
      try {
        const published = JSON.parse(readFileSync(endpointsPath, 'utf8')) as PublishedSandbox;
        if (published.pid === process.pid) rmSync(endpointsPath, { force: true });
      } catch {
        // already gone
      }
      await sandbox.close();
    },
  };
}

/** Forget the sandbox of this data dir: emulator data and the development token. Refused while in use. */
export async function resetSandbox(dataDir: string): Promise<void> {
  const running = await runningSandbox(dataDir);
  if (running) {
    throw new InvalidInputError(
      [
        {
          field: 'sandbox',
          message: `a fraudgate process (pid ${running.pid}) is using it; stop that process first`,
        },
      ],
      'Cannot reset the sandbox',
    );
  }
  for (const file of [STATE_FILE, ENDPOINTS_FILE, DEV_TOKEN_FILE])
    rmSync(join(dataDir, file), { force: true });
}

/** The sandbox's development token: FRAUDGATE_DEV_TOKEN, else one created once in the data dir. */
export function sandboxDevToken(dataDir: string, fromEnv: string | undefined): string {
  if (fromEnv) return fromEnv;
  const stored = storedSandboxDevToken(dataDir);
  if (stored) return stored;
  const token = randomBytes(24).toString('base64url');
  writePrivate(join(dataDir, DEV_TOKEN_FILE), token + '\n');
  return token;
}

/** The development token `serve --http` keeps in the data dir, if one has been created there. */
export function storedSandboxDevToken(dataDir: string): string | undefined {
  const path = join(dataDir, DEV_TOKEN_FILE);
  if (!existsSync(path)) return undefined;
  return readFileSync(path, 'utf8').trim() || undefined;
}

/**
 * The upstreams a command talks to. In sandbox mode: the emulators another fraudgate process on
 * this data dir already runs, else emulators started here from the data dir's saved sandbox (the
 * caller closes `sandbox`, which saves it). In live mode, the configuration as given.
 */
export async function resolveUpstreams(
  config: Config,
  secrets: Secrets,
): Promise<{ config: Config; secrets: Secrets; sandbox?: Sandbox }> {
  if (config.mode !== 'sandbox') return { config, secrets };
  const running = await runningSandbox(config.data_dir);
  if (running) {
    return { config: { ...config, ...running.config }, secrets: { ...secrets, ...running.secrets } };
  }
  const sandbox = await startPersistentSandbox(config, config.data_dir);
  return { config: { ...config, ...sandbox.config }, secrets: { ...secrets, ...sandbox.secrets }, sandbox };
}
