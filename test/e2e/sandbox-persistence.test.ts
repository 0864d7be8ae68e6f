/**
 * A sandbox that remembers, through the real CLI: commands run while a server is up act on that
 * server's emulators (what `sync scores` writes, the server's tools read); emulator data survives a
 * restart; `sandbox show` prints what each emulator holds for a user; `sandbox reset` starts over
 * (refused while a server uses the sandbox). Plus the persisted pieces in-process: emulator state
 * and the development token.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { createSiftClient } from '../../src/clients/sift-client.ts';
import { resetSandbox, sandboxDevToken, startPersistentSandbox } from '../../src/sandbox/sandbox.ts';
import { CLI, cliEnv, connectServe } from '../helpers/cli.ts';

let dataDir: string;
const env = () => cliEnv(dataDir, { FRAUDGATE_ANALYST: 'ana.analyst@example.com' });

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: env(), timeout: 90_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const startServer = () => connectServe('persistence-test', env());

const call = async (client: Client, name: string, args: Record<string, unknown>) =>
  JSON.stringify((await client.callTool({ name, arguments: args })).structuredContent ?? {});

const syncChanged = async () => {
  const run = await cli(['sync', 'scores']);
  expect(run.code, run.stderr).toBe(0);
  return (JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { counters: { changed: number } }).counters
    .changed;
};

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-persist-'));
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('the sandbox through the CLI', () => {
  it(
    'CLI commands use the running server’s emulators; data survives a restart; reset starts over',
    { timeout: 300_000 },
    async () => {
      const first = await startServer();
      try {
        expect(await syncChanged()).toBe(3);
        // The server reads what the CLI wrote: one sandbox, not a private copy per command.
        expect(await call(first, 'lookup_user', { user_id: 'sandbox-high-risk' })).toContain(
          '"Sift_Score__c":94',
        );
        const refused = await cli(['sandbox', 'reset']);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toMatch(
          /Cannot reset the sandbox: sandbox: a fraudgate process \(pid \d+\) is using it/,
        );
        await call(first, 'send_sift_event', {
          event: { event_type: 'login', user_id: 'persisted-user', login_status: 'success' },
        });
      } finally {
        await first.close();
      }

      const second = await startServer();
      try {
        expect(await call(second, 'lookup_user', { user_id: 'sandbox-high-risk' })).toContain(
          '"Sift_Score__c":94',
        );
        const score = await second.callTool({
          name: 'get_sift_score',
          arguments: { user_id: 'persisted-user' },
        });
        expect(score.isError).toBeFalsy();
      } finally {
        await second.close();
      }
      expect(await syncChanged()).toBe(0);

      const shown = await cli(['sandbox', 'show', 'sandbox-high-risk']);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(/^ {2}Sift\n {4}score payment_abuse: 0\.94$/m);
      expect(shown.stdout).toMatch(/^ {4}trait email: "sandbox-high-risk@example\.com"$/m);
      expect(shown.stdout).toMatch(/^ {4}Account \w{18}: .*"Sift_Score__c":94/m);
      const json = JSON.parse((await cli(['sandbox', 'show', 'persisted-user', '--json'])).stdout) as {
        sift: unknown;
      };
      expect(json.sift).not.toBeNull();

      const reset = await cli(['sandbox', 'reset']);
      expect(reset.code).toBe(0);
      const after = await cli(['sandbox', 'show', 'persisted-user']);
      expect(after.stdout).toContain('no scoreable events (unknown to Sift)');
      expect(await syncChanged()).toBe(3);
    },
  );
});

describe('persisted pieces', () => {
  it('emulator data (a Sift label) is restored by the next start from the same data dir', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-persist-unit-'));
    try {
      const first = await startPersistentSandbox(DEFAULTS, dir);
      const sift = createSiftClient({
        baseUrl: first.sift.url,
        apiKey: first.sift.apiKey,
        accountId: first.sift.accountId,
      });
      await sift.addLabel('sandbox-watch', {
        isBad: true,
        abuseType: 'payment_abuse',
        description: 'persisted',
        source: 'fraudgate',
        analyst: 'ana.analyst@example.com',
      });
      await sift.close();
      await first.close();
      const second = await startPersistentSandbox(DEFAULTS, dir);
      expect(second.sift.labels('sandbox-watch').payment_abuse).toMatchObject({ is_bad: true });
      await second.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the development token is created once, kept, and replaced after a reset', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-persist-token-'));
    try {
      const token = sandboxDevToken(dir, undefined);
      expect(token).toMatch(/^[\w-]{32}$/);
      expect(sandboxDevToken(dir, undefined)).toBe(token);
      expect(sandboxDevToken(dir, 'from-env')).toBe('from-env');
      await resetSandbox(dir);
      expect(sandboxDevToken(dir, undefined)).not.toBe(token);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
