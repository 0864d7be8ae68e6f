/**
 * The SOQL subset the Salesforce emulator understands. Anything outside the subset is rejected
 * with MALFORMED_QUERY (or INVALID_FIELD / INVALID_TYPE / INVALID_QUERY_FILTER_OPERATOR, as a real
 * org would), never answered approximately: a silent wrong answer in a test is worse than a 400.
 *
 * Supported: `SELECT f1, Rel.f2 | count() FROM T [WHERE …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
 * [LIMIT n] [OFFSET n]`; conditions with AND / OR / NOT and parentheses (mixing AND and OR at one
 * level needs parentheses, as in SOQL), `= != <> < > <= >=`, `[NOT] IN (…)`, `LIKE`, null,
 * true/false, numbers, quoted strings with SOQL escapes, date and datetime literals, and the date
 * literals TODAY, YESTERDAY, TOMORROW, LAST_N_DAYS:n and NEXT_N_DAYS:n (UTC).
 */
import { toSalesforceId18 } from '../clients/salesforce-ids.ts';
import {
  findField,
  isFilterable,
  isSortable,
  findObject,
  type SalesforceFieldDef,
  type SalesforceObjectDef,
} from './salesforce-schema.ts';

export type SoqlErrorCode =
  'MALFORMED_QUERY' | 'INVALID_FIELD' | 'INVALID_TYPE' | 'INVALID_QUERY_FILTER_OPERATOR';

/** A query the emulator refuses, with the errorCode Salesforce would use. */
export class SoqlError extends Error {
  readonly errorCode: SoqlErrorCode;
  constructor(errorCode: SoqlErrorCode, message: string) {
    super(message);
    this.name = 'SoqlError';
    this.errorCode = errorCode;
  }
}

export type SoqlRecord = Record<string, unknown> & { Id: string };

/** A selected or filtered field: own (`Subject`) or one level up a relationship (`Account.Name`). */
export interface FieldPath {
  /** The reference field on the queried object, for parent paths. */
  via?: SalesforceFieldDef;
  field: SalesforceFieldDef;
  /** Canonical name of the target field (on the parent for parent paths). */
  name: string;
}

type Literal =
  | { kind: 'string'; value: string; raw: string }
  | { kind: 'number'; value: number }
  | { kind: 'boolean'; value: boolean }
  | { kind: 'null' }
  | { kind: 'date'; value: string }
  | { kind: 'datetime'; value: number }
  | { kind: 'range'; start: number; end: number };

type CompareOp = '=' | '!=' | '<' | '>' | '<=' | '>=';

type Expr =
  | { kind: 'and' | 'or'; items: Expr[] }
  | { kind: 'not'; item: Expr }
  | { kind: 'cmp'; path: FieldPath; op: CompareOp; value: Literal }
  | { kind: 'in'; path: FieldPath; negate: boolean; values: Literal[] }
  | { kind: 'like'; path: FieldPath; regex: RegExp };

export interface SoqlQuery {
  object: SalesforceObjectDef;
  count: boolean;
  fields: FieldPath[];
  where: Expr | undefined;
  orderBy: { path: FieldPath; desc: boolean; nullsFirst: boolean }[];
  limit: number | undefined;
  offset: number | undefined;
}

type Token =
  | { t: 'ident'; v: string; pos: number }
  | { t: 'string'; v: string; raw: string; pos: number }
  | { t: 'number'; v: number; pos: number }
  | { t: 'date'; v: string; pos: number }
  | { t: 'datetime'; v: number; pos: number }
  | { t: 'op'; v: string; pos: number };

const STRING_ESCAPES: Record<string, string> = {
  "'": "'",
  '"': '"',
  '\\': '\\',
  n: '\n',
  r: '\r',
  t: '\t',
  b: '\b',
  f: '\f',
  _: '_',
  '%': '%',
};
const DATETIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})/;
const DATE_RE = /^\d{4}-\d{2}-\d{2}(?![\dT])/;

