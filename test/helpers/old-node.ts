/**
 * A Node older than the project needs, to prove that fraudgate and the test runner refuse it with
 * one clear line: the first `node` on PATH outside this project whose version is below `engines`.
 * Machines without one skip those tests (the caller says so).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '../..');

/** `engines.node` of package.json as [major, minor] (">=22.19.0" → [22, 19]). */
export function requiredNode(): [number, number] {
  const engines = (
    JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }
  ).engines.node;
  const match = /^>=\s*(\d+)\.(\d+)\.\d+$/.exec(engines);
  if (!match) throw new Error(`unexpected engines.node ${engines}`);
  return [Number(match[1]), Number(match[2])];
}

export function findOldNode(): { path: string; version: string } | undefined {
  const [major, minor] = requiredNode();
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir || dir.includes('node_modules')) continue;
    const path = join(dir, 'node');
    if (!existsSync(path)) continue;
    try {
      const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '');
      const [a = 0, b = 0] = version.split('.').map(Number);
      if (a < major || (a === major && b < minor)) return { path, version };
    } catch {
      // not runnable: try the next one
    }
  }
  return undefined;
}
