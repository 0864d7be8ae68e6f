/**
 * Two replicas (two runtimes with their own data dirs and HTTP servers) sharing the session state in
 * one PostgreSQL schema, behind a round-robin proxy, with the official SDK client: a session opened
 * on one replica continues on the other, a client's elicitation answer that lands on the other
 * replica reaches the waiting call (relayed with NOTIFY), a console cookie works on both, another
 * principal's token gets 404 everywhere, and losing PostgreSQL answers a retryable 503 until it is
 * back. Skips without PostgreSQL on 127.0.0.1:5432.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tools as allTools } from '../../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config } from '../../src/config.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { createLogger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { openSessionStores, type SessionStores } from '../../src/store/session-store.ts';
import { openStore } from '../../src/store/store.ts';
import { startHttpServer, type HttpServerHandle } from '../../src/transports/http.ts';
import type { DeepPartial } from '../helpers/setup.ts';
import {
  startRoundRobinProxy,
  type ProxyRequest,
  type RoundRobinProxy,
} from '../helpers/round-robin-proxy.ts';
import { consoleSignIn } from '../helpers/console.ts';
import { listening } from '../helpers/services.ts';

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const pgListening = await listening(5432);
if (!pgListening) {
  process.stderr.write('replicas: skipped: these tests need PostgreSQL on 127.0.0.1:5432\n');
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const ANALYST_KEY = 'replica-analyst-key-0123456789';
const OTHER_KEY = 'replica-other-key-0123456789';
const APPROVER_KEY = 'replica-approver-key-0123456789';
const LABEL_ARGS = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'chargebacks on three cards',
};
const CONFIG: DeepPartial<Config> = {
  approvals: { wait_ms: 0, poll_ms: 20, tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] },
  sift: { timeout_ms: 5000 },
  http: { shutdown_grace_ms: 2000 },
  auth: {
    key_hashes: [
      { sha256: sha(ANALYST_KEY), principal: 'ana.analyst@example.com', kind: 'user', role: 'analyst' },
      { sha256: sha(OTHER_KEY), principal: 'bob.analyst@example.com', kind: 'user', role: 'analyst' },
      { sha256: sha(APPROVER_KEY), principal: 'ola.approver@example.com', kind: 'user', role: 'approver' },
    ],
  },
};

interface Replica {
  runtime: Runtime;
  http: HttpServerHandle;
  logs: string[];
}

let sandbox: Sandbox;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  if (pgListening) sandbox = await startSandbox(DEFAULTS);
});
afterAll(async () => {
  await sandbox?.close();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Session state on a PostgreSQL store in a schema of this test run, dropped afterwards. */
async function sessionStores(
  url = PG_URL,
  schema = `fg_replicas_${process.pid}_${randomBytes(3).toString('hex')}`,
) {
  const config = {
    ...DEFAULTS,
    store: 'postgres' as const,
    store_postgres: { ...DEFAULTS.store_postgres, schema, startup_timeout_ms: 5_000 },
  };
  const store = await openStore(config, { postgresUrl: url });
  const stores = await openSessionStores(store, config, { postgresUrl: url });
  cleanups.push(async () => {
    await stores.close();
    await store.close();
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });
  return { stores, schema };
}

