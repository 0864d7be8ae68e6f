import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { FraudgateError, InvalidInputError, NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { exactlyOne, queueId, salesforceId, siftRisk, siftUserIdOfRow } from './salesforce-common.ts';
import { riskBand, summarizeScore, userId } from './schemas.ts';

type LeadRow = {
  Id: string;
  Email?: string | null;
  FirstName?: string | null;
  LastName?: string | null;
  OwnerId?: string;
  Status?: string | null;
  IsConverted?: boolean;
  [field: string]: unknown;
};

/** The Lead fields read, with the Sift field API names from the mapping. */
const leadFields = (ctx: ToolContext) => {
  const f = ctx.config.mapping.salesforce_fields;
  return `Id, Email, FirstName, LastName, OwnerId, Status, IsConverted, ${f.sift_user_id}, ${f.score}, ${f.risk_band}, ${f.checked_at}`;
};

async function findLead(args: { lead_id?: string; email?: string }, ctx: ToolContext): Promise<LeadRow> {
  const by = exactlyOne(args, ['lead_id', 'email']);
  const where =
    by === 'lead_id'
      ? `Id = ${soqlQuote(args.lead_id ?? '')}`
      : `Email = ${soqlQuote(args.email ?? '')} AND IsConverted = false`;
  const rows = await ctx.clients.salesforce.query<LeadRow>(
    `SELECT ${leadFields(ctx)} FROM Lead WHERE ${where} ORDER BY CreatedDate DESC LIMIT 6`,
    { signal: ctx.signal },
  );
  if (!rows[0]) throw new NotFoundError(`No ${by === 'email' ? 'unconverted ' : ''}Lead matches that ${by}.`);
  // Salesforce refuses every update of a converted Lead (CANNOT_UPDATE_CONVERTED_LEAD): refuse it
  // here, before a $create_account reaches Sift and before a dry run plans an update that cannot happen.
  if (rows[0].IsConverted === true) {
    throw new InvalidInputError([
      {
        field: 'lead_id',
        message: 'the Lead is converted; enrich its Contact/Account instead',
      },
    ]);
  }
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
function siftUserIdOf(
  lead: LeadRow,
  foundBy: 'lead_id' | 'email',
  ctx: ToolContext,
): { id: string; source: 'lead_field' | 'email' } {
  const field = ctx.config.mapping.salesforce_fields.sift_user_id;
  const stored = siftUserIdOfRow(lead, ctx);
  if (stored !== undefined) return { id: stored, source: 'lead_field' };
  const parsed = userId.safeParse(lead.Email ?? '');
  if (parsed.success) return { id: parsed.data, source: 'email' };
  throw new InvalidInputError([
    // The argument the caller gave: the one that found this Lead.
    { field: foundBy, message: `the Lead has neither ${field} nor a usable Email to score` },
  ]);
}

/**
 * The lead's Sift risk, or null when Sift has never seen the user — then, if the mapping says so,
 * the lead is first sent to Sift as a new account and the score that comes back is used.
 */
async function leadRisk(lead: LeadRow, siftId: string, ctx: ToolContext, options: { write: boolean }) {
  try {
    return { status: 'scored' as const, risk: await siftRisk(siftId, ctx) };
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  if (ctx.config.mapping.lead_not_scored !== 'create_account' || !options.write) {
    return { status: 'not_scored' as const, risk: undefined };
  }
  const name = [lead.FirstName, lead.LastName].filter(Boolean).join(' ');
  const result = await ctx.clients.sift.sendEvent(
    {
      $type: '$create_account',
      $user_id: siftId,
      ...(lead.Email ? { $user_email: lead.Email } : {}),
      ...(name ? { $name: name } : {}),
      lead_id: lead.Id,
    },
    { signal: ctx.signal, returnScore: true },
  );
  if (!result.score) return { status: 'sent_to_sift' as const, risk: undefined };
  const summary = summarizeScore(result.score, ctx.config.risk_bands);
  const highest = summary.highest;
  return {
    status: 'sent_to_sift' as const,
    risk: highest
      ? {
          score: highest.score,
          sift_score: highest.sift_score,
          risk_band: highest.risk_band,
          abuse_type: highest.abuse_type,
        }
      : undefined,
  };
}

/** What an enrichment would write; shared by the dry run and the real run. */
async function prepare(
  args: { lead_id?: string; email?: string },
  ctx: ToolContext,
  options: { write: boolean },
) {
  const lead = await findLead(args, ctx);
  const sift = siftUserIdOf(lead, args.lead_id === undefined ? 'email' : 'lead_id', ctx);
  const { status, risk } = await leadRisk(lead, sift.id, ctx, options);
  const settings = ctx.config.salesforce;
  const threshold = settings.lead_score_threshold;
  const needsReview = risk !== undefined && risk.score >= threshold;
  const queue = needsReview
    ? await queueId(settings.lead_review_queue, 'salesforce.lead_review_queue', ctx)
    : undefined;
  const f = ctx.config.mapping.salesforce_fields;
  // A lead Sift has not seen gets only the checked-at stamp: no score is not a zero score.
  const update: Record<string, unknown> & { Id: string } = {
    Id: lead.Id,
    ...(risk ? { [f.score]: risk.sift_score, [f.risk_band]: risk.risk_band } : {}),
    [f.checked_at]: ctx.now().toISOString(),
  };
  if (queue && lead.OwnerId !== queue) update.OwnerId = queue;
  if (needsReview && settings.lead_review_status && lead.Status !== settings.lead_review_status) {
    update.Status = settings.lead_review_status;
  }
  return { lead, sift, status, risk, threshold, needsReview, queue, update };
}

export const enrichSalesforceLead = defineTool({
  name: 'enrich_salesforce_lead',
  title: 'Enrich a Salesforce Lead with its Sift score',
  description:
    'Score a Salesforce Lead with Sift and write score (0–100), risk band and check time onto it. ' +
    "Give lead_id or email. The Sift user id is the Lead's Sift id field, else its email; unknown to " +
    'Sift is status=not_scored, not an error. At or over the threshold the Lead moves to the review ' +
    'queue. Safe to repeat.',
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
    sift_user_id_source: z.enum(['lead_field', 'email']).describe('Where the Sift user id came from.'),
    status: z
      .enum(['scored', 'not_scored', 'sent_to_sift'])
      .describe('sent_to_sift: sent as a new account first.'),
    sift_score: z.number().int().min(0).max(100).nullable(),
    risk_band: riskBand.nullable(),
    abuse_type: z.string().nullable().describe('The abuse type of the riskiest score.'),
    threshold: z.number().int().min(0).max(100).describe('Review threshold, 0–100.'),
    routed_to_review: z.boolean().describe('Owned by the review queue.'),
    previous_owner_id: z.string().optional(),
    fields_written: z.record(z.string(), z.union([z.string(), z.number()])),
  }),
  target: (args) =>
    args.lead_id ? `salesforce_lead:${args.lead_id}` : `salesforce_lead_email:${args.email}`,
  async plan(args, ctx) {
    const { lead, sift, status, update } = await prepare(args, ctx, { write: false });
    const { Id: _id, ...fields } = update;
    const f = ctx.config.mapping.salesforce_fields;
    return {
      current: {
        lead_id: lead.Id,
        sift_user_id: sift.id,
        sift_status: status,
        owner_id: lead.OwnerId ?? null,
        status: lead.Status ?? null,
        ...Object.fromEntries([f.score, f.risk_band, f.checked_at].map((k) => [k, lead[k] ?? null])),
      },
      changes: { update: { sobject: 'Lead', id: lead.Id, fields } },
    };
  },
  async run(args, ctx) {
    const { lead, sift, status, risk, threshold, needsReview, update } = await prepare(args, ctx, {
      write: true,
    });
    await ctx.clients.salesforce.update('Lead', update, { signal: ctx.signal });
    const { Id: _id, ...fields } = update;
    return {
      lead_id: lead.Id,
      sift_user_id: sift.id,
      sift_user_id_source: sift.source,
      status,
      sift_score: risk?.sift_score ?? null,
      risk_band: risk?.risk_band ?? null,
      abuse_type: risk?.abuse_type ?? null,
      threshold: Math.round(threshold * 100),
      routed_to_review: needsReview,
      ...(update.OwnerId && lead.OwnerId ? { previous_owner_id: lead.OwnerId } : {}),
      fields_written: fields as Record<string, string | number>,
    };
  },
});
