/**
 * Session state on SQLite (the data dir's database): one host, so the relay is a direct call within
 * the process. Sessions survive a restart of the process like approvals do.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import {
  consoleSessionFromRow,
  mcpSessionFromRow,
  SESSION_MIGRATIONS,
  type ConsoleSessionRow,
  type McpSessionRow,
  type RelayedMessage,
  type SessionRelay,
  type SessionStores,
} from '../session-store.ts';

/** A relay within one process: messages addressed to a replica tag go straight to its listener. */
export function createInProcessRelay(): SessionRelay {
  const listeners = new Map<string, (message: RelayedMessage) => void>();
  return {
    async publish(replica, message) {
      listeners.get(replica)?.(message);
    },
    async listen(replica, onMessage) {
      listeners.set(replica, onMessage);
    },
    async close() {
      listeners.clear();
    },
  };
}

export function openSqliteSessionStores(path: string): SessionStores {
  mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  for (const migration of SESSION_MIGRATIONS) db.exec(migration.sql);

  const insertSession = db.prepare(
    `INSERT INTO mcp_sessions (id, principal_id, principal_kind, principal_role, protocol_version,
       client_capabilities, client_info, created_at, last_used_at, used)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const countForPrincipal = db.prepare('SELECT count(*) AS n FROM mcp_sessions WHERE principal_id = ?');
  const countAll = db.prepare('SELECT count(*) AS n FROM mcp_sessions');
  const getSession = db.prepare('SELECT * FROM mcp_sessions WHERE id = ?');
  const touchSession = db.prepare(
    `UPDATE mcp_sessions SET last_used_at = max(last_used_at, ?), used = max(used, ?) WHERE id = ?`,
  );
  const deleteSession = db.prepare('DELETE FROM mcp_sessions WHERE id = ?');
  const reapSessions = db.prepare(
    `DELETE FROM mcp_sessions WHERE (used = 0 AND last_used_at < ?) OR last_used_at < ? RETURNING id`,
  );

  const insertConsole = db.prepare(
    `INSERT INTO console_sessions (id_hash, principal_id, principal_kind, principal_role, created_at,
       expires_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const sweepConsole = db.prepare('DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at <= ?');
  const trimConsole = db.prepare(
    `DELETE FROM console_sessions WHERE id_hash IN (
       SELECT id_hash FROM console_sessions ORDER BY created_at DESC LIMIT -1 OFFSET ?)`,
  );
  const getConsole = db.prepare('SELECT * FROM console_sessions WHERE id_hash = ?');
  const touchConsole = db.prepare(
    'UPDATE console_sessions SET last_seen_at = max(last_seen_at, ?) WHERE id_hash = ?',
  );
  const deleteConsole = db.prepare('DELETE FROM console_sessions WHERE id_hash = ?');

  /** BEGIN IMMEDIATE takes the write lock first, so the cap check and the insert are one step. */
  function inWriteTransaction<T>(fn: () => T): T {
    db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      db.exec('COMMIT');
      return result;
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
  }

  const relay = createInProcessRelay();
  let closed = false;
  return {
    relay,
    mcpSessions: {
      async create(session, caps) {
        return inWriteTransaction(() => {
          const mine = Number((countForPrincipal.get(session.principal.id) as { n: number }).n);
          if (mine >= caps.perPrincipal)
            return {
              ok: false as const,
              limit: 'per_principal' as const,
              open: mine,
              max: caps.perPrincipal,
            };
          const all = Number((countAll.get() as { n: number }).n);
          if (all >= caps.total)
            return { ok: false as const, limit: 'total' as const, open: all, max: caps.total };
          insertSession.run(
            session.id,
            session.principal.id,
            session.principal.kind,
            session.principal.role,
            session.protocol_version,
            JSON.stringify(session.client_capabilities),
            JSON.stringify(session.client_info),
            session.created_at,
            session.last_used_at,
            session.used ? 1 : 0,
          );
          return { ok: true as const };
        });
      },
      async get(id) {
        const row = getSession.get(id) as McpSessionRow | undefined;
        return row ? mcpSessionFromRow(row) : undefined;
      },
      async touch(id, at, used) {
        touchSession.run(at, used ? 1 : 0, id);
      },
      async delete(id) {
        return Number(deleteSession.run(id).changes) > 0;
      },
      async reap(now, timeouts) {
        const rows = reapSessions.all(now - timeouts.unusedMs, now - timeouts.idleMs) as { id: string }[];
        return rows.map((r) => r.id);
      },
      async count() {
        return Number((countAll.get() as { n: number }).n);
      },
    },
    consoleSessions: {
      async create(session, maxSessions) {
        inWriteTransaction(() => {
          insertConsole.run(
            session.id_hash,
            session.principal.id,
            session.principal.kind,
            session.principal.role,
            session.created_at,
            session.expires_at,
            session.last_seen_at,
          );
          trimConsole.run(maxSessions);
        });
      },
      async get(idHash, now, idleMs) {
        sweepConsole.run(now, now - idleMs);
        const row = getConsole.get(idHash) as ConsoleSessionRow | undefined;
        return row ? consoleSessionFromRow(row) : undefined;
      },
      async touch(idHash, at) {
        touchConsole.run(at, idHash);
      },
      async delete(idHash) {
        deleteConsole.run(idHash);
      },
    },
    async ping() {
      countAll.get();
    },
    async close() {
      if (closed) return;
      closed = true;
      await relay.close();
      db.close();
    },
  };
}
