/**
 * One contract, two engines, for the session state: the MCP session registry (caps atomic under
 * concurrent initializations, touch, reaping), console sessions (expiry, idle, trimming) and the
 * relay between replicas. Two openers on the same database stand for two replicas. PostgreSQL runs
 * when a server listens on 127.0.0.1:5432 (FRAUDGATE_TEST_PG_URL overrides the URL), in a schema of
 * its own that is dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { openPostgresSessionStores } from '../../src/store/postgres/session-store.ts';
import type { McpSessionRecord, RelayedMessage, SessionStores } from '../../src/store/session-store.ts';
import { openSqliteSessionStores } from '../../src/store/sqlite/session-store.ts';
import type { Principal } from '../../src/tool.ts';

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const pgListening = await new Promise<boolean>((resolve) => {
  const socket = connect({ host: '127.0.0.1', port: 5432 });
  socket.setTimeout(500);
  socket.once('connect', () => {
    socket.destroy();
    resolve(true);
  });
  socket.once('error', () => resolve(false));
  socket.once('timeout', () => {
    socket.destroy();
    resolve(false);
  });
});
if (!pgListening) {
  process.stderr.write('session-store: PostgreSQL tests skipped: nothing listens on 127.0.0.1:5432\n');
}

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Two handles on one database: two replicas. */
type Open = () => Promise<[SessionStores, SessionStores]>;

const openSqlite: Open = async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-sessions-'));
  const a = openSqliteSessionStores(join(dir, 'db'));
  const b = openSqliteSessionStores(join(dir, 'db'));
  cleanups.push(async () => {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return [a, b];
};

const openPostgres: Open = async () => {
  const schema = `fg_sessions_${process.pid}_${randomBytes(3).toString('hex')}`;
  const [a, b] = await Promise.all([
    openPostgresSessionStores(PG_URL, { schema }),
    openPostgresSessionStores(PG_URL, { schema }),
  ]);
  cleanups.push(async () => {
    await a.close();
    await b.close();
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });
  return [a, b];
};

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

function contract(engine: string, open: Open, skip: boolean) {
  describe.skipIf(skip)(`session stores on ${engine}`, () => {
    it('a session created on one replica is read on the other, with what the client negotiated', async () => {
      const [a, b] = await open();
      expect(await a.mcpSessions.create(session('s1', ANA), { perPrincipal: 5, total: 10 })).toEqual({
        ok: true,
      });
      expect(await b.mcpSessions.get('s1')).toEqual(session('s1', ANA));
      expect(await b.mcpSessions.get('nope')).toBeUndefined();
      await b.mcpSessions.touch('s1', 5_000, true);
      await a.mcpSessions.touch('s1', 4_000, false); // never moves back, never un-uses
      expect(await a.mcpSessions.get('s1')).toMatchObject({ last_used_at: 5_000, used: true });
      expect(await b.mcpSessions.delete('s1')).toBe(true);
      expect(await a.mcpSessions.get('s1')).toBeUndefined();
      expect(await a.mcpSessions.delete('s1')).toBe(false);
    });

    it('caps hold under concurrent creations on two replicas: per principal, then in total', async () => {
      const [a, b] = await open();
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
      const [a, b] = await open();
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
      const [a, b] = await open();
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
      const [a, b] = await open();
      const gotA: RelayedMessage[] = [];
      const gotB: RelayedMessage[] = [];
      await a.relay.listen('aaaaaaaaaaaa', (m) => gotA.push(m));
      await b.relay.listen('bbbbbbbbbbbb', (m) => gotB.push(m));
      const message = { jsonrpc: '2.0', id: 'fg.aaaaaaaaaaaa.0', result: { action: 'accept' } };
      // Same process on SQLite (one host); on PostgreSQL it crosses connections like it crosses replicas.
      const sender = engine === 'SQLite' ? a : b;
      await sender.relay.publish('aaaaaaaaaaaa', { session_id: 's1', message });
      await vi.waitFor(() => expect(gotA).toEqual([{ session_id: 's1', message }]), { timeout: 5000 });
      expect(gotB).toEqual([]);
    });
  });
}

contract('SQLite', openSqlite, false);
contract('PostgreSQL', openPostgres, !pgListening);
