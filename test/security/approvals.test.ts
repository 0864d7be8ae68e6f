/**
 * Adversarial: an agent beside fraudgate tries to get its own destructive call approved.
 *
 * - Nothing the agent can read (instructions, tools, resources, prompts, results, errors, progress)
 *   names a command, flag or API that approves.
 * - Self-approval of destructive tools and BLOCK decisions is refused by default through every
 *   channel: the desk (CLI path), the console and in-band elicitation; opting in is per tool and shown.
 * - A typo in a policy key stops start-up instead of leaving the real tool on its default.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import type { Principal } from '../../src/tool.ts';
import { LIVE_ENV } from '../helpers/live-env.ts';
import { ANALYST, setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
let server: Server | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

const LABEL = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'card testing from one device',
};
const APPROVER: Principal = { id: 'ola.approver@example.com', kind: 'user', role: 'approver' };
/** Someone who may both request (admin can call destructive tools) and approve. */
const ADMIN: Principal = { id: 'ada.admin@example.com', kind: 'user', role: 'admin' };

/** What would let an agent approve without a human's credential, or point it at the way to. */
const RECIPES = [
  /fraudgate approvals/i,
  /approvals (approve|deny)/i,
  /--as\b/,
  /\/console\/api/,
  /FRAUDGATE_(APPROVER|DEV)_TOKEN/,
  /x-csrf/i,
];

function expectNoRecipe(surface: string[]) {
  for (const text of surface) for (const recipe of RECIPES) expect(text).not.toMatch(recipe);
}

describe('the agent-visible surface', () => {
  it('holds no approve recipe anywhere in a scripted session; pending says a human decides, and where', async () => {
    env = await setup({
      config: { approvals: { wait_ms: 1_500 }, http: { public_url: 'https://fraudgate.example.com' } },
    });
    const e = env;
    const surface: string[] = [];
    const keep = (value: unknown) => surface.push(typeof value === 'string' ? value : JSON.stringify(value));

    keep(e.client.getInstructions() ?? '');
    keep(await e.client.listTools());
    keep(await e.client.listResources());
    keep(await e.client.listResourceTemplates());
    keep(await e.client.readResource({ uri: 'fraudgate://policy' }));
    keep(await e.client.readResource({ uri: 'fraudgate://users/sandbox-high-risk' }));
    const { prompts } = await e.client.listPrompts();
    keep(prompts);
    for (const prompt of prompts) {
      const args: Record<string, string> =
        prompt.name === 'triage_user' ? { user_id: 'sandbox-high-risk' } : {};
      keep(await e.client.getPrompt({ name: prompt.name, arguments: args }));
    }

    // A destructive call that waits with progress, then returns APPROVAL_PENDING.
    const progress: string[] = [];
    const label = await e.callTool('apply_label', LABEL, {
      onprogress: (p) => progress.push(p.message ?? ''),
    });
    keep(label.raw);
    keep(progress);
    expect(progress.length).toBeGreaterThan(0);
    expect(label.error.code).toBe('APPROVAL_PENDING');
    expect(label.error.message).toMatch(/human approver/);
    expect(label.error.message).toContain('https://fraudgate.example.com/console');
    expect(progress.join('\n')).toContain('https://fraudgate.example.com/console');

    // The same call again, a dry run, other destructive tools, status, bad input, a refused tool.
    keep((await e.callTool('apply_label', LABEL)).raw);
    keep((await e.callTool('apply_label', { ...LABEL, dry_run: true })).raw);
    const quick = { onprogress: () => {} };
    keep((await e.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'promo abuse' }, quick)).raw);
    keep((await e.callTool('remove_label', { ...LABEL, reason: 'mistake' }, quick)).raw);
    keep(
      (
        await e.callTool(
          'apply_decision',
          {
            user_id: 'sandbox-watch',
            decision_id: 'block_user_payment_abuse',
            description: 'card testing ring',
          },
          quick,
        )
      ).raw,
    );
    keep((await e.callTool('get_approval_status', { approval_id: String(label.error.approval_id) })).raw);
    keep((await e.callTool('apply_label', { user_id: 'x' })).raw);
    keep(
      await e.client.callTool({ name: 'no_such_tool', arguments: {} }).catch((error: Error) => error.message),
    );

    // Denied, then the agent reads the outcome.
    await e.runtime.desk.decide(String(label.error.approval_id), {
      approve: false,
      approver: APPROVER,
      reason: 'customer verified by phone',
    });
    keep((await e.callTool('get_approval_status', { approval_id: String(label.error.approval_id) })).raw);

    expect(surface.join('\n')).toContain('APPROVAL_PENDING');
    expectNoRecipe(surface);
  });

  it('without a public URL, pending still names the console and no command', async () => {
    env = await setup();
    const result = await env.callTool('apply_label', LABEL);
    expect(result.error.message).toContain('fraudgate approval console');
    expectNoRecipe([JSON.stringify(result.raw)]);
  });
});

