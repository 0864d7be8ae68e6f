/**
 * The automation's Salesforce client against the emulator, through the real jsforce client: many
 * concurrent lookups become one `IN (...)` query per shape (≤200 values), each caller getting its
 * own rows, and the queries that go together travel in one composite request; a new case's number
 * is read in the write request that creates it.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';

vi.hoisted(() => {
  for (const name of ['https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY']) delete process.env[name];
});

import { createSalesforceClient } from '../../src/clients/salesforce-client.ts';
import { UpstreamError } from '../../src/errors.ts';
import { createBatchingSalesforceClient } from '../../src/outbox/batching-salesforce.ts';
import { startSalesforceEmulator, type SalesforceEmulator } from '../../src/sandbox/salesforce-emulator.ts';

let emu: SalesforceEmulator;

beforeAll(async () => {
  emu = await startSalesforceEmulator({ seed: false });
  for (let i = 0; i < 300; i += 1) emu.insert('Account', { Name: `Lookup ${i}`, Sift_User_Id__c: `lk_${i}` });
});
afterAll(async () => {
  await emu.close();
});
beforeEach(() => {
  emu.faults.clear();
  emu.clearJournal();
});

function batching(windowMs = 5_000) {
  const inner = createSalesforceClient({
    loginUrl: emu.url,
    auth: { flow: 'password', ...emu.credentials },
    retryBaseDelayMs: 5,
    maxRetries: 0,
  });
  return createBatchingSalesforceClient(inner, { windowMs, lookupQuietMs: 20 });
}

const queries = () => emu.journal.filter((e) => e.path.endsWith('/query'));
const composites = () => emu.journal.filter((e) => e.path.endsWith('/composite'));
/** The SOQL of a composite request's query subrequests. */
const subqueries = (entry: { body: unknown } | undefined) =>
  ((entry?.body as { compositeRequest?: { url: string }[] })?.compositeRequest ?? []).map((sub) =>
    decodeURIComponent(new URL(sub.url, 'http://x').searchParams.get('q') ?? ''),
  );
const accountsBy = (sf: ReturnType<typeof batching>, user: string) =>
  sf.lookup<{ Id: string; Name: string; Sift_User_Id__c: string }>({
    sobject: 'Account',
    field: 'Sift_User_Id__c',
    values: [user],
    select: ['Name'],
  });

