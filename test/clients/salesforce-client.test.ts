import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';

// jsforce reads proxy variables once, at load, and ignores NO_PROXY (§1): clear them before the
// (hoisted) imports so loopback traffic never goes through a CI proxy.
vi.hoisted(() => {
  for (const name of ['https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY']) delete process.env[name];
});

import { Connection } from 'jsforce';
import { FraudgateError, UpstreamError } from '../../src/errors.ts';
import {
  createSalesforceClient,
  saveError,
  soqlQuote,
  type SalesforceClientConfig,
} from '../../src/clients/salesforce-client.ts';
import { isSalesforceId, salesforceIdChecksum, toSalesforceId18 } from '../../src/clients/salesforce-ids.ts';
import type { SalesforceClient, SalesforceCollectionWrite } from '../../src/clients/types.ts';
import { startSalesforceEmulator, type SalesforceEmulator } from '../../src/sandbox/salesforce-emulator.ts';
import { sharedFixture, sharedFixturesPresent } from '../helpers/shared-fixtures.ts';

/** Token requests jsforce 3.10.16 sent, captured (shared fixtures; present beside a checkout only). */
const tokenFixtures = () =>
  sharedFixture<Record<string, { requests: { body: string; headers: Record<string, string> }[] }>>(
    'salesforce',
    'oauth-token-flows.jsforce-3.10.16.json',
  );

let emu: SalesforceEmulator;

beforeAll(async () => {
  // The credentials of the captured token requests, so request bodies can be compared verbatim.
  emu = await startSalesforceEmulator({
    clientId: 'CID',
    clientSecret: 'CSECRET',
    username: 'ops@example.com',
    password: 'pw+TOKEN',
  });
});
afterAll(async () => {
  await emu.close();
});
beforeEach(() => {
  emu.faults.clear();
  emu.alwaysUnauthorized(false);
  emu.rateLimitNext(0);
  emu.setQueryPageSize(2000);
  emu.clearJournal();
});

function client(overrides: Partial<SalesforceClientConfig> = {}): SalesforceClient {
  return createSalesforceClient({
    loginUrl: emu.url,
    auth: { flow: 'client_credentials', clientId: 'CID', clientSecret: 'CSECRET' },
    retryBaseDelayMs: 5,
    ...overrides,
  });
}

async function rejection(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return error as UpstreamError;
}

const dataRequests = () => emu.journal.filter((e) => e.path.startsWith('/services/data/'));
const tokenRequests = () => emu.journal.filter((e) => e.path === '/services/oauth2/token');

/** The token endpoint refuses the next login, its error_description naming a person and their email. */
const refuseLoginNamingPerson = () =>
  emu.faults.inject({
    path: '/services/oauth2/token',
    status: 400,
    body: {
      error: 'invalid_grant',
      error_description: 'user Jane Quixote <jane.quixote@example.com> is locked',
    },
  });

/** The emulator's refusal of a Priority outside its picklist: code and field in message and detail, never `value`. */
function expectPriorityRefused(error: UpstreamError, value: string): void {
  expect(error.upstreamCode).toBe('INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST');
  expect(error.message).toContain('Priority');
  expect(error.message).not.toContain(value);
  expect(error.detail).toContain('INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST (Priority)');
  expect(error.detail).not.toContain(value);
}

