/**
 * Approval rows keep only what execution needs, and nothing readable about customers (issue 13,
 * item 5): the frozen arguments and the approver's reason are encrypted (FRAUDGATE_DATA_KEY), the
 * evidence an approver sees and the result of an executed action are stored masked (the call that
 * ran the action still answers with the real output), and the identity review list keeps the
 * identifiers it tried only masked.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as z from 'zod';
import { afterEach, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { defineTool, type AnyTool } from '../../src/tool.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const CONTACT = 'jo.doe.stored@example.com';
const PHONE = '+1 415 555 0177';

const contactCustomer = defineTool({
  name: 'contact_customer',
  title: 'Contact customer',
  description: 'A destructive test tool whose evidence and result carry personal data.',
  risk: 'destructive',
  toolset: 'core',
  idempotent: false,
  input: z.strictObject({ user_id: z.string() }),
  output: z.object({ user_id: z.string(), reached: z.string() }),
  target: (args) => `user:${args.user_id}`,
  evidence: async () => ({ contact: CONTACT, note: `last called from ${PHONE}` }),
  run: async (args) => ({ user_id: args.user_id, reached: `${CONTACT} at ${PHONE}` }),
});

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

describe('stored approval rows', () => {
  it('evidence and results are stored masked; the waiting call gets the real output', async () => {
    env = await setup({
      tools: [...tools, contactCustomer as unknown as AnyTool],
      config: { approvals: { wait_ms: 5_000 } },
    });
    const running = env.callTool('contact_customer', { user_id: 'u-77' });
    let pending;
    for (let i = 0; i < 200 && !pending; i++) {
      [pending] = await env.runtime.approvals.list({ states: ['pending'] });
      if (!pending) await new Promise((r) => setTimeout(r, 10));
    }
    expect(pending).toBeDefined();
    expect(JSON.stringify(pending!.evidence)).not.toContain(CONTACT);
    expect(JSON.stringify(pending!.evidence)).toContain('j***@example.com#');
    await env.runtime.pipeline.decide(pending!.id, {
      approve: true,
      approver: { id: 'ola.approver@example.com', kind: 'user', role: 'approver' },
    });
    const answer = await running;
    expect(answer.isError).toBe(false);
    expect(answer.output.reached).toBe(`${CONTACT} at ${PHONE}`);
    const stored = await env.runtime.approvals.get(pending!.id);
    expect(stored?.state).toBe('executed');
    expect(JSON.stringify(stored?.result)).not.toContain(CONTACT);
    expect(JSON.stringify(stored?.result)).not.toContain('555 0177');
    const status = await env.callTool('get_approval_status', { approval_id: pending!.id });
    expect(JSON.stringify(status.output)).not.toContain(CONTACT);
    expect(rawDatabase(env)).not.toContain(CONTACT);
  });

  it('frozen arguments and reasons are encrypted at rest, and still replayed exactly', async () => {
    env = await setup({ config: { approvals: { wait_ms: 0 } } });
    const description = `Chargeback; customer ${CONTACT} called from ${PHONE}`;
    const args = { user_id: 'sandbox-high-risk', is_bad: true, abuse_type: 'payment_abuse', description };
    const pending = await env.callTool('apply_label', args);
    expect(pending.error.code).toBe('APPROVAL_PENDING');
    const id = pending.error.approval_id as string;
    await env.runtime.pipeline.decide(id, {
      approve: false,
      reason: `customer verified by phone ${PHONE}`,
      approver: { id: 'ola.approver@example.com', kind: 'user', role: 'approver' },
    });
    const stored = await env.runtime.approvals.get(id);
    expect(stored?.args).toEqual(args);
    expect(stored?.reason).toContain(PHONE);
    const raw = rawDatabase(env);
    expect(raw).not.toContain(CONTACT);
    expect(raw).not.toContain('555 0177');
    expect(raw).toContain('enc:v1:');
  });

  it('the identity review list keeps the identifiers it tried only masked', async () => {
    env = await setup();
    const looked = await env.callTool('lookup_user', {
      user_id: 'sandbox-unmatched',
      email: CONTACT,
      phone: PHONE,
    });
    expect(looked.isError).toBe(false);
    const listed = await env.callTool('list_unmatched_identities', {});
    expect(JSON.stringify(listed.output)).toContain('sandbox-unmatched');
    expect(JSON.stringify(listed.output)).not.toContain(CONTACT);
    expect(JSON.stringify(listed.output)).toContain('j***@example.com#');
    expect(rawDatabase(env)).not.toContain(CONTACT);
  });
});

function rawDatabase(e: TestEnv): string {
  return ['fraudgate.db', 'fraudgate.db-wal']
    .map((f) => {
      try {
        return readFileSync(join(e.dataDir, f)).toString('latin1');
      } catch {
        return '';
      }
    })
    .join('');
}
