/**
 * The compact catalogue (src/wire-schema.ts) loses no validation: for every tool, a JSON Schema
 * validator accepts and refuses exactly the same arguments and results with the compact schema as
 * with zod's full one. Values come from the full schema (mostly valid, with random breakage), so
 * both outcomes are exercised for every tool.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { tools } from '../tools/index.ts';
import { toWireTool } from '../src/server.ts';
import { describedOutput, dryRunResultSchema, inputSchemaOf } from '../src/tool.ts';
import { wireJsonSchema } from '../src/wire-schema.ts';

type Json = Record<string, unknown>;
const addFormats = addFormatsImport as unknown as (ajv: Ajv2020) => Ajv2020;

function validator() {
  return addFormats(new Ajv2020({ strict: false, allErrors: false }));
}

/** Resolves local `$ref`s (the full schemas have none; the compact ones point into `$defs`). */
function arbitraryFor(schema: Json, root: Json = schema, depth = 0): fc.Arbitrary<unknown> {
  if (typeof schema.$ref === 'string') {
    const name = schema.$ref.replace('#/$defs/', '');
    return arbitraryFor((root.$defs as Record<string, Json>)[name] ?? {}, root, depth);
  }
  const broken = fc.oneof(fc.constant(null), fc.integer(), fc.string({ maxLength: 4 }), fc.constant({}));
  const valid = validArbitrary(schema, root, depth);
  // Mostly well-formed values, so refusals come from the rules deep inside, not the first field.
  return fc.oneof({ arbitrary: valid, weight: 9 }, { arbitrary: broken, weight: 1 });
}

function validArbitrary(schema: Json, root: Json, depth: number): fc.Arbitrary<unknown> {
  const alternatives = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (alternatives) return fc.oneof(...alternatives.map((s) => arbitraryFor(s, root, depth + 1)));
  if ('const' in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]), 'not-in-enum');
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'string': {
      if (schema.format === 'email') return fc.constantFrom('ana@example.com', 'not an email');
      if (schema.format === 'date-time') return fc.constantFrom('2026-01-02T03:04:05Z', '2026-13-40');
      if (schema.format === 'ipv4') return fc.constantFrom('10.1.2.3', '300.1.2.3');
      if (schema.format === 'ipv6') return fc.constantFrom('2001:db8::1', '2001:::1');
      if (typeof schema.pattern === 'string') {
        return fc.oneof(fc.stringMatching(new RegExp(schema.pattern, 'u')), fc.string({ maxLength: 3 }));
      }
      return fc.string({ maxLength: Math.min(Number(schema.maxLength ?? 40) + 2, 300) });
    }
    case 'integer':
      return fc.integer({ min: -5, max: 1000 });
    case 'number':
      return fc.double({ min: -1, max: 200, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array':
      return fc.array(arbitraryFor((schema.items as Json | undefined) ?? {}, root, depth + 1), {
        maxLength: depth > 3 ? 0 : 3,
      });
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Json>;
      const required = new Set((schema.required ?? []) as string[]);
      const entries = Object.fromEntries(
        Object.entries(properties).map(([k, s]) => [k, arbitraryFor(s, root, depth + 1)]),
      );
      const optional = Object.keys(properties).filter((k) => !required.has(k));
      return fc
        .tuple(
          fc.record(entries, { requiredKeys: [...required].filter((k) => k in entries) }),
          fc.option(fc.constantFrom(...optional, 'unexpected_field'), { nil: undefined }),
        )
        .map(([value, drop]) => {
          const copy = { ...(value as Json) };
          if (drop === 'unexpected_field') copy.unexpected_field = 1;
          return copy;
        });
    }
    default:
      return fc.anything({ maxDepth: 1 });
  }
}

function sameVerdicts(full: Json, compact: Json) {
  const ajv = validator();
  const checkFull = ajv.compile(full);
  const checkCompact = ajv.compile(compact);
  const verdicts = { accepted: 0, refused: 0 };
  fc.assert(
    fc.property(arbitraryFor(full), (value) => {
      const verdict = checkFull(value);
      verdicts[verdict ? 'accepted' : 'refused'] += 1;
      expect(checkCompact(value), JSON.stringify(value)).toBe(verdict);
    }),
    { numRuns: 300, seed: 11 },
  );
  return verdicts;
}

