// The Segment client against the loopback emulator, over real HTTP, with the real analytics-node.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSegmentClient, type SegmentClientConfig } from '../../src/clients/segment-client.ts';
import { InvalidInputError, UpstreamError } from '../../src/errors.ts';
import { startSegmentEmulator, type SegmentEmulator } from '../../src/sandbox/segment-emulator.ts';
import { sharedFixture, sharedFixturesPresent } from '../helpers/shared-fixtures.ts';

let emu: SegmentEmulator;
let clients: ReturnType<typeof createSegmentClient>[] = [];

beforeEach(async () => {
  emu = await startSegmentEmulator();
  clients = [];
});

afterEach(async () => {
  // close() is bounded, so a client left retrying against a failing emulator cannot hang the run.
  await Promise.all(clients.map((c) => c.close()));
  await emu.close();
});

function client(overrides: Partial<SegmentClientConfig> = {}) {
  const c = createSegmentClient({
    writeKey: emu.writeKey,
    host: emu.url,
    profileBaseUrl: emu.url,
    spaceId: emu.spaceId,
    profileToken: emu.profileToken,
    closeTimeoutMs: 300,
    ...overrides,
  });
  clients.push(c);
  return c;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject');
}

const batches = () => emu.requests('POST', '/v1/batch');

describe('identify and track', () => {
  it('delivers identify with the caller messageId and merges traits into the profile (last write wins)', async () => {
    const segment = client();
    await segment.identify({
      userId: 'u-1',
      messageId: 'fg:case-1:identify:1',
      traits: { plan: 'pro', risk: 'low' },
    });
    await segment.identify({ userId: 'u-1', messageId: 'fg:case-1:identify:2', traits: { risk: 'high' } });

    expect(emu.eventsFor('u-1').map((e) => e.messageId)).toEqual([
      'fg:case-1:identify:1',
      'fg:case-1:identify:2',
    ]);
    expect(emu.eventsFor('u-1')[0]?.traits).toEqual({ plan: 'pro', risk: 'low' });
    expect(batches()[0]?.headers['authorization']).toBe(
      `Basic ${Buffer.from(`${emu.writeKey}:`).toString('base64')}`,
    );
    expect(await segment.getProfileTraits('u-1')).toEqual({
      plan: 'pro',
      risk: 'high',
      fraud_suppressed: false,
    });
  });

  it('delivers track with event, properties and timestamp', async () => {
    const segment = client();
    const timestamp = new Date('2025-05-01T12:00:00.000Z');
    await segment.track({
      userId: 'u-2',
      messageId: 'fg:case-2:track:1',
      event: 'Fraud Suppression Applied',
      properties: { reason: 'chargeback_velocity' },
      timestamp,
    });
    const [stored] = emu.eventsFor('u-2');
    expect(stored).toMatchObject({
      type: 'track',
      messageId: 'fg:case-2:track:1',
      event: 'Fraud Suppression Applied',
      properties: { reason: 'chargeback_velocity' },
    });
    expect(stored?.raw['timestamp']).toBe(timestamp.toISOString());
    expect(typeof stored?.receivedAt).toBe('string');
  });

  it('resolves only after the batch was answered, and promptly (not after the 10 s flushInterval)', async () => {
    const segment = client();
    emu.faults.inject({ path: '/v1/batch', delayMs: 250 });
    const started = Date.now();
    await segment.track({ userId: 'u-3', messageId: 'fg:slow:1', event: 'Slow', properties: {} });
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(240);
    expect(elapsed).toBeLessThan(1500);
    expect(emu.eventsFor('u-3')).toHaveLength(1);
  });

  it('shows the fraud_suppressed audience computed from suppressed_for_fraud', async () => {
    const segment = client();
    expect(await segment.getProfileTraits('sandbox-blocked')).toMatchObject({ fraud_suppressed: true });
    expect(await segment.getProfileTraits('sandbox-high-risk')).toMatchObject({ fraud_suppressed: false });

    await segment.identify({
      userId: 'sandbox-high-risk',
      messageId: 'fg:s:1',
      traits: { suppressed_for_fraud: true },
    });
    expect(await segment.getProfileTraits('sandbox-high-risk')).toMatchObject({
      suppressed_for_fraud: true,
      fraud_suppressed: true,
    });
    await segment.identify({
      userId: 'sandbox-high-risk',
      messageId: 'fg:s:2',
      traits: { suppressed_for_fraud: false },
    });
    expect(emu.profile('sandbox-high-risk')).toMatchObject({ fraud_suppressed: false });
  });

  it('stores a repeated messageId once and counts the duplicate', async () => {
    const segment = client();
    const message = {
      userId: 'u-4',
      messageId: 'fg:case-4:suppress:1',
      traits: { suppressed_for_fraud: true },
    };
    await segment.identify(message);
    await segment.identify(message);
    expect(batches()).toHaveLength(2);
    expect(emu.events.filter((e) => e.messageId === message.messageId)).toHaveLength(1);
    expect(emu.duplicates).toBe(1);
  });

  it('refuses an over-long messageId or an oversized message before sending', async () => {
    const segment = client();
    const tooLong = await rejection(
      segment.track({ userId: 'u', messageId: 'x'.repeat(100), event: 'E', properties: {} }),
    );
    expect(tooLong).toBeInstanceOf(InvalidInputError);
    const tooBig = await rejection(
      segment.track({
        userId: 'u',
        messageId: 'fg:big',
        event: 'E',
        properties: { blob: 'a'.repeat(40_000) },
      }),
    );
    expect(tooBig).toBeInstanceOf(InvalidInputError);
    expect(emu.journal).toHaveLength(0);
  });

  it('rejects a call after close without sending it', async () => {
    const segment = client();
    await segment.close();
    const error = await rejection(
      segment.track({ userId: 'u', messageId: 'fg:late', event: 'E', properties: {} }),
    );
    expect(error).toMatchObject({ retryable: true, service: 'segment' });
    expect(emu.journal).toHaveLength(0);
  });

  it('rejects when the caller aborts before Segment confirmed', async () => {
    const segment = client();
    emu.faults.inject({ path: '/v1/batch', delayMs: 2000 });
    const controller = new AbortController();
    const pending = segment.track(
      { userId: 'u', messageId: 'fg:abort', event: 'E', properties: {} },
      { signal: controller.signal },
    );
    setTimeout(() => controller.abort(), 50);
    expect(await rejection(pending)).toMatchObject({ name: 'UpstreamError', retryable: true });
  });
});

