/**
 * The five core tools through a real MCP client, against the emulators: happy paths asserting
 * what reached the upstream, and bad input per tool never reaching it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { startSiftEmulator } from '../../src/sandbox/sift-emulator.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

describe('get_sift_score', () => {
  beforeEach(async () => {
    env = await setup();
  });

  it('returns per-abuse-type scores, bands, reasons and the latest decisions', async () => {
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    expect(result.isError).toBe(false);
    const out = result.output as {
      highest: {
        abuse_type: string;
        score: number;
        sift_score: number;
        risk_band: string;
        reasons: { name: string }[];
      };
      scores: { abuse_type: string }[];
    };
    expect(out.highest.abuse_type).toBe('payment_abuse');
    expect(out.highest.score).toBeGreaterThanOrEqual(0.9);
    expect(out.highest.sift_score).toBe(Math.round(out.highest.score * 100));
    expect(out.highest.risk_band).toBe('critical');
    expect(out.highest.reasons.length).toBeGreaterThan(0);
    expect(out.scores.map((s) => s.abuse_type)).toContain('account_abuse');
    expect(env.sandbox.sift.requests('GET', '/v205/users/:id/score')).toHaveLength(1);

    const blocked = await env.callTool('get_sift_score', { user_id: 'sandbox-blocked' });
    expect(blocked.output.latest_decisions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ decision_id: 'block_user_payment_abuse', category: 'block' }),
      ]),
    );
  });

  it('bands follow the configured thresholds', async () => {
    await env.close();
    env = await setup({ config: { risk_bands: { medium: 0.01, high: 0.02, critical: 0.99 } } });
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect((result.output.highest as { risk_band: string }).risk_band).toBe('high');
  });

  it('refresh=true asks Sift to rescore (POST)', async () => {
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk', refresh: true });
    expect(result.output.refreshed).toBe(true);
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/score')).toHaveLength(1);
  });

  it('an unknown user is NOT_FOUND, not an empty success', async () => {
    const result = await env.callTool('get_sift_score', { user_id: 'nobody-at-all' });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('NOT_FOUND');
    expect(result.error.message).toContain('nobody-at-all');
  });

  it('bad input names the field and never reaches Sift', async () => {
    const result = await env.callTool('get_sift_score', { user_id: 'has space', abuse_types: ['nope'] });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('user_id');
    expect(result.error.message).toContain('abuse_types.0');
    expect(env.sandbox.sift.journal).toHaveLength(0);
  });
});

describe('sync_decision_to_segment', () => {
  beforeEach(async () => {
    env = await setup();
  });

  it('maps the current Sift decision through the configured mapping to traits and a track event', async () => {
    const result = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-blocked' });
    expect(result.isError).toBe(false);
    expect(result.output.decision).toMatchObject({
      decision_id: 'block_user_payment_abuse',
      category: 'block',
    });
    expect(result.output.traits_written).toMatchObject({ fraud_decision: 'block', fraud_blocked: true });
    const events = env.sandbox.segment.eventsFor('sandbox-blocked');
    expect(events.map((e) => e.type).sort()).toEqual(['identify', 'track']);
    expect(env.sandbox.segment.profile('sandbox-blocked')).toMatchObject({
      fraud_decision: 'block',
      fraud_blocked: true,
    });
    // The decision came from Sift itself.
    expect(env.sandbox.sift.requests('GET', '/v3/accounts/:acct/users/:uid/decisions')).toHaveLength(1);
  });

  it('a repeated sync of the same decision is deduplicated by messageId', async () => {
    const first = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-watch' });
    const second = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-watch' });
    expect(second.output.message_ids).toEqual(first.output.message_ids);
    expect(env.sandbox.segment.eventsFor('sandbox-watch')).toHaveLength(2);
    expect(env.sandbox.segment.duplicates).toBeGreaterThanOrEqual(2);
  });

  it('a mapping change applies without code changes', async () => {
    await env.close();
    env = await setup({
      config: {
        mapping: {
          decisions: {
            block: {
              segment_traits: { risk_tier: 'blocked' },
              segment_event: 'User Blocked',
              salesforce_value: 'Blocked',
            },
          },
        },
      },
    });
    const result = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-blocked' });
    expect(result.output.traits_written).toMatchObject({ risk_tier: 'blocked' });
    expect(env.sandbox.segment.eventsFor('sandbox-blocked').find((e) => e.type === 'track')).toMatchObject({
      event: 'User Blocked',
    });
  });

  it('the agent cannot supply the decision', async () => {
    const result = await env.callTool('sync_decision_to_segment', {
      user_id: 'sandbox-low-risk',
      decision: 'block',
    });
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('decision');
    expect(env.sandbox.segment.journal).toHaveLength(0);
  });

  it('with no current decision it writes the no-decision traits', async () => {
    const result = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-low-risk' });
    expect(result.output.decision).toBeNull();
    expect(result.output.traits_written).toMatchObject({ fraud_decision: null, fraud_blocked: false });
  });
});

describe('create_fraud_case', () => {
  beforeEach(async () => {
    env = await setup();
  });

  it('opens a case pre-filled from Sift, in the fraud queue, linked by Sift user id', async () => {
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'Card testing pattern on three cards in an hour',
    });
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({
      existing: false,
      match: 'sift_user_id',
      risk_band: 'critical',
      priority: 'High',
    });
    const cases = env.sandbox.salesforce
      .records('Case')
      .filter((c) => c.Sift_User_Id__c === 'sandbox-high-risk');
    expect(cases).toHaveLength(1);
    const created = cases[0]!;
    const queue = env.sandbox.salesforce.records('Group').find((g) => g.DeveloperName === 'Fraud_Review');
    expect(created.OwnerId).toBe(queue?.Id);
    expect(created.Type).toBe('Fraud');
    expect(created.AccountId).toBe(result.output.account_id);
    expect(String(created.Description)).toContain('Sift score: ');
    expect(created.Sift_Score__c).toBe(result.output.sift_score);
  });

  it('links by email when no Sift user id matches, and reports match none when nothing does', async () => {
    const byEmail = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-blocked',
      summary: 'Chargeback cluster on this account',
      email: 'blocked.user@example.com',
    });
    expect(byEmail.output.match).toBe('email');
    expect(byEmail.output.contact_id).toBeTruthy();

    const none = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-unmatched',
      summary: 'No CRM record for this user',
    });
    expect(none.isError).toBe(false);
    expect(none.output.match).toBe('none');
  });

  it('returns the open case instead of creating a second one', async () => {
    const first = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'First report of abuse',
    });
    const second = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'Second report of abuse',
    });
    expect(second.output).toMatchObject({ existing: true, case_id: first.output.case_id });
    expect(
      env.sandbox.salesforce.records('Case').filter((c) => c.Sift_User_Id__c === 'sandbox-high-risk'),
    ).toHaveLength(1);
  });

  it('a lost response on the case upsert is retried without creating a second case (external-id upsert)', async () => {
    env.sandbox.salesforce.faults.inject({
      method: 'PATCH',
      path: '/sobjects/Case/Fraudgate_Key__c/',
      dropResponse: true,
    });
    const before = env.sandbox.salesforce.records('Case').length;
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-low-risk',
      summary: 'Response lost on the way back',
    });
    expect(result.error).toBeUndefined();
    // The first PATCH created the case but its answer was lost; the retried PATCH updated the same case.
    expect(
      env.sandbox.salesforce.requests('PATCH', '/services/data/:v/sobjects/Case/Fraudgate_Key__c/:key'),
    ).toHaveLength(2);
    expect(env.sandbox.salesforce.records('Case')).toHaveLength(before + 1);
    // A second call finds the open case.
    const again = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-low-risk',
      summary: 'Response lost on the way back',
    });
    expect(again.output).toMatchObject({ existing: true, case_id: result.output.case_id });
  });

  it('derives priority from the band unless given', async () => {
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-low-risk',
      summary: 'Low risk but analyst wants a look',
      priority: 'High',
    });
    expect(result.error).toBeUndefined();
    expect(result.output.priority).toBe('High');
    expect(result.output.risk_band).toBe('low');
  });

  it('bad input names the field and writes nothing', async () => {
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-low-risk',
      summary: 'short',
      email: 'not-an-email',
      priority: 'Urgent',
    });
    expect(result.error.code).toBe('INVALID_INPUT');
    for (const field of ['summary', 'email', 'priority']) expect(result.error.message).toContain(field);
    expect(
      env.sandbox.salesforce.journal.filter((e) => e.method !== 'POST' || !e.path.includes('oauth2')),
    ).toHaveLength(0);
  });
});

describe('create_fraud_case for a user Sift knows but has not scored', () => {
  let own: Sandbox | undefined;
  // env (closed by the file's afterEach) does not own a sandbox it was given.
  afterEach(async () => {
    await own?.close();
    own = undefined;
  });

  /** A sandbox whose Sift account scores no abuse type: a user who sent events has no score at all. */
  async function unscoredSandbox(user: string): Promise<Sandbox> {
    const base = await startSandbox(DEFAULTS);
    await base.sift.close();
    const sift = await startSiftEmulator({ abuseTypes: [] });
    const sent = await fetch(`${sift.url}/v205/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ $api_key: sift.apiKey, $type: '$login', $user_id: user }),
    });
    expect(sent.status).toBe(200);
    return {
      ...base,
      sift,
      config: { ...base.config, sift: { ...base.config.sift, base_url: sift.url } },
      secrets: { ...base.secrets, siftApiKey: sift.apiKey },
      async close() {
        await Promise.all([sift.close(), base.segment.close(), base.salesforce.close()]);
      },
    };
  }

  it('says not scored, writes no score field and takes a medium priority, not a zero score', async () => {
    const user = 'fg_scoretools_unscored';
    own = await unscoredSandbox(user);
    env = await setup({ sandbox: own });
    const result = await env.callTool('create_fraud_case', {
      user_id: user,
      summary: 'Reported by support before Sift scored anything',
    });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({ sift_score: null, risk_band: null, priority: 'Medium' });
    const created = env.sandbox.salesforce.records('Case').find((c) => c.Id === result.output.case_id);
    expect(created).toBeDefined();
    expect(created?.Sift_Score__c ?? null).toBeNull();
    expect(created?.Priority).toBe('Medium');
    expect(String(created?.Description)).toContain('Sift score: not scored');
    expect(String(created?.Subject)).not.toContain('Sift 0');
  });
});
