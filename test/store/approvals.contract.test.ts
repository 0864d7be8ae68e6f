/**
 * The approval store contract, on both engines, seen from two stores on one database (two
 * processes on one file, or two replicas on one PostgreSQL): what one writes the other reads; one
 * open approval per binding even when both create at the same instant; compare-and-set transitions.
 */
import { describe, expect, it } from 'vitest';
import type { NewApproval } from '../../src/store/approval-store.ts';
import { ENGINES } from './engines.ts';

let seq = 0;
function request(overrides: Partial<NewApproval> = {}): NewApproval {
  seq += 1;
  const now = Date.now();
  return {
    id: `apr_test_${seq}_${Math.random().toString(36).slice(2, 8)}`,
    tool: 'apply_label',
    args: { user_id: 'u1', is_bad: true, abuse_type: 'payment_abuse' },
    args_hash: 'hash-1',
    target: 'sift_user:u1',
    requester: 'ana.analyst@example.com',
    requester_role: 'analyst',
    requester_kind: 'user',
    mode: 'approval',
    policy_version: 'pv1',
    evidence: { score: 0.94 },
    created_at: new Date(now).toISOString(),
    expires_at: new Date(now + 3_600_000).toISOString(),
    ...overrides,
  };
}

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`approval store contract: ${engine.name}`, () => {
    it('a request stored through one store is read, listed and found open through the other', async () => {
      const [a, b] = await engine.open();
      const { approval, created } = await a.approvals.create(request());
      expect(created).toBe(true);
      expect(await b.approvals.get(approval.id)).toMatchObject({
        id: approval.id,
        state: 'pending',
        args: { user_id: 'u1', is_bad: true, abuse_type: 'payment_abuse' },
        evidence: { score: 0.94 },
      });
      expect((await b.approvals.list({ states: ['pending'] })).map((x) => x.id)).toEqual([approval.id]);
      expect((await b.approvals.findOpen(approval))?.id).toBe(approval.id);
      expect(await b.approvals.count(['pending'])).toBe(1);
      expect(await b.approvals.get('apr_missing')).toBeUndefined();
    });

    it('one open approval per binding: a repeat (even concurrent, on the other store) gets the same one', async () => {
      const [a, b] = await engine.open();
      const results = await Promise.all([
        a.approvals.create(request()),
        b.approvals.create(request()),
        a.approvals.create(request()),
        b.approvals.create(request()),
      ]);
      const ids = new Set(results.map((r) => r.approval.id));
      expect(ids.size).toBe(1);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(await a.approvals.list()).toHaveLength(1);

      // Another target, requester, argument hash or policy version is another binding.
      for (const other of [
        { target: 'sift_user:u2', args_hash: 'hash-2' },
        { requester: 'bo.analyst@example.com' },
        { policy_version: 'pv2' },
      ]) {
        expect((await b.approvals.create(request(other))).created).toBe(true);
      }
    });

    it('transitions are compare-and-set: an approval is approved once and executed once', async () => {
      const [a, b] = await engine.open();
      const { approval } = await a.approvals.create(request());
      const decided = await Promise.all([
        a.approvals.transition(approval.id, ['pending'], 'approved', { decided_by: 'x', decided_at: 't' }),
        b.approvals.transition(approval.id, ['pending'], 'approved', { decided_by: 'y', decided_at: 't' }),
      ]);
      expect(decided.filter(Boolean)).toHaveLength(1);
      const claims = await Promise.all([
        a.approvals.transition(approval.id, ['approved'], 'executing'),
        b.approvals.transition(approval.id, ['approved'], 'executing'),
      ]);
      expect(claims.filter(Boolean)).toHaveLength(1);
      // Still open while executing: a repeated call waits on it rather than opening a second one.
      expect((await b.approvals.create(request())).approval.id).toBe(approval.id);
      const done = await b.approvals.transition(approval.id, ['executing'], 'executed', {
        result: { ok: true },
      });
      expect(done).toMatchObject({ state: 'executed', result: { ok: true } });
      // Closed: the same call may now ask again.
      expect((await a.approvals.create(request())).created).toBe(true);
      await expect(
        a.approvals.transition(approval.id, ['executed'], 'failed', { state: 'x' } as never),
      ).rejects.toThrow(/cannot be patched/);
    });

    it('an undone approval carries the undo that marked it, read through the other store, cleared on unmark', async () => {
      const [a, b] = await engine.open();
      const { approval } = await a.approvals.create(request());
      await a.approvals.transition(approval.id, ['pending'], 'approved');
      await a.approvals.transition(approval.id, ['approved'], 'executing');
      await a.approvals.transition(approval.id, ['executing'], 'executed', { result: { ok: true } });
      await a.approvals.transition(approval.id, ['executed'], 'undone', { undone_by: 'apr_undo_1' });
      expect(await b.approvals.get(approval.id)).toMatchObject({ state: 'undone', undone_by: 'apr_undo_1' });
      await b.approvals.transition(approval.id, ['undone'], 'executed', {
        undone_by: null as unknown as string,
      });
      expect((await a.approvals.get(approval.id))?.undone_by).toBeUndefined();
    });

    it('a transition guarded by an execution claim moves only while the row carries exactly that claim', async () => {
      const [a, b] = await engine.open();
      const { approval } = await a.approvals.create(request({ args_hash: 'hash-claim' }));
      await a.approvals.transition(approval.id, ['pending'], 'approved');
      await a.approvals.transition(approval.id, ['approved'], 'executing', { executed_at: 't1' });
      // An unset executed_by is a NULL claim: it matches only an absent one.
      expect(
        await b.approvals.transition(
          approval.id,
          ['executing'],
          'executing',
          {},
          {
            executed_at: 't1',
            executed_by: 'replica-a',
          },
        ),
      ).toBeUndefined();
      expect(
        await b.approvals.transition(
          approval.id,
          ['executing'],
          'executing',
          { executed_by: 'replica-a' },
          {
            executed_at: 't1',
          },
        ),
      ).toMatchObject({ executed_by: 'replica-a' });
      for (const stale of [
        { executed_at: 't0', executed_by: 'replica-a' },
        { executed_at: 't1', executed_by: 'replica-b' },
        { executed_at: 't1' },
      ]) {
        expect(await b.approvals.transition(approval.id, ['executing'], 'failed', {}, stale)).toBeUndefined();
      }
      expect(
        await b.approvals.transition(
          approval.id,
          ['executing'],
          'failed',
          {},
          {
            executed_at: 't1',
            executed_by: 'replica-a',
          },
        ),
      ).toMatchObject({ state: 'failed' });
    });

    it('a transition guarded by an instant moves only an approval whose expiry is after it', async () => {
      const [a, b] = await engine.open();
      const at = Date.now();
      const { approval: live } = await a.approvals.create(
        request({ args_hash: 'live', expires_at: new Date(at + 60_000).toISOString() }),
      );
      const { approval: overdue } = await a.approvals.create(
        request({ args_hash: 'overdue', expires_at: new Date(at - 1).toISOString() }),
      );
      for (const { id } of [live, overdue]) await a.approvals.transition(id, ['pending'], 'approved');
      const claim = (id: string) =>
        b.approvals.transition(
          id,
          ['approved'],
          'executing',
          { executed_at: new Date(at).toISOString() },
          undefined,
          new Date(at),
        );
      expect((await claim(overdue.id))?.state).toBeUndefined();
      expect((await a.approvals.get(overdue.id))?.state).toBe('approved');
      expect((await claim(live.id))?.state).toBe('executing');
    });

    it('lists overdue approvals, newest first otherwise', async () => {
      const [a] = await engine.open();
      const past = new Date(Date.now() - 1000).toISOString();
      const { approval: overdue } = await a.approvals.create(
        request({
          args_hash: 'old',
          created_at: new Date(Date.now() - 5000).toISOString(),
          expires_at: past,
        }),
      );
      const { approval: fresh } = await a.approvals.create(request({ args_hash: 'new' }));
      expect((await a.approvals.listExpired(new Date())).map((x) => x.id)).toEqual([overdue.id]);
      expect((await a.approvals.list()).map((x) => x.id)).toEqual([fresh.id, overdue.id]);
      expect((await a.approvals.list({ limit: 1 })).map((x) => x.id)).toEqual([fresh.id]);
    });

    it('pages oldest first from a cursor, ties on the creation time broken by id', async () => {
      const [a] = await engine.open();
      const at = new Date(Date.now() - 10_000).toISOString();
      const ids: string[] = [];
      for (const [i, suffix] of ['b', 'a', 'c'].entries()) {
        const { approval } = await a.approvals.create(
          request({ id: `apr_page_${seq}_${suffix}`, args_hash: `page-${i}`, created_at: at }),
        );
        ids.push(approval.id);
      }
      const { approval: newest } = await a.approvals.create(request({ args_hash: 'page-newest' }));
      const inOrder = [...ids].sort();
      const first = await a.approvals.list({ oldestFirst: true, limit: 2 });
      expect(first.map((x) => x.id)).toEqual(inOrder.slice(0, 2));
      const rest = await a.approvals.list({ oldestFirst: true, limit: 2, after: first[1]! });
      expect(rest.map((x) => x.id)).toEqual([inOrder[2], newest.id]);
      expect(await a.approvals.list({ oldestFirst: true, after: newest })).toEqual([]);
    });
  });
}
