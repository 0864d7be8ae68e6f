/**
 * A caller-supplied email or phone never chooses which customer's Salesforce Contact a write goes
 * to, and never settles the identity review list: writes accept it only when it is the user's own
 * (their mapped Segment profile's), reads may look with it but leave the list alone.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const UNMATCHED = 'sandbox-unmatched';
/** Another customer's Contact email (Lena Lowrisk, sandbox-low-risk). */
const OTHER_EMAIL = 'sandbox-low-risk@example.com';

const contact = (e: TestEnv, id: string | undefined) =>
  e.sandbox.salesforce.records('Contact').find((r) => r.Id === id);

async function listed(e: TestEnv): Promise<string[]> {
  const page = await e.callTool('list_unmatched_identities', {});
  return (page.output.items as { sift_user_id: string }[]).map((i) => i.sift_user_id);
}

async function listUnmatchedUser(e: TestEnv) {
  const first = await e.callTool('lookup_user', { user_id: UNMATCHED });
  expect(first.output.identity_review).toMatchObject({ listed: true, times_seen: 1 });
  expect(await listed(e)).toContain(UNMATCHED);
}

describe("a caller's email or phone", () => {
  it("cannot point sync_decision_to_salesforce at another customer's Contact", async () => {
    env = await setup();
    await listUnmatchedUser(env);
    const otherId = env.sandbox.salesforce.demo?.contacts['sandbox-low-risk'];
    const before = { ...contact(env, otherId) };

    const refused = await env.callTool('sync_decision_to_salesforce', {
      user_id: UNMATCHED,
      email: OTHER_EMAIL,
    });
    expect(refused.error).toMatchObject({ code: 'NOT_FOUND' });
    expect(refused.error.message).toMatch(/^email: /);
    expect(refused.error.message).toContain('list_unmatched_identities');
    expect(refused.error.message).not.toContain(OTHER_EMAIL);
    expect(contact(env, otherId)).toEqual(before);
    expect(env.sandbox.salesforce.records('FeedItem')).toHaveLength(0);
    expect(await listed(env)).toContain(UNMATCHED);

    // A phone works the same way.
    const phoned = env.sandbox.salesforce.insert('Contact', { LastName: 'Phoned', Phone: '+1 415 555 0101' });
    const byPhone = await env.callTool('sync_decision_to_salesforce', {
      user_id: UNMATCHED,
      phone: '+14155550101',
    });
    expect(byPhone.error).toMatchObject({ code: 'NOT_FOUND' });
    expect(byPhone.error.message).toMatch(/^phone: /);
    expect(contact(env, phoned.Id)?.Sift_Decision__c).toBeUndefined();
  });

  it('cannot link create_fraud_case to another customer', async () => {
    env = await setup();
    const refused = await env.callTool('create_fraud_case', {
      user_id: UNMATCHED,
      summary: 'Chargeback cluster on this account',
      email: OTHER_EMAIL,
    });
    expect(refused.error).toMatchObject({ code: 'NOT_FOUND' });
    expect(refused.error.message).toMatch(/^email: /);
    expect(
      env.sandbox.salesforce.records('Case').filter((c) => c.Sift_User_Id__c === UNMATCHED),
    ).toHaveLength(0);
  });

  it("is accepted for a write when it is the user's own (their Segment profile's)", async () => {
    env = await setup();
    const own = await env.callTool('sync_decision_to_salesforce', {
      user_id: 'sandbox-blocked',
      email: 'Blocked.User@example.com',
    });
    expect(own.output).toMatchObject({ match: 'email', salesforce_value: 'Blocked' });
  });

  it('lookup_user may look with it, but it never takes the user off the review list', async () => {
    env = await setup();
    await listUnmatchedUser(env);
    const looked = await env.callTool('lookup_user', { user_id: UNMATCHED, email: OTHER_EMAIL });
    expect(looked.output.matched_by).toBe('email');
    expect(looked.output.identity_review).toMatchObject({ listed: true, times_seen: 1 });
    expect(await listed(env)).toContain(UNMATCHED);
  });
});
