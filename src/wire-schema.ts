/**
 * The JSON Schemas a client sees in `tools/list`, made from the tools' zod schemas without the
 * bytes that tell a model (or a validator) nothing: every client re-reads the catalogue into its
 * context, so its size is paid on every conversation.
 *
 * What is dropped says nothing the rest of the schema does not already say:
 * - `pattern` beside a standard `format` (email, ipv4, date-time…): zod writes its own regex for
 *   the format; the format names the rule, and the server still checks it with zod.
 * - `propertyNames: {type: "string"}`: JSON object keys are always strings.
 * - integer bounds of ±(2^53−1): zod's marker for "a safe integer", not a limit anyone sets.
 * - `$schema`: MCP schemas default to JSON Schema 2020-12.
 * Parts a schema uses more than once (the same zod value, e.g. a score entry or a user id) become
 * `$defs` with a local `$ref`, when that is smaller than writing them out each time.
 *
 * Output schemas describe rather than repeat: they name each result field and give the meaning,
 * enum or shape where there is one, without bare types, `required` or `additionalProperties: false`
 * (the server checks every result against the tool's zod schema before answering, so a client
 * learns nothing from them), and a
 * part marked with `describedOutput()` (src/tool.ts) — another tool's result, a dry run's plan — is
 * one line saying what it is instead of its schema again.
 *
 * Input validation is unchanged: arguments are validated by the zod schemas in the pipeline, never
 * by these documents (test/wire-schema.test.ts checks both accept and refuse the same values).
 */
import * as z from 'zod';
import { describedOutputs } from './tool.ts';
import { isObject } from './is-object.ts';

type Json = Record<string, unknown>;

/** Formats whose zod-generated `pattern` only restates the format. */
const STANDARD_FORMATS = new Set(['email', 'ipv4', 'ipv6', 'date-time', 'date', 'time', 'uuid', 'uri']);
const SAFE_INTEGER = Number.MAX_SAFE_INTEGER;

/** The compact wire JSON Schema of a zod schema, as the input (`io: 'input'`) or output side. */
export function wireJsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  const params = io === 'output' ? { io, override: describeMarkedParts } : { io };
  const inline = inlineSmallDefs(hoistEverywhere(compact(z.toJSONSchema(schema, params) as Json, io)));
  const referenced = compact(z.toJSONSchema(schema, { ...params, reused: 'ref' }) as Json, io);
  // Hoisting needs the union's branches written out, and leaves some definitions used once.
  const shared = inlineSmallDefs(hoistEverywhere(inlineSmallDefs(referenced)));
  return JSON.stringify(shared).length < JSON.stringify(inline).length ? shared : inline;
}

/** A part marked with `describedOutput()` becomes its one-line description. */
function describeMarkedParts(ctx: { zodSchema: unknown; jsonSchema: Json }): void {
  const marked = describedOutputs.get(ctx.zodSchema as z.ZodType);
  if (!marked) return;
  for (const key of Object.keys(ctx.jsonSchema)) delete ctx.jsonSchema[key];
  ctx.jsonSchema.description = marked.description;
}

function compact(node: Json, io: 'input' | 'output'): Json {
  const out: Json = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$schema') continue;
    if (key === 'type' && typeImpliedByValues(node)) continue;
    if (key === 'additionalProperties' && isEmptySchema(value)) continue;
    if (io === 'output' && key === 'additionalProperties' && value === false) continue;
    if (io === 'output' && key === 'required') continue;
    if (io === 'output' && key === 'type' && impliedByShape(node)) continue;
    if (key === 'pattern' && typeof node.format === 'string' && STANDARD_FORMATS.has(node.format)) continue;
    if (key === 'propertyNames' && isPlainStringSchema(value)) continue;
    if (key === 'minLength' && value === 1 && patternRefusesEmpty(node.pattern)) continue;
    if (node.type === 'integer' && key === 'minimum' && value === -SAFE_INTEGER) continue;
    if (node.type === 'integer' && key === 'maximum' && value === SAFE_INTEGER) continue;
    out[key] = compactValue(value, io);
    if (io === 'output' && key === 'properties' && isObject(out[key])) out[key] = namedOnly(out[key]);
  }
  return mergeNullable(out);
}

function hoistEverywhere(root: Json): Json {
  const groups: Json[] = [];
  const walk = (node: Json): Json => {
    const walked = Object.fromEntries(
      Object.entries(node).map(([key, value]) => [
        key,
        Array.isArray(value)
          ? value.map((item: unknown) => (isObject(item) ? walk(item) : item))
          : isObject(value) && key !== '$defs'
            ? walk(value)
            : value,
      ]),
    );
    return hoistUnionProperties(walked, groups);
  };
  const hoisted = walk(root);
  if (groups.length === 0) return hoisted;
  const defs = { ...((hoisted.$defs ?? {}) as Json) };
  groups.forEach((group, i) => (defs[`${GROUP_PREFIX}${i}`] = group));
  return { ...hoisted, $defs: defs };
}

const GROUP_PREFIX = 'shared_fields_';

