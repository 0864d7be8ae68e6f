/**
 * The Sift toolset through a real MCP client against the Sift emulator: exactly what reached
 * Sift (bodies, micros, paired custom events), bad input never reaching it, the decisions cache,
 * per-category approval policy for apply_decision, unlabel; and property-based tests of the
 * decimal ↔ micros conversion.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  currencyDecimals,
  fromMicros,
  maxFractionDigits,
  toMicros,
  toSiftMicros,
} from '../../tools/money.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  const current = env as TestEnv | undefined;
  // The money tests start no env: never close one twice.
  env = undefined as unknown as TestEnv;
  await current?.close();
});

const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };
const eventBodies = () =>
  env.sandbox.sift.requests('POST', '/v205/events').map((r) => r.body as Record<string, unknown>);
const decisionPosts = () => env.sandbox.sift.requests('POST', '/v3/accounts/:acct/users/:uid/decisions');

describe('send_sift_event', () => {
  it('sends a deposit as $transaction with exact micros, and a later status update reusing $transaction_id', async () => {
    env = await setup();
    const pending = await env.callTool('send_sift_event', {
      event: {
        event_type: 'transaction',
        user_id: 'wallet-user-1',
        transaction_type: 'deposit',
        transaction_status: 'pending',
        transaction_id: 'dep-719637215',
        amount: '0.50',
        currency: 'usd',
        current_balance: '0.5',
        new_balance: '1.00',
        payment_method: { type: 'ach_debit' },
        session_id: 'sess-123',
        ip: '128.148.1.135',
      },
    });
    expect(pending.isError).toBe(false);
    const done = await env.callTool('send_sift_event', {
      event: {
        event_type: 'transaction',
        user_id: 'wallet-user-1',
        transaction_type: 'deposit',
        transaction_status: 'success',
        transaction_id: 'dep-719637215',
        amount: '0.50',
        currency: 'USD',
      },
    });
    expect(done.isError).toBe(false);
    const [first, second] = eventBodies();
    // Same values as shared/fixtures/sift/event-request-transaction-deposit.json.
    expect(first).toMatchObject({
      $type: '$transaction',
      $user_id: 'wallet-user-1',
      $transaction_type: '$deposit',
      $transaction_status: '$pending',
      $transaction_id: 'dep-719637215',
      $amount: 500000,
      $currency_code: 'USD',
      $current_balance: 500000,
      $new_balance: 1000000,
      $payment_method: { $payment_type: '$ach_debit' },
      $session_id: 'sess-123',
      $ip: '128.148.1.135',
    });
    expect(first?.$api_key).toBe(env.sandbox.sift.apiKey);
    expect(second).toMatchObject({
      $transaction_status: '$success',
      $transaction_id: 'dep-719637215',
      $amount: 500000,
    });
    expect(done.output.events_sent).toEqual([
      {
        sift_type: '$transaction',
        user_id: 'wallet-user-1',
        transaction_id: 'dep-719637215',
        transaction_status: 'success',
        amount: '0.50',
        amount_micros: 500000,
        currency_code: 'USD',
      },
    ]);
    // Neither the API key nor the personal data we sent is echoed back.
    const text = JSON.stringify(pending.raw);
    expect(text).not.toContain(env.sandbox.sift.apiKey);
    expect(text).not.toContain('128.148.1.135');
    expect(text).not.toContain('sess-123');
  });

  it('the audit keeps custom-field names but not their values, nor the device id; Sift gets them all', async () => {
    env = await setup();
    const custom = { home_town: 'Springfield', national_id: 'AB123456C', spouse: 'Marge Simpson' };
    // A yes/no fact about a person is as personal as any other value of theirs.
    const flags = { hiv_positive: true, on_benefits: false };
    const result = await env.callTool('send_sift_event', {
      event: {
        event_type: 'create_account',
        user_id: 'wallet-user-3',
        app: { device_unique_id: 'A1B2-C3D4-E5F6', device_model: 'iPhone' },
        custom_fields: { ...custom, ...flags },
      },
    });
    expect(result.isError).toBe(false);
    expect(eventBodies()[0]).toMatchObject({
      ...custom,
      ...flags,
      $app: { $device_unique_id: 'A1B2-C3D4-E5F6' },
    });

    const records = (await storedAuditRecords(env.config, env.runtime.audit)).filter(
      (r) => r.tool === 'send_sift_event',
    );
    expect(records.map((r) => r.event)).toEqual(['intent', 'executed']);
    for (const record of records) {
      const args = record.args_redacted as { event: Record<string, Record<string, unknown>> };
      // An auditor sees what was sent, not the values.
      expect(Object.keys(args.event.custom_fields!).sort()).toEqual([
        'hiv_positive',
        'home_town',
        'national_id',
        'on_benefits',
        'spouse',
      ]);
      // Masked alike, true or false: a tag of one of two values would tell them apart.
      for (const flag of Object.keys(flags))
        expect(typeof args.event.custom_fields![flag]).not.toBe('boolean');
      expect(args.event.custom_fields!.hiv_positive).toEqual(args.event.custom_fields!.on_benefits);
      expect(args.event.app).toMatchObject({ device_model: 'iPhone' });
      const text = JSON.stringify(args);
      for (const value of [...Object.values(custom), 'A1B2-C3D4-E5F6']) expect(text).not.toContain(value);
    }
  });

  it('withdrawal, JPY and BTC amounts convert exactly; failure carries the decline category', async () => {
    env = await setup();
    const send = (amount: string, currency: string, extra: Record<string, unknown> = {}) =>
      env.callTool('send_sift_event', {
        event: {
          event_type: 'transaction',
          user_id: 'wallet-user-2',
          transaction_type: 'withdrawal',
          transaction_status: 'success',
          transaction_id: `wd-${currency}`,
          amount,
          currency,
          ...extra,
        },
      });
    expect((await send('1500', 'JPY')).isError).toBe(false);
    expect((await send('0.000123', 'BTC')).isError).toBe(false);
    expect(
      (await send('506.79', 'EUR', { transaction_status: 'failure', decline_category: 'insufficient_funds' }))
        .isError,
    ).toBe(false);
    const bodies = eventBodies();
    expect(bodies.map((b) => [b.$amount, b.$currency_code])).toEqual([
      [1_500_000_000, 'JPY'],
      [123, 'BTC'],
      [506_790_000, 'EUR'],
    ]);
    expect(bodies[2]).toMatchObject({
      $transaction_status: '$failure',
      $decline_category: '$insufficient_funds',
    });
  });

  it('a wallet transfer is one call and two Sift events: send_money and receive_money', async () => {
    env = await setup();
    const result = await env.callTool('send_sift_event', {
      event: {
        event_type: 'wallet_transfer',
        sender_user_id: 'alice-wallet',
        recipient_user_id: 'bob-wallet',
        transfer_id: 'tr-42',
        amount: '25.10',
        currency: 'GBP',
        transfer_status: 'success',
        ip: '10.1.2.3',
      },
    });
    expect(result.isError).toBe(false);
    const bodies = eventBodies();
    expect(bodies).toHaveLength(2);
    expect(bodies[0]).toMatchObject({
      $type: 'send_money',
      $user_id: 'alice-wallet',
      recipient_user_id: 'bob-wallet',
      transfer_id: 'tr-42',
      send_amount: 25_100_000,
      currency_code: 'GBP',
      transfer_status: 'success',
      $ip: '10.1.2.3',
    });
    expect(bodies[1]).toMatchObject({
      $type: 'receive_money',
      $user_id: 'bob-wallet',
      sender_user_id: 'alice-wallet',
      transfer_id: 'tr-42',
      receive_amount: 25_100_000,
    });
    expect(bodies[1]).not.toHaveProperty('$ip');
    expect((result.output.events_sent as { sift_type: string }[]).map((e) => e.sift_type)).toEqual([
      'send_money',
      'receive_money',
    ]);
  });

  it('if receive_money fails after send_money reached Sift, the error says so and not to repeat the call', async () => {
    env = await setup();
    const sift = env.runtime.clients.sift;
    const original = sift.sendEvent.bind(sift);
    let n = 0;
    vi.spyOn(sift, 'sendEvent').mockImplementation((event, options) => {
      // Events are never retried, so one 503 on the second event is its final answer.
      if (++n === 2) env.sandbox.sift.faults.inject({ method: 'POST', path: '/v205/events', status: 503 });
      return original(event, options);
    });
    const result = await env.callTool('send_sift_event', {
      event: {
        event_type: 'wallet_transfer',
        sender_user_id: 'alice-wallet',
        recipient_user_id: 'bob-wallet',
        transfer_id: 'tr-43',
        amount: '1',
        currency: 'USD',
        transfer_status: 'pending',
      },
    });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('UPSTREAM_ERROR');
    expect(result.error.message).toContain('send_money reached Sift but receive_money failed');
    expect(result.error.message).toContain('Do not repeat');
    expect(env.sandbox.sift.events.map((e) => e.type)).toEqual(['send_money']);
    expect(env.sandbox.sift.requests('POST', '/v205/events')).toHaveLength(2);
  });

  it('create_account, update_account (custom fields), login and logout map to Sift fields', async () => {
    env = await setup();
    const calls = [
      {
        event_type: 'create_account',
        user_id: 'wallet-user-3',
        email: 'bill@example.com',
        verification_phone_number: '+14155550123',
        account_types: ['wallet'],
        social_sign_on_type: 'google',
        account_state: 'active',
        sms_verification_status: 'pending',
        user_agent: 'Mozilla/5.0',
      },
      {
        event_type: 'update_account',
        user_id: 'wallet-user-3',
        account_state: 'frozen',
        sms_verification_status: 'verified',
        credit_verification_status: 'passed',
        changed_password: true,
        custom_fields: { kyc_level: 2 },
      },
      {
        event_type: 'login',
        user_id: 'wallet-user-3',
        login_status: 'failure',
        failure_reason: 'wrong_password',
      },
      { event_type: 'logout', user_id: 'wallet-user-3', app: { os: 'iOS', app_name: 'Wallet' } },
    ];
    for (const event of calls) {
      const result = await env.callTool('send_sift_event', { event });
      expect(result.isError, JSON.stringify(result.error)).toBe(false);
      expect(JSON.stringify(result.raw)).not.toContain('bill@example.com');
    }
    const [create, update, login, logout] = eventBodies();
    expect(create).toMatchObject({
      $type: '$create_account',
      $user_email: 'bill@example.com',
      $verification_phone_number: '+14155550123',
      $account_types: ['wallet'],
      $social_sign_on_type: '$google',
      $browser: { $user_agent: 'Mozilla/5.0' },
      account_state: 'active',
      sms_verification_status: 'pending',
    });
    expect(update).toMatchObject({
      $type: '$update_account',
      $changed_password: true,
      account_state: 'frozen',
      sms_verification_status: 'verified',
      credit_verification_status: 'passed',
      kyc_level: 2,
    });
    expect(login).toMatchObject({
      $type: '$login',
      $login_status: '$failure',
      $failure_reason: '$wrong_password',
    });
    expect(logout).toMatchObject({ $type: '$logout', $app: { $os: 'iOS', $app_name: 'Wallet' } });
  });

  it('return_score returns the score in the same call; a failed score part is a field, not an error', async () => {
    env = await setup();
    const event = { event_type: 'login', user_id: 'sandbox-high-risk', login_status: 'success' };
    const scored = await env.callTool('send_sift_event', { event, return_score: true });
    expect(scored.isError).toBe(false);
    expect(scored.output.score).toMatchObject({
      highest: { abuse_type: 'payment_abuse', risk_band: 'critical' },
    });
    expect(scored.output.score_error).toBeNull();
    expect(env.sandbox.sift.requests('POST', '/v205/events')[0]?.query.return_score).toBe('true');

    env.sandbox.sift.failNextScore(1);
    const partial = await env.callTool('send_sift_event', { event, return_score: true });
    expect(partial.isError).toBe(false);
    expect(partial.output.score).toBeNull();
    expect(partial.output.score_error).toMatchObject({ sift_status: -1 });
    expect(env.sandbox.sift.events).toHaveLength(2);
  });

  it('bad input names the field and nothing reaches Sift', async () => {
    env = await setup();
    const cases: [Record<string, unknown>, string[]][] = [
      [
        {
          event_type: 'transaction',
          user_id: 'has space',
          transaction_type: 'deposit',
          transaction_status: 'success',
          transaction_id: 't1',
          amount: '10.001',
          currency: 'USD',
        },
        ['event.user_id', 'event.amount', 'USD allows at most 2'],
      ],
      [
        {
          event_type: 'transaction',
          user_id: 'u1',
          transaction_type: 'deposit',
          transaction_status: 'success',
          transaction_id: 't1',
          amount: '100.5',
          currency: 'JPY',
        },
        ['event.amount', 'JPY allows at most 0'],
      ],
      [
        {
          event_type: 'transaction',
          user_id: 'u1',
          transaction_type: 'deposit',
          transaction_status: 'success',
          transaction_id: 't1',
          amount: '0.00000001',
          currency: 'BTC',
        },
        ['event.amount', 'micros'],
      ],
      [
        {
          event_type: 'transaction',
          user_id: 'u1',
          transaction_type: 'deposit',
          transaction_status: 'success',
          transaction_id: 't1',
          amount: '1e3',
          currency: 'USD',
          decline_category: 'fraud',
          transfer_recipient_user_id: 'u2',
        },
        ['event.amount', 'event.decline_category', 'event.transfer_recipient_user_id'],
      ],
      [
        {
          event_type: 'wallet_transfer',
          sender_user_id: 'u1',
          recipient_user_id: 'u1',
          transfer_id: 't1',
          amount: '-5',
          currency: 'USD',
          transfer_status: 'success',
        },
        ['event.recipient_user_id', 'event.amount'],
      ],
      [
        { event_type: 'login', user_id: 'u1', login_status: 'success', failure_reason: 'wrong_password' },
        ['event.failure_reason'],
      ],
      [{ event_type: 'logout', user_id: 'u1', $ip: '1.2.3.4' }, ['$ip']],
      [{ event_type: 'chargeback', user_id: 'u1' }, ['event.event_type']],
      [{ event_type: 'update_account', user_id: 'u1', custom_fields: { $bad: 1 } }, ['event.custom_fields']],
    ];
    for (const [event, fields] of cases) {
      const result = await env.callTool('send_sift_event', { event });
      expect(result.error?.code, JSON.stringify(event)).toBe('INVALID_INPUT');
      for (const field of fields) expect(result.error.message).toContain(field);
    }
    expect(env.sandbox.sift.journal).toHaveLength(0);
  });
});

describe('list_sift_decisions and get_user_decisions', () => {
  it('lists the catalogue, filters by category, and serves a repeat within the TTL from cache', async () => {
    env = await setup();
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-03-01T10:00:00Z'));
    const first = await env.callTool('list_sift_decisions', { entity_type: 'user' });
    expect(first.isError).toBe(false);
    expect(first.output.cached).toBe(false);
    const decisions = first.output.decisions as {
      decision_id: string;
      category: string;
      entity_type: string;
    }[];
    expect(decisions.map((d) => d.decision_id)).toContain('block_user_payment_abuse');
    expect(decisions.every((d) => d.entity_type === 'user')).toBe(true);
    const list = () => env.sandbox.sift.requests('GET', '/v3/accounts/:acct/decisions');
    expect(list()).toHaveLength(1);

    vi.setSystemTime(new Date('2026-03-01T10:00:59Z'));
    const second = await env.callTool('list_sift_decisions', { entity_type: 'user', category: 'block' });
    expect(second.output.cached).toBe(true);
    expect((second.output.decisions as { category: string }[]).every((d) => d.category === 'block')).toBe(
      true,
    );
    expect(list()).toHaveLength(1);

    // Another filter is another cache entry; after the TTL the catalogue is read again.
    await env.callTool('list_sift_decisions', { abuse_types: ['account_abuse'] });
    expect(list()).toHaveLength(2);
    vi.setSystemTime(new Date('2026-03-01T10:01:01Z'));
    const third = await env.callTool('list_sift_decisions', { entity_type: 'user' });
    expect(third.output.cached).toBe(false);
    expect(list()).toHaveLength(3);
  });

  it('keeps a bounded number of filters cached, dropping the least recently fetched', async () => {
    env = await setup({ config: { rate_limits: { read: { capacity: 1000, per_minute: 1000 } } } });
    // A still clock: every entry stays within its TTL, so only the bound can drop one.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-03-01T10:00:00Z'));
    const list = () => env.sandbox.sift.requests('GET', '/v3/accounts/:acct/decisions');
    const types = ['payment_abuse', 'account_abuse', 'content_abuse', 'promotion_abuse', 'account_takeover'];
    // Distinct filters: every entity type with every non-empty subset of five abuse types (5 × 31).
    const filters = ['user', 'order', 'session', 'content', undefined].flatMap((entity_type) =>
      Array.from({ length: 31 }, (_, mask) => ({
        ...(entity_type ? { entity_type } : {}),
        abuse_types: types.filter((_, bit) => ((mask + 1) >> bit) & 1),
      })),
    );
    for (const filter of filters) {
      const result = await env.callTool('list_sift_decisions', filter);
      expect(result.output.cached).toBe(false);
    }
    expect(list()).toHaveLength(filters.length);
    const newest = await env.callTool('list_sift_decisions', filters.at(-1)!);
    expect(newest.output.cached).toBe(true);
    const oldest = await env.callTool('list_sift_decisions', filters[0]!);
    expect(oldest.output.cached).toBe(false);
  });

  it('get_user_decisions shows the current decision with its catalogue category', async () => {
    env = await setup();
    const result = await env.callTool('get_user_decisions', { user_id: 'sandbox-blocked' });
    expect(result.isError).toBe(false);
    expect(result.output.decisions).toEqual([
      expect.objectContaining({
        abuse_type: 'payment_abuse',
        decision_id: 'block_user_payment_abuse',
        category: 'block',
      }),
    ]);
    const none = await env.callTool('get_user_decisions', { user_id: 'sandbox-low-risk' });
    expect(none.output.decisions).toEqual([]);
  });

  it('bad input names the field and nothing reaches Sift', async () => {
    env = await setup();
    const a = await env.callTool('list_sift_decisions', { entity_type: 'account', category: 'ban' });
    expect(a.error.code).toBe('INVALID_INPUT');
    for (const f of ['entity_type', 'category']) expect(a.error.message).toContain(f);
    const b = await env.callTool('get_user_decisions', { user_id: 'no/slash' });
    expect(b.error.code).toBe('INVALID_INPUT');
    expect(b.error.message).toContain('user_id');
    expect(env.sandbox.sift.journal).toHaveLength(0);
  });
});

describe('apply_decision', () => {
  const BLOCK = {
    user_id: 'sandbox-high-risk',
    decision_id: 'block_user_payment_abuse',
    description: 'card testing from one device',
  };

  it('BLOCK needs approval even when the tool is configured "none"; nothing reaches Sift meanwhile', async () => {
    env = await setup({ config: { approvals: { tools: { apply_decision: 'none' } } } });
    const result = await env.callTool('apply_decision', BLOCK);
    expect(result.error.code).toBe('APPROVAL_PENDING');
    expect(decisionPosts()).toHaveLength(0);
    const stored = await env.runtime.approvals.get(String(result.error.approval_id));
    // The floor is approval, and a BLOCK is never approved by its requester: four-eyes.
    expect(stored).toMatchObject({ mode: 'four_eyes', target: 'sift_user:sandbox-high-risk' });
    expect(stored?.evidence).toMatchObject({
      decision: { id: 'block_user_payment_abuse', category: 'block' },
      abuse_type: 'payment_abuse',
      score: { risk_band: 'critical' },
    });
  });

  it('ACCEPT with policy none executes at once with MANUAL_REVIEW and the principal as analyst', async () => {
    env = await setup({ config: { approvals: { tools: { 'apply_decision:accept': 'none' } } } });
    const result = await env.callTool('apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'looks_ok_payment_abuse',
      description: 'customer verified by phone',
    });
    expect(result.isError, JSON.stringify(result.error)).toBe(false);
    expect(result.output).toMatchObject({
      category: 'accept',
      source: 'MANUAL_REVIEW',
      analyst: ANALYST.id,
      abuse_type: 'payment_abuse',
    });
    const posts = decisionPosts();
    expect(posts).toHaveLength(1);
    expect(posts[0]?.body).toEqual({
      decision_id: 'looks_ok_payment_abuse',
      source: 'MANUAL_REVIEW',
      analyst: ANALYST.id,
      description: 'customer verified by phone',
    });
    expect(env.sandbox.sift.decisionsOf('sandbox-watch').payment_abuse).toMatchObject({
      id: 'looks_ok_payment_abuse',
      source: 'MANUAL_REVIEW',
    });

    // WATCH is not configured: it falls back to the destructive default (approval).
    const watch = await env.callTool('apply_decision', {
      user_id: 'sandbox-low-risk',
      decision_id: 'watch_user_payment_abuse',
      description: 'new device and new card',
    });
    expect(watch.error.code).toBe('APPROVAL_PENDING');
  });

  it('four-eyes for BLOCK: the requester cannot approve, another approver can, then it runs once', async () => {
    env = await setup({ config: { approvals: { tools: { 'apply_decision:block': 'four_eyes' } } } });
    const result = await env.callTool('apply_decision', BLOCK);
    expect(result.error.code).toBe('APPROVAL_PENDING');
    const id = String(result.error.approval_id);
    expect((await env.runtime.approvals.get(id))?.mode).toBe('four_eyes');
    await expect(
      env.runtime.desk.decide(id, { approve: true, approver: { ...ANALYST, role: 'approver' } }),
    ).rejects.toThrow(/[Ff]our-eyes/);
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(id))?.state).toBe('executed');
    expect(decisionPosts()).toHaveLength(1);
    expect(decisionPosts()[0]?.body).toMatchObject({ source: 'MANUAL_REVIEW', analyst: ANALYST.id });
  });

  it('an unknown decision id or a non-user decision is INVALID_INPUT naming decision_id; nothing applied', async () => {
    env = await setup({ config: { approvals: { tools: { apply_decision: 'none' } } } });
    const unknown = await env.callTool('apply_decision', { ...BLOCK, decision_id: 'make_believe' });
    expect(unknown.error.code).toBe('INVALID_INPUT');
    expect(unknown.error.message).toContain('decision_id');
    const order = await env.callTool('apply_decision', {
      ...BLOCK,
      decision_id: 'cancel_order_payment_abuse',
    });
    expect(order.error.code).toBe('INVALID_INPUT');
    expect(order.error.message).toContain('order decision');
    const bad = await env.callTool('apply_decision', {
      user_id: 'x',
      decision_id: 'a b',
      description: 'no',
      analyst: 'me',
    });
    expect(bad.error.code).toBe('INVALID_INPUT');
    for (const f of ['decision_id', 'description', 'analyst']) expect(bad.error.message).toContain(f);
    expect(decisionPosts()).toHaveLength(0);
    expect(await env.runtime.approvals.list({ states: ['pending'] })).toHaveLength(0);
  });
});

describe('remove_label', () => {
  it('needs approval like apply_label, then DELETEs the label for that abuse type', async () => {
    env = await setup();
    const args = {
      user_id: 'sandbox-high-risk',
      abuse_type: 'payment_abuse',
      reason: 'label applied to the wrong user',
    };
    const result = await env.callTool('remove_label', args);
    expect(result.error.code).toBe('APPROVAL_PENDING');
    const deletes = () => env.sandbox.sift.requests('DELETE', '/v205/users/:id/labels');
    expect(deletes()).toHaveLength(0);
    await env.runtime.desk.decide(String(result.error.approval_id), { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(deletes()).toHaveLength(1);
    expect(deletes()[0]?.query).toMatchObject({ abuse_type: 'payment_abuse' });
  });

  it('with policy none it runs at once; bad input names the field', async () => {
    env = await setup({ config: { approvals: { tools: { remove_label: 'none' } } } });
    const ok = await env.callTool('remove_label', {
      user_id: 'sandbox-blocked',
      abuse_type: 'payment_abuse',
      reason: 'wrong user',
    });
    expect(ok.isError).toBe(false);
    expect(ok.output).toMatchObject({
      user_id: 'sandbox-blocked',
      abuse_type: 'payment_abuse',
      requested_by: ANALYST.id,
    });
    env.sandbox.sift.journal.length = 0;
    const bad = await env.callTool('remove_label', {
      user_id: 'sandbox-blocked',
      abuse_type: 'fraud',
      reason: '',
    });
    expect(bad.error.code).toBe('INVALID_INPUT');
    for (const f of ['abuse_type', 'reason']) expect(bad.error.message).toContain(f);
    expect(env.sandbox.sift.journal).toHaveLength(0);
  });
});

describe('dry runs write nothing', () => {
  it('send_sift_event, apply_decision and remove_label report the plan without reaching Sift writes', async () => {
    env = await setup();
    const event = await env.callTool('send_sift_event', {
      dry_run: true,
      event: {
        event_type: 'wallet_transfer',
        sender_user_id: 'alice-wallet',
        recipient_user_id: 'bob-wallet',
        transfer_id: 'tr-9',
        amount: '3.5',
        currency: 'USD',
        transfer_status: 'success',
      },
    });
    expect(event.isError, JSON.stringify(event.error)).toBe(false);
    expect(event.output).toMatchObject({
      dry_run: true,
      changes: {
        events: [{ sift_type: 'send_money', amount_micros: 3_500_000 }, { sift_type: 'receive_money' }],
      },
    });
    const decision = await env.callTool('apply_decision', {
      dry_run: true,
      user_id: 'sandbox-blocked',
      decision_id: 'looks_ok_payment_abuse',
      description: 'cleared after review',
    });
    expect(decision.output).toMatchObject({
      dry_run: true,
      approval_required: 'four_eyes',
      current: { payment_abuse: { decision_id: 'block_user_payment_abuse' } },
      changes: { payment_abuse: { decision_id: 'looks_ok_payment_abuse', category: 'accept' } },
    });
    const unlabel = await env.callTool('remove_label', {
      dry_run: true,
      user_id: 'sandbox-low-risk',
      abuse_type: 'payment_abuse',
      reason: 'just checking',
    });
    expect(unlabel.output).toMatchObject({ dry_run: true, current: { payment_abuse: null } });
    expect(env.sandbox.sift.requests('POST', '/v205/events')).toHaveLength(0);
    expect(decisionPosts()).toHaveLength(0);
    expect(env.sandbox.sift.requests('DELETE', '/v205/users/:id/labels')).toHaveLength(0);
    expect(await env.runtime.approvals.list({ states: ['pending'] })).toHaveLength(0);
  });
});

describe('money: decimal strings ↔ Sift micros (property-based)', () => {
  const CURRENCIES = ['USD', 'EUR', 'JPY', 'KRW', 'KWD', 'BHD', 'CLF', 'BTC', 'ETH', 'USDT'];
  const currencyArb = fc.constantFrom(...CURRENCIES);

  /** A canonical decimal string with exactly `digits` decimals, and the micros it must map to. */
  const amountIn = (currency: string) => {
    const digits = maxFractionDigits(currency)!;
    return fc
      .tuple(
        fc.bigInt({ min: 0n, max: 9_000_000_000n }),
        fc.bigInt({ min: 0n, max: 10n ** BigInt(digits) - 1n }),
      )
      .map(([whole, frac]) => ({
        text: digits > 0 ? `${whole}.${frac.toString().padStart(digits, '0')}` : `${whole}`,
        micros: whole * 1_000_000n + frac * 10n ** BigInt(6 - digits),
      }));
  };

  it('string → micros → string is the identity on canonical amounts, for every currency', () => {
    fc.assert(
      fc.property(
        currencyArb.chain((c) => fc.tuple(fc.constant(c), amountIn(c))),
        ([currency, { text, micros }]) => {
          const m = toMicros(text, currency);
          expect(m).toEqual({ ok: true, value: micros });
          expect(fromMicros(micros, currency)).toEqual({ ok: true, value: text });
        },
      ),
    );
  });

  it('micros → string → micros is the identity for every representable micros value', () => {
    fc.assert(
      fc.property(currencyArb, fc.bigInt({ min: -(10n ** 18n), max: 10n ** 18n }), (currency, raw) => {
        const step = 10n ** BigInt(6 - maxFractionDigits(currency)!);
        const micros = raw - (raw % step);
        const text = fromMicros(micros, currency);
        expect(text.ok).toBe(true);
        if (text.ok) expect(toMicros(text.value, currency)).toEqual({ ok: true, value: micros });
      }),
    );
  });

  it('trailing zeros and leading zeros do not change the value; no float drift (0.1 + 0.2 style)', () => {
    fc.assert(
      fc.property(fc.nat({ max: 1_000_000 }), fc.nat({ max: 99 }), (whole, cents) => {
        const plain = toMicros(`${whole}.${String(cents).padStart(2, '0')}`, 'USD');
        const padded = toMicros(`000${whole}.${String(cents).padStart(2, '0')}`, 'EUR');
        expect(plain).toEqual(padded);
        expect(plain).toEqual({ ok: true, value: BigInt(whole) * 1_000_000n + BigInt(cents) * 10_000n });
      }),
    );
    expect(toMicros('0.29', 'USD')).toEqual({ ok: true, value: 290_000n }); // 0.29 * 1e6 = 290000.00000000006 in floats
    expect(toMicros('1.005', 'KWD')).toEqual({ ok: true, value: 1_005_000n });
  });

  it('rejects more decimals than the currency allows, and BTC/ETH finer than one micro', () => {
    fc.assert(
      fc.property(currencyArb, fc.integer({ min: 1, max: 4 }), fc.nat(), (currency, extra, whole) => {
        const decimals = currencyDecimals(currency)!;
        const tooMany = Math.min(decimals, 6) + extra;
        const text = `${whole}.${'1'.repeat(tooMany)}`;
        const result = toMicros(text, currency);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.reason).toMatch(decimals < tooMany ? /allows at most/ : /micros/);
      }),
    );
    expect(toMicros('0.00000001', 'BTC')).toMatchObject({
      ok: false,
      reason: expect.stringContaining('micros'),
    });
    expect(toMicros('0.000001', 'BTC')).toEqual({ ok: true, value: 1n });
    expect(toMicros('5', 'JPY')).toEqual({ ok: true, value: 5_000_000n });
    expect(toMicros('5.0', 'JPY')).toMatchObject({ ok: false });
  });

  it('refuses malformed strings and values a JSON number cannot carry exactly', () => {
    for (const bad of ['', '1e6', '1,000.00', ' 1', '1.', '.5', '+1', '0x10', 'NaN', '1.2.3']) {
      expect(toMicros(bad, 'USD').ok, bad).toBe(false);
    }
    expect(toSiftMicros('9007199254.740991', 'USD').ok).toBe(false); // more than 2 decimals
    expect(toSiftMicros('9007199254.74', 'USD')).toEqual({ ok: true, value: 9_007_199_254_740_000 });
    expect(toSiftMicros('9007199255', 'USD').ok).toBe(false);
    expect(toMicros('10', 'ZZZZ').ok).toBe(false);
    expect(toMicros('-0.50', 'usd')).toEqual({ ok: true, value: -500_000n });
  });
});
