/**
 * The sync state contract, on both engines: watermarks move atomically with the records they
 * cover; one score-sync run is open at a time even when two processes start one at once; the
 * Task ledger is keyed by (run, account), so a second intent for the same account is a no-op.
 */
import { describe, expect, it } from 'vitest';
import { EMPTY_COUNTERS } from '../../src/store/sync-state-store.ts';
import { ENGINES } from './engines.ts';

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`sync state contract: ${engine.name}`, () => {
    it('a watcher’s handled records and watermark move together; old ones are forgotten', async () => {
      const [a, b] = await engine.open();
      const wm = { modstamp: '2026-01-01T00:01:00.000Z', id: '017B' };
      await a.syncState.markHandled('w', wm, [
        { id: '017A', stampedAt: '2026-01-01T00:00:00.000Z' },
        { id: '017B', stampedAt: '2026-01-01T00:01:00.000Z' },
      ]);
      expect(await b.syncState.getWatermark('w')).toEqual(wm);
      expect([...(await b.syncState.handled('w', ['017A', '017B', '017C']))].sort()).toEqual([
        '017A',
        '017B',
      ]);
      // Another watcher's set is its own; marking twice is a no-op.
      expect((await b.syncState.handled('other', ['017A'])).size).toBe(0);
      await b.syncState.markHandled('w', wm, [{ id: '017B', stampedAt: '2026-01-01T00:01:00.000Z' }]);
      // Moving on forgets what lies before the overlap window, in the same transaction.
      const next = { modstamp: '2026-01-01T00:02:00.000Z', id: '017C' };
      await b.syncState.markHandled(
        'w',
        next,
        [{ id: '017C', stampedAt: next.modstamp }],
        '2026-01-01T00:00:30.000Z',
      );
      expect([...(await a.syncState.handled('w', ['017A', '017B', '017C']))].sort()).toEqual([
        '017B',
        '017C',
      ]);
      expect(await a.syncState.getWatermark('w')).toEqual(next);
    });

    it('two processes starting a run at once share it; the ledger records one intent per account', async () => {
      const [a, b] = await engine.open();
      const [r1, r2] = await Promise.all([
        a.syncState.createRun('run-a', 't'),
        b.syncState.createRun('run-b', 't'),
      ]);
      expect(r1.id).toBe(r2.id);
      const run = r1.id;
      await Promise.all([
        a.syncState.recordTaskIntents(run, ['acc1', 'acc2']),
        b.syncState.recordTaskIntents(run, ['acc2', 'acc3']),
      ]);
      await b.syncState.recordTaskCreated(run, 'acc2', 'task-2');
      await a.syncState.recordTaskIntents(run, ['acc2']); // already created: stays created
      const ledger = await a.syncState.tasks(run, ['acc1', 'acc2', 'acc3', 'acc4']);
      expect(Object.fromEntries([...ledger].map(([k, v]) => [k, v.state]))).toEqual({
        acc1: 'intent',
        acc2: 'created',
        acc3: 'intent',
      });
      expect(ledger.get('acc2')?.task_id).toBe('task-2');

      const counters = { ...EMPTY_COUNTERS, accounts: 10 };
      await a.syncState.checkpoint(run, 'acc3', counters);
      expect(await b.syncState.openRun()).toMatchObject({ id: run, cursor: 'acc3', counters });
      await b.syncState.finishRun(run, counters);
      expect(await a.syncState.openRun()).toBeUndefined();
      // Finished: a new run may start.
      expect((await a.syncState.createRun('run-c', 't2')).id).toBe('run-c');
    });
  });
}
