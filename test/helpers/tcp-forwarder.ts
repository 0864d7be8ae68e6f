/**
 * A TCP forwarder a test can cut: replicas reach a shared service (PostgreSQL) through it, and
 * `cut()` drops every open connection and refuses new ones, as a network partition or a failover
 * does, without touching the service other test runs share. `restore()` forwards again.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpForwarder {
  port: number;
  /** Drop every connection and refuse new ones until `restore()`. */
  cut(): void;
  /**
   * Drop every connection and stop listening until `restore()`: connecting is refused, as to a
   * stopped service. (After `cut()` a connect still succeeds and is then dropped, which a client
   * such as ioredis counts as a fresh connection each time, so it never gives up a queued command.)
   */
  down(): void;
  /**
   * Forward nothing, in either direction, and close nothing, until `restore()`: a partition that
   * sends no FIN or RST. Open connections go silent; new ones are accepted and then hang. On
   * `restore()` what was held back flows again, as TCP retransmits once the route is back.
   */
  stall(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpForwarder(target: { host: string; port: number }): Promise<TcpForwarder> {
  const open = new Set<Socket>();
  /** Every direction of every forwarded connection, to stop and restart on stall/restore. */
  const directions = new Set<readonly [Socket, Socket]>();
  /** Connections accepted while stalled, forwarded on restore. */
  const held = new Set<Socket>();
  let cut = false;
  let stalled = false;
  const forward = (client: Socket) => {
    const upstream = connect(target);
    for (const direction of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      const [a, b] = direction;
      open.add(a);
      directions.add(direction);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        open.delete(a);
        directions.delete(direction);
        b.destroy();
      });
      a.pipe(b);
    }
  };
  const server: Server = createServer((client) => {
    if (cut) return void client.destroy();
    if (!stalled) return forward(client);
    held.add(client);
    client.on('error', () => client.destroy());
    client.on('close', () => held.delete(client));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    cut() {
      cut = true;
      for (const socket of open) socket.destroy();
    },
    down() {
      cut = true;
      for (const socket of open) socket.destroy();
      server.close();
    },
    stall() {
      stalled = true;
      for (const [a, b] of directions) {
        a.unpipe(b);
        a.pause();
      }
    },
    restore() {
      cut = false;
      if (stalled) {
        stalled = false;
        for (const [a, b] of directions) a.pipe(b);
        for (const client of held) forward(client);
        held.clear();
      }
      if (!server.listening) server.listen(port, '127.0.0.1');
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of [...open, ...held]) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
