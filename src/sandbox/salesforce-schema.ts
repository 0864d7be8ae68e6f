/**
 * The field schema of the Salesforce emulator's org: the standard objects fraudgate touches plus the
 * custom fields a fraudgate install adds (shared/contracts/salesforce.md §6). Writes and SOQL are
 * validated against it, so a typo in a field name fails in tests exactly as it would in a real org.
 */
import { SALESFORCE_KEY_PREFIXES } from '../clients/salesforce-ids.ts';

export type SalesforceFieldType =
  | 'id'
  | 'string'
  | 'textarea'
  | 'email'
  | 'phone'
  | 'url'
  | 'picklist'
  | 'boolean'
  | 'double'
  | 'date'
  | 'datetime'
  | 'reference'
  /** History rows' OldValue/NewValue: any type, selectable and sortable but never filterable. */
  | 'anyType';

/** One field as the emulator enforces it; mirrors the interesting parts of a describe result. */
export interface SalesforceFieldDef {
  name: string;
  type: SalesforceFieldType;
  /** Must be non-null after defaults on create; cannot be cleared on update. */
  required?: boolean;
  /** Computed by the emulator (Id, CreatedDate, IsClosed, CaseNumber, Name, …); writes are rejected. */
  readOnly?: boolean;
  defaultValue?: unknown;
  length?: number;
  picklist?: readonly string[];
  /** Values outside `picklist` fail with INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST. */
  restricted?: boolean;
  /** Usable as the upsert key (`PATCH /sobjects/T/Field/value`). */
  externalId?: boolean;
  /** Case-insensitively unique across non-deleted records: DUPLICATE_VALUE otherwise. */
  unique?: boolean;
  /** For references: the objects the id may point to, and the relationship name used in SOQL. */
  referenceTo?: readonly string[];
  relationshipName?: string;
  /** false: may not appear in WHERE (history OldValue/NewValue); INVALID_FIELD otherwise. */
  filterable?: false;
}

/**
 * A long text area (a textarea longer than 255 characters: Description, Chatter bodies) is neither
 * filterable nor sortable in SOQL, as in a real org; other fields are unless flagged.
 */
const isLongText = (field: SalesforceFieldDef) => field.type === 'textarea' && (field.length ?? 0) > 255;
export const isFilterable = (field: SalesforceFieldDef) => field.filterable !== false && !isLongText(field);
export const isSortable = (field: SalesforceFieldDef) => !isLongText(field);

export interface SalesforceObjectDef {
  name: string;
  keyPrefix: string;
  /** Written by the org itself (history objects): API inserts, updates and deletes are refused. */
  readOnly?: boolean;
  /** Keyed by the canonical API name. */
  fields: Map<string, SalesforceFieldDef>;
}

const str = (name: string, length = 255, extra: Partial<SalesforceFieldDef> = {}): SalesforceFieldDef => ({
  name,
  type: 'string',
  length,
  ...extra,
});
const ref = (
  name: string,
  referenceTo: string[],
  relationshipName: string,
  extra: Partial<SalesforceFieldDef> = {},
) => ({ name, type: 'reference', referenceTo, relationshipName, ...extra }) satisfies SalesforceFieldDef;
const ro = (
  name: string,
  type: SalesforceFieldType,
  extra: Partial<SalesforceFieldDef> = {},
): SalesforceFieldDef => ({
  name,
  type,
  readOnly: true,
  ...extra,
});
const picklist = (
  name: string,
  values: string[],
  extra: Partial<SalesforceFieldDef> = {},
): SalesforceFieldDef => ({
  name,
  type: 'picklist',
  picklist: values,
  length: 255,
  ...extra,
});
const siftUserId = (): SalesforceFieldDef => str('Sift_User_Id__c', 255, { externalId: true, unique: true });
const siftScore = (): SalesforceFieldDef => ({ name: 'Sift_Score__c', type: 'double' });
const siftRiskBand = (): SalesforceFieldDef =>
  picklist('Sift_Risk_Band__c', ['low', 'medium', 'high', 'critical']);

function common(withOwner: boolean): SalesforceFieldDef[] {
  return [
    ro('Id', 'id'),
    ro('IsDeleted', 'boolean'),
    ro('CreatedDate', 'datetime'),
    ro('LastModifiedDate', 'datetime'),
    ro('SystemModstamp', 'datetime'),
    ref('CreatedById', ['User'], 'CreatedBy', { readOnly: true }),
    ref('LastModifiedById', ['User'], 'LastModifiedBy', { readOnly: true }),
    ...(withOwner ? [ref('OwnerId', ['User', 'Group'], 'Owner')] : []),
  ];
}

/**
 * Fields with history tracking on, per object (Setup → Set History Tracking): a change to one of
 * them, by the API or a human, writes a `<Object>History` row with the old and new value and who
 * made it (shared/contracts/triggers.md §3.1). Created records get one `created` row.
 */
export const HISTORY_TRACKED: Readonly<
  Record<string, { history: string; parentField: string; fields: readonly string[] }>
