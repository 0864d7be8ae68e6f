/**
 * Personal-data redaction and canonical hashing for the audit trail and approval binding.
 *
 * Redaction masks what a reader should not see and tags it with a keyed hash (HMAC-SHA256 under
 * an operator-held key), so one customer can be followed across records without the log holding
 * anything reversible: without the key, nobody can confirm a guessed email against a tag.
 */
import { createHmac } from 'node:crypto';
import { isIP, isIPv6 } from 'node:net';

/** Hex characters kept from the HMAC in tags (`#a1b2c3d4`): enough to correlate, too few to matter alone. */
export const HASH_TAG_LENGTH = 8;

/** What replaces a secret (password, token, API key, card data) wholesale. */
export const REDACTED = '[REDACTED]';

/**
 * A personal yes/no value (`custom_fields.hiv_positive: true`), masked alike whether true or false:
 * a keyed hash of one of two values would still tell them apart to anyone who sees a few records.
 * `null` stays: it says only that no value was sent.
 */
export const MASKED_FLAG = '***';

/**
 * Masks personal data and secrets. Both methods are pure and deterministic for a given key, and
 * applying `redactValue` to its own output changes nothing, so layers may redact defensively.
 */
export interface Redactor {
  /**
   * A deep copy of `value` with personal data masked and secrets replaced, safe to persist.
   * Keys that name personal data (`email`, `$phone`, `first_name`, …) have their values
   * keyed-hashed; keys that name secrets (`password`, `api_key`, `card_*`, …) become `[REDACTED]`;
   * every other string has emails, phone numbers and IPs masked in place. Numbers, booleans,
   * ids, timestamps and amounts outside those keys are kept. The result is plain JSON data:
   * Dates become ISO strings, bigints strings, binary a size note, cycles `[Circular]`.
   * `fields` corrects the key-name reading where a caller knows better ({@link FieldClasses}).
   */
  redactValue(value: unknown, fields?: FieldClasses): unknown;
  /**
   * The keyed hash behind every tag: HMAC-SHA256 of the normalised value (emails lower-cased,
   * phones reduced to digits, other text trimmed, lower-cased, single-spaced), hex, truncated to
   * {@link HASH_TAG_LENGTH}. Lets an operator search the log for one customer's records.
   */
  hashPersonal(value: string): string;
  /**
   * What `redactValue` writes in place of the IP address `address` (`203.0.113.x#tag`,
   * `2001:db8:85a3::x#tag`), for text built around an address that must read like the rest of
   * the ledger. `address` must be an IP address (net.isIP).
   */
  maskIp(address: string): string;
}

/**
 * Paths (dotted, `[]` for array items: `score.reasons[].name`) whose class the key name gets wrong.
 * `personal`: hashed whatever the key (a map whose keys the model picks: `custom_fields`); inside, keys
 * are kept and every leaf hashed. `notPersonal`: a key read as personal that is not (a Sift reason's
 * `name`): masked like any other text (emails, phones, IPs inside it still are). Secret keys stay secret.
 */
export interface FieldClasses {
  personal?: readonly string[];
  notPersonal?: readonly string[];
}

export interface RedactorOptions {
  /** The HMAC key. Keep it secret and stable: changing it breaks correlation with older records. */
  hashKey: string | Buffer;
}

// Email: a run of local-part characters (any script: `josé.garcía@…`), not starting mid-token,
// then a dotted domain (internationalised too).
const EMAIL =
  /(?<![\p{L}\p{M}\p{N}_.%+'-])([\p{L}\p{M}\p{N}_.%+'-]+)@((?:[\p{L}\p{M}\p{N}-]+\.)+\p{L}[\p{L}\p{M}]+)(?![\p{L}\p{M}\p{N}_-])/gu;