describe('delivery failures', () => {
  it('500 then 200: the library retries the same batch and the event is stored once', async () => {
    const segment = client({ maxRetries: 1 });
    emu.faults.inject({ path: '/v1/batch', status: 500 });
    await segment.identify({ userId: 'u-5', messageId: 'fg:retry:1', traits: { a: 1 } });
    const sent = batches();
    expect(sent.map((r) => r.status)).toEqual([500, 200]);
    expect(sent[1]?.headers['x-retry-count']).toBe('1');
    expect(emu.events.filter((e) => e.messageId === 'fg:retry:1')).toHaveLength(1);
  });

  it('persistent 500: rejects retryable within deliveryTimeoutMs, reporting the last status', async () => {
    const segment = client({ maxRetries: 5, deliveryTimeoutMs: 600 });
    emu.faults.inject({ path: '/v1/batch', status: 500, count: 100 });
    const started = Date.now();
    const error = await rejection(
      segment.track({ userId: 'u', messageId: 'fg:500', event: 'E', properties: {} }),
    );
    expect(Date.now() - started).toBeLessThan(1000);
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error).toMatchObject({ retryable: true, status: 500, code: 'UPSTREAM_ERROR' });
  });

  it('503 with retries spent before the deadline: rejects with the library failure status', async () => {
    const segment = client({ maxRetries: 0 });
    emu.faults.inject({ path: '/v1/batch', status: 503 });
    const error = await rejection(segment.identify({ userId: 'u', messageId: 'fg:503', traits: {} }));
    expect(error).toMatchObject({ name: 'UpstreamError', retryable: true, status: 503 });
    expect(batches()).toHaveLength(1);
  });

  it('persistent 429 with Retry-After: rejects as rate limited within deliveryTimeoutMs', async () => {
    const segment = client({ deliveryTimeoutMs: 700 });
    emu.rateLimit(100, 1);
    const started = Date.now();
    const error = await rejection(
      segment.track({ userId: 'u', messageId: 'fg:429', event: 'E', properties: {} }),
    );
    expect(Date.now() - started).toBeLessThan(1100);
    expect(error).toMatchObject({
      retryable: true,
      status: 429,
      code: 'UPSTREAM_RATE_LIMITED',
      retryAfterMs: 1000,
    });
  });

  it('400 (event over 32 KB reaching Segment): rejects non-retryable and nothing is stored', async () => {
    const segment = client({ maxEventBytes: Number.POSITIVE_INFINITY });
    const error = await rejection(
      segment.track({
        userId: 'u',
        messageId: 'fg:400',
        event: 'Big',
        properties: { blob: 'a'.repeat(40_000) },
      }),
    );
    expect(error).toMatchObject({ name: 'UpstreamError', retryable: false, status: 400 });
    expect(batches().map((r) => r.status)).toEqual([400]);
    expect(emu.events).toHaveLength(0);
  });

  it('wrong write key: Segment answers 200 and drops the events, so the call resolves', async () => {
    const segment = client({ writeKey: 'wk-not-valid-123', maxRetries: 3 });
    await segment.identify({ userId: 'u', messageId: 'fg:wrong-key', traits: { plan: 'pro' } });
    expect(batches().map((r) => r.status)).toEqual([200]);
    expect(emu.events).toEqual([]);
    expect(emu.rejected).toEqual([{ reason: 'invalid_write_key', index: 0, messageId: 'fg:wrong-key' }]);
  });

  it('write key refused with 401 (injected): non-retryable, and the key is not in the public message', async () => {
    const segment = client({ writeKey: 'wk-not-valid-123', maxRetries: 3 });
    emu.refuseWriteKey(5);
    const error = await rejection(segment.identify({ userId: 'u', messageId: 'fg:401', traits: {} }));
    expect(error).toMatchObject({ name: 'UpstreamError', retryable: false, status: 401 });
    expect((error as Error).message).toContain('refused the write key');
    expect((error as Error).message).not.toContain('wk-not-valid-123');
    expect(batches()).toHaveLength(1);
  });
});

