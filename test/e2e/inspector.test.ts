/**
 * The real MCP Inspector CLI (2.12) against both transports of the real `fraudgate` binary:
 * list tools, call a read tool, and see a destructive call come back as a pending approval.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const INSPECTOR = join(ROOT, 'node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js');
const CLI = join(ROOT, 'src/cli.ts');
const TOKEN = 'inspector-e2e-token-0123456789';

let home: string;
let http: ChildProcess | undefined;
let mcpUrl = '';

async function inspector(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // The Inspector passes only a few variables (HOME, PATH, …) to a stdio server: HOME picks the data dir.
  const env = { PATH: process.env.PATH ?? '', HOME: home, MCP_CATALOG_PATH: join(home, 'catalog') };
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [INSPECTOR, '--cli', '--format', 'json', '-q', ...args],
      {
        env,
        cwd: ROOT,
        timeout: 60_000,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'fraudgate-inspector-'));
  // A short in-call approval wait, so the pending approval comes back at once.
  const config = join(home, 'config.json');
  writeFileSync(config, JSON.stringify({ approvals: { wait_ms: 200 } }));
  http = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--http',
      '--sandbox',
      '--port',
      '0',
      '--data-dir',
      join(home, 'http'),
      '--config',
      config,
    ],
    {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        FRAUDGATE_DEV_TOKEN: TOKEN,
        FRAUDGATE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 20_000);
    http!.stderr!.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      const match = /(http:\/\/[^\s]+\/mcp)/.exec(log);
      if (match?.[1]) {
        mcpUrl = match[1];
        clearTimeout(timer);
        resolve();
      }
    });
  });
});

afterAll(async () => {
  http?.kill('SIGTERM');
  rmSync(home, { recursive: true, force: true });
});

// Each case spawns the Inspector CLI and a server: allow for a loaded machine (the CLI's own limit is 60 s).
describe('MCP Inspector CLI', { timeout: 120_000 }, () => {
  it('stdio: lists tools and calls a read tool', async () => {
    const listed = await inspector(['node', CLI, 'serve', '--method', 'tools/list']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('get_sift_score');
    const called = await inspector([
      'node',
      CLI,
      'serve',
      '--method',
      'tools/call',
      '--tool-name',
      'get_sift_score',
      '--tool-arg',
      'user_id=sandbox-high-risk',
    ]);
    expect(called.code).toBe(0);
    expect(called.stdout).toContain('payment_abuse');
  });

  it('http: lists tools, calls a read tool, and a label comes back pending approval', async () => {
    const auth = ['--header', `Authorization: Bearer ${TOKEN}`];
    const listed = await inspector([mcpUrl, ...auth, '--method', 'tools/list']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('apply_label');
    const called = await inspector([
      mcpUrl,
      ...auth,
      '--method',
      'tools/call',
      '--tool-name',
      'get_sift_score',
      '--tool-arg',
      'user_id=sandbox-blocked',
    ]);
    expect(called.code).toBe(0);
    expect(called.stdout).toContain('block_user_payment_abuse');
    const label = await inspector([
      mcpUrl,
      ...auth,
      '--method',
      'tools/call',
      '--tool-name',
      'apply_label',
      '--tool-args-json',
      JSON.stringify({
        user_id: 'sandbox-high-risk',
        is_bad: true,
        abuse_type: 'payment_abuse',
        description: 'inspector e2e',
      }),
    ]);
    // Exit 5: the tool returned isError — here, by design, APPROVAL_PENDING.
    expect(label.code).toBe(5);
    expect(label.stdout + label.stderr).toContain('APPROVAL_PENDING');
  });

  it('http: no token is refused', async () => {
    const refused = await inspector([mcpUrl, '--method', 'tools/list']);
    expect(refused.code).not.toBe(0);
  });
});
