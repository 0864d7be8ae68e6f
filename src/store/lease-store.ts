/**
 * Job leases: a named lease (one row) held by one replica until it expires, so a background job
 * (approval sweep, lifecycle poller, score sync, retention, schedules) runs on one replica of the
 * fleet at a time. The holder renews it (a heartbeat) while the job runs; a replica that dies stops
 * renewing and another takes over once the lease expires (leases are short: ≤ 30 s). A restarted
 * replica with the same replica id is the holder already, so it takes its leases back at once.
 *
 * Expiry uses the callers' clocks (epoch ms): keep replica clocks in sync (NTP); a skew shorter than
 * the lease only shortens or lengthens a takeover by that much.
 */
import type { SqlExecutor } from './sql.ts';

export interface Lease {
  name: string;
  holder: string;
  /** Epoch ms. */
  expires_at: number;
  acquired_at: number;
}

export interface LeaseStore {
  /**
   * Take the lease, or extend it when `holder` already holds it; true if `holder` holds it now until
   * `now + ttlMs`. False while another holder's lease is live.
   */
  acquire(name: string, holder: string, ttlMs: number, now?: number): Promise<boolean>;
  /** Let go (only the holder can); true if it held the lease. */
  release(name: string, holder: string): Promise<boolean>;
  get(name: string): Promise<Lease | undefined>;
}

export function createLeaseStore(db: SqlExecutor): LeaseStore {
  return {
    async acquire(name, holder, ttlMs, now = Date.now()) {
      // One statement: insert, or take over when expired, or extend when ours — atomic on both engines.
      const rows = await db.query<{ holder: string }>(
        `INSERT INTO job_leases (name, holder, expires_at, acquired_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
           acquired_at = CASE WHEN job_leases.holder = excluded.holder THEN job_leases.acquired_at
                              ELSE excluded.acquired_at END
         WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= $4
         RETURNING holder`,
        [name, holder, now + ttlMs, now],
      );
      return rows.length > 0;
    },
    async release(name, holder) {
      return (await db.execute('DELETE FROM job_leases WHERE name = $1 AND holder = $2', [name, holder])) > 0;
    },
    async get(name) {
      const [row] = await db.query<Lease>(
        'SELECT name, holder, expires_at, acquired_at FROM job_leases WHERE name = $1',
        [name],
      );
      return row
        ? { ...row, expires_at: Number(row.expires_at), acquired_at: Number(row.acquired_at) }
        : undefined;
    },
  };
}