describe('getProfileTraits', () => {
  it('returns null for an unknown profile', async () => {
    expect(await client().getProfileTraits('nobody-here')).toBeNull();
  });

  it('encodes reserved characters in the user id', async () => {
    const segment = client();
    await segment.identify({ userId: 'a+b/c@x', messageId: 'fg:enc', traits: { k: 'v' } });
    expect(await segment.getProfileTraits('a+b/c@x')).toMatchObject({ k: 'v' });
  });

  it('follows has_more pages', async () => {
    const segment = client();
    const traits = Object.fromEntries(Array.from({ length: 250 }, (_, i) => [`t${i}`, i]));
    await segment.identify({ userId: 'many', messageId: 'fg:many', traits });
    const read = await segment.getProfileTraits('many');
    expect(Object.keys(read ?? {})).toHaveLength(251);
    expect(emu.requests('GET', '/v1/spaces/:s/collections/users/profiles/:id/traits')).toHaveLength(2);
  });

  it('profile 401: non-retryable error whose message and detail hold no token', async () => {
    const token = 'pt-secret-token-987';
    const error = await rejection(client({ profileToken: token }).getProfileTraits('sandbox-low-risk'));
    expect(error).toMatchObject({ name: 'UpstreamError', status: 401, retryable: false });
    const { message, detail } = error as UpstreamError;
    const encoded = Buffer.from(`${token}:`).toString('base64');
    for (const text of [message, detail ?? '']) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(encoded);
    }
    expect((error as UpstreamError).requestId).toBeTruthy();
  });

  it('profile 429: retryable with retryAfterMs', async () => {
    emu.rateLimit(1, 2, 'profile');
    const error = await rejection(client().getProfileTraits('sandbox-low-risk'));
    expect(error).toMatchObject({ status: 429, retryable: true, retryAfterMs: 2000 });
  });

  it('times out a hung Profile API as retryable', async () => {
    emu.faults.inject({ method: 'GET', path: '/v1/spaces/', delayMs: 1000 });
    const error = await rejection(client({ profileTimeoutMs: 100 }).getProfileTraits('sandbox-low-risk'));
    expect(error).toMatchObject({ name: 'UpstreamError', retryable: true });
  });
});

