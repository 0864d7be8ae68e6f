/**
 * The data key is checked at start-up: the first start stores a known value sealed under it, and a
 * later start (or another replica) with a different FRAUDGATE_DATA_KEY refuses to start, saying the
 * key differs from the one the database was sealed with, instead of failing on every sealed row.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { createFieldCipher } from '../../src/store/field-crypto.ts';
import { openStore } from '../../src/store/store.ts';
import { dropSchema, PG_URL, pgListening, uniqueSchema } from '../store/engines.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
let dir: string | undefined;
let schema: string | undefined;
afterEach(async () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
  if (schema) await dropSchema(schema);
  schema = undefined;
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        timeout: 90_000,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: dir!,
          FRAUDGATE_DATA_DIR: join(dir!, 'data'),
          FRAUDGATE_AUDIT_KEY: 'a'.repeat(64),
          ...env,
        },
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: number; killed?: boolean }) | null;
        resolve({ code: e ? (e.killed ? null : (e.code ?? 1)) : 0, stdout, stderr });
      },
    ).stdin?.end();
  });
}

const REFUSAL =
  /FRAUDGATE_DATA_KEY differs from the key this database was sealed with.*Start with the original key/s;

describe('data key check at start-up', { timeout: 120_000 }, () => {
  it('a second start with a different data key on the same data dir refuses with the message', async () => {
    dir = mkdtempSync(join(tmpdir(), 'fraudgate-keycheck-'));
    const original = randomBytes(32).toString('hex');
    const first = await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: original });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const other = await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: randomBytes(32).toString('hex') });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(REFUSAL);
    expect(other.stderr).not.toContain(original);
    // The original key still starts.
    expect((await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: original })).code).toBe(0);
  });

  it('a database sealed before the key check refuses another key on its first start', async () => {
    dir = mkdtempSync(join(tmpdir(), 'fraudgate-keycheck-pre32-'));
    const original = randomBytes(32);
    const store = await openStore(
      { ...DEFAULTS, data_dir: join(dir, 'data') },
      {},
      {
        cipher: createFieldCipher(original),
      },
    );
    await store.outbox.enqueueRouted({ entityType: 'user', entityId: 'u-1', decisionId: 'd-1', time: 1 }, [
      { effect: 'sift_event', tool: 'send_sift_event', args: { email: 'x@example.com' } },
    ]);
    // As the version before the check left it: sealed rows, no check value.
    await store.sql.execute('DELETE FROM key_check');
    await store.close();
    const other = await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: randomBytes(32).toString('hex') });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(REFUSAL);
    // The wrong key did not become the check value: the right key starts, and then only it.
    const right = await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: original.toString('hex') });
    expect(right.stderr).toBe('');
    expect(right.code).toBe(0);
    const again = await cli(['approvals', 'list'], { FRAUDGATE_DATA_KEY: randomBytes(32).toString('hex') });
    expect(again.stderr).toMatch(REFUSAL);
  });

  it.skipIf(!pgListening)('PostgreSQL: a replica started with another data key refuses', async () => {
    dir = mkdtempSync(join(tmpdir(), 'fraudgate-keycheck-pg-'));
    schema = uniqueSchema();
    const configFile = join(dir, 'pg.json');
    writeFileSync(configFile, JSON.stringify({ store: 'postgres', store_postgres: { schema } }));
    const env = (key: string) => ({ FRAUDGATE_POSTGRES_URL: PG_URL, FRAUDGATE_DATA_KEY: key });
    const original = randomBytes(32).toString('hex');
    const first = await cli(['approvals', 'list', '--config', configFile], env(original));
    expect(first.code).toBe(0);
    const other = await cli(
      ['approvals', 'list', '--config', configFile],
      env(randomBytes(32).toString('hex')),
    );
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(REFUSAL);
  });
});