function malformed(message: string): SoqlError {
  return new SoqlError('MALFORMED_QUERY', message);
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text.charAt(i);
    if (/\s/.test(ch)) {
      i += 1;
      continue;
    }
    const rest = text.slice(i);
    if (ch === "'") {
      let value = '';
      let raw = '';
      let j = i + 1;
      for (;;) {
        if (j >= text.length) throw malformed(`unterminated string literal at column ${i + 1}`);
        const c = text.charAt(j);
        if (c === "'") break;
        if (c === '\\') {
          const next = text.charAt(j + 1);
          const resolved = STRING_ESCAPES[next];
          if (resolved === undefined)
            throw malformed(`invalid escape sequence '\\${next}' at column ${j + 1}`);
          value += resolved;
          raw += c + next;
          j += 2;
          continue;
        }
        value += c;
        raw += c;
        j += 1;
      }
      tokens.push({ t: 'string', v: value, raw, pos: i });
      i = j + 1;
      continue;
    }
    const dt = DATETIME_RE.exec(rest);
    if (dt) {
      const ms = Date.parse(dt[0].replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
      if (Number.isNaN(ms)) throw malformed(`invalid datetime literal ${dt[0]}`);
      tokens.push({ t: 'datetime', v: ms, pos: i });
      i += dt[0].length;
      continue;
    }
    const d = DATE_RE.exec(rest);
    if (d) {
      if (Number.isNaN(Date.parse(`${d[0]}T00:00:00Z`))) throw malformed(`invalid date literal ${d[0]}`);
      tokens.push({ t: 'date', v: d[0], pos: i });
      i += d[0].length;
      continue;
    }
    const num = /^-?\d+(?:\.\d+)?(?![\w.])/.exec(rest);
    if (num) {
      tokens.push({ t: 'number', v: Number(num[0]), pos: i });
      i += num[0].length;
      continue;
    }
    const ident = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::\d+)?/.exec(rest);
    if (ident) {
      tokens.push({ t: 'ident', v: ident[0], pos: i });
      i += ident[0].length;
      continue;
    }
    const op = /^(?:!=|<>|<=|>=|=|<|>|\(|\)|,)/.exec(rest);
    if (op) {
      tokens.push({ t: 'op', v: op[0] === '<>' ? '!=' : op[0], pos: i });
      i += op[0].length;
      continue;
    }
    throw malformed(`unexpected character '${ch}' at column ${i + 1}`);
  }
  return tokens;
}

const DAY_MS = 86_400_000;

function dateRange(keyword: string, now: number): Literal | undefined {
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const upper = keyword.toUpperCase();
  if (upper === 'TODAY') return { kind: 'range', start: today, end: today + DAY_MS };
  if (upper === 'YESTERDAY') return { kind: 'range', start: today - DAY_MS, end: today };
  if (upper === 'TOMORROW') return { kind: 'range', start: today + DAY_MS, end: today + 2 * DAY_MS };
  const m = /^(LAST|NEXT)_N_DAYS:(\d+)$/.exec(upper);
  if (m) {
    const n = Number(m[2]);
    // LAST_N_DAYS:n includes today and the n days before it; NEXT_N_DAYS:n starts tomorrow.
    return m[1] === 'LAST'
      ? { kind: 'range', start: today - n * DAY_MS, end: today + DAY_MS }
      : { kind: 'range', start: today + DAY_MS, end: today + (n + 1) * DAY_MS };
  }
  return undefined;
}

const STRINGISH = new Set(['string', 'textarea', 'email', 'phone', 'url', 'picklist']);
const IDISH = new Set(['id', 'reference']);

class Parser {
  private readonly tokens: Token[];
  private index = 0;
  private readonly schema: Map<string, SalesforceObjectDef>;
  private readonly now: number;
  private object: SalesforceObjectDef | undefined;

  constructor(tokens: Token[], schema: Map<string, SalesforceObjectDef>, now: number) {
    this.tokens = tokens;
    this.schema = schema;
    this.now = now;
  }

  private peek(offset = 0): Token | undefined {
    return this.tokens[this.index + offset];
  }

  private next(): Token {
    const token = this.tokens[this.index];
    if (!token) throw malformed('unexpected end of query');
    this.index += 1;
    return token;
  }

  private isKeyword(word: string, offset = 0): boolean {
    const token = this.peek(offset);
    return token?.t === 'ident' && token.v.toUpperCase() === word;
  }

  private expectKeyword(word: string): void {
    const token = this.peek();
    if (!this.isKeyword(word)) throw malformed(`expected ${word} but found ${describe(token)}`);
    this.index += 1;
  }

  private isOp(op: string): boolean {
    const token = this.peek();
    return token?.t === 'op' && token.v === op;
  }

  private expectOp(op: string): void {
    const token = this.peek();
    if (!this.isOp(op)) throw malformed(`expected '${op}' but found ${describe(token)}`);
    this.index += 1;
  }

