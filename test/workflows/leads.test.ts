/**
 * New Leads (issue 9 item 4): a lead Sift has never seen is `not_scored`, never a failure (the
 * README's demo lead included); the mapping may send it to Sift as a new account first; a lead over
 * the threshold goes to the review queue with the configured Lead Status.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SALESFORCE_RISKY_LEAD_EMAIL } from '../../src/sandbox/salesforce-demo-data.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const lead = (e: TestEnv, id: string) => e.sandbox.salesforce.records('Lead').find((r) => r.Id === id);

describe('enrich_salesforce_lead for leads Sift has not seen', () => {
  it('the demo lead is not_scored: only the checked-at stamp is written, nothing is sent to Sift', async () => {
    env = await setup();
    const result = await env.callTool('enrich_salesforce_lead', { email: SALESFORCE_RISKY_LEAD_EMAIL });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({
      status: 'not_scored',
      sift_score: null,
      risk_band: null,
      routed_to_review: false,
    });
    expect(lead(env, String(result.output.lead_id))?.Sift_Checked_At__c).toBeTruthy();
    expect(Object.keys(result.output.fields_written as object)).toEqual(['Sift_Checked_At__c']);
    expect(env.sandbox.sift.events).toHaveLength(0);
  });

  it('lead_not_scored: create_account sends the lead to Sift as a new account and writes the score returned', async () => {
    env = await setup({ config: { mapping: { lead_not_scored: 'create_account' } } });
    const result = await env.callTool('enrich_salesforce_lead', { email: SALESFORCE_RISKY_LEAD_EMAIL });
    expect(result.error).toBeUndefined();
    expect(result.output.status).toBe('sent_to_sift');
    const created = env.sandbox.sift.events.filter((e) => e.type === '$create_account');
    expect(created).toHaveLength(1);
    expect(created[0]?.body).toMatchObject({
      $user_id: SALESFORCE_RISKY_LEAD_EMAIL,
      $user_email: SALESFORCE_RISKY_LEAD_EMAIL,
    });
    if (result.output.sift_score !== null) {
      expect(lead(env, String(result.output.lead_id))?.Sift_Score__c).toBe(result.output.sift_score);
    }
    // The dry run of another unseen lead never sends anything.
    const other = env.sandbox.salesforce.insert('Lead', {
      LastName: 'Dry',
      Company: 'Dry Co',
      Email: 'dry.lead@example.com',
    });
    const dry = await env.callTool('enrich_salesforce_lead', { lead_id: other.Id, dry_run: true });
    expect(dry.output).toMatchObject({ current: { sift_status: 'not_scored' } });
    expect(env.sandbox.sift.events.filter((e) => e.type === '$create_account')).toHaveLength(1);
  });

  it('over the threshold: the review queue and the configured Lead Status', async () => {
    env = await setup({ config: { salesforce: { lead_review_status: 'Working - Contacted' } } });
    const risky = env.sandbox.salesforce.insert('Lead', {
      LastName: 'Hal',
      Company: 'High Risk Trading',
      Email: 'hal.lead@example.com',
      Sift_User_Id__c: 'sandbox-high-risk',
    });
    const result = await env.callTool('enrich_salesforce_lead', { lead_id: risky.Id });
    expect(result.output).toMatchObject({ status: 'scored', routed_to_review: true });
    expect(lead(env, risky.Id)).toMatchObject({
      Status: 'Working - Contacted',
      OwnerId: env.sandbox.salesforce.demo?.fraudQueueId,
    });
  });
});
