/**
 * The Streamable HTTP transport over real HTTP on 127.0.0.1 (ephemeral ports) with the real SDK
 * client, the real runtime and the emulators: authentication (API keys, JWTs from a local JWKS,
 * the sandbox dev token), sessions, Host/Origin checks, body limit, role filtering, read-only and
 * toolsets, metrics, health, graceful shutdown, sessions that survive a restart, session caps and
 * reaping, and a retryable 503 when the session store is unreachable.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { SignJWT, type CryptoKey, type JWTVerifyGetKey } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { tools as allTools } from '../../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { startHttpServer, type HttpServerHandle } from '../../src/transports/http.ts';
import type { DeepPartial } from '../helpers/setup.ts';
import { testSigningKeyPem } from '../helpers/audit.ts';
import { testIdentityProvider } from '../helpers/identity-provider.ts';
import { listening } from '../helpers/services.ts';
import { startTcpForwarder } from '../helpers/tcp-forwarder.ts';

const redisUp = await listening(6379);
if (!redisUp) console.warn('http tests: no Redis on 127.0.0.1:6379, skipping the shared request budget test');

const DEV_TOKEN = 'dev-token-for-tests-0123456789';
const VIEWER_KEY = 'viewer-key-0123456789abcdef';
const ANALYST_KEY = 'analyst-key-0123456789abcdef';
const OTHER_ANALYST_KEY = 'analyst2-key-0123456789abcdef';
const ISSUER = 'https://idp.example.com';
const LABEL_ARGS = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'chargebacks on three cards',
};
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const TEST_CONFIG: DeepPartial<Config> = {
  approvals: { wait_ms: 0, poll_ms: 20 },
  sift: { max_retries: 0, timeout_ms: 5000 },
  segment: { delivery_timeout_ms: 3000, timeout_ms: 2000 },
  salesforce: { timeout_ms: 5000 },
  http: { shutdown_grace_ms: 5000 },
  auth: {
    key_hashes: [
      { sha256: sha(VIEWER_KEY), principal: 'vera.viewer@example.com', kind: 'user', role: 'viewer' },
      { sha256: sha(ANALYST_KEY), principal: 'ana.analyst@example.com', kind: 'user', role: 'analyst' },
      { sha256: sha(OTHER_ANALYST_KEY), principal: 'bob.analyst@example.com', kind: 'user', role: 'analyst' },
    ],
    jwt: {
      issuer: ISSUER,
      jwks_url: 'https://idp.example.com/jwks',
      role_claim: 'fraudgate_role',
      subject_claim: 'sub',
    },
  },
};

let sandbox: Sandbox;
let privateKey: CryptoKey;
let jwks: JWTVerifyGetKey;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  sandbox = await startSandbox(DEFAULTS);
  ({ privateKey, jwks } = await testIdentityProvider());
});
afterAll(async () => {
  await sandbox.close();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  sandbox.sift.faults.clear();
});

interface Started {
  runtime: Runtime;
  http: HttpServerHandle;
  logs: string[];
  /** Stop the server and close the runtime (a process exit); safe to call again in cleanup. */
  stop(): Promise<void>;
}

async function start(
  options: {
    config?: DeepPartial<Config>;
    mode?: Config['mode'];
    dataDir?: string;
    port?: number;
    upstreamProbeTtlMs?: number;
    readinessProbeTtlMs?: number;
    redisUrl?: string;
    requestTimeoutMs?: number;
    headersTimeoutMs?: number;
  } = {},
): Promise<Started> {
  const logs: string[] = [];
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'fraudgate-http-'));
  let config: Config = mergeConfig(mergeConfig(DEFAULTS, TEST_CONFIG), options.config ?? {});
  config = { ...config, ...sandbox.config, data_dir: dataDir, mode: options.mode ?? 'sandbox' };
  // The sandbox's client settings carry the default retries; tests want failures to surface at once.
  config.sift = { ...config.sift, max_retries: 0, ...options.config?.sift } as Config['sift'];
  const runtime = await openRuntime({
    config,
    secrets: {
      ...sandbox.secrets,
      auditKey: 'test-audit-key',
      auditSigningKey: testSigningKeyPem(),
      // Live mode encrypts personal fields at rest and refuses to start without a data key.
      dataKey: '0'.repeat(64),
      ...(options.redisUrl ? { redisUrl: options.redisUrl } : {}),
    },
    tools: allTools,
    logger: createLogger({ write: (line) => logs.push(line) }),
  });
  const http = await startHttpServer(runtime, {
    host: '127.0.0.1',
    port: options.port ?? 0,
    devToken: DEV_TOKEN,
    jwks,
    ...(options.upstreamProbeTtlMs === undefined ? {} : { upstreamProbeTtlMs: options.upstreamProbeTtlMs }),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
    ...(options.headersTimeoutMs === undefined ? {} : { headersTimeoutMs: options.headersTimeoutMs }),
    ...(options.readinessProbeTtlMs === undefined
      ? {}
      : { readinessProbeTtlMs: options.readinessProbeTtlMs }),
  });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await http.close();
      await runtime.close();
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    })());
  cleanups.push(stop);
  return { runtime, http, logs, stop };
}

async function jwt(
  claims: Record<string, unknown>,
  options: { audience?: string; issuer?: string; expiresIn?: string | number } = {},
): Promise<string> {
  return new SignJWT({ fraudgate_role: 'analyst', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setSubject('jwt.user@example.com')
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? 'unset')
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? '5m')
    .sign(privateKey);
}

async function connect(http: HttpServerHandle, token: string, sessionId?: string) {
  const transport = new StreamableHTTPClientTransport(new URL(http.mcpUrl), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    ...(sessionId ? { sessionId } : {}),
  });
  const client = new Client({ name: 'http-test', version: '0.0.0' });
  if (!sessionId) await client.connect(transport);
  cleanups.push(() => client.close().catch(() => {}));
  return { client, transport };
}

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
};

function post(http: HttpServerHandle, body: unknown, headers: Record<string, string> = {}) {
  return fetch(http.mcpUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/**
 * A session opened with raw requests (initialize, then notifications/initialized) as `key`'s
 * principal: the headers that continue it.
 */
async function openSession(http: HttpServerHandle, key: string) {
  const auth = { authorization: `Bearer ${key}` };
  const init = await post(http, INIT, auth);
  await init.text();
  const session = {
    ...auth,
    'mcp-session-id': init.headers.get('mcp-session-id') ?? '',
    'mcp-protocol-version': '2025-11-25',
  };
  await (await post(http, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
  return session;
}

/** node:http, because fetch does not let a test set Host. */
function rawPost(http: HttpServerHandle, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      http.mcpUrl,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...headers,
        },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(INIT));
  });
}

const errorOf = (result: CallToolResult) => {
  const text = result.content.find((c) => c.type === 'text');
  return (
    JSON.parse(text && text.type === 'text' ? text.text : '{}') as {
      error: { code: string; message: string };
    }
  ).error;
};

