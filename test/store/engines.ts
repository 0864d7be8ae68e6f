/**
 * The two store engines for the contract suites: every suite runs once per engine. SQLite always;
 * PostgreSQL when a server listens on 127.0.0.1:5432 (FRAUDGATE_TEST_PG_URL overrides the URL),
 * each run in its own schema (dropped afterwards), since other test runs share the server.
 *
 * `open()` returns two stores on ONE database: two processes (SQLite: one file) or two replicas
 * (PostgreSQL: one schema), so the suites can check what each sees of the other's writes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll } from 'vitest';
import { DEFAULTS, type Config } from '../../src/config.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { listening } from '../helpers/services.ts';

export const PG_URL =
  process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres:postgres@127.0.0.1:5432/postgres';

export const pgListening = await listening(5432);

let warned = false;
function warnOnce() {
  if (pgListening || warned) return;
  warned = true;
  process.stderr.write('store tests: PostgreSQL part skipped: nothing listens on 127.0.0.1:5432\n');
}

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A fresh schema name no other run uses. */
export const uniqueSchema = () => `fg_test_${process.pid}_${randomBytes(4).toString('hex')}`;

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

export interface Engine {
  name: 'SQLite' | 'PostgreSQL';
  skip: boolean;
  /** Config (merged over DEFAULTS) and secrets for one fresh database; cleaned up after the file's tests. */
  fresh(): { config: Config; secrets: { postgresUrl?: string } };
  /** Two stores on one fresh database. */
  open(): Promise<[Store, Store]>;
}

function engine(name: Engine['name']): Engine {
  const fresh = () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-store-'));
    const schema = uniqueSchema();
    cleanups.push(async () => {
      rmSync(dir, { recursive: true, force: true });
      if (name === 'PostgreSQL') await dropSchema(schema);
    });
    const config: Config = {
      ...DEFAULTS,
      data_dir: dir,
      store: name === 'SQLite' ? 'sqlite' : 'postgres',
      store_postgres: { ...DEFAULTS.store_postgres, schema, pool_size: 4, startup_timeout_ms: 2_000 },
    };
    return { config, secrets: name === 'SQLite' ? {} : { postgresUrl: PG_URL } };
  };
  return {
    name,
    skip: name === 'PostgreSQL' && !pgListening,
    fresh,
    async open() {
      warnOnce();
      const { config, secrets } = fresh();
      const a = await openStore(config, secrets);
      const b = await openStore(config, secrets);
      // Registered after the schema's cleanup, so (run in reverse) the stores close before it is dropped.
      cleanups.push(async () => {
        await a.close();
        await b.close();
      });
      return [a, b];
    },
  };
}

export const ENGINES: Engine[] = [engine('SQLite'), engine('PostgreSQL')];
