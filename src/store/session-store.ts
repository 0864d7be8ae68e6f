/**
 * Sessions in the store, so any replica serves any request and a load balancer needs nothing sticky:
 *
 * - the MCP session registry: who opened each Streamable HTTP session and what the client negotiated
 *   (protocol version, capabilities, client info). A replica that did not see the `initialize` rebuilds
 *   the session from its row (src/transports/mcp-sessions.ts);
 * - approval-console sessions: a cookie (stored only as a SHA-256 digest) → the approver principal;
 * - the relay that carries a client's answer to a server request (an elicitation) to the replica whose
 *   tool call is waiting for it: a direct call within one process on SQLite
 *   (`sqlite/session-relay.ts`), LISTEN/NOTIFY on PostgreSQL (`postgres/session-relay.ts`).
 *
 * The registries are written once against `SqlExecutor` (src/store/sql.ts) and run on both engines;
 * `test/store/sessions.contract.test.ts` runs one contract suite against both.
 */
import type { Config, Secrets } from '../config.ts';
import type { Principal } from '../tool.ts';
import type { Migration } from './migrations.ts';
import { placeholders, type SqlExecutor } from './sql.ts';
import { createInProcessRelay } from './sqlite/session-relay.ts';
import type { Store } from './store.ts';

/** One MCP session as the registry keeps it. Times are epoch milliseconds. */
export interface McpSessionRecord {
  /** The `Mcp-Session-Id` (a random UUID). */
  id: string;
  /** The principal whose token initialized the session; every later request must present the same one. */
  principal: Principal;
  /** The protocol version the server agreed to in the `initialize` response. */
  protocol_version: string;
  /** The client's declared capabilities (e.g. `elicitation`), as sent in `initialize`. */
  client_capabilities: Record<string, unknown>;
  /** The client's name and version, as sent in `initialize`. */
  client_info: Record<string, unknown>;
  created_at: number;
  /** Last request (or, while a stream is open on some replica, its periodic heartbeat). */
  last_used_at: number;
  /** False until the client sends a request after the handshake: unused sessions are reaped quickly. */
  used: boolean;
}

/** Which cap refused a new session, and how many sessions counted against it. */
export type SessionCapRefusal = { limit: 'per_principal' | 'total'; open: number; max: number };

export interface McpSessionStore {
  /**
   * Registers a session unless a cap is reached, atomically across replicas (an advisory lock on
   * PostgreSQL, the write transaction on SQLite), so concurrent initializations cannot overshoot.
   */
  create(
    session: McpSessionRecord,
    caps: { perPrincipal: number; total: number },
  ): Promise<{ ok: true } | ({ ok: false } & SessionCapRefusal)>;
  get(id: string): Promise<McpSessionRecord | undefined>;
  /** Moves `last_used_at` forward (never back) and sets `used` when `used` is true. */
  touch(id: string, at: number, used: boolean): Promise<void>;
  /** `touch(id, at, false)` for many sessions in one statement (one commit, so one sync). */
  touchMany(ids: readonly string[], at: number): Promise<void>;
  /** Removes a session (DELETE /mcp); true when it existed. */
  delete(id: string): Promise<boolean>;
  /**
   * Removes sessions nobody uses: never used and quiet for `unusedMs`, or quiet for `idleMs`.
   * Returns the removed ids so the replica can drop its cached transports.
   */
  reap(now: number, timeouts: { unusedMs: number; idleMs: number }): Promise<string[]>;
  count(): Promise<number>;
}

/** One approval-console sign-in. The cookie itself is never stored, only its SHA-256 digest. */
export interface ConsoleSessionRecord {
  /** SHA-256 hex of the cookie value. */
  id_hash: string;
  principal: Principal;
  created_at: number;
  expires_at: number;
  last_seen_at: number;
}

export interface ConsoleSessionStore {
  /** Stores a sign-in; beyond `maxSessions` the oldest sign-ins are dropped rather than a new one refused. */
  create(session: ConsoleSessionRecord, maxSessions: number): Promise<void>;
  /** The live session for this digest (expired or idle ones are removed and not returned). */
  get(idHash: string, now: number, idleMs: number): Promise<ConsoleSessionRecord | undefined>;
  touch(idHash: string, at: number): Promise<void>;
  delete(idHash: string): Promise<void>;
}

/**
 * Carries a JSON-RPC message (a client's response to a server request) to the replica named by
 * `replica`, and news of ended sessions to every replica: PostgreSQL NOTIFY across replicas, a
 * direct call within one process on SQLite.
 */
