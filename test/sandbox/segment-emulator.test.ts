// The Segment emulator's own rules (contract §1.4–1.5, §3.3, §4), over raw HTTP.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startSegmentEmulator, type SegmentEmulator } from '../../src/sandbox/segment-emulator.ts';
import { SEGMENT_DEMO_PROFILES } from '../../src/sandbox/segment-demo-data.ts';

let emu: SegmentEmulator;

beforeEach(async () => {
  emu = await startSegmentEmulator();
});

afterEach(async () => {
  await emu.close();
});

const basic = (user: string) => `Basic ${Buffer.from(`${user}:`).toString('base64')}`;

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${emu.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

/** The Profile API answer shapes the assertions read. */
interface TraitsBody {
  traits: Record<string, unknown> & { plan?: unknown };
  cursor: { has_more: boolean; next: string };
  error?: { code: string; message: string };
}

async function traits(extId: string, query = '', token = emu.profileToken, space = emu.spaceId) {
  const res = await fetch(
    `${emu.url}/v1/spaces/${space}/collections/users/profiles/${extId}/traits${query}`,
    {
      headers: { authorization: basic(token) },
    },
  );
  return {
    status: res.status,
    requestId: res.headers.get('request-id'),
    body: (await res.json()) as TraitsBody,
  };
}

const event = (i: number, extra: Record<string, unknown> = {}) => ({
  type: 'track',
  event: 'E',
  userId: 'u',
  messageId: `m-${i}`,
  ...extra,
});

describe('Tracking API', () => {
  it('accepts the write key from the body or from Basic auth', async () => {
    expect((await post('/v1/batch', { batch: [event(1)], writeKey: emu.writeKey })).status).toBe(200);
    expect(
      (await post('/v1/batch', { batch: [event(2)] }, { authorization: basic(emu.writeKey) })).status,
    ).toBe(200);
    expect(emu.events.map((e) => e.messageId)).toEqual(['m-1', 'm-2']);
    expect(emu.rejected).toEqual([]);
  });

  it('answers 200 to a wrong, missing or disagreeing write key and drops the events as invalid_write_key', async () => {
    const ok = { status: 200, body: { success: true } };
    expect(await post('/v1/batch', { batch: [event(3), event(4)], writeKey: 'nope' })).toEqual(ok);
    expect(await post('/v1/batch', { batch: [event(5)] })).toEqual(ok);
    expect(
      await post(
        '/v1/batch',
        { batch: [event(6)], writeKey: emu.writeKey },
        { authorization: basic('other') },
      ),
    ).toEqual(ok);
    expect(await post('/v1/track', { ...event(7), writeKey: 'nope' })).toEqual(ok);
    expect(emu.events).toEqual([]);
    expect(emu.profile('u')).toBeUndefined();
    expect(emu.rejected).toEqual([
      { reason: 'invalid_write_key', index: 0, messageId: 'm-3' },
      { reason: 'invalid_write_key', index: 1, messageId: 'm-4' },
      { reason: 'invalid_write_key', index: 0, messageId: 'm-5' },
      { reason: 'invalid_write_key', index: 0, messageId: 'm-6' },
      { reason: 'invalid_write_key', index: 0, messageId: 'm-7' },
    ]);
    // Oversized payloads and invalid JSON are still 400 whatever the key (contract §1.5).
    expect((await post('/v1/batch', '{"batch": [', { authorization: basic('nope') })).status).toBe(400);
  });

  it('answers 401 only as an injected fault (refuseWriteKey), with the right key too', async () => {
    emu.refuseWriteKey(1);
    expect(await post('/v1/batch', { batch: [event(1)], writeKey: emu.writeKey })).toEqual({
      status: 401,
      body: { code: 'invalid_write_key', message: 'Invalid or missing write key.' },
    });
    expect((await post('/v1/batch', { batch: [event(1)], writeKey: emu.writeKey })).status).toBe(200);
    expect(emu.events.map((e) => e.messageId)).toEqual(['m-1']);
  });

  it('answers 400 for invalid JSON, an event over 32 KB and a batch over 500 KB', async () => {
    const auth = { authorization: basic(emu.writeKey) };
    expect(await post('/v1/batch', '{"batch": [', auth)).toMatchObject({ status: 400 });
    const big = event(1, { properties: { blob: 'a'.repeat(33 * 1024) } });
    expect(await post('/v1/batch', { batch: [event(0), big] }, auth)).toEqual({
      status: 400,
      body: { code: 'invalid_request', message: 'Exceed payload limit' },
    });
    const many = Array.from({ length: 20 }, (_, i) =>
      event(i, { properties: { blob: 'b'.repeat(30 * 1024) } }),
    );
    expect((await post('/v1/batch', { batch: many }, auth)).status).toBe(400);
    expect((await post('/v1/track', big, auth)).status).toBe(400);
    expect(emu.events).toHaveLength(0);
  });

  it('answers 200 but drops events without an identity, tracks without event, and items past 2,500', async () => {
    const batch = [
      { type: 'identify', messageId: 'anon-less', traits: {} },
      { type: 'track', userId: 'u', messageId: 'no-event' },
      ...Array.from({ length: 2501 }, (_, i) => ({ type: 'identify', userId: 'u', messageId: `i-${i}` })),
    ];
    expect((await post('/v1/batch', { batch, writeKey: emu.writeKey })).status).toBe(200);
    expect(emu.rejected.map((r) => r.reason).slice(0, 2)).toEqual(['no_user_anon_id', 'missing_event']);
    expect(emu.rejected.filter((r) => r.reason === 'batch_limit')).toHaveLength(3);
    expect(emu.events).toHaveLength(2498);
  });

  it('dedupes on messageId across requests and counts duplicates', async () => {
    await post('/v1/batch', { batch: [event(1), event(1)], writeKey: emu.writeKey });
    await post('/v1/track', { ...event(1), writeKey: emu.writeKey });
    expect(emu.events).toHaveLength(1);
    expect(emu.duplicates).toBe(2);
  });

  it('serves single-event endpoints and merges batch-level context into items', async () => {
    await post('/v1/identify', { userId: 'solo', traits: { a: 1 }, writeKey: emu.writeKey });
    await post('/v1/batch', { batch: [event(9)], context: { ip: '203.0.113.9' }, writeKey: emu.writeKey });
    expect(emu.profile('solo')).toMatchObject({ a: 1 });
    expect(emu.events.find((e) => e.messageId === 'm-9')?.raw['context']).toEqual({ ip: '203.0.113.9' });
    expect(emu.events.every((e) => !('writeKey' in e.raw))).toBe(true);
    const listed = (await (await fetch(`${emu.url}/__emulator/events?userId=solo`)).json()) as {
      events: unknown[];
    };
    expect(listed.events).toHaveLength(1);
  });

  it('rateLimit() queues 429 with Retry-After for the tracking API', async () => {
    emu.rateLimit(1, 3);
    const res = await fetch(`${emu.url}/v1/batch`, {
      method: 'POST',
      body: JSON.stringify({ batch: [event(1)], writeKey: emu.writeKey }),
    });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('3');
    expect((await post('/v1/batch', { batch: [event(1)], writeKey: emu.writeKey })).status).toBe(200);
  });

  it('does not implement the Regulations API: calls are 501 and recorded', async () => {
    const res = await post(
      '/regulations',
      { regulationType: 'SUPPRESS_ONLY' },
      { authorization: 'Bearer x' },
    );
    expect(res.status).toBe(501);
    expect(emu.unmatched.map((e) => e.path)).toEqual(['/regulations']);
  });
});

describe('Profile API', () => {
  it('seeds the demo profiles on example.com, and can start empty', async () => {
    for (const demo of SEGMENT_DEMO_PROFILES) {
      expect(String(emu.profile(demo.userId)?.email)).toMatch(/@example\.com$/);
    }
    const empty = await startSegmentEmulator({ seed: false });
    expect(empty.profile('sandbox-blocked')).toBeUndefined();
    await empty.close();
  });

  it('answers traits with a cursor and a Request-Id; 404 not_found for unknown ids', async () => {
    const found = await traits('user_id:sandbox-blocked');
    expect(found.status).toBe(200);
    expect(found.requestId).toBeTruthy();
    expect(found.body.traits).toMatchObject({ suppressed_for_fraud: true, fraud_suppressed: true });
    expect(found.body.cursor).toMatchObject({ has_more: false, next: '' });
    const missing = await traits('user_id:nobody');
    expect(missing).toMatchObject({
      status: 404,
      body: { error: { code: 'not_found', message: 'Profile was not found.' } },
    });
    expect(missing.requestId).toBeTruthy();
  });

  it('looks profiles up by email, percent-decoded once', async () => {
    await post('/v1/identify', {
      userId: 'plus',
      traits: { email: 'a+b@example.com' },
      writeKey: emu.writeKey,
    });
    expect((await traits('email:a%2Bb%40example.com')).body.traits).toMatchObject({
      email: 'a+b@example.com',
    });
    expect((await traits('email:sandbox-watch@example.com')).body.traits).toMatchObject({ plan: 'team' });
  });

  it('honours include, limit/next, class and verbose', async () => {
    const included = await traits('user_id:sandbox-blocked', '?include=plan,fraud_suppressed');
    expect(included.body.traits).toEqual({ plan: 'free', fraud_suppressed: true });

    const first = await traits('user_id:sandbox-blocked', '?limit=2');
    expect(Object.keys(first.body.traits)).toHaveLength(2);
    expect(first.body.cursor.has_more).toBe(true);
    const second = await traits('user_id:sandbox-blocked', `?limit=2&next=${first.body.cursor.next}`);
    expect(Object.keys(second.body.traits)).not.toEqual(Object.keys(first.body.traits));

    expect((await traits('user_id:sandbox-blocked', '?class=audience')).body.traits).toEqual({
      fraud_suppressed: true,
    });
    const verbose = await traits('user_id:sandbox-blocked', '?include=plan&verbose=true');
    expect(verbose.body.traits.plan).toMatchObject({ value: 'free', source_id: expect.any(String) });
    expect((await traits('user_id:sandbox-blocked', '?limit=0')).status).toBe(400);
  });

  it('requires the token (401 authentication_error) and the configured space (403)', async () => {
    expect(await traits('user_id:sandbox-blocked', '', 'wrong')).toMatchObject({
      status: 401,
      body: { error: { code: 'authentication_error' } },
    });
    expect((await traits('user_id:sandbox-blocked', '', emu.profileToken, 'other-space')).status).toBe(403);
  });

  it('supports custom audience rules', async () => {
    const custom = await startSegmentEmulator({
      audiences: [{ key: 'high_risk', matches: (t) => t['sift_risk_level'] === 'high' }],
    });
    expect(custom.profile('sandbox-high-risk')).toMatchObject({ high_risk: true });
    expect(custom.profile('sandbox-high-risk')).not.toHaveProperty('fraud_suppressed');
    await custom.close();
  });
});
