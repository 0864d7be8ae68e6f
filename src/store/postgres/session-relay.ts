/**
 * The relay on PostgreSQL: LISTEN/NOTIFY on one channel per schema. Each replica LISTENs on a
 * dedicated connection (notify-listener.ts: reconnecting by itself after a restart, a failover or
 * pg_terminate_backend) and keeps the messages addressed to its own tag; publishing is a
 * `pg_notify` through the store.
 */
import type { RelayedMessage, SessionRelay } from '../session-store.ts';
import type { SqlExecutor } from '../sql.ts';
import { createNotifyListener } from './notify-listener.ts';

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
  const listener = createNotifyListener({
    connectionString,
    channel,
    onError,
    onPayload(payload) {
      let envelope: RelayEnvelope;
      try {
        envelope = JSON.parse(payload) as RelayEnvelope;
      } catch {
        return;
      }
      listeners.get(envelope.to)?.({ session_id: envelope.session_id, message: envelope.message });
    },
  });

  return {
    async publish(replica, message) {
      const payload = JSON.stringify({ to: replica, ...message } satisfies RelayEnvelope);
      await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    async listen(replica, onMessage) {
      listeners.set(replica, onMessage);
      await listener.start();
    },
    async close() {
      listeners.clear();
      await listener.close();
    },
  };
}