export interface SessionRelay {
  /** Delivered at most once to the named replica if it is listening; dropped otherwise. */
  publish(replica: string, message: RelayedMessage): Promise<void>;
  /** Starts delivering messages addressed to `replica`. One listener per replica tag. */
  listen(replica: string, onMessage: (message: RelayedMessage) => void): Promise<void>;
  /** Whether a replica with this tag listens now (in any process): only then is an answer relayed to it. */
  isListening(replica: string): Promise<boolean>;
  /** Tells every listening replica (this process's too) that these sessions ended: DELETE or reaped. */
  announceEnded(sessionIds: readonly string[]): Promise<void>;
  /** Calls `onEnded` for every announcement from any replica, once `listen` was called; returns the unsubscribe. */
  onEnded(onEnded: (sessionIds: readonly string[]) => void): () => void;
  /**
   * Since when (epoch ms) this process has been receiving every announcement without a gap;
   * undefined while it is not (the PostgreSQL LISTEN connection lost, the store or relay closed).
   * A session confirmed in the registry after that time and not announced as ended still exists.
   */
  listeningSince(): number | undefined;
  close(): Promise<void>;
}

export interface RelayedMessage {
  session_id: string;
  /** The JSON-RPC message exactly as the client sent it. */
  message: unknown;
}

/** PostgreSQL NOTIFY payloads are limited to 8000 bytes; relayed answers stay well under. */
export const MAX_RELAYED_BYTES = 7000;

/** Everything session-related, on the process's store. */
export interface SessionStores {
  mcpSessions: McpSessionStore;
  consoleSessions: ConsoleSessionStore;
  relay: SessionRelay;
  /** Stops the relay; the store itself belongs to whoever opened it. */
  close(): Promise<void>;
}

const MCP_SESSIONS = `
CREATE TABLE IF NOT EXISTS mcp_sessions (
  id TEXT PRIMARY KEY, principal_id TEXT NOT NULL, principal_kind TEXT NOT NULL, principal_role TEXT NOT NULL,
  protocol_version TEXT NOT NULL, client_capabilities TEXT NOT NULL, client_info TEXT NOT NULL,
  created_at BIGINT NOT NULL, last_used_at BIGINT NOT NULL, used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mcp_sessions_principal ON mcp_sessions (principal_id);
CREATE INDEX IF NOT EXISTS mcp_sessions_last_used ON mcp_sessions (last_used_at);`;

const CONSOLE_SESSIONS = `
CREATE TABLE IF NOT EXISTS console_sessions (
  id_hash TEXT PRIMARY KEY, principal_id TEXT NOT NULL, principal_kind TEXT NOT NULL, principal_role TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_created ON console_sessions (created_at);`;

/**
 * Versions 150–199 are the sessions range (see migrations.ts); the SQL is the same on both engines.
 * `IF NOT EXISTS`: data dirs from before the migration runner already have these tables.
 */
export const SESSION_MIGRATIONS: Migration[] = [
  { version: 150, name: 'MCP session registry', sqlite: MCP_SESSIONS, postgres: MCP_SESSIONS },
  { version: 151, name: 'approval-console sessions', sqlite: CONSOLE_SESSIONS, postgres: CONSOLE_SESSIONS },
];

/** Serialises session creation fleet-wide on PostgreSQL, so the caps hold under concurrent initializations. */
const CREATE_LOCK = 72270150;

interface McpSessionRow {
  id: string;
  principal_id: string;
  principal_kind: string;
  principal_role: string;
  protocol_version: string;
  client_capabilities: string;
  client_info: string;
  created_at: number;
  last_used_at: number;
  used: number;
}

const principalOf = (row: { principal_id: string; principal_kind: string; principal_role: string }) => ({
  id: row.principal_id,
  kind: row.principal_kind as Principal['kind'],
  role: row.principal_role as Principal['role'],
});

