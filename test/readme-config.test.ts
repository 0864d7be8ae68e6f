/**
 * The README documents every configuration key: each leaf of the schema (through nested objects, not
 * into maps whose keys are the operator's, such as `approvals.tools`) is named in a code span of
 * README.md, as its dotted path (`http.body_limit_bytes`), its own name (`body_limit_bytes` in the
 * `http.*` list), a brace list (`rate_limits.{read,write,destructive}`), or a documented parent map
 * (`mapping.case_resolutions`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as z from 'zod';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.ts';

/** Decided at start-up (--sandbox or credentials), refused in the file: not a setting to document. */
const NOT_SETTINGS = new Set(['mode']);

function unwrap(schema: z.ZodType): z.ZodType {
  let node = schema;
  while (['optional', 'default', 'nullable'].includes(node.def.type)) {
    node = (node.def as unknown as { innerType: z.ZodType }).innerType;
  }
  return node;
}

function leafPaths(schema: z.ZodType, path: string[] = []): string[][] {
  const node = unwrap(schema);
  if (node.def.type !== 'object') return [path];
  return Object.entries((node as z.ZodObject).shape).flatMap(([key, child]) =>
    leafPaths(child as z.ZodType, [...path, key]),
  );
}

/** Every name a code span of the README holds, braces expanded: `a.{b,c}` gives a.b and a.c. */
function documentedNames(readme: string): Set<string> {
  const spans = [...readme.replace(/```\w*\n/g, '').matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
  const names = new Set<string>();
  for (const span of spans) {
    for (const [, prefix = '', list] of span.matchAll(/([\w.]*)\{([\w,]+)\}/g)) {
      for (const item of list!.split(',')) names.add(prefix + item);
    }
    for (const token of span.split(/[^\w.]+/)) if (token) names.add(token.replace(/\.+$/, ''));
  }
  return names;
}

describe('README configuration', () => {
  it('names every configuration key', () => {
    const names = documentedNames(readFileSync(join(import.meta.dirname, '../README.md'), 'utf8'));
    const undocumented = leafPaths(configSchema)
      .filter((path) => !NOT_SETTINGS.has(path.join('.')))
      .filter((path) => {
        const leaf = path.at(-1)!;
        // The path itself, or any tail of it ending in the leaf (`jwt.audience`, `body_limit_bytes`).
        for (let start = 0; start < path.length; start++)
          if (names.has(path.slice(start).join('.'))) return false;
        // A parent documented as a whole (a map of names the operator may change).
        for (let end = 2; end < path.length; end++) if (names.has(path.slice(0, end).join('.'))) return false;
        return !names.has(leaf);
      })
      .map((path) => path.join('.'));
    expect(undocumented).toEqual([]);
  });
});
