/**
 * The job lease contract, on both engines: one holder at a time among concurrent acquirers; the
 * holder renews; another takes over only after expiry; a restarted holder (same replica id) takes
 * its lease back at once; only the holder releases.
 */
import { describe, expect, it } from 'vitest';
import { ENGINES } from './engines.ts';

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`job lease contract: ${engine.name}`, () => {
    it('one holder at a time; renewal, expiry, takeover, same-id reclaim and release', async () => {
      const [a, b] = await engine.open();
      const t0 = 1_000_000;
      const got = await Promise.all([
        a.leases.acquire('sweep', 'replica-a', 30_000, t0),
        b.leases.acquire('sweep', 'replica-b', 30_000, t0),
        a.leases.acquire('sweep', 'replica-c', 30_000, t0),
      ]);
      expect(got.filter(Boolean)).toHaveLength(1);
      const holder = (await b.leases.get('sweep'))!.holder;
      const other = holder === 'replica-a' ? 'replica-b' : 'replica-a';

      // The holder renews (heartbeat); others are refused while it is live.
      expect(await a.leases.acquire('sweep', holder, 30_000, t0 + 20_000)).toBe(true);
      expect(await b.leases.acquire('sweep', other, 30_000, t0 + 40_000)).toBe(false);
      expect(await b.leases.get('sweep')).toMatchObject({ holder, expires_at: t0 + 50_000, acquired_at: t0 });

      // The holder restarts: same id, lease still live → it has it back at once.
      expect(await b.leases.acquire('sweep', holder, 30_000, t0 + 45_000)).toBe(true);

      // The holder dies: after expiry another replica takes over.
      expect(await b.leases.acquire('sweep', other, 30_000, t0 + 75_000)).toBe(true);
      expect(await a.leases.get('sweep')).toMatchObject({ holder: other, acquired_at: t0 + 75_000 });
      expect(await a.leases.release('sweep', holder)).toBe(false);
      expect(await a.leases.release('sweep', other)).toBe(true);
      expect(await a.leases.get('sweep')).toBeUndefined();
      // Leases are independent by name.
      expect(await a.leases.acquire('retention', holder, 30_000, t0)).toBe(true);
      expect(await b.leases.acquire('sweep', other, 30_000, t0 + 80_000)).toBe(true);
    });
  });
}