describe('self-approval is refused by default', () => {
  it('desk (the CLI path): a destructive call needs an approver other than the requester, even an admin requester', async () => {
    env = await setup({ principal: ADMIN });
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    expect((await env.runtime.approvals.get(id))?.mode).toBe('four_eyes');
    await expect(env.runtime.desk.decide(id, { approve: true, approver: ADMIN })).rejects.toThrow(
      /another approver must/,
    );
    expect((await env.runtime.approvals.get(id))?.state).toBe('pending');
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
  });

  it('console: the requester signed in as an approver cannot approve their own call', async () => {
    env = await setup({ principal: ADMIN });
    const result = await env.callTool('apply_label', LABEL);
    const id = String(result.error.approval_id);
    const handler = createConsoleHandler({
      runtime: env.runtime,
      authenticate: async (token) =>
        token === 'admin-token' ? { ok: true, principal: ADMIN } : { ok: false, reason: 'invalid token' },
    });
    server = createServer((req, res) => void handler(req, res));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const signIn = await fetch(`${base}/console/api/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: 'admin-token' }),
    });
    const { csrf_token } = (await signIn.json()) as { csrf_token: string };
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0]!;
    const list = (await (await fetch(`${base}/console/api/approvals`, { headers: { cookie } })).json()) as {
      approvals: { id: string; approve_blocked?: string }[];
    };
    expect(list.approvals.find((a) => a.id === id)?.approve_blocked).toMatch(/you requested this action/);
    const approve = await fetch(`${base}/console/api/approvals/${id}/approve`, {
      method: 'POST',
      headers: { cookie, 'Content-Type': 'application/json', 'X-CSRF-Token': csrf_token },
      body: '{}',
    });
    expect(approve.status).toBe(403);
    expect((await env.runtime.approvals.get(id))?.state).toBe('pending');
  });

  it('elicitation: confirm on a destructive tool does not ask the requester unless the tool opts in', async () => {
    const asked: string[] = [];
    const elicit = (message: string) => {
      asked.push(message);
      return { action: 'accept' as const, content: { confirm: true } };
    };
    env = await setup({ config: { approvals: { tools: { apply_label: 'confirm' } } }, elicit });
    const refused = await env.callTool('apply_label', LABEL);
    expect(refused.error.code).toBe('APPROVAL_PENDING');
    expect(asked).toHaveLength(0);
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
    await env.close();

    env = await setup({
      config: { approvals: { tools: { apply_label: 'confirm' }, self_approval: ['apply_label'] } },
      elicit,
    });
    const confirmed = await env.callTool('apply_label', LABEL);
    expect(confirmed.isError).toBe(false);
    expect(asked).toHaveLength(1);
  });

  it('BLOCK needs its own opt-in: listing apply_decision lets a requester approve a WATCH, never a BLOCK', async () => {
    env = await setup({ principal: ADMIN, config: { approvals: { self_approval: ['apply_decision'] } } });
    const block = await env.callTool('apply_decision', {
      user_id: 'sandbox-watch',
      decision_id: 'block_user_payment_abuse',
      description: 'card testing ring',
    });
    const watch = await env.callTool('apply_decision', {
      user_id: 'sandbox-high-risk',
      decision_id: 'watch_user_payment_abuse',
      description: 'keep an eye on it',
    });
    const blockId = String(block.error.approval_id);
    const watchId = String(watch.error.approval_id);
    expect((await env.runtime.approvals.get(blockId))?.mode).toBe('four_eyes');
    expect((await env.runtime.approvals.get(watchId))?.mode).toBe('approval');
    await expect(env.runtime.desk.decide(blockId, { approve: true, approver: ADMIN })).rejects.toThrow(
      /another approver/,
    );
    await env.runtime.desk.decide(watchId, { approve: true, approver: ADMIN });
    expect((await env.runtime.approvals.get(watchId))?.state).toBe('approved');
  });

  it('the analyst of the default setup is not an approver of their own call through the desk either', async () => {
    env = await setup();
    const result = await env.callTool('suppress_user', { user_id: 'sandbox-watch', reason: 'promo abuse' });
    await expect(
      env.runtime.desk.decide(String(result.error.approval_id), {
        approve: true,
        approver: { ...ANALYST, role: 'approver' },
      }),
    ).rejects.toThrow(/another approver/);
  });
  it('fraudgate://policy shows who may approve each tool, per call key, and the opt-in list', async () => {
    env = await setup({ config: { approvals: { self_approval: ['suppress_user'] } } });
    const read = await env.client.readResource({ uri: 'fraudgate://policy' });
    const policy = JSON.parse(String((read.contents[0] as { text: string }).text)) as {
      tools: { name: string; approval: string; self_approval: boolean; per_call?: Record<string, unknown> }[];
      self_approval_opt_in: string[];
    };
    const tool = (name: string) => policy.tools.find((t) => t.name === name);
    expect(tool('apply_label')).toMatchObject({ approval: 'four_eyes', self_approval: false });
    expect(tool('suppress_user')).toMatchObject({ approval: 'approval', self_approval: true });
    expect(tool('apply_decision')?.per_call?.['apply_decision:block']).toEqual({
      approval: 'four_eyes',
      self_approval: false,
    });
    expect(tool('get_sift_score')).toMatchObject({ approval: 'none' });
    expect(policy.self_approval_opt_in).toEqual(['suppress_user']);
  });
});

describe('policy configuration is checked', () => {
  it.each([
    [{ approvals: { tools: { apply_lable: 'four_eyes' } } }, 'approvals.tools.apply_lable'],
    [
      { approvals: { self_approval: ['apply_decision:blok'] } },
      'approvals.self_approval.apply_decision:blok',
    ],
    [
      { rate_limits: { tools: { send_sift_evnt: { capacity: 1, per_minute: 1 } } } },
      'rate_limits.tools.send_sift_evnt',
    ],
    [{ budgets: { limits: { suppres_user: { max_effects: 1 } } } }, 'budgets.limits.suppres_user'],
  ])('%j stops start-up naming the key and the known names', async (policy, field) => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-policy-'));
    const file = join(dir, 'fraudgate.json');
    writeFileSync(file, JSON.stringify(policy));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const code = await main(['approvals', 'list', '--sandbox', '--config', file, '--data-dir', dir]);
      const written = stderr.mock.calls.map((c) => String(c[0])).join('');
      expect(code).toBe(1);
      expect(written).toContain('Invalid configuration');
      expect(written).toContain(field);
      expect(written).toMatch(/known: .*apply_label/);
      if (field.startsWith('approvals')) expect(written).toContain('apply_decision:block');
    } finally {
      stderr.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('budgets bind destructive effects only', () => {
  it.each(['create_fraud_case', 'get_sift_score'])(
    'a budget on %s (not destructive, so never enforced) stops start-up naming the key and the destructive tools',
    async (name) => {
      const dir = mkdtempSync(join(tmpdir(), 'fraudgate-policy-'));
      const file = join(dir, 'fraudgate.json');
      writeFileSync(file, JSON.stringify({ budgets: { limits: { [name]: { max_effects: 5 } } } }));
      const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
      try {
        const code = await main(['approvals', 'list', '--sandbox', '--config', file, '--data-dir', dir]);
        const written = stderr.mock.calls.map((c) => String(c[0])).join('');
        expect(code).toBe(1);
        expect(written).toContain(`budgets.limits.${name}`);
        expect(written).toContain('budgets apply to destructive tools');
        expect(written).toMatch(/apply_decision:block.*suppress_user|suppress_user.*apply_decision:block/);
        expect(written).not.toMatch(/destructive tools[^\n]*create_fraud_case/);
      } finally {
        stderr.mockRestore();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('destructive tools always wait for a human outside the sandbox', () => {
  /** `fraudgate approvals list` with this policy file: its exit code and what it wrote to stderr. */
  async function start(policy: unknown, live: boolean): Promise<{ code: number; written: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-policy-'));
    const file = join(dir, 'fraudgate.json');
    writeFileSync(file, JSON.stringify(policy));
    if (live) for (const [name, value] of Object.entries(LIVE_ENV)) vi.stubEnv(name, value);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const code = await main([
        'approvals',
        'list',
        ...(live ? [] : ['--sandbox']),
        '--config',
        file,
        '--data-dir',
        dir,
      ]);
      return { code, written: stderr.mock.calls.map((c) => String(c[0])).join('') };
    } finally {
      stderr.mockRestore();
      stdout.mockRestore();
      vi.unstubAllEnvs();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it.each(['suppress_user', 'apply_label', 'undo_action', 'apply_decision:watch'])(
    'approvals.tools.%s = none stops a live start-up, naming the key',
    async (name) => {
      const { code, written } = await start({ approvals: { tools: { [name]: 'none' } } }, true);
      expect(code).toBe(1);
      expect(written).toContain('Invalid configuration');
      expect(written).toContain(`approvals.tools.${name}`);
      expect(written).toContain('always waits for a human');
    },
  );

  it('a write tool set to none, and a destructive one in the sandbox, still start', async () => {
    expect(
      (await start({ approvals: { tools: { create_fraud_case: 'none' } } }, true)).written,
    ).not.toContain('Invalid configuration');
    const sandbox = await start({ approvals: { tools: { suppress_user: 'none' } } }, false);
    expect(sandbox.written).not.toContain('Invalid configuration');
    expect(sandbox.code).toBe(0);
  });

  it.each([true, false])('approvals.default_for_destructive = none is refused (live: %s)', async (live) => {
    const { code, written } = await start({ approvals: { default_for_destructive: 'none' } }, live);
    expect(code).toBe(1);
    expect(written).toContain('approvals.default_for_destructive');
    expect(written).toContain('no human');
  });
});

describe('an approval row that does not open', () => {
  it('an unreadable approval row does not break the list and cannot be approved', async () => {
    env = await setup();
    const mk = async (user: string) =>
      String((await env!.callTool('apply_label', { ...LABEL, user_id: user })).error.approval_id);
    const good = await mk('sandbox-high-risk');
    const bad = await mk('sandbox-low-risk');
    // As if written under another FRAUDGATE_DATA_KEY (another key id on the sealed arguments).
    const [row] = await env.runtime.store.sql.query<{ args: string }>(
      'SELECT args FROM approvals WHERE id = $1',
      [bad],
    );
    const [pfx, ver, , body] = row!.args.split(':');
    await env.runtime.store.sql.execute('UPDATE approvals SET args = $1 WHERE id = $2', [
      `${pfx}:${ver}:deadbeef:${body}`,
      bad,
    ]);
    const handler = createConsoleHandler({
      runtime: env.runtime,
      authenticate: async (token) =>
        token === 'approver-token'
          ? { ok: true, principal: APPROVER }
          : { ok: false, reason: 'invalid token' },
    });
    server = createServer((req, res) => void handler(req, res));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const signIn = await fetch(`${base}/console/api/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: 'approver-token' }),
    });
    const { csrf_token } = (await signIn.json()) as { csrf_token: string };
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0]!;
    const listed = await fetch(`${base}/console/api/approvals`, { headers: { cookie } });
    expect(listed.status).toBe(200);
    const ids = ((await listed.json()) as { approvals: { id: string }[] }).approvals.map((a) => a.id);
    expect(ids).toContain(good);
    expect(ids).not.toContain(bad);
    const decide = (id: string) =>
      fetch(`${base}/console/api/approvals/${id}/approve`, {
        method: 'POST',
        headers: { cookie, 'Content-Type': 'application/json', 'X-CSRF-Token': csrf_token },
        body: '{}',
      });
    const refused = await decide(bad);
    expect(refused.status).toBe(409);
    expect(JSON.stringify(await refused.json())).toMatch(
      /do not open under FRAUDGATE_DATA_KEY.*cannot be decided/,
    );
    await expect(env.runtime.approvals.get(bad)).rejects.toThrow(/cannot be decided or run/);
    const [after] = await env.runtime.store.sql.query<{ state: string }>(
      'SELECT state FROM approvals WHERE id = $1',
      [bad],
    );
    expect(after?.state).toBe('pending');
    expect((await decide(good)).status).toBeLessThan(300);
    await env.runtime.pipeline.processApprovals();
    expect((await env.runtime.approvals.get(good))?.state).toBe('executed');
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
  });
});
