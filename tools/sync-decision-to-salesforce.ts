import { createHash } from 'node:crypto';
import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { NotFoundError } from '../src/errors.ts';
import { defineTool, type IdentityAttempt, type ToolContext } from '../src/tool.ts';
import { matchContactByFallback, recordMatchOutcome } from './salesforce-common.ts';
import { siftEvidence, abuseType, userId, currentDecisionSummary } from './schemas.ts';
import { currentDecision } from './sync-decision-to-segment.ts';

type CrmRow = { Id: string; OwnerId?: string; [field: string]: unknown };

/** How many recent feed posts are searched for this sync's marker before posting again. */
const FEED_LOOKBACK = 20;

/**
 * The Account and Contact for a Sift user: by Sift_User_Id__c, else a Contact by email or phone
 * (the caller's, else the mapped Segment profile's), as lookup_user matches.
 */
async function matchRecords(user: string, given: { email?: string; phone?: string }, ctx: ToolContext) {
  const sf = ctx.clients.salesforce;
  const q = soqlQuote(user);
  const names = ctx.config.mapping.salesforce_fields;
  const fields = `Id, OwnerId, ${names.decision}`;
  const [accounts, contacts] = await Promise.all([
    sf.query<CrmRow>(`SELECT ${fields} FROM Account WHERE ${names.sift_user_id} = ${q} LIMIT 1`, {
      signal: ctx.signal,
    }),
    sf.query<CrmRow>(`SELECT ${fields} FROM Contact WHERE ${names.sift_user_id} = ${q} LIMIT 1`, {
      signal: ctx.signal,
    }),
  ]);
  const records = [
    ...accounts.map((r) => ({ sobject: 'Account' as const, row: r })),
    ...contacts.map((r) => ({ sobject: 'Contact' as const, row: r })),
  ];
  const byId: IdentityAttempt = {
    system: 'salesforce',
    identifier: 'sift_user_id',
    value: user,
    found: true,
  };
  if (records.length > 0) return { match: 'sift_user_id' as const, records, tried: [byId] };
  const fallback = await matchContactByFallback<CrmRow>(user, given, fields, ctx);
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

/** Everything the sync decides before writing; shared by the dry run and the real run. */
async function prepare(
  args: { user_id: string; abuse_type?: string; email?: string; phone?: string },
  ctx: ToolContext,
  options: { recordMatch: boolean },
) {
  const decision = await currentDecision(args.user_id, args.abuse_type, ctx);
  const effect = decision ? ctx.config.mapping.decisions[decision.category] : ctx.config.mapping.no_decision;
  const value = effect.salesforce_value;
  const matched = await matchRecords(args.user_id, { email: args.email, phone: args.phone }, ctx);
  if (options.recordMatch) await recordMatchOutcome(args.user_id, matched.match, matched.tried, ctx);
  if (matched.match === 'none') {
    throw new NotFoundError(
      `No Salesforce Account or Contact matches Sift user ${args.user_id} (tried ${matched.tried
        .filter((t) => t.system === 'salesforce')
        .map((t) => t.identifier)
        .join(', ')}); it is on the identity review list (list_unmatched_identities). Nothing was synced.`,
    );
  }
  // The marker ties a post to one decision and value, so a retry (or a repeated sync) never posts twice.
  const marker = `[fraudgate:${createHash('sha256')
    .update([args.user_id, decision?.decision_id ?? 'none', decision?.time ?? 'none', value].join('\u0000'))
    .digest('hex')
    .slice(0, 16)}]`;
  const body = [
    decision
      ? `Sift decision for user ${args.user_id}: ${value} (${decision.decision_id}, ${decision.category}, ${decision.abuse_type}, decided ${decision.decided_at}).`
      : `Sift user ${args.user_id} has no current decision: ${value}.`,
    `Synced to ${ctx.config.mapping.salesforce_fields.decision} by ${ctx.principal.id} through fraudgate. ${marker}`,
  ].join('\n');
  return { decision, value, marker, body, match: matched.match, records: matched.records };
}

export const syncDecisionToSalesforce = defineTool({
  name: 'sync_decision_to_salesforce',
  title: "Sync a user's Sift decision to Salesforce",
  description:
    "Copy a user's current Sift decision (read from Sift) onto the matched Salesforce Account and " +
    'Contact (mapped decision field), with a Chatter note for the owner. Matched by Sift user id, ' +
    'then Contact email, then phone; NOT_FOUND when nothing matches (the user joins the identity ' +
    'review list). Never posted twice.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.optional().describe('Default: the latest decision.'),
    email: z.email().max(80).optional().describe('Contact email to match by.'),
    phone: z.string().min(6).max(40).optional().describe('Contact phone to match by.'),
  }),
  output: z.object({
    user_id: z.string(),
    decision: currentDecisionSummary.nullable(),
    salesforce_value: z.string().describe('Mapped decision field value.'),
    match: z.enum(['sift_user_id', 'email', 'phone']),
    records: z.array(
      z.object({
        sobject: z.enum(['Account', 'Contact']),
        id: z.string(),
        owner_id: z.string().nullable(),
        previous_value: z.string().nullable(),
        chatter_post_id: z.string().nullable().describe('null: posted before.'),
      }),
    ),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  evidence: (args, ctx) =>
    siftEvidence(args.user_id, ctx, {
      ...(args.abuse_type ? { abuseType: args.abuse_type } : {}),
      system: 'salesforce',
      effect: `Copy ${args.user_id}'s current Sift decision onto their Salesforce Account and Contact and post a Chatter note on each.`,
    }),
  async plan(args, ctx) {
    const { value, body, records, marker } = await prepare(args, ctx, { recordMatch: false });
    const field = ctx.config.mapping.salesforce_fields.decision;
    const posted = await Promise.all(records.map((r) => alreadyPosted(r.row.Id, marker, ctx)));
    return {
      current: {
        records: records.map((r) => ({
          sobject: r.sobject,
          id: r.row.Id,
          [field]: r.row[field] ?? null,
        })),
      },
      changes: {
        update: records.map((r) => ({
          sobject: r.sobject,
          id: r.row.Id,
          fields: { [field]: value },
        })),
        chatter_posts: records.flatMap((r, i) => (posted[i] ? [] : [{ ParentId: r.row.Id, Body: body }])),
      },
    };
  },
  async run(args, ctx) {
    const sf = ctx.clients.salesforce;
    const { decision, value, body, marker, match, records } = await prepare(args, ctx, { recordMatch: true });
    const field = ctx.config.mapping.salesforce_fields.decision;
    const out = [];
    for (const record of records) {
      await sf.update(record.sobject, { Id: record.row.Id, [field]: value }, { signal: ctx.signal });
      const posted = await alreadyPosted(record.row.Id, marker, ctx);
      const post = posted
        ? undefined
        : await sf.create(
            'FeedItem',
            { ParentId: record.row.Id, Body: body, Type: 'TextPost' },
            { signal: ctx.signal },
          );
      out.push({
        sobject: record.sobject,
        id: record.row.Id,
        owner_id: record.row.OwnerId ?? null,
        previous_value: typeof record.row[field] === 'string' ? record.row[field] : null,
        chatter_post_id: post?.id ?? null,
      });
    }
    return {
      user_id: args.user_id,
      decision: decision ? currentDecisionSummary.parse(decision) : null,
      salesforce_value: value,
      match: match as 'sift_user_id' | 'email' | 'phone',
      records: out,
    };
  },
});

/**
 * Whether a recent post on the record carries the marker. Chatter bodies cannot be filtered in SOQL
 * (long text), so the newest few are read and searched here.
 */
async function alreadyPosted(parentId: string, marker: string, ctx: ToolContext): Promise<boolean> {
  const posts = await ctx.clients.salesforce.query<{ Id: string; Body?: string | null }>(
    `SELECT Id, Body FROM FeedItem WHERE ParentId = ${soqlQuote(parentId)} ORDER BY CreatedDate DESC LIMIT ${FEED_LOOKBACK}`,
    { signal: ctx.signal },
  );
  return posts.some((p) => typeof p.Body === 'string' && p.Body.includes(marker));
}
