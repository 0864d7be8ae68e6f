/**
 * An approval transition and its audit record share one store transaction: with a failure injected
 * between them (the record's insert aborts, after the transition was written), neither is kept; without
 * one, both are, and the ledger still verifies (the rolled-back record's seq is reused by the next).
 * On SQLite always, on PostgreSQL when 127.0.0.1:5432 answers (a schema of its own per run).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS, type Config, type Secrets } from '../../src/config.ts';
import { silentLogger } from '../../src/logger.ts';
import { openGovernanceState } from '../../src/runtime.ts';
import type { NewApproval } from '../../src/store/approval-store.ts';
import { storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';
import { listening } from '../helpers/services.ts';
import { labelRequest } from '../helpers/approvals.ts';

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const pgListening = await listening(5432);
if (!pgListening) {
  process.stderr.write(
    'approval-audit-transaction: PostgreSQL tests skipped: nothing listens on 127.0.0.1:5432\n',
  );
}

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const approver = { id: 'alex.approver@example.com', kind: 'user', role: 'approver' } as const;

function request(n: number, expiresInMs = 60_000): NewApproval {
  return labelRequest(`apr_${String(n).padStart(20, '0')}`, {
    args: { user_id: `u${n}` },
    target: `sift_user:u${n}`,
    expires_at: new Date(Date.now() + expiresInMs).toISOString(),
  });
}

/** SQL that makes every insert of an audit record with this event fail, as a full disk would. */
const failRecordsOf = {
  sqlite: (event: string) => [
    `CREATE TRIGGER fail_${event} BEFORE INSERT ON audit_records WHEN NEW.body LIKE '%"event":"${event}"%'
     BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
  ],
  postgres: (event: string) => [
    `CREATE FUNCTION fail_${event}() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN IF NEW.body LIKE '%"event":"${event}"%' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`,
    `CREATE TRIGGER fail_${event} BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION fail_${event}()`,
  ],
};
const stopFailing = {
  sqlite: (event: string) => [`DROP TRIGGER fail_${event}`],
  postgres: (event: string) => [`DROP TRIGGER fail_${event} ON audit_records`],
};

async function setUp(engine: 'sqlite' | 'postgres') {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-approval-tx-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const schema = `fg_approval_tx_${process.pid}_${randomBytes(4).toString('hex')}`;
  const config: Config = {
    ...DEFAULTS,
    data_dir: dir,
    store: engine,
    store_postgres: { ...DEFAULTS.store_postgres, schema },
  };
  const secrets: Secrets = engine === 'postgres' ? { postgresUrl: PG_URL } : {};
  if (engine === 'postgres') {
    cleanups.push(async () => {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    });
  }
  const state = await openGovernanceState(config, secrets, silentLogger);
  cleanups.push(() => state.close());
  const sql = async (statements: string[]) => {
    for (const statement of statements) await state.store.sql.execute(statement);
  };
  const recordsFor = async (approvalId: string) =>
    (await storedAuditRecords(config, state.audit, secrets))
      .filter((r) => r.approval_id === approvalId)
      .map((r) => r.event);
  return { config, secrets, state, sql, recordsFor };
}

for (const engine of ['sqlite', 'postgres'] as const) {
  describe.skipIf(engine === 'postgres' && !pgListening)(
    `approval transitions and their audit records (${engine})`,
    () => {
      it('a decision whose record fails after the transition was written leaves neither; the next one keeps both', async () => {
        const { config, secrets, state, sql, recordsFor } = await setUp(engine);
        const { approval } = await state.approvals.create(request(1));
        // Group-committed records before and around: the chain the transactional ones join.
        await state.audit.append({ event: 'attempt', call_id: 'before', principal: approver });

        await sql(failRecordsOf[engine]('denied'));
        await expect(
          state.desk.decide(approval.id, { approve: false, approver, reason: 'not fraud' }),
        ).rejects.toMatchObject({ code: 'UPSTREAM_ERROR', retryable: true, data: { dependency: 'ledger' } });
        // The denial was written first, then its record failed: the transaction took both back.
        expect((await state.approvals.get(approval.id))?.state).toBe('pending');
        expect(await recordsFor(approval.id)).toEqual([]);

        await sql(stopFailing[engine]('denied'));
        const decided = await state.desk.decide(approval.id, { approve: true, approver });
        expect(decided.state).toBe('approved');
        expect((await state.approvals.get(approval.id))?.state).toBe('approved');
        expect(await recordsFor(approval.id)).toEqual(['approved']);

        // A group commit after the transactional append chains on from it.
        await state.audit.append({ event: 'attempt', call_id: 'after', principal: approver });
        const verified = await verifyStoredAudit(config, secrets, state.audit);
        expect(verified).toMatchObject({ ok: true, records: 3 });
      });

      it('an expiry whose record fails stays unexpired (and the next sweep records it)', async () => {
        const { state, sql, recordsFor } = await setUp(engine);
        const { approval } = await state.approvals.create(request(2, -1));

        await sql(failRecordsOf[engine]('expired'));
        await state.desk.expireOverdue();
        expect((await state.approvals.get(approval.id))?.state).toBe('pending');
        expect(await recordsFor(approval.id)).toEqual([]);

        await sql(stopFailing[engine]('expired'));
        await state.desk.expireOverdue();
        expect((await state.approvals.get(approval.id))?.state).toBe('expired');
        expect(await recordsFor(approval.id)).toEqual(['expired']);
      });
    },
  );
}
