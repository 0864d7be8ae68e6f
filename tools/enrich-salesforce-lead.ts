import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { FraudgateError, InvalidInputError, NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { exactlyOne, queueId, salesforceId, siftRisk } from './salesforce-common.ts';
import { riskBand, userId } from './schemas.ts';

type LeadRow = {
  Id: string;
  Email?: string | null;
  OwnerId?: string;
  IsConverted?: boolean;
  Sift_User_Id__c?: string | null;
  Sift_Score__c?: number | null;
  Sift_Risk_Band__c?: string | null;
  Sift_Checked_At__c?: string | null;
};

const LEAD_FIELDS =
  'Id, Email, OwnerId, IsConverted, Sift_User_Id__c, Sift_Score__c, Sift_Risk_Band__c, Sift_Checked_At__c';

async function findLead(args: { lead_id?: string; email?: string }, ctx: ToolContext): Promise<LeadRow> {
  const by = exactlyOne(args, ['lead_id', 'email']);
  const where =
    by === 'lead_id'
      ? `Id = ${soqlQuote(args.lead_id ?? '')}`
      : `Email = ${soqlQuote(args.email ?? '')} AND IsConverted = false`;
  const rows = await ctx.clients.salesforce.query<LeadRow>(
    `SELECT ${LEAD_FIELDS} FROM Lead WHERE ${where} ORDER BY CreatedDate DESC LIMIT 6`,
    { signal: ctx.signal },
  );
  if (!rows[0]) throw new NotFoundError(`No ${by === 'email' ? 'unconverted ' : ''}Lead matches that ${by}.`);
  if (rows.length > 1) {
    throw new FraudgateError(
      'CONFLICT',
      `${rows.length > 5 ? 'More than 5' : rows.length} unconverted Leads have that email; call again with lead_id, one of: ${rows
        .slice(0, 5)
        .map((r) => r.Id)
        .join(', ')}.`,
    );
  }
  return rows[0];
}

/**
 * The Sift user id for a lead: its `Sift_User_Id__c` when the sign-up flow stored one, else its
 * email — the id sign-up integrations send to Sift before an account (and an app user id) exists.
 */
function siftUserIdOf(lead: LeadRow): { id: string; source: 'lead_field' | 'email' } {
  if (lead.Sift_User_Id__c) return { id: lead.Sift_User_Id__c, source: 'lead_field' };
  const parsed = userId.safeParse(lead.Email ?? '');
  if (parsed.success) return { id: parsed.data, source: 'email' };
  throw new InvalidInputError([
    { field: 'lead_id', message: 'the Lead has neither Sift_User_Id__c nor a usable Email to score' },
  ]);
}

/** What an enrichment would write; shared by the dry run and the real run. */
async function prepare(args: { lead_id?: string; email?: string }, ctx: ToolContext) {
  const lead = await findLead(args, ctx);
  const sift = siftUserIdOf(lead);
  const risk = await siftRisk(sift.id, ctx);
  const threshold = ctx.config.salesforce.lead_score_threshold;
  const needsReview = risk.score >= threshold;
  const queue = needsReview
    ? await queueId(ctx.config.salesforce.lead_review_queue, 'salesforce.lead_review_queue', ctx)
    : undefined;
  const update: Record<string, unknown> & { Id: string } = {
    Id: lead.Id,
    Sift_Score__c: risk.sift_score,
    Sift_Risk_Band__c: risk.risk_band,
    Sift_Checked_At__c: ctx.now().toISOString(),
  };
  if (queue && lead.OwnerId !== queue) update.OwnerId = queue;
  return { lead, sift, risk, threshold, needsReview, queue, update };
}

export const enrichSalesforceLead = defineTool({
  name: 'enrich_salesforce_lead',
  title: 'Enrich a Salesforce Lead with its Sift score',
  description:
    'Score a Salesforce Lead with Sift and write Sift_Score__c (0–100), Sift_Risk_Band__c and ' +
    'Sift_Checked_At__c onto it. Give exactly one of lead_id or email (an email matching several ' +
    "unconverted Leads is refused with their ids). The Sift user id is the Lead's Sift_User_Id__c, else " +
    'its email. At or above the configured threshold the Lead moves to the lead review queue ' +
    '(routed_to_review=true). Safe to repeat; no Sift writes, no email.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    lead_id: salesforceId('Lead', '00Q').optional(),
    email: z.email().max(80).optional().describe("The Lead's email, when you do not know its id."),
  }),
  output: z.object({
    lead_id: z.string(),
    sift_user_id: z.string(),
    sift_user_id_source: z
      .enum(['lead_field', 'email'])
      .describe("lead_field: the Lead's Sift_User_Id__c; email: the Lead's email used as the Sift user id."),
    sift_score: z.number().int().min(0).max(100),
    risk_band: riskBand,
    abuse_type: z.string().nullable().describe('The abuse type of the riskiest score.'),
    threshold: z.number().int().min(0).max(100).describe('The review threshold on the same 0–100 scale.'),
    routed_to_review: z.boolean().describe('true when the Lead is (now) owned by the review queue.'),
    previous_owner_id: z.string().optional(),
    fields_written: z.record(z.string(), z.union([z.string(), z.number()])),
  }),
  target: (args) =>
    args.lead_id ? `salesforce_lead:${args.lead_id}` : `salesforce_lead_email:${args.email}`,
  async plan(args, ctx) {
    const { lead, sift, update } = await prepare(args, ctx);
    const { Id: _id, ...fields } = update;
    return {
      current: {
        lead_id: lead.Id,
        sift_user_id: sift.id,
        owner_id: lead.OwnerId ?? null,
        Sift_Score__c: lead.Sift_Score__c ?? null,
        Sift_Risk_Band__c: lead.Sift_Risk_Band__c ?? null,
        Sift_Checked_At__c: lead.Sift_Checked_At__c ?? null,
      },
      changes: { update: { sobject: 'Lead', id: lead.Id, fields } },
    };
  },
  async run(args, ctx) {
    const { lead, sift, risk, threshold, needsReview, update } = await prepare(args, ctx);
    await ctx.clients.salesforce.update('Lead', update, { signal: ctx.signal });
    const { Id: _id, ...fields } = update;
    return {
      lead_id: lead.Id,
      sift_user_id: sift.id,
      sift_user_id_source: sift.source,
      sift_score: risk.sift_score,
      risk_band: risk.risk_band,
      abuse_type: risk.abuse_type,
      threshold: Math.round(threshold * 100),
      routed_to_review: needsReview,
      ...(update.OwnerId && lead.OwnerId ? { previous_owner_id: lead.OwnerId } : {}),
      fields_written: fields as Record<string, string | number>,
    };
  },
});