  parse(): SoqlQuery {
    this.expectKeyword('SELECT');
    // The field list is resolved after FROM names the object, as in SOQL.
    const rawFields: string[] = [];
    let count = false;
    if (this.isKeyword('COUNT') && this.peek(1)?.t === 'op' && this.peek(1)?.v === '(') {
      this.index += 2;
      if (!this.isOp(')'))
        throw malformed('only count() without arguments is supported (no aggregate queries)');
      this.expectOp(')');
      count = true;
    } else {
      for (;;) {
        const token = this.next();
        if (token.t === 'op' && token.v === '(') throw malformed('subqueries are not supported');
        if (token.t !== 'ident' || RESERVED.has(token.v.toUpperCase())) {
          throw malformed(`expected a field name but found ${describe(token)}`);
        }
        if (this.isOp('(')) throw malformed(`functions such as ${token.v}() are not supported`);
        rawFields.push(token.v);
        if (!this.isOp(',')) break;
        this.index += 1;
      }
    }
    this.expectKeyword('FROM');
    const from = this.next();
    if (from.t !== 'ident' || from.v.includes('.'))
      throw malformed(`expected an object name but found ${describe(from)}`);
    const object = findObject(this.schema, from.v);
    if (!object) {
      throw new SoqlError(
        'INVALID_TYPE',
        `sObject type '${from.v}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name.`,
      );
    }
    this.object = object;
    if (!count && rawFields.length === 0) throw malformed('no fields selected');
    const fields: FieldPath[] = [];
    const seen = new Set<string>();
    for (const raw of rawFields) {
      const path = this.resolvePath(raw);
      const key = (path.via ? `${path.via.relationshipName}.` : '') + path.name;
      if (seen.has(key.toLowerCase())) throw malformed(`duplicate field selected: ${raw}`);
      seen.add(key.toLowerCase());
      fields.push(path);
    }

    let where: Expr | undefined;
    if (this.isKeyword('WHERE')) {
      this.index += 1;
      where = this.parseOr();
    }
    const orderBy: SoqlQuery['orderBy'] = [];
    if (this.isKeyword('ORDER')) {
      this.index += 1;
      this.expectKeyword('BY');
      for (;;) {
        const token = this.next();
        if (token.t !== 'ident') throw malformed(`expected a field in ORDER BY but found ${describe(token)}`);
        const path = this.resolvePath(token.v);
        if (!isSortable(path.field)) {
          throw new SoqlError('INVALID_FIELD', `field '${path.name}' can not be sorted in a query call`);
        }
        let desc = false;
        if (this.isKeyword('ASC')) this.index += 1;
        else if (this.isKeyword('DESC')) {
          this.index += 1;
          desc = true;
        }
        let nullsFirst = !desc;
        if (this.isKeyword('NULLS')) {
          this.index += 1;
          if (this.isKeyword('FIRST')) nullsFirst = true;
          else if (this.isKeyword('LAST')) nullsFirst = false;
          else throw malformed('expected FIRST or LAST after NULLS');
          this.index += 1;
        }
        orderBy.push({ path, desc, nullsFirst });
        if (!this.isOp(',')) break;
        this.index += 1;
      }
    }
    let limit: number | undefined;
    if (this.isKeyword('LIMIT')) {
      this.index += 1;
      limit = this.nonNegativeInt('LIMIT');
    }
    let offset: number | undefined;
    if (this.isKeyword('OFFSET')) {
      this.index += 1;
      offset = this.nonNegativeInt('OFFSET');
    }
    const trailing = this.peek();
    if (trailing)
      throw malformed(`unexpected token ${describe(trailing)} (this emulator supports a SOQL subset)`);
    return { object, count, fields, where, orderBy, limit, offset };
  }

  private nonNegativeInt(clause: string): number {
    const token = this.next();
    if (token.t !== 'number' || !Number.isInteger(token.v) || token.v < 0) {
      throw malformed(`${clause} needs a non-negative integer`);
    }
    return token.v;
  }

