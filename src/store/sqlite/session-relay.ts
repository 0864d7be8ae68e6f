/**
 * The relay on SQLite: one host, one serving process, so a client's answer for a waiting call is
 * handed over within the process (a second process on the same data dir does not serve MCP).
 */
import type { RelayedMessage, SessionRelay } from '../session-store.ts';

export function createInProcessRelay(): SessionRelay {
  const listeners = new Map<string, (message: RelayedMessage) => void>();
  return {
    async publish(replica, message) {
      listeners.get(replica)?.(message);
    },
    async listen(replica, onMessage) {
      listeners.set(replica, onMessage);
    },
    async close() {
      listeners.clear();
    },
  };
}
