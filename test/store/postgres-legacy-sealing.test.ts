/**
 * Start-up sealing of legacy plaintext rows (src/store/legacy-sealing.ts) when two PostgreSQL
 * replicas start together on a database with many listed rows: the second waits for the first
 * (advisory lock, no lock timeout for that transaction) instead of timing out on a row lock and
 * failing to start, then finds nothing left; every row ends up sealed exactly once.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createFieldCipher, isSealed } from '../../src/store/field-crypto.ts';
import { openStore } from '../../src/store/store.ts';
import { ENGINES } from './engines.ts';

const pgEngine = ENGINES.find((e) => e.name === 'PostgreSQL')!;
// Sealing this many rows takes well over the lock timeout below (about a millisecond per value).
const ROWS = 1500;

describe('legacy sealing: two PostgreSQL replicas starting together', () => {
  it.skipIf(pgEngine.skip)(
    'both start; every listed row is sealed exactly once',
    async () => {
      const fresh = pgEngine.fresh();
      const config = {
        ...fresh.config,
        store_postgres: { ...fresh.config.store_postgres, lock_timeout_ms: 200 },
      };
      const { secrets } = fresh;
      const args = (i: number) => ({ user_id: `u${i}`, abuse_type: 'payment_abuse', is_bad: true });
      const id = (i: number) => `apr_${String(i).padStart(20, '0')}`;

      // A database from before sealing: plain rows, listed as migration 33 lists them.
      const plain = await openStore(config, secrets);
      await plain.sql.transaction(async (tx) => {
        for (let i = 0; i < ROWS; i++) {
          await tx.execute(
            `INSERT INTO approvals (id, tool, args, args_hash, target, requester, requester_role, requester_kind, mode,
            policy_version, evidence, state, created_at, expires_at, reason)
           VALUES ($1,'apply_label',$2,$1,'t','r','analyst','user','approval','v','{}','pending','2026','2027',$3)`,
            [id(i), JSON.stringify(args(i)), `reason ${i}`],
          );
          await tx.execute(
            `INSERT INTO unsealed_legacy_rows (col, id) VALUES ('approvals.args', $1), ('approvals.reason', $1)`,
            [id(i)],
          );
        }
      });

      const cipher = createFieldCipher(randomBytes(32));
      const started = await Promise.allSettled([
        openStore(config, secrets, { cipher }),
        openStore(config, secrets, { cipher }),
      ]);
      try {
        expect(started.map((s) => (s.status === 'fulfilled' ? 'started' : String(s.reason)))).toEqual([
          'started',
          'started',
        ]);
        const rows = await plain.sql.query<{ id: string; args: string; reason: string }>(
          'SELECT id, args, reason FROM approvals ORDER BY id',
        );
        expect(rows).toHaveLength(ROWS);
        let opened = 0;
        for (const [i, row] of rows.entries()) {
          const inner = JSON.parse(row.args) as unknown;
          // Sealed twice would open to sealed text, not to the original JSON.
          expect(typeof inner === 'string' && isSealed(inner)).toBe(true);
          expect(cipher.open(inner as string, `approvals.args:${row.id}`)).toEqual(args(i));
          expect(isSealed(row.reason)).toBe(true);
          expect(cipher.open(row.reason, `approvals.reason:${row.id}`)).toBe(`reason ${i}`);
          opened++;
        }
        expect(opened).toBe(ROWS);
        const [left] = await plain.sql.query<{ n: number }>('SELECT COUNT(*) AS n FROM unsealed_legacy_rows');
        expect(Number(left?.n)).toBe(0);
      } finally {
        for (const s of started) if (s.status === 'fulfilled') await s.value.close();
        await plain.close();
      }
    },
    60_000,
  );
});
