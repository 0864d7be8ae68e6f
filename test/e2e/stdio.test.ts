/**
 * End to end: the real `fraudgate` CLI over stdio in sandbox mode, driven by the SDK client, with
 * a human approving through the `fraudgate approvals` CLI in another process (with their own API
 * key), then the audit chain verified (and tampered with) through `fraudgate audit verify`.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv } from '../helpers/cli.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '../../src/cli.ts');

let dataDir: string;
let client: Client;
let stderr = '';
const env = () =>
  cliEnv(dataDir, {
    FRAUDGATE_ANALYST: 'e2e.analyst@example.com',
    FRAUDGATE_CONFIG: join(dataDir, 'config.json'),
  });

function text(result: CallToolResult): Record<string, unknown> {
  const block = result.content[0];
  return block && block.type === 'text' ? (JSON.parse(block.text) as Record<string, unknown>) : {};
}

/** API keys the config knows by hash: a human approver's and an analyst's. */
const APPROVER_KEY = 'e2e-approver-key-0123456789abcdef';
const ANALYST_KEY = 'e2e-analyst-key-0123456789abcdef';
/** The requester's own key with an admin role: authenticated, but the requester of the call. */
const REQUESTER_ADMIN_KEY = 'e2e-requester-admin-key-0123456789';
const sha256 = (key: string) => createHash('sha256').update(key).digest('hex');

async function cli(
  args: string[],
  extraEnv: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr: err } = await run(process.execPath, [CLI, ...args], {
      env: { ...env(), ...extraEnv },
    });
    return { code: 0, stdout, stderr: err };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-e2e-'));
  writeFileSync(
    join(dataDir, 'config.json'),
    JSON.stringify({
      // wait_ms 0: the agent gets APPROVAL_PENDING at once, so the human's approval can never land
      // while the call is still waiting (no race between the two on a slow machine).
      approvals: { wait_ms: 0, poll_ms: 50 },
      auth: {
        key_hashes: [
          {
            sha256: sha256(APPROVER_KEY),
            principal: 'olga.approver@example.com',
            kind: 'user',
            role: 'approver',
          },
          {
            sha256: sha256(ANALYST_KEY),
            principal: 'e2e.analyst@example.com',
            kind: 'user',
            role: 'analyst',
          },
          {
            sha256: sha256(REQUESTER_ADMIN_KEY),
            principal: 'e2e.analyst@example.com',
            kind: 'user',
            role: 'admin',
          },
        ],
      },
    }),
  );
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'serve'],
    env: env(),
    stderr: 'pipe',
  });
  transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  client = new Client({ name: 'e2e', version: '0.0.0' });
  await client.connect(transport);
});

