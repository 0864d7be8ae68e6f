/**
 * Pieces the Salesforce playbook tools share: record-id arguments, the queue lookup and the Sift
 * score as these tools record it. Kept apart from schemas.ts because only Salesforce tools use them.
 */
import * as z from 'zod';
import { canonicalSalesforceId, isSalesforceId } from '../src/clients/salesforce-ids.ts';
import { FraudgateError, InvalidInputError, NotFoundError } from '../src/errors.ts';
import type { IdentityAttempt, ToolContext } from '../src/tool.ts';
import { summarizeScore } from './schemas.ts';

/**
 * A Salesforce record id of one object (15 or 18 characters, checked by key prefix and, for 18, by
 * its checksum): a mistyped id is the caller's INVALID_INPUT naming the argument, never a SOQL
 * filter Salesforce refuses (UPSTREAM_ERROR). An 18-character id is case-insensitive (as in
 * Salesforce): it is passed on in its canonical case, so SOQL and REST see one id for one record.
 * The checks and the transform are zod's: no catalogue bytes.
 */
export function salesforceId(object: string, prefix: string) {
  return z
    .string()
    .regex(/^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$/, 'a 15- or 18-character Salesforce id')
    .refine(
      (id) => (canonicalSalesforceId(id) ?? id).startsWith(prefix),
      `a ${object} id (starting with ${prefix})`,
    )
    .refine(isSalesforceId, 'the checksum (last 3 characters) does not match the first 15: copy the id again')
    .describe(`Salesforce ${object} id (${prefix}…, 15 or 18 characters).`)
    .transform((id) => canonicalSalesforceId(id) ?? id);
}

/**
 * Refuse calls that give none or several of mutually exclusive arguments. Checked in the tool, not
 * with a zod refinement, because the pipeline extends write tools' input schemas with `dry_run`.
 */
export function exactlyOne(args: Record<string, unknown>, fields: string[]): string {
  const given = fields.filter((f) => args[f] !== undefined);
  if (given.length !== 1) {
    throw new InvalidInputError(
      fields.map((field) => ({ field, message: `give exactly one of ${fields.join(', ')}` })),
    );
  }
  return given[0] as string;
}

/** The Id of a queue by DeveloperName; an UPSTREAM_ERROR naming the config key when it does not exist. */
export async function queueId(developerName: string, configKey: string, ctx: ToolContext): Promise<string> {
  const rows = await ctx.clients.salesforce.lookup<{ Id: string }>(
    {
      sobject: 'Group',
      field: 'DeveloperName',
      values: [developerName],
      select: [],
      where: "Type = 'Queue'",
    },
    { signal: ctx.signal },
  );
  if (!rows[0]) {
    throw new FraudgateError(
      'UPSTREAM_ERROR',
      `Salesforce has no queue named ${developerName}; set ${configKey} to the queue's DeveloperName.`,
    );
  }
  return rows[0].Id;
}

/** The user's riskiest Sift score as Salesforce records it (0–100) with its band. */
export async function siftRisk(user: string, ctx: ToolContext) {
  const summary = summarizeScore(
    await ctx.clients.sift.getUserScore(user, { signal: ctx.signal }),
    ctx.config.risk_bands,
  );
  const highest = summary.highest;
  return {
    summary,
    score: highest?.score ?? 0,
    sift_score: highest?.sift_score ?? 0,
    risk_band: highest?.risk_band ?? ('low' as const),
    abuse_type: highest?.abuse_type ?? null,
    reasons: (highest?.reasons ?? []).map((r) => r.name),
  };
}

/** Cut a list to `max` items and say whether anything was left out. */
export function capped<T>(items: readonly T[], max: number): { items: T[]; truncated: boolean } {
  return { items: items.slice(0, max), truncated: items.length > max };
}

/** The spellings a phone number may be stored under (as typed, +digits, digits); too short → none. */
export function phoneVariants(phone: string): string[] {
  const digits = phone.replace(/\D/g, '');
  return [...new Set([phone, `+${digits}`, digits])].filter((p) => p.replace(/\D/g, '').length >= 6);
}

const stringTrait = (traits: Record<string, unknown> | null, key: string) => {
  const value = traits?.[key];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
};

