/**
 * The Salesforce emulator's field history (shared/contracts/triggers.md §3.1, §5): tracked changes
 * write AccountHistory rows with the old and new value, the author and a whole-second CreatedDate,
 * queryable by SOQL through jsforce; OldValue/NewValue cannot be filtered; the object is read-only.
 */
import jsforce from 'jsforce';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSalesforceEmulator, type SalesforceEmulator } from '../../src/sandbox/salesforce-emulator.ts';

let sf: SalesforceEmulator;
let conn: jsforce.Connection;

beforeAll(async () => {
  sf = await startSalesforceEmulator({ seed: false });
  const { accessToken } = sf.issueTokens();
  conn = new jsforce.Connection({ instanceUrl: sf.url, accessToken, version: '62.0' });
});
afterAll(async () => {
  await sf.close();
});

describe('Salesforce emulator field history', () => {
  it('records each tracked change with its author; untracked fields and no-op writes leave none', async () => {
    sf.insert('User', { Username: 'ana@example.com', LastName: 'Analyst' });
    const created = await conn.sobject('Account').create({ Name: 'Hist', Fraud_Status__c: 'Active' });
    const id = (created as { id: string }).id;
    sf.editAs('Account', id, { Fraud_Status__c: 'Closed - Other', Industry: 'Retail' });
    await conn.sobject('Account').update({ Id: id, Fraud_Status__c: 'Under Review' });
    await conn.sobject('Account').update({ Id: id, Fraud_Status__c: 'Under Review' });
    const rows = await conn.query<Record<string, unknown>>(
      `SELECT Id, AccountId, Field, OldValue, NewValue, CreatedById, CreatedBy.Username, CreatedDate FROM AccountHistory ` +
        `WHERE AccountId = '${id}' ORDER BY CreatedDate, Id`,
    );
    const human = sf.records('User').find((u) => u.Username === 'ana@example.com')?.Id;
    expect(rows.records.map((r) => [r.Field, r.OldValue, r.NewValue, r.CreatedById])).toEqual([
      ['created', null, null, sf.integrationUserId],
      ['Fraud_Status__c', 'Active', 'Closed - Other', human],
      ['Fraud_Status__c', 'Closed - Other', 'Under Review', sf.integrationUserId],
    ]);
    expect(rows.records[1]?.CreatedBy).toMatchObject({ Username: 'ana@example.com' });
    expect(String(rows.records[1]?.CreatedDate)).toMatch(/T\d{2}:\d{2}:\d{2}\.000\+0000$/);
  });

  it('refuses a filter on OldValue/NewValue and any API write to the history', async () => {
    await expect(conn.query(`SELECT Id FROM AccountHistory WHERE NewValue = 'Active'`)).rejects.toMatchObject(
      {
        errorCode: 'INVALID_FIELD',
      },
    );
    await expect(conn.sobject('AccountHistory').create({})).rejects.toMatchObject({
      errorCode: 'INVALID_TYPE_FOR_OPERATION',
    });
  });
});
