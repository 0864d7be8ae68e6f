/**
 * The pipeline stages through the protocol: identity, authorization, rate limits, audit
 * completeness and "no audit, no write", and upstream faults surfacing as clear, retryable errors
 * without duplicate writes.
 */
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { UNIDENTIFIED } from '../../src/auth/identity.ts';
import { loadConfig } from '../../src/config.ts';
import { databasePath } from '../../src/store/store.ts';
import { storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const auditRecords = (e: TestEnv) => storedAuditRecords(e.config, e.runtime.audit);

describe('identity and authorization', () => {
  it('write tools refuse without an analyst identity; reads still work', async () => {
    env = await setup({ principal: { id: UNIDENTIFIED, kind: 'user', role: 'analyst' } });
    const read = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect(read.isError).toBe(false);
    const write = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'should not be created',
    });
    expect(write.error.code).toBe('FORBIDDEN');
    expect(write.error.message).toContain('FRAUDGATE_ANALYST');
    expect(env.sandbox.salesforce.journal).toHaveLength(0);
  });

  it('identity fields cannot be supplied by the model', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'trying to impersonate',
      analyst: 'boss@example.com',
    });
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('analyst');
  });

  it('read-only mode hides and refuses write tools', async () => {
    env = await setup({ config: { read_only: true } });
    const listed = (await env.client.listTools()).tools.map((t) => t.name);
    expect(listed).toContain('get_sift_score');
    expect(listed).not.toContain('create_fraud_case');
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-low-risk',
      summary: 'read only mode test',
    });
    expect(result.error.code).toBe('FORBIDDEN');
    expect(result.error.message).toContain('read-only');
  });

  it('FRAUDGATE_READ_ONLY=YES hides write tools from a client, as true does', async () => {
    const { read_only } = loadConfig({ sandbox: true }, { FRAUDGATE_READ_ONLY: 'YES' }).config;
    env = await setup({ config: { read_only } });
    const listed = (await env.client.listTools()).tools;
    expect(listed.map((t) => t.name)).not.toContain('suppress_user');
    expect(listed.every((t) => t.annotations?.readOnlyHint === true)).toBe(true);
  });

  it('a viewer sees only read tools and is refused writes', async () => {
    env = await setup({ principal: { id: 'vic.viewer@example.com', kind: 'user', role: 'viewer' } });
    const listed = (await env.client.listTools()).tools;
    expect(listed.every((t) => t.annotations?.readOnlyHint === true)).toBe(true);
    const result = await env.callTool('suppress_user', {
      user_id: 'sandbox-low-risk',
      reason: 'not allowed',
    });
    expect(result.error.code).toBe('FORBIDDEN');
  });
});