/** A CRM record as the effect tools read it: owner, decision field, and a Contact's Account. */
/** The Sift user id a Salesforce row holds in the mapped `sift_user_id` field, when it is a non-empty string. */
export function siftUserIdOfRow(
  row: { [field: string]: unknown },
  ctx: Pick<ToolContext, 'config'>,
): string | undefined {
  const stored = row[ctx.config.mapping.salesforce_fields.sift_user_id];
  return typeof stored === 'string' && stored !== '' ? stored : undefined;
}

export type CrmRow = { Id: string; OwnerId?: string; AccountId?: string | null; [field: string]: unknown };

/**
 * On Account and Contact: the key of the last decision sync applied to the record. The sync writes
 * it with the decision value in the same request as its Chatter post, so the key on the record
 * proves the post was made: a retry (after a lost answer or a crash before the outbox commit) reads
 * it with the record and does not post again.
 */
export const DECISION_SYNC_KEY_FIELD = 'Fraudgate_Sync_Key__c';

/** The fields the effect tools read on a matched Account or Contact: one shape, so their lookups merge. */
function crmFields(sobject: 'Account' | 'Contact', ctx: ToolContext): string[] {
  const names = ctx.config.mapping.salesforce_fields;
  const common = ['OwnerId', names.decision, DECISION_SYNC_KEY_FIELD];
  return sobject === 'Contact' ? ['AccountId', ...common] : common;
}

/**
 * The Accounts and Contacts carrying a Sift user id. Every effect tool asks in the same shape, so
 * under the automation's batching client the lookups of a whole batch of effects (across tools)
 * are one `IN (...)` query per object.
 */
async function recordsBySiftUserId(user: string, ctx: ToolContext) {
  const sf = ctx.clients.salesforce;
  const field = ctx.config.mapping.salesforce_fields.sift_user_id;
  const find = (sobject: 'Account' | 'Contact') =>
    sf.lookup<CrmRow>(
      { sobject, field, values: [user], select: crmFields(sobject, ctx) },
      { signal: ctx.signal },
    );
  const [accounts, contacts] = await Promise.all([find('Account'), find('Contact')]);
  // The Sift user id is unique per object; the first is the record, as LIMIT 1 would give.
  return { accounts: accounts.slice(0, 1), contacts: contacts.slice(0, 1) };
}

/** The same email, as mail systems compare them (case and surrounding space aside). */
export function sameEmail(a: string, b: string | undefined): boolean {
  return b !== undefined && a.trim().toLowerCase() === b.trim().toLowerCase();
}

/** The same phone number, however it is punctuated (digits compared). */
export function samePhone(a: string, b: string | undefined): boolean {
  const digits = (p: string) => p.replace(/\D/g, '');
  return b !== undefined && digits(a).length >= 6 && digits(a) === digits(b);
}

/** The email and phone the user's mapped Segment profile holds, with the attempt that read them. */
async function heldIdentifiers(user: string, ctx: ToolContext) {
  const segment = await ctx.identities.segmentIdFor(user);
  if (!segment) return { tried: [] as IdentityAttempt[] };
  const traits = await ctx.clients.segment.getProfileTraits(segment.segment_user_id, { signal: ctx.signal });
  const attempt: IdentityAttempt = {
    system: 'segment',
    identifier: 'segment_user_id',
    value: segment.segment_user_id,
    found: traits !== null,
  };
  return { email: stringTrait(traits, 'email'), phone: stringTrait(traits, 'phone'), tried: [attempt] };
}

/**
 * A write refused because the caller's email or phone is not one the user's own records hold: a
 * caller-supplied identifier must never choose which customer's Contact is written.
 */
function notHeldError(user: string, field: 'email' | 'phone'): NotFoundError {
  return new NotFoundError(
    `${field}: the given ${field} is not the ${field} Segment holds for Sift user ${user} (its mapped ` +
      `profile's ${field} trait), so it cannot choose the Salesforce Contact to write; nothing was ` +
      `changed. Leave ${field} out to match by the user's own identifiers, see ` +
      'list_unmatched_identities, or ask an operator to map the user (fraudgate identities map).',
  );
}

/**
 * A Contact for a Sift user whose id no Salesforce record carries, matched the way lookup_user
 * matches: by email, then phone — those of the user's Segment profile (identity map applied). A
 * write must not be pointed at another customer's Contact, so a caller's email or phone is accepted
 * only when it equals the profile's (Sift's API gives no email or phone of a user to compare with);
 * any other is NOT_FOUND, naming the field. `tried` lists every identifier attempted, for the
 * identity review list.
 */