> = {
  Account: {
    history: 'AccountHistory',
    parentField: 'AccountId',
    fields: ['Fraud_Status__c', 'Sift_Decision__c', 'Sift_Risk_Band__c', 'Type'],
  },
};

const OBJECTS: Record<string, SalesforceFieldDef[]> = {
  Account: [
    ...common(true),
    str('Name', 255, { required: true }),
    picklist('Type', ['Customer', 'Prospect', 'Partner', 'Other']),
    str('Industry'),
    { name: 'Phone', type: 'phone', length: 40 },
    { name: 'Website', type: 'url', length: 255 },
    { name: 'Description', type: 'textarea', length: 32000 },
    siftUserId(),
    // Lowercase values are the demo org's legacy ones; the others are config mapping.decisions' defaults.
    picklist('Sift_Decision__c', ['accept', 'watch', 'block', 'Trusted', 'Under Review', 'Blocked', 'None']),
    // The key of the last decision sync fraudgate applied (with its Chatter post, in one request).
    str('Fraudgate_Sync_Key__c', 40),
    siftScore(),
    siftRiskBand(),
    // The lifecycle status humans set; fraudgate's feedback poller maps its transitions to Sift (issue 5).
    picklist('Fraud_Status__c', [
      'Active',
      'Paying Customer',
      'Under Review',
      'Closed - Fraud',
      'Closed - Other',
    ]),
  ],
  // The StandardObjectNameHistory model (triggers.md §3.1): read-only, written by the org on each tracked change.
  AccountHistory: [
    ro('Id', 'id'),
    ro('IsDeleted', 'boolean'),
    ro('CreatedDate', 'datetime'),
    ref('CreatedById', ['User'], 'CreatedBy', { readOnly: true }),
    ref('AccountId', ['Account'], 'Account', { readOnly: true }),
    ro('Field', 'picklist'),
    ro('DataType', 'picklist'),
    ro('OldValue', 'anyType', { filterable: false }),
    ro('NewValue', 'anyType', { filterable: false }),
  ],
  Contact: [
    ...common(true),
    str('FirstName', 40),
    str('LastName', 80, { required: true }),
    ro('Name', 'string'),
    { name: 'Email', type: 'email', length: 80 },
    { name: 'Phone', type: 'phone', length: 40 },
    ref('AccountId', ['Account'], 'Account'),
    { name: 'Description', type: 'textarea', length: 32000 },
    siftUserId(),
    // Lowercase values are the demo org's legacy ones; the others are config mapping.decisions' defaults.
    picklist('Sift_Decision__c', ['accept', 'watch', 'block', 'Trusted', 'Under Review', 'Blocked', 'None']),
    // The key of the last decision sync fraudgate applied (with its Chatter post, in one request).
    str('Fraudgate_Sync_Key__c', 40),
    siftScore(),
    siftRiskBand(),
  ],
  Lead: [
    ...common(true),
    str('FirstName', 40),
    str('LastName', 80, { required: true }),
    ro('Name', 'string'),
    str('Company', 255, { required: true }),
    { name: 'Email', type: 'email', length: 80 },
    { name: 'Phone', type: 'phone', length: 40 },
    picklist(
      'Status',
      ['Open - Not Contacted', 'Working - Contacted', 'Closed - Converted', 'Closed - Not Converted'],
      {
        required: true,
        defaultValue: 'Open - Not Contacted',
      },
    ),
    picklist('LeadSource', ['Web', 'Phone Inquiry', 'Partner Referral', 'Other']),
    ro('IsConverted', 'boolean'),
    { name: 'Description', type: 'textarea', length: 32000 },
    siftUserId(),
    siftScore(),
    siftRiskBand(),
    { name: 'Sift_Checked_At__c', type: 'datetime' },
  ],
  Case: [
    ...common(true),
    ro('CaseNumber', 'string'),
    str('Subject'),
    { name: 'Description', type: 'textarea', length: 32000 },
    picklist('Priority', ['High', 'Medium', 'Low'], { restricted: true, defaultValue: 'Medium' }),
    picklist('Status', ['New', 'Working', 'Escalated', 'Closed'], { restricted: true, defaultValue: 'New' }),
    picklist('Origin', ['Phone', 'Email', 'Web'], { restricted: true }),
    picklist('Type', ['Fraud', 'Problem', 'Question', 'Feature Request', 'Other'], { restricted: true }),
    picklist('Reason', ['Account Takeover', 'Payment Fraud', 'Chargeback', 'Other']),
    ro('IsClosed', 'boolean'),
    ref('AccountId', ['Account'], 'Account'),
    ref('ContactId', ['Contact'], 'Contact'),
    ref('ParentId', ['Case'], 'Parent'),
    { name: 'SuppliedEmail', type: 'email', length: 80 },
    // A user can have many cases over time: on Case the Sift user id is a plain lookup value, not unique.
    str('Sift_User_Id__c', 255),
    str('Fraudgate_Key__c', 255, { externalId: true, unique: true }),
    siftScore(),
    // How a fraud review ended (values from config mapping.case_resolutions) and the analyst's note.
    picklist('Resolution__c', ['Confirmed Fraud', 'False Positive', 'Inconclusive', 'Duplicate']),
    { name: 'Resolution_Notes__c', type: 'textarea', length: 32000 },
  ],
  Opportunity: [
    ...common(true),
    str('Name', 120, { required: true }),
    picklist(
      'StageName',
      [
        'Prospecting',
        'Qualification',
        'Needs Analysis',
        'Value Proposition',
        'Negotiation/Review',
        'Closed Won',
        'Closed Lost',
      ],
      { required: true },
    ),
    { name: 'CloseDate', type: 'date', required: true },
    { name: 'Amount', type: 'double' },
    ref('AccountId', ['Account'], 'Account'),
    ro('IsClosed', 'boolean'),
    ro('IsWon', 'boolean'),
    { name: 'Fraud_Risk_Flag__c', type: 'boolean', defaultValue: false },
    // Orgs that grade risk use a picklist instead of the checkbox (mapping.salesforce_fields.opportunity_flag).
    picklist('Fraud_Risk_Level__c', ['Elevated', 'High'], { restricted: true }),
    { name: 'Fraud_Risk_Summary__c', type: 'textarea', length: 32000 },
  ],
  Task: [
    ...common(true),
    str('Subject'),
    { name: 'ActivityDate', type: 'date' },
    picklist('Status', ['Not Started', 'In Progress', 'Completed', 'Waiting on someone else', 'Deferred'], {
      required: true,
      defaultValue: 'Not Started',
    }),
    picklist('Priority', ['High', 'Normal', 'Low'], { required: true, defaultValue: 'Normal' }),
    ref('WhatId', ['Account', 'Opportunity', 'Case'], 'What'),
    ref('WhoId', ['Contact', 'Lead'], 'Who'),
    { name: 'Description', type: 'textarea', length: 32000 },
    ro('IsClosed', 'boolean'),
  ],
  FeedItem: [
    ...common(false),
    ref('ParentId', ['Account', 'Contact', 'Lead', 'Case', 'Opportunity', 'User', 'Group'], 'Parent', {
      required: true,
    }),
    { name: 'Body', type: 'textarea', length: 10000, required: true },
    picklist('Type', ['TextPost', 'LinkPost'], { defaultValue: 'TextPost' }),
    { name: 'IsRichText', type: 'boolean', defaultValue: false },
  ],
  Group: [
    ...common(true),
    str('Name', 40, { required: true }),
    str('DeveloperName', 80),
    picklist('Type', ['Regular', 'Queue', 'Role', 'Organization'], {
      restricted: true,
      defaultValue: 'Regular',
    }),
    { name: 'Email', type: 'email', length: 255 },
  ],
  User: [
    ...common(false),
    str('Username', 80, { required: true, unique: true }),
    str('FirstName', 40),
    str('LastName', 80, { required: true }),
    ro('Name', 'string'),
    { name: 'Email', type: 'email', length: 128 },
    str('Alias', 8),
    { name: 'IsActive', type: 'boolean', defaultValue: true },
  ],
};

