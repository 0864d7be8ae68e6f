/**
 * The sync state contract, on both engines: watermarks move atomically with the records they
 * cover; one score-sync run is open at a time even when two processes start one at once; the
 * Task ledger is keyed by account and score movement, across runs: a second intent for the same
 * movement is a no-op, one for another movement replaces it, and a landed score forgets it.
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
      const intent = (accountId: string, movement = '10->80') => ({ accountId, movement });
      await Promise.all([
        a.syncState.recordTaskIntents(run, [intent('acc1'), intent('acc2')]),
        b.syncState.recordTaskIntents(run, [intent('acc2'), intent('acc3')]),
      ]);
      await b.syncState.recordTaskCreated('acc2', '10->80', 'task-2');
      // Another run, the same movement: already created, stays created (and the creator's).
      await a.syncState.recordTaskIntents('run-later', [intent('acc2')]);
      // Another movement of acc3 replaces its entry.
      await a.syncState.recordTaskIntents('run-later', [intent('acc3', '10->90')]);
      const ledger = await a.syncState.tasks(['acc1', 'acc2', 'acc3', 'acc4']);
      expect(
        Object.fromEntries([...ledger].map(([k, v]) => [k, `${v.movement} ${v.state} ${v.run_id}`])),
      ).toEqual({
        acc1: `10->80 intent ${run}`,
        acc2: `10->80 created ${run}`,
        acc3: '10->90 intent run-later',
      });
      expect(ledger.get('acc2')?.task_id).toBe('task-2');
      await b.syncState.forgetTasks(['acc1', 'acc2', 'acc4']);
      expect([...(await a.syncState.tasks(['acc1', 'acc2', 'acc3']))].map(([k]) => k)).toEqual(['acc3']);

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
