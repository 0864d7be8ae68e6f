/**
 * The relay on PostgreSQL: LISTEN/NOTIFY on one channel per schema. Each replica LISTENs on a
 * dedicated connection (reconnecting by itself after a restart, a failover or pg_terminate_backend)
 * and keeps the messages addressed to its own tag; publishing is a `pg_notify` through the store.
 */
import pg from 'pg';
import type { RelayedMessage, SessionRelay } from '../session-store.ts';
import type { SqlExecutor } from '../sql.ts';

interface RelayEnvelope extends RelayedMessage {
  to: string;
}

export function openPostgresSessionRelay(
  connectionString: string,
  schema: string,
  db: SqlExecutor,
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
      await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
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
