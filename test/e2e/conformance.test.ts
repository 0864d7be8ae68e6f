/**
 * The official MCP conformance suite's generic server scenarios against `fraudgate serve --http`
 * (scripts/conformance.sh: one scenario per run, a token-injecting proxy, no false passes).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('MCP conformance (generic server scenarios)', () => {
  it('passes every scenario', { timeout: 180_000 }, async () => {
    const script = join(import.meta.dirname, '../../scripts/conformance.sh');
    let output: string;
    try {
      const { stdout } = await run('bash', [script], {
        env: { ...process.env, NODE: process.execPath },
        timeout: 170_000,
      });
      output = stdout;
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string };
      throw new Error(`conformance failed:\n${e.stdout ?? ''}\n${e.stderr ?? ''}`, { cause: error });
    }
    for (const scenario of ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection']) {
      expect(output).toMatch(new RegExp(`ok +${scenario}`));
    }
    // The guard against false passes: scenarios calling fixture tools this server lacks must fail.
    for (const scenario of ['tools-call-simple-text', 'tools-call-error']) {
      expect(output).toMatch(new RegExp(`ok +${scenario} +refused as it should be`));
    }
    expect(output).not.toContain('FAIL');
  });
});