describe('authentication', () => {
  it('no token → 401 with WWW-Authenticate resource_metadata, and the PRM document is served', async () => {
    const { http } = await start();
    const res = await post(http, INIT);
    expect(res.status).toBe(401);
    const prm = `${http.url}/.well-known/oauth-protected-resource/mcp`;
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${prm}"`);
    const doc = (await (await fetch(prm)).json()) as Record<string, unknown>;
    expect(doc).toMatchObject({
      resource: http.mcpUrl,
      authorization_servers: [ISSUER],
      bearer_methods_supported: ['header'],
    });
  });

  it('refuses invalid, expired, wrong-audience and wrong-issuer tokens with 401; a token without a role gets 403', async () => {
    const { http } = await start();
    const cases: [string, string][] = [
      ['not-a-token', 'invalid token'],
      [
        await jwt({}, { audience: http.mcpUrl, expiresIn: Math.floor(Date.now() / 1000) - 60 }),
        'token expired',
      ],
      [await jwt({}, { audience: 'https://other.example.com/mcp' }), 'audience'],
      [await jwt({}, { audience: http.mcpUrl, issuer: 'https://evil.example.com' }), 'issuer'],
    ];
    for (const [token, reason] of cases) {
      const res = await post(http, INIT, { authorization: `Bearer ${token}` });
      expect(res.status, reason).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"');
      expect(res.headers.get('www-authenticate')).toContain('resource_metadata=');
      expect(((await res.json()) as { error_description: string }).error_description).toContain(reason);
    }
    const noRole = await post(http, INIT, {
      authorization: `Bearer ${await jwt({ fraudgate_role: 'marketing' }, { audience: http.mcpUrl })}`,
    });
    expect(noRole.status).toBe(403);
    expect(noRole.headers.get('www-authenticate')).toContain('insufficient_scope');
    expect(((await noRole.json()) as { error_description: string }).error_description).toContain(
      'fraudgate_role',
    );
  });

  it('a valid JWT and an API key both open sessions as their own principals', async () => {
    const { http, logs, runtime } = await start();
    const token = await jwt({ fraudgate_role: ['viewer', 'analyst'] }, { audience: http.mcpUrl });
    const viaJwt = await connect(http, token);
    const names = (await viaJwt.client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('apply_label');
    const viaKey = await connect(http, ANALYST_KEY);
    expect((await viaKey.client.listTools()).tools.length).toBe(names.length);
    expect(await http.sessionCount()).toBe(2);
    const requests = logs
      .filter((l) => l.includes('"http request"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    // Principals are logged, as keyed hashes of their emails (logs carry no unmasked personal data).
    const logged = (id: string) => String(runtime.redactor.redactValue(id));
    expect(
      requests.some(
        (r) => r.principal === logged('jwt.user@example.com') && r.path === '/mcp' && r.status === 200,
      ),
    ).toBe(true);
    expect(requests.some((r) => r.principal === logged('ana.analyst@example.com'))).toBe(true);
    expect(logs.join('\n')).not.toContain('jwt.user@example.com');
    // Never tokens in logs.
    expect(logs.join('\n')).not.toContain(ANALYST_KEY);
    expect(logs.join('\n')).not.toContain(token.slice(-20));
  });

  it('the sandbox dev token is an admin in sandbox mode and refused in live mode', async () => {
    const sandboxed = await start();
    const admin = await connect(sandboxed.http, DEV_TOKEN);
    expect((await admin.client.listTools()).tools.map((t) => t.name)).toContain('suppress_user');

    const live = await start({ mode: 'live' });
    const res = await post(live.http, INIT, { authorization: `Bearer ${DEV_TOKEN}` });
    expect(res.status).toBe(401);
    const viaKey = await connect(live.http, ANALYST_KEY);
    expect((await viaKey.client.listTools()).tools.length).toBeGreaterThan(0);
  });
});

describe('roles, read-only and toolsets over HTTP', () => {
  it('a viewer lists only read tools, and a write tool called anyway is refused', async () => {
    const { http } = await start();
    const { client } = await connect(http, VIEWER_KEY);
    const listed = (await client.listTools()).tools;
    expect(listed.length).toBeGreaterThan(0);
    expect(listed.every((t) => t.annotations?.readOnlyHint === true)).toBe(true);
    const result = (await client.callTool({
      name: 'apply_label',
      arguments: LABEL_ARGS,
    })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(errorOf(result).code).toBe('FORBIDDEN');
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
  });

  it('read-only wins over the admin role; toolsets narrow the list', async () => {
    const readOnly = await start({ config: { read_only: true } });
    const admin = await connect(readOnly.http, DEV_TOKEN);
    const tools = (await admin.client.listTools()).tools;
    expect(tools.every((t) => t.annotations?.readOnlyHint === true)).toBe(true);
    const refused = (await admin.client.callTool({
      name: 'suppress_user',
      arguments: { user_id: 'sandbox-high-risk', reason: 'test' },
    })) as CallToolResult;
    expect(refused.isError).toBe(true);

    const narrowed = await start({ config: { toolsets: ['sift'] } });
    const names = (await (await connect(narrowed.http, DEV_TOKEN)).client.listTools()).tools.map(
      (t) => t.name,
    );
    expect(names).toContain('get_sift_score');
    expect(names).not.toContain('suppress_user');
    expect(names).not.toContain('create_fraud_case');
  });
});

describe('malformed requests', () => {
  it('a request that fails the JSON-RPC schema gets an error for its id naming the field', async () => {
    const { http } = await start();
    const session = await openSession(http, ANALYST_KEY);
    const params = { name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } };
    for (const [id, meta, field] of [
      [9, null, 'params._meta'],
      [10, { progressToken: 1.5 }, 'params._meta.progressToken'],
    ] as const) {
      const res = await post(
        http,
        { jsonrpc: '2.0', id, method: 'tools/call', params: { ...params, _meta: meta } },
        session,
      );
      expect(res.status).toBe(400);
      const body = (await res.json()) as { id: unknown; error: { code: number; message: string } };
      expect(body.id).toBe(id);
      expect(body.error.code).toBe(-32602);
      expect(body.error.message).toContain(field);
    }
    // The session goes on.
    const ping = await post(http, { jsonrpc: '2.0', id: 11, method: 'ping' }, session);
    expect(ping.status).toBe(200);
    await ping.text();
  });
});

describe('sessions', () => {
  it('another principal cannot use a session id: same 404 as an unknown one; the owner keeps it', async () => {
    const { http } = await start();
    const owner = await connect(http, ANALYST_KEY);
    const sessionId = owner.transport.sessionId!;
    const ping = { jsonrpc: '2.0', id: 7, method: 'ping' };
    const headers = { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' };
    const hijack = await post(http, ping, { ...headers, authorization: `Bearer ${OTHER_ANALYST_KEY}` });
    const unknown = await post(http, ping, {
      ...headers,
      'mcp-session-id': '00000000-0000-4000-8000-000000000000',
      authorization: `Bearer ${OTHER_ANALYST_KEY}`,
    });
    expect(hijack.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(await hijack.text()).toBe(await unknown.text());
    // A viewer token for the same session, and no token at all, fail too.
    expect((await post(http, ping, { ...headers, authorization: `Bearer ${VIEWER_KEY}` })).status).toBe(404);
    expect((await post(http, ping, headers)).status).toBe(401);
    await expect(owner.client.ping()).resolves.toBeDefined();
  });

  it('DELETE ends a session at once; the total cap answers 503 JSON; idle sessions are reaped', async () => {
    const { http } = await start({ config: { http: { max_sessions: 2, idle_timeout_ms: 400 } } });
    const a = await connect(http, ANALYST_KEY);
    const b = await connect(http, ANALYST_KEY);
    const full = await post(http, INIT, { authorization: `Bearer ${ANALYST_KEY}` });
    expect(full.status).toBe(503);
    expect(await full.json()).toMatchObject({
      jsonrpc: '2.0',
      error: { message: expect.stringContaining('http.max_sessions = 2') },
    });
    const id = a.transport.sessionId!;
    await a.transport.terminateSession();
    expect(await http.sessionCount()).toBe(1);
    const after = await post(
      http,
      { jsonrpc: '2.0', id: 2, method: 'ping' },
      {
        authorization: `Bearer ${ANALYST_KEY}`,
        'mcp-session-id': id,
        'mcp-protocol-version': '2025-11-25',
      },
    );
    expect(after.status).toBe(404);
    // Idle: used once, then the client goes away without DELETE (what close() does).
    await b.client.listTools();
    await b.client.close();
    await vi.waitFor(async () => expect(await http.sessionCount()).toBe(0), { timeout: 5000, interval: 100 });
  });

  it('a session in steady use outlives the idle timeout: the reaper records its activity', async () => {
    // Tick every 500 ms. Plain POSTs, no event stream held open: between calls nothing is in flight,
    // so only the recorded activity keeps the session alive.
    const { http } = await start({ config: { http: { idle_timeout_ms: 2000 } } });
    const session = await openSession(http, ANALYST_KEY);
    const until = Date.now() + 6000;
    for (let id = 2; Date.now() < until; id += 1) {
      const res = await post(http, { jsonrpc: '2.0', id, method: 'ping' }, session);
      await res.text();
      expect(res.status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await http.sessionCount()).toBe(1);
  });

  it('a session in steady use is recorded once per quarter of its timeout, not every tick; its last request when it goes quiet', async () => {
    // Ticks every 250 ms (a quarter of the unused timeout); a used session's quarter is 1 s.
    const { http, runtime } = await start({
      config: { http: { idle_timeout_ms: 4000, unused_session_timeout_ms: 1000 } },
    });
    const writes: number[] = [];
    const registry = runtime.sessions.mcpSessions;
    const touchMany = registry.touchMany.bind(registry);
    registry.touchMany = (ids, at) => {
      writes.push(ids.length);
      return touchMany(ids, at);
    };
    const { client, transport } = await connect(http, ANALYST_KEY);
    const until = Date.now() + 2600;
    while (Date.now() < until) {
      await client.ping();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // ~10 ticks of steady use: 2 or 3 writes (every tick would be 10; a slow machine may add one).
    expect(writes.length).toBeGreaterThanOrEqual(1);
    expect(writes.length).toBeLessThanOrEqual(5);
    const lastRequest = Date.now();
    await vi.waitFor(
      async () =>
        expect((await registry.get(transport.sessionId!))?.last_used_at).toBeGreaterThanOrEqual(lastRequest),
      { timeout: 2000, interval: 50 },
    );
    expect(await http.sessionCount()).toBe(1);
  });

  it('a session that initializes and is never used is reaped quickly; a used one stays', async () => {
    const { http } = await start({ config: { http: { unused_session_timeout_ms: 300 } } });
    const unused = await connect(http, VIEWER_KEY);
    const unusedId = unused.transport.sessionId!;
    await unused.client.close(); // no DELETE: the session lingers until the reaper finds it
    const used = await connect(http, VIEWER_KEY);
    await used.client.listTools();
    await used.client.close();
    await vi.waitFor(async () => expect(await http.sessionCount()).toBe(1), { timeout: 5000, interval: 100 });
    const res = await post(
      http,
      { jsonrpc: '2.0', id: 2, method: 'ping' },
      {
        authorization: `Bearer ${VIEWER_KEY}`,
        'mcp-session-id': unusedId,
        'mcp-protocol-version': '2025-11-25',
      },
    );
    expect(res.status).toBe(404);
  });

  it('one principal cannot take every slot: a per-principal cap answers 429 naming the limit; others still connect', async () => {
    const { http } = await start({ config: { http: { max_sessions: 3, max_sessions_per_principal: 2 } } });
    await connect(http, VIEWER_KEY);
    await connect(http, VIEWER_KEY);
    const third = await post(http, INIT, { authorization: `Bearer ${VIEWER_KEY}` });
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBeTruthy();
    expect(await third.json()).toMatchObject({
      jsonrpc: '2.0',
      error: { code: -32000, message: expect.stringContaining('http.max_sessions_per_principal = 2') },
    });
    // The admin (and anyone else) still gets in: the viewer could not fill the global cap of 3.
    const admin = await connect(http, DEV_TOKEN);
    await expect(admin.client.ping()).resolves.toBeDefined();
  });

  it('a session survives a restart of the process: the same client continues, elicitation included', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-http-restart-'));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const config: DeepPartial<Config> = {
      approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] },
    };
    const first = await start({ dataDir, config });
    const port = Number(new URL(first.http.url).port);
    const transport = new StreamableHTTPClientTransport(new URL(first.http.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${ANALYST_KEY}` } },
    });
    const client = new Client(
      { name: 'restart-test', version: '0.0.0' },
      { capabilities: { elicitation: { form: {} } } },
    );
    const asked: string[] = [];
    client.setRequestHandler(ElicitRequestSchema, (request) => {
      asked.push(request.params.message);
      return { action: 'accept', content: { confirm: true } };
    });
    await client.connect(transport);
    cleanups.push(() => client.close().catch(() => {}));
    await client.listTools();
    const sessionId = transport.sessionId!;

    // A real restart: the server and the runtime stop, a new process-equivalent opens the same data dir.
    await first.stop();
    // Let the client notice that the old server closed its idle keep-alive sockets (a real restart
    // takes far longer), or undici reuses one for the next POST and fails it with "other side closed".
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = await start({ dataDir, config, port });

    // No re-initialize: the same session id, and the client's elicitation capability came back with it.
    const result = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;
    expect(transport.sessionId).toBe(sessionId);
    expect(result.isError).toBeFalsy();
    expect(asked).toHaveLength(1);
    expect(second.logs.some((l) => l.includes('mcp session restored on this replica'))).toBe(true);
  });

  it('the session store unreachable → a retryable 503 JSON-RPC error, and the server keeps running', async () => {
    const { http, runtime } = await start();
    const { client, transport } = await connect(http, ANALYST_KEY);
    await client.ping(); // the session in use: its registry row was read a moment ago
    await runtime.store.close(); // the database goes away under the running server
    const res = await post(
      http,
      { jsonrpc: '2.0', id: 2, method: 'ping' },
      {
        authorization: `Bearer ${ANALYST_KEY}`,
        'mcp-session-id': transport.sessionId!,
        'mcp-protocol-version': '2025-11-25',
      },
    );
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect(await res.json()).toMatchObject({ jsonrpc: '2.0', error: { data: { retryable: true } } });
    const init = await post(http, INIT, { authorization: `Bearer ${ANALYST_KEY}` });
    expect(init.status).toBe(503);
    expect((await fetch(`${http.url}/healthz`)).status).toBe(200);
  });

  it('requests in a row on a session read its registry row once, not once each', async () => {
    const { http, runtime } = await start();
    const registry = runtime.sessions.mcpSessions;
    const get = registry.get.bind(registry);
    let reads = 0;
    registry.get = (id) => {
      reads += 1;
      return get(id);
    };
    const { client } = await connect(http, ANALYST_KEY);
    reads = 0;
    for (let i = 0; i < 10; i++) await client.ping();
    // One read confirms the session; the next ones come within CONFIRMED_FOR_MS (1 s) of it.
    expect(reads).toBeLessThanOrEqual(2);
  });

  it('a session ended through one server is refused at once by another that served it a moment ago', async () => {
    // Two servers on one runtime: two replicas of one process on SQLite, one registry, one relay.
    const { http, runtime } = await start();
    const other = await startHttpServer(runtime, { host: '127.0.0.1', port: 0, devToken: DEV_TOKEN, jwks });
    cleanups.push(() => other.close());
    const session = await openSession(http, ANALYST_KEY);
    const ping = async (server: HttpServerHandle, id: number) => {
      const res = await post(server, { jsonrpc: '2.0', id, method: 'ping' }, session);
      await res.text();
      return res.status;
    };
    expect(await ping(other, 2)).toBe(200); // restored there, its registry row just read
    const deleted = await fetch(http.mcpUrl, { method: 'DELETE', headers: session });
    expect(deleted.status).toBe(200);
    expect(await ping(other, 3)).toBe(404);
  });
});

describe('responses', () => {
  it('a call answered at once comes back as one JSON body; a call that asks the client first streams SSE', async () => {
    const { http } = await start({
      config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
    });
    // What the server answered each POST with, by the JSON-RPC method the POST carried.
    const answered: { method: string; type: string }[] = [];
    const recordingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as { method?: string }) : {};
      if (init?.method === 'POST' && body.method)
        answered.push({ method: body.method, type: response.headers.get('content-type') ?? '' });
      return response;
    };
    const transport = new StreamableHTTPClientTransport(new URL(http.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${ANALYST_KEY}` } },
      fetch: recordingFetch,
    });
    const client = new Client(
      { name: 'http-test', version: '0.0.0' },
      { capabilities: { elicitation: { form: {} } } },
    );
    let asked = 0;
    client.setRequestHandler(ElicitRequestSchema, () => {
      asked += 1;
      return { action: 'accept', content: { confirm: true } };
    });
    await client.connect(transport);
    cleanups.push(() => client.close().catch(() => {}));

    const read = (await client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-high-risk' },
    })) as CallToolResult;
    expect(read.isError).toBeFalsy();
    expect(answered.at(-1)).toEqual({ method: 'tools/call', type: 'application/json' });

    // The confirmation (an elicitation) goes out on the call's stream before its answer: SSE.
    const write = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;
    expect(write.isError).toBeFalsy();
    expect(asked).toBe(1);
    const call = answered.filter((a) => a.method === 'tools/call').at(-1);
    expect(call?.type).toContain('text/event-stream');
  });
});

