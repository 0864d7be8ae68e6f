/**
 * The approval console in a real browser (playwright-core driving Debian's chromium), against the
 * real console handler on a small node:http server, the real runtime and the emulators. An agent's
 * `apply_label` call waits on a real MCP client while the approver clicks in the page.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/auth/authenticator.ts';
import { createConsoleHandler, type ConsoleDeps } from '../../src/console/console.ts';
import type { Principal } from '../../src/tool.ts';
import { ANALYST, setup, type DeepPartial, type TestEnv } from '../helpers/setup.ts';
import type { Config } from '../../src/config.ts';
import { labelRequest } from '../helpers/approvals.ts';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(`Skipping console browser tests: ${CHROMIUM} is missing (apt-get install -y chromium).`);
}

const APPROVER: Principal = { id: 'alice.approver@example.com', kind: 'user', role: 'approver' };
/** The analyst who requests actions, who also holds the approver role: four-eyes must stop them. */
const SELF_APPROVER: Principal = { ...ANALYST, role: 'approver' };
const TOKENS: Record<string, Principal> = {
  'approver-token': APPROVER,
  'viewer-token': { id: 'vic.viewer@example.com', kind: 'user', role: 'viewer' },
  'self-token': SELF_APPROVER,
};
/** A real Authenticator over a fixed token table (the HTTP engineer's API keys/JWT sit behind the same seam). */
const authenticate: Authenticator = async (token) => {
  const principal = TOKENS[token];
  return principal ? { ok: true, principal } : { ok: false, reason: 'unknown or invalid token' };
};

const LABELS = ['POST', '/v205/users/:user_id/labels'] as const;
const LABEL_ARGS = {
  user_id: 'sandbox-high-risk',
  is_bad: true,
  abuse_type: 'payment_abuse',
  description: 'Card testing: <img src=x onerror=alert(1)> 14 cards in 3 minutes',
};

let browser: Browser;
let env: TestEnv | undefined;
let server: Server | undefined;
let base = '';
let contexts: BrowserContext[] = [];
let context: BrowserContext | undefined;
let pageErrors: string[] = [];

async function start(config: DeepPartial<Config>, options: Partial<ConsoleDeps> = {}) {
  env = await setup({ config });
  const handler = createConsoleHandler({ runtime: env.runtime, authenticate, ...options });
  server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return env;
}

async function openPage(): Promise<Page> {
  context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const errors: string[] = [];
  pageErrors = errors;
  page.on('pageerror', (error) => errors.push(String(error)));
  // CSP violations and failed script loads are reported as console errors.
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 40[1349]/.test(message.text())) errors.push(message.text());
  });
  return page;
}

async function signIn(page: Page, token: string) {
  await page.goto(`${base}/console`);
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function signedIn(token: string): Promise<Page> {
  const page = await openPage();
  await signIn(page, token);
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('body[data-loaded="pending"]').waitFor({ state: 'attached' });
  return page;
}

/** POST from inside the signed-in page (cookie and Origin as the browser sends them). */
async function postFromPage(page: Page, path: string, body: unknown, csrf: 'session' | 'none' | string) {
  return page.evaluate(
    async ({ path, body, csrf }) => {
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      if (csrf === 'session') {
        const session = (await (await fetch('/console/api/session')).json()) as { csrf_token: string };
        headers['X-CSRF-Token'] = session.csrf_token;
      } else if (csrf !== 'none') headers['X-CSRF-Token'] = csrf;
      const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { error?: { message: string } } };
    },
    { path, body, csrf },
  );
}

async function pendingApprovalId(): Promise<string> {
  const result = await env!.callTool('apply_label', LABEL_ARGS);
  expect(result.error.code).toBe('APPROVAL_PENDING');
  return result.error.approval_id as string;
}

const card = (page: Page, id: string) => page.locator(`li.card[data-approval-id="${id}"]`);

