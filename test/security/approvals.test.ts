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
import { DatabaseSync } from 'node:sqlite';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { canonicalJson, sha256Hex } from '../../src/governance/canonical-json.ts';
import { createFieldCipher, loadDataKey } from '../../src/store/field-crypto.ts';
import { databasePath } from '../../src/store/store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
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

describe('approval arguments edited in the database never run', () => {
  /** What someone with write access to the database (not the data key) wants run instead. */
  const FORGED = { ...LABEL, is_bad: false, description: 'FORGED: customer is fine' };
  const pendingLabel = async (e: TestEnv) =>
    String((await e.callTool('apply_label', LABEL)).error.approval_id);
  const writeRow = (e: TestEnv, id: string, args: string, argsHash?: string) => {
    const db = new DatabaseSync(databasePath(e.config));
    try {
      db.prepare('UPDATE approvals SET args = ?, args_hash = coalesce(?, args_hash) WHERE id = ?').run(
        args,
        argsHash ?? null,
        id,
      );
    } finally {
      db.close();
    }
  };
  const failedRecords = async (e: TestEnv, id: string) =>
    (await storedAuditRecords(e.config, e.runtime.audit)).filter(
      (r) => r.approval_id === id && r.event === 'failed',
    );

  it('plain args written over sealed ones are refused and nothing executes', async () => {
    env = await setup({ config: { approvals: { wait_ms: 0 } } });
    const e = env;
    const id = await pendingLabel(e);
    await e.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    // Plain JSON over the sealed value, with a matching hash: only the refusal of plain text stops it.
    writeRow(e, id, JSON.stringify(FORGED), sha256Hex(canonicalJson(FORGED)));
    await e.runtime.pipeline.processApprovals();

    expect(e.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
    expect(e.sandbox.sift.labels(LABEL.user_id).payment_abuse).toBeUndefined();
    const status = await e.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({
      state: 'failed',
      error: { message: expect.stringMatching(/not sealed/) },
    });
    expect(JSON.stringify(status.output)).not.toContain('FORGED');
    expect(await failedRecords(e, id)).toHaveLength(1);

    // Pending and tampered: the approver cannot approve it, and it fails the same way.
    const pending = await pendingLabel(e);
    writeRow(e, pending, JSON.stringify(FORGED));
    await expect(e.runtime.desk.decide(pending, { approve: true, approver: APPROVER })).rejects.toThrow(
      /Integrity check failed: its stored arguments are not sealed/,
    );
    expect((await e.runtime.approvals.get(pending))?.state).toBe('failed');
    expect(await failedRecords(e, pending)).toHaveLength(1);
    expect(e.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
  });

  it('sealed args that do not hash to args_hash fail closed, approved or pending', async () => {
    env = await setup({ config: { approvals: { wait_ms: 0 } } });
    const e = env;
    // Sealed under the right row binding with the real data key, but not what was requested.
    const cipher = createFieldCipher(loadDataKey(e.config, {}));
    const sealFor = (id: string) => JSON.stringify(cipher.seal(FORGED, `approvals.args:${id}`));

    const approved = await pendingLabel(e);
    await e.runtime.desk.decide(approved, { approve: true, approver: APPROVER });
    writeRow(e, approved, sealFor(approved));
    await e.runtime.pipeline.processApprovals();
    expect(e.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
    const status = await e.callTool('get_approval_status', { approval_id: approved });
    expect(status.output).toMatchObject({
      state: 'failed',
      error: { code: 'CONFLICT', message: expect.stringMatching(/do not match the argument hash/) },
    });
    expect(await failedRecords(e, approved)).toHaveLength(1);

    const pending = await pendingLabel(e);
    writeRow(e, pending, sealFor(pending));
    await expect(e.runtime.desk.decide(pending, { approve: true, approver: APPROVER })).rejects.toThrow(
      /Integrity check failed/,
    );
    expect((await e.runtime.approvals.get(pending))?.state).toBe('failed');
    expect(e.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
  });

  it('plain args from before sealing existed are sealed once at start-up and still run', async () => {
    env = await setup({ config: { approvals: { wait_ms: 0 } } });
    const id = await pendingLabel(env);
    // A data directory from before sealing: the row plain, migration 33 not yet applied.
    const db = new DatabaseSync(databasePath(env.config));
    try {
      db.prepare('UPDATE approvals SET args = ? WHERE id = ?').run(JSON.stringify(LABEL), id);
      db.exec('DROP TABLE IF EXISTS unsealed_legacy_rows; DELETE FROM schema_migrations WHERE version = 33');
    } finally {
      db.close();
    }
    env = await env.restart({ config: { approvals: { wait_ms: 0 } } });
    const check = new DatabaseSync(databasePath(env.config), { readOnly: true });
    try {
      const row = check.prepare('SELECT args FROM approvals WHERE id = ?').get(id) as { args: string };
      expect(row.args.startsWith('"enc:v1:')).toBe(true);
    } finally {
      check.close();
    }
    await env.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env.runtime.pipeline.processApprovals();
    expect(env.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(1);
    expect(env.sandbox.sift.labels(LABEL.user_id).payment_abuse).toMatchObject({ is_bad: true });
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
    // Under a key this replica does not hold: named, and retryable (a replica with it may decide it).
    expect(JSON.stringify(await refused.json())).toMatch(/sealed under data key deadbeef.*does not hold/);
    await expect(env.runtime.approvals.get(bad)).rejects.toThrow(/does not hold/);
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

  it('an overdue approval that does not open is expired and its call can be asked again', async () => {
    env = await setup({ config: { approvals: { wait_ms: 0 } } });
    const e = env;
    const ask = async () => (await e.callTool('apply_label', LABEL)).error;
    const first = String((await ask()).approval_id);
    // Its sealed arguments edited in the database (they fail their integrity check), then overdue.
    const [row] = await e.runtime.store.sql.query<{ args: string }>(
      'SELECT args FROM approvals WHERE id = $1',
      [first],
    );
    const middle = Math.floor(row!.args.length / 2);
    const edited =
      row!.args.slice(0, middle) + (row!.args[middle] === 'A' ? 'B' : 'A') + row!.args.slice(middle + 1);
    await e.runtime.store.sql.execute('UPDATE approvals SET args = $1, expires_at = $2 WHERE id = $3', [
      edited,
      new Date(Date.now() - 60_000).toISOString(),
      first,
    ]);
    // The same call again: the unreadable one is expired (not left open forever) and a new one asked.
    const again = await ask();
    expect(again.code).toBe('APPROVAL_PENDING');
    expect(again.approval_id).not.toBe(first);
    const [expired] = await e.runtime.store.sql.query<{ state: string }>(
      'SELECT state FROM approvals WHERE id = $1',
      [first],
    );
    expect(expired?.state).toBe('expired');
    const records = await storedAuditRecords(e.config, e.runtime.audit);
    expect(records.filter((r) => r.approval_id === first && r.event === 'expired')).toHaveLength(1);

    // A pending one that does not open can still be denied (it runs nothing).
    const second = String(again.approval_id);
    await e.runtime.store.sql.execute('UPDATE approvals SET args = $1 WHERE id = $2', [edited, second]);
    await e.runtime.desk.decide(second, { approve: false, approver: APPROVER, reason: 'unreadable' });
    const [denied] = await e.runtime.store.sql.query<{ state: string }>(
      'SELECT state FROM approvals WHERE id = $1',
      [second],
    );
    expect(denied?.state).toBe('denied');
    expect(e.sandbox.sift.requests('POST', '/v205/users/:id/labels')).toHaveLength(0);
  });
});
