import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { verifySiftSignature } from '../../src/clients/sift-client.ts';
import { startSiftEmulator, type SiftEmulator } from '../../src/sandbox/sift-emulator.ts';
import { SIFT_DEMO_USERS } from '../../src/sandbox/sift-demo-data.ts';

let sift: SiftEmulator;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Record<string, unknown>;
}

/** Raw HTTP, so the emulator's own contract is tested, not the client's view of it. */
async function http(
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: string } = {},
) {
  const res = await request(`${sift.url}${path}`, {
    method: method as 'GET',
    headers: init.headers,
    body: init.body,
  });
  const text = await res.body.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    // non-JSON answers are asserted through `text`
  }
  return { status: res.statusCode, headers: res.headers, text, json } satisfies Answer;
}

const basic = (value: string) => ({ authorization: `Basic ${Buffer.from(value).toString('base64')}` });
const event = (fields: Record<string, unknown>) => JSON.stringify({ $api_key: sift.apiKey, ...fields });

beforeAll(async () => {
  sift = await startSiftEmulator({ apiKey: 'k1', accountId: 'acct-1' });
});
afterAll(async () => {
  await sift.close();
});
beforeEach(() => {
  sift.faults.clear();
  sift.clearJournal();
});

describe('auth (§1.2 emulator rule)', () => {
  it('accepts ?api_key, Basic KEY: and Basic KEY, with or without a trailing slash', async () => {
    expect((await http('GET', '/v205/score/sandbox-low-risk?api_key=k1')).status).toBe(200);
    expect((await http('GET', '/v205/score/sandbox-low-risk/', { headers: basic('k1:') })).status).toBe(200);
    expect((await http('GET', '/v205/users/sandbox-low-risk/score', { headers: basic('k1') })).status).toBe(
      200,
    );
  });

  it('answers status 51 with HTTP 400 for a bad key on v20x, 401 on v3, 403 for another account', async () => {
    const v20x = await http('GET', '/v205/score/sandbox-low-risk?api_key=nope');
    expect(v20x.status).toBe(400);
    expect(v20x.json.status).toBe(51);
    expect((await http('GET', '/v3/accounts/acct-1/decisions', { headers: basic('nope:') })).status).toBe(
      401,
    );
    const other = await http('GET', '/v3/accounts/acct-2/decisions', { headers: basic('k1:') });
    expect(other.status).toBe(403);
    expect(other.json.error).toBe('forbidden');
  });
});

describe('events', () => {
  it('parses JSON without Content-Type and echoes the raw body', async () => {
    const body = event({ $type: '$login', $user_id: 'e1' });
    const res = await http('POST', '/v205/events', { body });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 0, error_message: 'OK', request: body });
    expect(typeof res.json.time).toBe('number');
    expect(res.json.score_response).toBeUndefined();
  });

  it.each([
    ['invalid JSON', '{"$type":', 56],
    ['missing $type', JSON.stringify({ $api_key: 'k1', $user_id: 'u' }), 55],
    ['missing $user_id on $login', JSON.stringify({ $api_key: 'k1', $type: '$login' }), 55],
    ['bad $user_id characters', JSON.stringify({ $api_key: 'k1', $type: '$login', $user_id: 'a b' }), 53],
    [
      'float $amount',
      JSON.stringify({
        $api_key: 'k1',
        $type: '$transaction',
        $user_id: 'u',
        $amount: 1.5,
        $currency_code: 'USD',
      }),
      53,
    ],
    [
      '$decline_category without failure',
      JSON.stringify({
        $api_key: 'k1',
        $type: '$transaction',
        $user_id: 'u',
        $amount: 1,
        $currency_code: 'USD',
        $decline_category: '$fraud',
      }),
      53,
    ],
    [
      'unknown reserved field',
      JSON.stringify({ $api_key: 'k1', $type: '$login', $user_id: 'u', $bogus: 1 }),
      105,
    ],
    ['bad key', JSON.stringify({ $api_key: 'nope', $type: '$login', $user_id: 'u' }), 51],
    ['empty body', '', 57],
  ])('%s → status %i on HTTP 400', async (_name, body, status) => {
    const res = await http('POST', '/v205/events', { body });
    expect(res.status).toBe(400);
    expect(res.json.status).toBe(status);
    expect(sift.events.some((e) => e.userId === 'u')).toBe(false);
  });

  it('custom events need $user_id or $session_id', async () => {
    expect(
      (await http('POST', '/v205/events', { body: event({ $type: 'send_money', $session_id: 's1' }) })).json
        .status,
    ).toBe(0);
    expect((await http('POST', '/v205/events', { body: event({ $type: 'send_money' }) })).json.status).toBe(
      55,
    );
  });

  it('return_score gives a stable hash score limited to abuse_types, with the full latest_labels', async () => {
    const first = await http('POST', '/v205/events?return_score=true&abuse_types=payment_abuse,promo_abuse', {
      body: event({ $type: '$create_account', $user_id: 'hash-user' }),
    });
    const sr = first.json.score_response as Record<string, Record<string, { score: number }>>;
    expect(Object.keys(sr.scores ?? {}).sort()).toEqual(['payment_abuse', 'promotion_abuse']);
    expect(sr.workflow_statuses).toEqual([]);
    const other = await startSiftEmulator({ seed: false });
    try {
      await request(`${other.url}/v205/events`, {
        method: 'POST',
        body: JSON.stringify({ $api_key: other.apiKey, $type: '$login', $user_id: 'hash-user' }),
      }).then((r) => r.body.text());
      const res = await request(`${other.url}/v205/score/hash-user?api_key=${other.apiKey}`);
      const again = (await res.body.json()) as { scores: Record<string, { score: number }> };
      expect(again.scores.payment_abuse?.score).toBe(sr.scores?.payment_abuse?.score);
    } finally {
      await other.close();
    }
  });

  it('failed transactions raise payment_abuse', async () => {
    const tx = (status: string) =>
      event({
        $type: '$transaction',
        $user_id: 'tx-user',
        $amount: 100,
        $currency_code: 'USD',
        $transaction_status: status,
      });
    await http('POST', '/v205/events', { body: tx('$success') });
    const before = (await http('GET', '/v205/score/tx-user?api_key=k1')).json.scores as Record<
      string,
      { score: number }
    >;
    await http('POST', '/v205/events', { body: tx('$failure') });
    const after = (await http('GET', '/v205/score/tx-user?api_key=k1')).json.scores as Record<
      string,
      { score: number }
    >;
    expect(after.payment_abuse?.score).toBeGreaterThan(before.payment_abuse?.score ?? 1);
  });

  it('failNextScore splits score_response.status from the top-level status', async () => {
    sift.failNextScore();
    const res = await http('POST', '/v205/events?return_score=true', {
      body: event({ $type: '$login', $user_id: 'e2' }),
    });
    expect(res.json.status).toBe(0);
    expect(res.json.score_response).toEqual({ status: -1, error_message: 'Internal server error.' });
  });
});

