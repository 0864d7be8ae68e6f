/**
 * Issue 8, item 7, first proof: two `fraudgate serve --http` processes with their own data dirs on
 * one PostgreSQL + Redis, behind a round-robin proxy (nothing sticky), against the emulators started
 * here (live-mode config: base URLs and credentials the emulators accept, so both processes hit the
 * same Sift). The official SDK client calls `apply_label` through the proxy and waits; the same call
 * repeated on the other replica joins the same approval; an approver approves in the console of the
 * replica that is NOT running the call; both calls complete with the executed result, Sift received
 * exactly one label, and `fraudgate audit verify` passes. Skips without PostgreSQL and Redis.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { startRoundRobinProxy, type RoundRobinProxy } from '../helpers/round-robin-proxy.ts';
import { listening } from '../helpers/services.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.FRAUDGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const available = (await listening(5432)) && (await listening(6379));
if (!available) {
  process.stderr.write(
    'two-replicas: skipped: needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379\n',
  );
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
/** The audit ledger's checkpoint signing key (live mode requires one), the same for both replicas. */
const DATA_KEY = randomBytes(32).toString('hex');
const SIGNING_KEY = generateKeyPairSync('ed25519')
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const ANALYST_KEY = `e2e-analyst-${randomBytes(8).toString('hex')}`;
const APPROVER_KEY = `e2e-approver-${randomBytes(8).toString('hex')}`;
const ANALYST = 'ana.analyst@example.com';
const APPROVER = 'ola.approver@example.com';
const LABEL_ARGS = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'chargebacks on three cards',
};

interface ReplicaProcess {
  child: ChildProcess;
  url: string;
  env: NodeJS.ProcessEnv;
  stderr: () => string;
}

let sandbox: Sandbox;
let schema: string;
let root: string;
let replicas: ReplicaProcess[] = [];
let proxy: RoundRobinProxy;

function replicaEnv(name: string): NodeJS.ProcessEnv {
  const dataDir = join(root, name);
  return {
    PATH: process.env.PATH ?? '',
    HOME: root,
    FRAUDGATE_CONFIG: join(root, 'fraudgate.json'),
    FRAUDGATE_DATA_DIR: dataDir,
    FRAUDGATE_REPLICA_ID: name,
    FRAUDGATE_POSTGRES_URL: PG_URL,
    FRAUDGATE_REDIS_URL: REDIS_URL,
    FRAUDGATE_AUDIT_KEY: 'e2e-shared-audit-key-0123456789abcdef',
    FRAUDGATE_AUDIT_SIGNING_KEY: SIGNING_KEY,
    // Personal fields are encrypted at rest; every replica needs the same key.
    FRAUDGATE_DATA_KEY: DATA_KEY,
    FRAUDGATE_LOG_LEVEL: 'info',
    // Live mode, pointed at the emulators this test started: both replicas reach the same upstreams.
    SIFT_API_KEY: sandbox.secrets.siftApiKey,
    SIFT_ACCOUNT_ID: sandbox.config.sift.account_id,
    SIFT_BASE_URL: sandbox.config.sift.base_url,
    SEGMENT_WRITE_KEY: sandbox.secrets.segmentWriteKey,
    SEGMENT_PROFILE_TOKEN: sandbox.secrets.segmentProfileToken,
    SEGMENT_SPACE_ID: sandbox.config.segment.space_id,
    SEGMENT_HOST: sandbox.config.segment.host,
    SEGMENT_PROFILE_BASE_URL: sandbox.config.segment.profile_base_url,
    SALESFORCE_CLIENT_ID: sandbox.secrets.salesforceClientId,
    SALESFORCE_CLIENT_SECRET: sandbox.secrets.salesforceClientSecret,
    SALESFORCE_LOGIN_URL: sandbox.config.salesforce.login_url,
  };
}

/** Spawn `fraudgate serve --http --port 0` and wait for the line that names its MCP endpoint. */
function startReplica(name: string): Promise<ReplicaProcess> {
  const env = replicaEnv(name);
  const child = spawn(process.execPath, [CLI, 'serve', '--http', '--port', '0'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${stderr}`)), 60_000);
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /MCP endpoint \(Streamable HTTP\): (http:\/\/\S+)\/mcp/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1]!, env, stderr: () => stderr });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}:\n${stderr}`));
    });
  });
}

