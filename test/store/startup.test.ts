/**
 * PostgreSQL unreachable at start-up: `serve --http` retries for `store_postgres.startup_timeout_ms`,
 * then exits 1 with one line naming the server without its credentials and what to check — it never
 * hangs without listening.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('store start-up', () => {
  it('an unreachable PostgreSQL ends start-up with exit 1 and a message naming it without credentials', async () => {
    dir = mkdtempSync(join(tmpdir(), 'fraudgate-startup-'));
    const config = join(dir, 'fraudgate.json');
    writeFileSync(
      config,
      JSON.stringify({
        store: 'postgres',
        store_postgres: { startup_timeout_ms: 1500 },
        rate_limits: { store: 'memory' },
      }),
    );
    // Port 9 (discard) on loopback: nothing listens, so every connection attempt is refused.
    const child = spawn(process.execPath, [CLI, 'serve', '--http', '--port', '0', '--config', config], {
      env: {
        PATH: process.env.PATH,
        HOME: dir,
        FRAUDGATE_DATA_DIR: join(dir, 'data'),
        FRAUDGATE_POSTGRES_URL: 'postgres://fraudgate:s3cret-pw@127.0.0.1:9/fraudgate',
        FRAUDGATE_AUDIT_KEY: 'k',
        FRAUDGATE_LOG_LEVEL: 'error',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    const last = stderr.trim().split('\n').at(-1) ?? '';
    expect(last).toMatch(
      /^fraudgate: PostgreSQL at 127\.0\.0\.1:9 does not answer \(ECONNREFUSED\): retried for 2 s/,
    );
    expect(last).toContain('FRAUDGATE_POSTGRES_URL');
    expect(stderr).not.toContain('s3cret-pw');
    expect(stderr).not.toContain('internal error');
  }, 30_000);
});