describe('scores and labels', () => {
  it('an unknown user is status 54 on HTTP 400', async () => {
    const res = await http('GET', '/v205/users/ghost/score', { headers: basic('k1:') });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({
      status: 54,
      error_message: 'Specified user_id has no scoreable events',
    });
  });

  it('every demo persona is scoreable with the seeded scores', async () => {
    for (const persona of SIFT_DEMO_USERS) {
      const res = await http('GET', `/v205/users/${persona.userId}/score`, { headers: basic('k1:') });
      expect(res.json.entity_id).toBe(persona.userId);
      const scores = res.json.scores as Record<string, { score: number; status: number }>;
      expect(scores.payment_abuse).toMatchObject({ score: persona.scores.payment_abuse?.score, status: 0 });
    }
    const blocked = await http('GET', '/v205/users/sandbox-blocked/score', { headers: basic('k1:') });
    expect(blocked.json.latest_decisions).toMatchObject({
      payment_abuse: { id: 'block_user_payment_abuse', category: 'block', source: 'MANUAL_REVIEW' },
    });
  });

  it('accepts promo_abuse on labels, reports promotion_abuse, and unlabels with 204', async () => {
    const body = JSON.stringify({
      $api_key: 'k1',
      $is_bad: true,
      $abuse_type: 'PROMO_ABUSE',
      $type: '$label',
    });
    const res = await http('POST', '/v205/users/sandbox-low-risk/labels', { body });
    expect(res.json).toMatchObject({ status: 0, request: body });
    const score = await http('GET', '/v205/score/sandbox-low-risk?api_key=k1&abuse_types=payment_abuse');
    expect(Object.keys(score.json.scores as object)).toEqual(['payment_abuse']);
    expect(score.json.latest_labels).toMatchObject({ promotion_abuse: { is_bad: true } });
    const del = await http('DELETE', '/v205/users/sandbox-low-risk/labels?api_key=k1&abuse_type=promo_abuse');
    expect(del.status).toBe(204);
    expect(del.text).toBe('');
    expect(sift.labels('sandbox-low-risk')).toEqual({});
  });

  it('a label without $is_bad is status 55', async () => {
    const res = await http('POST', '/v205/users/u/labels', { body: JSON.stringify({ $api_key: 'k1' }) });
    expect(res.json.status).toBe(55);
  });
});