describe('batching Salesforce lookups', () => {
  it('answers 250 concurrent lookups with two IN queries, each caller its own rows', async () => {
    const sf = batching();
    const users = Array.from({ length: 250 }, (_, i) => `lk_${i}`);
    // The same user asked twice (in another case: SOQL matches text without case) and one unknown user.
    const answers = await Promise.all([
      ...users.map((u) => accountsBy(sf, u)),
      accountsBy(sf, 'LK_7'),
      accountsBy(sf, 'nobody'),
    ]);
    users.forEach((u, i) => {
      expect(answers[i]?.map((r) => r.Sift_User_Id__c)).toEqual([u]);
      expect(answers[i]?.[0]?.Name).toBe(`Lookup ${i}`);
    });
    expect(answers[250]?.map((r) => r.Name)).toEqual(['Lookup 7']);
    expect(answers[251]).toEqual([]);
    // Two queries (200 values at most each), sent together: one API call.
    expect(queries()).toEqual([]);
    const sent = subqueries(composites()[0]);
    expect(composites()).toHaveLength(1);
    expect(sent).toHaveLength(2);
    for (const q of sent)
      expect(q).toMatch(/^SELECT Id, Sift_User_Id__c, Name FROM Account WHERE Sift_User_Id__c IN \(/);
    expect(sf.stats).toMatchObject({ lookupQueries: 2, lookupCalls: 1, lookups: 252 });
    await sf.close();
  });

  it('keeps different shapes apart and keeps the requested order per caller', async () => {
    const sf = batching();
    emu.insert('Contact', {
      LastName: 'Old',
      Email: 'shared@example.com',
      CreatedDate: '2020-01-01T00:00:00.000+0000',
    });
    emu.insert('Contact', {
      LastName: 'New',
      Email: 'shared@example.com',
      CreatedDate: '2024-01-01T00:00:00.000+0000',
    });
    const [contacts, accounts] = await Promise.all([
      sf.lookup<{ LastName: string }>({
        sobject: 'Contact',
        field: 'Email',
        values: ['shared@example.com'],
        select: ['LastName'],
        orderBy: 'CreatedDate ASC',
      }),
      accountsBy(sf, 'lk_3'),
    ]);
    expect(contacts.map((c) => c.LastName)).toEqual(['Old', 'New']);
    expect(accounts).toHaveLength(1);
    // Two shapes, two queries — carried together in one composite request (one API call).
    const [sent, ...more] = composites();
    expect(more).toEqual([]);
    expect(subqueries(sent)).toEqual([
      expect.stringMatching(/FROM Contact WHERE Email IN \('shared@example.com'\) ORDER BY CreatedDate ASC$/),
      expect.stringMatching(/FROM Account WHERE Sift_User_Id__c IN \('lk_3'\)$/),
    ]);
    expect(sf.stats).toMatchObject({ lookupQueries: 2, lookupCalls: 1 });
    await sf.close();
  });

  it('sends the Account, Contact and Case lookups that arrive together as one API call', async () => {
    const sf = batching();
    emu.insert('Contact', { LastName: 'Three', Email: 'three@example.com', Sift_User_Id__c: 'lk_5' });
    emu.insert('Case', { Subject: 'Fraud', Fraudgate_Key__c: 'case-lk_5' });
    const usedBefore = emu.apiUsage().used;
    const [accounts, contacts, cases, none] = await Promise.all([
      accountsBy(sf, 'lk_5'),
      sf.lookup<{ LastName: string }>({
        sobject: 'Contact',
        field: 'Sift_User_Id__c',
        values: ['lk_5'],
        select: ['LastName'],
      }),
      sf.lookup<{ Subject: string }>({
        sobject: 'Case',
        field: 'Fraudgate_Key__c',
        values: ['case-lk_5', 'case-nobody'],
        select: ['Subject'],
      }),
      sf.lookup({ sobject: 'Case', field: 'Subject', values: ['no such subject'], select: [] }),
    ]);
    expect(accounts.map((a) => a.Name)).toEqual(['Lookup 5']);
    expect(contacts.map((c) => c.LastName)).toEqual(['Three']);
    expect(cases.map((c) => c.Subject)).toEqual(['Fraud']);
    expect(none).toEqual([]);
    expect(emu.apiUsage().used - usedBefore).toBe(1);
    expect(queries()).toEqual([]);
    expect(subqueries(composites()[0])).toHaveLength(4);
    await sf.close();
  });

  it('holds a query that reached 200 values for the others: 500 lookups of three objects, one API call', async () => {
    const sf = batching();
    for (let i = 0; i < 250; i += 1)
      emu.insert('Contact', { LastName: `Full ${i}`, Sift_User_Id__c: `lkc_${i}` });
    const usedBefore = emu.apiUsage().used;
    const users = Array.from({ length: 250 }, (_, i) => `lk_${i}`);
    const contactsBy = (user: string) =>
      sf.lookup<{ LastName: string }>({
        sobject: 'Contact',
        field: 'Sift_User_Id__c',
        values: [user],
        select: ['LastName'],
      });
    const [accounts, contacts, cases] = await Promise.all([
      Promise.all(users.map((u) => accountsBy(sf, u))),
      Promise.all(users.map((u) => contactsBy(u.replace('lk_', 'lkc_')))),
      sf.lookup({ sobject: 'Case', field: 'Fraudgate_Key__c', values: ['case-nobody'], select: [] }),
    ]);
    expect(accounts.map((rows) => rows[0]?.Name)).toEqual(users.map((_, i) => `Lookup ${i}`));
    expect(contacts.map((rows) => rows[0]?.LastName)).toEqual(users.map((_, i) => `Full ${i}`));
    expect(cases).toEqual([]);
    // Two Account queries, two Contact queries and the Case query: five, one composite request.
    expect(emu.apiUsage().used - usedBefore).toBe(1);
    expect(subqueries(composites()[0])).toHaveLength(5);
    expect(queries()).toEqual([]);
    await sf.close();
  });

  it('fails only the callers of a query Salesforce refuses, not the others sharing its request', async () => {
    const sf = batching();
    const [accounts, refused] = await Promise.allSettled([
      accountsBy(sf, 'lk_6'),
      // A field the emulator's schema does not have: that query alone is refused.
      sf.lookup({ sobject: 'Account', field: 'No_Such_Field__c', values: ['x'], select: [] }),
    ]);
    expect(accounts).toMatchObject({ status: 'fulfilled', value: [{ Name: 'Lookup 6' }] });
    expect(refused).toMatchObject({ status: 'rejected', reason: expect.any(UpstreamError) });
    expect(composites()).toHaveLength(1);
    await sf.close();
  });

  it('keeps a queue it found for minutes, and asks again for one it did not find', async () => {
    const sf = batching();
    emu.insert('Group', { Name: 'Cached Queue', DeveloperName: 'Cached_Queue', Type: 'Queue' });
    const queue = (name: string) =>
      sf.lookup({
        sobject: 'Group',
        field: 'DeveloperName',
        values: [name],
        select: [],
        where: "Type = 'Queue'",
      });
    expect(await queue('Cached_Queue')).toHaveLength(1);
    expect(await queue('Cached_Queue')).toHaveLength(1);
    expect(await queue('Missing_Queue')).toHaveLength(0);
    expect(await queue('Missing_Queue')).toHaveLength(0);
    expect(queries()).toHaveLength(3);
    await sf.close();
  });

  it('fails every caller of a failed query, and a bad name before it joins anyone', async () => {
    const sf = batching();
    // jsforce retries a GET on 5xx itself; a 400 reaches the callers at once.
    emu.faults.inject({
      status: 400,
      path: '/query',
      body: [{ errorCode: 'QUERY_TIMEOUT', message: 'Your query request was running for too long.' }],
    });
    const results = await Promise.allSettled([accountsBy(sf, 'lk_1'), accountsBy(sf, 'lk_2')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(UpstreamError);
    await expect(
      sf.lookup({ sobject: 'Account', field: 'Name) OR (Id', values: ['x'], select: [] }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await accountsBy(sf, 'lk_1')).toHaveLength(1);
    await sf.close();
  });
});

describe('batching Salesforce read-backs', () => {
  const caseRecord = (key: string) => ({
    Subject: `Fraud review ${key}`,
    Status: 'New',
    Fraudgate_Key__c: key,
  });
  const upsertCase = (sf: ReturnType<typeof batching>, key: string) =>
    sf.upsertAndRead<{ CaseNumber?: string }>('Case', 'Fraudgate_Key__c', caseRecord(key), ['CaseNumber']);

  it('reads the numbers of new cases in the write request that creates them: one API call', async () => {
    const sf = batching(50);
    const usedBefore = emu.apiUsage().used;
    const saved = await Promise.all([
      upsertCase(sf, 'rb-1'),
      upsertCase(sf, 'rb-2'),
      upsertCase(sf, 'rb-3'),
      sf.update('Account', { Id: emu.records('Account')[0]?.Id as string, Description: 'read-back test' }),
    ]);
    // Each caller gets its own case's number, as Salesforce assigned it.
    for (const [i, key] of ['rb-1', 'rb-2', 'rb-3'].entries()) {
      const stored = emu.records('Case').find((c) => c.Fraudgate_Key__c === key);
      expect(saved[i]).toMatchObject({ id: stored?.Id, created: true });
      expect((saved[i] as { row?: { CaseNumber?: string } }).row?.CaseNumber).toBe(stored?.CaseNumber);
      expect(stored?.CaseNumber).toMatch(/^\d{8}$/);
    }
    expect(emu.apiUsage().used - usedBefore).toBe(1);
    expect(queries()).toEqual([]);
    const [request] = composites();
    const subs = (request?.body as { compositeRequest: { method: string; url: string }[] }).compositeRequest;
    // The query runs after the writes, so it sees the cases they made.
    expect(subs.map((s) => s.method)).toEqual(['PATCH', 'PATCH', 'GET']);
    expect(subqueries(request).at(-1)).toMatch(
      /^SELECT Id, Fraudgate_Key__c, CaseNumber FROM Case WHERE Fraudgate_Key__c IN \('rb-1', 'rb-2', 'rb-3'\)$/,
    );
    expect(sf.stats.readBacksCarried).toBe(3);
    // A repeat (a retry after a lost answer) upserts the same case and reads the same number.
    const again = await upsertCase(sf, 'rb-2');
    expect(again).toMatchObject({ id: saved[1] && (saved[1] as { id: string }).id, created: false });
    expect(again.row?.CaseNumber).toBe((saved[1] as { row?: { CaseNumber?: string } }).row?.CaseNumber);
    await sf.close();
  });

  it('looks a number up on its own when the write request has no free subrequest', async () => {
    const sf = batching(50);
    const accounts = emu.records('Account').slice(0, 4);
    // Four other collections (update, create, and two upserts by other keys) plus the cases: five in all.
    const saved = await Promise.all([
      upsertCase(sf, 'rb-full'),
      sf.update('Account', { Id: accounts[0]?.Id as string, Description: 'full' }),
      sf.create('Task', { Subject: 'full request' }),
      sf.upsert('Lead', 'Sift_User_Id__c', { LastName: 'Full', Company: 'Full', Sift_User_Id__c: 'rb-lead' }),
      sf.upsert('Contact', 'Sift_User_Id__c', { LastName: 'Full', Sift_User_Id__c: 'rb-contact' }),
    ]);
    const stored = emu.records('Case').find((c) => c.Fraudgate_Key__c === 'rb-full');
    expect(saved[0]).toMatchObject({ id: stored?.Id, row: { CaseNumber: stored?.CaseNumber } });
    expect(composites()).toHaveLength(1);
    expect(subqueries(composites()[0]).filter(Boolean)).toEqual([]);
    expect(queries()).toHaveLength(1);
    expect(sf.stats.readBacksCarried).toBe(0);
    await sf.close();
  });

  it('writeThenLookup: the queries see the writes before them; a refused query rolls the writes back', async () => {
    const sf = batching(50);
    const account = emu.records('Account')[1];
    const usedBefore = emu.apiUsage().used;
    const update = [
      {
        op: 'update' as const,
        sobject: 'Account',
        records: [{ Id: account?.Id as string, Description: 'seen after' }],
      },
    ];
    const readBack = {
      sobject: 'Account',
      field: 'Id',
      values: [account?.Id as string],
      select: ['Description'],
    };
    const { saved, found } = await sf.writeThenLookup(update, [readBack]);
    expect(saved).toEqual([[expect.objectContaining({ id: account?.Id, success: true })]]);
    expect(found[0]).toEqual([expect.objectContaining({ Id: account?.Id, Description: 'seen after' })]);
    expect(emu.apiUsage().used - usedBefore).toBe(1);
    // All or none: a refused query halts the request, its writes included.
    const refused = await sf.writeThenLookup(
      [{ ...update[0]!, records: [{ Id: account?.Id as string, Description: 'rolled back' }] }],
      [readBack, { sobject: 'Account', field: 'No_Such_Field__c', values: ['x'], select: [] }],
    );
    expect(refused.saved).toEqual([[expect.objectContaining({ success: false })]]);
    expect(refused.found[1]).toMatchObject({ upstreamCode: 'INVALID_FIELD' });
    expect(emu.records('Account').find((a) => a.Id === account?.Id)?.Description).toBe('seen after');
    // Five collections and queries in all, as /composite allows.
    const collection = {
      op: 'update' as const,
      sobject: 'Account',
      records: [{ Id: account?.Id as string, Description: 'x' }],
    };
    await expect(
      sf.writeThenLookup(
        Array.from({ length: 5 }, () => collection),
        [{ sobject: 'Account', field: 'Id', values: ['x'], select: [] }],
      ),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await sf.close();
  });

  it("a refused write fails only its caller, naming the code and field; never Salesforce's text", async () => {
    const sf = batching(50);
    const [saved, refused] = await Promise.allSettled([
      upsertCase(sf, 'rb-standing'),
      sf.upsert('Case', 'Fraudgate_Key__c', { ...caseRecord('rb-refused'), Priority: 'carol@example.com' }),
    ]);
    expect(saved.status).toBe('fulfilled');
    // The first request was rolled back for the refused record; the other group went again alone.
    expect(composites()).toHaveLength(2);
    expect(emu.records('Case').filter((c) => c.Fraudgate_Key__c === 'rb-standing')).toHaveLength(1);
    expect(emu.records('Case').filter((c) => c.Fraudgate_Key__c === 'rb-refused')).toHaveLength(0);
    const error = (refused as PromiseRejectedResult).reason as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    // Rolled back, so provably unapplied: a 4xx.
    expect(error.data).toMatchObject({ status: 400 });
    expect(error.upstreamCode).toBe('INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST');
    expect(error.message).toContain('Priority');
    expect(error.message).not.toContain('carol@example.com');
    expect(error.detail).not.toContain('carol@example.com');
    await sf.close();
  });

  it('a decision sync group whose post is refused lands nothing; every other group lands, in two requests', async () => {
    const sf = batching(50);
    const accounts = ['at-1', 'at-2', 'at-3'].map((user) =>
      emu.insert('Account', { Name: `Atomic ${user}`, Sift_User_Id__c: user }),
    );
    const refused = accounts[1]!;
    const removeRule = emu.addValidationRule('FeedItem', (post) =>
      post.ParentId === refused.Id ? 'feed tracking is not enabled for Account' : undefined,
    );
    const sync = (account: { Id: string }, key: string) =>
      sf.writeTogether([
        { op: 'update', sobject: 'Account', record: { Id: account.Id, Fraudgate_Sync_Key__c: key } },
        { op: 'create', sobject: 'FeedItem', record: { ParentId: account.Id, Body: key, Type: 'TextPost' } },
      ]);
    const outcomes = await Promise.allSettled([
      ...accounts.map((a, i) => sync(a, `atomic-key-${i}`)),
      upsertCase(sf, 'at-case'),
      sf.create('Task', { Subject: 'atomic task' }),
      sf.upsert('Lead', 'Sift_User_Id__c', {
        LastName: 'Atomic',
        Company: 'Atomic',
        Sift_User_Id__c: 'at-lead',
      }),
    ]);
    removeRule();
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
      'fulfilled',
      'fulfilled',
    ]);
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({
      upstreamCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION',
      data: { status: 400 },
    });
    const key = (id: string) =>
      emu.records('Account').find((a) => a.Id === id)?.Fraudgate_Sync_Key__c ?? null;
    const posts = (id: string) => emu.records('FeedItem').filter((f) => f.ParentId === id);
    expect(accounts.map((a) => key(a.Id))).toEqual(['atomic-key-0', null, 'atomic-key-2']);
    expect(accounts.map((a) => posts(a.Id).length)).toEqual([1, 0, 1]);
    expect(emu.records('Case').filter((c) => c.Fraudgate_Key__c === 'at-case')).toHaveLength(1);
    expect(emu.records('Task').filter((t) => t.Subject === 'atomic task')).toHaveLength(1);
    expect(emu.records('Lead').filter((l) => l.Sift_User_Id__c === 'at-lead')).toHaveLength(1);
    expect(composites()).toHaveLength(2);
    expect(sf.stats.rolledBackGroupsResent).toBe(5);
    await sf.close();
  });

  it('refusals the rolled-back requests do not name yet take at most three rounds, then each group goes alone', async () => {
    const sf = batching(50);
    const account = emu.insert('Account', { Name: 'Rounds', Sift_User_Id__c: 'rounds' });
    const rules = [
      emu.addValidationRule('Account', (a) => (a.Description === 'refuse' ? 'refused account' : undefined)),
      emu.addValidationRule('Task', (t) => (t.Subject === 'refuse' ? 'refused task' : undefined)),
    ];
    // Four refusals in four collections: a halted request names only the first collection's.
    const outcomes = await Promise.allSettled([
      sf.upsert('Case', 'Fraudgate_Key__c', { ...caseRecord('rounds-case'), Priority: 'Nope' }),
      sf.upsert('Lead', 'Sift_User_Id__c', { Company: 'No Last Name', Sift_User_Id__c: 'rounds-lead' }),
      sf.create('Task', { Subject: 'refuse' }),
      sf.update('Account', { Id: account.Id, Description: 'refuse' }),
      sf.upsert('Contact', 'Sift_User_Id__c', { LastName: 'Lands', Sift_User_Id__c: 'rounds-contact' }),
    ]);
    for (const remove of rules) remove();
    expect(
      outcomes.map((o) => (o.status === 'rejected' ? (o.reason as UpstreamError).upstreamCode : 'ok')),
    ).toEqual([
      'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST',
      'REQUIRED_FIELD_MISSING',
      'FIELD_CUSTOM_VALIDATION_EXCEPTION',
      'FIELD_CUSTOM_VALIDATION_EXCEPTION',
      'ok',
    ]);
    // Three rounds together, then the Account update and the Contact upsert alone.
    expect(composites()).toHaveLength(5);
    expect(emu.records('Contact').filter((c) => c.Sift_User_Id__c === 'rounds-contact')).toHaveLength(1);
    expect(emu.records('Lead').filter((l) => l.Sift_User_Id__c === 'rounds-lead')).toHaveLength(0);
    await sf.close();
  });

  it('a refused read-back query does not refuse the writes: they go again without it', async () => {
    const sf = batching(50);
    const outcomes = await Promise.allSettled([
      sf.upsertAndRead('Case', 'Fraudgate_Key__c', caseRecord('rb-query-refused'), ['No_Such_Field__c']),
      upsertCase(sf, 'rb-query-neighbour'),
    ]);
    expect(outcomes[0]).toMatchObject({ status: 'rejected', reason: { upstreamCode: 'INVALID_FIELD' } });
    expect(outcomes[1]).toMatchObject({ status: 'fulfilled' });
    for (const key of ['rb-query-refused', 'rb-query-neighbour'])
      expect(emu.records('Case').filter((c) => c.Fraudgate_Key__c === key)).toHaveLength(1);
    // Two write requests (the second without read-backs), then the read-backs looked up on their own.
    expect(sf.stats.writeCalls).toBe(2);
    await sf.close();
  });

  it('refuses an upsert without its key before it joins anyone', async () => {
    const sf = batching(50);
    await expect(
      sf.upsertAndRead('Case', 'Fraudgate_Key__c', { Subject: 'no key' }, ['CaseNumber']),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(
      sf.upsertAndRead('Case', 'Fraudgate_Key__c', caseRecord('rb-bad'), ['Case Number']),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(emu.journal.filter((e) => !e.path.includes('/oauth2/'))).toEqual([]);
    await sf.close();
  });
});
