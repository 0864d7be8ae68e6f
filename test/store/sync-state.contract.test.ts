/**
 * The sync state contract, on both engines: watermarks move atomically with the statuses they
 * cover; one score-sync run is open at a time even when two processes start one at once; the
 * Task ledger is keyed by (run, account), so a second intent for the same account is a no-op.
 */
import { describe, expect, it } from 'vitest';
import { EMPTY_COUNTERS } from '../../src/store/sync-state-store.ts';
import { ENGINES } from './engines.ts';

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`sync state contract: ${engine.name}`, () => {
    it('watermarks and seen statuses move together and are shared', async () => {
      const [a, b] = await engine.open();
      expect(await a.syncState.getWatermark('lifecycle')).toBeUndefined();
      await a.syncState.advance('lifecycle', { modstamp: '2026-01-01T00:00:00.000+0000', id: '001A' }, [
        { accountId: '001A', status: 'Active' },
        { accountId: '001B', status: null },
      ]);
      expect(await b.syncState.getWatermark('lifecycle')).toEqual({
        modstamp: '2026-01-01T00:00:00.000+0000',
        id: '001A',
      });
      const seen = await b.syncState.seenStatuses(['001A', '001B', '001C']);
      expect([...seen.entries()].sort()).toEqual([
        ['001A', 'Active'],
        ['001B', null],
      ]);
      // 1,200 ids: more than one chunk of bound parameters.
      const many = Array.from({ length: 1200 }, (_, i) => `acc${i}`);
      expect((await b.syncState.seenStatuses(many)).size).toBe(0);
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
