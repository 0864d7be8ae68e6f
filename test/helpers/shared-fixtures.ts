/**
 * Vendor-recorded payloads (captured requests of the real client libraries, the vendors' own test
 * vectors) live outside the project, in `../shared/fixtures` beside a checkout, because they are
 * not ours to redistribute. Tests that replay them run when that folder is there and are skipped
 * otherwise; test/global-setup.ts says so once per run. Everything else the tests need is in the
 * project. FRAUDGATE_SHARED_FIXTURES points elsewhere (or at nothing, to try a bare clone).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const SHARED_FIXTURES = resolve(
  process.env.FRAUDGATE_SHARED_FIXTURES ?? join(import.meta.dirname, '../../../shared/fixtures'),
);

export const sharedFixturesPresent = existsSync(SHARED_FIXTURES);

/** The parsed JSON of `<vendor>/<name>` in the shared fixtures (call only in tests skipped without them). */
export function sharedFixture<T = Record<string, unknown>>(vendor: string, name: string): T {
  return JSON.parse(readFileSync(join(SHARED_FIXTURES, vendor, name), 'utf8')) as T;
}

export function sharedFixtureNames(vendor: string, pattern: RegExp): string[] {
  return readdirSync(join(SHARED_FIXTURES, vendor)).filter((name) => pattern.test(name));
}