async function replica(sessions: SessionStores, overrides: DeepPartial<Config> = {}): Promise<Replica> {
  const logs: string[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-replica-'));
  const config: Config = {
    ...mergeConfig(mergeConfig(DEFAULTS, CONFIG), overrides),
    ...sandbox.config,
    data_dir: dataDir,
    mode: 'sandbox',
  };
  const opened = await openRuntime({
    config,
    secrets: { ...sandbox.secrets, auditKey: 'test-audit-key' },
    tools: allTools,
    logger: createLogger({ write: (line) => logs.push(line) }),
  });
  // The replicas share the session state; everything else stays on each one's own data dir.
  const runtime: Runtime = { ...opened, sessions };
  const http = await startHttpServer(runtime, {
    host: '127.0.0.1',
    port: 0,
    extraHandlers: ({ authenticator }) => [createConsoleHandler({ runtime, authenticate: authenticator })],
  });
  cleanups.push(async () => {
    await http.close();
    await opened.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { runtime, http, logs };
}

async function twoReplicas(
  choose?: (req: ProxyRequest) => number | undefined,
  overrides: DeepPartial<Config> = {},
) {
  const { stores } = await sessionStores();
  const a = await replica(stores, overrides);
  const b = await replica(stores, overrides);
  const proxy = await startRoundRobinProxy([a.http.url, b.http.url], choose);
  cleanups.push(() => proxy.close());
  return { a, b, proxy };
}

/** An elicitation answer: accept, confirming the action. */
type ElicitAnswer = { action: 'accept'; content: Record<string, unknown> };

async function connectClient(
  proxy: RoundRobinProxy,
  token: string,
  elicit?: () => ElicitAnswer | Promise<ElicitAnswer>,
) {
  const transport = new StreamableHTTPClientTransport(new URL(`${proxy.url}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client(
    { name: 'replica-test', version: '0.0.0' },
    elicit ? { capabilities: { elicitation: { form: {} } } } : {},
  );
  if (elicit) client.setRequestHandler(ElicitRequestSchema, () => elicit());
  await client.connect(transport);
  cleanups.push(() => client.close().catch(() => {}));
  return { client, transport };
}

const sessionPosts = (proxy: RoundRobinProxy) =>
  proxy.routed.filter((r) => r.request.method === 'POST' && r.request.headers['mcp-session-id']);

describe.skipIf(!pgListening)('two replicas, one session store', () => {
  it('a session initialized on one replica continues on the other through a round-robin proxy', async () => {
    const { a, b, proxy } = await twoReplicas();
    const { client, transport } = await connectClient(proxy, ANALYST_KEY);
    for (let i = 0; i < 4; i++) {
      const result = (await client.callTool({
        name: 'get_sift_score',
        arguments: { user_id: 'sandbox-high-risk' },
      })) as CallToolResult;
      expect(result.isError).toBeFalsy();
    }
    expect(new Set(sessionPosts(proxy).map((r) => r.replica))).toEqual(new Set([0, 1]));
    // The replica that did not see initialize rebuilt the session from the registry.
    const restored = [a, b].filter((r) => r.logs.some((l) => l.includes('mcp session restored')));
    expect(restored).toHaveLength(1);

    // Another principal's token on that session id: 404 on both replicas, like an unknown id.
    for (const r of [a, b]) {
      const res = await fetch(r.http.mcpUrl, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${OTHER_KEY}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': transport.sessionId!,
          'mcp-protocol-version': '2025-11-25',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
      expect(res.status).toBe(404);
    }
    // DELETE through one replica ends the session on both.
    await transport.terminateSession();
    expect(await a.http.sessionCount()).toBe(0);
    await expect(client.ping()).rejects.toThrow();
  });

  it('a session ended on one replica (DELETE, reaped) is refused at once by the other, which served it a moment ago', async () => {
    // Each replica on its own connections and LISTEN, one schema. Only `a` reaps: sessions never
    // used are its to remove after 300 ms; `b` would wait the default 30 s.
    const { stores: storesA, schema } = await sessionStores();
    const { stores: storesB } = await sessionStores(PG_URL, schema);
    const a = await replica(storesA, { http: { unused_session_timeout_ms: 300 } });
    const b = await replica(storesB);
    /** Resolves once `b` has heard that `id` ended (its replica's listener was registered first). */
    const heardOnB = (id: string) =>
      new Promise<void>((resolve) => {
        const stop = storesB.relay.onEnded((ids) => {
          if (!ids.includes(id)) return;
          stop();
          resolve();
        });
      });
    const auth = { authorization: `Bearer ${ANALYST_KEY}` };
    const post = async (r: Replica, body: unknown, headers: Record<string, string>) => {
      const res = await fetch(r.http.mcpUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...headers,
        },
        body: JSON.stringify(body),
      });
      await res.text();
      return res;
    };
    const open = async () => {
      const init = await post(
        a,
        {
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: {
            protocolVersion: '2025-11-25',
            capabilities: {},
            clientInfo: { name: 'raw', version: '0' },
          },
        },
        auth,
      );
      const id = init.headers.get('mcp-session-id') ?? '';
      return { ...auth, 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25' };
    };
    const ping = (r: Replica, session: Record<string, string>) =>
      post(r, { jsonrpc: '2.0', id: 2, method: 'ping' }, session).then((res) => res.status);

    // DELETE on a.
    const deleted = await open();
    expect(await ping(b, deleted)).toBe(200); // restored on b, its registry row just read
    const heard = heardOnB(deleted['mcp-session-id']);
    expect((await fetch(a.http.mcpUrl, { method: 'DELETE', headers: deleted })).status).toBe(200);
    await heard;
    expect(await ping(b, deleted)).toBe(404);

    // Reaped by a: a notification leaves the session unused; b rebuilds it and reads its row.
    const unused = await open();
    const initialized = await post(b, { jsonrpc: '2.0', method: 'notifications/initialized' }, unused);
    expect(initialized.status).toBe(202);
    await heardOnB(unused['mcp-session-id']);
    expect(await ping(b, unused)).toBe(404);
  });

  it("a client's elicitation answer that lands on the other replica reaches the waiting call", async () => {
    // The proxy sends every tools/call to replica 0 and every client answer (a JSON-RPC response) to replica 1.
    const isAnswer = (body: string) => body.includes('"result"') && !body.includes('"method"');
    const { a, b, proxy } = await twoReplicas((req) =>
      req.body.includes('"tools/call"') ? 0 : isAnswer(req.body) ? 1 : undefined,
    );
    sandbox.sift.clearJournal();
    let asked = 0;
    const { client } = await connectClient(proxy, ANALYST_KEY, () => {
      asked += 1;
      return { action: 'accept', content: { confirm: true } };
    });
    const result = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ analyst: 'ana.analyst@example.com', is_bad: true });
    expect(asked).toBe(1);
    const answers = proxy.routed.filter((r) => isAnswer(r.request.body));
    expect(answers.map((r) => r.replica)).toEqual([1]);
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    // The call ran (and was audited) on replica 0 only.
    expect(a.logs.some((l) => l.includes('"tool call"') && l.includes('apply_label'))).toBe(true);
    expect(b.logs.some((l) => l.includes('"tool call"') && l.includes('apply_label'))).toBe(false);
  });

  it("with the principal's request budget spent, an elicitation answer that lands on the other replica still confirms the call", async () => {
    const isAnswer = (body: string) => body.includes('"result"') && !body.includes('"method"');
    const { a, b, proxy } = await twoReplicas(
      (req) => (req.body.includes('"tools/call"') ? 0 : isAnswer(req.body) ? 1 : undefined),
      { rate_limits: { requests: { capacity: 20, per_minute: 0.001 } } },
    );
    sandbox.sift.clearJournal();
    // While the human is asked, another agent on the same key spends the request budget on replica 1.
    const flood = async () => {
      for (let i = 0; i < 40; i += 1) {
        const res = await fetch(b.http.mcpUrl, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${ANALYST_KEY}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
          },
          body: JSON.stringify({ jsonrpc: '2.0', id: i, method: 'ping' }),
        });
        await res.text();
        if (res.status === 429) return true;
      }
      return false;
    };
    let spent = false;
    const { client } = await connectClient(proxy, ANALYST_KEY, async () => {
      spent = await flood();
      return { action: 'accept', content: { confirm: true } };
    });
    const result = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;
    expect(spent).toBe(true);
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ analyst: 'ana.analyst@example.com', is_bad: true });
    expect(proxy.routed.filter((r) => isAnswer(r.request.body)).map((r) => r.replica)).toEqual([1]);
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    expect(a.logs.some((l) => l.includes('"tool call"') && l.includes('apply_label'))).toBe(true);
  });

  it('an answer too large to relay fails the waiting call at once instead of leaving it hanging', async () => {
    const isAnswer = (body: string) => body.includes('"result"') && !body.includes('"method"');
    const { proxy } = await twoReplicas((req) =>
      req.body.includes('"tools/call"') ? 0 : isAnswer(req.body) ? 1 : undefined,
    );
    sandbox.sift.clearJournal();
    const { client } = await connectClient(proxy, ANALYST_KEY, () => ({
      action: 'accept',
      content: { confirm: true, note: 'x'.repeat(8_000) },
    }));
    const result = (await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS })) as CallToolResult;
    expect(result.isError).toBe(true);
    const text = result.content.find((c) => c.type === 'text');
    expect(JSON.parse(text?.type === 'text' ? text.text : '{}')).toMatchObject({
      error: { code: 'APPROVAL_DENIED', message: expect.stringContaining('did not confirm') },
    });
    expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
  });

  it('a console cookie from one replica works on the other', async () => {
    const { a, b } = await twoReplicas();
    const { cookie, csrf } = await consoleSignIn(a.http.url, APPROVER_KEY);
    const onB = await fetch(`${b.http.url}/console/api/session`, { headers: { cookie } });
    expect(onB.status).toBe(200);
    expect(await onB.json()).toMatchObject({
      principal: { id: 'ola.approver@example.com' },
      csrf_token: csrf,
    });
    expect((await fetch(`${b.http.url}/console/api/approvals`, { headers: { cookie } })).status).toBe(200);
    // Signing out on B ends it on A too.
    const out = await fetch(`${b.http.url}/console/api/session`, {
      method: 'DELETE',
      headers: { cookie, 'x-csrf-token': csrf },
    });
    expect(out.status).toBe(200);
    expect((await fetch(`${a.http.url}/console/api/session`, { headers: { cookie } })).status).toBe(401);
  });

  it('PostgreSQL unreachable → retryable 503s (MCP and console), no crash, and service resumes when it is back', async () => {
    const gate = await startTcpGate(5432);
    const { stores } = await sessionStores(PG_URL.replace(':5432', `:${gate.port}`));
    const r = await replica(stores);
    const proxy = await startRoundRobinProxy([r.http.url]);
    cleanups.push(() => proxy.close());
    const { client, transport } = await connectClient(proxy, ANALYST_KEY);
    await client.listTools();
    const signIn = await fetch(`${r.http.url}/console/api/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: APPROVER_KEY }),
    });
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0]!;
    const consoleSession = () => fetch(`${r.http.url}/console/api/session`, { headers: { cookie } });

    await gate.cut();
    const ping = () =>
      fetch(r.http.mcpUrl, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${ANALYST_KEY}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': transport.sessionId!,
          'mcp-protocol-version': '2025-11-25',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
    const down = await ping();
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ error: { data: { retryable: true } } });
    const consoleDown = await consoleSession();
    expect(consoleDown.status).toBe(503);
    expect(consoleDown.headers.get('retry-after')).toBeTruthy();
    expect((await fetch(`${r.http.url}/healthz`)).status).toBe(200);

    await gate.restore();
    expect((await ping()).status).toBe(200);
    expect((await consoleSession()).status).toBe(200);
    await expect(client.listTools()).resolves.toBeDefined();
  });
});

