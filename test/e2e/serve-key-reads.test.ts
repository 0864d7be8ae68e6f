/**
 * `serve` loads the data key, the audit signing key and the audit key once per start: the start-up
 * check loads them, and the store, the runtimes (MCP and automation, whose cursor seal uses the
 * audit key too) and the webhook intake writer get them from it instead of reading them again.
 * Counted on the real binary, with a preload that counts reads of the three key files
 * (test/helpers/count-file-reads.ts).
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const PRELOAD = join(import.meta.dirname, '../helpers/count-file-reads.ts');
const home = mkdtempSync(join(tmpdir(), 'fraudgate-key-reads-'));

afterAll(() => rmSync(home, { recursive: true, force: true }));

/**
 * Runs `serve` (with `extraArgs`) on a data dir of its own until it has opened everything, stops
 * it, and returns how often it read each key file. Over HTTP it is stopped once it listens; over
 * stdio its input is closed at once, which opens the runtime, closes it again and exits.
 */
async function keyReadsOfServe(name: string, extraArgs: string[]) {
  const dataDir = join(home, name);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // Every key in a file, so each load is a read: the sandbox's data and audit keys, and a signing
  // key outside the data dir.
  const dataKeyFile = join(dataDir, 'data.key');
  writeFileSync(dataKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const auditKeyFile = join(dataDir, 'audit.key');
  writeFileSync(auditKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const signingKeyFile = join(home, `${name}-audit-signing.pem`);
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });

  const server = spawn(
    process.execPath,
    ['--import', PRELOAD, CLI, 'serve', '--sandbox', '--data-dir', dataDir, ...extraArgs],
    {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        FRAUDGATE_LOG_LEVEL: 'warn',
        FRAUDGATE_AUDIT_SIGNING_KEY_FILE: signingKeyFile,
        FRAUDGATE_TEST_COUNT_READS: [dataKeyFile, signingKeyFile, auditKeyFile].join(','),
      },
      stdio: ['pipe', 'ignore', 'pipe'],
    },
  );
  let log = '';
  server.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
  if (extraArgs.includes('--http')) {
    const mcpUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 30_000);
      server.stderr.on('data', () => {
        const match = /MCP endpoint \(Streamable HTTP\): (\S+)/.exec(log);
        if (!match?.[1]) return;
        clearTimeout(timer);
        resolve(match[1]);
      });
    });
    // An answer comes in a later turn of its event loop than the one that printed the URL, so by
    // then it listens for SIGTERM (which would otherwise kill it before it closes and reports).
    expect((await fetch(mcpUrl.replace(/\/mcp$/, '/healthz'))).status).toBe(200);
    server.kill('SIGTERM');
  } else {
    server.stdin.end();
  }
  expect(await exited).toBe(0);
  const counts = /file reads: (.*)/.exec(log)?.[1];
  if (!counts) throw new Error(`no read counts reported: ${log}`);
  const reads = JSON.parse(counts) as Record<string, number>;
  return { dataKey: reads[dataKeyFile], signingKey: reads[signingKeyFile], auditKey: reads[auditKeyFile] };
}

describe('serve reads each key once', () => {
  it('over HTTP (MCP runtime, automation runtime and webhook intake)', async () => {
    expect(await keyReadsOfServe('http', ['--http', '--port', '0'])).toEqual({
      dataKey: 1,
      signingKey: 1,
      auditKey: 1,
    });
  }, 60_000);

  it('over stdio', async () => {
    expect(await keyReadsOfServe('stdio', [])).toEqual({ dataKey: 1, signingKey: 1, auditKey: 1 });
  }, 60_000);
});
