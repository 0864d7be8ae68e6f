/**
 * Automated Salesforce matching uses lookup_user's fallbacks (issue 9 item 7): Sift user id, then
 * email, then phone — the caller's, else the mapped Segment profile's traits — and a miss lands on
 * the identity review list while a later match takes it off.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const contact = (e: TestEnv, id: string) => e.sandbox.salesforce.records('Contact').find((r) => r.Id === id);

describe('sync_decision_to_salesforce and create_fraud_case match like lookup_user', () => {
  it('without an email argument, the Segment profile email finds the Contact', async () => {
    env = await setup();
    const result = await env.callTool('sync_decision_to_salesforce', { user_id: 'sandbox-blocked' });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({ match: 'email', salesforce_value: 'Blocked' });
    const id = env.sandbox.salesforce.demo?.contacts['sandbox-blocked'] ?? '';
    expect(contact(env, id)?.Sift_Decision__c).toBe('Blocked');
  });

  it('a mapped Segment profile with only a phone finds the Contact by phone, in any spelling', async () => {
    env = await setup();
    const sf = env.runtime.clients.salesforce;
    const created = await sf.create('Contact', { LastName: 'Phoneonly', Phone: '+442079460018' });
    await env.runtime.clients.segment.identify({
      userId: 'seg-phone-1',
      traits: { phone: '+44 20 7946 0018' },
      messageId: 'seed-phone-1',
    });
    await env.runtime.identities.map({
      sift_user_id: 'sandbox-unmatched',
      segment_user_id: 'seg-phone-1',
      mapped_by: 'ops@example.com',
      mapped_at: new Date().toISOString(),
    });
    const result = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-unmatched',
      summary: 'Card testing pattern seen on this account.',
    });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({ match: 'phone', contact_id: created.id });
  });

  it('a miss goes on the identity review list with what was tried; a later match takes it off', async () => {
    env = await setup();
    const miss = await env.callTool('sync_decision_to_salesforce', { user_id: 'sandbox-unmatched' });
    expect(miss.error.code).toBe('NOT_FOUND');
    expect(miss.error.message).toContain('identity review list');
    const listed = await env.callTool('list_unmatched_identities', {});
    const entry = (listed.output.items as { sift_user_id: string; tried: { identifier: string }[] }[]).find(
      (i) => i.sift_user_id === 'sandbox-unmatched',
    );
    expect(entry?.tried.map((t) => t.identifier)).toEqual(['sift_user_id', 'segment_user_id', 'email']);

    // An operator adds the Contact; the next automated sync matches by email and clears the entry.
    await env.runtime.clients.salesforce.create('Contact', {
      LastName: 'Unmatched',
      Email: 'sandbox-unmatched@example.com',
    });
    const hit = await env.callTool('sync_decision_to_salesforce', { user_id: 'sandbox-unmatched' });
    expect(hit.output).toMatchObject({ match: 'email' });
    const after = await env.callTool('list_unmatched_identities', {});
    expect(
      (after.output.items as { sift_user_id: string }[]).some((i) => i.sift_user_id === 'sandbox-unmatched'),
    ).toBe(false);
  });
});
