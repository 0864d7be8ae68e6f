/**
 * Sessions in the store, so any replica serves any request and a load balancer needs nothing sticky:
 *
 * - the MCP session registry: who opened each Streamable HTTP session and what the client negotiated
 *   (protocol version, capabilities, client info). A replica that did not see the `initialize` rebuilds
 *   the session from its row (src/transports/http.ts);
 * - approval-console sessions: a cookie (stored only as a SHA-256 digest) → the approver principal;
 * - the relay that carries a client's answer to a server request (an elicitation) to the replica whose
 *   tool call is waiting for it.
 *
 * Two engines with the same shape: `sqlite/session-store.ts` (the data dir's database, one host) and
 * `postgres/session-store.ts` (several replicas). `test/store/session-store.test.ts` runs one contract
 * suite against both.
 */
import type { Principal } from '../tool.ts';

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
   * Registers a session unless a cap is reached, atomically across replicas (a row lock /
   * advisory lock on PostgreSQL, a write transaction on SQLite), so concurrent initializations
   * cannot overshoot either cap.
   */
  create(
    session: McpSessionRecord,
    caps: { perPrincipal: number; total: number },
  ): Promise<{ ok: true } | ({ ok: false } & SessionCapRefusal)>;
  get(id: string): Promise<McpSessionRecord | undefined>;
  /** Moves `last_used_at` forward (never back) and sets `used` when `used` is true. */
  touch(id: string, at: number, used: boolean): Promise<void>;
  /** Removes a session (DELETE /mcp, reaping); true when it existed. */
  delete(id: string): Promise<boolean>;
  /**
   * Removes sessions nobody uses: never used and older than `unusedMs`, or idle for `idleMs`.
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
 * `replica`: PostgreSQL NOTIFY across replicas, a direct call within one process on SQLite.
 */
export interface SessionRelay {
  /** Delivered at most once to the named replica if it is listening; dropped otherwise. */
  publish(replica: string, message: RelayedMessage): Promise<void>;
  /** Starts delivering messages addressed to `replica`. One listener per replica tag. */
  listen(replica: string, onMessage: (message: RelayedMessage) => void): Promise<void>;
  close(): Promise<void>;
}

export interface RelayedMessage {
  session_id: string;
  /** The JSON-RPC message exactly as the client sent it. */
  message: unknown;
}

/** PostgreSQL NOTIFY payloads are limited to 8000 bytes; relayed answers stay well under. */
export const MAX_RELAYED_BYTES = 7000;

/** Everything session-related one engine provides. */
export interface SessionStores {
  mcpSessions: McpSessionStore;
  consoleSessions: ConsoleSessionStore;
  relay: SessionRelay;
  /** Cheap round trip for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Session tables, versions 150–199 (the range reserved for sessions), one SQL text per engine. */
export const SESSION_MIGRATIONS = [
  {
    version: 150,
    name: 'mcp_sessions',
    sql: `
CREATE TABLE IF NOT EXISTS mcp_sessions (
  id TEXT PRIMARY KEY,
  principal_id TEXT NOT NULL,
  principal_kind TEXT NOT NULL,
  principal_role TEXT NOT NULL,
  protocol_version TEXT NOT NULL,
  client_capabilities TEXT NOT NULL,
  client_info TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  last_used_at BIGINT NOT NULL,
  used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mcp_sessions_principal ON mcp_sessions (principal_id);
CREATE INDEX IF NOT EXISTS mcp_sessions_last_used ON mcp_sessions (last_used_at);`,
  },
  {
    version: 151,
    name: 'console_sessions',
    sql: `
CREATE TABLE IF NOT EXISTS console_sessions (
  id_hash TEXT PRIMARY KEY,
  principal_id TEXT NOT NULL,
  principal_kind TEXT NOT NULL,
  principal_role TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_created ON console_sessions (created_at);`,
  },
] as const;

/** Row shape shared by both engines (BIGINT arrives as a string from `pg`, a number from SQLite). */
export interface McpSessionRow {
  id: string;
  principal_id: string;
  principal_kind: string;
  principal_role: string;
  protocol_version: string;
  client_capabilities: string;
  client_info: string;
  created_at: number | string;
  last_used_at: number | string;
  used: number | string;
}

export function mcpSessionFromRow(row: McpSessionRow): McpSessionRecord {
  return {
    id: row.id,
    principal: {
      id: row.principal_id,
      kind: row.principal_kind as Principal['kind'],
      role: row.principal_role as Principal['role'],
    },
    protocol_version: row.protocol_version,
    client_capabilities: JSON.parse(row.client_capabilities) as Record<string, unknown>,
    client_info: JSON.parse(row.client_info) as Record<string, unknown>,
    created_at: Number(row.created_at),
    last_used_at: Number(row.last_used_at),
    used: Number(row.used) === 1,
  };
}

export interface ConsoleSessionRow {
  id_hash: string;
  principal_id: string;
  principal_kind: string;
  principal_role: string;
  created_at: number | string;
  expires_at: number | string;
  last_seen_at: number | string;
}

export function consoleSessionFromRow(row: ConsoleSessionRow): ConsoleSessionRecord {
  return {
    id_hash: row.id_hash,
    principal: {
      id: row.principal_id,
      kind: row.principal_kind as Principal['kind'],
      role: row.principal_role as Principal['role'],
    },
    created_at: Number(row.created_at),
    expires_at: Number(row.expires_at),
    last_seen_at: Number(row.last_seen_at),
  };
}
