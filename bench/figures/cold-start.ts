/**
 * stdio cold start: spawn → the answer to the first `initialize`, for `fraudgate serve` (live mode,
 * its credentials pointing at the loopback emulators, so start-up does what it does in production)
 * against a bare SDK stdio server (bench/baselines/bare-stdio-server.js). Both run on the same
 * Node binary. fraudgate runs as the installed command does: bin/fraudgate.js beside the compiled
 * dist/ (built by `npm run build`; a package layout in a temporary directory, dist/ linked), so
 * with what the command enables (V8's compile cache: each spawn after the first — the harness's
 * warm-up — reuses the code compiled before, as every session after the first does for a user).
 * Without dist/ it runs the TypeScript sources (type stripping at load: slower); the `compiled`
 * extra says which ran. Each spawn ends as an MCP client ends a stdio session (stdin closed, then
 * its exit awaited), so no spawn overlaps the next. The `no_compile_cache_ms` extra is
 * fraudgate's start with the cache turned off (NODE_DISABLE_COMPILE_CACHE=1), for comparison.
 * The baseline gets the same cache (NODE_COMPILE_CACHE, a directory of its own): without it the
 * ratio would measure the cache, not fraudgate's start-up; its `no_compile_cache_ms` is reported too.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, type Figure } from '../harness.ts';
import { DEFAULTS } from '../../src/config.ts';
import { startSandbox } from '../../src/sandbox/sandbox.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const INITIALIZE =
  JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '0' } },
  }) + '\n';

/**
 * Milliseconds from spawn to the first line on stdout (the initialize answer). The session then
 * ends as the MCP spec has clients end one: stdin closed, the process given time to exit, then
 * SIGTERM; the promise settles once it has exited.
 */
function timeToInitialize(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let elapsed: number | undefined;
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (elapsed !== undefined || !out.includes('\n')) return;
      elapsed = performance.now() - start;
      child.stdin.end();
      setTimeout(() => child.kill(), 10_000).unref();
    });
    child.on('exit', (code) => {
      if (elapsed === undefined) reject(new Error(`exited (${code}) before answering: ${err.slice(0, 500)}`));
      else if (!out.includes('"result"')) reject(new Error(`unexpected answer: ${out.slice(0, 300)}`));
      else resolve(elapsed);
    });
    child.stdin.write(INITIALIZE);
  });
}

/**
 * The package as npm installs it: package.json, bin/fraudgate.js, dist/ (linked to this checkout's
 * build, whose imports resolve to this checkout's node_modules). The bin picks dist/ there because
 * there are no sources beside it.
 */
function installedLayout(dir: string): string {
  const pkg = join(dir, 'package');
  mkdirSync(join(pkg, 'bin'), { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  copyFileSync(join(ROOT, 'bin', 'fraudgate.js'), join(pkg, 'bin', 'fraudgate.js'));
  symlinkSync(join(ROOT, 'dist'), join(pkg, 'dist'));
  return join(pkg, 'bin', 'fraudgate.js');
}

export const coldStart: Figure = {
  id: 'cold_start_ms',
  title: 'cold start, stdio, to first `initialize`',
  unit: 'ms',
  better: 'lower',
  baseline: 'bare SDK stdio server',
  target: '≤ 1.3× baseline',
  met: (r) => r.ratio !== null && r.ratio <= 1.3,
  async open({ quick }) {
    const spawns = quick ? 3 : 5;
    const sandbox = await startSandbox(DEFAULTS);
    const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-cold-'));
    const compiled = existsSync(join(ROOT, 'dist', 'src', 'cli.js'));
    const packageDir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-package-'));
    const cli = compiled ? installedLayout(packageDir) : join(ROOT, 'bin', 'fraudgate.js');
    const s = sandbox.secrets;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: dataDir,
      FRAUDGATE_DATA_DIR: dataDir,
      FRAUDGATE_ANALYST: 'bench@example.com',
      FRAUDGATE_AUDIT_KEY: 'bench-audit-key',
      // Live mode encrypts personal fields at rest: a throwaway data key per run.
      FRAUDGATE_DATA_KEY: randomBytes(32).toString('hex'),
      // Live mode signs audit checkpoints; a throwaway key per run.
      FRAUDGATE_AUDIT_SIGNING_KEY: generateKeyPairSync('ed25519')
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString(),
      SIFT_API_KEY: s.siftApiKey,
      SIFT_ACCOUNT_ID: sandbox.config.sift.account_id,
      SIFT_BASE_URL: sandbox.config.sift.base_url,
      SEGMENT_WRITE_KEY: s.segmentWriteKey,
      SEGMENT_PROFILE_TOKEN: s.segmentProfileToken,
      SEGMENT_SPACE_ID: sandbox.config.segment.space_id,
      SEGMENT_HOST: sandbox.config.segment.host,
      SEGMENT_PROFILE_BASE_URL: sandbox.config.segment.profile_base_url,
      SALESFORCE_CLIENT_ID: s.salesforceClientId,
      SALESFORCE_CLIENT_SECRET: s.salesforceClientSecret,
      SALESFORCE_LOGIN_URL: sandbox.config.salesforce.login_url,
    };
    const times = async (args: string[], spawnEnv: NodeJS.ProcessEnv) => {
      const ms: number[] = [];
      const withoutCache: number[] = [];
      for (let i = 0; i < spawns; i += 1) {
        ms.push(await timeToInitialize(args, spawnEnv));
        // Beside it, the same start with the compile cache off: about what the first start after an
        // install costs.
        withoutCache.push(await timeToInitialize(args, { ...spawnEnv, NODE_DISABLE_COMPILE_CACHE: '1' }));
      }
      return {
        value: median(ms),
        extra: {
          min_ms: Math.min(...ms),
          compiled: compiled ? 1 : 0,
          no_compile_cache_ms: median(withoutCache),
        },
      };
    };
    return {
      fraudgate: () => times([cli, 'serve'], env),
      baseline: () =>
        times([join(ROOT, 'bench', 'baselines', 'bare-stdio-server.js')], {
          ...env,
          NODE_COMPILE_CACHE: join(packageDir, 'bare-compile-cache'),
        }),
      async close() {
        await sandbox.close();
        rmSync(dataDir, { recursive: true, force: true });
        rmSync(packageDir, { recursive: true, force: true });
      },
    };
  },
};
