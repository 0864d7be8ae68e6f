/**
 * Replica instances: one row per replica id naming the process that holds the id now (a random
 * nonce per process), when it took it and its last heartbeat. Leases and execution claims belong to
 * the replica id, so a restarted replica takes its own work back at once; this row is what tells
 * that restart (the previous holder stopped beating) from a second live process misconfigured with
 * the same id (it keeps beating). src/replica-registration.ts decides; this module is its SQL, one
 * statement per step, atomic on both engines.
 *
 * `beats` counts heartbeats, so "it advanced" never depends on two hosts' clocks agreeing;
 * `heartbeat_at` (epoch ms, the writer's clock) is never used to judge whether the holder lives (a
 * skewed clock would); it only finds rows forgotten for a day, and tells a reader of the table.
 */
import type { SqlExecutor } from './sql.ts';

export interface ReplicaInstance {
  replica_id: string;
  nonce: string;
  /** Epoch ms. */
  started_at: number;
  heartbeat_at: number;
  beats: number;
}

export interface ReplicaInstanceStore {
  get(replicaId: string): Promise<ReplicaInstance | undefined>;
  /** Every row (a few: one per process that did not stop cleanly, forgotten after a day). */
  list(): Promise<ReplicaInstance[]>;
  /** Register when no process holds the id; false when a row exists already. */
  insert(replicaId: string, nonce: string, now: number): Promise<boolean>;
  /**
   * Take the id over from the instance `seen` (same nonce, same beat count: it has not beaten since);
   * false when the row moved meanwhile.
   */
  takeOver(
    replicaId: string,
    nonce: string,
    seen: Pick<ReplicaInstance, 'nonce' | 'beats'>,
    now: number,
  ): Promise<boolean>;
  /** Heartbeat; false when this instance no longer holds the id (taken over). */
  beat(replicaId: string, nonce: string, now: number): Promise<boolean>;
  /** Let go on a clean shutdown (only the holder can), so a restart need not wait. */
  release(replicaId: string, nonce: string): Promise<boolean>;
  /** Delete rows that have not beaten since `before` (processes killed long ago); how many. */
  forget(before: number): Promise<number>;
}

const COLUMNS = 'replica_id, nonce, started_at, heartbeat_at, beats';

/** PostgreSQL returns BIGINT as text. */
const instanceOf = (row: ReplicaInstance): ReplicaInstance => ({
  ...row,
  started_at: Number(row.started_at),
  heartbeat_at: Number(row.heartbeat_at),
  beats: Number(row.beats),
});

export function createReplicaInstanceStore(db: SqlExecutor): ReplicaInstanceStore {
  return {
    async get(replicaId) {
      const [row] = await db.query<ReplicaInstance>(
        `SELECT ${COLUMNS} FROM replica_instances WHERE replica_id = $1`,
        [replicaId],
      );
      return row ? instanceOf(row) : undefined;
    },
    async list() {
      const rows = await db.query<ReplicaInstance>(`SELECT ${COLUMNS} FROM replica_instances`);
      return rows.map(instanceOf);
    },
    async insert(replicaId, nonce, now) {
      const rows = await db.query(
        `INSERT INTO replica_instances (replica_id, nonce, started_at, heartbeat_at, beats) VALUES ($1, $2, $3, $3, 0)
         ON CONFLICT (replica_id) DO NOTHING RETURNING replica_id`,
        [replicaId, nonce, now],
      );
      return rows.length > 0;
    },
    async takeOver(replicaId, nonce, seen, now) {
      return (
        (await db.execute(
          `UPDATE replica_instances SET nonce = $2, started_at = $5, heartbeat_at = $5, beats = 0
           WHERE replica_id = $1 AND nonce = $3 AND beats = $4`,
          [replicaId, nonce, seen.nonce, seen.beats, now],
        )) > 0
      );
    },
    async beat(replicaId, nonce, now) {
      return (
        (await db.execute(
          'UPDATE replica_instances SET heartbeat_at = $3, beats = beats + 1 WHERE replica_id = $1 AND nonce = $2',
          [replicaId, nonce, now],
        )) > 0
      );
    },
    async release(replicaId, nonce) {
      return (
        (await db.execute('DELETE FROM replica_instances WHERE replica_id = $1 AND nonce = $2', [
          replicaId,
          nonce,
        ])) > 0
      );
    },
    forget(before) {
      return db.execute('DELETE FROM replica_instances WHERE heartbeat_at < $1', [before]);
    },
  };
}