/**
 * A `oneOf` of closed objects (a discriminated union) whose branches share property entries, e.g.
 * the session and device fields of every event kind, or the account fields of two of them:
 * - entries in every branch move to the union's node, written once;
 * - entries shared by some branches move to a `$defs` entry those branches include (`allOf`/`$ref`);
 * - `unevaluatedProperties: false` on the union's node closes the object instead of each branch's
 *   `additionalProperties: false`.
 * A property passes when the union's node, the one matching branch or what that branch includes
 * declares it, exactly as before; `required` stays in the branches.
 */
function hoistUnionProperties(node: Json, groups: Json[]): Json {
  const branches = node.oneOf;
  if (!Array.isArray(branches) || branches.length < 2 || 'properties' in node) return node;
  const closedObjects = branches.every(
    (b: Json) =>
      b.type === 'object' &&
      b.additionalProperties === false &&
      typeof b.properties === 'object' &&
      Object.keys(b).every((k) =>
        ['type', 'properties', 'required', 'additionalProperties', 'description'].includes(k),
      ),
  );
  if (!closedObjects) return node;
  const props = (branches as Json[]).map((b) => b.properties as Record<string, unknown>);
  // Which branches hold each identical entry (same name, same schema).
  const holders = new Map<string, { name: string; schema: unknown; branches: number[] }>();
  props.forEach((properties, i) => {
    for (const [name, schema] of Object.entries(properties)) {
      const key = `${name}\u0000${JSON.stringify(schema)}`;
      const entry = holders.get(key) ?? { name, schema, branches: [] };
      entry.branches.push(i);
      holders.set(key, entry);
    }
  });
  const everywhere: Record<string, unknown> = {};
  const bySet = new Map<string, { branches: number[]; properties: Record<string, unknown> }>();
  for (const { name, schema, branches: holding } of holders.values()) {
    if (holding.length === branches.length) everywhere[name] = schema;
    else if (holding.length > 1) {
      const set = bySet.get(holding.join()) ?? { branches: holding, properties: {} };
      set.properties[name] = schema;
      bySet.set(holding.join(), set);
    }
  }
  // A group pays for itself when its entries, written once more per extra branch, outweigh a `$ref`.
  const included = new Map<number, string[]>();
  const moved = new Set<string>();
  for (const { branches: holding, properties } of bySet.values()) {
    const size = JSON.stringify(properties).length;
    if (size * (holding.length - 1) <= 60 * holding.length) continue;
    const ref = `#/$defs/${GROUP_PREFIX}${groups.length}`;
    groups.push({ properties });
    for (const i of holding) {
      included.set(i, [...(included.get(i) ?? []), ref]);
      for (const name of Object.keys(properties)) moved.add(`${i}\u0000${name}`);
    }
  }
  if (Object.keys(everywhere).length === 0 && included.size === 0) return node;
  // The union's node says `type: object` once for every branch.
  const opened = (branches as Json[]).map(
    ({ additionalProperties: _closed, type: _object, properties, ...branch }, i) => ({
      ...(included.has(i) ? { allOf: included.get(i)!.map(($ref) => ({ $ref })) } : {}),
      ...branch,
      properties: Object.fromEntries(
        Object.entries(properties as Record<string, unknown>).filter(
          ([name]) => !(name in everywhere) && !moved.has(`${i}\u0000${name}`),
        ),
      ),
    }),
  );
  return { type: 'object', ...node, properties: everywhere, oneOf: opened, unevaluatedProperties: false };
}

/** Keywords that constrain only their own JSON type, so adding `"null"` to `type` leaves them as they were. */
const TYPE_SCOPED = new Set([
  'type',
  'description',
  'title',
  'default',
  'format',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'items',
  'minItems',
  'maxItems',
  'uniqueItems',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'minProperties',
  'maxProperties',
]);

/**
 * `{"anyOf": [X, {"type": "null"}]}` becomes X with `"null"` added to its `type` (or to its `enum`):
 * the same values pass, in a third of the bytes. Only where X's keywords apply to its own type alone.
 */
function mergeNullable(node: Json): Json {
  const alternatives = node.anyOf;
  if (!Array.isArray(alternatives) || alternatives.length !== 2) return node;
  const nullAt = alternatives.findIndex((a) => isNullSchema(a));
  if (nullAt === -1) return node;
  const other = alternatives[1 - nullAt] as Json;
  if (other === null || typeof other !== 'object' || Array.isArray(other)) return node;
  const { anyOf: _alternatives, ...siblings } = node;
  if (Array.isArray(other.enum) && !('type' in other)) {
    const { enum: values, ...rest } = other;
    if (!Object.keys(rest).every((k) => TYPE_SCOPED.has(k))) return node;
    return { ...rest, enum: [...(values as unknown[]), null], ...siblings };
  }
  if (!('type' in other) || !Object.keys(other).every((k) => TYPE_SCOPED.has(k))) return node;
  const types = Array.isArray(other.type) ? other.type : [other.type];
  if (types.includes('null')) return { ...other, ...siblings };
  return { ...other, type: [...types, 'null'], ...siblings };
}