describe('HTTP hardening', () => {
  it('refuses a foreign Origin or Host with 403 and accepts its own', async () => {
    const { http } = await start();
    const auth = { authorization: `Bearer ${ANALYST_KEY}` };
    const port = new URL(http.url).port;
    expect(await rawPost(http, { ...auth, origin: 'https://evil.example.com' })).toBe(403);
    expect(await rawPost(http, { ...auth, origin: 'null' })).toBe(403);
    expect(await rawPost(http, { ...auth, origin: `http://localhost:${Number(port) + 1}` })).toBe(403);
    expect(await rawPost(http, { ...auth, host: `evil.example.com:${port}` })).toBe(403);
    // DNS rebinding: the attacker's name resolving to 127.0.0.1 still carries its own Host.
    expect(
      await rawPost(http, {
        ...auth,
        host: `evil.example.com:${port}`,
        origin: `http://evil.example.com:${port}`,
      }),
    ).toBe(403);
    expect(
      await rawPost(http, { ...auth, origin: `http://localhost:${port}`, host: `localhost:${port}` }),
    ).toBe(200);
    expect(await rawPost(http, { ...auth, origin: `http://127.0.0.1:${port}` })).toBe(200);
  });

  it('a request that never finishes arriving gets 408; a slow answer and an open SSE stream are not cut', async () => {
    const { http } = await start({ requestTimeoutMs: 400, headersTimeoutMs: 200 });
    const auth = { authorization: `Bearer ${ANALYST_KEY}` };
    // A body announced as 1,000 bytes of which one arrives: the server answers 408 and closes.
    const late = await new Promise<number>((resolve, reject) => {
      const req = request(
        http.mcpUrl,
        {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json', 'content-length': '1000' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write('{');
    });
    expect(late).toBe(408);

    // Received in time, answered late: a score that takes seconds still comes back, and the
    // session's GET stream (a response too) stays open throughout.
    const session = await openSession(http, ANALYST_KEY);
    const stream = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(http.mcpUrl, {
        method: 'GET',
        headers: { ...session, accept: 'text/event-stream' },
      });
      req.on('response', resolve);
      req.on('error', reject);
      req.end();
    });
    expect(stream.statusCode).toBe(200);
    let streamClosed = false;
    stream.on('close', () => (streamClosed = true));
    stream.resume();
    sandbox.sift.faults.inject({ path: '/score', delayMs: 2000 });
    const call = await post(
      http,
      {
        jsonrpc: '2.0',
        id: 2,
        method: 'tools/call',
        params: { name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } },
      },
      session,
    );
    expect(call.status).toBe(200);
    const answer = (await call.json()) as { id: number; result: CallToolResult };
    expect(answer.id).toBe(2);
    expect(answer.result.isError).toBeFalsy();
    expect(streamClosed).toBe(false);
    stream.destroy();
  });

  it('http.request_timeout_ms and http.headers_timeout_ms from the configuration bound how long a request may take to arrive', async () => {
    const { http } = await start({ config: { http: { request_timeout_ms: 400, headers_timeout_ms: 200 } } });
    // A body announced as 1,000 bytes of which one arrives: 408 under the configured timeout.
    const late = await new Promise<number>((resolve, reject) => {
      const req = request(
        http.mcpUrl,
        {
          method: 'POST',
          headers: {
            authorization: `Bearer ${ANALYST_KEY}`,
            'content-type': 'application/json',
            'content-length': '1000',
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write('{');
    });
    expect(late).toBe(408);
    // The defaults keep the 30 s and 10 s an honest upload near the body limit needs at least.
    expect(DEFAULTS.http).toMatchObject({ request_timeout_ms: 30_000, headers_timeout_ms: 10_000 });
  });

  it('an oversized body gets 413 with a JSON-RPC error, not HTML', async () => {
    const { http } = await start({ config: { http: { body_limit_bytes: 10_000 } } });
    const big = { ...INIT, params: { ...INIT.params, padding: 'x'.repeat(20_000) } };
    const res = await post(http, big, { authorization: `Bearer ${ANALYST_KEY}` });
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(await res.json()).toMatchObject({ jsonrpc: '2.0', error: { code: -32600 }, id: null });
  });
});

describe('fairness: no single caller can degrade the service for others', () => {
  const ping = (id: number) => ({ jsonrpc: '2.0', id, method: 'ping' });
  const scoreCall = (id: number) => ({
    jsonrpc: '2.0',
    id,
    method: 'tools/call',
    params: { name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } },
  });
  /** A batch's answers, sent as JSON or as SSE events. */
  const answersOf = async (res: Response) => {
    const text = await res.text();
    if (!text.startsWith('event:')) return JSON.parse(text) as { id: number }[];
    return text
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => JSON.parse(line.slice(6)) as { id: number });
  };
  const logLines = (logs: string[]) => logs.map((l) => JSON.parse(l) as Record<string, unknown>);
  const scoreCalls = async (http: HttpServerHandle) => {
    const text = await (await fetch(`${http.url}/metrics`)).text();
    return [
      ...text.matchAll(/fraudgate_tool_calls_total\{tool="get_sift_score",outcome="[A-Z_a-z]+"\} (\d+)/g),
    ]
      .map((m) => Number(m[1]))
      .reduce((a, b) => a + b, 0);
  };

  it("the message past a principal's request budget gets 429 and is never dispatched; another principal is still served", async () => {
    const { http } = await start({
      config: { rate_limits: { requests: { capacity: 7, per_minute: 0.001 } } },
    });
    // initialize: one request (notifications/initialized costs nothing); five pings: six.
    const ana = await openSession(http, ANALYST_KEY);
    const pings = await post(http, [ping(20), ping(21), ping(22), ping(23), ping(24)], ana);
    expect(pings.status).toBe(200);
    await pings.text();
    const ran = await post(http, scoreCall(3), ana);
    expect(ran.status).toBe(200);
    await ran.text();
    expect(await scoreCalls(http)).toBe(1);

    const over = await post(http, scoreCall(4), ana);
    expect(over.status).toBe(429);
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await over.json()).toMatchObject({
      jsonrpc: '2.0',
      id: 4,
      error: { code: -32000, message: expect.stringContaining('rate_limits.requests') },
    });
    expect(await scoreCalls(http)).toBe(1);
    expect((await post(http, { jsonrpc: '2.0', id: 5, method: 'tools/list' }, ana)).status).toBe(429);

    // Bob's budget is his own: a real client connects, pings and calls a tool.
    const { client } = await connect(http, OTHER_ANALYST_KEY);
    await expect(client.ping()).resolves.toBeDefined();
    const result = (await client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-low-risk' },
    })) as CallToolResult;
    expect(result.isError).toBeFalsy();
  });

  it("an elicitation answer, a cancellation and a DELETE get through after the principal's request budget is spent", async () => {
    const { http } = await start({
      config: {
        approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] },
        rate_limits: { requests: { capacity: 6, per_minute: 0.001 } },
      },
    });
    // What the server answered the client's POSTs that were not requests (its answers, notifications).
    const answered: { kind: string; status: number }[] = [];
    let refusedAnswer: (status: number) => void = () => {};
    const answerRefused = new Promise<number>((resolve) => (refusedAnswer = resolve));
    const recordingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as { method?: string }) : {};
      if (init?.method === 'POST' && !body.method) {
        answered.push({ kind: 'answer', status: response.status });
        // Without this the server would wait its 60 s for the answer the budget swallowed.
        if (response.status === 429) refusedAnswer(response.status);
      }
      return response;
    };
    const transport = new StreamableHTTPClientTransport(new URL(http.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${ANALYST_KEY}` } },
      fetch: recordingFetch,
    });
    const client = new Client(
      { name: 'http-test', version: '0.0.0' },
      { capabilities: { elicitation: { form: {} } } },
    );
    let spentWith = 0;
    client.setRequestHandler(ElicitRequestSchema, async () => {
      // While the human decides, another session of the same API key spends the principal's budget.
      for (let i = 0; i < 20; i += 1) {
        const res = await post(http, INIT, { authorization: `Bearer ${ANALYST_KEY}` });
        await res.text();
        spentWith = res.status;
        if (res.status === 429) break;
      }
      return { action: 'accept', content: { confirm: true } };
    });
    await client.connect(transport);
    cleanups.push(() => client.close().catch(() => {}));
    const labelsBefore = sandbox.sift.requests('POST', '/v205/users/:id/labels').length;

    const write = await Promise.race([
      client.callTool({ name: 'apply_label', arguments: LABEL_ARGS }) as Promise<CallToolResult>,
      answerRefused.then((status) => ({ refusedAnswer: status })),
    ]);
    expect(spentWith).toBe(429);
    expect(write).not.toHaveProperty('refusedAnswer');
    expect((write as CallToolResult).isError).toBeFalsy();
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels').length).toBe(labelsBefore + 1);
    expect(answered).toContainEqual({ kind: 'answer', status: 202 });

    // The budget is spent: a request is refused, but a cancellation and the session's end are not.
    const session = {
      authorization: `Bearer ${ANALYST_KEY}`,
      'mcp-session-id': transport.sessionId!,
      'mcp-protocol-version': '2025-11-25',
    };
    expect((await post(http, ping(90), session)).status).toBe(429);
    const cancelled = await post(
      http,
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 90, reason: 'user' } },
      session,
    );
    expect(cancelled.status).toBe(202);
    const ended = await fetch(http.mcpUrl, { method: 'DELETE', headers: session });
    expect(ended.status).toBe(200);
  });

  const progress = {
    jsonrpc: '2.0',
    method: 'notifications/progress',
    params: { progressToken: 1, progress: 1 },
  };
  /** A raw session on a server whose request budget is spent (2 of 2). */
  const spentSession = async () => {
    const { http } = await start({
      config: { rate_limits: { requests: { capacity: 2, per_minute: 0.001 } } },
    });
    const ana = await openSession(http, ANALYST_KEY); // 1 of 2
    expect((await post(http, ping(2), ana)).status).toBe(200); // 2 of 2: spent
    expect((await post(http, ping(3), ana)).status).toBe(429);
    // On its own session a notification is still free.
    expect((await post(http, progress, ana)).status).toBe(202);
    return { http, ana };
  };

  it('with the budget spent, an answer to a request nobody on this replica awaits gets 429', async () => {
    const { http, ana } = await spentSession();
    const unasked = await post(http, { jsonrpc: '2.0', id: 'nobody-asked', result: {} }, ana);
    expect(unasked.status).toBe(429);
    expect(await unasked.json()).toMatchObject({ id: null, error: { data: { retryable: true } } });
    // One addressed to another replica takes the answers budget instead: dropped, as no replica has that tag.
    const elsewhere = await post(http, { jsonrpc: '2.0', id: 'fg.000000000000.1', result: {} }, ana);
    expect(elsewhere.status).toBe(202);
  });

  it('with the budget spent, a notification or DELETE naming a session unknown here gets 429', async () => {
    const { http, ana } = await spentSession();
    // Finding a session this replica does not serve is a registry read, which the budget pays.
    const unknown = { ...ana, 'mcp-session-id': randomUUID() };
    expect((await post(http, progress, unknown)).status).toBe(429);
    expect((await fetch(http.mcpUrl, { method: 'DELETE', headers: unknown })).status).toBe(429);
  });

  it('a batch of N messages costs N: all admitted or all refused', async () => {
    const { http } = await start({
      config: { rate_limits: { requests: { capacity: 5, per_minute: 0.001 } } },
    });
    const ana = await openSession(http, ANALYST_KEY); // 1 of 5 (a notification costs nothing)
    const three = await post(http, [ping(2), ping(3), ping(4)], ana); // 4 of 5
    expect(three.status).toBe(200);
    const answers = await answersOf(three);
    expect(answers.map((a) => a.id).sort()).toEqual([2, 3, 4]);
    // Two more would make 6: refused whole, with an error for each request's id (none for a notification).
    const two = await post(
      http,
      [ping(5), { jsonrpc: '2.0', method: 'notifications/progress' }, ping(6)],
      ana,
    );
    expect(two.status).toBe(429);
    const refusal = {
      code: -32000,
      message: expect.stringContaining('each request of a batch counts'),
      data: expect.objectContaining({ retryable: true }),
    };
    expect(await two.json()).toEqual([
      { jsonrpc: '2.0', id: 5, error: expect.objectContaining(refusal) },
      { jsonrpc: '2.0', id: 6, error: expect.objectContaining(refusal) },
    ]);
    // The refused batch took nothing: the one token left still admits a single message.
    expect((await post(http, ping(7), ana)).status).toBe(200);
    expect((await post(http, ping(8), ana)).status).toBe(429);
  });

  it("a batch costing more than the principal's whole request budget is refused as such, taking nothing", async () => {
    const { http } = await start({
      config: { rate_limits: { requests: { capacity: 3, per_minute: 0.001 } } },
    });
    const ana = await openSession(http, ANALYST_KEY); // 1 of 3
    const four = await post(http, [ping(2), ping(3), ping(4), ping(5)], ana);
    expect(four.status).toBe(400);
    expect(four.headers.get('retry-after')).toBeNull();
    expect(await four.json()).toMatchObject({
      jsonrpc: '2.0',
      error: {
        code: -32600,
        message: expect.stringContaining(
          'rate_limits.requests allows at most 3 at once; send at most 3 per POST',
        ),
      },
    });
    // It took nothing: the two tokens left admit a batch of two.
    expect((await post(http, [ping(6), ping(7)], ana)).status).toBe(200);
  });

  it('a batch over 20 messages is refused naming the cap, before any of it runs', async () => {
    const { http } = await start();
    const ana = await openSession(http, ANALYST_KEY);
    for (const size of [21, 101]) {
      const res = await post(
        http,
        Array.from({ length: size }, (_, i) => scoreCall(100 + i)),
        ana,
      );
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        jsonrpc: '2.0',
        error: {
          code: -32600,
          message: expect.stringContaining(`at most 20 messages (this one has ${size})`),
        },
      });
    }
    expect(await scoreCalls(http)).toBe(0);
    const twenty = await post(
      http,
      Array.from({ length: 20 }, (_, i) => ping(200 + i)),
      ana,
    );
    expect(twenty.status).toBe(200);
    expect(await answersOf(twenty)).toHaveLength(20);
  });

  it('1,000 refused tool calls write at most the log budget in lines, then one summary with the count', async () => {
    const { http, logs, stop, runtime } = await start({
      config: {
        rate_limits: {
          requests: { capacity: 5000, per_minute: 5000 },
          refusals: { capacity: 5, per_minute: 0.001 },
          tools: { get_sift_score: { capacity: 1, per_minute: 0.001 } },
        },
      },
    });
    const ana = await openSession(http, ANALYST_KEY);
    // 50 batches of 20: the first call runs, the other 999 are RATE_LIMITED.
    for (let b = 0; b < 50; b++) {
      const res = await post(
        http,
        Array.from({ length: 20 }, (_, i) => scoreCall(1000 + b * 20 + i)),
        ana,
      );
      expect(res.status).toBe(200);
      await res.text();
    }
    await stop();
    const logged = (id: string) => String(runtime.redactor.redactValue(id));
    const lines = logLines(logs);
    const callLines = lines.filter(
      (l) => l.msg === 'tool call' && l.principal === logged('ana.analyst@example.com'),
    );
    expect(callLines.filter((l) => l.outcome === 'ok')).toHaveLength(1);
    const refused = callLines.filter((l) => l.outcome !== 'ok');
    expect(refused.length).toBeLessThanOrEqual(5);
    const summaries = lines.filter((l) => l.msg === 'log lines over budget');
    expect(summaries).toHaveLength(1);
    expect(summaries[0]).toMatchObject({
      principal: logged('ana.analyst@example.com'),
      count: 999 - refused.length,
    });
    expect(summaries[0]!.by_outcome).toEqual({ RATE_LIMITED: 999 - refused.length });
  });

  it('1,000 requests over the request budget write at most the log budget in access lines, then one summary', async () => {
    const { http, logs, stop, runtime } = await start({
      config: {
        rate_limits: {
          requests: { capacity: 2, per_minute: 0.001 },
          refusals: { capacity: 5, per_minute: 0.001 },
        },
      },
    });
    const ana = await openSession(http, ANALYST_KEY);
    expect((await post(http, ping(2), ana)).status).toBe(200);
    for (let b = 0; b < 20; b++) {
      const statuses = await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const res = await post(http, scoreCall(10 + b * 50 + i), ana);
          await res.text();
          return res.status;
        }),
      );
      expect(new Set(statuses)).toEqual(new Set([429]));
    }
    expect(await scoreCalls(http)).toBe(0);
    await stop();
    const logged = (id: string) => String(runtime.redactor.redactValue(id));
    const lines = logLines(logs);
    const refused = lines.filter((l) => l.msg === 'http request' && l.status === 429);
    expect(refused.length).toBeLessThanOrEqual(5);
    expect(lines.filter((l) => l.msg === 'tool call')).toHaveLength(0);
    const summaries = lines.filter((l) => l.msg === 'log lines over budget');
    expect(summaries).toHaveLength(1);
    expect(summaries[0]).toMatchObject({
      principal: logged('ana.analyst@example.com'),
      count: 1000 - refused.length,
      by_outcome: { http_429: 1000 - refused.length },
    });
  });

  it.skipIf(!redisUp)(
    'with rate_limits.store redis, replicas share one request budget per principal',
    async () => {
      // Principals of their own: Redis keeps buckets across runs (and other worktrees share it).
      const key = `fair-${randomUUID()}`;
      const other = `fair-other-${randomUUID()}`;
      const config: DeepPartial<Config> = {
        rate_limits: { store: 'redis', requests: { capacity: 4, per_minute: 1 } },
        auth: {
          key_hashes: [
            { sha256: sha(key), principal: `${key}@example.com`, kind: 'user', role: 'analyst' },
            { sha256: sha(other), principal: `${other}@example.com`, kind: 'user', role: 'analyst' },
          ],
        },
      };
      const one = await start({ config, redisUrl: 'redis://127.0.0.1:6379' });
      const two = await start({ config, redisUrl: 'redis://127.0.0.1:6379' });
      // One request (initialize) on each replica: two of the shared four are spent.
      const onOne = await openSession(one.http, key);
      const onTwo = await openSession(two.http, key);
      // A batch of three costs three: refused whole (kept per replica, one would have three left).
      const over = await post(one.http, [ping(2), ping(3), ping(4)], onOne);
      expect(over.status).toBe(429);
      expect(await over.json()).toMatchObject(
        [2, 3, 4].map((id) => ({ id, error: { message: expect.stringContaining('rate_limits.requests') } })),
      );
      // The two left admit a batch of two on the other replica, then nothing more anywhere.
      const two2 = await post(two.http, [ping(5), ping(6)], onTwo);
      expect(two2.status).toBe(200);
      await two2.text();
      expect((await post(one.http, ping(7), onOne)).status).toBe(429);
      // Another principal on the same replicas is still served.
      const { client } = await connect(one.http, other);
      await expect(client.ping()).resolves.toBeDefined();
    },
  );

  it.skipIf(!redisUp)(
    'messages while Redis hangs wait at most one command timeout per pause',
    async () => {
      // Redis through a forwarder that can hold every byte while connections stay open (a hung Redis).
      const forwarder = await startTcpForwarder({ host: '127.0.0.1', port: 6379 });
      cleanups.push(() => forwarder.close());
      const key = `hang-${randomUUID()}`;
      const { http, logs } = await start({
        config: {
          rate_limits: { store: 'redis' },
          auth: {
            key_hashes: [
              { sha256: sha(key), principal: `${key}@example.com`, kind: 'user', role: 'analyst' },
            ],
          },
        },
        redisUrl: `redis://127.0.0.1:${forwarder.port}`,
      });
      const session = await openSession(http, key);
      const timedPing = async (id: number) => {
        const started = performance.now();
        const res = await post(http, ping(id), session);
        await res.text();
        return { status: res.status, ms: performance.now() - started };
      };
      expect((await timedPing(2)).status).toBe(200);

      forwarder.stall();
      // The first message finds the hang (it waits for its take's command timeout); then one every
      // 100 ms for longer than the pause after it, so some arrive once the store may be asked again.
      const answers = [await timedPing(3)];
      const later: Promise<{ status: number; ms: number }>[] = [];
      for (let i = 0; i < 70; i += 1) {
        later.push(timedPing(100 + i));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      answers.push(...(await Promise.all(later)));
      forwarder.restore();

      // Every ping answered (from this process's budget), and only the first waited on Redis.
      expect(new Set(answers.map((a) => a.status))).toEqual(new Set([200]));
      expect(answers.filter((a) => a.ms > 1000)).toHaveLength(1);
      expect(logs.filter((l) => l.includes('request budgets are kept in this process'))).toHaveLength(1);
    },
    40_000,
  );
});