export async function matchContactByFallback<T extends { Id: string }>(
  user: string,
  given: { email?: string | undefined; phone?: string | undefined },
  fields: readonly string[],
  ctx: ToolContext,
): Promise<{ matched_by: 'email' | 'phone' | 'none'; contact?: T; tried: IdentityAttempt[] }> {
  const { email, phone, tried } = await heldIdentifiers(user, ctx);
  if (given.email !== undefined && !sameEmail(given.email, email)) throw notHeldError(user, 'email');
  if (given.phone !== undefined && !samePhone(given.phone, phone)) throw notHeldError(user, 'phone');
  const attempts: { identifier: 'email' | 'phone'; value: string; field: string; values: string[] }[] = [];
  if (email !== undefined)
    attempts.push({ identifier: 'email', value: email, field: 'Email', values: [email] });
  const variants = phone === undefined ? [] : phoneVariants(phone);
  if (phone !== undefined && variants.length > 0)
    attempts.push({ identifier: 'phone', value: phone, field: 'Phone', values: variants });
  for (const attempt of attempts) {
    // The oldest Contact wins, as before; batched callers share one query per identifier.
    const rows = await ctx.clients.salesforce.lookup<T>(
      {
        sobject: 'Contact',
        field: attempt.field,
        values: attempt.values,
        select: fields,
        orderBy: 'CreatedDate ASC',
      },
      { signal: ctx.signal },
    );
    tried.push({
      system: 'salesforce',
      identifier: attempt.identifier,
      value: attempt.value,
      found: !!rows[0],
    });
    if (rows[0]) return { matched_by: attempt.identifier, contact: rows[0], tried };
  }
  return { matched_by: 'none', tried };
}

/**
 * The Account and Contact for a Sift user, as lookup_user matches: by Sift user id, else a Contact
 * by the mapped Segment profile's email, then phone (a caller's only when it is the profile's: see
 * matchContactByFallback). `tried` lists every identifier attempted, for the identity review list.
 */
export async function matchCrmRecords(
  user: string,
  given: { email?: string | undefined; phone?: string | undefined },
  ctx: ToolContext,
) {
  const { accounts, contacts } = await recordsBySiftUserId(user, ctx);
  const records = [
    ...accounts.map((row) => ({ sobject: 'Account' as const, row })),
    ...contacts.map((row) => ({ sobject: 'Contact' as const, row })),
  ];
  const byId: IdentityAttempt = {
    system: 'salesforce',
    identifier: 'sift_user_id',
    value: user,
    found: true,
  };
  if (records.length > 0) return { match: 'sift_user_id' as const, records, tried: [byId] };
  const fallback = await matchContactByFallback<CrmRow>(user, given, crmFields('Contact', ctx), ctx);
  const tried = [{ ...byId, found: false }, ...fallback.tried];
  if (fallback.contact) {
    return {
      match: fallback.matched_by,
      records: [{ sobject: 'Contact' as const, row: fallback.contact }],
      tried,
    };
  }
  return { match: 'none' as const, records: [], tried };
}

/**
 * Keep the identity review list in step with an automated match: a miss is listed (or its count
 * raised), a match takes the user off the list.
 */
export async function recordMatchOutcome(
  user: string,
  matchedBy: string,
  tried: IdentityAttempt[],
  ctx: ToolContext,
): Promise<void> {
  if (matchedBy === 'none')
    await ctx.identities.recordUnmatched({ sift_user_id: user, tried, at: ctx.now() });
  else await ctx.identities.resolveUnmatched(user);
}

/**
 * A Case the fraud tools may read or close: one of the configured fraud type
 * (`salesforce.case_type`, the filter create_fraud_case and list_fraud_cases use). Any other Case
 * (billing, support) is not found to them: its description is customer data outside fraud review,
 * and closing it as fraud would bypass whoever owns it.
 */
export async function retrieveFraudCase<T extends { Id: string; Type?: string | null }>(
  caseId: string,
  ctx: ToolContext,
): Promise<T> {
  const row = await ctx.clients.salesforce.retrieve<T>('Case', caseId, { signal: ctx.signal });
  if (!row) throw new NotFoundError(`No Salesforce Case has id ${caseId} (case_id).`);
  if (row.Type !== ctx.config.salesforce.case_type) {
    throw new NotFoundError(
      `Case ${caseId} (case_id) is not a fraud case (its Type is not "${ctx.config.salesforce.case_type}"); ` +
        'list_fraud_cases lists the fraud cases.',
    );
  }
  return row;
}