/** Build the emulator's org schema (fresh maps per emulator so nothing is shared between instances). */
export function createSalesforceSchema(): Map<string, SalesforceObjectDef> {
  const schema = new Map<string, SalesforceObjectDef>();
  for (const [name, fields] of Object.entries(OBJECTS)) {
    const keyPrefix = SALESFORCE_KEY_PREFIXES[name as keyof typeof SALESFORCE_KEY_PREFIXES];
    const readOnly = Object.values(HISTORY_TRACKED).some((t) => t.history === name);
    schema.set(name, {
      name,
      keyPrefix,
      fields: new Map(fields.map((f) => [f.name, f])),
      ...(readOnly ? { readOnly } : {}),
    });
  }
  return schema;
}

/** Case-insensitive lookup, as Salesforce treats API names. */
export function findField(object: SalesforceObjectDef, name: string): SalesforceFieldDef | undefined {
  const exact = object.fields.get(name);
  if (exact) return exact;
  const lower = name.toLowerCase();
  for (const field of object.fields.values()) if (field.name.toLowerCase() === lower) return field;
  return undefined;
}

/** Case-insensitive object lookup. */
export function findObject(
  schema: Map<string, SalesforceObjectDef>,
  name: string,
): SalesforceObjectDef | undefined {
  const exact = schema.get(name);
  if (exact) return exact;
  const lower = name.toLowerCase();
  for (const object of schema.values()) if (object.name.toLowerCase() === lower) return object;
  return undefined;
}

/** The object a (15- or 18-character) id belongs to, by key prefix. */
export function objectForId(
  schema: Map<string, SalesforceObjectDef>,
  id: string,
): SalesforceObjectDef | undefined {
  const prefix = id.slice(0, 3);
  for (const object of schema.values()) if (object.keyPrefix === prefix) return object;
  return undefined;
}
