/**
 * Whether a local service the fleet tests need (PostgreSQL on 5432, Redis on 6379) is there. A
 * laptop may have neither: tests that need one skip with a message instead of failing.
 */
import { connect } from 'node:net';

/** True when something accepts a TCP connection on 127.0.0.1:`port` within half a second. */
export const listening = (port: number): Promise<boolean> =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
