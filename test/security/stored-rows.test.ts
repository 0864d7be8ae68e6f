/**
 * Approval rows keep only what execution needs, and nothing readable about customers (issue 13,
 * item 5): the evidence an approver sees and the result of an executed action are stored masked;
 * the call that ran the action still answers with the real output.
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
    const db = readFileSync(join(env.dataDir, 'fraudgate.db')).toString('latin1');
    const wal = readFileSync(join(env.dataDir, 'fraudgate.db-wal')).toString('latin1');
    expect(db + wal).not.toContain(CONTACT);
  });
});