  private resolvePath(raw: string): FieldPath {
    const object = this.object;
    if (!object) throw malformed('field before FROM');
    const parts = raw.split('.');
    // `Case.Subject` on a Case query is allowed in SOQL: strip a leading object name.
    if (parts.length > 1 && parts[0]?.toLowerCase() === object.name.toLowerCase()) parts.shift();
    const noSuchColumn = () =>
      new SoqlError(
        'INVALID_FIELD',
        `No such column '${raw}' on entity '${object.name}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.`,
      );
    if (parts.length === 1) {
      const field = findField(object, parts[0] ?? '');
      if (!field) throw noSuchColumn();
      return { field, name: field.name };
    }
    if (parts.length !== 2)
      throw malformed(`relationship paths deeper than one level are not supported: ${raw}`);
    const relName = (parts[0] ?? '').toLowerCase();
    const via = [...object.fields.values()].find((f) => f.relationshipName?.toLowerCase() === relName);
    if (!via) throw noSuchColumn();
    for (const target of via.referenceTo ?? []) {
      const targetObject = findObject(this.schema, target);
      const field = targetObject && findField(targetObject, parts[1] ?? '');
      if (field) return { via, field, name: field.name };
    }
    throw noSuchColumn();
  }

  private parseOr(): Expr {
    const items = [this.parseUnary()];
    let joiner: 'AND' | 'OR' | undefined;
    while (this.isKeyword('AND') || this.isKeyword('OR')) {
      const word = this.isKeyword('AND') ? 'AND' : 'OR';
      if (joiner && joiner !== word) throw malformed('mixing AND and OR needs parentheses');
      joiner = word;
      this.index += 1;
      items.push(this.parseUnary());
    }
    if (items.length === 1) return items[0] as Expr;
    return { kind: joiner === 'OR' ? 'or' : 'and', items };
  }

  private parseUnary(): Expr {
    if (this.isKeyword('NOT')) {
      this.index += 1;
      return { kind: 'not', item: this.parseUnary() };
    }
    if (this.isOp('(')) {
      this.index += 1;
      const inner = this.parseOr();
      this.expectOp(')');
      return inner;
    }
    return this.parseCondition();
  }

  private parseCondition(): Expr {
    const token = this.next();
    if (token.t !== 'ident' || RESERVED.has(token.v.toUpperCase())) {
      throw malformed(`expected a field name but found ${describe(token)}`);
    }
    const path = this.resolvePath(token.v);
    if (!isFilterable(path.field)) {
      throw new SoqlError('INVALID_FIELD', `field '${path.name}' can not be filtered in a query call`);
    }
    if (this.isKeyword('LIKE')) {
      this.index += 1;
      const value = this.next();
      if (value.t !== 'string') throw malformed('LIKE needs a quoted string');
      if (!STRINGISH.has(path.field.type)) {
        throw new SoqlError('INVALID_QUERY_FILTER_OPERATOR', `invalid operator on field ${path.name}: LIKE`);
      }
      return { kind: 'like', path, regex: likeToRegex(value.raw) };
    }
    let negate = false;
    if (this.isKeyword('NOT') && this.isKeyword('IN', 1)) {
      this.index += 1;
      negate = true;
    }
    if (this.isKeyword('IN')) {
      this.index += 1;
      this.expectOp('(');
      if (this.isKeyword('SELECT')) throw malformed('semi-join subqueries are not supported');
      const values: Literal[] = [];
      for (;;) {
        const literal = this.parseLiteral();
        if (literal.kind === 'null') throw malformed('null is not allowed in an IN list');
        this.checkLiteral(path, literal);
        values.push(literal);
        if (!this.isOp(',')) break;
        this.index += 1;
      }
      this.expectOp(')');
      return { kind: 'in', path, negate, values };
    }
    const opToken = this.next();
    if (opToken.t !== 'op' || !['=', '!=', '<', '>', '<=', '>='].includes(opToken.v)) {
      throw malformed(`expected an operator after ${path.name} but found ${describe(opToken)}`);
    }
    const op = opToken.v as CompareOp;
    const value = this.parseLiteral();
    if (value.kind === 'null' && op !== '=' && op !== '!=')
      throw malformed(`null can only be compared with = or !=`);
    if (value.kind === 'boolean' && op !== '=' && op !== '!=') {
      throw new SoqlError('INVALID_QUERY_FILTER_OPERATOR', `invalid operator on boolean field ${path.name}`);
    }
    this.checkLiteral(path, value);
    return { kind: 'cmp', path, op, value };
  }

  private parseLiteral(): Literal {
    const token = this.next();
    switch (token.t) {
      case 'string':
        return { kind: 'string', value: token.v, raw: token.raw };
      case 'number':
        return { kind: 'number', value: token.v };
      case 'date':
        return { kind: 'date', value: token.v };
      case 'datetime':
        return { kind: 'datetime', value: token.v };
      case 'ident': {
        const upper = token.v.toUpperCase();
        if (upper === 'NULL') return { kind: 'null' };
        if (upper === 'TRUE' || upper === 'FALSE') return { kind: 'boolean', value: upper === 'TRUE' };
        const range = dateRange(token.v, this.now);
        if (range) return range;
        throw malformed(
          `unsupported value ${token.v} (bind variables and unknown date literals are not supported)`,
        );
      }
      default:
        throw malformed(`expected a value but found ${describe(token)}`);
    }
  }

