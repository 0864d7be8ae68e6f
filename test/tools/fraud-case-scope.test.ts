/**
 * What the Salesforce write tools may touch, through a real MCP client against the emulators:
 * converted Leads are refused before Sift hears of them (Salesforce itself refuses their update),
 * the case tools read and close fraud cases only, and every Sift field is read under the name the
 * mapping gives it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const sfWrites = (e: TestEnv) =>
  e.sandbox.salesforce.journal.filter((j) => j.method !== 'GET' && !j.path.includes('/oauth2/'));
const siftPosts = (e: TestEnv) => e.sandbox.sift.journal.filter((j) => j.method === 'POST');

describe('enrich_salesforce_lead and converted Leads', () => {
  it('refuses a converted Lead by lead_id as INVALID_INPUT, before any Sift event or Salesforce write', async () => {
    env = await setup({ config: { mapping: { lead_not_scored: 'create_account' } } });
    const converted = env.sandbox.salesforce.insert('Lead', {
      LastName: 'Converted',
      Company: 'Converted Co',
      Email: 'converted.lead@example.com',
      Status: 'Closed - Converted',
      IsConverted: true,
    });

    const dry = await env.callTool('enrich_salesforce_lead', { lead_id: converted.Id, dry_run: true });
    expect(dry.error.code).toBe('INVALID_INPUT');
    expect(dry.error.message).toContain('lead_id');
    expect(dry.error.message).toContain('converted');

    const result = await env.callTool('enrich_salesforce_lead', { lead_id: converted.Id });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('lead_id');
    expect(result.error.message).toContain('Contact/Account');
    expect(siftPosts(env)).toHaveLength(0);
    expect(env.sandbox.sift.events).toHaveLength(0);
    expect(sfWrites(env)).toHaveLength(0);
  });

  it('the emulator refuses an update of a converted Lead with CANNOT_UPDATE_CONVERTED_LEAD, as Salesforce does', async () => {
    env = await setup();
    const converted = env.sandbox.salesforce.insert('Lead', {
      LastName: 'Converted',
      Company: 'Converted Co',
      IsConverted: true,
    });
    const open = env.sandbox.salesforce.insert('Lead', { LastName: 'Open', Company: 'Open Co' });
    const { accessToken } = env.sandbox.salesforce.issueTokens();
    const patch = (id: string) =>
      fetch(`${env.sandbox.salesforce.url}/services/data/v62.0/sobjects/Lead/${id}`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ Description: 'scored' }),
      });
    const refused = await patch(converted.Id);
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual([
      expect.objectContaining({ errorCode: 'CANNOT_UPDATE_CONVERTED_LEAD' }),
    ]);
    expect(env.sandbox.salesforce.records('Lead').find((r) => r.Id === converted.Id)?.Description).toBe(
      undefined,
    );
    expect((await patch(open.Id)).status).toBe(204);
  });
});

describe('get_fraud_case and resolve_fraud_case read and close fraud cases only', () => {
  it('a Case of another Type is NOT_FOUND on case_id: nothing returned, nothing written', async () => {
    env = await setup();
    const other = env.sandbox.salesforce.insert('Case', {
      Subject: 'Card charged twice',
      Description: 'Customer Jane Doe, card ending 4242, home address 1 Main St.',
      Type: 'Problem',
      Status: 'New',
      Sift_User_Id__c: 'sandbox-watch',
    });

    const read = await env.callTool('get_fraud_case', { case_id: other.Id });
    expect(read.error.code).toBe('NOT_FOUND');
    expect(read.error.message).toContain('case_id');
    expect(read.error.message).toContain('not a fraud case');
    expect(JSON.stringify(read.raw)).not.toContain('4242');
    expect(read.raw.structuredContent).toBeUndefined();

    for (const dryRun of [true, false]) {
      const closed = await env.callTool('resolve_fraud_case', {
        case_id: other.Id,
        resolution: 'confirmed_fraud',
        notes: 'Chargebacks confirmed by the issuer.',
        ...(dryRun ? { dry_run: true } : {}),
      });
      expect(closed.error.code).toBe('NOT_FOUND');
      expect(closed.error.message).toContain('not a fraud case');
    }
    expect(sfWrites(env)).toHaveLength(0);
    expect(env.sandbox.salesforce.records('Case').find((r) => r.Id === other.Id)).toMatchObject({
      Status: 'New',
      IsClosed: false,
    });
  });
});

describe('Sift fields under the names the mapping gives them', () => {
  it('create, list, get, resolve and lookup_user all use the remapped sift_user_id and score fields', async () => {
    const fields = { sift_user_id: 'Sift_Id__c', score: 'Sift_Risk_Score__c' };
    env = await setup({ config: { mapping: { salesforce_fields: fields } } });
    const sf = env.sandbox.salesforce;
    for (const sobject of ['Account', 'Contact', 'Lead', 'Case']) {
      sf.addCustomField(sobject, { name: fields.sift_user_id, type: 'string', length: 255 });
      sf.addCustomField(sobject, { name: fields.score, type: 'double' });
    }
    // Known to Sift, and to this org only under the remapped field.
    const user = 'sandbox-unmatched';
    const contact = sf.insert('Contact', { LastName: 'Remapped', Sift_Id__c: user });

    const created = await env.callTool('create_fraud_case', {
      user_id: user,
      summary: 'Chargebacks on three cards in one hour.',
    });
    expect(created.error).toBeUndefined();
    const caseId = String(created.output.case_id);
    const stored = sf.records('Case').find((r) => r.Id === caseId);
    expect(stored).toMatchObject({ Sift_Id__c: user, ContactId: contact.Id });
    expect(typeof stored?.Sift_Risk_Score__c).toBe('number');

    const read = await env.callTool('get_fraud_case', { case_id: caseId });
    expect(read.error).toBeUndefined();
    expect(read.output).toMatchObject({
      case: { sift_user_id: user, sift_score_at_open: stored?.Sift_Risk_Score__c },
      sift: { user_id: user },
    });
    expect(read.output.sift_note).toBeUndefined();

    const listed = await env.callTool('list_fraud_cases', {});
    expect(listed.error).toBeUndefined();
    expect(listed.output.cases).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          case_id: caseId,
          sift_user_id: user,
          sift_score: stored?.Sift_Risk_Score__c,
        }),
      ]),
    );

    const looked = await env.callTool('lookup_user', { user_id: user });
    expect(looked.error).toBeUndefined();
    expect(looked.output.matched_by).toBe('sift_user_id');
    const section = looked.output.salesforce as Record<string, { id: string; fields: object }[]>;
    expect(section.contacts?.map((c) => c.id)).toEqual([contact.Id]);
    expect(section.contacts?.[0]?.fields).toMatchObject({ Sift_Id__c: user });
    expect(section.open_cases?.map((c) => c.id)).toContain(caseId);

    const resolved = await env.callTool('resolve_fraud_case', {
      case_id: caseId,
      resolution: 'confirmed_fraud',
      notes: 'Chargebacks confirmed by the issuer.',
    });
    expect(resolved.error).toBeUndefined();
    expect(resolved.output.sift_user_id).toBe(user);
    expect((resolved.output.suggested_next_calls as unknown[]).length).toBeGreaterThan(0);
  });
});