describe.skipIf(!pgListening)('forged answers to other replicas', () => {
  /**
   * Replicas A and B in two processes' worth of session state (each its own store and relay on one
   * schema), B's relay tag (learnt from the id of an elicitation B sent), a raw session on A with
   * the request budget `capacity` and the answers budget `answers`, and a count of the answers NOTIFYed on the relay channel.
   */
  async function setup(capacity: number, answers = 20) {
    const { stores: storesA, schema } = await sessionStores();
    const { stores: storesB } = await sessionStores(PG_URL, schema);
    const a = await replica(storesA, {
      rate_limits: {
        requests: { capacity, per_minute: 0.001 },
        answers: { capacity: answers, per_minute: 0.001 },
      },
    });
    const b = await replica(storesB);
    const listener = new pg.Client({ connectionString: PG_URL });
    await listener.connect();
    cleanups.push(() => listener.end());
    let relayed = 0;
    listener.on('notification', (n) => (relayed += n.payload?.startsWith('{"to":') ? 1 : 0));
    await listener.query(`LISTEN ${schema}_mcp_relay`);

    let tagOfB = '';
    const transport = new StreamableHTTPClientTransport(new URL(b.http.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${OTHER_KEY}` } },
    });
    const client = new Client(
      { name: 'replica-test', version: '0.0.0' },
      { capabilities: { elicitation: { form: {} } } },
    );
    client.setRequestHandler(ElicitRequestSchema, (_request, extra) => {
      tagOfB = /^fg\.([0-9a-f]{12})\./.exec(String(extra.requestId))?.[1] ?? '';
      return { action: 'accept', content: { confirm: true } };
    });
    await client.connect(transport);
    cleanups.push(() => client.close().catch(() => {}));
    await client.callTool({ name: 'apply_label', arguments: LABEL_ARGS });
    expect(tagOfB).toMatch(/^[0-9a-f]{12}$/);

    const post = (body: unknown, headers: Record<string, string>) =>
      fetch(a.http.mcpUrl, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${ANALYST_KEY}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...headers,
        },
        body: JSON.stringify(body),
      });
    const init = await post(
      {
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: '2025-11-25',
          capabilities: {},
          clientInfo: { name: 'raw', version: '0' },
        },
      },
      {},
    );
    await init.text();
    const session = {
      'mcp-session-id': init.headers.get('mcp-session-id') ?? '',
      'mcp-protocol-version': '2025-11-25',
    };
    await (await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
    const forged = (tag: string, n: number) =>
      Array.from({ length: 20 }, (_, i) => ({
        jsonrpc: '2.0',
        id: `fg.${tag}.${n}-${i}`,
        result: { action: 'accept', content: { pad: 'x'.repeat(6000) } },
      }));
    /** Waits until a NOTIFY sent now has come back (every earlier one has, then). */
    const settled = async () => {
      const before = relayed;
      const sql = new pg.Client({ connectionString: PG_URL });
      await sql.connect();
      await sql.query(`SELECT pg_notify($1, '{"to":"settled"}')`, [`${schema}_mcp_relay`]);
      await sql.end();
      await expect.poll(() => relayed).toBeGreaterThan(before);
      relayed -= 1;
    };
    return { tagOfB, post, session, forged, settled, relayed: () => relayed };
  }

  it('with the request budget spent, forged answers to another replica are bounded by the answers budget: 429 past it, no NOTIFY', async () => {
    const { tagOfB, post, session, forged, settled, relayed } = await setup(21);
    // initialize: 1 of 21 requests (notifications/initialized costs nothing); one answer to B: 1 of 20 answers.
    const one = await post(forged(tagOfB, 0)[0], session);
    expect(one.status).toBe(202);
    await settled();
    expect(relayed()).toBe(1); // B is live: the answer was relayed, and paid for
    // 20 pings: 21 of 21, the request budget is spent.
    const pings = Array.from({ length: 20 }, (_, i) => ({ jsonrpc: '2.0', id: 10 + i, method: 'ping' }));
    const spent = await post(pings, session);
    expect(spent.status).toBe(200);
    await spent.text();
    const over = await post({ jsonrpc: '2.0', id: 2, method: 'ping' }, session);
    expect(over.status).toBe(429);
    await over.text();
    // Answers for B take the answers budget, which the spent request budget does not touch: 20 of 20.
    const rest = await post(forged(tagOfB, 1).slice(0, 19), session);
    expect(rest.status).toBe(202);
    await settled();
    expect(relayed()).toBe(20);
    for (let p = 2; p <= 50; p += 1) {
      const res = await post(p % 2 ? forged(tagOfB, p) : forged(tagOfB, p)[0], session);
      expect(res.status).toBe(429);
      expect(await res.json()).toMatchObject({
        error: { message: expect.stringContaining('rate_limits.answers') },
      });
    }
    await settled();
    expect(relayed()).toBe(20);
  });

  it('a forged answer to a nonexistent replica is dropped, no NOTIFY', async () => {
    const { post, session, forged, settled, relayed } = await setup(100, 100);
    for (let p = 0; p < 3; p += 1) {
      const res = await post(forged('abcdefabcdef', p), session);
      expect(res.status).toBe(202);
      await res.text();
    }
    await settled();
    expect(relayed()).toBe(0);
  });
});

/** A TCP forwarder to PostgreSQL that a test can cut (every connection reset, new ones refused) and restore. */
async function startTcpGate(targetPort: number) {
  const sockets = new Set<Socket>();
  let server: Server;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((inbound) => {
        const outbound = connect({ host: '127.0.0.1', port: targetPort });
        for (const s of [inbound, outbound]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => {
            inbound.destroy();
            outbound.destroy();
          });
        }
        inbound.pipe(outbound).pipe(inbound);
      });
      server.listen(port, '127.0.0.1', () => {
        port = (server.address() as AddressInfo).port;
        resolve();
      });
    });
  await listen();
  const gate = {
    get port() {
      return port;
    },
    async cut() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
    restore: listen,
  };
  cleanups.push(async () => {
    if (server.listening) await gate.cut();
  });
  return gate;
}
