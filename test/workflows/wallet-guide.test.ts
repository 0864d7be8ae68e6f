/**
 * Wallet guide fidelity (issue 9 item 9), through an MCP client against the Sift emulator:
 * `$payment_method` with Sift's card and bank fields; the guide's transfer and balance fields by
 * their own names, checked and converted to micros; `return_workflow_status` and its result;
 * score percentiles where Sift sends them. Bad values are refused naming the field, and nothing
 * reaches Sift.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const deposit = {
  event_type: 'transaction',
  user_id: 'wallet-guide-1',
  transaction_type: 'deposit',
  transaction_status: '$success',
  transaction_id: 'dep-1',
  amount: '100.00',
  currency: 'USD',
};

const bodiesOf = (type: string) => env.sandbox.sift.events.filter((e) => e.type === type).map((e) => e.body);

describe('wallet guide: payment methods', () => {
  it('sends card and bank fields as Sift $payment_method fields', async () => {
    env = await setup();
    const card = await env.callTool('send_sift_event', {
      event: {
        ...deposit,
        payment_method: {
          type: 'credit_card',
          gateway: 'stripe',
          card_bin: '542486',
          card_last4: '4444',
          avs_result_code: 'Y',
          cvv_result_code: 'M',
          verification_status: '$success',
        },
        balance: { currency: 'USD', amount: '250.00' },
      },
    });
    expect(card.error).toBeUndefined();
    const bank = await env.callTool('send_sift_event', {
      event: {
        ...deposit,
        transaction_id: 'dep-2',
        payment_method: {
          type: 'sepa_direct_debit',
          account_holder_name: 'Ana Example',
          bank_name: 'Example Bank',
          bank_country: 'DE',
          shortened_iban_first6: 'DE8937',
          shortened_iban_last4: '3000',
          sepa_direct_debit_mandate: true,
        },
      },
    });
    expect(bank.error).toBeUndefined();
    const [first, second] = bodiesOf('$transaction');
    expect(first?.$payment_method).toEqual({
      $payment_type: '$credit_card',
      $payment_gateway: '$stripe',
      $card_bin: '542486',
      $card_last4: '4444',
      $avs_result_code: 'Y',
      $cvv_result_code: 'M',
      $verification_status: '$success',
    });
    expect(first).toMatchObject({
      account_balance_amount: 250_000_000,
      account_balance_currency_code: 'USD',
    });
    expect(second?.$payment_method).toEqual({
      $payment_type: '$sepa_direct_debit',
      $account_holder_name: 'Ana Example',
      $bank_name: 'Example Bank',
      $bank_country: 'DE',
      $shortened_iban_first6: 'DE8937',
      $shortened_iban_last4: '3000',
      $sepa_direct_debit_mandate: true,
    });
    // Partial card and bank numbers and the holder's name reach Sift, never the result or the audit.
    expect(JSON.stringify([card.output, bank.output])).not.toMatch(/542486|Ana Example|DE8937/);
    const audit = JSON.stringify(await storedAuditRecords(env.config, env.runtime.audit));
    expect(audit).toContain('payment_method');
    expect(audit).not.toMatch(/542486|"4444"|Ana Example|DE8937|"3000"/);
  });

  it('refuses bad card or bank fields, naming them, and sends nothing', async () => {
    env = await setup();
    const cases: [Record<string, unknown>, string][] = [
      [{ type: 'debit_card', card_last4: '12a4' }, 'event.payment_method.card_last4'],
      [{ type: 'debit_card', card_bin: '4111111111111111' }, 'event.payment_method.card_bin'],
      [{ type: 'credit_card', routing_number: '021000021' }, 'event.payment_method.routing_number'],
      [{ type: 'ach_debit', card_last4: '4444' }, 'event.payment_method.card_last4'],
      [{ type: 'ach_debit', bank_country: 'Germany' }, 'event.payment_method.bank_country'],
      [{ type: 'ach_debit', account_number: '123456789' }, 'account_number'],
    ];
    for (const [method, field] of cases) {
      const result = await env.callTool('send_sift_event', { event: { ...deposit, payment_method: method } });
      expect(result.error?.code, field).toBe('INVALID_INPUT');
      expect(result.error.message, field).toContain(field);
    }
    expect(env.sandbox.sift.events).toHaveLength(0);
  });

  it('the emulator refuses what Sift refuses inside $payment_method', async () => {
    env = await setup();
    const post = (paymentMethod: unknown) =>
      fetch(`${env.sandbox.sift.url}/v205/events`, {
        method: 'POST',
        body: JSON.stringify({
          $type: '$transaction',
          $api_key: env.sandbox.sift.apiKey,
          $user_id: 'wallet-guide-1',
          $amount: 1_000_000,
          $currency_code: 'USD',
          $payment_method: paymentMethod,
        }),
      }).then(async (r) => ({ http: r.status, body: (await r.json()) as { status: number } }));
    expect((await post({ $payment_type: '$credit_card', $card_last4: '4444' })).body.status).toBe(0);
    expect(
      (await post({ $payment_type: '$credit_card', $card_number: '4111111111111111' })).body.status,
    ).toBe(105);
    expect((await post({ $payment_type: '$credit_card', $card_last4: '44' })).body.status).toBe(53);
    expect((await post({ $payment_type: '$credit_card', nickname: 'x' })).body.status).toBe(53);
  });
});

describe('wallet guide: transfers and balances', () => {
  it('sends send_amount / receive_amount, the other party and each balance in micros', async () => {
    env = await setup();
    const result = await env.callTool('send_sift_event', {
      event: {
        event_type: 'wallet_transfer',
        sender_user_id: 'wallet-a',
        recipient_user_id: 'wallet-b',
        transfer_id: 'tr-1',
        amount: '0.000025',
        currency: 'BTC',
        transfer_status: '$pending',
        sender_balance: { currency: 'BTC', amount: '0.000075' },
        recipient_balance: { currency: 'USD', btc: '0.000225', cash: '12.50' },
      },
    });
    expect(result.error).toBeUndefined();
    expect(bodiesOf('send_money')[0]).toMatchObject({
      $user_id: 'wallet-a',
      send_amount: 25,
      recipient_user_id: 'wallet-b',
      account_balance_amount: 75,
      account_balance_currency_code: 'BTC',
      transfer_status: 'pending',
    });
    expect(bodiesOf('receive_money')[0]).toMatchObject({
      $user_id: 'wallet-b',
      receive_amount: 25,
      sender_user_id: 'wallet-a',
      account_balance_currency_code: 'USD',
      btc_balance_amount: 225,
      cash_balance_amount: 12_500_000,
    });
    expect(bodiesOf('receive_money')[0]).not.toHaveProperty('account_balance_amount');
  });

  it('refuses balances the currency cannot hold, naming the field, and sends nothing', async () => {
    env = await setup();
    const transfer = {
      event_type: 'wallet_transfer',
      sender_user_id: 'wallet-a',
      recipient_user_id: 'wallet-b',
      transfer_id: 'tr-2',
      amount: '5.00',
      currency: 'USD',
      transfer_status: 'success',
    };
    const cases: [Record<string, unknown>, string][] = [
      [{ sender_balance: { currency: 'USD', cash: '1.005' } }, 'event.sender_balance.cash'],
      [{ sender_balance: { currency: 'USD', btc: '0.00000001' } }, 'event.sender_balance.btc'],
      [{ recipient_balance: { currency: 'JPY', amount: '10.5' } }, 'event.recipient_balance.amount'],
      [{ recipient_balance: { currency: 'USD' } }, 'event.recipient_balance.amount'],
      [{ recipient_balance: { amount: '1.00' } }, 'event.recipient_balance.currency'],
    ];
    for (const [extra, field] of cases) {
      const result = await env.callTool('send_sift_event', { event: { ...transfer, ...extra } });
      expect(result.error?.code, field).toBe('INVALID_INPUT');
      expect(result.error.message, field).toContain(field);
    }
    expect(env.sandbox.sift.events).toHaveLength(0);
  });
});

describe('wallet guide: workflows and percentiles', () => {
  it('return_workflow_status returns the workflows Sift ran and what they decided', async () => {
    env = await setup();
    env.sandbox.sift.addWorkflow({
      id: 'wf-deposits',
      name: 'Risky deposits',
      eventTypes: ['$transaction'],
      abuseType: 'payment_abuse',
      minScore: 0.5,
      decisionId: 'block_user_payment_abuse',
      route: 'high risk',
    });
    const result = await env.callTool('send_sift_event', {
      event: { ...deposit, user_id: 'sandbox-high-risk' },
      return_workflow_status: true,
    });
    expect(result.error).toBeUndefined();
    expect(result.output.workflow_statuses).toEqual([
      {
        run_id: expect.any(String),
        state: 'finished',
        workflow: 'Risky deposits',
        abuse_types: ['payment_abuse'],
        decision_ids: ['block_user_payment_abuse'],
      },
    ]);
    expect(result.output.score).toMatchObject({ highest: { abuse_type: 'payment_abuse' } });
    expect(env.sandbox.sift.decisionsOf('sandbox-high-risk').payment_abuse).toMatchObject({
      id: 'block_user_payment_abuse',
      source: 'AUTOMATED_RULE',
    });
    const quiet = await env.callTool('send_sift_event', {
      event: { ...deposit, user_id: 'sandbox-low-risk', transaction_id: 'dep-9' },
      return_workflow_status: true,
    });
    expect(quiet.output.workflow_statuses).toEqual([
      expect.objectContaining({ workflow: 'Risky deposits', decision_ids: [] }),
    ]);
    const plain = await env.callTool('send_sift_event', { event: { ...deposit, transaction_id: 'dep-10' } });
    expect(plain.output).not.toHaveProperty('workflow_statuses');
  });

  it('exposes score percentiles where Sift sends them, and nothing where it sends -1', async () => {
    env = await setup();
    const before = await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    type ScoreEntry = { abuse_type: string; percentiles?: Record<string, number> };
    const entry = (out: Record<string, unknown>) =>
      (out.scores as ScoreEntry[]).find((s) => s.abuse_type === 'payment_abuse');
    expect(entry(before.output)).not.toHaveProperty('percentiles');
    env.sandbox.sift.setPercentiles('sandbox-high-risk', 'payment_abuse', {
      last_7_days: 0.97,
      last_10_days: 0.95,
    });
    const after = await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    expect(entry(after.output)).toMatchObject({ percentiles: { last_7_days: 0.97, last_10_days: 0.95 } });
    expect(Object.keys(entry(after.output)?.percentiles ?? {})).toHaveLength(2);
  });
});
