/**
 * Session state on PostgreSQL, shared by every replica. The relay is LISTEN/NOTIFY on one channel
 * per schema: a replica LISTENs on a dedicated connection (reconnecting by itself after a restart or
 * failover) and keeps the messages addressed to its own tag.
 */
import pg from 'pg';
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

/** Serialises session creation fleet-wide, so the caps hold under concurrent initializations. */
const CREATE_LOCK = 72270150;
/** Serialises the table set-up when several replicas start at once. */
const SETUP_LOCK = 72270151;

interface RelayEnvelope extends RelayedMessage {
  to: string;
}

function createPostgresRelay(
  connectionString: string,
  schema: string,
  pool: pg.Pool,
  onError: (error: Error) => void,
): SessionRelay {
  const channel = `${schema}_mcp_relay`;
  const listeners = new Map<string, (message: RelayedMessage) => void>();
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;

  /** Opens the LISTEN connection; on failure the caller schedules another attempt. */
  async function connectListener(): Promise<void> {
    const c = new pg.Client({ connectionString });
    // A lost connection (restart, failover, pg_terminate_backend) must not crash the process: reconnect.
    c.on('error', (error) => {
      onError(error);
      lost(c);
    });
    c.on('end', () => lost(c));
    c.on('notification', (n) => {
      if (!n.payload) return;
      let envelope: RelayEnvelope;
      try {
        envelope = JSON.parse(n.payload) as RelayEnvelope;
      } catch {
        return;
      }
      listeners.get(envelope.to)?.({ session_id: envelope.session_id, message: envelope.message });
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}`);
    } catch (error) {
      await c.end().catch(() => undefined);
      throw error;
    }
    if (closed) await c.end().catch(() => undefined);
    else client = c;
  }

  function lost(c: pg.Client) {
    if (client !== c) return;
    client = undefined;
    void c.end().catch(() => undefined);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      connectListener().catch((error: Error) => {
        onError(error);
        scheduleReconnect();
      });
    }, 500);
    retry.unref();
  }

  return {
    async publish(replica, message) {
      const payload = JSON.stringify({ to: replica, ...message } satisfies RelayEnvelope);
      await pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    async listen(replica, onMessage) {
      listeners.set(replica, onMessage);
      if (!client) await connectListener();
    },
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      listeners.clear();
      await client?.end().catch(() => undefined);
      client = undefined;
    },
  };
}

/** Connect (a small pool), create the session tables if needed, and return the session stores. */
export async function openPostgresSessionStores(
  connectionString: string,
  options: {
    /** Tables live in this schema (created if needed); default `public`. */
    schema?: string;
    poolSize?: number;
    /** Told about lost connections (the pool and the relay reconnect by themselves). */
    onError?: (error: Error) => void;
  } = {},
): Promise<SessionStores> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  const onError = options.onError ?? (() => undefined);
  const pool = new pg.Pool({
    connectionString,
    max: options.poolSize ?? 4,
    options: `-c search_path=${schema}`,
    connectionTimeoutMillis: 3000,
  });
  // Without a listener an idle client's lost connection is an unhandled 'error' event: a crash.
  pool.on('error', onError);
  const setup = await pool.connect();
  try {
    await setup.query('SELECT pg_advisory_lock($1)', [SETUP_LOCK]);
    await setup.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    for (const migration of SESSION_MIGRATIONS) await setup.query(migration.sql);
  } finally {
    await setup.query('SELECT pg_advisory_unlock($1)', [SETUP_LOCK]).catch(() => undefined);
    setup.release();
  }

  const rows = async <T>(sql: string, params: unknown[] = []) => (await pool.query(sql, params)).rows as T[];
  const relay = createPostgresRelay(connectionString, schema, pool, onError);

  return {
    relay,
    mcpSessions: {
      async create(session, caps) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await client.query('SELECT pg_advisory_xact_lock($1)', [CREATE_LOCK]);
          const counts = await client.query<{ mine: string; total: string }>(
            `SELECT count(*) FILTER (WHERE principal_id = $1) AS mine, count(*) AS total FROM mcp_sessions`,
            [session.principal.id],
          );
          const mine = Number(counts.rows[0]?.mine ?? 0);
          const total = Number(counts.rows[0]?.total ?? 0);
          if (mine >= caps.perPrincipal || total >= caps.total) {
            await client.query('ROLLBACK');
            return mine >= caps.perPrincipal
              ? { ok: false as const, limit: 'per_principal' as const, open: mine, max: caps.perPrincipal }
              : { ok: false as const, limit: 'total' as const, open: total, max: caps.total };
          }
          await client.query(
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
          await client.query('COMMIT');
          return { ok: true as const };
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        } finally {
          client.release();
        }
      },
      async get(id) {
        const [row] = await rows<McpSessionRow>('SELECT * FROM mcp_sessions WHERE id = $1', [id]);
        return row ? mcpSessionFromRow(row) : undefined;
      },
      async touch(id, at, used) {
        await pool.query(
          `UPDATE mcp_sessions SET last_used_at = greatest(last_used_at, $1), used = greatest(used, $2)
           WHERE id = $3`,
          [at, used ? 1 : 0, id],
        );
      },
      async delete(id) {
        return ((await pool.query('DELETE FROM mcp_sessions WHERE id = $1', [id])).rowCount ?? 0) > 0;
      },
      async reap(now, timeouts) {
        const removed = await rows<{ id: string }>(
          `DELETE FROM mcp_sessions WHERE (used = 0 AND last_used_at < $1) OR last_used_at < $2 RETURNING id`,
          [now - timeouts.unusedMs, now - timeouts.idleMs],
        );
        return removed.map((r) => r.id);
      },
      async count() {
        const [row] = await rows<{ n: string }>('SELECT count(*) AS n FROM mcp_sessions');
        return Number(row?.n ?? 0);
      },
    },
    consoleSessions: {
      async create(session, maxSessions) {
        await pool.query(
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
        await pool.query(
          `DELETE FROM console_sessions WHERE id_hash IN (
             SELECT id_hash FROM console_sessions ORDER BY created_at DESC OFFSET $1)`,
          [maxSessions],
        );
      },
      async get(idHash, now, idleMs) {
        await pool.query('DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at <= $2', [
          now,
          now - idleMs,
        ]);
        const [row] = await rows<ConsoleSessionRow>('SELECT * FROM console_sessions WHERE id_hash = $1', [
          idHash,
        ]);
        return row ? consoleSessionFromRow(row) : undefined;
      },
      async touch(idHash, at) {
        await pool.query(
          'UPDATE console_sessions SET last_seen_at = greatest(last_seen_at, $1) WHERE id_hash = $2',
          [at, idHash],
        );
      },
      async delete(idHash) {
        await pool.query('DELETE FROM console_sessions WHERE id_hash = $1', [idHash]);
      },
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    async close() {
      await relay.close();
      await pool.end();
    },
  };
}