describe.skipIf(!hasChromium)('approval console in a browser', () => {
  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  afterEach(async () => {
    // Close every page first: a page left polling a closed server would only log noise.
    await Promise.all(contexts.map((c) => c.close()));
    contexts = [];
    context = undefined;
    if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = undefined;
    await env?.close();
    env = undefined;
  });

  it('signs in approvers only, with an HttpOnly SameSite=Strict cookie, and signs out', async () => {
    await start({ approvals: { wait_ms: 0 } });
    const page = await openPage();
    const response = await page.goto(`${base}/console`);
    const headers = response!.headers();
    expect(headers['content-security-policy']).toContain("default-src 'self'");
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['referrer-policy']).toBe('no-referrer');

    await signIn(page, 'not-a-token');
    await expect.poll(() => page.locator('#sign-in-error').textContent()).toContain('Sign-in refused');
    expect(await page.locator('#app').isHidden()).toBe(true);

    await signIn(page, 'viewer-token');
    await expect
      .poll(() => page.locator('#sign-in-error').textContent())
      .toContain("role 'viewer'; the approval console needs role approver or admin");
    expect(await context!.cookies()).toEqual([]);

    await signIn(page, 'approver-token');
    await page.locator('#app').waitFor({ state: 'visible' });
    expect(await page.locator('#who-name').textContent()).toContain(APPROVER.id);
    const cookies = await context!.cookies();
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({
      name: 'fraudgate_console',
      httpOnly: true,
      sameSite: 'Strict',
      path: '/console',
    });
    expect(await page.evaluate('document.cookie')).toBe(''); // string form: the test tsconfig has no DOM lib

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#sign-in').waitFor({ state: 'visible' });
    const after = await page.evaluate(async () => (await fetch('/console/api/session')).status);
    expect(after).toBe(401);
    expect(pageErrors).toEqual([]);
  });

  it('approve: the waiting agent call completes with the executed result; Sift got exactly one label', async () => {
    await start({ approvals: { wait_ms: 20_000 } });
    const page = await signedIn('approver-token');
    const call = env!.callTool('apply_label', LABEL_ARGS);

    const pending = page.locator('li.card[data-state="pending"]');
    await pending.waitFor({ state: 'visible', timeout: 10_000 });
    const text = (await pending.textContent()) ?? '';
    expect(text).toContain('apply_label');
    expect(text).toContain('sift_user:sandbox-high-risk');
    expect(text).toContain(ANALYST.id);
    expect(text).toContain('Current decision');
    expect(text).toMatch(/Score\s*score 94 · critical · payment_abuse/);
    // What approving does, in one sentence, and who may approve.
    expect(await pending.locator('.effect').textContent()).toBe(
      "Label sandbox-high-risk as BAD (fraudulent) for payment_abuse in Sift; this trains Sift's model and can change what happens to the customer.",
    );
    expect(text).toContain('An approver other than the requester must approve');
    expect(text).toMatch(/expires in \d/);
    // Untrusted arguments are shown exactly, as text: the <img onerror> never became an element.
    expect(await pending.locator('pre.args').first().textContent()).toBe(JSON.stringify(LABEL_ARGS, null, 2));
    expect(await page.locator('li.card img').count()).toBe(0);
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(0);

    await pending.getByLabel('Reason').fill('Matches the card-testing ring from case 42');
    await pending.getByRole('button', { name: 'Approve' }).click();

    const result = await call;
    expect(result.isError).toBe(false);
    expect(result.output).toMatchObject({
      user_id: 'sandbox-high-risk',
      abuse_type: 'payment_abuse',
      is_bad: true,
    });
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(1);
    expect(env!.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();

    await pending.waitFor({ state: 'detached' });
    // The approver is told what was decided and, followed, what became of it.
    const confirmation = page.locator('#confirmation');
    await confirmation.waitFor({ state: 'visible' });
    expect(await confirmation.textContent()).toContain('Approved apply_label on sift_user:sandbox-high-risk');
    await page.locator('#confirmation[data-outcome="executed"]').waitFor({ timeout: 10_000 });
    expect(await confirmation.textContent()).toContain('Done: it ran');

    await page.getByRole('button', { name: 'History' }).click();
    const done = page.locator('li.card[data-state="executed"]');
    await done.waitFor({ state: 'visible' });
    const history = (await done.textContent()) ?? '';
    expect(history).toContain(`approved by ${APPROVER.id}`);
    // A decided item says when it was decided, not when it would have expired.
    expect(history).toMatch(/decided \d+s ago/);
    expect(history).not.toContain('expires');
    expect(await page.locator('#confirmation').isVisible()).toBe(true);
    await page.getByRole('button', { name: 'Dismiss' }).click();
    expect(await page.locator('#confirmation').isHidden()).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it('deny: a reason is required; the agent gets APPROVAL_DENIED and Sift got nothing', async () => {
    await start({ approvals: { wait_ms: 20_000 } });
    const page = await signedIn('approver-token');
    const call = env!.callTool('apply_label', LABEL_ARGS);
    const pending = page.locator('li.card[data-state="pending"]');
    await pending.waitFor({ state: 'visible', timeout: 10_000 });

    await pending.getByRole('button', { name: 'Deny' }).click();
    expect(await pending.locator('.error').textContent()).toBe('Give a reason to deny.');

    await pending.getByLabel('Reason').fill('Known good customer; travel explains the velocity');
    await pending.getByRole('button', { name: 'Deny' }).click();
    const result = await call;
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('APPROVAL_DENIED');
    expect(result.error.message).toContain('Known good customer');
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(0);
    await page.locator('#confirmation[data-outcome="denied"]').waitFor();
    expect(await page.locator('#confirmation').textContent()).toContain(
      'Denied apply_label on sift_user:sandbox-high-risk',
    );
    expect(pageErrors).toEqual([]);
  });

  it('four-eyes: the requester sees a disabled Approve that says why, and a forced POST is refused', async () => {
    await start({ approvals: { wait_ms: 0, tools: { apply_label: 'four_eyes' } } });
    const id = await pendingApprovalId();
    const page = await signedIn('self-token');
    const mine = card(page, id);
    await mine.waitFor({ state: 'visible' });
    const approve = mine.getByRole('button', { name: /Approve/ });
    expect(await approve.isDisabled()).toBe(true);
    expect(await approve.textContent()).toContain('you requested it');
    expect(await mine.locator('.note').textContent()).toContain('Four-eyes policy');

    const forced = await postFromPage(page, `/console/api/approvals/${id}/approve`, {}, 'session');
    expect(forced.status).toBe(403);
    expect(forced.body.error?.message).toContain('Four-eyes');
    expect((await env!.runtime.approvals.get(id))?.state).toBe('pending');

    // A different approver may approve it; the agent, no longer waiting, sees the decision through
    // get_approval_status and the background sweep runs it once.
    const other = await signedIn('approver-token');
    const approve2 = card(other, id).getByRole('button', { name: 'Approve' });
    expect(await approve2.isEnabled()).toBe(true);
    await approve2.click();
    await card(other, id).waitFor({ state: 'detached' });
    const status = await env!.callTool('get_approval_status', { approval_id: id });
    expect(status.output).toMatchObject({ approval_id: id, state: 'approved' });
    env!.runtime.startApprovalSweep(50);
    await expect
      .poll(async () => (await env!.runtime.approvals.get(id))?.state, { timeout: 5_000 })
      .toBe('executed');
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(1);
  });

  it('expired: shows in history as expired and cannot be approved', async () => {
    await start({ approvals: { wait_ms: 0, ttl_ms: 800 } });
    const id = await pendingApprovalId();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const page = await signedIn('approver-token');
    expect(await card(page, id).count()).toBe(0);
    expect(await page.locator('#empty').textContent()).toBe('No pending approvals.');

    await page.getByRole('button', { name: 'History' }).click();
    const expired = card(page, id);
    await expired.waitFor({ state: 'visible' });
    expect(await expired.getAttribute('data-state')).toBe('expired');
    expect(await expired.textContent()).toContain('expired without a decision');
    expect(await expired.getByRole('button', { name: 'Approve' }).count()).toBe(0);

    const forced = await postFromPage(page, `/console/api/approvals/${id}/approve`, {}, 'session');
    expect(forced.status).toBe(409);
    expect(forced.body.error?.message).toContain('already expired');
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(0);
  });

  it('CSRF: a POST without the token, with a wrong one, or from a foreign Origin is refused and decides nothing', async () => {
    await start({ approvals: { wait_ms: 0 } });
    const id = await pendingApprovalId();
    const page = await signedIn('approver-token');
    const path = `/console/api/approvals/${id}/approve`;

    const none = await postFromPage(page, path, {}, 'none');
    expect(none.status).toBe(403);
    expect(none.body.error?.message).toContain('CSRF');
    const wrong = await postFromPage(page, path, {}, 'x'.repeat(43));
    expect(wrong.status).toBe(403);

    // Right cookie and token, but sent by another site: the Origin check refuses it.
    const cookie = (await context!.cookies())[0]!;
    const csrf = await page.evaluate(
      async () => ((await (await fetch('/console/api/session')).json()) as { csrf_token: string }).csrf_token,
    );
    const foreign = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Cookie: `${cookie.name}=${cookie.value}`,
        'X-CSRF-Token': csrf,
        Origin: 'http://evil.example',
      },
      body: '{}',
    });
    expect(foreign.status).toBe(403);
    const anonymous = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    });
    expect(anonymous.status).toBe(401);

    expect((await env!.runtime.approvals.get(id))?.state).toBe('pending');
    expect(env!.sandbox.sift.requests(...LABELS)).toHaveLength(0);
  });

  it('a phone (390 px): every card and its full evidence fit the screen; approve shows the confirmation (screenshot kept)', async () => {
    await start({ approvals: { wait_ms: 0 } });
    const page = await openPage();
    await page.setViewportSize({ width: 390, height: 844 });
    await signIn(page, 'approver-token');
    await page.locator('body[data-loaded="pending"]').waitFor({ state: 'attached' });
    const ids = [
      await pendingApprovalId(),
      (
        await env!.callTool('suppress_user', {
          user_id: 'sandbox-blocked',
          reason: 'lift after review',
          suppressed: false,
        })
      ).error.approval_id as string,
      (
        await env!.callTool('apply_decision', {
          user_id: 'sandbox-watch',
          decision_id: 'block_user_payment_abuse',
          description: 'A very long justification '.repeat(20),
        })
      ).error.approval_id as string,
    ];
    for (const id of ids) await card(page, id).waitFor({ state: 'visible', timeout: 6_000 });
    for (const summary of await page.locator('li.card details summary').all()) await summary.click();

    // Nothing scrolls sideways: not the page, not a card (the evidence used to be 622 px wide).
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    expect(
      await page.locator('li.card').evaluateAll((cards) => cards.map((c) => c.scrollWidth - c.clientWidth)),
    ).toEqual([0, 0, 0]);
    const suppression = (await card(page, ids[1]!).textContent()) ?? '';
    expect(suppression).toContain('already suppressed');
    expect(suppression).toContain('Resume marketing to sandbox-blocked');

    await card(page, ids[0]!).getByRole('button', { name: 'Approve' }).click();
    await page.locator('#confirmation').waitFor({ state: 'visible' });
    expect(await page.locator('#confirmation').textContent()).toContain(`(${ids[0]!})`);
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/console-390.png', fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('undo: an executed label shows Undo in history; Undo requests undo_action, which another approver approves; the label is gone', async () => {
    await start({ approvals: { wait_ms: 0 } });
    const id = await pendingApprovalId();
    await env!.runtime.desk.decide(id, { approve: true, approver: APPROVER });
    await env!.runtime.pipeline.processApprovals();
    expect(env!.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();

    const page = await signedIn('approver-token');
    await page.getByRole('button', { name: 'History' }).click();
    const done = card(page, id);
    await done.waitFor({ state: 'visible' });
    await done.getByRole('button', { name: 'Undo' }).click();
    expect(await done.locator('.error').textContent()).toBe('Give a reason to undo.');
    await done.getByLabel(/Undo \(until/).fill('Labelled the wrong account');
    await done.getByRole('button', { name: 'Undo' }).click();
    await page.locator('#confirmation[data-outcome="undo_requested"]').waitFor();
    const text = (await page.locator('#confirmation').textContent()) ?? '';
    const undoId = /apr_[a-z0-9]{20}/.exec(text)?.[0];
    expect(text).toContain('another approver must approve it');
    const undo = await env!.runtime.approvals.get(undoId!);
    expect(undo).toMatchObject({
      tool: 'undo_action',
      requester: APPROVER.id,
      mode: 'four_eyes',
      state: 'pending',
    });
    // Nothing is undone until a second person approves.
    expect(env!.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeDefined();
    await env!.runtime.desk.decide(undoId!, { approve: true, approver: SELF_APPROVER });
    await env!.runtime.pipeline.processApprovals();
    expect(env!.sandbox.sift.labels('sandbox-high-risk').payment_abuse).toBeUndefined();
    expect(pageErrors).toEqual([]);
  });

  it('live update: a new pending approval appears without a reload (screenshot kept)', async () => {
    await start({ approvals: { wait_ms: 0 } });
    const page = await signedIn('approver-token');
    await page.setViewportSize({ width: 1100, height: 1400 });
    expect(await page.locator('#empty').isVisible()).toBe(true);
    let navigations = 0;
    page.on('framenavigated', () => navigations++);

    // The poll's timestamp is not read out every 2 s; a separate live region announces arrivals.
    expect(await page.locator('#status').getAttribute('aria-live')).toBeNull();
    const announce = page.locator('#announce');
    expect(await announce.getAttribute('aria-live')).toBe('polite');
    const first = await pendingApprovalId();
    await card(page, first).waitFor({ state: 'visible', timeout: 6_000 });
    await expect.poll(() => announce.textContent(), { timeout: 6_000 }).toBe('1 new approval');
    const second = (
      await env!.callTool('apply_label', {
        user_id: 'sandbox-blocked',
        is_bad: false,
        abuse_type: 'account_abuse',
        description: 'Customer verified by phone; false positive',
      })
    ).error.approval_id as string;
    await card(page, second).waitFor({ state: 'visible', timeout: 6_000 });
    // Oldest first: the one closest to expiry on top.
    expect(
      await page
        .locator('li.card')
        .evaluateAll((cards) => cards.map((c) => c.getAttribute('data-approval-id'))),
    ).toEqual([first, second]);
    expect(navigations).toBe(0);

    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/console-pending.png', fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('paging: 201 pending show as "200 of 201", oldest first; Show more loads the rest', async () => {
    const e = await start({ approvals: { wait_ms: 0 } });
    const at = Date.now() - 60_000;
    for (let i = 0; i < 201; i++)
      await e.runtime.approvals.create(labelRequest(`apr_page${String(i).padStart(4, '0')}`, {}, at + i));
    const page = await signedIn('approver-token');
    await expect.poll(() => page.locator('li.card').count(), { timeout: 6_000 }).toBe(200);
    expect(await page.locator('li.card').first().getAttribute('data-approval-id')).toBe('apr_page0000');
    expect(await page.locator('#count').textContent()).toContain('Showing 200 of 201');
    await page.getByRole('button', { name: 'Show more' }).click();
    await card(page, 'apr_page0200').waitFor({ state: 'visible', timeout: 6_000 });
    expect(await page.locator('li.card').count()).toBe(201);
    expect(await page.locator('#more').isHidden()).toBe(true);
    expect(await page.locator('#count').textContent()).toBe('');
    expect(pageErrors).toEqual([]);
  });

  it('idle: an open tab that only polls reaches the idle timeout and shows the sign-in again', async () => {
    let clock = Date.now();
    await start({ approvals: { wait_ms: 0 } }, { idleTimeoutMs: 60_000, now: () => new Date(clock) });
    const page = await signedIn('approver-token');
    const polled = () =>
      page.waitForResponse((r) => r.url().includes('/console/api/approvals?view=pending'), {
        timeout: 6_000,
      });
    clock += 40_000;
    // Two polls: the second was certainly sent (and answered) after the clock moved.
    await polled();
    expect((await polled()).status()).toBe(200);
    clock += 40_000;
    // 80 s after sign-in, with only polls in between: the session has ended.
    await page.locator('#sign-in').waitFor({ state: 'visible', timeout: 6_000 });
    expect(await page.locator('#sign-in-error').textContent()).toMatch(/session ended/);
    expect(pageErrors).toEqual([]);
  });
});
