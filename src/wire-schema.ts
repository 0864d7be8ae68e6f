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
 * Output schemas describe rather than repeat: they name each result field with its type and
 * meaning, without `required` or `additionalProperties: false` (the server checks every result
 * against the tool's zod schema before answering, so a client learns nothing from them), and a
 * part marked with `describedOutput()` (src/tool.ts) — another tool's result, a dry run's plan — is
 * one line saying what it is instead of its schema again.
 *
 * Input validation is unchanged: arguments are validated by the zod schemas in the pipeline, never
 * by these documents (test/wire-schema.test.ts checks both accept and refuse the same values).
 */
import * as z from 'zod';
import { describedOutputs } from './tool.ts';

type Json = Record<string, unknown>;

/** Formats whose zod-generated `pattern` only restates the format. */
const STANDARD_FORMATS = new Set(['email', 'ipv4', 'ipv6', 'date-time', 'date', 'time', 'uuid', 'uri']);
const SAFE_INTEGER = Number.MAX_SAFE_INTEGER;

/** The compact wire JSON Schema of a zod schema, as the input (`io: 'input'`) or output side. */
export function wireJsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  const params = io === 'output' ? { io, override: describeMarkedParts } : { io };
  const inline = hoistEverywhere(compact(z.toJSONSchema(schema, params) as Json, io));
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
    if (key === 'pattern' && typeof node.format === 'string' && STANDARD_FORMATS.has(node.format)) continue;
    if (key === 'propertyNames' && isPlainStringSchema(value)) continue;
    if (node.type === 'integer' && key === 'minimum' && value === -SAFE_INTEGER) continue;
    if (node.type === 'integer' && key === 'maximum' && value === SAFE_INTEGER) continue;
    out[key] = compactValue(value, io);
  }
  return mergeNullable(out);
}

/**
 * A `oneOf` of closed objects (a discriminated union) that share property entries, e.g. the session
 * and device fields of every event kind: the shared entries move to the union's node, written once,
 * and `unevaluatedProperties: false` there closes the object instead of each branch's
 * `additionalProperties: false`. A property passes when the union's node or the one matching branch
 * declares it, exactly as before; `required` stays in the branches.
 */
function hoistEverywhere(node: Json): Json {
  const walked = Object.fromEntries(
    Object.entries(node).map(([key, value]) => [
      key,
      Array.isArray(value)
        ? value.map((item: unknown) => (isObject(item) ? hoistEverywhere(item) : item))
        : isObject(value)
          ? hoistEverywhere(value)
          : value,
    ]),
  );
  return hoistCommonProperties(walked);
}

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function hoistCommonProperties(node: Json): Json {
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
  const [first, ...rest] = branches as { properties: Record<string, unknown> }[];
  const common = Object.keys(first!.properties).filter((name) => {
    const entry = JSON.stringify(first!.properties[name]);
    return rest.every((b) => name in b.properties && JSON.stringify(b.properties[name]) === entry);
  });
  if (common.length === 0) return node;
  const properties = Object.fromEntries(common.map((name) => [name, first!.properties[name]]));
  // The union's node says `type: object` once for every branch.
  const opened = (branches as Json[]).map(({ additionalProperties: _closed, type: _object, ...branch }) => ({
    ...branch,
    properties: Object.fromEntries(
      Object.entries(branch.properties as Record<string, unknown>).filter(([name]) => !common.includes(name)),
    ),
  }));
  return { type: 'object', ...node, properties, oneOf: opened, unevaluatedProperties: false };
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
