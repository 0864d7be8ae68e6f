/**
 * A loopback Salesforce org for tests, demos and benchmarks, faithful to
 * shared/contracts/salesforce.md §7 so the real jsforce talks to it unchanged: OAuth token
 * endpoint, bearer check with INVALID_SESSION_ID, sObject CRUD and upsert, sObject Collections,
 * describe, SOQL query/queryAll with locator paging (a strict subset: salesforce-soql.ts),
 * `/limits` with `Sforce-Limit-Info` on every data response, field history of tracked fields
 * (`AccountHistory`, written by the org on every change with its author), and admin hooks for failure cases
 * (expired sessions, the refresh-loop hazard, REQUEST_LIMIT_EXCEEDED).
 */
import { randomBytes } from 'node:crypto';
import { salesforceIdChecksum, toSalesforceId18 } from '../clients/salesforce-ids.ts';
import {
  matchPattern,
  startEmulatorServer,
  type EmulatorRequest,
  type EmulatorResponse,
  type EmulatorServer,
  type Route,
  replaceContents,
  type EmulatorState,
  type StatefulEmulator,
} from './emulator-http.ts';
import { seedSalesforceDemoData, type SalesforceDemoIds } from './salesforce-demo-data.ts';
import {
  createSalesforceSchema,
  HISTORY_TRACKED,
  findField,
  isFilterable,
  isSortable,
  findObject,
  objectForId,
  type SalesforceFieldDef,
  type SalesforceObjectDef,
} from './salesforce-schema.ts';
import { parseSoql, runSoql, SoqlError, type SoqlRecord } from './salesforce-soql.ts';

export interface SalesforceEmulatorOptions {
  /** Connected-app credentials the token endpoint accepts. */
  clientId?: string;
  clientSecret?: string;
  /** The integration user's credentials for the password grant. */
  username?: string;
  password?: string;
  /** Load the demo org (salesforce-demo-data.ts). Default true. */
  seed?: boolean;
  /** `DailyApiRequests.Max`; calls beyond it answer 403 REQUEST_LIMIT_EXCEEDED. Default 15000. */
  dailyApiLimit?: number;
  /** Records per query page before `nextRecordsUrl` (Salesforce: 2000). */
  queryPageSize?: number;
  port?: number;
}

/** One stored record. Records are replaced, never mutated, so collection rollbacks can restore maps. */
export type SalesforceEmulatorRecord = SoqlRecord;

/** State (exportState): every record, deleted records, the id and case-number counters. */
export interface SalesforceEmulator extends EmulatorServer, StatefulEmulator {
  readonly orgId: string;
  /** The user every token authenticates as (and the default owner of new records). */
  readonly integrationUserId: string;
  /** Ids of the demo records when seeded. */
  readonly demo: SalesforceDemoIds | undefined;
  readonly credentials: { clientId: string; clientSecret: string; username: string; password: string };
  /** Copies of the live (not deleted) records of one object. */
  records(sobject: string): SalesforceEmulatorRecord[];
  /**
   * Seed a record, bypassing required-field and uniqueness checks (so duplicates for the upsert 300
   * case can exist); read-only fields (CreatedDate, …) and `Id` may be set. Field names are still checked.
   */
  insert(sobject: string, fields: Record<string, unknown>): SalesforceEmulatorRecord;
  /**
   * Change a record as someone other than the API's integration user would in the Salesforce UI:
   * sets the fields, `LastModifiedById` (default: the first non-integration user) and the timestamps
   * (`SystemModstamp` may be given, e.g. to make two edits share one timestamp), and writes the field
   * history of tracked fields as that user, at that time (whole seconds). Field names are checked.
   */
  editAs(
    sobject: string,
    id: string,
    fields: Record<string, unknown>,
    options?: { userId?: string; systemModstamp?: string },
  ): SalesforceEmulatorRecord;
  /**
   * Create a record as someone other than the API's integration user would (the UI, web-to-lead):
   * validated like an API create, but `CreatedById`, `LastModifiedById`, `OwnerId` and the `created`
   * history row name that user (default: the first non-integration user).
   */
  createAs(
    sobject: string,
    fields: Record<string, unknown>,
    options?: { userId?: string },
  ): SalesforceEmulatorRecord;
  /** The next `n` authenticated data requests answer 403 REQUEST_LIMIT_EXCEEDED. */
  rateLimitNext(n: number): void;
  /**
   * A custom field an admin added in Setup (e.g. an org naming its Sift fields its own way, for
   * config mapping.salesforce_fields): writable, queryable and described from then on.
   */
  addCustomField(sobject: string, field: SalesforceFieldDef): void;
  /**
   * A validation rule on `sobject`: every API create or update whose resulting record `check` answers
   * a message for is refused with FIELD_CUSTOM_VALIDATION_EXCEPTION and that message, as an org's
   * rule would. Returns the function that removes the rule.
   */
  addValidationRule(
    sobject: string,
    check: (record: SalesforceEmulatorRecord) => string | undefined,
  ): () => void;
  /**
   * Another transaction holds the rows `check` picks: every API create or update whose resulting
   * record it picks fails with UNABLE_TO_LOCK_ROW (a temporary failure: the same write succeeds
   * once the lock is gone), per record in a collection. Returns the function that releases them.
   */
  lockRows(sobject: string, check: (record: SalesforceEmulatorRecord) => boolean): () => void;
  /** Invalidate every access token issued so far (sessions expire); new tokens work. */
  expireTokens(): void;
  /** Reject every bearer token, even fresh ones: reproduces jsforce's refresh-loop hazard (§5.1). */
  alwaysUnauthorized(on: boolean): void;
  setQueryPageSize(n: number): void;
  /** Forget every query locator issued so far, as Salesforce does after ~15 idle minutes. */
  expireQueryLocators(): void;
  /** Issue a session directly (access + refresh token), e.g. to build a Connection with a refresh token. */
  issueTokens(): { accessToken: string; refreshToken: string };
  apiUsage(): { used: number; limit: number };
  /**
   * Records of `sobject` the query endpoints have answered with, over every page, since start-up:
   * what a caller read (a `COUNT()` query answers with none). Tests diff it around a call.
   */
  recordsServed(sobject: string): number;
}

interface SfError {
  errorCode: string;
  message: string;
  fields?: string[];
}

class WriteError extends Error {
  readonly status: number;
  readonly error: SfError;
  constructor(status: number, error: SfError) {
    super(error.message);
    this.status = status;
    this.error = error;
  }
}

const JSON_HEADERS = { 'content-type': 'application/json;charset=UTF-8' };
const MAX_COLLECTION = 200;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function base62(n: number, width: number): string {
  let out = '';
  let rest = n;
  while (rest > 0) {
    out = BASE62.charAt(rest % 62) + out;
    rest = Math.floor(rest / 62);
  }
  return out.padStart(width, '0');
}

function formatDatetime(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+0000');
}