describe('health and metrics', () => {
  it('/healthz needs no auth; /readyz checks what the replica needs and reports upstream reachability', async () => {
    const { http } = await start();
    expect(await (await fetch(`${http.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${http.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ready',
      checks: { store: 'ok', audit: 'ok' },
      upstreams: { sift: 'ok', segment: 'ok', salesforce: 'ok' },
    });

    // A vendor outage is every replica's: it must not take them all out of the load balancer.
    const siftDown = await start({ config: { sift: { base_url: 'http://127.0.0.1:1' } } });
    const stillReady = await fetch(`${siftDown.http.url}/readyz`);
    expect(stillReady.status).toBe(200);
    const body = (await stillReady.json()) as { status: string; checks: Record<string, string> };
    expect(body).toMatchObject({
      status: 'ready',
      checks: { store: 'ok', audit: 'ok' },
      upstreams: { sift: 'unreachable', segment: 'ok', salesforce: 'ok' },
    });
    expect(body.checks).not.toHaveProperty('sift');
    const text = await (await fetch(`${siftDown.http.url}/metrics`)).text();
    expect(text).toContain('fraudgate_upstream_reachable{service="sift"} 0');
    expect(text).toContain('fraudgate_upstream_reachable{service="salesforce"} 1');
    expect(text.match(/# TYPE fraudgate_upstream_reachable gauge/g)).toHaveLength(1);
  });

  it('a flood of /readyz reuses one round of upstream probes', async () => {
    let connects = 0;
    const counter = createNetServer((socket) => {
      connects += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => counter.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => counter.close(() => resolve())));
    const siftUrl = `http://127.0.0.1:${(counter.address() as AddressInfo).port}`;
    const readyz = async (url: string) => {
      const res = await fetch(`${url}/readyz`);
      return (await res.json()) as { upstreams: Record<string, string> };
    };

    // A period longer than the test: every request after the first reuses its answer.
    const cached = await start({ config: { sift: { base_url: siftUrl } }, upstreamProbeTtlMs: 3_600_000 });
    const answers = await Promise.all(Array.from({ length: 20 }, () => readyz(cached.http.url)));
    for (let i = 0; i < 20; i += 1) answers.push(await readyz(cached.http.url));
    await fetch(`${cached.http.url}/metrics`);
    expect(answers.every((a) => a.upstreams.sift === 'ok')).toBe(true);
    expect(connects).toBe(1);

    // Without the reuse, each request is its own connect.
    connects = 0;
    const uncached = await start({ config: { sift: { base_url: siftUrl } }, upstreamProbeTtlMs: 0 });
    for (let i = 0; i < 5; i += 1) await readyz(uncached.http.url);
    expect(connects).toBe(5);
  });

  it('a flood of /readyz pings the store at most once a second', async () => {
    const { runtime, http } = await start();
    let pings = 0;
    const store = runtime.store as { ping: () => Promise<void> };
    const ping = store.ping.bind(store);
    store.ping = () => {
      pings += 1;
      return ping();
    };
    const readyz = async () => (await fetch(`${http.url}/readyz`)).status;
    const started = performance.now();
    const statuses = await Promise.all(Array.from({ length: 30 }, readyz));
    for (let i = 0; i < 10; i += 1) statuses.push(await readyz());
    const seconds = (performance.now() - started) / 1000;
    expect(statuses.every((status) => status === 200)).toBe(true);
    expect(pings).toBeGreaterThanOrEqual(1);
    expect(pings).toBeLessThanOrEqual(Math.ceil(seconds));
    // After the period, the next request pings afresh (a store that went away shows within it).
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const before = pings;
    await readyz();
    expect(pings).toBe(before + 1);
  });

  it('/readyz joins a store ping still in flight, however slow; the period runs from its answer', async () => {
    // Scaled down: a ping of 3 s against a 1 s period, asked at 0, 1.2 and 2.4 s.
    const PING_MS = 900;
    const TTL_MS = 300;
    const { runtime, http } = await start({ readinessProbeTtlMs: TTL_MS });
    let pings = 0;
    const store = runtime.store as { ping: () => Promise<void> };
    const ping = store.ping.bind(store);
    store.ping = async () => {
      pings += 1;
      await new Promise((resolve) => setTimeout(resolve, PING_MS));
      return ping();
    };
    const readyz = async () => (await fetch(`${http.url}/readyz`)).status;
    const asked: Promise<number>[] = [];
    for (const at of [0, 1.2, 2.4]) {
      await new Promise((resolve) => setTimeout(resolve, at === 0 ? 0 : 1.2 * TTL_MS));
      asked.push(readyz());
    }
    expect(await Promise.all(asked)).toEqual([200, 200, 200]);
    expect(pings).toBe(1);
    // A period after it answered, the next request pings afresh.
    await new Promise((resolve) => setTimeout(resolve, TTL_MS + 50));
    expect(await readyz()).toBe(200);
    expect(pings).toBe(2);
  });

  it('/metrics shows calls by tool and outcome, latency, pending approvals, upstream errors and rate limits', async () => {
    const { http } = await start({
      config: { rate_limits: { tools: { get_sift_score: { capacity: 2, per_minute: 1 } } } },
    });
    const { client } = await connect(http, ANALYST_KEY);
    await client.callTool({ name: 'get_sift_score', arguments: { user_id: 'sandbox-high-risk' } });
    await client.callTool({ name: 'get_sift_score', arguments: { user_id: 'has space' } });
    sandbox.sift.faults.inject({ status: 500, path: '/score' });
    await client.callTool({ name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } });
    await client.callTool({ name: 'get_sift_score', arguments: { user_id: 'sandbox-low-risk' } });
    await client.callTool({
      name: 'apply_label',
      arguments: LABEL_ARGS,
    });
    const text = await (await fetch(`${http.url}/metrics`)).text();
    expect(text).toContain('fraudgate_tool_calls_total{tool="get_sift_score",outcome="ok"} 1');
    expect(text).toContain('fraudgate_tool_calls_total{tool="get_sift_score",outcome="INVALID_INPUT"} 1');
    expect(text).toContain('fraudgate_tool_calls_total{tool="get_sift_score",outcome="RATE_LIMITED"} 1');
    expect(text).toMatch(/fraudgate_upstream_errors_total\{service="sift"\} 1/);
    expect(text).toContain(
      'fraudgate_rate_limit_rejections_total{tool="get_sift_score",code="RATE_LIMITED"} 1',
    );
    expect(text).toContain('fraudgate_tool_calls_total{tool="apply_label",outcome="APPROVAL_PENDING"} 1');
    expect(text).toContain('fraudgate_tool_call_duration_seconds_count{tool="get_sift_score"} 4');
    expect(text).toContain('fraudgate_tool_call_duration_seconds_bucket{tool="get_sift_score",le="+Inf"} 4');
    expect(text).toContain('fraudgate_pending_approvals 1');
    expect(text).toContain('fraudgate_mcp_sessions 1');
  });
});

describe('graceful shutdown', () => {
  it('finishes a call in flight, refuses new work, then stops', async () => {
    const { http } = await start();
    const { client } = await connect(http, ANALYST_KEY);
    sandbox.sift.faults.inject({ delayMs: 600, path: '/score' });
    const call = client.callTool({ name: 'get_sift_score', arguments: { user_id: 'sandbox-high-risk' } });
    await new Promise((r) => setTimeout(r, 150));
    const closed = http.close();
    await new Promise((r) => setTimeout(r, 50));
    // New work while draining: the listener is closed (refused) or a kept-alive socket gets 503.
    const during = await fetch(`${http.url}/mcp`, { method: 'POST', body: '{}' }).then(
      (r) => r.status,
      () => 'refused',
    );
    expect([503, 'refused']).toContain(during);
    const result = (await call) as CallToolResult;
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ user_id: 'sandbox-high-risk' });
    await closed;
    // The session stays in the registry: the client continues on another replica or after a restart.
    expect(await http.sessionCount()).toBe(1);
    await expect(fetch(`${http.url}/healthz`)).rejects.toThrow();
  });

  it("while draining: /readyz says draining, and a waiting call's own elicitation answer gets through", async () => {
    const { http } = await start({
      config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
    });
    const transport = new StreamableHTTPClientTransport(new URL(http.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${ANALYST_KEY}` } },
    });
    const client = new Client(
      { name: 'http-test', version: '0.0.0' },
      { capabilities: { elicitation: { form: {} } } },
    );
    let closed: Promise<void> | undefined;
    const duringDrain: { ready?: { status: number; body: unknown }; newWork?: number } = {};
    client.setRequestHandler(ElicitRequestSchema, async () => {
      // SIGTERM arrives while the call waits for this answer.
      closed = http.close();
      await new Promise((r) => setTimeout(r, 50));
      const ready = await fetch(`${http.url}/readyz`);
      duringDrain.ready = { status: ready.status, body: await ready.json() };
      const other = await fetch(http.mcpUrl, {
        method: 'POST',
        // New work on the same session: only answers to this replica's own requests get through.
        headers: {
          authorization: `Bearer ${ANALYST_KEY}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': transport.sessionId!,
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
      duringDrain.newWork = other.status;
      return { action: 'accept', content: { confirm: true } };
    });
    await client.connect(transport);
    cleanups.push(() => client.close().catch(() => {}));
    const labelsBefore = sandbox.sift.requests('POST', '/v205/users/:id/labels').length;

    const write = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;

    expect(duringDrain.ready).toMatchObject({ status: 503, body: { status: 'draining' } });
    expect(duringDrain.newWork).toBe(503);
    expect(write.isError).toBeFalsy();
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels').length).toBe(labelsBefore + 1);
    await closed;
    await expect(fetch(`${http.url}/healthz`)).rejects.toThrow();
  });
});
