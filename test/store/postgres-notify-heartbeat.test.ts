/**
 * The LISTEN connection (session relay, approval wake-ups) on a partition that sends no FIN or RST:
 * the connection goes silent without an 'error' or 'end'. Its heartbeat (a NOTIFY to itself) notices
 * that the echo stopped, the listener stops claiming to listen, reconnects once the route is back,
 * and receives notifications again. PostgreSQL is reached through a TCP forwarder the test stalls.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createNotifyListener, type NotifyListener } from '../../src/store/postgres/notify-listener.ts';
import { startTcpForwarder, type TcpForwarder } from '../helpers/tcp-forwarder.ts';
import { PG_URL, pgListening } from './engines.ts';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function until(what: string, check: () => boolean, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!pgListening)('PostgreSQL LISTEN connection on a silent partition', () => {
  it('notices the lost echo, reconnects after the partition, and receives notifications again', async () => {
    const url = new URL(PG_URL);
    const forwarder: TcpForwarder = await startTcpForwarder({ host: url.hostname, port: Number(url.port) });
    closers.push(() => forwarder.close());
    url.port = String(forwarder.port);
    const channel = `drain2_hb_${randomBytes(4).toString('hex')}`;
    const received: string[] = [];
    const errors: string[] = [];
    const listener: NotifyListener = createNotifyListener({
      connectionString: url.toString(),
      channel,
      onPayload: (p) => received.push(p),
      onError: (e) => errors.push(e.message),
      heartbeatMs: 100,
      heartbeatTimeoutMs: 400,
    });
    closers.push(() => listener.close());
    const publisher = new pg.Client({ connectionString: PG_URL });
    await publisher.connect();
    closers.push(() => publisher.end());
    const notify = (payload: string) => publisher.query('SELECT pg_notify($1, $2)', [channel, payload]);

    await listener.start();
    await notify('before');
    await until('the first notification arrives', () => received.includes('before'));
    // Heartbeats that are answered keep the connection.
    const since = listener.listeningSince();
    await new Promise((r) => setTimeout(r, 500));
    expect(listener.listeningSince()).toBe(since);

    forwarder.stall();
    await until('the listener stops claiming to listen', () => listener.listeningSince() === undefined);
    expect(errors.some((m) => /did not echo its heartbeat/.test(m))).toBe(true);

    forwarder.restore();
    await until('the listener listens again', () => listener.listeningSince() !== undefined);
    await notify('after');
    await until('a notification after the reconnect arrives', () => received.includes('after'));
  });
});