function errorResponse(
  status: number,
  errorCode: string,
  message: string,
  fields?: string[],
): EmulatorResponse {
  return { status, body: [{ message, errorCode, ...(fields ? { fields } : {}) }] };
}

/** Start a Salesforce emulator on 127.0.0.1. */
export async function startSalesforceEmulator(
  options: SalesforceEmulatorOptions = {},
): Promise<SalesforceEmulator> {
  const credentials = {
    clientId: options.clientId ?? 'fraudgate-sandbox-client',
    clientSecret: options.clientSecret ?? 'fraudgate-sandbox-secret',
    username: options.username ?? 'integration@fraudgate.example.com',
    password: options.password ?? 'sandbox-password',
  };
  const dailyApiLimit = options.dailyApiLimit ?? 15000;
  let queryPageSize = options.queryPageSize ?? 2000;
  const schema = createSalesforceSchema();
  const store = new Map<string, Map<string, SoqlRecord>>();
  for (const name of schema.keys()) store.set(name, new Map());
  const deleted = new Map<string, SoqlRecord>();
  let idCounter = 0;
  let caseNumber = 1000;
  const newId = (prefix: string) => {
    idCounter += 1;
    const id15 = `${prefix}5g0000${base62(idCounter, 6)}`;
    return id15 + salesforceIdChecksum(id15);
  };
  const orgId = `00D5g000000${base62(1, 4)}`.slice(0, 15);
  const orgId18 = orgId + salesforceIdChecksum(orgId);
  const integrationUserId = newId('005');

  const validTokens = new Set<string>();
  const refreshTokens = new Set<string>();
  let rejectAll = false;
  let rateLimited = 0;
  const validationRules: { object: string; check: (record: SoqlRecord) => string | undefined }[] = [];
  const lockedRows: { object: string; check: (record: SoqlRecord) => boolean }[] = [];
  let apiUsed = 0;
  const cursors = new Map<
    string,
    { sobject: string; records: Record<string, unknown>[]; totalSize: number; pageSize: number }
  >();
  const served = new Map<string, number>();
  let cursorCounter = 0;

  const token = (kind: string) => `${orgId}!${kind}${randomBytes(18).toString('base64url')}`;
  const issueTokens = () => {
    const accessToken = token('AQ');
    const refreshToken = token('RT');
    validTokens.add(accessToken);
    refreshTokens.add(refreshToken);
    return { accessToken, refreshToken };
  };

  const objectOrThrow = (name: string): SalesforceObjectDef => {
    const object = findObject(schema, name);
    if (!object) {
      throw new WriteError(404, { errorCode: 'NOT_FOUND', message: 'The requested resource does not exist' });
    }
    return object;
  };
  const table = (object: SalesforceObjectDef): Map<string, SoqlRecord> => {
    const t = store.get(object.name);
    if (!t) throw new Error(`no table for ${object.name}`);
    return t;
  };
  const findById = (id: string): { object: SalesforceObjectDef; record: SoqlRecord } | undefined => {
    const id18 = toSalesforceId18(id);
    if (!id18) return undefined;
    const object = objectForId(schema, id18);
    const record = object && table(object).get(id18);
    return object && record ? { object, record } : undefined;
  };

  // ---- validation ---------------------------------------------------------------------------

  const coerce = (object: SalesforceObjectDef, field: SalesforceFieldDef, value: unknown): unknown => {
    if (value === null) return null;
    const badType = () =>
      new WriteError(400, {
        errorCode: 'JSON_PARSER_ERROR',
        message: `Cannot deserialize instance of ${field.type} from value for field ${field.name}`,
        fields: [field.name],
      });
    switch (field.type) {
      case 'boolean':
        if (typeof value === 'boolean') return value;
        if (value === 'true' || value === 'false') return value === 'true';
        throw badType();
      case 'double': {
        const n =
          typeof value === 'number'
            ? value
            : typeof value === 'string' && value.trim() !== ''
              ? Number(value)
              : NaN;
        if (!Number.isFinite(n)) throw badType();
        return n;
      }
      case 'date':
        if (
          typeof value !== 'string' ||
          !/^\d{4}-\d{2}-\d{2}/.test(value) ||
          Number.isNaN(Date.parse(value))
        ) {
          throw badType();
        }
        return value.slice(0, 10);
      case 'datetime': {
        const ms =
          typeof value === 'string' ? Date.parse(value.replace(/([+-]\d{2})(\d{2})$/, '$1:$2')) : NaN;
        if (Number.isNaN(ms)) throw badType();
        return formatDatetime(ms);
      }
      case 'reference':
      case 'id': {
        if (typeof value !== 'string') throw badType();
        if (value === '') return null;
        const id18 = toSalesforceId18(value);
        const target = id18 && objectForId(schema, id18);
        if (!id18 || !target || !(field.referenceTo ?? []).includes(target.name)) {
          throw new WriteError(400, {
            errorCode: 'MALFORMED_ID',
            message: `${object.name} ${field.name}: id value of incorrect type: ${value}`,
            fields: [field.name],
          });
        }
        if (!table(target).get(id18)) {
          throw new WriteError(400, {
            errorCode: 'INVALID_CROSS_REFERENCE_KEY',
            message: `invalid cross reference id`,
            fields: [field.name],
          });
        }
        return id18;
      }
      default: {
        if (typeof value !== 'string') throw badType();
        if (value === '') return null;
        if (field.length !== undefined && value.length > field.length) {
          throw new WriteError(400, {
            errorCode: 'STRING_TOO_LONG',
            message: `${field.name}: data value too large (max length=${field.length})`,
            fields: [field.name],
          });
        }
        if (field.type === 'email' && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(value)) {
          throw new WriteError(400, {
            errorCode: 'INVALID_EMAIL_ADDRESS',
            message: `${field.name}: invalid email address`,
            fields: [field.name],
          });
        }
        if (field.restricted && field.picklist && !field.picklist.includes(value)) {
          throw new WriteError(400, {
            errorCode: 'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST',
            message: `${field.name}: bad value for restricted picklist field: ${value}`,
            fields: [field.name],
          });
        }
        return value;
      }
    }
  };

  /** Validate a write body; returns canonical field names → coerced values. */
  const validateFields = (
    object: SalesforceObjectDef,
    body: Record<string, unknown>,
    mode: 'create' | 'update',
    allowReadOnly = false,
  ): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(body)) {
      if (key === 'attributes') continue;
      const field = findField(object, key);
      if (!field) {
        throw new WriteError(400, {
          errorCode: 'INVALID_FIELD',
          message: `No such column '${key}' on sobject of type ${object.name}`,
        });
      }
      if (field.readOnly && !allowReadOnly) {
        throw new WriteError(400, {
          errorCode: 'INVALID_FIELD_FOR_INSERT_UPDATE',
          message: `Unable to ${mode} fields: ${field.name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.`,
          fields: [field.name],
        });
      }
      out[field.name] = coerce(object, field, value);
    }
    return out;
  };

  const checkRequired = (object: SalesforceObjectDef, record: Record<string, unknown>): void => {
    const missing = [...object.fields.values()]
      .filter((f) => f.required && (record[f.name] === null || record[f.name] === undefined))
      .map((f) => f.name);
    if (missing.length > 0) {
      throw new WriteError(400, {
        errorCode: 'REQUIRED_FIELD_MISSING',
        message: `Required fields are missing: [${missing.join(', ')}]`,
        fields: missing,
      });
    }
  };

  const checkValidationRules = (object: SalesforceObjectDef, record: SoqlRecord): void => {
    for (const lock of lockedRows) {
      if (lock.object === object.name && lock.check({ ...record }))
        throw new WriteError(400, {
          errorCode: 'UNABLE_TO_LOCK_ROW',
          message: 'unable to obtain exclusive access to this record or 1 records',
          fields: [],
        });
    }
    for (const rule of validationRules) {
      if (rule.object !== object.name) continue;
      const message = rule.check({ ...record });
      if (message !== undefined) {
        throw new WriteError(400, { errorCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', message, fields: [] });
      }
    }
  };

  const checkUnique = (object: SalesforceObjectDef, record: SoqlRecord): void => {
    for (const field of object.fields.values()) {
      if (!field.unique) continue;
      const value = record[field.name];
      if (typeof value !== 'string') continue;
      for (const other of table(object).values()) {
        const otherValue = other[field.name];
        if (
          other.Id !== record.Id &&
          typeof otherValue === 'string' &&
          otherValue.toLowerCase() === value.toLowerCase()
        ) {
          throw new WriteError(400, {
            errorCode: 'DUPLICATE_VALUE',
            message: `duplicate value found: ${field.name} duplicates value on record with id: ${other.Id}`,
            fields: [field.name],
          });
        }
      }
    }
  };

  const derive = (object: SalesforceObjectDef, record: Record<string, unknown>): void => {
    const fullName = () =>
      [record.FirstName, record.LastName].filter((v) => typeof v === 'string' && v).join(' ');
    switch (object.name) {
      case 'Case':
        record.IsClosed = record.Status === 'Closed';
        break;
      case 'Opportunity':
        record.IsClosed = typeof record.StageName === 'string' && record.StageName.startsWith('Closed');
        record.IsWon = record.StageName === 'Closed Won';
        break;
      case 'Task':
        record.IsClosed = record.Status === 'Completed';
        break;
      case 'Contact':
      case 'Lead':
      case 'User':
        record.Name = fullName();
        break;
    }
  };

  /** An API insert, update or delete of an object only the org writes (a history object). */
  const refuseReadOnlyObject = (object: SalesforceObjectDef, operation: string): void => {
    if (!object.readOnly) return;
    throw new WriteError(400, {
      errorCode: 'INVALID_TYPE_FOR_OPERATION',
      message: `entity type ${object.name} does not support ${operation}`,
    });
  };

  /**
   * Field history as the org writes it: one row per tracked field that changed (or one `created`
   * row), attributed to the user whose transaction made the change, `CreatedDate` in whole seconds.
   */
  const recordHistory = (
    object: SalesforceObjectDef,
    before: SoqlRecord | undefined,
    after: SoqlRecord,
    userId: string,
    at: string,
  ): void => {
    const tracking = HISTORY_TRACKED[object.name];
    const history = tracking && findObject(schema, tracking.history);
    if (!tracking || !history) return;
    const seconds = formatDatetime(
      Math.floor(Date.parse(at.replace(/([+-]\d{2})(\d{2})$/, '$1:$2')) / 1000) * 1000,
    );
    const row = (field: string, dataType: string, oldValue: unknown, newValue: unknown) => {
      const id = newId(history.keyPrefix);
      table(history).set(id, {
        Id: id,
        IsDeleted: false,
        CreatedDate: seconds,
        CreatedById: userId,
        [tracking.parentField]: after.Id,
        Field: field,
        DataType: dataType,
        OldValue: oldValue ?? null,
        NewValue: newValue ?? null,
      });
    };
    if (!before) {
      row('created', 'Text', null, null);
      return;
    }
    for (const name of tracking.fields) {
      if ((before[name] ?? null) === (after[name] ?? null)) continue;
      row(
        name,
        findField(object, name)?.type === 'picklist' ? 'Picklist' : 'Text',
        before[name],
        after[name],
      );
    }
  };

  const createRecord = (
    object: SalesforceObjectDef,
    body: Record<string, unknown>,
    seed = false,
    author = integrationUserId,
  ): SoqlRecord => {
    if (!seed) refuseReadOnlyObject(object, 'insert');
    const { Id: seedId, ...fields } = body;
    const values = validateFields(object, seed ? fields : body, 'create', seed);
    const now = formatDatetime(Date.now());
    const id = seed && typeof seedId === 'string' ? seedId : newId(object.keyPrefix);
    const record: SoqlRecord = { Id: id };
    for (const field of object.fields.values()) {
      if (field.defaultValue !== undefined) record[field.name] = field.defaultValue;
    }
    Object.assign(record, {
      IsDeleted: false,
      CreatedDate: now,
      LastModifiedDate: now,
      SystemModstamp: now,
      CreatedById: author,
      LastModifiedById: author,
      ...(object.fields.has('OwnerId') ? { OwnerId: author } : {}),
      ...(object.name === 'Case' ? { CaseNumber: String((caseNumber += 1)).padStart(8, '0') } : {}),
      ...(object.name === 'Lead' ? { IsConverted: false } : {}),
    });
    for (const [k, v] of Object.entries(values)) if (v !== null || record[k] === undefined) record[k] = v;
    record.Id = id;
    derive(object, record);
    // Seeding skips these checks on purpose: tests need duplicates to reproduce the upsert 300.
    if (!seed) {
      checkRequired(object, record);
      checkUnique(object, record);
      checkValidationRules(object, record);
    }
    table(object).set(id, record);
    if (!seed) recordHistory(object, undefined, record, author, now);
    return record;
  };

  const getLive = (object: SalesforceObjectDef, rawId: string): SoqlRecord => {
    const id18 = toSalesforceId18(rawId);
    if (!id18 || objectForId(schema, id18)?.name !== object.name) {
      // A malformed id in the path: §4 says Salesforce reports it as not found.
      throw new WriteError(404, { errorCode: 'NOT_FOUND', message: 'The requested resource does not exist' });
    }
    const record = table(object).get(id18);
    if (record) return record;
    if (deleted.has(id18))
      throw new WriteError(404, { errorCode: 'ENTITY_IS_DELETED', message: 'entity is deleted', fields: [] });
    throw new WriteError(404, { errorCode: 'NOT_FOUND', message: 'The requested resource does not exist' });
  };

  const updateRecord = (
    object: SalesforceObjectDef,
    existing: SoqlRecord,
    body: Record<string, unknown>,
  ): SoqlRecord => {
    refuseReadOnlyObject(object, 'update');
    // Real Salesforce's answer to any update of a converted Lead. The code is not in the contract's
    // error table (shared/contracts/salesforce.md §4): status and wording as orgs report it.
    if (object.name === 'Lead' && existing.IsConverted === true) {
      throw new WriteError(400, {
        errorCode: 'CANNOT_UPDATE_CONVERTED_LEAD',
        message: 'cannot reference converted lead',
        fields: [],
      });
    }
    const values = validateFields(object, body, 'update');
    const now = formatDatetime(Date.now());
    const record: SoqlRecord = {
      ...existing,
      ...values,
      Id: existing.Id,
      LastModifiedDate: now,
      SystemModstamp: now,
      // Every token authenticates as the integration user, so API writes are attributed to it (loop prevention keys on this).
      LastModifiedById: integrationUserId,
    };
    derive(object, record);
    checkRequired(object, record);
    checkUnique(object, record);
    checkValidationRules(object, record);
    table(object).set(record.Id, record);
    recordHistory(object, existing, record, integrationUserId, now);
    return record;
  };

  const deleteRecord = (object: SalesforceObjectDef, rawId: string): void => {
    refuseReadOnlyObject(object, 'delete');
    const record = getLive(object, rawId);
    table(object).delete(record.Id);
    deleted.set(record.Id, { ...record, IsDeleted: true });
  };

  type UpsertOutcome =
    { status: 'created' | 'updated'; record: SoqlRecord } | { status: 'multiple'; ids: string[] };
  const upsertRecord = (
    object: SalesforceObjectDef,
    fieldName: string,
    value: string,
    body: Record<string, unknown>,
  ): UpsertOutcome => {
    const field = findField(object, fieldName);
    if (!field || (!field.externalId && field.name !== 'Id')) {
      throw new WriteError(404, {
        errorCode: 'NOT_FOUND',
        message: `Provided external ID field does not exist or is not accessible: ${fieldName}`,
      });
    }
    const rest = { ...body };
    for (const key of Object.keys(rest)) {
      if (key.toLowerCase() === field.name.toLowerCase()) {
        if (String(rest[key]) !== value) {
          throw new WriteError(400, {
            errorCode: 'INVALID_FIELD',
            message: `The external ID field ${field.name} in the body does not match the value in the URL`,
            fields: [field.name],
          });
        }
        delete rest[key];
      }
    }
    if (field.name === 'Id')
      return { status: 'updated', record: updateRecord(object, getLive(object, value), rest) };
    const matches = [...table(object).values()].filter((r) => {
      const stored = r[field.name];
      return (
        (typeof stored === 'string' || typeof stored === 'number') &&
        String(stored).toLowerCase() === value.toLowerCase()
      );
    });
    if (matches.length > 1) return { status: 'multiple', ids: matches.map((r) => r.Id) };
    const match = matches[0];
    if (match) return { status: 'updated', record: updateRecord(object, match, rest) };
    const key = field.type === 'double' ? Number(value) : value;
    return { status: 'created', record: createRecord(object, { ...rest, [field.name]: key }) };
  };

  // ---- HTTP plumbing -------------------------------------------------------------------------

  const limitHeader = () => ({
    ...JSON_HEADERS,
    'sforce-limit-info': `api-usage=${apiUsed}/${dailyApiLimit}`,
  });

  const versionNumber = (version: string) => Number(version.slice(1));

  /** A handler's answer, its Salesforce errors (write, SOQL) turned into error responses. */
  const answerOf = async (
    run: () => EmulatorResponse | Promise<EmulatorResponse>,
  ): Promise<EmulatorResponse> => {
    try {
      return await run();
    } catch (error) {
      if (error instanceof WriteError) return { status: error.status, body: [error.error] };
      if (error instanceof SoqlError) return errorResponse(400, error.errorCode, error.message);
      throw error;
    }
  };

  /** Requests made up by a composite request for its subrequests. */
  const subrequests = new WeakSet<EmulatorRequest>();

  /** Wrap a data-API handler: version check, bearer check, usage count, limits, JSON errors. */
  const data =
    (handler: (req: EmulatorRequest, version: string) => EmulatorResponse | Promise<EmulatorResponse>) =>
    async (req: EmulatorRequest): Promise<EmulatorResponse> => {
      const version = req.params.version ?? '';
      const answer = await (async (): Promise<EmulatorResponse> => {
        // A composite subrequest was authenticated and counted with its composite request.
        if (subrequests.has(req)) {
          return req.jsonError
            ? errorResponse(400, 'JSON_PARSER_ERROR', 'Unexpected character in JSON body')
            : await answerOf(() => handler(req, version));
        }
        const auth = req.headers.authorization ?? '';
        const bearer = /^Bearer (.+)$/i.exec(auth)?.[1];
        if (rejectAll || !bearer || !validTokens.has(bearer)) {
          return errorResponse(401, 'INVALID_SESSION_ID', 'Session expired or invalid');
        }
        if (req.params.version !== undefined && !/^v\d+\.\d$/.test(version))
          return errorResponse(404, 'NOT_FOUND', 'The requested resource does not exist');
        apiUsed += 1;
        if (rateLimited > 0 || apiUsed > dailyApiLimit) {
          if (rateLimited > 0) rateLimited -= 1;
          return errorResponse(403, 'REQUEST_LIMIT_EXCEEDED', 'TotalRequests Limit exceeded.');
        }
        if (req.jsonError)
          return errorResponse(400, 'JSON_PARSER_ERROR', 'Unexpected character in JSON body');
        return await answerOf(() => handler(req, version));
      })();
      return { ...answer, headers: { ...limitHeader(), ...(answer.headers ?? {}) } };
    };

  const bodyObject = (req: EmulatorRequest): Record<string, unknown> => {
    if (!req.json || typeof req.json !== 'object' || Array.isArray(req.json)) {
      throw new WriteError(400, {
        errorCode: 'JSON_PARSER_ERROR',
        message: 'The request body must be a JSON object',
      });
    }
    return req.json as Record<string, unknown>;
  };

  const saveError = (error: unknown): SfError => {
    if (error instanceof WriteError) return { ...error.error, fields: error.error.fields ?? [] };
    throw error;
  };
  const toSaveResultError = (e: SfError) => ({
    statusCode: e.errorCode,
    message: e.message,
    fields: e.fields ?? [],
  });

  /** The records as they are now, and the function that puts them back (all-or-none rollbacks). */
  const snapshotRecords = () => {
    const snapshot = new Map([...store].map(([k, v]) => [k, new Map(v)]));
    const snapshotDeleted = new Map(deleted);
    return () => {
      for (const [k, v] of snapshot) store.set(k, v);
      deleted.clear();
      for (const [k, v] of snapshotDeleted) deleted.set(k, v);
    };
  };

  /** Run a collection operation per record, rolling everything back for allOrNone when one fails. */
  const collection = <T extends { id?: string; created?: boolean }>(
    items: unknown[],
    allOrNone: boolean,
    run: (item: Record<string, unknown>) => T,
  ): EmulatorResponse => {
    if (items.length > MAX_COLLECTION) {
      return errorResponse(
        400,
        'EXCEEDED_ID_LIMIT',
        'record limit reached. cannot submit more than 200 records into this call',
      );
    }
    const restore = snapshotRecords();
    const results = items.map((item) => {
      try {
        if (!item || typeof item !== 'object' || Array.isArray(item)) {
          throw new WriteError(400, {
            errorCode: 'JSON_PARSER_ERROR',
            message: 'Each record must be a JSON object',
          });
        }
        return { ...run(item as Record<string, unknown>), success: true, errors: [] as unknown[] };
      } catch (error) {
        const id =
          item && typeof item === 'object' && 'id' in item ? (item as { id: unknown }).id : undefined;
        return {
          ...(typeof id === 'string' ? { id } : {}),
          success: false,
          errors: [toSaveResultError(saveError(error))],
        };
      }
    });
    if (allOrNone && results.some((r) => !r.success)) {
      restore();
      return {
        status: 200,
        body: results.map((r) =>
          r.success
            ? {
                ...(r.id ? { id: r.id } : {}),
                success: false,
                errors: [
                  {
                    statusCode: 'ALL_OR_NONE_OPERATION_ROLLED_BACK',
                    message:
                      'Record rolled back because not all records were valid and the request was using AllOrNone header',
                    fields: [],
                  },
                ],
              }
            : r,
        ),
      };
    }
    return { status: 200, body: results };
  };

  const collectionBody = (req: EmulatorRequest): { records: unknown[]; allOrNone: boolean } => {
    const body = bodyObject(req);
    if (!Array.isArray(body.records)) {
      throw new WriteError(400, { errorCode: 'JSON_PARSER_ERROR', message: 'records must be an array' });
    }
    return { records: body.records, allOrNone: body.allOrNone === true };
  };

  const recordType = (item: Record<string, unknown>): SalesforceObjectDef => {
    const attributes = item.attributes as { type?: unknown } | undefined;
    if (typeof attributes?.type !== 'string') {
      throw new WriteError(400, { errorCode: 'INVALID_FIELD', message: 'No sObject type in attributes' });
    }
    const object = findObject(schema, attributes.type);
    if (!object)
      throw new WriteError(400, {
        errorCode: 'INVALID_TYPE',
        message: `sObject type '${attributes.type}' is not supported`,
      });
    return object;
  };

  const project = (object: SalesforceObjectDef, record: SoqlRecord, version: string, fields?: string[]) => {
    const out: Record<string, unknown> = {
      attributes: {
        type: object.name,
        url: `/services/data/${version}/sobjects/${object.name}/${record.Id}`,
      },
    };
    const names = fields ?? [...object.fields.keys()];
    for (const name of names) {
      const field = findField(object, name);
      if (!field) {
        throw new WriteError(400, {
          errorCode: 'INVALID_FIELD',
          message: `No such column '${name}' on entity '${object.name}'`,
        });
      }
      out[field.name] = record[field.name] ?? null;
    }
    return out;
  };

  const describeObject = (object: SalesforceObjectDef) => ({
    name: object.name,
    label: object.name,
    keyPrefix: object.keyPrefix,
    custom: false,
    createable: !object.readOnly,
    updateable: !object.readOnly,
    queryable: true,
    fields: [...object.fields.values()].map((f) => ({
      name: f.name,
      label: f.name,
      type: f.type,
      custom: f.name.endsWith('__c'),
      length: f.length ?? 0,
      nillable: !f.required,
      createable: !f.readOnly,
      updateable: !f.readOnly,
      defaultedOnCreate: f.defaultValue !== undefined || f.readOnly === true,
      externalId: f.externalId === true,
      unique: f.unique === true,
      restrictedPicklist: f.restricted === true,
      filterable: isFilterable(f),
      sortable: isSortable(f),
      picklistValues: (f.picklist ?? []).map((value) => ({
        value,
        label: value,
        active: true,
        defaultValue: value === f.defaultValue,
      })),
      referenceTo: f.referenceTo ?? [],
      relationshipName: f.relationshipName ?? null,
    })),
    childRelationships: [],
  });

  const runQuery = (req: EmulatorRequest, version: string, all: boolean): EmulatorResponse => {
    const q = req.query.get('q');
    if (!q) return errorResponse(400, 'MALFORMED_QUERY', 'A query string (q) is required');
    const query = parseSoql(q, schema);
    let rows = [...table(query.object).values()];
    if (all) rows = rows.concat([...deleted.values()].filter((r) => r.Id.startsWith(query.object.keyPrefix)));
    const result = runSoql(query, rows, findById, version);
    const batch = /batchSize=(\d+)/.exec(String(req.headers['sforce-query-options'] ?? ''))?.[1];
    const pageSize = batch ? Math.min(Math.max(Number(batch), 200), 2000) : queryPageSize;
    return page(version, query.object.name, result.records, result.totalSize, 0, pageSize);
  };

  const page = (
    version: string,
    sobject: string,
    records: Record<string, unknown>[],
    totalSize: number,
    offset: number,
    pageSize: number,
  ): EmulatorResponse => {
    const slice = records.slice(offset, offset + pageSize);
    const nextOffset = offset + slice.length;
    served.set(sobject, (served.get(sobject) ?? 0) + slice.length);
    if (nextOffset >= records.length) return { status: 200, body: { totalSize, done: true, records: slice } };
    let cursor = [...cursors.entries()].find(([, v]) => v.records === records)?.[0];
    if (!cursor) {
      cursorCounter += 1;
      const id15 = `0r85g0000${base62(cursorCounter, 6)}`;
      cursor = id15 + salesforceIdChecksum(id15);
      cursors.set(cursor, { sobject, records, totalSize, pageSize });
      // Bounded memory for long-running sandboxes: drop the oldest cursor.
      if (cursors.size > 200) cursors.delete(cursors.keys().next().value as string);
    }
    return {
      status: 200,
      body: {
        totalSize,
        done: false,
        nextRecordsUrl: `/services/data/${version}/query/${cursor}-${nextOffset}`,
        records: slice,
      },
    };
  };

  const queryMore = (req: EmulatorRequest, version: string): EmulatorResponse => {
    const m = /^(.+)-(\d+)$/.exec(req.params.locator ?? '');
    const entry = m ? cursors.get(m[1] ?? '') : undefined;
    if (!m || !entry) return errorResponse(400, 'INVALID_QUERY_LOCATOR', 'invalid query locator');
    return page(version, entry.sobject, entry.records, entry.totalSize, Number(m[2]), entry.pageSize);
  };

  // ---- routes --------------------------------------------------------------------------------

  let baseUrl = '';
  const d = '/services/data/:version';
  const routes: Route[] = [
    { method: 'POST', pattern: '/services/oauth2/token', handler: tokenEndpoint },
    {
      method: 'POST',
      pattern: '/services/oauth2/revoke',
      handler: (req) => {
        const value = new URLSearchParams(req.rawBody.toString('utf8')).get('token') ?? '';
        validTokens.delete(value);
        refreshTokens.delete(value);
        return { status: 200, body: '' };
      },
    },
    {
      method: 'GET',
      pattern: '/services/data',
      handler: () => ({
        status: 200,
        headers: JSON_HEADERS,
        body: ['58.0', '59.0', '60.0', '61.0', '62.0'].map((version) => ({
          label: 'Emulator',
          url: `/services/data/v${version}`,
          version,
        })),
      }),
    },
    {
      method: 'GET',
      pattern: '/id/:org/:user',
      handler: data(() => ({
        status: 200,
        body: {
          user_id: integrationUserId,
          organization_id: orgId18,
          username: credentials.username,
          urls: { rest: `${baseUrl}/services/data/v{version}/` },
        },
      })),
    },
    {
      method: 'GET',
      pattern: `${d}/limits`,
      handler: data(() => ({
        status: 200,
        body: {
          DailyApiRequests: { Max: dailyApiLimit, Remaining: Math.max(0, dailyApiLimit - apiUsed) },
          DailyBulkV2QueryJobs: { Max: 10000, Remaining: 10000 },
          DataStorageMB: { Max: 5, Remaining: 5 },
        },
      })),
    },
    {
      method: 'GET',
      pattern: `${d}/sobjects`,
      handler: data(() => ({
        status: 200,
        body: {
          encoding: 'UTF-8',
          maxBatchSize: 200,
          sobjects: [...schema.values()].map((o) => ({
            name: o.name,
            label: o.name,
            keyPrefix: o.keyPrefix,
            custom: false,
          })),
        },
      })),
    },
    {
      method: 'GET',
      pattern: `${d}/sobjects/:type/describe`,
      handler: data((req) => ({ status: 200, body: describeObject(objectOrThrow(req.params.type ?? '')) })),
    },
    {
      method: 'POST',
      pattern: `${d}/sobjects/:type`,
      handler: data((req) => {
        const record = createRecord(objectOrThrow(req.params.type ?? ''), bodyObject(req));
        return { status: 201, body: { id: record.Id, success: true, errors: [] } };
      }),
    },
    {
      method: 'GET',
      pattern: `${d}/sobjects/:type/:id`,
      handler: data((req, version) => {
        const object = objectOrThrow(req.params.type ?? '');
        const fields = req.query
          .get('fields')
          ?.split(',')
          .map((f) => f.trim())
          .filter(Boolean);
        return { status: 200, body: project(object, getLive(object, req.params.id ?? ''), version, fields) };
      }),
    },
    {
      method: 'PATCH',
      pattern: `${d}/sobjects/:type/:id`,
      handler: data((req) => {
        const object = objectOrThrow(req.params.type ?? '');
        updateRecord(object, getLive(object, req.params.id ?? ''), bodyObject(req));
        return { status: 204 };
      }),
    },
    {
      method: 'DELETE',
      pattern: `${d}/sobjects/:type/:id`,
      handler: data((req) => {
        deleteRecord(objectOrThrow(req.params.type ?? ''), req.params.id ?? '');
        return { status: 204 };
      }),
    },
    {
      method: 'PATCH',
      pattern: `${d}/sobjects/:type/:field/:value`,
      handler: data((req, version) => {
        const object = objectOrThrow(req.params.type ?? '');
        const outcome = upsertRecord(object, req.params.field ?? '', req.params.value ?? '', bodyObject(req));
        if (outcome.status === 'multiple') {
          return {
            status: 300,
            body: outcome.ids.map((id) => `/services/data/${version}/sobjects/${object.name}/${id}`),
          };
        }
        const result = { id: outcome.record.Id, success: true, errors: [] };
        if (outcome.status === 'created') return { status: 201, body: { ...result, created: true } };
        // Below API 46 an upsert that updates answers 204 with no body (§3.1).
        return versionNumber(version) >= 46
          ? { status: 200, body: { ...result, created: false } }
          : { status: 204 };
      }),
    },
    { method: 'GET', pattern: `${d}/query`, handler: data((req, version) => runQuery(req, version, false)) },
    {
      method: 'GET',
      pattern: `${d}/queryAll`,
      handler: data((req, version) => runQuery(req, version, true)),
    },
    { method: 'GET', pattern: `${d}/query/:locator`, handler: data(queryMore) },
    { method: 'GET', pattern: `${d}/queryAll/:locator`, handler: data(queryMore) },
    { method: 'POST', pattern: `${d}/composite`, handler: data((req) => composite(req)) },
    {
      method: 'POST',
      pattern: `${d}/composite/sobjects`,
      handler: data((req) => {
        const { records, allOrNone } = collectionBody(req);
        return collection(records, allOrNone, (item) => {
          const { attributes: _attributes, ...fields } = item;
          return { id: createRecord(recordType(item), fields).Id };
        });
      }),
    },
    {
      method: 'PATCH',
      pattern: `${d}/composite/sobjects`,
      handler: data((req) => {
        const { records, allOrNone } = collectionBody(req);
        return collection(records, allOrNone, (item) => {
          const { attributes: _attributes, id, Id, ...fields } = item;
          const rawId = typeof id === 'string' ? id : typeof Id === 'string' ? Id : '';
          if (!rawId)
            throw new WriteError(400, {
              errorCode: 'MISSING_ARGUMENT',
              message: 'Id not specified in an update call',
            });
          const object = recordType(item);
          return { id: updateRecord(object, getLive(object, rawId), fields).Id };
        });
      }),
    },
    {
      method: 'PATCH',
      pattern: `${d}/composite/sobjects/:type/:field`,
      handler: data((req) => {
        const object = objectOrThrow(req.params.type ?? '');
        const fieldName = req.params.field ?? '';
        const { records, allOrNone } = collectionBody(req);
        return collection(records, allOrNone, (item) => {
          const { attributes: _attributes, ...fields } = item;
          const key = Object.keys(fields).find((k) => k.toLowerCase() === fieldName.toLowerCase());
          const raw = key === undefined ? undefined : fields[key];
          // A Number external-id field takes a JSON number, as Salesforce accepts it.
          const value = typeof raw === 'number' && Number.isFinite(raw) ? String(raw) : raw;
          if (typeof value !== 'string' || value === '') {
            throw new WriteError(400, {
              errorCode: 'MISSING_ARGUMENT',
              message: `${fieldName} not specified`,
              fields: [fieldName],
            });
          }
          const outcome = upsertRecord(object, fieldName, value, fields);
          if (outcome.status === 'multiple') {
            throw new WriteError(300, {
              errorCode: 'DUPLICATE_EXTERNAL_ID',
              message: `${fieldName}: more than one record found for external id field: ${outcome.ids.join(', ')}`,
              fields: [fieldName],
            });
          }
          return { id: outcome.record.Id, created: outcome.status === 'created' };
        });
      }),
    },
    {
      method: 'DELETE',
      pattern: `${d}/composite/sobjects`,
      handler: data((req) => {
        const ids = (req.query.get('ids') ?? '').split(',').filter(Boolean);
        return collection(
          ids.map((id) => ({ id })),
          req.query.get('allOrNone') === 'true',
          (item) => {
            const id = String(item.id);
            const object = objectForId(schema, id);
            if (!object)
              throw new WriteError(400, {
                errorCode: 'MALFORMED_ID',
                message: `malformed id ${id}`,
                fields: [],
              });
            deleteRecord(object, id);
            return { id: toSalesforceId18(id) ?? id };
          },
        );
      }),
    },
    {
      method: 'POST',
      pattern: `${d}/composite/sobjects/:type`,
      handler: data((req, version) => {
        const object = objectOrThrow(req.params.type ?? '');
        const body = bodyObject(req);
        const ids = Array.isArray(body.ids) ? body.ids.map(String) : [];
        const fields = Array.isArray(body.fields) ? body.fields.map(String) : undefined;
        if (ids.length > MAX_COLLECTION) {
          return errorResponse(
            400,
            'EXCEEDED_ID_LIMIT',
            'record limit reached. cannot submit more than 200 records into this call',
          );
        }
        return {
          status: 200,
          body: ids.map((id) => {
            const id18 = toSalesforceId18(id);
            const record = id18 ? table(object).get(id18) : undefined;
            return record ? project(object, record, version, fields) : null;
          }),
        };
      }),
    },
  ];

  /**
   * `POST /composite`: up to 25 subrequests run in order as one API call, at most 5 of them sObject
   * Collections or queries; `@{referenceId.field}` in a url or body reads an earlier answer. With
   * `allOrNone`, a failed subrequest rolls back the others (PROCESSING_HALTED). The error codes for a
   * malformed composite body are not documented (UNVERIFIED): the emulator answers INVALID_API_INPUT.
   */
  async function composite(req: EmulatorRequest): Promise<EmulatorResponse> {
    // A collection answers 200 even when its records failed (each result says so): in an
    // all-or-none composite such a collection fails the whole request all the same. UNVERIFIED: the
    // HTTP status a real org reports for that collection subrequest; its body keeps the record errors.
    const failed = (answer: { status?: number; httpStatusCode?: number; body?: unknown }) =>
      (answer.status ?? answer.httpStatusCode ?? 0) >= 400 ||
      (Array.isArray(answer.body) &&
        answer.body.some(
          (r) => r !== null && typeof r === 'object' && (r as { success?: unknown }).success === false,
        ));
    const body = bodyObject(req);
    const list = body.compositeRequest;
    const invalid = (message: string) => new WriteError(400, { errorCode: 'INVALID_API_INPUT', message });
    if (!Array.isArray(list) || list.length === 0)
      throw invalid('compositeRequest must be a non-empty array');
    if (list.length > 25) throw invalid('A composite request may contain at most 25 subrequests');
    const seen = new Set<string>();
    const parsed = list.map((raw: unknown) => {
      const sub = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
      const { method, url, referenceId } = sub;
      if (typeof method !== 'string' || typeof url !== 'string' || !url.startsWith('/services/data/v'))
        throw invalid('Each subrequest needs a method and a url under /services/data/');
      if (
        typeof referenceId !== 'string' ||
        !/^[A-Za-z0-9][A-Za-z0-9_]*$/.test(referenceId) ||
        seen.has(referenceId)
      )
        throw invalid('Each subrequest needs a unique referenceId of letters, digits and _');
      seen.add(referenceId);
      return { method: method.toUpperCase(), url, referenceId, body: sub.body, headers: sub.httpHeaders };
    });
    const heavy = parsed.filter((s) => /\/(composite\/sobjects|query|queryAll)(\/|\?|$)/.test(s.url));
    if (heavy.length > 5)
      throw invalid('A composite request may contain at most 5 sObject Collections or query subrequests');

    const allOrNone = body.allOrNone === true;
    const restore = snapshotRecords();
    const answers = new Map<string, unknown>();
    const out: {
      body: unknown;
      httpHeaders: Record<string, string>;
      httpStatusCode: number;
      referenceId: string;
    }[] = [];
    const dereference = (text: string) =>
      text.replace(
        /@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])+)\}/g,
        (whole, ref: string, path: string) => {
          let value: unknown = answers.get(ref);
          for (const part of path.match(/\.[A-Za-z0-9_]+|\[\d+\]/g) ?? []) {
            const key = part.startsWith('.') ? part.slice(1) : Number(part.slice(1, -1));
            value =
              value && typeof value === 'object'
                ? (value as Record<string | number, unknown>)[key]
                : undefined;
          }
          if (value === undefined)
            throw new WriteError(400, {
              errorCode: 'INVALID_REFERENCE',
              message: `${whole} does not resolve`,
            });
          return String(value);
        },
      );
    for (const sub of parsed) {
      const answer = await answerOf(async () => {
        const url = new URL(dereference(sub.url), 'http://composite.invalid');
        // An all-or-none composite makes each of its collections all-or-none too, whatever the
        // collection says (Salesforce REST guide, "allOrNone Parameters in Composite and Collections").
        const subBody =
          allOrNone && sub.body && typeof sub.body === 'object' && !Array.isArray(sub.body)
            ? 'records' in sub.body
              ? { ...sub.body, allOrNone: true }
              : sub.body
            : sub.body;
        if (allOrNone && sub.method === 'DELETE' && url.pathname.endsWith('/composite/sobjects'))
          url.searchParams.set('allOrNone', 'true');
        const text = subBody === undefined ? '' : dereference(JSON.stringify(subBody));
        const route = routes.find(
          (r) =>
            r.method === sub.method &&
            r.pattern !== `${d}/composite` &&
            matchPattern(r.pattern, url.pathname),
        );
        const params = route ? matchPattern(route.pattern, url.pathname) : undefined;
        if (!route || !params)
          return errorResponse(404, 'NOT_FOUND', 'The requested resource does not exist');
        const extra =
          sub.headers && typeof sub.headers === 'object' ? (sub.headers as Record<string, string>) : {};
        const request: EmulatorRequest = {
          method: sub.method,
          path: url.pathname,
          params,
          query: url.searchParams,
          headers: {
            ...req.headers,
            ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k.toLowerCase(), String(v)])),
          },
          rawBody: Buffer.from(text),
          json: undefined,
          jsonError: false,
        };
        try {
          request.json = text === '' ? undefined : (JSON.parse(text) as unknown);
        } catch {
          request.jsonError = true;
        }
        subrequests.add(request);
        return await route.handler(request);
      });
      answers.set(sub.referenceId, answer.body);
      out.push({
        body: answer.body ?? null,
        httpHeaders: {},
        httpStatusCode: answer.status,
        referenceId: sub.referenceId,
      });
      if (allOrNone && failed(answer)) break;
    }
    if (allOrNone && out.some(failed)) {
      restore();
      const halted = [
        {
          errorCode: 'PROCESSING_HALTED',
          message: 'The transaction was rolled back since another operation in the same transaction failed.',
        },
      ];
      return {
        status: 200,
        body: {
          compositeResponse: parsed.map((sub, i) => {
            const done = out[i];
            return done && failed(done)
              ? done
              : { body: halted, httpHeaders: {}, httpStatusCode: 400, referenceId: sub.referenceId };
          }),
        },
      };
    }
    return { status: 200, body: { compositeResponse: out } };
  }

  function tokenEndpoint(req: EmulatorRequest): EmulatorResponse {
    const form = new URLSearchParams(req.rawBody.toString('utf8'));
    const fail = (error: string, description: string): EmulatorResponse => ({
      status: 400,
      headers: JSON_HEADERS,
      body: { error, error_description: description },
    });
    const grant = form.get('grant_type');
    const clientOk = () =>
      form.get('client_id') === credentials.clientId &&
      form.get('client_secret') === credentials.clientSecret;
    switch (grant) {
      case 'password':
        if (!clientOk()) return fail('invalid_client', 'invalid client credentials');
        if (form.get('username') !== credentials.username || form.get('password') !== credentials.password) {
          return fail('invalid_grant', 'authentication failure');
        }
        break;
      case 'client_credentials':
        if (!clientOk()) return fail('invalid_client', 'invalid client credentials');
        break;
      case 'urn:ietf:params:oauth:grant-type:jwt-bearer': {
        // Signatures are not verified: the emulator has no certificate. Well-formedness is.
        const parts = (form.get('assertion') ?? '').split('.');
        const decodes = (part: string | undefined) => {
          try {
            const value: unknown = JSON.parse(Buffer.from(part ?? '', 'base64url').toString('utf8'));
            return typeof value === 'object' && value !== null;
          } catch {
            return false;
          }
        };
        if (parts.length !== 3 || !decodes(parts[0]) || !decodes(parts[1]) || !parts[2]) {
          return fail('invalid_grant', 'invalid assertion');
        }
        break;
      }
      case 'refresh_token':
        if (form.get('client_id') !== credentials.clientId)
          return fail('invalid_client', 'invalid client credentials');
        if (!refreshTokens.has(form.get('refresh_token') ?? ''))
          return fail('invalid_grant', 'expired access/refresh token');
        break;
      default:
        return fail('unsupported_grant_type', 'grant type not supported');
    }
    // None of these grants returns a refresh token in Salesforce; tests get one from issueTokens().
    const { accessToken, refreshToken } = issueTokens();
    refreshTokens.delete(refreshToken);
    const jwt = grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer';
    return {
      status: 200,
      headers: JSON_HEADERS,
      body: {
        access_token: accessToken,
        instance_url: baseUrl,
        id: `${baseUrl}/id/${orgId18}/${integrationUserId}`,
        token_type: 'Bearer',
        ...(jwt ? {} : { issued_at: String(Date.now()), signature: randomBytes(32).toString('base64') }),
        ...(grant === 'client_credentials' ? { scope: 'api' } : {}),
      },
    };
  }

  const server = await startEmulatorServer({
    name: 'salesforce',
    routes,
    ...(options.port === undefined ? {} : { port: options.port }),
    unknownRouteBody: (method, path) => [
      { errorCode: 'NOT_IMPLEMENTED', message: `The Salesforce emulator has no route ${method} ${path}` },
    ],
  });
  baseUrl = server.url;

  const seedInsert = (sobject: string, fields: Record<string, unknown>): SoqlRecord => {
    const object = findObject(schema, sobject);
    if (!object) throw new Error(`Unknown sObject ${sobject}`);
    return { ...createRecord(object, fields, true) };
  };
  seedInsert('User', {
    Id: integrationUserId,
    Username: credentials.username,
    FirstName: 'Fraudgate',
    LastName: 'Integration',
    Email: 'integration@fraudgate.example.com',
    Alias: 'fgint',
  });
  const demo = options.seed === false ? undefined : seedSalesforceDemoData(seedInsert);
  /** The user a UI change is attributed to: the given one, else the first that is not the integration user. */
  const someoneElse = (userId: string | undefined): string => {
    const human =
      userId ?? [...table(findObject(schema, 'User')!).values()].find((u) => u.Id !== integrationUserId)?.Id;
    if (!human) throw new Error('a change in the UI needs a user other than the integration user');
    return human;
  };

  return {
    ...server,
    orgId: orgId18,
    integrationUserId,
    exportState: () => ({ store, deleted, idCounter, caseNumber }),
    importState(state: EmulatorState) {
      for (const [name, rows] of store)
        replaceContents(rows, (state.store as Map<string, unknown>).get(name));
      replaceContents(deleted, state.deleted);
      idCounter = Number(state.idCounter);
      caseNumber = Number(state.caseNumber);
    },
    demo,
    credentials,
    records(sobject) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      return [...table(object).values()].map((r) => ({ ...r }));
    },
    insert: seedInsert,
    createAs(sobject, fields, createOptions = {}) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      return { ...createRecord(object, fields, false, someoneElse(createOptions.userId)) };
    },
    editAs(sobject, id, fields, editOptions = {}) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      const existing = getLive(object, id);
      const values = validateFields(object, fields, 'update');
      const human = someoneElse(editOptions.userId);
      const stamp = editOptions.systemModstamp ?? formatDatetime(Date.now());
      const record: SoqlRecord = {
        ...existing,
        ...values,
        Id: existing.Id,
        LastModifiedDate: stamp,
        SystemModstamp: stamp,
        LastModifiedById: human,
      };
      derive(object, record);
      table(object).set(record.Id, record);
      recordHistory(object, existing, record, human, stamp);
      return { ...record };
    },
    rateLimitNext(n) {
      rateLimited = n;
    },
    addCustomField(sobject, field) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      if (!field.name.endsWith('__c')) throw new Error(`Custom field names end in __c: ${field.name}`);
      if (findField(object, field.name)) throw new Error(`${object.name}.${field.name} exists`);
      object.fields.set(field.name, field);
    },
    addValidationRule(sobject, check) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      const rule = { object: object.name, check };
      validationRules.push(rule);
      return () => {
        const at = validationRules.indexOf(rule);
        if (at >= 0) validationRules.splice(at, 1);
      };
    },
    lockRows(sobject, check) {
      const object = findObject(schema, sobject);
      if (!object) throw new Error(`Unknown sObject ${sobject}`);
      const lock = { object: object.name, check };
      lockedRows.push(lock);
      return () => {
        const at = lockedRows.indexOf(lock);
        if (at >= 0) lockedRows.splice(at, 1);
      };
    },
    expireTokens() {
      validTokens.clear();
    },
    alwaysUnauthorized(on) {
      rejectAll = on;
    },
    setQueryPageSize(n) {
      queryPageSize = n;
    },
    expireQueryLocators() {
      cursors.clear();
    },
    issueTokens,
    apiUsage: () => ({ used: apiUsed, limit: dailyApiLimit }),
    recordsServed: (sobject) => served.get(findObject(schema, sobject)?.name ?? sobject) ?? 0,
  };
}
