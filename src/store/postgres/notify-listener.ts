/**
 * One LISTEN connection on one PostgreSQL channel, kept open: it reconnects by itself after a
 * restart, a failover or pg_terminate_backend (a lost connection is reported, never thrown, so it
 * cannot crash the process). Shared by the session relay and the approval wake-ups; publishing is a
 * `pg_notify` through the store's pool, not through this connection.
 *
 * A connection can also die silently: a partition or a dropped route sends no FIN or RST, so no
 * 'error' or 'end' ever arrives while notifications stop. The connection therefore NOTIFYs itself
 * on a private channel every `heartbeatMs`; an echo that does not come back within
 * `heartbeatTimeoutMs` counts as a lost connection (reconnect). TCP keep-alive backs this up.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export interface NotifyListener {
  /** Connect and LISTEN unless already listening; rejects if the first connection fails (it retries). */
  start(): Promise<void>;
  /** When (epoch ms) the current connection's LISTEN took effect; undefined while not listening. */
  listeningSince(): number | undefined;
  close(): Promise<void>;
}

const NOTIFY_HEARTBEAT_DEFAULTS = { heartbeatMs: 5_000, heartbeatTimeoutMs: 5_000 };

export function createNotifyListener(options: {
  connectionString: string;
  channel: string;
  onPayload: (payload: string) => void;
  onError: (error: Error) => void;
  /** The connection's application_name, read at each (re)connect: how other processes see it listen. */
  applicationName?: () => string;
  /** How often the connection checks itself with a NOTIFY round trip. */
  heartbeatMs?: number;
  /** How long an echo (or connecting and LISTEN) may take before the connection counts as lost. */
  heartbeatTimeoutMs?: number;
}): NotifyListener {
  const { connectionString, channel, onPayload, onError } = options;
  const heartbeatMs = options.heartbeatMs ?? NOTIFY_HEARTBEAT_DEFAULTS.heartbeatMs;
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? NOTIFY_HEARTBEAT_DEFAULTS.heartbeatTimeoutMs;
  // Private to this listener, so other replicas never receive its heartbeats (and short: ≤ 63 bytes).
  const heartbeatChannel = `fg_heartbeat_${randomBytes(8).toString('hex')}`;
  let client: pg.Client | undefined;
  let since: number | undefined;
  let connecting: Promise<void> | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  let ticker: NodeJS.Timeout | undefined;
  /** The deadline of the heartbeat awaiting its echo. */
  let awaitingEcho: NodeJS.Timeout | undefined;

  async function connect(): Promise<void> {
    const c = new pg.Client({
      connectionString,
      ...(options.applicationName ? { application_name: options.applicationName() } : {}),
      keepAlive: true,
      keepAliveInitialDelayMillis: heartbeatMs,
    });
    c.on('error', (error) => {
      onError(error);
      lost(c);
    });
    c.on('end', () => lost(c));
    c.on('notification', (n) => {
      if (n.channel === heartbeatChannel) {
        if (client === c) clearEchoDeadline();
        return;
      }
      if (n.payload) onPayload(n.payload);
    });
    // A server that never answers (the partition is still there) must not hang the reconnect loop:
    // ending a client that is connecting or has a query in flight destroys its socket.
    const deadline = setTimeout(() => void c.end().catch(() => undefined), heartbeatTimeoutMs * 2);
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}; LISTEN ${heartbeatChannel}`);
    } catch (error) {
      await c.end().catch(() => undefined);
      throw error;
    } finally {
      clearTimeout(deadline);
    }
    if (closed) await c.end().catch(() => undefined);
    else {
      client = c;
      // Taken after LISTEN answered: every notification sent from now on reaches this connection.
      since = Date.now();
      startHeartbeat(c);
    }
  }

  function clearEchoDeadline() {
    if (awaitingEcho) clearTimeout(awaitingEcho);
    awaitingEcho = undefined;
  }

  function startHeartbeat(c: pg.Client) {
    stopHeartbeat();
    ticker = setInterval(() => {
      if (client !== c || awaitingEcho) return;
      awaitingEcho = setTimeout(() => {
        awaitingEcho = undefined;
        onError(
          new Error(
            `the LISTEN connection for ${channel} did not echo its heartbeat within ${heartbeatTimeoutMs} ms; reconnecting`,
          ),
        );
        lost(c);
      }, heartbeatTimeoutMs);
      awaitingEcho.unref();
      // Its failure ends the connection ('error'/'end' → lost); the echo deadline covers silence.
      c.query('SELECT pg_notify($1, $2)', [heartbeatChannel, '']).catch(() => undefined);
    }, heartbeatMs);
    ticker.unref();
  }

  function stopHeartbeat() {
    if (ticker) clearInterval(ticker);
    ticker = undefined;
    clearEchoDeadline();
  }

  function lost(c: pg.Client) {
    if (client !== c) return;
    client = undefined;
    since = undefined;
    stopHeartbeat();
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
      stopHeartbeat();
      if (retry) clearTimeout(retry);
      await client?.end().catch(() => undefined);
      client = undefined;
    },
  };
}