  /** A literal of the wrong type is an error in SOQL, not a non-match. */
  private checkLiteral(path: FieldPath, literal: Literal): void {
    if (literal.kind === 'null') return;
    const type = path.field.type;
    const bad = () =>
      new SoqlError(
        'INVALID_QUERY_FILTER_OPERATOR',
        `value of filter criterion for field '${path.name}' must be of type ${type}`,
      );
    if (STRINGISH.has(type)) {
      if (literal.kind !== 'string') throw bad();
    } else if (IDISH.has(type)) {
      if (literal.kind !== 'string') throw bad();
      if (!toSalesforceId18(literal.value)) {
        throw new SoqlError('INVALID_QUERY_FILTER_OPERATOR', `invalid ID field: ${literal.value}`);
      }
    } else if (type === 'double') {
      if (literal.kind !== 'number') throw bad();
    } else if (type === 'boolean') {
      if (literal.kind !== 'boolean') throw bad();
    } else if (type === 'date') {
      if (literal.kind !== 'date' && literal.kind !== 'range') throw bad();
    } else if (type === 'datetime') {
      if (literal.kind !== 'datetime' && literal.kind !== 'range') throw bad();
    }
  }
}

const RESERVED = new Set([
  'SELECT',
  'FROM',
  'WHERE',
  'AND',
  'OR',
  'NOT',
  'IN',
  'LIKE',
  'ORDER',
  'BY',
  'LIMIT',
  'OFFSET',
]);

function describe(token: Token | undefined): string {
  if (!token) return 'end of query';
  if (token.t === 'string') return 'a string literal';
  return `'${String(token.v)}'`;
}

