/**
 * One LISTEN connection on one PostgreSQL channel, kept open: it reconnects by itself after a
 * restart, a failover or pg_terminate_backend (a lost connection is reported, never thrown, so it
 * cannot crash the process). Shared by the session relay and the approval wake-ups; publishing is a
 * `pg_notify` through the store's pool, not through this connection.
 */
import pg from 'pg';

export interface NotifyListener {
  /** Connect and LISTEN unless already listening; rejects if the first connection fails (it retries). */
  start(): Promise<void>;
  /** When (epoch ms) the current connection's LISTEN took effect; undefined while not listening. */
  listeningSince(): number | undefined;
  close(): Promise<void>;
}

export function createNotifyListener(options: {
  connectionString: string;
  channel: string;
  onPayload: (payload: string) => void;
  onError: (error: Error) => void;
}): NotifyListener {
  const { connectionString, channel, onPayload, onError } = options;
  let client: pg.Client | undefined;
  let since: number | undefined;
  let connecting: Promise<void> | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;

  async function connect(): Promise<void> {
    const c = new pg.Client({ connectionString });
    c.on('error', (error) => {
      onError(error);
      lost(c);
    });
    c.on('end', () => lost(c));
    c.on('notification', (n) => {
      if (n.payload) onPayload(n.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}`);
    } catch (error) {
      await c.end().catch(() => undefined);
      throw error;
    }
    if (closed) await c.end().catch(() => undefined);
    else {
      client = c;
      // Taken after LISTEN answered: every notification sent from now on reaches this connection.
      since = Date.now();
    }
  }

  function lost(c: pg.Client) {
    if (client !== c) return;
    client = undefined;
    since = undefined;
    void c.end().catch(() => undefined);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      connect().catch((error: Error) => {
        onError(error);
        scheduleReconnect();
      });
    }, 500);
    retry.unref();
  }

  return {
    async start() {
      if (client || closed) return;
      connecting ??= connect().finally(() => {
        connecting = undefined;
      });
      try {
        await connecting;
      } catch (error) {
        scheduleReconnect();
        throw error;
      }
    },
    listeningSince: () => since,
    async close() {
      closed = true;
      since = undefined;
      if (retry) clearTimeout(retry);
      await client?.end().catch(() => undefined);
      client = undefined;
    },
  };
}
