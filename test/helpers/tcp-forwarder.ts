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
   * Stop forwarding without closing anything: connections (open and new) stay up and bytes are held,
   * as when the service hangs or a network path black-holes packets. `restore()` forwards what was
   * held and goes on.
   */
  stall(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpForwarder(target: { host: string; port: number }): Promise<TcpForwarder> {
  const open = new Set<Socket>();
  let cut = false;
  let stalled = false;
  const server: Server = createServer((client) => {
    if (cut) return void client.destroy();
    const upstream = connect(target);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        open.delete(a);
        b.destroy();
      });
      a.pipe(b);
      // After pipe(), which resumes its source.
      if (stalled) a.pause();
    }
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
      for (const socket of open) socket.pause();
    },
    restore() {
      cut = false;
      if (stalled) {
        stalled = false;
        for (const socket of open) socket.resume();
      }
      if (!server.listening) server.listen(port, '127.0.0.1');
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
