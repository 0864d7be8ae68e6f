/**
 * Approval wake-ups across replicas: NOTIFY `<schema>_approvals` with the approval id (through the
 * store's pool), received on the replica's own LISTEN connection (notify-listener.ts).
 */
import { createSignalBoard, type ApprovalSignal } from '../approval-signal.ts';
import type { SqlExecutor } from '../sql.ts';
import { createNotifyListener } from './notify-listener.ts';

export function openPostgresApprovalSignal(
  connectionString: string,
  schema: string,
  db: SqlExecutor,
  onError: (error: Error) => void,
): ApprovalSignal {
  const channel = `${schema}_approvals`;
  const board = createSignalBoard();
  const listener = createNotifyListener({ connectionString, channel, onError, onPayload: board.deliver });
  return {
    async publish(id) {
      // Waiters here wake at once, even while the LISTEN connection is reconnecting; the echo is harmless.
      board.deliver(id);
      await db.query('SELECT pg_notify($1, $2)', [channel, id]);
    },
    version: board.version,
    wait: board.wait,
    subscribe: board.subscribe,
    // A failed first connection is retried in the background; meanwhile waiters poll.
    listen: () => listener.start().catch(onError),
    close: () => listener.close(),
  };
}
