/**
 * A write's outcome record that cannot be committed is not lost. The intent record is durable before
 * anything changes upstream; if the `executed` record then fails (a full disk, say, injected here as
 * a trigger on the real SQLite ledger), the call still answers with its result, the ledger refuses
 * new calls until it writes again, and the record is retried and lands once it does.
 */
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { databasePath } from '../../src/store/store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('outcome records of writes', () => {
  it('an executed record whose commit failed is retried until it is stored; calls are refused meanwhile', async () => {
    env = await setup();
    const db = new DatabaseSync(databasePath(env.config));
    db.exec(`CREATE TRIGGER fail_executed BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"executed"%'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    try {
      const result = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-watch' });
      // The change happened upstream: its answer is not masked by the audit failure.
      expect(result.isError).toBe(false);
      expect(env.sandbox.segment.profile('sandbox-watch')?.fraud_decision).toBe('watch');

      // Fail closed while the record is outstanding.
      const refused = await env.callTool('get_sift_score', { user_id: 'sandbox-watch' });
      expect(refused.isError).toBe(true);
      expect(refused.error.code).toBe('UPSTREAM_ERROR');
    } finally {
      db.exec('DROP TRIGGER fail_executed');
      db.close();
    }

    const executed = async () =>
      (await storedAuditRecords(env!.config, env!.runtime.audit)).filter(
        (r) => r.event === 'executed' && r.tool === 'sync_decision_to_segment',
      );
    for (let i = 0; i < 100 && (await executed()).length === 0; i += 1) await sleep(100);
    expect(await executed()).toHaveLength(1);
    const again = await env.callTool('get_sift_score', { user_id: 'sandbox-watch' });
    expect(again.isError).toBe(false);
  });
});