function isNullSchema(value: unknown): boolean {
  return (
    value !== null &&
    typeof value === 'object' &&
    Object.keys(value).length === 1 &&
    (value as Json).type === 'null'
  );
}

function compactValue(value: unknown, io: 'input' | 'output'): unknown {
  if (Array.isArray(value)) return value.map((item) => compactValue(item, io));
  if (value !== null && typeof value === 'object') return compact(value as Json, io);
  return value;
}

/** `minLength: 1` beside a pattern the empty string does not match (e.g. `^[a-z]+$`) adds nothing. */
function patternRefusesEmpty(pattern: unknown): boolean {
  if (typeof pattern !== 'string') return false;
  try {
    return !new RegExp(pattern, 'u').test('');
  } catch {
    return false;
  }
}

/**
 * A result field whose schema is a bare type (`{"type": "string"}`, no meaning, no constraint) is
 * listed by name alone: the name says what it holds, and the server checks the value (zod) before
 * answering. Fields with a description, an enum or a shape keep their schema.
 */
function namedOnly(properties: Json): Json {
  return Object.fromEntries(
    Object.entries(properties).map(([name, schema]) => [
      name,
      isObject(schema) && Object.keys(schema).length === 1 && 'type' in schema ? {} : schema,
    ]),
  );
}

/**
 * In an output schema, `properties` already says "an object" and `items` "an array": the type is
 * only restated (the result's top level keeps its `type: object`, which MCP requires).
 */
function impliedByShape(node: Json): boolean {
  return (node.type === 'object' && 'properties' in node) || (node.type === 'array' && 'items' in node);
}

/** `{"type": "string", "enum": ["a", "b"]}` says no more than `{"enum": ["a", "b"]}`; same for `const`. */
function typeImpliedByValues(node: Json): boolean {
  const values = Array.isArray(node.enum) ? node.enum : 'const' in node ? [node.const] : undefined;
  const type = node.type;
  if (!values || values.length === 0 || typeof type !== 'string') return false;
  return values.every((v) => (type === 'integer' ? Number.isInteger(v) : typeof v === type));
}

/** `{}` accepts anything: as `additionalProperties` it is the default. */
function isEmptySchema(value: unknown): boolean {
  return (
    value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0
  );
}

function isPlainStringSchema(value: unknown): boolean {
  return (
    value !== null &&
    typeof value === 'object' &&
    Object.keys(value).length === 1 &&
    (value as Json).type === 'string'
  );
}

/**
 * zod turns every reused zod value into a `$defs` entry, even a bare `{"type":"boolean"}`; keep an
 * entry only where one copy plus its `$ref`s is smaller than writing it out at each use, then
 * rename the survivors `d0`, `d1`… (zod's `__schema0` says nothing more).
 */
function inlineSmallDefs(schema: Json): Json {
  let current = schema;
  for (;;) {
    const defs = (current.$defs ?? {}) as Record<string, Json>;
    const uses = new Map<string, number>();
    JSON.stringify(current, (key, value: unknown) => {
      if (key === '$ref' && typeof value === 'string') uses.set(value, (uses.get(value) ?? 0) + 1);
      return value;
    });
    const inline = Object.entries(defs).find(([name, def]) => {
      const n = uses.get(`#/$defs/${name}`) ?? 0;
      const size = JSON.stringify(def).length;
      const ref = `{"$ref":"#/$defs/${name}"}`.length;
      return n * size <= n * ref + size + name.length + 3;
    });
    if (!inline) break;
    const [name, def] = inline;
    const { [name]: _dropped, ...rest } = defs;
    current = replaceRefs({ ...current, $defs: rest }, `#/$defs/${name}`, def) as Json;
  }
  const defs = (current.$defs ?? {}) as Record<string, Json>;
  const { $defs: _all, ...body } = current;
  if (Object.keys(defs).length === 0) return body;
  const names = new Map(Object.keys(defs).map((name, i) => [`#/$defs/${name}`, `#/$defs/d${i}`]));
  const renamed = JSON.parse(
    JSON.stringify({
      ...body,
      $defs: Object.fromEntries(Object.values(defs).map((def, i) => [`d${i}`, def])),
    }),
    (key, value: unknown) =>
      key === '$ref' && typeof value === 'string' ? (names.get(value) ?? value) : value,
  ) as Json;
  return renamed;
}

/** Every `{"$ref": ref, …siblings}` becomes the definition merged with its siblings (siblings win). */
function replaceRefs(node: unknown, ref: string, def: Json): unknown {
  if (Array.isArray(node)) return node.map((item) => replaceRefs(item, ref, def));
  if (node === null || typeof node !== 'object') return node;
  const { $ref, ...siblings } = node as Json;
  const walked = Object.fromEntries(Object.entries(siblings).map(([k, v]) => [k, replaceRefs(v, ref, def)]));
  if ($ref === ref) return { ...def, ...walked };
  return $ref === undefined ? walked : { $ref, ...walked };
}
