/**
 * Security regressions: what reaches logs, error messages and the CLI must hold no secrets or
 * unmasked personal data, and malformed input must never take the server down.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tools as allTools } from '../../tools/index.ts';
import { DEFAULTS, loadConfig, mergeConfig, type Config } from '../../src/config.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { createApprovalDesk } from '../../src/governance/approval-desk.ts';
import { createLogger, silentLogger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { openStore } from '../../src/store/store.ts';
import { defineTool, type AnyTool } from '../../src/tool.ts';
import { startHttpServer } from '../../src/transports/http.ts';
import { ANALYST, setup } from '../helpers/setup.ts';
import { openTestLedger } from '../helpers/audit.ts';
import { labelRequest } from '../helpers/approvals.ts';

let sandbox: Sandbox;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  sandbox = await startSandbox(DEFAULTS);
});
afterAll(async () => {
  await sandbox.close();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function open(tools: readonly AnyTool[] = allTools): Promise<{ runtime: Runtime; logs: string[] }> {
  const logs: string[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-sec-'));
  let config: Config = mergeConfig(DEFAULTS, { approvals: { wait_ms: 0 } });
  config = { ...config, ...sandbox.config, data_dir: dataDir, mode: 'sandbox' };
  const runtime = await openRuntime({
    config,
    secrets: { ...sandbox.secrets, auditKey: 'test-audit-key' },
    tools,
    logger: createLogger({ write: (line) => logs.push(line) }),
  });
  cleanups.push(async () => {
    await runtime.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { runtime, logs };
}

describe('internal errors', () => {
  it('an unexpected error is generic to the model and its detail is redacted in the server log', async () => {
    const buggy = defineTool({
      name: 'buggy_read',
      title: 'Buggy read',
      description: 'Throws a plain Error carrying personal data.',
      risk: 'read',
      toolset: 'core',
      idempotent: true,
      input: z.strictObject({}),
      output: z.object({}),
      run: () => {
        throw new Error('lookup failed for jane.doe@example.com from 203.0.113.77');
      },
    });
    const { runtime, logs } = await open([buggy as unknown as AnyTool]);
    const outcome = await runtime.pipeline.call(
      'buggy_read',
      {},
      {
        principal: ANALYST,
        progress: async () => {},
        signal: new AbortController().signal,
      },
    );
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return;
    expect(outcome.error.code).toBe('INTERNAL');
    expect(outcome.error.message).not.toContain('jane.doe');
    const logged = logs.join('\n');
    expect(logged).toContain('tool failed');
    expect(logged).not.toContain('jane.doe@example.com');
    expect(logged).not.toContain('203.0.113.77');
  });
});

describe('HTTP transport', () => {
  it('a malformed absolute-form request target gets an error answer and does not crash the server', async () => {
    const { runtime } = await open();
    const http = await startHttpServer(runtime, {
      host: '127.0.0.1',
      port: 0,
      devToken: 'dev-token-0123456789',
    });
    cleanups.push(() => http.close());
    const port = Number(new URL(http.url).port);
    const raw = (request: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.write(request));
        let text = '';
        socket.on('data', (d) => (text += String(d)));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
        socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
      });
    const answer = await raw('GET http://[bad/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 (400|404|500) /);
    // Give a throwing 'close' listener the chance to surface as an uncaught exception.
    await new Promise((r) => setTimeout(r, 50));
    const health = await fetch(`${http.url}/healthz`);
    expect(health.status).toBe(200);
  });
});

describe('CLI configuration errors', () => {
  it('an unparsable config file is reported without echoing its contents (secrets)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-cfg-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'fraudgate.json');
    writeFileSync(file, '{"sift": {"api_key": sk_live_abcdef1234567890}}');
    let error: unknown;
    try {
      loadConfig({ configFile: file }, {}, dir);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    const message = (error as InvalidInputError).message;
    expect(message).toContain('config_file');
    expect(message).toContain('not valid JSON');
    expect(message).not.toContain('sk_live');
  });
});

describe('approval decisions', () => {
  it('an approval whose decision could not be audited does not stay approved (nothing runs unrecorded)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-desk-'));
    const store = await openStore({ ...DEFAULTS, data_dir: dir }, {});
    const approvals = store.approvals;
    cleanups.push(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    // A real ledger whose table has gone: every commit fails, as on a full or lost disk.
    const ledger = openTestLedger(dir);
    cleanups.push(() => ledger.close());
    const db = new DatabaseSync(ledger.dbPath);
    db.exec('DROP TABLE audit_records');
    db.close();
    const failingAudit = ledger.audit;
    const desk = createApprovalDesk({ approvals, audit: failingAudit, logger: silentLogger });
    const { approval: created } = await approvals.create(
      labelRequest('apr_00000000000000000001', {
        expires_at: new Date(Date.now() + 60_000).toISOString(),
      }),
    );
    await expect(
      desk.decide(created.id, {
        approve: true,
        approver: { id: 'apu.approver@example.com', kind: 'user', role: 'approver' },
      }),
    ).rejects.toMatchObject({
      // The ledger cannot write for now: a dependency's outage the approver can retry through.
      code: 'UPSTREAM_ERROR',
      retryable: true,
      data: { dependency: 'ledger' },
      message: expect.stringContaining('still pending'),
    });
    const after = await approvals.get(created.id);
    expect(after?.state).toBe('pending');
    expect(after?.decided_by).toBeUndefined();
  });
});

describe('resources', () => {
  it('a resource URI with broken percent-encoding gets an InvalidParams error naming the problem', async () => {
    const env = await setup({ sandbox });
    cleanups.push(() => env.close());
    const error = await env.client
      .readResource({ uri: 'fraudgate://users/%E0%A4%A' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(McpError);
    expect((error as McpError).code).toBe(ErrorCode.InvalidParams);
    expect((error as McpError).message).toContain('percent-encoding');
  });
});