describe('compact tool schemas', () => {
  for (const tool of tools) {
    it(`${tool.name}: the compact input schema accepts and refuses what the full one does`, () => {
      const full = z.toJSONSchema(inputSchemaOf(tool), { io: 'input' }) as Json;
      const verdicts = sameVerdicts(full, toWireTool(tool).inputSchema as Json);
      expect(verdicts.accepted).toBeGreaterThan(0);
      expect(verdicts.refused).toBeGreaterThan(0);
    });

    it(`${tool.name}: the output schema accepts what the full one does`, () => {
      const output = tool.risk === 'read' ? tool.output : z.union([tool.output, dryRunResultSchema]);
      const full = z.toJSONSchema(output, { io: 'output' }) as Json;
      // Output schemas drop `additionalProperties: false` (the server checks its own results with
      // zod before answering), so they may accept more, never less.
      const ajv = validator();
      const checkFull = ajv.compile(full);
      const checkCompact = ajv.compile(toWireTool(tool).outputSchema as Json);
      fc.assert(
        fc.property(arbitraryFor(full), (value) => {
          if (checkFull(value)) expect(checkCompact(value)).toBe(true);
        }),
        { numRuns: 200, seed: 11 },
      );
    });
  }

  it('shares a part used more than once through $defs, and inlines a part used once', () => {
    const id = z
      .string()
      .min(1)
      .max(255)
      .regex(/^[a-z0-9_-]+$/)
      .describe('A user id, e.g. "u_1".');
    const shared = wireJsonSchema(z.object({ a: id, b: id, c: id, d: z.boolean() }), 'input');
    expect(shared.$defs).toEqual({ d0: expect.objectContaining({ pattern: '^[a-z0-9_-]+$' }) });
    expect(shared.properties).toMatchObject({ a: { $ref: '#/$defs/d0' }, d: { type: 'boolean' } });
    const single = wireJsonSchema(z.object({ a: id }), 'input');
    expect(single.$defs).toBeUndefined();
  });

  it('drops only what says nothing: zod format regexes, string key names, safe-integer bounds', () => {
    const schema = wireJsonSchema(
      z.strictObject({
        email: z.email(),
        n: z.number().int(),
        bag: z.record(z.string(), z.number()),
        kind: z.enum(['a', 'b']),
      }),
      'input',
    );
    expect(schema).toEqual({
      type: 'object',
      properties: {
        email: { type: 'string', format: 'email' },
        n: { type: 'integer' },
        bag: { type: 'object', additionalProperties: { type: 'number' } },
        kind: { enum: ['a', 'b'] },
      },
      required: ['email', 'n', 'bag', 'kind'],
      additionalProperties: false,
    });
  });

  it('output schemas describe: no required or closed objects, and a marked part is one line', () => {
    const entry = z.strictObject({ score: z.number().describe('0–1'), reasons: z.array(z.string()) });
    const schema = wireJsonSchema(
      z.strictObject({ own: entry, embedded: describedOutput(entry, 'As in get_sift_score.') }),
      'output',
    );
    // `properties` says "object" and `items` says "array": output schemas do not restate the type
    // (the server puts `type: object` back on the result's top level, as MCP requires).
    expect(schema).toEqual({
      properties: {
        own: {
          properties: {
            score: { type: 'number', description: '0–1' },
            reasons: { items: { type: 'string' } },
          },
        },
        embedded: { description: 'As in get_sift_score.' },
      },
    });
  });

  it('a nullable value is one schema with "null" in its type or enum', () => {
    const schema = wireJsonSchema(
      z.strictObject({ n: z.number().int().min(0).nullable(), band: z.enum(['low', 'high']).nullable() }),
      'input',
    );
    expect(schema.properties).toEqual({
      n: { type: ['integer', 'null'], minimum: 0 },
      band: { enum: ['low', 'high', null] },
    });
  });

  it('a discriminated union writes shared fields once and still refuses fields of another branch', () => {
    const context = { ip: z.ipv4().optional(), note: z.string().max(20).optional() };
    const account = {
      email: z.email().optional().describe('The account email, as the customer gave it.'),
      name: z.string().max(50).optional().describe('The account holder name, as given.'),
    };
    const union = z.discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('a'), ...context, ...account }),
      z.strictObject({ kind: z.literal('b'), ...context, ...account, extra: z.boolean().optional() }),
      z.strictObject({ kind: z.literal('c'), ...context, amount: z.number() }),
    ]);
    const schema = wireJsonSchema(z.strictObject({ event: union }), 'input');
    const event = (schema.properties as Record<string, Json>).event!;
    expect(Object.keys(event.properties as Json)).toEqual(['ip', 'note']);
    expect(event.unevaluatedProperties).toBe(false);
    // In every branch: on the union's node; in two of three: one shared definition.
    expect(JSON.stringify(schema).match(/"email":/g)).toHaveLength(1);
    const check = validator().compile(schema);
    expect(check({ event: { kind: 'a', ip: '10.0.0.1', email: 'a@example.com' } })).toBe(true);
    expect(check({ event: { kind: 'b', name: 'x', extra: true } })).toBe(true);
    expect(check({ event: { kind: 'c', amount: 1, note: 'n' } })).toBe(true);
    expect(check({ event: { kind: 'c', amount: 1, email: 'a@example.com' } })).toBe(false);
    expect(check({ event: { kind: 'a', extra: true } })).toBe(false);
    expect(check({ event: { kind: 'a', unknown: 1 } })).toBe(false);
    expect(check({ event: { kind: 'c' } })).toBe(false);
  });
});
