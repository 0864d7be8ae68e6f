/**
 * Canonical JSON (stable key order) and SHA-256: what argument hashes, approval binding and the audit
 * chain are computed over. A module of its own, free of the redactor's patterns, because the approval
 * policy version is computed at every start-up before anything else needs the redactor.
 */
import { createHash } from 'node:crypto';

/**
 * Stable JSON: object keys sorted by UTF-16 code unit, `undefined`/functions/symbols dropped from
 * objects (null in arrays), `toJSON` honoured, non-finite numbers as null — JSON.stringify's
 * semantics with a fixed key order, so equal data always hashes equally. Throws on cycles and
 * bigints, as JSON.stringify does. Used for argument hashes, approval binding and the audit chain.
 */
export function canonicalJson(value: unknown): string {
  // Most values already list their keys in order (the redactor's copies, schema-shaped arguments):
  // then the native serialiser writes the same text several times faster than `encode`.
  if (isInCanonicalOrder(value)) return JSON.stringify(value) ?? 'null';
  return encode(value, []) ?? 'null';
}

/** Nesting the order check follows before leaving a value to `encode` (which also detects cycles). */
const MAX_ORDER_CHECK_DEPTH = 32;

/**
 * Whether `JSON.stringify(value)` is exactly `canonicalJson(value)`: every object plain (no `toJSON`, no
 * class instance or boxed primitive, which `encode` walks differently) with its keys already
 * sorted (JSON.stringify writes them in `Object.keys` order), every array without holes, and no
 * bigint (whose error `encode` words itself). Anything else, and anything deeper than
 * {@link MAX_ORDER_CHECK_DEPTH}, goes the slow way.
 */
export function isInCanonicalOrder(value: unknown): boolean {
  return inCanonicalOrder(value, 0);
}

function inCanonicalOrder(value: unknown, depth: number): boolean {
  if (typeof value !== 'object' || value === null) return typeof value !== 'bigint';
  if (depth >= MAX_ORDER_CHECK_DEPTH) return false;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return false;
    for (let i = 0; i < value.length; i += 1) {
      if (!(i in value) || !inCanonicalOrder(value[i], depth + 1)) return false;
    }
    return true;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return false;
  const record = value as Record<string, unknown>;
  let previous: string | undefined;
  for (const key in record) {
    if (!Object.hasOwn(record, key)) return false;
    if (previous !== undefined && !(previous < key)) return false;
    previous = key;
    if (!inCanonicalOrder(record[key], depth + 1)) return false;
  }
  return true;
}

function encode(input: unknown, stack: object[]): string | undefined {
  let value = input;
  if (
    value !== null &&
    typeof value === 'object' &&
    typeof (value as { toJSON?: unknown }).toJSON === 'function'
  ) {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'bigint':
      throw new TypeError('canonicalJson: bigint values have no JSON form');
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  const object = value as object;
  // The open objects, as deep as the nesting: searching a few entries beats a Set's hashing, and
  // every audit record pays for this.
  if (stack.includes(object)) throw new TypeError('canonicalJson: circular structure');
  stack.push(object);
  try {
    if (Array.isArray(object)) {
      return `[${object.map((item: unknown) => encode(item, stack) ?? 'null').join(',')}]`;
    }
    const record = object as Record<string, unknown>;
    const keys = Object.keys(record);
    if (keys.length > 1) keys.sort();
    let out = '';
    for (const key of keys) {
      const encoded = encode(record[key], stack);
      if (encoded !== undefined) out += `${out ? ',' : '{'}${JSON.stringify(key)}:${encoded}`;
    }
    return out ? `${out}}` : '{}';
  } finally {
    stack.pop();
  }
}

/** SHA-256 of UTF-8 text, lower-case hex. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