describe('auth', () => {
  it('client credentials: a form-encoded token request, then Bearer data requests', async () => {
    const sf = client();
    await sf.query('SELECT Id FROM Group');
    const [token] = tokenRequests();
    expect(Object.fromEntries(new URLSearchParams(token?.rawBody))).toEqual({
      grant_type: 'client_credentials',
      client_id: 'CID',
      client_secret: 'CSECRET',
    });
    expect(token?.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(dataRequests()[0]?.headers.authorization).toMatch(/^Bearer /);
  });

  it.skipIf(!sharedFixturesPresent)(
    'client credentials: the token request matches the captured jsforce request',
    async () => {
      const sf = client();
      await sf.query('SELECT Id FROM Group');
      expect(tokenRequests()[0]?.rawBody).toBe(tokenFixtures().oauth_client_credentials?.requests[0]?.body);
    },
  );

  it.skipIf(!sharedFixturesPresent)(
    'password: the token request matches the captured jsforce request',
    async () => {
      const sf = client({
        auth: {
          flow: 'password',
          clientId: 'CID',
          clientSecret: 'CSECRET',
          username: 'ops@example.com',
          password: 'pw+TOKEN',
        },
      });
      await sf.query('SELECT Id FROM Group');
      expect(tokenRequests()[0]?.rawBody).toBe(tokenFixtures().oauth_password?.requests[0]?.body);
    },
  );

  it('logs in once for concurrent first calls', async () => {
    const sf = client();
    await Promise.all([
      sf.query('SELECT Id FROM Group'),
      sf.query('SELECT Id FROM User'),
      sf.query('SELECT Id FROM Lead'),
    ]);
    expect(tokenRequests()).toHaveLength(1);
  });

  it('bad credentials: a non-retryable error naming the OAuth error, no secret in it', async () => {
    const sf = client({
      auth: { flow: 'client_credentials', clientId: 'CID', clientSecret: 'wrong-secret' },
    });
    const error = await rejection(sf.query('SELECT Id FROM Group'));
    expect(error.upstreamCode).toBe('invalid_client');
    expect(error.retryable).toBe(false);
    expect(error.message).not.toContain('wrong-secret');
  });

  it("a refused login keeps the OAuth code and status in detail, never Salesforce's error_description", async () => {
    refuseLoginNamingPerson();
    const error = await rejection(client().query('SELECT Id FROM Group'));
    expect(error.upstreamCode).toBe('invalid_grant');
    expect(error.detail).toBe('query: OAuth invalid_grant (HTTP 400): login refused');
    expect(`${error.message} ${error.detail}`).not.toMatch(/Quixote|jane\.quixote/i);
  });

  it('a session refresh refused by the token endpoint keeps no vendor text in detail', async () => {
    const sf = client();
    await sf.query('SELECT Id FROM Group');
    emu.expireTokens();
    refuseLoginNamingPerson();
    const error = await rejection(sf.query('SELECT Id FROM Group'));
    expect(error.retryable).toBe(false);
    expect(error.detail).toBe(
      'query: INVALID_SESSION_ID (HTTP 401): session refresh failed, login again refused',
    );
    expect(error.detail).not.toMatch(/Quixote|jane\.quixote/i);
  });

  it("a network error keeps Node's error code in detail, not its message", async () => {
    const sf = client({ maxRetries: 0 });
    await sf.query('SELECT Id FROM Group');
    emu.faults.inject({ path: '/query', reset: true, count: 5 });
    const error = await rejection(sf.query('SELECT Id FROM Group'));
    expect(error.detail).toBe('query: network error UND_ERR_SOCKET');
  });

  it('sends the API version explicitly in every data path', async () => {
    const sf = client();
    await sf.query('SELECT Id FROM Group');
    await sf.create('Lead', { LastName: 'Versioned', Company: 'Acme' });
    expect(dataRequests().length).toBeGreaterThan(0);
    for (const entry of dataRequests()) expect(entry.path).toMatch(/^\/services\/data\/v62\.0\//);
    const older = client({ apiVersion: '58.0' });
    emu.clearJournal();
    await older.query('SELECT Id FROM Group');
    expect(dataRequests()[0]?.path).toBe('/services/data/v58.0/query');
  });

  it('sends Sforce-Call-Options when configured', async () => {
    await client({ callOptionsClient: 'fraudgate' }).query('SELECT Id FROM Group');
    expect(dataRequests()[0]?.headers['sforce-call-options']).toBe('client=fraudgate');
  });

  it('rejects an API version below 46 at construction', () => {
    expect(() => client({ apiVersion: '45.0' })).toThrow(/apiVersion/);
  });
});

describe('session refresh', () => {
  it('an expired session is refreshed once and the request re-sent', async () => {
    const sf = client();
    await sf.query('SELECT Id FROM Group');
    emu.expireTokens();
    emu.clearJournal();
    const rows = await sf.query('SELECT Id FROM Group');
    expect(rows.length).toBeGreaterThan(0);
    expect(tokenRequests()).toHaveLength(1);
    expect(dataRequests().map((e) => e.status)).toEqual([401, 200]);
  });

  it('password flow refreshes by logging in again', async () => {
    const sf = client({
      auth: {
        flow: 'password',
        clientId: 'CID',
        clientSecret: 'CSECRET',
        username: 'ops@example.com',
        password: 'pw+TOKEN',
      },
    });
    await sf.query('SELECT Id FROM Group');
    emu.expireTokens();
    emu.clearJournal();
    await sf.query('SELECT Id FROM Group');
    expect(tokenRequests()[0]?.rawBody).toContain('grant_type=password');
  });

  it('a permanent 401 fails fast with a clear, non-retryable error (no refresh loop)', async () => {
    const sf = client();
    emu.alwaysUnauthorized(true);
    const started = Date.now();
    const error = await rejection(sf.query('SELECT Id FROM Group'));
    expect(error.message).toMatch(/keeps rejecting fresh sessions/);
    expect(error.retryable).toBe(false);
    expect(error.upstreamCode).toBe('INVALID_SESSION_ID');
    // Login, first try, one refresh, second try: nothing like jsforce's unbounded loop.
    expect(emu.journal.length).toBeLessThanOrEqual(5);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('caps refreshes per client across calls too', async () => {
    const sf = client({ maxRefreshesPerMinute: 2 });
    emu.alwaysUnauthorized(true);
    for (let i = 0; i < 4; i += 1) await rejection(sf.query('SELECT Id FROM Group'));
    // One login plus at most two refreshes, however many calls were made.
    expect(tokenRequests().length).toBeLessThanOrEqual(3);
  });
});

describe('CRUD', () => {
  it('create returns an 18-character id with the right prefix and checksum, stored in the org', async () => {
    const sf = client();
    const { id } = await sf.create('Case', {
      Subject: 'Suspicious payment',
      Type: 'Fraud',
      Priority: 'High',
      OwnerId: emu.demo?.fraudQueueId,
    });
    expect(id).toHaveLength(18);
    expect(id.startsWith('500')).toBe(true);
    expect(id.slice(15)).toBe(salesforceIdChecksum(id.slice(0, 15)));
    const stored = emu.records('Case').find((r) => r.Id === id);
    expect(stored).toMatchObject({
      Subject: 'Suspicious payment',
      Status: 'New',
      IsClosed: false,
      OwnerId: emu.demo?.fraudQueueId,
    });
    expect(stored?.CaseNumber).toMatch(/^\d{8}$/);
    // An explicit owner must survive assignment rules.
    expect(emu.requests('POST', '/services/data/:v/sobjects/Case')[0]?.headers['sforce-auto-assign']).toBe(
      'FALSE',
    );
  });

  it('update is reflected, and derived fields follow', async () => {
    const sf = client();
    const { id } = await sf.create('Case', { Subject: 'To close' });
    await sf.update('Case', { Id: id, Status: 'Closed' });
    expect(emu.records('Case').find((r) => r.Id === id)).toMatchObject({ Status: 'Closed', IsClosed: true });
    const patch = emu.requests('PATCH', '/services/data/:v/sobjects/Case/:id')[0];
    expect(patch?.status).toBe(204);
    expect(patch?.body).toEqual({ Status: 'Closed' });
  });

  it('upsert by external id: created, then updated', async () => {
    const sf = client();
    const first = await sf.upsert('Case', 'Fraudgate_Key__c', {
      Fraudgate_Key__c: 'case/key 1',
      Subject: 'v1',
    });
    expect(first.created).toBe(true);
    const second = await sf.upsert('Case', 'Fraudgate_Key__c', {
      Fraudgate_Key__c: 'case/key 1',
      Subject: 'v2',
    });
    expect(second).toEqual({ id: first.id, created: false });
    const matches = emu.records('Case').filter((r) => r.Fraudgate_Key__c === 'case/key 1');
    expect(matches).toHaveLength(1);
    expect(matches[0]?.Subject).toBe('v2');
    // The value is URL-encoded by us (jsforce would not), so '/' stays inside one segment.
    expect(emu.unmatched).toHaveLength(0);
  });

  it('retrieve returns the record without attributes, or null when missing', async () => {
    const sf = client();
    const caseId = emu.demo?.openFraudCaseId ?? '';
    const found = await sf.retrieve('Case', caseId);
    expect(found).toMatchObject({ Id: caseId, Type: 'Fraud', Sift_User_Id__c: 'sandbox-watch' });
    expect(found).not.toHaveProperty('attributes');
    const missing = `500${'5g0000zzzzzz'}`;
    expect(await sf.retrieve('Case', missing + salesforceIdChecksum(missing))).toBeNull();
  });

  it('a missing required field fails with a message naming the field', async () => {
    const error = await rejection(client().create('Lead', { Company: 'Acme' }));
    expect(error.upstreamCode).toBe('REQUIRED_FIELD_MISSING');
    expect(error.message).toContain('LastName');
    expect(error.retryable).toBe(false);
  });

  it('an unknown field and a bad restricted picklist value name the field, never the value', async () => {
    const sf = client();
    const unknown = await rejection(sf.create('Case', { Subject: 'x', Bogus__c: 1 }));
    expect(unknown.upstreamCode).toBe('INVALID_FIELD');
    expect(unknown.message).toContain('Bogus__c');
    const picklist = await rejection(sf.create('Case', { Subject: 'x', Priority: 'secret-value' }));
    expectPriorityRefused(picklist, 'secret-value');
  });

  it('update of a missing record is NOT_FOUND', async () => {
    const id15 = '5005g0000zzzzzz';
    await expect(
      client().update('Case', { Id: id15 + salesforceIdChecksum(id15), Status: 'Closed' }),
    ).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });

  it('rejects malformed ids and object names before any request', async () => {
    const sf = client();
    await expect(sf.retrieve('Case', '../limits')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(sf.create('Case/../x', {})).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(emu.journal).toHaveLength(0);
  });
});

describe('query', () => {
  it('fetches every page, following the locator', async () => {
    const sf = client();
    for (let i = 0; i < 5; i += 1) emu.insert('Lead', { LastName: `Paging${i}`, Company: 'PageCo' });
    emu.setQueryPageSize(2);
    const rows = await sf.query<{ Id: string; LastName: string }>(
      "SELECT Id, LastName FROM Lead WHERE Company = 'PageCo' ORDER BY LastName",
    );
    expect(rows.map((r) => r.LastName)).toEqual(['Paging0', 'Paging1', 'Paging2', 'Paging3', 'Paging4']);
    expect(rows[0]).not.toHaveProperty('attributes');
    expect(emu.requests('GET', '/services/data/:v/query')).toHaveLength(1);
    expect(emu.requests('GET', '/services/data/:v/query/:locator')).toHaveLength(2);
  });

  it('queryPage exposes a cursor for the next page', async () => {
    const sf = client();
    emu.setQueryPageSize(2);
    const first = await sf.queryPage({ soql: "SELECT Id FROM Lead WHERE Company = 'PageCo'" });
    expect(first.records).toHaveLength(2);
    expect(first.totalSize).toBe(5);
    expect(first.nextCursor).toMatch(/^[A-Za-z0-9]+-2$/);
    const second = await sf.queryPage({ cursor: first.nextCursor ?? '' });
    expect(second.records).toHaveLength(2);
    const third = await sf.queryPage({ cursor: second.nextCursor ?? '' });
    expect(third.records).toHaveLength(1);
    expect(third.nextCursor).toBeUndefined();
    await expect(sf.queryPage({ cursor: '../sobjects' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });

  it("soqlQuote escapes quotes and backslashes (O'Brien\\)", async () => {
    const name = "O'Brien\\";
    expect(soqlQuote(name)).toBe("'O\\'Brien\\\\'");
    const sf = client();
    await sf.create('Contact', { LastName: name, Email: 'obrien@example.com' });
    const rows = await sf.query(`SELECT Id, LastName FROM Contact WHERE LastName = ${soqlQuote(name)}`);
    expect(rows.map((r) => r.LastName)).toEqual([name]);
  });

  it('SOQL errors come back as clear, non-retryable errors', async () => {
    const sf = client();
    const badType = await rejection(sf.query('SELECT Id FROM Bogus'));
    expect(badType.upstreamCode).toBe('INVALID_TYPE');
    expect(badType.message).toContain('Bogus');
    const malformed = await rejection(
      sf.query("SELECT Id FROM Case WHERE Subject = 'x' AND Status = 'New' OR Priority = 'High'"),
    );
    expect(malformed.upstreamCode).toBe('MALFORMED_QUERY');
    expect(malformed.retryable).toBe(false);
    const badField = await rejection(sf.query('SELECT Nope__c FROM Case'));
    expect(badField.upstreamCode).toBe('INVALID_FIELD');
    expect(badField.message).toContain('Nope__c');
  });

  it('supports the SOQL the tools use: queue lookup, parent fields, IN, LIKE, NOT, count()', async () => {
    const sf = client();
    const queue = await sf.query(
      "SELECT Id, DeveloperName FROM Group WHERE Type = 'Queue' AND DeveloperName = 'Fraud_Review'",
    );
    expect(queue).toEqual([{ Id: emu.demo?.fraudQueueId, DeveloperName: 'Fraud_Review' }]);

    const contacts = await sf.query(
      "SELECT Id, Account.Name, Owner.Name FROM Contact WHERE Sift_User_Id__c IN ('sandbox-high-risk', 'sandbox-watch') ORDER BY Account.Name DESC",
    );
    expect(contacts.map((c) => (c.Account as { Name: string }).Name)).toEqual([
      'Watchlist Goods',
      'High Risk Trading',
    ]);
    expect(contacts[0]?.Owner).toEqual({ Name: 'Fraudgate Integration' });

    const blocked = await sf.query(
      `SELECT Id, Sift_User_Id__c FROM Contact WHERE Email = 'BLOCKED.user@example.com'`,
    );
    expect(blocked).toEqual([{ Id: emu.demo?.contacts['sandbox-blocked'], Sift_User_Id__c: null }]);

    const openFraud = await sf.query(
      "SELECT Id, Owner.Name FROM Case WHERE Type = 'Fraud' AND IsClosed = false AND (Sift_User_Id__c = 'sandbox-watch' OR Sift_User_Id__c = 'sandbox-unmatched')",
    );
    expect(openFraud.map((c) => c.Id)).toEqual([emu.demo?.openFraudCaseId]);
    expect(openFraud[0]?.Owner).toEqual({ Name: 'Fraud Review' });

    const notClosed = await sf.query(
      "SELECT Id FROM Case WHERE Sift_User_Id__c != null AND NOT (Status = 'Closed')",
    );
    expect(notClosed.map((c) => c.Id)).toEqual([emu.demo?.openFraudCaseId]);

    const like = await sf.query("SELECT Email FROM Lead WHERE Email LIKE 'lead.%@example.com'");
    expect(like).toEqual([{ Email: 'lead.risky@example.com' }]);

    const page = await sf.queryPage({
      soql: 'SELECT count() FROM Opportunity WHERE IsClosed = false AND Amount > 10000',
    });
    expect(page).toMatchObject({ totalSize: 2, records: [] });

    const recent = await sf.query(
      'SELECT Id FROM Account WHERE CreatedDate = LAST_N_DAYS:1 ORDER BY Name LIMIT 2 OFFSET 1',
    );
    expect(recent).toHaveLength(2);
    expect(await sf.query('SELECT Id FROM Account WHERE CreatedDate < 2000-01-01T00:00:00Z')).toEqual([]);
  });

  it('anything outside the SOQL subset is a 400, never an approximate answer', async () => {
    const sf = client();
    const cases: [string, string][] = [
      ['SELECT Id FROM Case WHERE AccountId IN (SELECT Id FROM Account)', 'MALFORMED_QUERY'],
      ['SELECT COUNT(Id) FROM Case', 'MALFORMED_QUERY'],
      ['SELECT Id, (SELECT Id FROM Contacts) FROM Account', 'MALFORMED_QUERY'],
      ['SELECT Id FROM Case WHERE Subject = :subject', 'MALFORMED_QUERY'],
      ['SELECT Status FROM Case GROUP BY Status', 'MALFORMED_QUERY'],
      ["SELECT Id FROM Case WHERE Subject INCLUDES ('a')", 'MALFORMED_QUERY'],
      ["SELECT Id FROM Case WHERE Subject = 'unterminated", 'MALFORMED_QUERY'],
      ["SELECT Id FROM Case WHERE IsClosed = 'false'", 'INVALID_QUERY_FILTER_OPERATOR'],
      ['SELECT Id FROM Case WHERE CreatedDate > 2024-01-01', 'INVALID_QUERY_FILTER_OPERATOR'],
      ['SELECT Id, Id FROM Case', 'MALFORMED_QUERY'],
      // Long text areas can be selected but neither filtered nor sorted.
      ["SELECT Id FROM Case WHERE Description LIKE '%fraud%'", 'INVALID_FIELD'],
      ["SELECT Id FROM Case WHERE Resolution_Notes__c = 'x'", 'INVALID_FIELD'],
      ['SELECT Id FROM Case ORDER BY Description', 'INVALID_FIELD'],
      ["SELECT Id FROM FeedItem WHERE Body LIKE '%KEY%'", 'INVALID_FIELD'],
    ];
    for (const [soql, code] of cases) {
      const error = await rejection(sf.query(soql));
      expect([soql, error.upstreamCode]).toEqual([soql, code]);
    }
    const filtered = await rejection(sf.query("SELECT Id FROM Case WHERE Description LIKE '%fraud%'"));
    expect(filtered.message).toContain('field Description can not be filtered');
    expect(
      await sf.query("SELECT Id, Description FROM Case WHERE Subject = 'none' ORDER BY Subject"),
    ).toEqual([]);
  });

  it('string escapes, literal LIKE wildcards and NULLS LAST behave as in SOQL', async () => {
    const sf = client();
    emu.insert('Lead', { LastName: 'Esc_1', Company: 'EscCo', Sift_Score__c: 0.5 });
    emu.insert('Lead', { LastName: 'EscX1', Company: 'EscCo' });
    emu.insert('Lead', { LastName: 'Tab\tName', Company: 'EscCo', Sift_Score__c: 0.9 });
    const literal = await sf.query("SELECT LastName FROM Lead WHERE LastName LIKE 'Esc\\_1'");
    expect(literal.map((r) => r.LastName)).toEqual(['Esc_1']);
    const wildcard = await sf.query(
      "SELECT LastName FROM Lead WHERE LastName LIKE 'Esc_1' ORDER BY LastName",
    );
    expect(wildcard.map((r) => r.LastName)).toEqual(['Esc_1', 'EscX1']);
    const tab = await sf.query(`SELECT LastName FROM Lead WHERE LastName = ${soqlQuote('Tab\tName')}`);
    expect(tab).toHaveLength(1);
    const ordered = await sf.query(
      "SELECT LastName FROM Lead WHERE Company = 'EscCo' ORDER BY Sift_Score__c DESC NULLS LAST, LastName",
    );
    expect(ordered.map((r) => r.LastName)).toEqual(['Tab\tName', 'Esc_1', 'EscX1']);
    const nullsFirst = await sf.query(
      "SELECT LastName FROM Lead WHERE Company = 'EscCo' ORDER BY Sift_Score__c",
    );
    expect(nullsFirst.map((r) => r.LastName)).toEqual(['EscX1', 'Esc_1', 'Tab\tName']);
    const notIn = await sf.query(
      "SELECT LastName FROM Lead WHERE Company = 'EscCo' AND LastName NOT IN ('Esc_1', 'EscX1')",
    );
    expect(notIn.map((r) => r.LastName)).toEqual(['Tab\tName']);
  });

  it('the sandbox-unmatched persona has no records', async () => {
    const sf = client();
    for (const object of ['Account', 'Contact', 'Lead', 'Case']) {
      expect(await sf.query(`SELECT Id FROM ${object} WHERE Sift_User_Id__c = 'sandbox-unmatched'`)).toEqual(
        [],
      );
    }
  });
});

describe('retries and faults', () => {
  it('a 503 on GET is retried (by jsforce) and succeeds', async () => {
    emu.faults.inject({ method: 'GET', path: '/query', status: 503 });
    const rows = await client().query('SELECT Id FROM Group');
    expect(rows.length).toBeGreaterThan(0);
    expect(emu.requests('GET', '/services/data/:v/query').map((e) => e.status)).toEqual([503, 200]);
  });

  it('a 503 on create is NOT retried: exactly one POST', async () => {
    const sf = client();
    emu.faults.inject({ method: 'POST', path: '/sobjects/Case', status: 503 });
    const error = await rejection(sf.create('Case', { Subject: 'Once only' }));
    expect(error.message).toMatch(/may or may not exist/);
    expect(emu.requests('POST', '/services/data/:v/sobjects/Case')).toHaveLength(1);
    expect(emu.records('Case').filter((r) => r.Subject === 'Once only')).toHaveLength(0);
  });

  it('a 503 on update (idempotent PATCH) is retried by the client', async () => {
    const sf = client();
    const { id } = await sf.create('Case', { Subject: 'Retry me' });
    emu.faults.inject({ method: 'PATCH', path: '/sobjects/Case/', status: 503 });
    await sf.update('Case', { Id: id, Priority: 'Low' });
    expect(emu.requests('PATCH', '/services/data/:v/sobjects/Case/:id').map((e) => e.status)).toEqual([
      503, 204,
    ]);
  });

  it('a reset connection on upsert is retried by the client', async () => {
    const sf = client();
    emu.faults.inject({ method: 'PATCH', path: '/Fraudgate_Key__c/', reset: true });
    const result = await sf.upsert('Case', 'Fraudgate_Key__c', { Fraudgate_Key__c: 'reset-1', Subject: 'x' });
    expect(result.created).toBe(true);
  });

  it('REQUEST_LIMIT_EXCEEDED becomes a rate-limited error and is not retried', async () => {
    const sf = client();
    await sf.query('SELECT Id FROM Group');
    emu.rateLimitNext(1);
    const error = await rejection(
      sf.update('Case', { Id: emu.demo?.openFraudCaseId ?? '', Priority: 'Low' }),
    );
    expect(error.code).toBe('UPSTREAM_RATE_LIMITED');
    expect(error.upstreamCode).toBe('REQUEST_LIMIT_EXCEEDED');
    expect(emu.requests('PATCH', '/services/data/:v/sobjects/Case/:id')).toHaveLength(1);
  });

  it('the daily API limit is enforced and reported in Sforce-Limit-Info, parsed into apiUsage()', async () => {
    const small = await startSalesforceEmulator({
      clientId: 'CID',
      clientSecret: 'CSECRET',
      dailyApiLimit: 3,
      seed: false,
    });
    try {
      const sf = createSalesforceClient({
        loginUrl: small.url,
        auth: { flow: 'client_credentials', clientId: 'CID', clientSecret: 'CSECRET' },
      });
      expect(sf.apiUsage()).toBeUndefined();
      await sf.query('SELECT Id FROM User');
      expect(sf.apiUsage()).toEqual({ used: 1, limit: 3 });
      await sf.query('SELECT Id FROM User');
      await sf.query('SELECT Id FROM User');
      const error = await rejection(sf.query('SELECT Id FROM User'));
      expect(error.code).toBe('UPSTREAM_RATE_LIMITED');
      expect(small.journal.at(-1)?.status).toBe(403);
    } finally {
      await small.close();
    }
  });

  it('a slow answer times out with a retryable error', async () => {
    emu.faults.inject({ method: 'GET', path: '/query', delayMs: 300, status: 200, body: {} });
    const error = await rejection(client({ timeoutMs: 100 }).query('SELECT Id FROM Group'));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/did not answer/);
  });

  it('an aborted signal stops the call', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(
      client().query('SELECT Id FROM Group', { signal: controller.signal }),
    ).rejects.toBeInstanceOf(FraudgateError);
    expect(emu.journal).toHaveLength(0);
  });
});

describe('collections', () => {
  it('updateMany with 450 records sends 3 collection requests', async () => {
    const sf = client();
    const created = await sf.createMany(
      'Lead',
      Array.from({ length: 450 }, (_, i) => ({ LastName: `Bulk${i}`, Company: 'BulkCo' })),
    );
    expect(created.every((r) => r.success && r.id.length === 18)).toBe(true);
    expect(emu.requests('POST', '/services/data/:v/composite/sobjects')).toHaveLength(3);
    const results = await sf.updateMany(
      'Lead',
      created.map((r) => ({ Id: r.id, Sift_Risk_Band__c: 'high' })),
    );
    expect(results).toHaveLength(450);
    expect(results.every((r) => r.success)).toBe(true);
    const patches = emu.requests('PATCH', '/services/data/:v/composite/sobjects');
    expect(patches).toHaveLength(3);
    expect(patches.map((p) => (p.body as { records: unknown[] }).records.length)).toEqual([200, 200, 50]);
    expect(
      emu.records('Lead').filter((r) => r.Company === 'BulkCo' && r.Sift_Risk_Band__c === 'high'),
    ).toHaveLength(450);
  });

  it('per-record failures come back as SaveResults with statusCode and field names only', async () => {
    const results = await client().createMany('Lead', [
      { LastName: 'Ok', Company: 'Acme' },
      { Company: 'Acme' },
    ]);
    expect(results[0]).toMatchObject({ success: true });
    expect(results[1]).toMatchObject({
      success: false,
      id: '',
      errors: [{ statusCode: 'REQUIRED_FIELD_MISSING', fields: ['LastName'] }],
    });
  });

  it('the emulator rejects more than 200 records in one request, and honours allOrNone', async () => {
    const conn = new Connection({
      instanceUrl: emu.url,
      accessToken: emu.issueTokens().accessToken,
      version: '62.0',
    });
    const tooMany = Array.from({ length: 201 }, (_, i) => ({ LastName: `Over${i}`, Company: 'Over' }));
    await expect(conn.sobject('Lead').create(tooMany)).rejects.toMatchObject({
      errorCode: 'EXCEEDED_ID_LIMIT',
    });
    const results = await conn
      .sobject('Lead')
      .create([{ LastName: 'Rolled', Company: 'AllOrNone' }, { Company: 'AllOrNone' }], { allOrNone: true });
    expect(results.map((r) => r.success)).toEqual([false, false]);
    expect(emu.records('Lead').filter((r) => r.Company === 'AllOrNone')).toHaveLength(0);
  });
});

describe('composite writes', () => {
  it('sends up to five collections as one all-or-none composite request, one API call, results per collection', async () => {
    const sf = client();
    const [lead] = await sf.createMany('Lead', [{ LastName: 'Comp', Company: 'CompCo' }]);
    const collections = (second: Record<string, unknown>): SalesforceCollectionWrite[] => [
      { op: 'update', sobject: 'Lead', records: [{ Id: lead?.id ?? '', Sift_Risk_Band__c: 'high' }] },
      { op: 'create', sobject: 'Lead', records: [{ LastName: 'Comp2', Company: 'CompCo' }, second] },
      {
        op: 'upsert',
        sobject: 'Case',
        externalIdField: 'Fraudgate_Key__c',
        records: [{ Fraudgate_Key__c: 'comp:1', Subject: 'Composite case' }],
      },
    ];
    const usedBefore = emu.apiUsage().used;
    emu.clearJournal();
    // One record refused: nothing is written, and only that record carries its own error.
    const refused = await sf.writeCollections(collections({ Company: 'CompCo' }));
    expect(refused.map((a) => a.map((r) => r.errors[0]?.statusCode))).toEqual([
      ['PROCESSING_HALTED'],
      ['ALL_OR_NONE_OPERATION_ROLLED_BACK', 'REQUIRED_FIELD_MISSING'],
      ['PROCESSING_HALTED'],
    ]);
    expect(emu.records('Lead').find((r) => r.Id === lead?.id)?.Sift_Risk_Band__c ?? null).toBeNull();
    expect(emu.records('Lead').filter((r) => r.Company === 'CompCo')).toHaveLength(1);
    expect(emu.records('Case').filter((r) => r.Fraudgate_Key__c === 'comp:1')).toHaveLength(0);
    const [request] = dataRequests();
    const body = request?.body as {
      allOrNone: boolean;
      compositeRequest: { body: { allOrNone: boolean } }[];
    };
    expect(body.allOrNone).toBe(true);
    expect(body.compositeRequest.map((sub) => sub.body.allOrNone)).toEqual([true, true, true]);

    const answers = await sf.writeCollections(collections({ LastName: 'Comp3', Company: 'CompCo' }));
    expect(answers.map((a) => a.map((r) => r.success))).toEqual([[true], [true, true], [true]]);
    expect(answers[2]?.[0]?.created).toBe(true);
    expect(dataRequests().map((r) => `${r.method} ${r.route}`)).toEqual([
      'POST /services/data/:version/composite',
      'POST /services/data/:version/composite',
    ]);
    expect(emu.apiUsage().used).toBe(usedBefore + 2);
    expect(emu.records('Lead').find((r) => r.Id === lead?.id)?.Sift_Risk_Band__c).toBe('high');
  });

  it('writeTogether answers per write, or throws the refusal with none of the writes applied', async () => {
    const sf = client();
    const [lead] = await sf.createMany('Lead', [{ LastName: 'Together', Company: 'TogetherCo' }]);
    const ok = await sf.writeTogether([
      { op: 'update', sobject: 'Lead', record: { Id: lead?.id ?? '', Sift_Risk_Band__c: 'low' } },
      { op: 'create', sobject: 'FeedItem', record: { ParentId: lead?.id, Body: 'together' } },
    ]);
    expect(ok.map((r) => r.success)).toEqual([true, true]);
    const error = await rejection(
      sf.writeTogether([
        { op: 'create', sobject: 'FeedItem', record: { ParentId: lead?.id, Body: 'not applied' } },
        { op: 'create', sobject: 'Lead', record: { Company: 'TogetherCo' } },
      ]),
    );
    expect(error.upstreamCode).toBe('REQUIRED_FIELD_MISSING');
    // Nothing was applied: a 4xx, final, and provably leaving the org unchanged.
    expect(error.data).toMatchObject({ status: 400 });
    expect(error.retryable).toBe(false);
    expect(emu.records('FeedItem').filter((f) => f.Body === 'not applied')).toHaveLength(0);
  });

  it('a locked row in an all-or-none write is a temporary refusal: retryable, and provably unapplied', async () => {
    const sf = client();
    const [lead] = await sf.createMany('Lead', [{ LastName: 'Locked', Company: 'LockCo' }]);
    const release = emu.lockRows('Lead', (row) => row.Id === lead?.id);
    const writes = [
      { op: 'update' as const, sobject: 'Lead', record: { Id: lead?.id ?? '', Sift_Risk_Band__c: 'high' } },
      { op: 'create' as const, sobject: 'FeedItem', record: { ParentId: lead?.id, Body: 'beside a lock' } },
    ];
    const error = await rejection(sf.writeTogether(writes));
    expect(error.upstreamCode).toBe('UNABLE_TO_LOCK_ROW');
    expect(error.retryable).toBe(true);
    expect(error.data).toMatchObject({ status: 400 });
    expect(emu.records('FeedItem').filter((f) => f.Body === 'beside a lock')).toHaveLength(0);
    release();
    expect((await sf.writeTogether(writes)).map((r) => r.success)).toEqual([true, true]);
    expect(emu.records('FeedItem').filter((f) => f.Body === 'beside a lock')).toHaveLength(1);
  });

  it("a failed collection's record errors are read whatever status the rolled-back request gives it", async () => {
    // The status of the failed collection inside an all-or-none composite is undocumented: a 400 here.
    emu.faults.inject({
      method: 'POST',
      path: /\/composite$/,
      status: 200,
      body: {
        compositeResponse: [
          {
            httpStatusCode: 400,
            referenceId: 'c0',
            body: [
              { success: false, errors: [{ statusCode: 'ALL_OR_NONE_OPERATION_ROLLED_BACK', fields: [] }] },
              { success: false, errors: [{ statusCode: 'DUPLICATE_VALUE', fields: ['Email'] }] },
            ],
          },
        ],
      },
    });
    const error = await rejection(
      client().writeTogether([
        { op: 'create', sobject: 'Lead', record: { LastName: 'A', Company: 'Status' } },
        { op: 'create', sobject: 'Lead', record: { LastName: 'B', Company: 'Status' } },
      ]),
    );
    expect(error.upstreamCode).toBe('DUPLICATE_VALUE');
    expect(error.message).toContain('Email');
  });

  it('an upsert collection takes a numeric external id, as Salesforce does', async () => {
    const sf = client();
    const [first] = await sf.upsertMany!('Case', 'Fraudgate_Key__c', [
      { Fraudgate_Key__c: 4242, Subject: 'Numeric key' },
    ]);
    expect(first).toMatchObject({ success: true, created: true });
    const [again] = await sf.upsertMany!('Case', 'Fraudgate_Key__c', [
      { Fraudgate_Key__c: 4242, Subject: 'Numeric key again' },
    ]);
    expect(again).toMatchObject({ success: true, created: false, id: first?.id });
    expect(
      emu
        .records('Case')
        .filter((c) => c.Fraudgate_Key__c === '4242')
        .map((c) => c.Subject),
    ).toEqual(['Numeric key again']);
  });

  it('a refusal whose Salesforce text echoes the value names the code and field, in message and detail alike', async () => {
    const error = await rejection(
      client().writeTogether([
        { op: 'create', sobject: 'Case', record: { Subject: 'x', Priority: 'alice@example.com' } },
      ]),
    );
    expectPriorityRefused(error, 'alice@example.com');
  });

  it("a single-record refusal keeps only the code and field in detail, never Salesforce's text", async () => {
    // A duplicate rule's text naming the person already on file, as one REST create answers it.
    emu.faults.inject({
      method: 'POST',
      path: '/sobjects/Lead',
      status: 400,
      body: [
        {
          errorCode: 'DUPLICATE_VALUE',
          message: 'duplicate value found: Email duplicates Lead of Margaret Quixotic-Hamilton',
          fields: ['Email'],
        },
      ],
    });
    const error = await rejection(client().create('Lead', { Company: 'Acme', LastName: 'X' }));
    expect(error.upstreamCode).toBe('DUPLICATE_VALUE');
    expect(error.detail).toContain('DUPLICATE_VALUE (Email)');
    expect(error.detail).not.toContain('Quixotic');
    expect(error.message).not.toContain('Quixotic');
  });

  it('saveError builds its message and detail from the code and fields, never the result message', () => {
    // A save result from any SalesforceClient, its message still Salesforce's own text.
    const error = saveError(
      { op: 'update', sobject: 'Contact' },
      {
        id: '',
        success: false,
        errors: [
          {
            statusCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION',
            message: 'bob@example.com is on legal hold',
            fields: ['Sift_Decision__c'],
          },
        ],
      },
    ) as UpstreamError;
    expect(error.upstreamCode).toBe('FIELD_CUSTOM_VALIDATION_EXCEPTION');
    expect(error.message).toContain('Sift_Decision__c');
    expect(error.message).not.toContain('bob@example.com');
    expect(error.detail).toBe('Contact update: FIELD_CUSTOM_VALIDATION_EXCEPTION (Sift_Decision__c)');
  });

  it('the emulator enforces the composite limits, resolves references and honours allOrNone', async () => {
    const { accessToken } = emu.issueTokens();
    const post = async (body: unknown) => {
      const res = await fetch(`${emu.url}/services/data/v62.0/composite`, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as unknown };
    };
    const collection = (i: number) => ({
      method: 'POST',
      url: '/services/data/v62.0/composite/sobjects',
      referenceId: `c${i}`,
      body: { records: [{ attributes: { type: 'Lead' }, LastName: `L${i}`, Company: 'Limits' }] },
    });
    const six = await post({ compositeRequest: [0, 1, 2, 3, 4, 5].map(collection) });
    expect(six.status).toBe(400);
    expect(six.json).toEqual([expect.objectContaining({ errorCode: 'INVALID_API_INPUT' })]);
    expect(emu.records('Lead').filter((r) => r.Company === 'Limits')).toHaveLength(0);

    const linked = await post({
      compositeRequest: [
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/Lead',
          referenceId: 'lead',
          body: { LastName: 'Ref', Company: 'Refs' },
        },
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/FeedItem',
          referenceId: 'post',
          body: { ParentId: '@{lead.id}', Body: 'linked' },
        },
      ],
    });
    const responses = (
      linked.json as { compositeResponse: { httpStatusCode: number; body: { id: string } }[] }
    ).compositeResponse;
    expect(responses.map((r) => r.httpStatusCode)).toEqual([201, 201]);
    expect(emu.records('FeedItem').find((f) => f.Body === 'linked')?.ParentId).toBe(responses[0]?.body.id);

    const rolled = await post({
      allOrNone: true,
      compositeRequest: [
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/Lead',
          referenceId: 'good',
          body: { LastName: 'Gone', Company: 'Rolled' },
        },
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/Lead',
          referenceId: 'bad',
          body: { Company: 'Rolled' },
        },
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/Lead',
          referenceId: 'later',
          body: { LastName: 'Never', Company: 'Rolled' },
        },
      ],
    });
    const codes = (
      rolled.json as { compositeResponse: { body: { errorCode: string }[] }[] }
    ).compositeResponse.map((r) => r.body[0]?.errorCode);
    expect(codes).toEqual(['PROCESSING_HALTED', 'REQUIRED_FIELD_MISSING', 'PROCESSING_HALTED']);
    expect(emu.records('Lead').filter((r) => r.Company === 'Rolled')).toHaveLength(0);

    // The composite's allOrNone overrides a collection's: one refused record rolls back everything.
    const overridden = await post({
      allOrNone: true,
      compositeRequest: [
        {
          method: 'POST',
          url: '/services/data/v62.0/sobjects/Lead',
          referenceId: 'before',
          body: { LastName: 'Before', Company: 'Overridden' },
        },
        {
          method: 'POST',
          url: '/services/data/v62.0/composite/sobjects',
          referenceId: 'partial',
          body: {
            allOrNone: false,
            records: [
              { attributes: { type: 'Lead' }, LastName: 'Valid', Company: 'Overridden' },
              { attributes: { type: 'Lead' }, Company: 'Overridden' },
            ],
          },
        },
      ],
    });
    const [before, partial] = (
      overridden.json as { compositeResponse: { httpStatusCode: number; body: unknown }[] }
    ).compositeResponse;
    expect(before?.body).toEqual([expect.objectContaining({ errorCode: 'PROCESSING_HALTED' })]);
    expect(
      (partial?.body as { errors: { statusCode: string }[] }[]).map((r) => r.errors[0]?.statusCode),
    ).toEqual(['ALL_OR_NONE_OPERATION_ROLLED_BACK', 'REQUIRED_FIELD_MISSING']);
    expect(emu.records('Lead').filter((r) => r.Company === 'Overridden')).toHaveLength(0);
  });
});

describe('emulator', () => {
  it.skipIf(!sharedFixturesPresent)(
    'the 18-character id checksum matches the recorded examples (shared fixtures)',
    () => {
      const examples = sharedFixture<{ checksum_examples: { id15: string; id18: string }[] }>(
        'salesforce',
        'id-format.json',
      ).checksum_examples;
      for (const { id15, id18 } of examples) expect(toSalesforceId18(id15)).toBe(id18);
    },
  );

  it('every seeded record carries a valid 18-character id', () => {
    for (const object of ['Account', 'Contact', 'Lead', 'Case', 'Opportunity', 'Group', 'User']) {
      for (const record of emu.records(object)) {
        expect(record.Id).toHaveLength(18);
        expect(isSalesforceId(record.Id)).toBe(true);
      }
    }
  });

  it('unknown routes answer 501 and are recorded', async () => {
    const response = await fetch(`${emu.url}/services/data/v62.0/bogus/route`);
    expect(response.status).toBe(501);
    expect(emu.unmatched.map((e) => e.path)).toEqual(['/services/data/v62.0/bogus/route']);
  });

  it('answers 401 INVALID_SESSION_ID in the array shape for unknown tokens', async () => {
    const response = await fetch(`${emu.url}/services/data/v62.0/limits`, {
      headers: { authorization: 'Bearer nope' },
    });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual([
      { message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' },
    ]);
  });

  it('supports the JWT bearer and refresh-token grants, and /limits', async () => {
    const jwt = new Connection({ loginUrl: emu.url, version: '62.0' });
    const assertion = 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJDSUQifQ.c2ln';
    const userInfo = await jwt.authorize({
      grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
      assertion,
    });
    expect(userInfo.id).toBe(emu.integrationUserId);
    expect(jwt.instanceUrl).toBe(emu.url);
    const limits = (await jwt.limits()) as unknown as {
      DailyApiRequests: { Max: number; Remaining: number };
    };
    expect(limits.DailyApiRequests.Max).toBe(15000);
    expect(jwt.limitInfo.apiUsage?.used).toBe(15000 - limits.DailyApiRequests.Remaining);

    const { refreshToken } = emu.issueTokens();
    const refreshed = new Connection({
      oauth2: { loginUrl: emu.url, clientId: 'CID', clientSecret: 'CSECRET' },
      instanceUrl: emu.url,
      accessToken: 'expired',
      refreshToken,
      version: '62.0',
    });
    const count = await refreshed.sobject('Group').count({ Type: 'Queue' });
    expect(count).toBe(1);
    expect(tokenRequests().some((e) => e.rawBody.startsWith('grant_type=refresh_token'))).toBe(true);
  });

  it('upsert answers 300 on multiple matches and 204 below API 46', async () => {
    emu.insert('Contact', { LastName: 'Dup1', Sift_User_Id__c: 'dup-x' });
    emu.insert('Contact', { LastName: 'Dup2', Sift_User_Id__c: 'DUP-X' });
    const conn = new Connection({
      instanceUrl: emu.url,
      accessToken: emu.issueTokens().accessToken,
      version: '62.0',
    });
    await expect(
      conn.sobject('Contact').upsert({ Sift_User_Id__c: 'dup-x', Phone: '1' }, 'Sift_User_Id__c'),
    ).rejects.toMatchObject({ errorCode: 'MULTIPLE_CHOICES' });
    const old = new Connection({
      instanceUrl: emu.url,
      accessToken: emu.issueTokens().accessToken,
      version: '45.0',
    });
    const result = await old
      .sobject('Account')
      .upsert({ Sift_User_Id__c: 'sandbox-watch', Phone: '2' }, 'Sift_User_Id__c');
    expect(result).toEqual({ success: true, errors: [] });
  });

  it('describe lists the custom fields and picklists', async () => {
    const conn = new Connection({
      instanceUrl: emu.url,
      accessToken: emu.issueTokens().accessToken,
      version: '62.0',
    });
    const describe = await conn.sobject('Case').describe();
    const key = describe.fields.find((f) => f.name === 'Fraudgate_Key__c');
    expect(key).toMatchObject({ externalId: true, unique: true });
    expect(describe.fields.find((f) => f.name === 'Priority')?.restrictedPicklist).toBe(true);
  });
});
