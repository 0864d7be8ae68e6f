/**
 * The session-state contract, on both engines: the MCP session registry (caps atomic under
 * concurrent creations on two replicas, touch never moves back, reaping of unused and idle sessions),
 * console sessions (shared, expiry, idle end, trimming) and the relay that carries a client's answer
 * to the replica it names. Two stores on one database stand for two replicas.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  openSessionStores,
  type McpSessionRecord,
  type RelayedMessage,
  type SessionStores,
} from '../../src/store/session-store.ts';
import { DEFAULTS } from '../../src/config.ts';
import type { Store } from '../../src/store/store.ts';
import type { Principal } from '../../src/tool.ts';
import { ENGINES, PG_URL, type Engine } from './engines.ts';

const opened: SessionStores[] = [];
afterAll(async () => {
  for (const s of opened.splice(0)) await s.close();
});

/** Two replicas' session state on one fresh database. */
async function twoReplicas(engine: Engine): Promise<[SessionStores, SessionStores]> {
  const [a, b] = await engine.open();
  // The relay needs the URL and schema of the database the replicas share.
  const secrets = engine.name === 'PostgreSQL' ? { postgresUrl: PG_URL } : {};
  const config = { store_postgres: { ...DEFAULTS.store_postgres, schema: await schemaOf(a) } };
  const pair: [SessionStores, SessionStores] = [
    await openSessionStores(a, config, secrets),
    await openSessionStores(b, config, secrets),
  ];
  opened.push(...pair);
  return pair;
}

/** The schema a PostgreSQL store works in (its search_path); unused on SQLite. */
async function schemaOf(store: Store): Promise<string> {
  if (store.engine !== 'postgres') return 'unused';
  const [row] = await store.sql.query<{ schema: string }>('SELECT current_schema() AS schema');
  return row!.schema;
}

const ANA: Principal = { id: 'ana.analyst@example.com', kind: 'user', role: 'analyst' };
const VERA: Principal = { id: 'vera.viewer@example.com', kind: 'user', role: 'viewer' };

