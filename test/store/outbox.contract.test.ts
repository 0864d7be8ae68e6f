/**
 * The outbox contract, on both engines (see engines.ts): deduplication, routing, superseding,
 * leases shared by two workers, compare-and-set transitions, and a restarted owner's reclaim.
 */
import { describe, expect, it } from 'vitest';
import { ENGINES } from './engines.ts';

const user = (id: string, decisionId: string, time: number) => ({
  entityType: 'user',
  entityId: id,
  decisionId,
  time,
});

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`outbox store contract: ${engine.name}`, () => {
    const open = async () => (await engine.open()).map((s) => s.outbox);
    it('webhooks arriving together are each stored once, duplicates among them included', async () => {
      const [store] = await open();
      // One event-loop turn: these commit as one group.
      const results = await Promise.all([
        ...Array.from({ length: 50 }, (_, i) => store!.enqueue(user(`g${i}`, 'watch', 100 + i))),
        store!.enqueue(user('g7', 'watch', 107)),
      ]);
      const ids = results.slice(0, 50).map((r) => r.id);
      expect(new Set(ids).size).toBe(50);
      expect(results.slice(0, 50).every((r) => !r.duplicate)).toBe(true);
      expect(results[50]).toEqual({ id: results[7]!.id, duplicate: true });
      expect((await store!.unrouted(100)).map((e) => e.id).sort((x, y) => x - y)).toEqual(
        [...ids].sort((x, y) => x - y),
      );
    });

    it('deduplicates deliveries, routes once, supersedes earlier decisions', async () => {
      const [a] = await open();
      const store = a!;
      const first = await store.enqueue(user('u1', 'block', 1000));
      expect(first.duplicate).toBe(false);
      expect(await store.enqueue(user('u1', 'block', 1000))).toEqual({ id: first.id, duplicate: true });
      const later = await store.enqueue(user('u1', 'accept', 2000));
      expect((await store.unrouted(10)).map((e) => e.id)).toEqual([first.id, later.id]);
      await store.route(later.id, [{ effect: 'segment', tool: 't', args: { d: 'accept' } }]);
      await store.route(first.id, [
        { effect: 'segment', tool: 't', args: { d: 'block' } },
        { effect: 'case', tool: 'c', args: {} },
      ]);
      await store.route(first.id, [{ effect: 'segment', tool: 't', args: { d: 'again' } }]); // already routed
      expect(await store.unrouted(10)).toEqual([]);
      const skipped = await store.supersede();
      // The later decision routed a segment write only: the earlier one's case still runs.
      expect(skipped.map((e) => e.args)).toEqual([{ d: 'block' }]);
      expect((await store.stats()).skipped).toBe(1);
    });

    it("a later decision on another abuse type skips only the effects it routes too: the BLOCK's case and suppression run", async () => {
      const [a] = await open();
      const store = a!;
      const block = await store.enqueue(user('u3', 'block_account_abuse', 1000));
      const accept = await store.enqueue(user('u3', 'accept_payment_abuse', 2000));
      await store.route(block.id, [
        { effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'u3' } },
        { effect: 'salesforce', tool: 'sync_decision_to_salesforce', args: { user_id: 'u3' } },
        { effect: 'case', tool: 'create_fraud_case', args: { user_id: 'u3' } },
        { effect: 'suppress', tool: 'suppress_user', args: { user_id: 'u3', suppressed: true } },
      ]);
      await store.route(accept.id, [
        { effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'u3' } },
        { effect: 'salesforce', tool: 'sync_decision_to_salesforce', args: { user_id: 'u3' } },
      ]);
      const skipped = await store.supersede();
      expect(skipped.map((e) => [e.eventId, e.effect]).sort()).toEqual([
        [block.id, 'salesforce'],
        [block.id, 'segment'],
      ]);
      const due = await store.claim('w1', 10, 60_000);
      expect(due.map((e) => [e.eventId, e.effect]).sort()).toEqual(
        [
          [block.id, 'case'],
          [block.id, 'suppress'],
          [accept.id, 'salesforce'],
          [accept.id, 'segment'],
        ].sort(),
      );
      // A later event that routes a case of its own does replace the earlier pending case.
      const first = await store.enqueue(user('u4', 'block_account_abuse', 1000));
      const second = await store.enqueue(user('u4', 'block_payment_abuse', 2000));
      await store.route(first.id, [
        { effect: 'segment', tool: 't', args: { n: 1 } },
        { effect: 'case', tool: 'c', args: { n: 1 } },
      ]);
      await store.route(second.id, [
        { effect: 'segment', tool: 't', args: { n: 2 } },
        { effect: 'case', tool: 'c', args: { n: 2 } },
      ]);
      expect((await store.supersede()).map((e) => [e.effect, e.args]).sort()).toEqual([
        ['case', { n: 1 }],
        ['segment', { n: 1 }],
      ]);
    });

    it("a later decision on the same abuse type reverses a BLOCK: all of the BLOCK's pending effects are skipped", async () => {
      const [a] = await open();
      const store = a!;
      const block = await store.enqueue(user('u5', 'block_account_abuse', 1000));
      const accept = await store.enqueue(user('u5', 'accept_account_abuse', 2000));
      const other = await store.enqueue(user('u5', 'accept_payment_abuse', 3000));
      await store.route(
        block.id,
        [
          { effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'u5' } },
          { effect: 'salesforce', tool: 'sync_decision_to_salesforce', args: { user_id: 'u5' } },
          { effect: 'case', tool: 'create_fraud_case', args: { user_id: 'u5' } },
          { effect: 'suppress', tool: 'suppress_user', args: { user_id: 'u5', suppressed: true } },
        ],
        undefined,
        'account_abuse',
      );
      // A decision on another abuse type alone leaves the BLOCK's case and suppression pending.
      await store.route(other.id, [], undefined, 'payment_abuse');
      expect((await store.supersede()).map((e) => e.effect)).toEqual([]);
      await store.route(
        accept.id,
        [
          { effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'u5' } },
          { effect: 'salesforce', tool: 'sync_decision_to_salesforce', args: { user_id: 'u5' } },
        ],
        undefined,
        'account_abuse',
      );
      const skipped = await store.supersede();
      expect(skipped.map((e) => [e.eventId, e.effect]).sort()).toEqual([
        [block.id, 'case'],
        [block.id, 'salesforce'],
        [block.id, 'segment'],
        [block.id, 'suppress'],
      ]);
      expect((await store.claim('w1', 10, 60_000)).map((e) => [e.eventId, e.effect]).sort()).toEqual([
        [accept.id, 'salesforce'],
        [accept.id, 'segment'],
      ]);
    });

    it('of two decisions with the same time, the later arrival wins, whatever their ids', async () => {
      const [a] = await open();
      const store = a!;
      // On PostgreSQL ids come from per-process blocks, so a later arrival can hold a lower id.
      const arrivedLast = await store.enqueue(user('u2', 'block', 3000), 2_000);
      const arrivedFirst = await store.enqueue(user('u2', 'accept', 3000), 1_000);
      expect(arrivedLast.id).toBeLessThan(arrivedFirst.id);
      await store.route(arrivedLast.id, [{ effect: 'segment', tool: 't', args: { d: 'block' } }]);
      await store.route(arrivedFirst.id, [{ effect: 'segment', tool: 't', args: { d: 'accept' } }]);
      const skipped = await store.supersede();
      expect(skipped.map((e) => e.args)).toEqual([{ d: 'accept' }]);
    });

    it('leases each effect to one claimer; one write per user and effect in flight; expired leases return', async () => {
      const [a, b] = await open();
      const s1 = a!;
      const s2 = b!;
      for (let u = 0; u < 20; u += 1) {
        const { id } = await s1.enqueue(user(`c${u}`, 'watch', 1000 + u));
        await s1.route(id, [{ effect: 'segment', tool: 't', args: { u } }]);
      }
      const [x, y] = await Promise.all([s1.claim('w1', 15, 60_000), s2.claim('w2', 15, 60_000)]);
      // Concurrent claimers never share an effect (SKIP LOCKED may hand one of them fewer); the rest follows.
      const rest = await s1.claim('w0', 20, 60_000);
      const ids = [...x, ...y, ...rest].map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toHaveLength(20);

      // A newer decision for c0 waits while c0's write is leased.
      const held = [...x, ...y, ...rest].find((e) => e.entityKey === 'user:c0');
      const { id: newer } = await s1.enqueue(user('c0', 'block', 5000));
      await s1.route(newer, [{ effect: 'segment', tool: 't', args: { newer: true } }]);
      expect(await s2.claim('w3', 10, 60_000)).toEqual([]);
      expect(await s2.complete(held?.id ?? 0, 'w3', {})).toBe(false); // not the lease owner
      expect(await s2.renew([held?.id ?? 0], 'w3', Date.now() + 60_000)).toEqual([]);
      expect(await s1.renew([held?.id ?? 0], held?.leaseOwner ?? '', Date.now() + 60_000)).toEqual([
        held?.id,
      ]);
      expect(await s1.complete(held?.id ?? 0, held?.leaseOwner ?? '', { ok: 1 })).toBe(true);
      expect((await s2.claim('w3', 10, 60_000)).map((e) => e.args)).toEqual([{ newer: true }]);

      // A crashed worker's lease expires and the effect is claimed again.
      const [again] = await s1.claim('w4', 1, 60_000, Date.now() + 120_000);
      expect(again).toBeDefined();
    });

    it('retries, dead-letters, requeues and drops with compare-and-set', async () => {
      const [a] = await open();
      const store = a!;
      const { id: eventId } = await store.enqueue(user('d1', 'watch', 1));
      await store.route(eventId, [{ effect: 'segment', tool: 't', args: {} }]);
      const [effect] = await store.claim('w', 1, 60_000);
      const id = effect?.id ?? 0;
      expect(await store.retry(id, 'w', Date.now() + 60_000, 'boom', true)).toBe(true);
      expect(await store.claim('w', 1, 60_000)).toEqual([]); // not due yet
      await store.claim('w', 1, 60_000, Date.now() + 61_000);
      expect(await store.deadLetter(id, 'w', 'final')).toBe(true);
      expect(await store.get(id)).toMatchObject({ state: 'dead', attempts: 2, lastError: 'final' });
      expect(await store.drop(eventId + 1000)).toBe(false);
      expect(await store.requeue(id)).toBe(true);
      expect(await store.get(id)).toMatchObject({ state: 'pending', attempts: 0 });
      const [claimed] = await store.claim('w', 1, 60_000);
      expect(await store.awaitApproval(id, 'w', 'apr_1')).toBe(true);
      expect(claimed?.id).toBe(id);
      expect(await store.settleApproval(id, 'done', { ok: true })).toBe(true);
      expect(await store.get(id)).toMatchObject({ state: 'done', result: { ok: true } });
      expect((await store.list({ states: ['done'] })).map((e) => e.id)).toEqual([id]);
      expect((await store.getEvent(eventId))?.routed).toBe(true);
    });

    it('continues an effect whose approved call left work: pending and due, its approval let go, no attempt', async () => {
      const [a] = await open();
      const store = a!;
      const { id: eventId } = await store.enqueue(user('c1', 'watch', 1));
      await store.route(eventId, [{ effect: 'opportunities', tool: 't', args: {} }]);
      const [effect] = await store.claim('w', 1, 60_000);
      const id = effect?.id ?? 0;
      expect(await store.continueAfterApproval(id)).toBe(false); // only from awaiting_approval
      expect(await store.awaitApproval(id, 'w', 'apr_share_1')).toBe(true);
      expect(await store.continueAfterApproval(id)).toBe(true);
      expect(await store.get(id)).toMatchObject({ state: 'pending', attempts: 0 });
      expect((await store.get(id))?.approvalId).toBeUndefined();
      expect((await store.claim('w', 1, 60_000)).map((e) => e.id)).toEqual([id]);
    });

    it('continues a leased effect with its progress kept, no attempt; approval continuations keep it too; requeue clears it', async () => {
      const [a] = await open();
      const store = a!;
      const { id: eventId } = await store.enqueue(user('c2', 'watch', 1));
      await store.route(eventId, [{ effect: 'opportunities', tool: 't', args: {} }]);
      const [effect] = await store.claim('w', 1, 60_000);
      const id = effect?.id ?? 0;
      const progress = { continuation: { shares: 1, remaining: 102, max_shares: 4 } };
      expect(await store.continueLater(id, 'other', progress)).toBe(false); // not its lease
      expect(await store.continueLater(id, 'w', progress)).toBe(true);
      expect(await store.get(id)).toMatchObject({ state: 'pending', attempts: 0, progress });
      const [again] = await store.claim('w', 1, 60_000);
      expect(again?.progress).toEqual(progress);
      expect(await store.awaitApproval(id, 'w', 'apr_share_2')).toBe(true);
      const later = { continuation: { shares: 2, remaining: 2, max_shares: 4 } };
      expect(await store.continueAfterApproval(id, later)).toBe(true);
      expect((await store.get(id))?.progress).toEqual(later);
      await store.claim('w', 1, 60_000);
      expect(await store.awaitApproval(id, 'w', 'apr_share_3')).toBe(true);
      expect(await store.continueAfterApproval(id)).toBe(true); // no progress given: kept
      expect((await store.get(id))?.progress).toEqual(later);
      await store.claim('w', 1, 60_000);
      expect(await store.deadLetter(id, 'w', 'CONTINUATION_STALLED: stopped')).toBe(true);
      // A dead letter has no result: the counts it stopped at are its progress.
      expect(await store.get(id)).toMatchObject({ state: 'dead', progress: later });
      expect((await store.get(id))?.result).toBeUndefined();
      expect(await store.requeue(id)).toBe(true);
      expect((await store.get(id))?.progress).toBeUndefined();
    });

    it('stores an event with its effects in one step, once', async () => {
      const [a, b] = await open();
      const event = user('s1', 'segment:msg-1', 10);
      const effects = [{ effect: 'sift_event', tool: 'send_sift_event', args: { n: 1 } }];
      const first = await a!.enqueueRouted(event, effects);
      expect(first.duplicate).toBe(false);
      expect(await b!.enqueueRouted(event, effects)).toEqual({ id: first.id, duplicate: true });
      expect(await b!.unrouted(10)).toEqual([]);
      expect((await b!.list()).map((e) => [e.eventId, e.tool, e.state])).toEqual([
        [first.id, 'send_sift_event', 'pending'],
      ]);
    });

    it('an attempt mark is durable, seen by whoever leases the effect next, and cleared back to pending', async () => {
      const [a, b] = await open();
      const event = user('m1', 'segment', 0);
      const { id: eventId } = await a!.enqueueRouted(event, [
        { effect: 'sift_event', tool: 'send_sift_event', args: {} },
      ]);
      const [effect] = await a!.claim('w1', 1, 60_000);
      const id = effect?.id ?? 0;
      expect(effect?.attemptedAt).toBeUndefined();
      expect(await b!.markAttempted(id, 'w2', 5_000)).toBe(false); // not the lease owner
      expect(await a!.markAttempted(id, 'w1', 5_000)).toBe(true);
      // w1 stops mid-call: the other store leases it after the lease runs out and sees the mark.
      const [taken] = await b!.claim('w2', 1, 60_000, Date.now() + 120_000);
      expect(taken).toMatchObject({ id, eventId, attemptedAt: 5_000 });
      expect(await a!.markAttempted(id, 'w1')).toBe(false); // w1's lease is gone
      // Back to pending (known not to have reached the upstream): no mark.
      expect(await b!.retry(id, 'w2', 0, 'UPSTREAM_RATE_LIMITED: 429', true)).toBe(true);
      expect((await a!.get(id))?.attemptedAt).toBeUndefined();
      // Dead with its mark (outcome unknown); an operator's requeue is a deliberate replay, unmarked.
      await a!.claim('w1', 1, 60_000);
      expect(await a!.markAttempted(id, 'w1', 6_000)).toBe(true);
      expect(await a!.deadLetter(id, 'w1', 'OUTCOME_UNKNOWN: lost answer')).toBe(true);
      expect(await b!.get(id)).toMatchObject({ state: 'dead', attemptedAt: 6_000 });
      expect(await b!.requeue(id)).toBe(true);
      expect(await b!.get(id)).toMatchObject({ state: 'pending', attempts: 0 });
      expect((await b!.get(id))?.attemptedAt).toBeUndefined();
    });

    it("a restarted owner reclaims its own leased effects at once; others' leases stay", async () => {
      const [a, b] = await open();
      for (const u of ['r1', 'r2']) {
        const { id } = await a!.enqueue(user(u, 'watch', 1));
        await a!.route(id, [{ effect: 'segment', tool: 't', args: { u } }]);
      }
      const [mine] = await a!.claim('replica-a', 1, 30_000);
      const [theirs] = await b!.claim('replica-b', 1, 30_000);
      expect(mine && theirs).toBeTruthy();
      // replica-a restarts (same id): its effect is due again without waiting 30 s; replica-b's is not.
      expect(await a!.reclaim('replica-a')).toBe(1);
      const again = await a!.claim('replica-a', 10, 30_000);
      expect(again.map((e) => e.id)).toEqual([mine!.id]);
      expect(await b!.complete(theirs!.id, 'replica-b', {})).toBe(true);
    });

    it('tells when the earliest pending effect is next due (none pending: undefined)', async () => {
      const [a] = await open();
      const store = a!;
      expect(await store.nextPendingAt()).toBeUndefined();
      for (const u of ['n1', 'n2']) {
        const { id } = await store.enqueue(user(u, 'watch', 1));
        await store.route(id, [{ effect: 'segment', tool: 't', args: { u } }]);
      }
      const [first, second] = await store.claim('w', 10, 30_000);
      const later = Date.now() + 90_000;
      await store.retry(first!.id, 'w', later, 'UPSTREAM_ERROR: 503', true);
      expect(await store.nextPendingAt()).toBe(later);
      await store.retry(second!.id, 'w', later - 40_000, undefined, false);
      expect(await store.nextPendingAt()).toBe(later - 40_000);
    });

    it('finds the effects parked on closed approvals in one joined read, oldest first, page by page', async () => {
      const [a] = await engine.open();
      const { outbox: store, approvals } = a!;
      const approval = async (id: string) =>
        (
          await approvals.create({
            id,
            tool: 't',
            args: {},
            args_hash: id,
            target: 'x',
            requester: 'automation',
            requester_role: 'analyst',
            requester_kind: 'automation',
            mode: 'approval',
            policy_version: 'pv',
            evidence: {},
            created_at: new Date().toISOString(),
            expires_at: new Date(Date.now() + 60_000).toISOString(),
          })
        ).approval;
      const open = await approval(`apr_open_${Date.now()}`);
      const closed = await approval(`apr_closed_${Date.now()}`);
      await approvals.transition(closed.id, ['pending'], 'denied');
      const stored = await store.enqueueRouted(
        user('u_parked', 'block', 5000),
        ['a', 'b', 'c', 'd'].map((effect) => ({ effect, tool: 't', args: {} })),
      );
      const claimed = (await store.claim('owner', 10, 60_000)).filter((e) => e.eventId === stored.id);
      const byAge = claimed.sort((x, y) => x.createdAt - y.createdAt || x.id - y.id);
      for (const [i, effect] of byAge.entries()) {
        await store.awaitApproval(effect.id, 'owner', i === 1 ? open.id : closed.id);
      }
      const closedIds = byAge.filter((_, i) => i !== 1).map((e) => e.id);
      const first = await store.parkedOnClosedApprovals(2);
      expect(first.map((e) => e.id)).toEqual(closedIds.slice(0, 2));
      expect(first[0]).toMatchObject({ tool: 't', approvalId: closed.id });
      const rest = await store.parkedOnClosedApprovals(2, first[1]);
      expect(rest.map((e) => e.id)).toEqual(closedIds.slice(2));
    });
  });
}
