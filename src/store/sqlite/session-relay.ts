/**
 * The relay on SQLite: one host, one serving process, so a client's answer for a waiting call is
 * handed over within the process (a second process on the same data dir does not serve MCP), and
 * so is the news that a session ended: every HTTP server of the process hears it at once.
 */
import type { RelayedMessage, SessionRelay } from '../session-store.ts';

export function createInProcessRelay(): SessionRelay {
  const listeners = new Map<string, (message: RelayedMessage) => void>();
  const endedListeners = new Set<(sessionIds: readonly string[]) => void>();
  // Delivery within the process cannot miss anything until the relay is closed.
  let since: number | undefined = Date.now();
  return {
    async publish(replica, message) {
      listeners.get(replica)?.(message);
    },
    async listen(replica, onMessage) {
      listeners.set(replica, onMessage);
    },
    async isListening(replica) {
      return listeners.has(replica);
    },
    async announceEnded(sessionIds) {
      for (const onEnded of endedListeners) onEnded(sessionIds);
    },
    onEnded(onEnded) {
      endedListeners.add(onEnded);
      return () => endedListeners.delete(onEnded);
    },
    listeningSince: () => since,
    async close() {
      since = undefined;
      listeners.clear();
      endedListeners.clear();
    },
  };
}