/** LIKE: `%` any run, `_` one character, `\%` and `\_` literal; case-insensitive. */
function likeToRegex(raw: string): RegExp {
  let source = '';
  for (let i = 0; i < raw.length; i += 1) {
    const c = raw.charAt(i);
    if (c === '\\') {
      const next = raw.charAt(i + 1);
      source += escapeRegex(STRING_ESCAPES[next] ?? next);
      i += 1;
    } else if (c === '%') source += '.*';
    else if (c === '_') source += '.';
    else source += escapeRegex(c);
  }
  return new RegExp(`^${source}$`, 'is');
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Parse SOQL against the schema; throws SoqlError. `now` anchors TODAY and friends. */
export function parseSoql(
  text: string,
  schema: Map<string, SalesforceObjectDef>,
  now = Date.now(),
): SoqlQuery {
  return new Parser(tokenize(text), schema, now).parse();
}

/** Looks up any record by id (for parent paths). */
export type RecordResolver = (id: string) => { object: SalesforceObjectDef; record: SoqlRecord } | undefined;

function readPath(path: FieldPath, record: SoqlRecord, resolve: RecordResolver): unknown {
  if (!path.via) return record[path.field.name];
  const parentId = record[path.via.name];
  if (typeof parentId !== 'string') return null;
  const parent = resolve(parentId);
  if (!parent) return null;
  const field = findField(parent.object, path.name);
  return field ? (parent.record[field.name] ?? null) : null;
}

type Comparable = string | number | boolean;

function comparable(field: SalesforceFieldDef, value: unknown): Comparable | null {
  if (value === null || value === undefined) return null;
  if (IDISH.has(field.type)) return String(value).slice(0, 15);
  if (STRINGISH.has(field.type)) return String(value).toLowerCase();
  if (field.type === 'datetime') return Date.parse(String(value).replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  if (field.type === 'double') return Number(value);
  if (field.type === 'boolean') return Boolean(value);
  return String(value);
}

function literalComparable(field: SalesforceFieldDef, literal: Literal): Comparable | null {
  switch (literal.kind) {
    case 'null':
      return null;
    case 'string':
      return IDISH.has(field.type) ? literal.value.slice(0, 15) : literal.value.toLowerCase();
    case 'range':
      throw new Error('ranges are compared separately');
    default:
      return literal.value;
  }
}

function compareValues(a: Comparable, b: Comparable): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

function evalCompare(field: SalesforceFieldDef, raw: unknown, op: CompareOp, literal: Literal): boolean {
  const value = comparable(field, raw);
  if (literal.kind === 'range') {
    if (value === null) return op === '!=';
    // Date fields compare as midnight UTC of that day.
    const ms = typeof value === 'number' ? value : Date.parse(`${String(value)}T00:00:00Z`);
    const inRange = ms >= literal.start && ms < literal.end;
    switch (op) {
      case '=':
        return inRange;
      case '!=':
        return !inRange;
      case '<':
        return ms < literal.start;
      case '<=':
        return ms < literal.end;
      case '>':
        return ms >= literal.end;
      case '>=':
        return ms >= literal.start;
    }
  }
  const target = literalComparable(field, literal);
  if (target === null) return op === '=' ? value === null : value !== null;
  // SOQL: != matches nulls; ordering operators never do.
  if (value === null) return op === '!=';
  const c = compareValues(value, target);
  switch (op) {
    case '=':
      return c === 0;
    case '!=':
      return c !== 0;
    case '<':
      return c < 0;
    case '>':
      return c > 0;
    case '<=':
      return c <= 0;
    case '>=':
      return c >= 0;
  }
}

function evaluate(expr: Expr, record: SoqlRecord, resolve: RecordResolver): boolean {
  switch (expr.kind) {
    case 'and':
      return expr.items.every((e) => evaluate(e, record, resolve));
    case 'or':
      return expr.items.some((e) => evaluate(e, record, resolve));
    case 'not':
      return !evaluate(expr.item, record, resolve);
    case 'cmp':
      return evalCompare(expr.path.field, readPath(expr.path, record, resolve), expr.op, expr.value);
    case 'in': {
      const raw = readPath(expr.path, record, resolve);
      const hit = expr.values.some((v) => evalCompare(expr.path.field, raw, '=', v));
      return expr.negate ? !hit : hit;
    }
    case 'like': {
      const raw = readPath(expr.path, record, resolve);
      return raw !== null && raw !== undefined && expr.regex.test(String(raw));
    }
  }
}

export interface SoqlResult {
  totalSize: number;
  /** Projected rows with `attributes`; empty for count(). */
  records: Record<string, unknown>[];
}

/** Run a parsed query over the object's records. `version` shapes the `attributes.url`s. */
export function runSoql(
  query: SoqlQuery,
  records: SoqlRecord[],
  resolve: RecordResolver,
  version: string,
): SoqlResult {
  let rows = query.where ? records.filter((r) => evaluate(query.where as Expr, r, resolve)) : [...records];
  if (query.orderBy.length > 0) {
    rows.sort((a, b) => {
      for (const item of query.orderBy) {
        const va = comparable(item.path.field, readPath(item.path, a, resolve));
        const vb = comparable(item.path.field, readPath(item.path, b, resolve));
        if (va === null && vb === null) continue;
        if (va === null) return item.nullsFirst ? -1 : 1;
        if (vb === null) return item.nullsFirst ? 1 : -1;
        const c = compareValues(va, vb);
        if (c !== 0) return item.desc ? -c : c;
      }
      return 0;
    });
  }
  if (query.offset !== undefined) rows = rows.slice(query.offset);
  if (query.limit !== undefined) rows = rows.slice(0, query.limit);
  if (query.count) return { totalSize: rows.length, records: [] };
  const url = (type: string, id: string) => `/services/data/${version}/sobjects/${type}/${id}`;
  const projected = rows.map((record) => {
    const out: Record<string, unknown> = {
      attributes: { type: query.object.name, url: url(query.object.name, record.Id) },
    };
    for (const path of query.fields) {
      if (!path.via) {
        out[path.name] = record[path.field.name] ?? null;
        continue;
      }
      const relName = path.via.relationshipName ?? path.via.name;
      const parentId = record[path.via.name];
      const parent = typeof parentId === 'string' ? resolve(parentId) : undefined;
      if (!parent) {
        out[relName] = null;
        continue;
      }
      const existing = out[relName];
      const target =
        existing && typeof existing === 'object'
          ? (existing as Record<string, unknown>)
          : { attributes: { type: parent.object.name, url: url(parent.object.name, parent.record.Id) } };
      const field = findField(parent.object, path.name);
      target[path.name] = field ? (parent.record[field.name] ?? null) : null;
      out[relName] = target;
    }
    return out;
  });
  return { totalSize: rows.length, records: projected };
}