describe('decisions (v3)', () => {
  const auth = () => ({ ...basic('k1:'), 'content-type': 'application/json' });

  it('applies an order decision and reports it on the order path', async () => {
    const res = await http('POST', '/v3/accounts/acct-1/users/u9/orders/o%2F1/decisions', {
      headers: auth(),
      body: JSON.stringify({
        decision_id: 'cancel_order_payment_abuse',
        source: 'automated_rule',
        time: 1700000000000,
      }),
    });
    expect(res.json).toEqual({
      entity: { id: 'o/1', type: 'order' },
      decision: { id: 'cancel_order_payment_abuse' },
      time: 1700000000000,
    });
    const status = await http('GET', '/v3/accounts/acct-1/orders/o%2F1/decisions', { headers: auth() });
    expect(status.json).toEqual({
      decisions: {
        payment_abuse: {
          decision: { id: 'cancel_order_payment_abuse' },
          time: 1700000000000,
          webhook_succeeded: false,
        },
      },
    });
  });

  it('rejects a decision for the wrong entity type, a missing source and an unknown id', async () => {
    const post = (body: object) =>
      http('POST', '/v3/accounts/acct-1/users/u9/decisions', { headers: auth(), body: JSON.stringify(body) });
    const wrong = await post({ decision_id: 'cancel_order_payment_abuse', source: 'AUTOMATED_RULE' });
    expect(wrong.status).toBe(400);
    expect(wrong.json.issues).toHaveProperty('decision_id');
    expect((await post({ decision_id: 'looks_ok_payment_abuse' })).json.issues).toHaveProperty('source');
    const unknown = await post({ decision_id: 'nope', source: 'AUTOMATED_RULE' });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ error: 'not_found', description: 'No decision with id nope' });
  });

  it('uses promo_abuse as the key in decision-status maps', async () => {
    sift.decisionCatalogue.push({
      id: 'reject_promo_promo_abuse',
      name: 'Reject promo',
      description: '',
      entity_type: 'user',
      abuse_type: 'promotion_abuse',
      category: 'block',
      webhook_url: '',
      created_at: 1,
      created_by: 'x',
      updated_at: 1,
      updated_by: 'x',
    });
    await http('POST', '/v3/accounts/acct-1/users/promo-user/decisions', {
      headers: auth(),
      body: JSON.stringify({ decision_id: 'reject_promo_promo_abuse', source: 'CHARGEBACK' }),
    });
    const status = await http('GET', '/v3/accounts/acct-1/users/promo-user/decisions', { headers: auth() });
    expect(Object.keys(status.json.decisions as object)).toEqual(['promo_abuse']);
  });

  it('rate limits in the v3 shape on v3 routes and the v20x shape elsewhere', async () => {
    sift.rateLimit(2, { retryAfterSeconds: 3 });
    const v3 = await http('GET', '/v3/accounts/acct-1/decisions', { headers: auth() });
    expect(v3.status).toBe(429);
    expect(v3.headers['retry-after']).toBe('3');
    expect(v3.json.error).toBe('rate_limited');
    const v20x = await http('GET', '/v205/score/sandbox-low-risk?api_key=k1');
    expect(v20x.status).toBe(429);
    expect(v20x.json.status).toBe(60);
    expect((await http('GET', '/v205/score/sandbox-low-risk?api_key=k1')).status).toBe(200);
  });
});

describe('console decisions and webhooks', () => {
  let receiver: Server;
  let received: { body: string; signature: string | undefined }[];
  let hook: SiftEmulator;

  beforeAll(async () => {
    received = [];
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const sig = req.headers['x-sift-science-signature'];
        received.push({
          body: Buffer.concat(chunks).toString('utf8'),
          signature: Array.isArray(sig) ? sig[0] : sig,
        });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as AddressInfo).port;
    hook = await startSiftEmulator({
      webhook: { url: `http://127.0.0.1:${port}/hook`, signatureKey: 'sig-key' },
    });
  });
  afterAll(async () => {
    await hook.close();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  });

  it('sends a signed webhook and records webhook_succeeded', async () => {
    const result = await hook.consoleApplyDecision({
      decisionId: 'block_user_payment_abuse',
      userId: 'sandbox-high-risk',
      analyst: 'reviewer@example.com',
    });
    expect(result.webhook?.succeeded).toBe(true);
    const [delivery] = received;
    expect(JSON.parse(delivery?.body ?? '{}')).toEqual({
      entity: { type: 'user', id: 'sandbox-high-risk' },
      decision: { id: 'block_user_payment_abuse' },
      time: result.time,
    });
    expect(delivery?.signature).toMatch(/^sha256=[0-9a-f]{64}$/);
    expect(verifySiftSignature(Buffer.from(delivery?.body ?? ''), delivery?.signature, ['sig-key'])).toBe(
      true,
    );
    expect(hook.decisionsOf('sandbox-high-risk').payment_abuse).toMatchObject({
      source: 'MANUAL_REVIEW',
      webhook_succeeded: true,
    });
  });
});

describe('strictness', () => {
  it('answers 501 for unknown routes and records them', async () => {
    const res = await http('GET', '/v205/rescore/u1?api_key=k1');
    expect(res.status).toBe(501);
    expect(sift.unmatched).toHaveLength(1);
    expect(sift.unmatched[0]?.path).toBe('/v205/rescore/u1');
  });

  it('seed: false starts empty', async () => {
    const empty = await startSiftEmulator({ seed: false });
    try {
      expect(empty.decisionCatalogue).toEqual([]);
      const res = await request(`${empty.url}/v205/score/sandbox-high-risk?api_key=${empty.apiKey}`);
      expect(((await res.body.json()) as { status: number }).status).toBe(54);
    } finally {
      await empty.close();
    }
  });
});