const session = (id: string, principal: Principal, at = 1_000): McpSessionRecord => ({
  id,
  principal,
  protocol_version: '2025-11-25',
  client_capabilities: { elicitation: { form: {} } },
  client_info: { name: 'test', version: '1' },
  created_at: at,
  last_used_at: at,
  used: false,
});

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`session state contract: ${engine.name}`, () => {
    it('a session created on one replica is read on the other, with what the client negotiated', async () => {
      const [a, b] = await twoReplicas(engine);
      expect(await a.mcpSessions.create(session('s1', ANA), { perPrincipal: 5, total: 10 })).toEqual({
        ok: true,
      });
      expect(await b.mcpSessions.get('s1')).toEqual(session('s1', ANA));
      expect(await b.mcpSessions.get('nope')).toBeUndefined();
      await b.mcpSessions.touch('s1', 5_000, true);
      await a.mcpSessions.touch('s1', 4_000, false); // never moves back, never un-uses
      expect(await a.mcpSessions.get('s1')).toMatchObject({ last_used_at: 5_000, used: true });
      // The reaper's batched write: every listed session forward in one statement, never back.
      await a.mcpSessions.create(session('s2', ANA, 1_000), { perPrincipal: 5, total: 10 });
      await a.mcpSessions.create(session('s3', ANA, 1_000), { perPrincipal: 5, total: 10 });
      await b.mcpSessions.touchMany(['s1', 's2'], 4_500);
      expect(await a.mcpSessions.get('s1')).toMatchObject({ last_used_at: 5_000, used: true });
      expect(await a.mcpSessions.get('s2')).toMatchObject({ last_used_at: 4_500, used: false });
      expect(await a.mcpSessions.get('s3')).toMatchObject({ last_used_at: 1_000 });
      await b.mcpSessions.touchMany([], 9_000);
      expect(await b.mcpSessions.delete('s1')).toBe(true);
      expect(await a.mcpSessions.get('s1')).toBeUndefined();
      expect(await a.mcpSessions.delete('s1')).toBe(false);
    });

    it('caps hold under concurrent creations on two replicas: per principal, then in total', async () => {
      const [a, b] = await twoReplicas(engine);
      const caps = { perPrincipal: 3, total: 5 };
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 ? a : b).mcpSessions.create(session(`ana-${i}`, ANA), caps),
        ),
      );
      expect(results.filter((r) => r.ok)).toHaveLength(3);
      expect(results.find((r) => !r.ok)).toEqual({ ok: false, limit: 'per_principal', open: 3, max: 3 });
      await a.mcpSessions.create(session('vera-1', VERA), caps);
      await b.mcpSessions.create(session('vera-2', VERA), caps);
      expect(await a.mcpSessions.create(session('vera-3', VERA), caps)).toEqual({
        ok: false,
        limit: 'total',
        open: 5,
        max: 5,
      });
      expect(await b.mcpSessions.count()).toBe(5);
    });

    it('reaps unused sessions after the short timeout and used ones after the idle timeout', async () => {
      const [a, b] = await twoReplicas(engine);
      const caps = { perPrincipal: 10, total: 10 };
      await a.mcpSessions.create(session('unused', ANA, 1_000), caps);
      await a.mcpSessions.create(session('used', ANA, 1_000), caps);
      await a.mcpSessions.touch('used', 1_000, true);
      const timeouts = { unusedMs: 30_000, idleMs: 600_000 };
      expect(await b.mcpSessions.reap(20_000, timeouts)).toEqual([]);
      expect(await b.mcpSessions.reap(31_001, timeouts)).toEqual(['unused']);
      expect(await a.mcpSessions.reap(500_000, timeouts)).toEqual([]);
      expect(await a.mcpSessions.reap(601_001, timeouts)).toEqual(['used']);
      expect(await a.mcpSessions.count()).toBe(0);
    });

    it('console sessions: shared across replicas, end at expiry or when idle, oldest trimmed past the limit', async () => {
      const [a, b] = await twoReplicas(engine);
      const base = { principal: ANA, created_at: 1_000, expires_at: 100_000, last_seen_at: 1_000 };
      await a.consoleSessions.create({ id_hash: 'h1', ...base }, 10);
      expect(await b.consoleSessions.get('h1', 2_000, 60_000)).toEqual({ id_hash: 'h1', ...base });
      await b.consoleSessions.touch('h1', 50_000);
      expect(await a.consoleSessions.get('h1', 100_000 - 1, 60_000)).toBeDefined();
      expect(await a.consoleSessions.get('h1', 100_000, 60_000)).toBeUndefined(); // expired
      await a.consoleSessions.create({ id_hash: 'idle', ...base }, 10);
      expect(await b.consoleSessions.get('idle', 61_000, 60_000)).toBeUndefined();
      for (const [i, h] of ['x1', 'x2', 'x3'].entries())
        await a.consoleSessions.create({ id_hash: h, ...base, created_at: 2_000 + i }, 2);
      expect(await b.consoleSessions.get('x1', 3_000, 60_000)).toBeUndefined();
      expect(await b.consoleSessions.get('x3', 3_000, 60_000)).toBeDefined();
      await b.consoleSessions.delete('x3');
      expect(await a.consoleSessions.get('x3', 3_000, 60_000)).toBeUndefined();
    });

    it('the relay delivers a message to the replica it names, and only to it', async () => {
      const [a, b] = await twoReplicas(engine);
      const gotA: RelayedMessage[] = [];
      const gotB: RelayedMessage[] = [];
      await a.relay.listen('aaaaaaaaaaaa', (m) => gotA.push(m));
      await b.relay.listen('bbbbbbbbbbbb', (m) => gotB.push(m));
      const message = { jsonrpc: '2.0', id: 'fg.aaaaaaaaaaaa.0', result: { action: 'accept' } };
      // SQLite serves from one process, so its relay stays in-process; PostgreSQL crosses connections as it crosses replicas.
      const sender = engine.name === 'SQLite' ? a : b;
      await sender.relay.publish('aaaaaaaaaaaa', { session_id: 's1', message });
      await vi.waitFor(() => expect(gotA).toEqual([{ session_id: 's1', message }]), { timeout: 5000 });
      expect(gotB).toEqual([]);
    });
  });
}
