/**
 * `serve --http` runs the MCP side and the webhook/outbox side in one process: both record through
 * one ledger writer (named by FRAUDGATE_REPLICA_ID), and the stopped server leaves its chain sealed
 * and verifiable.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS, type Config } from '../../src/config.ts';
import { storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';
import { decisionBody, sign } from '../outbox/helpers.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const TOKEN = 'one-ledger-dev-token-0123456789abcdef';
const home = mkdtempSync(join(tmpdir(), 'fraudgate-one-ledger-'));
const dataDir = join(home, 'data');
let server: ChildProcess | undefined;

afterAll(() => {
  server?.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

describe('serve --http', () => {
  it('has one ledger writer for MCP calls and webhook effects, sealed on shutdown', async () => {
    server = spawn(
      process.execPath,
      [CLI, 'serve', '--http', '--sandbox', '--port', '0', '--data-dir', dataDir],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: home,
          FRAUDGATE_DEV_TOKEN: TOKEN,
          FRAUDGATE_LOG_LEVEL: 'warn',
          FRAUDGATE_REPLICA_ID: 'replica-e2e',
          SIFT_WEBHOOK_KEYS: 'current-signature-key',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    const mcpUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 30_000);
      server!.stderr!.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        const match = /(http:\/\/[^\s]+\/mcp)/.exec(log);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
    });

    const client = new Client({ name: 'one-ledger', version: '0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(mcpUrl), {
        requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
      }),
    );
    const read = await client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-low-risk' },
    });
    expect(read.isError).toBeFalsy();
    await client.close();

    const body = decisionBody('fg_one_ledger', 'watch_user_payment_abuse', Date.now());
    const webhook = await fetch(mcpUrl.replace(/\/mcp$/, '/webhooks/sift'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-sift-science-signature': sign(body) },
      body,
    });
    expect(webhook.status).toBe(200);

    const config: Config = { ...DEFAULTS, data_dir: dataDir, mode: 'sandbox' };
    // The worker runs the routed effects as governed calls: wait for their outcome records.
    const until = Date.now() + 20_000;
    let records = await storedAuditRecords(config);
    while (
      !records.some((r) => r.principal.kind === 'automation' && r.event === 'executed') &&
      Date.now() < until
    ) {
      await new Promise((r) => setTimeout(r, 200));
      records = await storedAuditRecords(config);
    }

    const exited = new Promise((resolve) => server!.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
    records = await storedAuditRecords(config);
    expect(records.some((r) => r.tool === 'get_sift_score' && r.event === 'executed')).toBe(true);
    expect(records.some((r) => r.event === 'webhook_accepted')).toBe(true);
    expect(records.some((r) => r.principal.kind === 'automation' && r.event === 'executed')).toBe(true);
    expect(new Set(records.map((r) => r.writer))).toEqual(new Set(['replica-e2e']));
    expect(await verifyStoredAudit(config)).toMatchObject({ ok: true, writers: 1, unsealed: 0 });
  }, 60_000);
});