describe('Regulations API', () => {
  it('is never called by the client', async () => {
    const segment = client();
    await segment.identify({
      userId: 'sandbox-blocked',
      messageId: 'fg:r:1',
      traits: { suppressed_for_fraud: true },
    });
    await segment.track({
      userId: 'sandbox-blocked',
      messageId: 'fg:r:2',
      event: 'Fraud Suppression Applied',
      properties: {},
    });
    await segment.getProfileTraits('sandbox-blocked');
    await segment.close();
    expect(emu.journal.length).toBeGreaterThan(0);
    expect(emu.journal.filter((e) => /regulation/i.test(e.path))).toEqual([]);
    expect(emu.unmatched).toEqual([]);
  });
});

describe.skipIf(!sharedFixturesPresent)('captured analytics-node requests (shared fixtures)', () => {
  const load = (name: string) => sharedFixture('segment', name);

  /** Replay headers and body as captured; only host and content-length are recomputed for this socket. */
  async function replay(headers: Record<string, string>, body: unknown): Promise<number> {
    const payload = JSON.stringify(body);
    const { host: _host, 'content-length': _length, ...rest } = headers;
    const response = await fetch(`${emu.url}/v1/batch`, { method: 'POST', headers: rest, body: payload });
    await response.arrayBuffer();
    return response.status;
  }

  it('accepts the 3.1.0 batch (body writeKey + Basic) and stores every event', async () => {
    await emu.close();
    emu = await startSegmentEmulator({ writeKey: 'test_write_key' });
    const fixture = load('batch-request.analytics-node-3.1.0.json') as {
      request: { headers: Record<string, string>; body: { batch: { messageId: string }[] } };
    };
    expect(await replay(fixture.request.headers, fixture.request.body)).toBe(200);
    expect(emu.events.map((e) => e.messageId)).toEqual(fixture.request.body.batch.map((e) => e.messageId));
    expect(emu.rejected).toEqual([]);
    expect(emu.profile('user_123')).toMatchObject({ sift_risk_level: 'high', fraud_suppressed: true });
    expect(emu.events.find((e) => e.messageId === 'custom-msg-id-1')).toMatchObject({
      anonymousId: 'anon_xyz',
    });
  });

  it('accepts the 3.0.0 request (no Authorization header, body writeKey only)', async () => {
    await emu.close();
    emu = await startSegmentEmulator({ writeKey: 'test_write_key' });
    const fixture = load('batch-request-headers.analytics-node-3.0.0.json') as {
      request: { headers: Record<string, string>; first_event: { messageId: string } };
    };
    expect(fixture.request.headers['authorization']).toBeUndefined();
    const body = {
      batch: [fixture.request.first_event],
      writeKey: 'test_write_key',
      sentAt: new Date().toISOString(),
    };
    expect(await replay(fixture.request.headers, body)).toBe(200);
    expect(emu.events.map((e) => e.messageId)).toEqual([fixture.request.first_event.messageId]);
  });
});