afterAll(async () => {
  await client?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('fraudgate over stdio', () => {
  it('starts in sandbox mode without credentials and says so in one stderr line', () => {
    expect(stderr).toMatch(/^fraudgate: sandbox mode: .*no upstream credentials are configured/m);
    expect(stderr.split('\n').filter((l) => l.includes('sandbox mode'))).toHaveLength(1);
  });

  it('lists the tools with risk-derived annotations', async () => {
    const { tools } = await client.listTools();
    const byName = new Map(tools.map((t) => [t.name, t]));
    expect(byName.get('get_sift_score')?.annotations).toMatchObject({
      readOnlyHint: true,
      destructiveHint: false,
    });
    expect(byName.get('apply_label')?.annotations).toMatchObject({
      readOnlyHint: false,
      destructiveHint: true,
    });
  });

  it(
    'reads a score, then a label waits for a human who approves it with the CLI and their own key; the server executes it once',
    { timeout: 90_000 },
    async () => {
      const score = (await client.callTool({
        name: 'get_sift_score',
        arguments: { user_id: 'sandbox-high-risk' },
      })) as CallToolResult;
      expect(score.isError).toBeFalsy();
      expect(score.structuredContent).toMatchObject({ user_id: 'sandbox-high-risk' });

      const label = (await client.callTool({
        name: 'apply_label',
        arguments: {
          user_id: 'sandbox-high-risk',
          is_bad: true,
          abuse_type: 'payment_abuse',
          description: 'e2e card testing',
        },
      })) as CallToolResult;
      expect(label.isError).toBe(true);
      const pending = text(label).error as { code: string; approval_id: string };
      expect(pending.code).toBe('APPROVAL_PENDING');

      const listed = await cli(['approvals', 'list']);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toContain(pending.approval_id);
      // No credential, a name on trust, a wrong key, an analyst's key, the requester's own admin key: all refused.
      const approve = ['approvals', 'approve', pending.approval_id];
      const [bare, onTrust, wrong, analyst, self] = await Promise.all([
        cli(approve),
        cli([...approve, '--as', 'olga.approver@example.com']),
        cli(approve, { FRAUDGATE_APPROVER_TOKEN: 'not-a-key' }),
        cli(approve, { FRAUDGATE_APPROVER_TOKEN: ANALYST_KEY }),
        cli(approve, { FRAUDGATE_APPROVER_TOKEN: REQUESTER_ADMIN_KEY }),
      ]);
      for (const refused of [bare, onTrust, wrong, analyst, self]) expect(refused.code).not.toBe(0);
      expect(bare.stderr).toContain('FRAUDGATE_APPROVER_TOKEN');
      expect(onTrust.stderr).toContain('--as is no longer accepted');
      expect(wrong.stderr).toContain('refused');
      expect(analyst.stderr).toContain("role 'analyst'");
      expect(self.stderr).toContain('another approver must');
      expect(
        JSON.parse((await cli(['approvals', 'show', pending.approval_id, '--json'])).stdout),
      ).toMatchObject({
        state: 'pending',
      });

      const approved = await cli(['approvals', 'approve', pending.approval_id], {
        FRAUDGATE_APPROVER_TOKEN: APPROVER_KEY,
      });
      expect(approved.code).toBe(0);

      // The server's sweep executes the approved action; wait for a final state however long that
      // takes on a loaded machine (the test's timeout is the only clock).
      let state = '';
      while (state !== 'executed' && state !== 'failed') {
        await new Promise((r) => setTimeout(r, 100));
        const status = (await client.callTool({
          name: 'get_approval_status',
          arguments: { approval_id: pending.approval_id },
        })) as CallToolResult;
        state = String((status.structuredContent as { state?: string } | undefined)?.state);
      }
      expect(state).toBe('executed');
      const shown = await cli(['approvals', 'show', pending.approval_id, '--json']);
      expect(JSON.parse(shown.stdout)).toMatchObject({
        state: 'executed',
        decided_by: 'olga.approver@example.com',
      });
    },
  );

  it('audit verify passes on the intact ledger and names the first bad record after tampering', async () => {
    const ok = await cli(['audit', 'verify']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('intact');
    const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      const rows = db.prepare('SELECT id, writer, seq FROM audit_records ORDER BY id').all() as {
        id: number;
        writer: string;
        seq: number;
      }[];
      expect(rows.length).toBeGreaterThanOrEqual(4);
      db.prepare(`UPDATE audit_records SET body = replace(body, '"event"', '"event" ') WHERE id = ?`).run(
        rows[1]!.id,
      );
      const bad = await cli(['audit', 'verify']);
      expect(bad.code).toBe(1);
      expect(bad.stdout).toContain(
        `TAMPERED at writer ${rows[1]!.writer} seq ${rows[1]!.seq}: hash mismatch`,
      );
    } finally {
      db.close();
    }
  });

  it('an unknown config key stops start-up with a message naming it', async () => {
    const file = join(dataDir, 'bad-config.json');
    writeFileSync(file, JSON.stringify({ approvals: { out_of_bnd: false } }));
    const result = await cli(['approvals', 'list', '--config', file]);
    expect(result.stderr).toContain('Invalid configuration');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('out_of_bnd');
  });
});
