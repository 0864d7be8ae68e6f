/**
 * `dry_run: true` on every write tool: the plan (current state vs changes) comes back, nothing is
 * written upstream, and no approval is requested.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const writes = (e: TestEnv) => [
  ...e.sandbox.sift.journal.filter(
    (j) => j.method !== 'GET' && !(j.method === 'POST' && j.path.endsWith('/score')),
  ),
  ...e.sandbox.segment.journal.filter((j) => j.method === 'POST'),
  ...e.sandbox.salesforce.journal.filter((j) => j.method !== 'GET' && !j.path.includes('/oauth2/')),
];

describe('dry run', () => {
  it('every write tool can dry-run', () => {
    for (const tool of tools.filter((t) => t.risk !== 'read'))
      expect(tool.plan, tool.name).toBeTypeOf('function');
  });

  it('apply_label: plan with the current label, no approval requested, nothing sent', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'planning only',
      dry_run: true,
    });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({
      dry_run: true,
      tool: 'apply_label',
      approval_required: 'four_eyes',
      current: { label: null },
      changes: { label: { is_bad: true, analyst: 'ana.analyst@example.com' } },
    });
    expect(await env.runtime.approvals.list()).toHaveLength(0);
    expect(writes(env)).toHaveLength(0);
  });

  it('suppress_user, sync_decision_to_segment and create_fraud_case write nothing', async () => {
    env = await setup();
    const suppress = await env.callTool('suppress_user', {
      user_id: 'sandbox-blocked',
      reason: 'plan it',
      dry_run: true,
    });
    expect(suppress.output).toMatchObject({ current: { traits: { suppressed_for_fraud: true } } });
    const sync = await env.callTool('sync_decision_to_segment', {
      user_id: 'sandbox-blocked',
      dry_run: true,
    });
    expect(sync.output).toMatchObject({ changes: { traits: { fraud_decision: 'block' } } });
    const kase = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'what would this case look like',
      dry_run: true,
    });
    expect(kase.output).toMatchObject({
      current: { open_case: null, match: 'sift_user_id' },
      changes: { create: { sobject: 'Case' } },
    });
    const existing = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-watch',
      summary: 'already has a case',
      dry_run: true,
    });
    expect(existing.output).toMatchObject({ changes: {} });
    expect(writes(env)).toHaveLength(0);
    expect(await env.runtime.approvals.list()).toHaveLength(0);
  });
});
