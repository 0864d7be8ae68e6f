/**
 * The sandbox's printed tokens work in the CLI too: `serve --http` prints a persona token per role,
 * derived from the development token it keeps in the data dir; `approvals approve` with the
 * approver's printed token (and no FRAUDGATE_DEV_TOKEN anywhere) decides the approval; with it,
 * `outbox retry`/`drop` of an effect that does not exist says so.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliEnv } from '../helpers/cli.ts';

let dataDir: string;
let server: ChildProcess;
/** What serve printed: its MCP URL and each persona's token, by role. */
let mcpUrl: string;
let printed = '';
const tokens: Record<string, string> = {};

function cli(
  args: string[],
  extra: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: cliEnv(dataDir, extra), timeout: 90_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ).stdin?.end();
  });
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-cliux-approver-'));
  server = spawn(process.execPath, [CLI, 'serve', '--http', '--port', '0'], {
    env: cliEnv(dataDir),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`serve exited ${code}: ${printed}`)));
    server.stderr!.on('data', (chunk: Buffer) => {
      printed += chunk.toString('utf8');
      if (printed.includes('approval console:')) resolve();
    });
  });
  mcpUrl = /MCP endpoint \(Streamable HTTP\): (\S+)/.exec(printed)![1]!;
  for (const [, role, token] of printed.matchAll(/sandbox (\w+) \S+: token (\S+)/g)) tokens[role!] = token!;
}, 120_000);

afterAll(async () => {
  if (server.exitCode === null) {
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

describe('the printed sandbox approver token in the CLI', () => {
  it("approves an analyst's pending label with FRAUDGATE_DEV_TOKEN unset", { timeout: 180_000 }, async () => {
    expect(Object.keys(tokens)).toEqual(expect.arrayContaining(['analyst', 'approver']));
    const client = new Client({ name: 'cliux-analyst', version: '0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(mcpUrl), {
        requestInit: { headers: { Authorization: `Bearer ${tokens.analyst}` } },
      }),
    );
    try {
      const waiting = client.callTool(
        {
          name: 'apply_label',
          arguments: {
            user_id: 'sandbox-high-risk',
            is_bad: true,
            abuse_type: 'payment_abuse',
            description: 'cli approver token',
          },
        },
        undefined,
        { timeout: 150_000 },
      ) as Promise<CallToolResult>;

      let id: string | undefined;
      while (!id) {
        const listed = await cli(['approvals', 'list', '--json']);
        expect(listed.code, listed.stderr).toBe(0);
        id = (JSON.parse(listed.stdout) as { id: string }[])[0]?.id;
        if (!id) await new Promise((r) => setTimeout(r, 200));
      }

      const approved = await cli(['approvals', 'approve', id, '--reason', 'matches the pattern'], {
        FRAUDGATE_APPROVER_TOKEN: tokens.approver!,
      });
      expect(approved.stderr).not.toContain('refused');
      expect(approved.code, approved.stderr).toBe(0);
      const shown = await cli(['approvals', 'show', id, '--json']);
      expect(JSON.parse(shown.stdout)).toMatchObject({ decided_by: 'sandbox-approver@example.com' });
      // Whatever it ends as, the analyst's call returns once the approval is decided.
      await waiting;
    } finally {
      await client.close();
    }
  });
});

describe('outbox retry and drop of an effect that does not exist', () => {
  it('say there is no such effect, not that it is not a dead letter', { timeout: 120_000 }, async () => {
    for (const sub of ['retry', 'drop']) {
      const run = await cli(['outbox', sub, '999'], { FRAUDGATE_APPROVER_TOKEN: tokens.approver! });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^fraudgate: no outbox effect 999 \(/);
      expect(run.stderr).not.toContain('dead letter');
    }
  });
});

describe('the printed MCP Inspector line', () => {
  const root = join(import.meta.dirname, '../..');

  it("in a checkout: the checkout's own Inspector, by its absolute path (not $PWD's)", () => {
    const line = /fraudgate: try it: (.*)/.exec(printed)![1]!;
    expect(line).toBe(
      `PATH="${join(root, 'node_modules', '.bin')}:$PATH" mcp-inspector --cli ${mcpUrl} --transport http ` +
        `--header "Authorization: Bearer ${/development token \(sandbox only, role admin\): (\S+)/.exec(printed)![1]}" --method tools/list`,
    );
  });

  it('outside a checkout (no devDependencies, as after npm install -g): npx', async () => {
    const { inspectorBinDir, inspectorCommand } = await import('../../src/cli.ts');
    const installed = mkdtempSync(join(tmpdir(), 'fraudgate-cliux-installed-'));
    try {
      expect(inspectorBinDir(installed)).toBeUndefined();
      expect(inspectorBinDir(root)).toBe(join(root, 'node_modules', '.bin'));
      expect(inspectorCommand('http://127.0.0.1:8787/mcp', 'T', undefined)).toBe(
        'npx @modelcontextprotocol/inspector --cli http://127.0.0.1:8787/mcp --transport http ' +
          '--header "Authorization: Bearer T" --method tools/list',
      );
    } finally {
      rmSync(installed, { recursive: true, force: true });
    }
  });
});