// Runs of IPv6 text (hex digits, dots, at least one colon), each taken whole: which part of a run is
// an address is decided in code (ipv6Candidate), never by backtracking, so matching stays linear on
// hostile text (nested `[0-9A-Fa-f:.]*` groups took minutes on 16 KiB of colons). A run never starts
// mid-token (`1:2:3:4:5:6:7:8:9` holds no address), except right after a `word:` label
// (`client:2001:db8::7`, `peer:::1`, a host name `db.example.com:2001:db8::7`, `9x:…`), where the
// colon is the label's, not the address's.
const IPV6_RUN = /(?:(?<![\w:.])|(?<=(?<![\w.:-])[A-Za-z0-9_][\w.-]*:))[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*/g;
const WORD_CHAR = /\w/;
// A label made only of hex digits (`dead:`, `cafe:`), or dotted (an IPv4 address or host before the
// colon: `203.0.113.7:2001:db8::1`), is read into the candidate; the rest may still be an address.
// (An IPv6 group holds no dot, so a dotted first part is never the address's own.)
const HEX_LABEL = /^(?:[A-Fa-f][0-9A-Fa-f]*|[0-9A-Fa-f]*\.[0-9A-Fa-f.]*):/;
// Zero-padded octets (`203.000.113.077`) too: many tools print them, and they are the same address.
const OCTET = '0{0,2}(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
// An address followed by `.word` (a field path such as `203.0.113.7.nested`) is still an address.
const IPV4 = new RegExp(`(?<![\\w.])${OCTET}(?:\\.${OCTET}){3}(?!\\w|\\.\\d)`, 'g');
/**
 * Phones, deliberately narrow so ids, timestamps and amounts survive:
 * - international: `+` then 7–15 digits with single separators (`+44 20 7946 0958`, `+1 (415) 555-0100`),
 *   even glued to a word (`call+14155550192`, `tel:+1…`);
 * - parenthesised area code: `(415) 555-0100`;
 * - NANP groups 3-3-4, optionally after a country code 1: `415-555-0100`, `415.555.0100`,
 *   `415 555 0100`, `1-415-555-0191`;
 * - national with trunk 0: `020 7946 0958`, `07700 900123`, and pairs as in France: `06 12 34 56 78`.
 * Bare digit runs are never phones (epoch times, numeric ids), nor are dates (4-2-2 groups).
 */
const PHONE =
  /(?<![\d+.-])\+\d(?:[ ().-]{0,2}\d){6,14}(?![\w-]|\.\d)|(?<![\w+.-])(?:\(\d{2,5}\) ?\d{3,4}[ .-]?\d{3,4}|(?:1[-. ])?\d{3}(?<sep>[-. ])\d{3}\k<sep>\d{4}|0\d(?<psep>[ .-])\d{2}(?:\k<psep>\d{2}){3}|0\d{2,4}[ -]\d{3,4}(?:[ -]?\d{3,4})?)(?![\w-]|\.\d)/g;
// A signed decimal amount (`+12345.67`) matches the international shape; it is not a phone.
const SIGNED_AMOUNT = /^\+\d+\.\d{1,2}$/;
const BEARER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi;
const WHITESPACE = /\s/;
const DIGIT = /\d/;
const SECRET_QUERY = /([?&](?:api_?key|access_token|token|password|secret|signature)=)[^&#\s]+/gi;

// Shapes this module produces; re-redacting them must be a no-op.
const ALREADY_MASKED = new RegExp(
  `^(?:[^\\s@]?\\*\\*\\*(?:@[^\\s#]+)?|\\+?\\d{0,2}\\*+\\d{0,2}|(?:::[0-9a-f]+:)?[\\d.]+\\.x|[0-9a-f:]+::x)#[0-9a-f]{${HASH_TAG_LENGTH}}$`,
);

const SECRET_KEYS = new Set([
  'password',
  'passwd',
  'secret',
  'token',
  'api_key',
  'apikey',
  'authorization',
  'proxy_authorization',
  'cookie',
  'set_cookie',
  'private_key',
  'cvv',
  'cvc',
  'iban',
]);
// Partial card and bank numbers (Sift's `$card_last4`, `$account_number_last5`, `$shortened_iban_first6`).
const SECRET_SUFFIXES = ['_password', '_secret', '_token', '_api_key', '_last4', '_last5', '_first6'];
const PERSONAL_KEYS = new Set([
  'email',
  'phone',
  'mobile',
  'fax',
  'ip',
  'name',
  'first_name',
  'last_name',
  'middle_name',
  'full_name',
  'billing_name',
  'shipping_name',
  'supplied_name',
  'display_name',
  'account_holder_name',
  'username',
  'user_name',
  'address',
  'street',
  'ssn',
  'dob',
  'date_of_birth',
  'birth_date',
]);
const PERSONAL_SUFFIXES = ['_email', '_phone', '_ip', '_address', '_street', '_fax'];

type KeyClass = 'secret' | 'personal' | 'plain';

/** {@link FieldClasses} as a tree walked alongside the value. */
interface FieldNode {
  children: Map<string, FieldNode>;
  override?: 'personal' | 'notPersonal';
}

const compiledFields = new WeakMap<FieldClasses, FieldNode>();

function fieldTree(fields: FieldClasses): FieldNode {
  let root = compiledFields.get(fields);
  if (root) return root;
  root = { children: new Map() };
  const add = (path: string, override: 'personal' | 'notPersonal') => {
    let node = root!;
    for (const part of path.replace(/\[\]/g, '.[]').split('.')) {
      if (part === '') continue;
      let child = node.children.get(part);
      if (!child) node.children.set(part, (child = { children: new Map() }));
      node = child;
    }
    node.override = override;
  };
  for (const path of fields.personal ?? []) add(path, 'personal');
  for (const path of fields.notPersonal ?? []) add(path, 'notPersonal');
  compiledFields.set(fields, root);
  return root;
}

/** A key's class under a {@link FieldNode} override: secrets stay secret. */
function overridden(keyClass: KeyClass, node: FieldNode | undefined): KeyClass {
  if (node?.override === undefined || keyClass === 'secret') return keyClass;
  return node.override === 'personal' ? 'personal' : 'plain';
}

/** Nesting kept by `redactValue`; deeper parts become `[too deep]`. */
const MAX_REDACT_DEPTH = 64;

/** `$user_email`, `SuppliedEmail`, `x-api-key` and `APIKey` all reduce to snake_case without `$`. */
function normaliseKey(key: string): string {
  return (
    key
      .replace(/^\$+/, '')
      // `APIKey` → `API_Key`; a lookahead, as `([A-Z]+)([A-Z][a-z])` is quadratic on a long capital run.
      .replace(/([A-Z])(?=[A-Z][a-z])/g, '$1_')
      .replace(/([a-z\d])([A-Z])/g, '$1_$2')
      .replace(/[-\s.]+/g, '_')
      .toLowerCase()
  );
}

/**
 * Keys are mostly a schema's few field names, classified again on every record: remembered, up to
 * a bound (keys can be data too, a map keyed by ids, and must not grow memory without limit).
 */
const keyClasses = new Map<string, KeyClass>();
const KEY_CLASSES_KEPT = 4096;

function classifyKey(key: string): KeyClass {
  let known = keyClasses.get(key);
  if (known === undefined) {
    known = classifyNormalisedKey(normaliseKey(key));
    if (keyClasses.size >= KEY_CLASSES_KEPT) keyClasses.clear();
    keyClasses.set(key, known);
  }
  return known;
}

function classifyNormalisedKey(k: string): KeyClass {
  if (SECRET_KEYS.has(k) || SECRET_SUFFIXES.some((s) => k.endsWith(s))) return 'secret';
  if (k === 'card' || k.startsWith('card_') || k.startsWith('cardholder')) return 'secret';
  if (PERSONAL_KEYS.has(k) || PERSONAL_SUFFIXES.some((s) => k.endsWith(s))) return 'personal';
  return 'plain';
}

function digitsOf(text: string): string {
  return text.replace(/\D/g, '');
}

function looksLikePhone(text: string): boolean {
  const digits = digitsOf(text).length;
  return /^\+?[\d\s().-]+$/.test(text) && digits >= 7 && digits <= 15 && !SIGNED_AMOUNT.test(text);
}

// `local@domain` with a dot inside the domain, checked in code: `^[^\s@]+@[^\s@]+\.[^\s@]+$` backtracks
// quadratically on a long run of dots.
function looksLikeEmail(text: string): boolean {
  if (!/^[^\s@]+@[^\s@]+$/.test(text)) return false;
  const dot = text.indexOf('.', text.indexOf('@') + 2);
  return dot !== -1 && dot < text.length - 1;
}

/** `203.000.113.077` → `203.0.113.77`; anything else unchanged. */
function unpadIpv4(text: string): string {
  if (!/^\d{1,3}(?:\.\d{1,3}){3}$/.test(text)) return text;
  const octets = text.split('.').map(Number);
  return octets.every((o) => o <= 255) ? octets.join('.') : text;
}

function normalisePersonal(value: string): string {
  const text = unpadIpv4(value.trim().normalize('NFC'));
  if (looksLikeEmail(text)) return text.toLowerCase();
  if (looksLikePhone(text)) return (text.startsWith('+') ? '+' : '') + digitsOf(text);
  return text.toLowerCase().replace(/\s+/g, ' ');
}

/** Full hextets of an IPv6 address (with any embedded IPv4 folded in); assumes `isIPv6`. */
export function ipv6Hextets(address: string): string[] {
  let text = address.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((h) => h.replace(/^0+(?=.)/, ''));
}

/**
 * Where the IPv6 candidate in `run` (an {@link IPV6_RUN} match, or its part after a label) ends: the
 * longest prefix holding two colons that is not followed by a word character or a colon, that is, the
 * whole run unless a word character follows it (`2001:db8::1x`), else up to a dot inside it. -1 when
 * there is none. Linear, where the equivalent regex (`[…]*:[…]*:[…]*(?![\w:])`) backtracks cubically.
 */
function ipv6Candidate(run: string, followedByWord: boolean): number {
  const first = run.indexOf(':');
  const second = first === -1 ? -1 : run.indexOf(':', first + 1);
  if (second === -1) return -1;
  if (!followedByWord) return run.length;
  const dot = run.lastIndexOf('.');
  return dot > second ? dot : -1;
}

export function createRedactor(options: RedactorOptions): Redactor {
  if (options.hashKey.length === 0) {
    // An empty key makes every tag a plain hash that anyone can confirm by guessing.
    throw new TypeError('createRedactor: hashKey must not be empty');
  }
  const key = options.hashKey;

  const hashPersonal = (value: string): string =>
    createHmac('sha256', key).update(normalisePersonal(value)).digest('hex').slice(0, HASH_TAG_LENGTH);

  // The first character whole (`Array.from`), so a non-BMP first letter is not cut in half.
  const maskEmail = (local: string, domain: string): string =>
    `${Array.from(local)[0] ?? ''}***@${domain.toLowerCase()}#${hashPersonal(`${local}@${domain}`)}`;

  const maskIp = (raw: string): string => {
    const address = unpadIpv4(raw);
    const tag = hashPersonal(address);
    if (isIPv6(address)) {
      const hextets = ipv6Hextets(address);
      // IPv4-mapped: the /48 would be all zeros, so mask the embedded IPv4 instead.
      const mapped = /(\d+\.\d+\.\d+)\.\d+$/.exec(address);
      if (mapped && hextets.slice(0, 5).every((h) => h === '0'))
        return `::${hextets[5]}:${mapped[1]}.x#${tag}`;
      return `${hextets.slice(0, 3).join(':')}::x#${tag}`;
    }
    return `${address.split('.').slice(0, 3).join('.')}.x#${tag}`;
  };

  const maskPhone = (phone: string): string => {
    const digits = digitsOf(phone);
    const international = phone.trimStart().startsWith('+');
    const kept = international ? 2 : 0;
    const stars = '*'.repeat(Math.max(digits.length - kept - 2, 0));
    return `${international ? '+' : ''}${digits.slice(0, kept)}${stars}${digits.slice(-2)}#${hashPersonal(phone)}`;
  };

  /** A candidate IPv6 token (ipv6Candidate) masked where it holds an address, else unchanged. */
  const maskIpv6 = (candidate: string): string => {
    // Punctuation after an address (`2001:db8::1: unrecognized key`) is not part of it.
    let cut = candidate.length;
    while (cut > 0 && (candidate[cut - 1] === ':' || candidate[cut - 1] === '.')) cut -= 1;
    const address = candidate.slice(0, cut);
    const trail = candidate.slice(cut);
    if (isIPv6(address)) return /[0-9a-f]/i.test(address) ? maskIp(address) + trail : candidate;
    const label = HEX_LABEL.exec(address)?.[0] ?? '';
    const rest = address.slice(label.length);
    return label && isIPv6(rest) && /[0-9a-f]/i.test(rest) ? label + maskIp(rest) + trail : candidate;
  };

  /**
   * Each pattern runs only when the text holds a character every match of it needs: most audited
   * strings (tool names, targets like `sift_user:abc`, ids) hold none, and the Unicode-aware
   * patterns cost more than the rest of a record. The checks see the text as the previous steps
   * left it, so the output is exactly that of running every pattern.
   */
  const maskText = (input: string): string => {
    let text = input;
    if (WHITESPACE.test(text)) text = text.replace(BEARER, (_m, scheme: string) => `${scheme} ${REDACTED}`);
    if (text.includes('=')) text = text.replace(SECRET_QUERY, (_m, prefix: string) => `${prefix}${REDACTED}`);
    if (text.includes('@')) {
      text = text.replace(EMAIL, (_m, local: string, domain: string) => maskEmail(local, domain));
    }
    const colon = text.indexOf(':');
    if (colon !== -1 && text.indexOf(':', colon + 1) !== -1) {
      text = text.replace(IPV6_RUN, (run: string, offset: number, whole: string) => {
        const followedByWord = WORD_CHAR.test(whole.charAt(offset + run.length));
        const end = ipv6Candidate(run, followedByWord);
        // No candidate from the run's start means none from a later one (after a `word:` label) either:
        // it would need two colons, and a dot after them, further on still.
        return end === -1 ? run : maskIpv6(run.slice(0, end)) + run.slice(end);
      });
    }
    if (!DIGIT.test(text)) return text;
    if (text.includes('.')) text = text.replace(IPV4, (m) => maskIp(m));
    return text.replace(PHONE, (m) => (SIGNED_AMOUNT.test(m) || digitsOf(m).length < 7 ? m : maskPhone(m)));
  };

  /** A whole value known to be personal: keep its shape where that helps a reader, hash the rest. */
  const maskPersonalScalar = (raw: string): string => {
    const text = raw.trim();
    if (text === MASKED_FLAG || ALREADY_MASKED.test(text)) return text;
    if (looksLikeEmail(text)) {
      const at = text.lastIndexOf('@');
      return maskEmail(text.slice(0, at), text.slice(at + 1));
    }
    if (isIP(unpadIpv4(text)) !== 0) return maskIp(text);
    if (looksLikePhone(text)) return maskPhone(text);
    return `***#${hashPersonal(text)}`;
  };

  /**
   * `open` holds the objects being copied, outermost first (a value met again among them is a
   * cycle): an array as deep as the nesting, searched and popped, which costs far less per record
   * than a WeakSet allocated for every call (and traced specially by the garbage collector).
   */
  const walk = (
    value: unknown,
    mode: KeyClass,
    open: object[],
    depth = 0,
    /** Where `value` sits in the caller's {@link FieldClasses}, if anywhere. */
    fields?: FieldNode,
  ): unknown => {
    if (value === null || value === undefined) return value;
    if (mode === 'secret') return REDACTED;
    switch (typeof value) {
      case 'string':
        return mode === 'personal' ? maskPersonalScalar(value) : maskText(value);
      case 'number':
        return mode === 'personal' && Number.isFinite(value) ? maskPersonalScalar(String(value)) : value;
      case 'bigint':
        return mode === 'personal' ? maskPersonalScalar(value.toString()) : value.toString();
      case 'boolean':
        return mode === 'personal' ? MASKED_FLAG : value;
      case 'function':
      case 'symbol':
        return undefined;
    }
    const object = value as object;
    if (object instanceof Date) {
      return Number.isNaN(object.getTime()) ? null : walk(object.toISOString(), mode, open);
    }
    if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
      return `[binary ${object.byteLength} bytes]`;
    }
    if (open.includes(object)) return '[Circular]';
    // Arguments are bounded before they get here (input-bounds.ts), but logs and details are not:
    // a value this deep is cut rather than allowed to overflow the stack of whoever is redacting.
    if (depth >= MAX_REDACT_DEPTH) return '[too deep]';
    open.push(object);
    try {
      if (Array.isArray(object)) {
        const items = fields?.children.get('[]');
        return object.map((item) => walk(item, mode, open, depth + 1, items));
      }
      if (object instanceof Error) {
        return { name: object.name, message: walk(object.message, mode, open, depth + 1) };
      }
      const entries = object instanceof Map ? [...object.entries()] : Object.entries(object);
      const copy: Record<string, unknown> = {};
      for (const [k, v] of entries) {
        const name = String(k);
        // Inside a personal value (an address object, say) every leaf stays personal.
        const field = fields?.children.get(name);
        const childMode =
          mode === 'personal' ? classifyKeyInPersonal(name) : overridden(classifyKey(name), field);
        const redacted = walk(v, childMode, open, depth + 1, field);
        // Keys can be data too (a map keyed by email).
        if (redacted !== undefined) copy[maskText(name)] = redacted;
      }
      return copy;
    } catch {
      // A getter or proxy that throws: the value cannot be read, so nothing of it is kept.
      return '[unreadable]';
    } finally {
      open.pop();
    }
  };

  return {
    redactValue: (value, fields) =>
      walk(value, 'plain', [], 0, fields === undefined ? undefined : fieldTree(fields)),
    hashPersonal,
    maskIp,
  };
}

function classifyKeyInPersonal(key: string): KeyClass {
  return classifyKey(key) === 'secret' ? 'secret' : 'personal';
}

// Canonical JSON and SHA-256 live in their own module so that callers needing only them (the
// approval policy version, read at every start-up) do not load the redactor's patterns.
export { canonicalJson, isInCanonicalOrder, sha256Hex } from './canonical-json.ts';
