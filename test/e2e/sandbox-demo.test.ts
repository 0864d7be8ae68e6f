/**
 * The sandbox demo `npm start` offers, end to end over real HTTP: the sandbox analyst's agent asks
 * for a label and waits; a different person, the sandbox approver, approves it in the console; the
 * waiting call completes with the executed result and Sift received exactly one label.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { SANDBOX_PERSONAS, sandboxPersonaToken } from '../../src/auth/authenticator.ts';
import { DEFAULTS, mergeConfig, type Config } from '../../src/config.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { silentLogger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { startHttpServer, type HttpServerHandle } from '../../src/transports/http.ts';

const DEV_TOKEN = 'sandbox-demo-dev-token-0123456789';
const [analyst, approver] = SANDBOX_PERSONAS;
let sandbox: Sandbox;
let runtime: Runtime;
let http: HttpServerHandle;
let dataDir: string;

beforeAll(async () => {
  sandbox = await startSandbox(DEFAULTS);
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-demo-'));
  const config: Config = {
    ...mergeConfig(DEFAULTS, { approvals: { wait_ms: 20_000, poll_ms: 50 } }),
    ...sandbox.config,
    data_dir: dataDir,
    mode: 'sandbox',
  };
  runtime = await openRuntime({
    config,
    secrets: { ...sandbox.secrets, auditKey: 'k' },
    tools,
    logger: silentLogger,
  });
  http = await startHttpServer(runtime, {
    host: '127.0.0.1',
    port: 0,
    devToken: DEV_TOKEN,
    extraHandlers: ({ authenticator }) => [createConsoleHandler({ runtime, authenticate: authenticator })],
  });
});

afterAll(async () => {
  await http?.close();
  await runtime?.close();
  await sandbox?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('sandbox demo', () => {
  it("an analyst's apply_label waits, a different person approves it in the console, the call completes", async () => {
    const client = new Client({ name: 'analyst-agent', version: '0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(http.mcpUrl), {
        requestInit: { headers: { Authorization: `Bearer ${sandboxPersonaToken(DEV_TOKEN, analyst!)}` } },
      }),
    );
    const waiting = client.callTool(
      {
        name: 'apply_label',
        arguments: {
          user_id: 'sandbox-high-risk',
          is_bad: true,
          abuse_type: 'payment_abuse',
          description: 'demo',
        },
      },
      undefined,
      { timeout: 30_000 },
    ) as Promise<CallToolResult>;

    const base = http.mcpUrl.replace(/\/mcp$/, '');
    const signIn = await fetch(`${base}/console/api/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: sandboxPersonaToken(DEV_TOKEN, approver!) }),
    });
    expect(signIn.status).toBe(200);
    const { csrf_token: csrf, principal } = (await signIn.json()) as {
      csrf_token: string;
      principal: { id: string };
    };
    expect(principal.id).toBe(approver!.id);
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0] ?? '';

    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      const list = await fetch(`${base}/console/api/approvals?view=pending`, { headers: { cookie } });
      const body = (await list.json()) as { approvals: { id: string; requester: string }[] };
      id = body.approvals.find((a) => a.requester === analyst!.id)?.id;
      if (!id) await new Promise((r) => setTimeout(r, 50));
    }
    expect(id).toBeDefined();
    const approve = await fetch(`${base}/console/api/approvals/${id}/approve`, {
      method: 'POST',
      headers: { cookie, 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify({ reason: 'matches the chargeback pattern' }),
    });
    expect(approve.status).toBe(200);

    const result = await waiting;
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ analyst: analyst!.id, is_bad: true });
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    expect(await runtime.approvals.get(id!)).toMatchObject({ state: 'executed', decided_by: approver!.id });
    await client.close();
  });

  it('persona tokens exist only in sandbox mode', async () => {
    const { createAuthenticator } = await import('../../src/auth/authenticator.ts');
    const live = createAuthenticator({
      mode: 'live',
      auth: DEFAULTS.auth,
      audience: http.mcpUrl,
      devToken: DEV_TOKEN,
    });
    expect((await live(sandboxPersonaToken(DEV_TOKEN, approver!))).ok).toBe(false);
    const sandboxed = createAuthenticator({
      mode: 'sandbox',
      auth: DEFAULTS.auth,
      audience: http.mcpUrl,
      devToken: DEV_TOKEN,
    });
    expect(await sandboxed(sandboxPersonaToken(DEV_TOKEN, approver!))).toMatchObject({
      ok: true,
      principal: approver,
    });
  });
});
