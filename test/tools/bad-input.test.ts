/**
 * Bad input, for every tool in the registry: an unknown argument and a wrongly typed one each get
 * INVALID_INPUT naming the field, and nothing reaches any upstream (no partial write, no read).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
beforeAll(async () => {
  env = await setup({
    config: {
      rate_limits: {
        read: { capacity: 1000, per_minute: 1000 },
        write: { capacity: 1000, per_minute: 1000 },
        destructive: { capacity: 1000, per_minute: 1000 },
        refusals: { capacity: 1000, per_minute: 1000 },
      },
    },
  });
});
afterAll(async () => {
  await env?.close();
});

const upstreamTraffic = () => [
  ...env.sandbox.sift.journal,
  ...env.sandbox.segment.journal,
  ...env.sandbox.salesforce.journal.filter((j) => !j.path.includes('/oauth2/')),
];

describe.each(tools.map((t) => [t.name]))('%s', (name) => {
  it('refuses an unknown argument, naming it', async () => {
    const before = upstreamTraffic().length;
    const result = await env.callTool(name, { not_a_real_argument: 'x' });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('not_a_real_argument');
    expect(upstreamTraffic()).toHaveLength(before);
  });

  it('refuses wrongly typed arguments, naming a field and the rule', async () => {
    const before = upstreamTraffic().length;
    // Every declared argument as an object: no tool takes objects for all of them.
    const shape = Object.keys(
      (tools.find((t) => t.name === name)!.input as { shape: Record<string, unknown> }).shape,
    );
    const result = await env.callTool(name, Object.fromEntries(shape.map((k) => [k, { nested: true }])));
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(shape.some((field) => result.error.message.includes(field))).toBe(true);
    expect(result.error.message).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    expect(upstreamTraffic()).toHaveLength(before);
  });
});

describe('bounds the upstream sets', () => {
  it('emails longer than the field they land in are refused before any upstream call', async () => {
    const before = upstreamTraffic().length;
    // 81 characters: Salesforce's SuppliedEmail holds 80.
    const caseEmail = `${'a'.repeat(69)}@example.com`;
    const fraudCase = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'Card testing pattern on three cards in an hour',
      email: caseEmail,
    });
    expect(fraudCase.error.code).toBe('INVALID_INPUT');
    expect(fraudCase.error.message).toContain('email');
    // 255 characters: past the 254 an address may have.
    const siftEmail = `${'a'.repeat(60)}@${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.${'e'.repeat(7)}.com`;
    expect(siftEmail).toHaveLength(255);
    const event = await env.callTool('send_sift_event', {
      event: { event_type: 'create_account', user_id: 'wallet-user-1', email: siftEmail },
    });
    expect(event.error.code).toBe('INVALID_INPUT');
    expect(event.error.message).toContain('email');
    expect(upstreamTraffic()).toHaveLength(before);
  });

  it.each([
    ['get_sift_score', { user_id: 'sandbox-high-risk' }],
    ['list_sift_decisions', {}],
    [
      'send_sift_event',
      {
        event: { event_type: 'login', user_id: 'wallet-user-1', login_status: 'success' },
        return_score: true,
      },
    ],
  ])('%s refuses abuse_types with a repeat or more entries than Sift has types', async (name, args) => {
    const before = upstreamTraffic().length;
    const repeated = await env.callTool(name, { ...args, abuse_types: ['payment_abuse', 'payment_abuse'] });
    expect(repeated.error.code).toBe('INVALID_INPUT');
    expect(repeated.error.message).toContain('abuse_types');
    const many = await env.callTool(name, { ...args, abuse_types: Array(7).fill('legacy') });
    expect(many.error.code).toBe('INVALID_INPUT');
    expect(many.error.message).toContain('abuse_types');
    expect(upstreamTraffic()).toHaveLength(before);
  });
});

describe('Salesforce ids are checked in full before any upstream call', () => {
  /**
   * The same record's id with an 18-character checksum no id has (its first 15 characters
   * unchanged): '5' makes every character of its chunk upper-case, the key prefix's digits too.
   */
  const badChecksum = (id: string) => id.slice(0, 15) + '555';

  it.each([
    ['enrich_salesforce_lead', 'lead_id', () => env.sandbox.salesforce.demo!.riskyLeadId, {}],
    [
      'flag_opportunities',
      'account_id',
      () => env.sandbox.salesforce.demo!.accounts['sandbox-high-risk']!,
      { dry_run: true },
    ],
    ['get_fraud_case', 'case_id', () => env.sandbox.salesforce.demo!.openFraudCaseId, {}],
    [
      'resolve_fraud_case',
      'case_id',
      () => env.sandbox.salesforce.demo!.openFraudCaseId,
      { resolution: 'false_positive', notes: 'notes long enough' },
    ],
    [
      'track_fraud_event',
      'case_id',
      () => env.sandbox.salesforce.demo!.openFraudCaseId,
      { user_id: 'sandbox-high-risk', event: 'score_evaluated' },
    ],
  ] as const)(
    '%s refuses an 18-character %s with a bad checksum, naming it',
    async (name, field, id, rest) => {
      const good = id();
      expect(good).toHaveLength(18);
      const before = upstreamTraffic().length;
      const result = await env.callTool(name, { ...rest, [field]: badChecksum(good) });
      expect(result.isError).toBe(true);
      expect(result.error.code).toBe('INVALID_INPUT');
      const issues = result.error.issues as { field: string; message: string }[];
      expect(issues[0]!.field).toBe(field);
      expect(issues[0]!.message).toMatch(/checksum/);
      expect(upstreamTraffic()).toHaveLength(before);
    },
  );

  it('an 18-character id is case-insensitive: accepted in any case, passed on in its canonical case', async () => {
    const canonical = env.sandbox.salesforce.demo!.riskyLeadId;
    expect(canonical).toMatch(/[A-Z]/);
    expect(canonical.slice(0, 15)).toMatch(/[a-z]/);
    for (const given of [canonical.toLowerCase(), canonical.toUpperCase()]) {
      const before = env.sandbox.salesforce.journal.length;
      const result = await env.callTool('enrich_salesforce_lead', { lead_id: given });
      expect(result.isError).toBe(false);
      expect(result.output.lead_id).toBe(canonical);
      // SOQL and REST alike got the canonical id, never the case it was given in.
      const sent = env.sandbox.salesforce.journal
        .slice(before)
        .filter((j) => !j.path.includes('/oauth2/'))
        .map((j) => decodeURIComponent(j.path) + ' ' + JSON.stringify(j.query) + ' ' + j.rawBody);
      expect(sent.some((line) => line.includes(canonical))).toBe(true);
      expect(sent.filter((line) => line.includes(given))).toEqual([]);
    }
  });

  it('a 15-character id (no checksum) is still accepted', async () => {
    const id15 = env.sandbox.salesforce.demo!.openFraudCaseId.slice(0, 15);
    const result = await env.callTool('get_fraud_case', { case_id: id15 });
    expect(result.isError).toBe(false);
  });
});

