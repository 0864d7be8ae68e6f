/**
 * Outbox transitions and their audit records share one store transaction. An operator's retry or
 * drop of a dead letter: with the record's insert failing (injected after the effect was changed),
 * the effect stays a dead letter and no record is kept; once the ledger writes again, both happen.
 * The worker's supersede of stale effects: with its record failing, the effects stay pending (and
 * nothing is claimed that pass); once the ledger writes again, they are skipped with their record.
 */
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { runOutboxCommand } from '../../src/cli/outbox.ts';
import { databasePath } from '../../src/store/store.ts';
import { decisionBody, operatorConfigs, outboxEnv, sign, type OutboxEnv } from './helpers.ts';

let env: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

describe('outbox transitions and their audit records', () => {
  it('a drop whose record fails is not applied; the next one is, with its record', async () => {
    env = await outboxEnv({ config: { automation: { max_attempts: 1, rules: { watch: ['segment'] } } } });
    env.sandbox.segment.faults.chaos(1, [{ status: 500, path: '/v1/' }]);
    const { time } = await env.sandbox.sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: 'fg_drop',
    });
    const body = decisionBody('fg_drop', 'watch_user_payment_abuse', time);
    expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const [dead] = await env.automation.store.list({ states: ['dead'] });
    expect(dead).toBeDefined();
    const id = String(dead?.id);

    const { asOps } = operatorConfigs(env);

    // A full disk, say: every `dropped` record fails to insert.
    const db = new DatabaseSync(databasePath(env.config));
    db.exec(`CREATE TRIGGER fail_dropped BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"dropped"%'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    await expect(runOutboxCommand(['drop', id], { reason: 'duplicate' }, asOps)).rejects.toMatchObject({
      retryable: true,
      message: expect.stringContaining('audit ledger could not be written'),
    });
    expect((await env.automation.store.get(dead?.id ?? 0))?.state).toBe('dead');
    expect((await env.auditRecords()).filter((r) => r.event === 'dropped')).toEqual([]);

    db.exec('DROP TRIGGER fail_dropped');
    db.close();
    expect(await runOutboxCommand(['drop', id], { reason: 'duplicate' }, asOps)).toBe(0);
    expect((await env.automation.store.get(dead?.id ?? 0))?.state).toBe('dropped');
    expect(
      (await env.auditRecords()).filter((r) => r.event === 'dropped').map((r) => r.principal.id),
    ).toEqual(['ops@example.com']);
  });

  it('a supersede whose record fails is not applied and claims nothing; the next pass applies it with its record', async () => {
    env = await outboxEnv({ config: { automation: { rules: { watch: ['segment'] } } } });
    // Two decisions for one user before the worker runs: the earlier one's effect is stale.
    for (let i = 0; i < 2; i++) {
      const { time } = await env.sandbox.sift.consoleApplyDecision({
        decisionId: 'watch_user_payment_abuse',
        userId: 'fg_stale',
      });
      const body = decisionBody('fg_stale', 'watch_user_payment_abuse', time);
      expect((await env.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    }

    const db = new DatabaseSync(databasePath(env.config));
    db.exec(`CREATE TRIGGER fail_superseded BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"superseded"%'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    const blocked = await env.automation.worker.tick();
    expect(blocked).toMatchObject({ routed: 2, claimed: 0 });
    const pending = await env.automation.store.list({ states: ['pending'] });
    expect(pending).toHaveLength(2);
    expect(await env.automation.store.list({ states: ['skipped'] })).toEqual([]);
    expect((await env.auditRecords()).filter((r) => r.event === 'superseded')).toEqual([]);

    db.exec('DROP TRIGGER fail_superseded');
    db.close();
    expect(await env.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const skipped = await env.automation.store.list({ states: ['skipped'] });
    expect(skipped).toHaveLength(1);
    const records = (await env.auditRecords()).filter((r) => r.event === 'superseded') as {
      args_redacted?: { effect_ids?: number[] };
    }[];
    expect(records.map((r) => r.args_redacted?.effect_ids)).toEqual([[skipped[0]?.id]]);
    expect(await env.automation.store.list({ states: ['done'] })).toHaveLength(1);
  });
});
