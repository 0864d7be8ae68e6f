/**
 * Issue 8, item 7, first proof: two `fraudgate serve --http` processes with their own data dirs on
 * one PostgreSQL + Redis, behind a round-robin proxy (nothing sticky), against the emulators started
 * here (live-mode config: base URLs and credentials the emulators accept, so both processes hit the
 * same Sift). The official SDK client calls `apply_label` through the proxy and waits; the same call
 * repeated on the other replica joins the same approval; an approver approves in the console of the
 * replica that is NOT running the call; both calls complete with the executed result, Sift received
 * exactly one label, and `fraudgate audit verify` passes. Skips without PostgreSQL and Redis.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { createFleet, fleetServicesAvailable, type Fleet, type ReplicaProcess } from '../helpers/replicas.ts';
import { consoleSignIn } from '../helpers/console.ts';
import { startRoundRobinProxy, type RoundRobinProxy } from '../helpers/round-robin-proxy.ts';

const available = await fleetServicesAvailable('two-replicas');

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
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

let sandbox: Sandbox;
let fleet: Fleet;
let replicas: ReplicaProcess[] = [];
let proxy: RoundRobinProxy;

beforeAll(async () => {
  if (!available) return;
  sandbox = await startSandbox(DEFAULTS);
  fleet = createFleet({
    sandbox,
    prefix: 'fg_e2e',
    env: { FRAUDGATE_LOG_LEVEL: 'info' },
    config: {
      approvals: { wait_ms: 60_000, poll_ms: 100 },
      auth: {
        key_hashes: [
          { sha256: sha(ANALYST_KEY), principal: ANALYST, kind: 'user', role: 'analyst' },
          { sha256: sha(APPROVER_KEY), principal: APPROVER, kind: 'user', role: 'approver' },
        ],
      },
    },
  });
  // One after the other: the second also finds the migrations applied (both orders are safe).
  replicas = [await fleet.start('replica-a'), await fleet.start('replica-b')];
  proxy = await startRoundRobinProxy(replicas.map((r) => r.url));
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await fleet?.close();
  await sandbox?.close();
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
      const { cookie, csrf } = await consoleSignIn(other.url, APPROVER_KEY);
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
        const verified = await fleet.cli(r, ['audit', 'verify']);
        expect(verified.code, verified.stderr).toBe(0);
        expect(verified.stdout).toMatch(/^audit ledger \(postgres\): intact, \d+ records from 2 writers/);
      }
    }, 120_000);
  },
);
