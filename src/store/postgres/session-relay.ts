/**
 * The relay on PostgreSQL: LISTEN/NOTIFY on one channel per schema. Each replica LISTENs on a
 * dedicated connection (notify-listener.ts: reconnecting by itself after a restart, a failover or
 * pg_terminate_backend) and keeps the messages addressed to its own tag; publishing is a
 * `pg_notify` through the store. The news that sessions ended goes to every replica on the same channel.
 *
 * Whether a tag is live (so an answer addressed to it is worth a NOTIFY every replica parses): the
 * LISTEN connection carries the tags it listens for in its application_name, and pg_stat_activity
 * lists it exactly while that connection is open. A process normally listens for one tag (one HTTP
 * server); tags added after the connection opened are known to their own process, and to the others
 * after the next reconnect.
 */
import type { RelayedMessage, SessionRelay } from '../session-store.ts';
import type { SqlExecutor } from '../sql.ts';
import { createNotifyListener } from './notify-listener.ts';

interface RelayEnvelope extends RelayedMessage {
  to: string;
}

/** Sessions that ended (DELETE or reaped), for every replica. */
interface EndedEnvelope {
  ended: string[];
}

/** Session ids per NOTIFY: 36-character UUIDs, well under the 8000-byte payload limit. */
const ENDED_PER_NOTIFY = 100;

/** The application_name prefix of a relay's LISTEN connection; the tags it listens for follow. */
const APPLICATION_NAME = 'fraudgate-relay';

export function openPostgresSessionRelay(
  connectionString: string,
  schema: string,
  db: SqlExecutor,
  onError: (error: Error) => void,
): SessionRelay {
  const channel = `${schema}_mcp_relay`;
  const listeners = new Map<string, (message: RelayedMessage) => void>();
  const endedListeners = new Set<(sessionIds: readonly string[]) => void>();
  const listener = createNotifyListener({
    connectionString,
    channel,
    onError,
    // ≤ 63 bytes: the prefix and four 12-hex tags.
    applicationName: () => `${APPLICATION_NAME} ${[...listeners.keys()].slice(0, 4).join(' ')}`,
    onPayload(payload) {
      let envelope: RelayEnvelope | EndedEnvelope;
      try {
        envelope = JSON.parse(payload) as RelayEnvelope | EndedEnvelope;
      } catch {
        return;
      }
      if ('ended' in envelope) {
        if (Array.isArray(envelope.ended)) for (const onEnded of endedListeners) onEnded(envelope.ended);
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
    async isListening(replica) {
      if (listeners.has(replica)) return true;
      const rows = await db.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE $1 AND strpos(application_name, $2) > 0 LIMIT 1`,
        [`${APPLICATION_NAME} %`, ` ${replica}`],
      );
      return rows.length > 0;
    },
    async announceEnded(sessionIds) {
      for (let i = 0; i < sessionIds.length; i += ENDED_PER_NOTIFY) {
        const payload = JSON.stringify({
          ended: sessionIds.slice(i, i + ENDED_PER_NOTIFY),
        } satisfies EndedEnvelope);
        await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
      }
    },
    onEnded(onEnded) {
      endedListeners.add(onEnded);
      return () => endedListeners.delete(onEnded);
    },
    listeningSince: () => listener.listeningSince(),
    async close() {
      listeners.clear();
      endedListeners.clear();
      await listener.close();
    },
  };
}
