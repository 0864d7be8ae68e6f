/**
 * Bounds on tool-call arguments, checked before anything else looks at them (validation, audit,
 * logging): a single cheap, non-recursive pass, so a hostile value (thousands of levels deep,
 * millions of keys, a megabyte string) is refused before any recursive code — the zod schemas,
 * the redactor, canonical hashing, JSON.stringify — can overflow the stack or burn the CPU on it.
 *
 * Also here: the summary that refused calls leave in the audit instead of their arguments (hash,
 * size, top-level field names), computed without recursion and without holding a copy.
 */
import { createHash } from 'node:crypto';

/** The limits a tool call's arguments must stay within; every tool's real arguments fit far inside. */
export const ARGUMENT_LIMITS = {
  /** Nesting of objects and arrays below the arguments object itself. */
  max_depth: 16,
  /** Object keys plus array items, counted over the whole value. */
  max_entries: 1_000,
  /** Characters in any one string (keys included). */
  max_string_length: 16_384,
  /** Characters in all strings and keys together, plus a few per scalar: the size of the arguments. */
  max_total_size: 65_536,
} as const;

export type ArgumentLimit = keyof typeof ARGUMENT_LIMITS;

/**
 * Keys that mean something to JavaScript objects. A strict zod schema would quietly drop
 * `__proto__` (it is not an own data property after a plain assignment), and merging such a key
 * into an object can change its prototype; they are refused by name instead.
 */
export const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Why arguments were refused before validation: the field (dotted path) and a message naming the limit. */
export interface BoundsProblem {
  field: string;
  message: string;
  /** The limit broken, when a limit was (absent for reserved keys and non-object arguments). */
  limit?: ArgumentLimit;
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const child = (path: string, key: string | number) =>
  typeof key === 'number' ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`;

/**
 * The first problem with `args` as tool-call arguments, or undefined when they are within bounds.
 * `undefined` arguments are fine (the call has none); anything but a plain object is refused.
 */
export function checkArgumentBounds(args: unknown): BoundsProblem | undefined {
  if (args === undefined) return undefined;
  if (!isPlainObject(args)) {
    const kind = args === null ? 'null' : Array.isArray(args) ? 'an array' : `a ${typeof args}`;
    return {
      field: 'arguments',
      message: `must be a JSON object of named arguments, not ${kind}; see the tool's inputSchema`,
    };
  }
  const limits = ARGUMENT_LIMITS;
  let entries = 0;
  let size = 0;
  // Explicit stack instead of recursion: depth is exactly what an attacker controls.
  const stack: { value: unknown; depth: number; path: string }[] = [{ value: args, depth: 0, path: '' }];
  while (stack.length > 0) {
    const { value, depth, path } = stack.pop()!;
    if (typeof value === 'string') {
      if (value.length > limits.max_string_length) {
        return {
          field: path || 'arguments',
          limit: 'max_string_length',
          message: `is longer than ${limits.max_string_length} characters (limit max_string_length)`,
        };
      }
      size += value.length + 2;
    } else if (typeof value === 'object' && value !== null) {
      if (depth > limits.max_depth) {
        return {
          field: path,
          limit: 'max_depth',
          message: `nests deeper than ${limits.max_depth} levels (limit max_depth)`,
        };
      }
      if (Array.isArray(value)) {
        entries += value.length;
        if (entries > limits.max_entries) return tooManyEntries(path);
        for (let i = value.length - 1; i >= 0; i--)
          stack.push({ value: value[i], depth: depth + 1, path: child(path, i) });
      } else {
        const keys = Object.keys(value);
        entries += keys.length;
        if (entries > limits.max_entries) return tooManyEntries(path);
        for (let i = keys.length - 1; i >= 0; i--) {
          const key = keys[i]!;
          if (RESERVED_KEYS.has(key)) {
            return {
              field: child(path, key),
              message: `'${key}' is a reserved name and cannot be an argument; remove it`,
            };
          }
          if (key.length > limits.max_string_length) {
            return {
              field: path || 'arguments',
              limit: 'max_string_length',
              message: `has a key longer than ${limits.max_string_length} characters (limit max_string_length)`,
            };
          }
          size += key.length + 3;
          stack.push({
            value: (value as Record<string, unknown>)[key],
            depth: depth + 1,
            path: child(path, key),
          });
        }
      }
      size += 2;
    } else {
      // Numbers, booleans, null: a JSON scalar is at most a couple of dozen characters.
      size += 8;
    }
    if (size > limits.max_total_size) {
      return {
        field: 'arguments',
        limit: 'max_total_size',
        message: `are larger than ${limits.max_total_size} characters in all (limit max_total_size); send less`,
      };
    }
  }
  return undefined;
}

