/**
 * With `store: postgres`, rate limits default to Redis: only the commands that take tool calls need
 * FRAUDGATE_REDIS_URL. The ones that read or administer the store (audit verify, approvals list…)
 * work without it; serve refuses, naming the variable and the per-replica alternative.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropSchema, PG_URL, pgListening } from '../store/engines.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const SCHEMA = `fixc_noredis_${process.pid}`;
let dir: string;
let configFile: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args, '--config', configFile],
      {
        timeout: 90_000,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: dir,
          FRAUDGATE_DATA_DIR: join(dir, 'data'),
          FRAUDGATE_POSTGRES_URL: PG_URL,
          FRAUDGATE_AUDIT_KEY: 'a'.repeat(64),
          FRAUDGATE_APPROVER_TOKEN: 'unused',
        },
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: number; killed?: boolean }) | null;
        resolve({ code: e ? (e.killed ? null : (e.code ?? 1)) : 0, stdout, stderr });
      },
    ).stdin?.end();
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-noredis-'));
  configFile = join(dir, 'pg.json');
  writeFileSync(configFile, JSON.stringify({ store: 'postgres', store_postgres: { schema: SCHEMA } }));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (pgListening) await dropSchema(SCHEMA);
});

describe.skipIf(!pgListening)('store postgres without FRAUDGATE_REDIS_URL', { timeout: 120_000 }, () => {
  it('audit verify and approvals list work: they never rate-limit', async () => {
    const verify = await cli(['audit', 'verify']);
    expect(verify.stderr).not.toContain('FRAUDGATE_REDIS_URL');
    expect(verify.code).toBe(0);
    const approvals = await cli(['approvals', 'list']);
    expect(approvals.stderr).not.toContain('FRAUDGATE_REDIS_URL');
    expect(approvals.code).toBe(0);
  });

  it('serve refuses, naming FRAUDGATE_REDIS_URL and the per-replica alternative', async () => {
    const serve = await cli(['serve', '--http', '--port', '0']);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain('FRAUDGATE_REDIS_URL');
    expect(serve.stderr).toContain('rate_limits.store to memory');
  });
});
