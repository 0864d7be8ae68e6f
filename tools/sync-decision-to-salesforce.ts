import { createHash } from 'node:crypto';
import * as z from 'zod';
import type { SalesforceWrite } from '../src/clients/types.ts';
import { NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import {
  DECISION_SYNC_KEY_FIELD,
  matchCrmRecords,
  recordMatchOutcome,
  type CrmRow,
} from './salesforce-common.ts';
import { siftEvidence, abuseType, userId, currentDecisionSummary, SIFT_EVIDENCE_NAMES } from './schemas.ts';
import { currentDecisions, governingDecision, latestDecision } from './decision-state.ts';

/** Everything the sync decides before writing; shared by the dry run and the real run. */
async function prepare(
  args: { user_id: string; abuse_type?: string; email?: string; phone?: string },
  ctx: ToolContext,
  options: { recordMatch: boolean },
) {
  const [decisions, matched] = await Promise.all([
    currentDecisions(args.user_id, ctx),
    matchCrmRecords(args.user_id, { email: args.email, phone: args.phone }, ctx),
  ]);
  // The user-level field carries the most severe current decision: a later ACCEPT for one abuse
  // type must not clear a BLOCK standing for another. abuse_type only picks what is reported back.
  const decision = governingDecision(decisions);
  const reported =
    args.abuse_type === undefined ? undefined : (latestDecision(decisions, args.abuse_type) ?? null);
  const effect = decision ? ctx.config.mapping.decisions[decision.category] : ctx.config.mapping.no_decision;
  const value = effect.salesforce_value;
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
  return { decision, reported, value, marker, body, match: matched.match, records: matched.records };
}

/** What approving does, in one sentence (the approval's evidence, or on its own without it). */
const effect = (args: { user_id: string }) =>
  `Copy ${args.user_id}'s current Sift decision onto their Salesforce Account and Contact and post a Chatter note on each.`;

export const syncDecisionToSalesforce = defineTool({
  name: 'sync_decision_to_salesforce',
  title: "Sync a user's Sift decision to Salesforce",
  description:
    "Copy a user's Sift decision (read from Sift; the most severe across abuse types) onto the " +
    'matched Salesforce Account and Contact (mapped decision field), with a Chatter note for the ' +
    'owner. Matched by Sift user id, email, then phone; no match is NOT_FOUND and joins the identity ' +
    'review list. Never posted twice.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.optional().describe('Also report its decision.'),
    email: z.email().max(80).optional().describe("Must be the user's Segment email."),
    phone: z.string().min(6).max(40).optional().describe("Must be the user's Segment phone."),
  }),
  output: z.object({
    user_id: z.string(),
    decision: currentDecisionSummary.nullable().describe('The most severe current one.'),
    abuse_type_decision: currentDecisionSummary.nullable().optional().describe('With abuse_type.'),
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
  effect,
  redaction: { evidence: SIFT_EVIDENCE_NAMES },
  evidence: (args, ctx) =>
    siftEvidence(args.user_id, ctx, {
      ...(args.abuse_type ? { abuseType: args.abuse_type } : {}),
      system: 'salesforce',
      effect: effect(args),
    }),
  async plan(args, ctx) {
    const { value, body, records, marker } = await prepare(args, ctx, { recordMatch: false });
    const field = ctx.config.mapping.salesforce_fields.decision;
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
          fields: { [field]: value, [DECISION_SYNC_KEY_FIELD]: marker },
        })),
        chatter_posts: records.flatMap((r) =>
          synced(r.row, marker) ? [] : [{ ParentId: r.row.Id, Body: body }],
        ),
      },
    };
  },
  async run(args, ctx) {
    const { decision, reported, value, body, marker, match, records } = await prepare(args, ctx, {
      recordMatch: true,
    });
    const field = ctx.config.mapping.salesforce_fields.decision;
    // Each record's update carries the sync key and travels in one request with its post: both
    // land or neither, and a record already carrying the key already has its post.
    const writes: SalesforceWrite[] = records.flatMap((record) => [
      {
        op: 'update' as const,
        sobject: record.sobject,
        record: { Id: record.row.Id, [field]: value, [DECISION_SYNC_KEY_FIELD]: marker },
      },
      ...(synced(record.row, marker)
        ? []
        : [
            {
              op: 'create' as const,
              sobject: 'FeedItem',
              record: { ParentId: record.row.Id, Body: body, Type: 'TextPost' },
            },
          ]),
    ]);
    const results = await ctx.clients.salesforce.writeTogether(writes, { signal: ctx.signal });
    const postIds = new Map(
      writes.flatMap((w, i) =>
        w.op === 'create' ? [[String(w.record.ParentId), results[i]?.id ?? null]] : [],
      ),
    );
    const out = records.map((record) => ({
      sobject: record.sobject,
      id: record.row.Id,
      owner_id: record.row.OwnerId ?? null,
      previous_value: typeof record.row[field] === 'string' ? record.row[field] : null,
      chatter_post_id: postIds.get(record.row.Id) ?? null,
    }));
    return {
      user_id: args.user_id,
      decision: decision ? currentDecisionSummary.parse(decision) : null,
      ...(reported === undefined
        ? {}
        : { abuse_type_decision: reported ? currentDecisionSummary.parse(reported) : null }),
      salesforce_value: value,
      match: match as 'sift_user_id' | 'email' | 'phone',
      records: out,
    };
  },
});

/** Whether this sync was applied to the record already (its key is on it, so its post exists). */
function synced(row: CrmRow, marker: string): boolean {
  return row[DECISION_SYNC_KEY_FIELD] === marker;
}