beforeAll(async () => {
  if (!available) return;
  sandbox = await startSandbox(DEFAULTS);
  schema = `fg_e2e_${process.pid}_${randomBytes(3).toString('hex')}`;
  root = mkdtempSync(join(tmpdir(), 'fraudgate-replicas-'));
  writeFileSync(
    join(root, 'fraudgate.json'),
    JSON.stringify({
      store: 'postgres',
      store_postgres: { schema },
      rate_limits: { store: 'redis' },
      approvals: { wait_ms: 60_000, poll_ms: 100 },
      auth: {
        key_hashes: [
          { sha256: sha(ANALYST_KEY), principal: ANALYST, kind: 'user', role: 'analyst' },
          { sha256: sha(APPROVER_KEY), principal: APPROVER, kind: 'user', role: 'approver' },
        ],
      },
    }),
  );
  // One after the other: the second also finds the migrations applied (both orders are safe).
  replicas = [await startReplica('replica-a'), await startReplica('replica-b')];
  proxy = await startRoundRobinProxy(replicas.map((r) => r.url));
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all(
    replicas.map(
      (r) =>
        new Promise<void>((resolve) => {
          if (r.child.exitCode !== null) return resolve();
          r.child.once('exit', () => resolve());
          r.child.kill('SIGTERM');
        }),
    ),
  );
  await sandbox?.close();
  if (schema) {
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }
  if (root) rmSync(root, { recursive: true, force: true });
});

async function mcpClient(url: string) {
  const client = new Client({ name: 'two-replicas-agent', version: '0' });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${ANALYST_KEY}` } },
    }),
  );
  return client;
}

/** Calls apply_label and collects the approval ids its progress messages name. */
function labelCall(client: Client, seen: Set<string>) {
  return client.callTool({ name: 'apply_label', arguments: LABEL_ARGS }, undefined, {
    timeout: 90_000,
    resetTimeoutOnProgress: true,
    onprogress: (p) => {
      const id = /\b(apr_[A-Za-z0-9]+)/.exec(p.message ?? '')?.[1];
      if (id) seen.add(id);
    },
  }) as Promise<CallToolResult>;
}

describe.skipIf(!available)(
  'two serve --http replicas on one PostgreSQL + Redis, behind a round-robin proxy',
  () => {
    it('a call waits on one replica, is approved in the other replica’s console, and runs exactly once', async () => {
      sandbox.sift.clearJournal();
      const agent = await mcpClient(proxy.url);
      const firstSeen = new Set<string>();
      const first = labelCall(agent, firstSeen);

      // Which replica runs the waiting call (its tools/call POST holds the SSE stream open there).
      let caller: number | undefined;
      for (let i = 0; i < 100 && caller === undefined; i++) {
        caller = proxy.routed.find((r) => r.request.body.includes('"tools/call"'))?.replica;
        if (caller === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(caller).toBeDefined();
      const other = replicas[1 - caller!]!;

      // The approver signs in to the OTHER replica's console.
      const signIn = await fetch(`${other.url}/console/api/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: APPROVER_KEY }),
      });
      expect(signIn.status).toBe(200);
      const { csrf_token: csrf } = (await signIn.json()) as { csrf_token: string };
      const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0]!;
      const pending = async () => {
        const res = await fetch(`${other.url}/console/api/approvals?view=pending`, { headers: { cookie } });
        return ((await res.json()) as { approvals: { id: string; requester: string }[] }).approvals.filter(
          (a) => a.requester === ANALYST,
        );
      };
      let listed = await pending();
      for (let i = 0; i < 200 && listed.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        listed = await pending();
      }
      expect(listed).toHaveLength(1);
      const approvalId = listed[0]!.id;

      // The agent repeats the same call, this time straight to the other replica: it joins the same approval.
      const again = await mcpClient(other.url);
      const secondSeen = new Set<string>();
      const second = labelCall(again, secondSeen);
      for (let i = 0; i < 100 && secondSeen.size === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect([...secondSeen]).toEqual([approvalId]);
      expect(await pending()).toHaveLength(1);

      const approve = await fetch(`${other.url}/console/api/approvals/${approvalId}/approve`, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify({ reason: 'chargeback pattern confirmed' }),
      });
      expect(approve.status).toBe(200);

      const [a, b] = await Promise.all([first, second]);
      for (const result of [a, b]) {
        expect(result.isError).toBeFalsy();
        // Stored results are masked (the waiter that did not run the call reads it from the approval).
        expect(result.structuredContent).toMatchObject({ user_id: 'sandbox-high-risk', is_bad: true });
      }
      expect([...firstSeen]).toEqual([approvalId]);
      expect(sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
      // The session went through both replicas (nothing sticky), and both replicas are still up.
      const sessionRequests = proxy.routed.filter((r) => r.request.headers['mcp-session-id']);
      expect(new Set(sessionRequests.map((r) => r.replica))).toEqual(new Set([0, 1]));
      await agent.close();
      await again.close();

      // `fraudgate audit verify` passes with each replica's configuration, on the one shared ledger
      // in PostgreSQL that holds both replicas' chains (each writer is its replica id).
      for (const r of replicas) {
        const verified = await promisify(execFile)(process.execPath, [CLI, 'audit', 'verify'], {
          env: r.env,
        }).then(
          (out) => ({ code: 0, ...out }),
          (error: { code: number; stdout: string; stderr: string }) => error,
        );
        expect(verified.code, verified.stderr).toBe(0);
        expect(verified.stdout).toMatch(/^audit ledger \(postgres\): intact, \d+ records from 2 writers/);
      }
    }, 120_000);
  },
);