describe('rate limits', () => {
  it('a principal × tool bucket refuses with RATE_LIMITED and retry_after_ms', async () => {
    env = await setup({
      config: { rate_limits: { tools: { get_sift_score: { capacity: 2, per_minute: 6 } } } },
    });
    const ok1 = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    const ok2 = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    const limited = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect([ok1.isError, ok2.isError]).toEqual([false, false]);
    expect(limited.error.code).toBe('RATE_LIMITED');
    expect(limited.error.retryable).toBe(true);
    expect(limited.error.retry_after_ms).toBeGreaterThan(0);
    expect(limited.error.retry_after_ms).toBeLessThanOrEqual(10_000);
    expect(env.sandbox.sift.requests('GET', '/v205/users/:id/score')).toHaveLength(2);
    // Another tool has its own bucket.
    expect((await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-low-risk' })).isError).toBe(
      false,
    );
  });
});

describe('audit', () => {
  it('every call leaves a record: executed, invalid, forbidden, approval_requested; intent precedes writes', async () => {
    env = await setup();
    await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    await env.callTool('get_sift_score', { user_id: 'bad id' });
    await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'audited case creation',
      email: 'jane.doe@example.com',
    });
    await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'mail jane.doe@example.com',
    });
    await env.callTool('get_sift_score', { user_id: 'nobody-at-all' });
    const records = await auditRecords(env);
    const events = records.map((r) => `${r.tool}:${r.event}`);
    expect(events).toEqual([
      'get_sift_score:executed',
      'get_sift_score:invalid',
      'create_fraud_case:intent',
      'create_fraud_case:executed',
      'apply_label:approval_requested',
      'get_sift_score:failed',
    ]);
    expect(records.every((r) => r.principal.id === ANALYST.id)).toBe(true);
    expect(records[2]?.args_hash).toMatch(/^[0-9a-f]{64}$/);
    // A read that ran is not hashed (nothing binds to it); its record keeps the redacted arguments.
    expect(records[0]?.args_hash).toBeUndefined();
    expect(records[0]?.args_redacted).toMatchObject({ user_id: 'sandbox-low-risk' });
    expect(JSON.stringify(records)).not.toContain('jane.doe@example.com');
    expect(await verifyStoredAudit(env.config)).toMatchObject({ ok: true, records: 6 });
  });

  it('if the audit cannot be written, the write does not happen', async () => {
    env = await setup();
    // Take the ledger's table away behind the server's back: its commits now fail.
    const db = new DatabaseSync(databasePath(env.config));
    db.exec('ALTER TABLE audit_records RENAME TO audit_records_gone');
    db.close();
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'must not be written',
    });
    expect(result.isError).toBe(true);
    expect(result.error.message).toMatch(/audit/i);
    expect(
      env.sandbox.salesforce.records('Case').filter((c) => c.Sift_User_Id__c === 'sandbox-high-risk'),
    ).toHaveLength(0);
  });
});

describe('upstream faults', () => {
  it('Sift 503s are retried and the read succeeds', async () => {
    env = await setup();
    env.sandbox.sift.faults.inject({ count: 2, status: 503, body: '<html>down</html>' });
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect(result.isError).toBe(false);
    expect(env.sandbox.sift.journal).toHaveLength(3);
  });

  it('persistent Sift 429 → UPSTREAM_RATE_LIMITED, retryable, no vendor body in the message', async () => {
    env = await setup();
    env.sandbox.sift.rateLimit(10, { retryAfterSeconds: 0 });
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect(result.error.code).toBe('UPSTREAM_RATE_LIMITED');
    expect(result.error.retryable).toBe(true);
    expect(result.error.message).not.toContain('sandbox-sift-api-key');
  });

  it('a Sift timeout → retryable UPSTREAM_ERROR', async () => {
    env = await setup({ config: { sift: { timeout_ms: 100, max_retries: 0 } } });
    env.sandbox.sift.faults.inject({ delayMs: 400 });
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect(result.error.code).toBe('UPSTREAM_ERROR');
    expect(result.error.retryable).toBe(true);
  });

  it('Segment 500s during a sync → retryable error, and a retry writes each message once', async () => {
    env = await setup({ config: { segment: { delivery_timeout_ms: 600 } } });
    env.sandbox.segment.faults.inject({ count: 50, path: '/v1/batch', status: 500 });
    const failed = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-blocked' });
    expect(failed.isError).toBe(true);
    expect(failed.error.retryable).toBe(true);
    env.sandbox.segment.faults.clear();
    // A fresh process (new Segment client) retries the same sync.
    env = await env.restart();
    const retried = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-blocked' });
    expect(retried.isError).toBe(false);
    const stored = env.sandbox.segment.eventsFor('sandbox-blocked');
    expect(stored.filter((e) => e.type === 'track')).toHaveLength(1);
    expect(stored.filter((e) => e.type === 'identify')).toHaveLength(1);
  });

  it('Salesforce 503 on the case upsert → retried (idempotent PATCH); one case', async () => {
    env = await setup();
    env.sandbox.salesforce.faults.inject({
      count: 1,
      method: 'PATCH',
      path: '/sobjects/Case/Fraudgate_Key__c/',
      status: 503,
    });
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'transient Salesforce outage',
    });
    expect(result.isError).toBe(false);
    expect(
      env.sandbox.salesforce.records('Case').filter((c) => c.Sift_User_Id__c === 'sandbox-high-risk'),
    ).toHaveLength(1);
  });
});