export function createMcpSessionStore(db: SqlExecutor): McpSessionStore {
  return {
    create(session, caps) {
      return db.transaction(async (tx) => {
        if (tx.engine === 'postgres') await tx.query('SELECT pg_advisory_xact_lock($1)', [CREATE_LOCK]);
        const [counts] = await tx.query<{ mine: number | null; total: number }>(
          `SELECT sum(CASE WHEN principal_id = $1 THEN 1 ELSE 0 END) AS mine, count(*) AS total FROM mcp_sessions`,
          [session.principal.id],
        );
        const mine = Number(counts?.mine ?? 0);
        const total = Number(counts?.total ?? 0);
        if (mine >= caps.perPrincipal)
          return { ok: false as const, limit: 'per_principal' as const, open: mine, max: caps.perPrincipal };
        if (total >= caps.total)
          return { ok: false as const, limit: 'total' as const, open: total, max: caps.total };
        await tx.execute(
          `INSERT INTO mcp_sessions (id, principal_id, principal_kind, principal_role, protocol_version,
             client_capabilities, client_info, created_at, last_used_at, used)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          [
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
          ],
        );
        return { ok: true as const };
      });
    },
    async get(id) {
      const [row] = await db.query<McpSessionRow>('SELECT * FROM mcp_sessions WHERE id = $1', [id]);
      if (!row) return undefined;
      return {
        id: row.id,
        principal: principalOf(row),
        protocol_version: row.protocol_version,
        client_capabilities: JSON.parse(row.client_capabilities) as Record<string, unknown>,
        client_info: JSON.parse(row.client_info) as Record<string, unknown>,
        created_at: Number(row.created_at),
        last_used_at: Number(row.last_used_at),
        used: Number(row.used) === 1,
      };
    },
    async touch(id, at, used) {
      await db.execute(
        `UPDATE mcp_sessions SET
           last_used_at = CASE WHEN last_used_at < $1 THEN $1 ELSE last_used_at END,
           used = CASE WHEN $2 = 1 THEN 1 ELSE used END
         WHERE id = $3`,
        [at, used ? 1 : 0, id],
      );
    },
    async touchMany(ids, at) {
      if (ids.length === 0) return;
      await db.execute(
        `UPDATE mcp_sessions SET last_used_at = CASE WHEN last_used_at < $1 THEN $1 ELSE last_used_at END
         WHERE id IN (${placeholders(ids.length, 2)})`,
        [at, ...ids],
      );
    },
    async delete(id) {
      return (await db.execute('DELETE FROM mcp_sessions WHERE id = $1', [id])) > 0;
    },
    async reap(now, timeouts) {
      const removed = await db.query<{ id: string }>(
        'DELETE FROM mcp_sessions WHERE (used = 0 AND last_used_at < $1) OR last_used_at < $2 RETURNING id',
        [now - timeouts.unusedMs, now - timeouts.idleMs],
      );
      return removed.map((r) => r.id);
    },
    async count() {
      const [row] = await db.query<{ n: number }>('SELECT count(*) AS n FROM mcp_sessions');
      return Number(row?.n ?? 0);
    },
  };
}

interface ConsoleSessionRow {
  id_hash: string;
  principal_id: string;
  principal_kind: string;
  principal_role: string;
  created_at: number;
  expires_at: number;
  last_seen_at: number;
}

export function createConsoleSessionStore(db: SqlExecutor): ConsoleSessionStore {
  return {
    create(session, maxSessions) {
      return db.transaction(async (tx) => {
        await tx.execute(
          `INSERT INTO console_sessions (id_hash, principal_id, principal_kind, principal_role, created_at,
             expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [
            session.id_hash,
            session.principal.id,
            session.principal.kind,
            session.principal.role,
            session.created_at,
            session.expires_at,
            session.last_seen_at,
          ],
        );
        // LIMIT before OFFSET: SQLite needs one; a huge one means "all the rest" on both engines.
        await tx.execute(
          `DELETE FROM console_sessions WHERE id_hash IN (
             SELECT id_hash FROM console_sessions ORDER BY created_at DESC, id_hash DESC LIMIT 1000000000 OFFSET $1)`,
          [maxSessions],
        );
      });
    },
    async get(idHash, now, idleMs) {
      await db.execute('DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at <= $2', [
        now,
        now - idleMs,
      ]);
      const [row] = await db.query<ConsoleSessionRow>('SELECT * FROM console_sessions WHERE id_hash = $1', [
        idHash,
      ]);
      if (!row) return undefined;
      return {
        id_hash: row.id_hash,
        principal: principalOf(row),
        created_at: Number(row.created_at),
        expires_at: Number(row.expires_at),
        last_seen_at: Number(row.last_seen_at),
      };
    },
    async touch(idHash, at) {
      await db.execute(
        'UPDATE console_sessions SET last_seen_at = CASE WHEN last_seen_at < $1 THEN $1 ELSE last_seen_at END WHERE id_hash = $2',
        [at, idHash],
      );
    },
    async delete(idHash) {
      await db.execute('DELETE FROM console_sessions WHERE id_hash = $1', [idHash]);
    },
  };
}

/**
 * The session state of a process, on its store: the registries share the store's database; the
 * relay is in-process on SQLite (one host) and a LISTEN connection of its own on PostgreSQL.
 */
export async function openSessionStores(
  store: Pick<Store, 'engine' | 'sql' | 'isOpen'>,
  config: Pick<Config, 'store_postgres'>,
  secrets: Pick<Secrets, 'postgresUrl'>,
  onConnectionError: (error: Error) => void = () => undefined,
): Promise<SessionStores> {
  // The PostgreSQL relay (and `pg`) load only when configured, like the PostgreSQL engine itself.
  const relay =
    store.engine === 'postgres' && secrets.postgresUrl
      ? (await import('./postgres/session-relay.ts')).openPostgresSessionRelay(
          secrets.postgresUrl,
          config.store_postgres.schema,
          store.sql,
          onConnectionError,
        )
      : createInProcessRelay();
  return {
    mcpSessions: createMcpSessionStore(store.sql),
    consoleSessions: createConsoleSessionStore(store.sql),
    // A closed store answers nothing: nothing cached on the strength of the relay may be served either.
    relay: { ...relay, listeningSince: () => (store.isOpen() ? relay.listeningSince() : undefined) },
    close: () => relay.close(),
  };
}
