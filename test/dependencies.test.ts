/**
 * Exactly one copy of zod in the installed tree: a second copy type-checks against the wrong
 * instance and the SDK's schema conversion silently degrades (shared/contracts/mcp.md, pitfall 1).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

function findPackages(dir: string, name: string, found: string[] = []): string[] {
  const modules = join(dir, 'node_modules');
  if (!existsSync(modules)) return found;
  for (const entry of readdirSync(modules)) {
    if (entry.startsWith('.')) continue;
    const scoped = entry.startsWith('@')
      ? readdirSync(join(modules, entry)).map((e) => join(entry, e))
      : [entry];
    for (const pkg of scoped) {
      const path = join(modules, pkg);
      if (pkg === name && existsSync(join(path, 'package.json'))) {
        found.push(
          `${path}@${(JSON.parse(readFileSync(join(path, 'package.json'), 'utf8')) as { version: string }).version}`,
        );
      }
      findPackages(path, name, found);
    }
  }
  return found;
}

describe('dependency tree', () => {
  it('holds exactly one zod, and it is zod 4', () => {
    const copies = findPackages(join(import.meta.dirname, '..'), 'zod');
    expect(copies).toHaveLength(1);
    expect(copies[0]).toMatch(/@4\./);
  });
});