describe('send_sift_event refuses text Sift would store as it is', () => {
  const siftPosts = () => env.sandbox.sift.journal.filter((j) => j.method === 'POST');

  it.each([
    ['event.phone', { phone: '\u0000\u202E123' }],
    ['event.phone', { phone: 'call me maybe' }],
    ['event.name', { name: 'Ann\u202Egnirts' }],
    ['event.name', { name: 'Ann\u0000' }],
    ['event.account_types.0', { account_types: ['wallet\u009b'] }],
    ['event.custom_fields.note', { custom_fields: { note: 'line\nbreak' } }],
  ])('naming %s, with nothing posted to Sift', async (field, extra) => {
    const before = siftPosts().length;
    const result = await env.callTool('send_sift_event', {
      event: { event_type: 'create_account', user_id: 'wallet-user-1', ...extra },
    });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect((result.error.issues as { field: string }[]).map((i) => i.field)).toContain(field);
    expect(siftPosts()).toHaveLength(before);
  });

  it('still sends a phone number as people write it and names in any script', async () => {
    const result = await env.callTool('send_sift_event', {
      event: {
        event_type: 'create_account',
        user_id: 'wallet-user-1',
        phone: '+1 (415) 555-0100',
        name: 'Zoë Šťastná محمد',
      },
    });
    expect(result.isError).toBe(false);
  });
});
