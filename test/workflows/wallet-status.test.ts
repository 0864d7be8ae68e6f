/**
 * Wallet guide fidelity (issue 9 item 9, in part): the guide's `$`-prefixed status values
 * (`$pending`, `$success`, `$failure`) are accepted as written and reach Sift prefixed once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

describe('send_sift_event status values', () => {
  it('accepts $pending / $success / $failure and sends each prefixed once', async () => {
    env = await setup();
    const base = {
      event_type: 'transaction',
      user_id: 'sandbox-low-risk',
      transaction_type: 'deposit',
      transaction_id: 'tx-dollar-1',
      amount: '12.50',
      currency: 'USD',
    };
    for (const status of ['$pending', '$success']) {
      const result = await env.callTool('send_sift_event', {
        event: { ...base, transaction_status: status },
      });
      expect(result.error, status).toBeUndefined();
    }
    const login = await env.callTool('send_sift_event', {
      event: {
        event_type: 'login',
        user_id: 'sandbox-low-risk',
        login_status: '$failure',
        failure_reason: 'wrong_password',
      },
    });
    expect(login.error).toBeUndefined();
    const sent = env.sandbox.sift.events.filter((e) => e.userId === 'sandbox-low-risk');
    expect(sent.map((e) => e.body.$transaction_status ?? e.body.$login_status)).toEqual([
      '$pending',
      '$success',
      '$failure',
    ]);
    const bad = await env.callTool('send_sift_event', {
      event: { ...base, transaction_status: '$$success' },
    });
    expect(bad.error.code).toBe('INVALID_INPUT');
  });
});