function tooManyEntries(path: string): BoundsProblem {
  return {
    field: path || 'arguments',
    limit: 'max_entries',
    message: `hold more than ${ARGUMENT_LIMITS.max_entries} keys and items in all (limit max_entries)`,
  };
}

/** What the audit keeps of a refused call's arguments: enough to recognise them, nothing to read. */
export interface ArgumentSummary {
  /** SHA-256 of the canonical JSON of the arguments (keys sorted), as `args_hash` elsewhere. */
  sha256: string;
  /** UTF-8 bytes of that canonical JSON. */
  bytes: number;
  /** The top-level field names, at most {@link MAX_SUMMARY_FIELDS}, each cut to 64 characters. */
  fields: string[];
  /** How many top-level fields there were, when more than the names listed. */
  fields_total?: number;
  /** `object`, `array`, `string`, … : the shape of non-object arguments. */
  type?: string;
}

const MAX_SUMMARY_FIELDS = 32;

/**
 * A bounded summary of any JSON value, whatever its depth or size: canonical JSON is streamed into
 * the hash piece by piece from an explicit stack, so nothing recurses and no copy is built.
 * Matches `sha256Hex(canonicalJson(value))` for plain JSON data.
 */
export function summarizeArguments(value: unknown): ArgumentSummary {
  const hash = createHash('sha256');
  let bytes = 0;
  const emit = (text: string) => {
    hash.update(text, 'utf8');
    bytes += Buffer.byteLength(text, 'utf8');
  };
  // A work item is either literal text to emit or a value to encode.
  const stack: ({ text: string } | { value: unknown })[] = [{ value }];
  while (stack.length > 0) {
    const item = stack.pop()!;
    if ('text' in item) {
      emit(item.text);
      continue;
    }
    const v = item.value;
    if (typeof v === 'string' || typeof v === 'boolean') emit(JSON.stringify(v));
    else if (typeof v === 'number') emit(Number.isFinite(v) ? JSON.stringify(v) : 'null');
    else if (Array.isArray(v)) {
      stack.push({ text: ']' });
      for (let i = v.length - 1; i >= 0; i--) {
        stack.push({ value: v[i] ?? null });
        if (i > 0) stack.push({ text: ',' });
      }
      stack.push({ text: '[' });
    } else if (isPlainObject(v)) {
      const keys = Object.keys(v)
        .filter((k) => v[k] !== undefined && typeof v[k] !== 'function')
        .sort();
      stack.push({ text: '}' });
      for (let i = keys.length - 1; i >= 0; i--) {
        stack.push({ value: v[keys[i]!] });
        stack.push({ text: `${i > 0 ? ',' : ''}${JSON.stringify(keys[i])}:` });
      }
      stack.push({ text: '{' });
    } else emit('null');
  }
  const summary: ArgumentSummary = { sha256: hash.digest('hex'), bytes, fields: [] };
  if (isPlainObject(value)) {
    const names = Object.keys(value);
    summary.fields = names.slice(0, MAX_SUMMARY_FIELDS).map((k) => k.slice(0, 64));
    if (names.length > MAX_SUMMARY_FIELDS) summary.fields_total = names.length;
  } else {
    summary.type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  }
  return summary;
}
