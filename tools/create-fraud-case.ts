import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { matchCrmRecords, queueId, recordMatchOutcome } from './salesforce-common.ts';
import { riskBand, summarizeScore, userId } from './schemas.ts';

const priority = z.enum(['High', 'Medium', 'Low']);

interface CaseRow {
  Id: string;
  CaseNumber?: string;
  Priority?: string;
  Status?: string;
  [key: string]: unknown;
}

/** The CRM match as a case links it: the Account (or the Contact's Account) and the Contact. */
async function matchRecords(user: string, email: string | undefined, ctx: ToolContext) {
  const { match, records, tried } = await matchCrmRecords(user, { email }, ctx);
  const account = records.find((r) => r.sobject === 'Account')?.row;
  const contact = records.find((r) => r.sobject === 'Contact')?.row;
  return {
    match,
    account_id: account?.Id ?? contact?.AccountId ?? undefined,
    contact_id: contact?.Id,
    tried,
  };
}

type CaseInput = { user_id: string; summary: string; priority?: string; email?: string; queue?: string };

/**
 * Everything a case creation decides before writing: the Sift context, the open case if any, the
 * CRM match and the record to upsert. Shared by the dry run and the real run.
 */
async function prepareCase(input: CaseInput, ctx: ToolContext, options: { recordMatch: boolean }) {
  const sf = ctx.clients.salesforce;
  const settings = ctx.config.salesforce;
  const names = ctx.config.mapping.salesforce_fields;
  // The user's fraud cases, open and closed, in one lookup (merged across a batch of effects).
  const [score, cases, { tried, ...match }] = await Promise.all([
    ctx.clients.sift.getUserScore(input.user_id, { signal: ctx.signal }),
    sf.lookup<CaseRow>(
      {
        sobject: 'Case',
        field: names.sift_user_id,
        values: [input.user_id],
        select: ['CaseNumber', 'Priority', 'AccountId', 'ContactId', 'IsClosed'],
        where: `Type = ${soqlQuote(settings.case_type)}`,
        orderBy: 'CreatedDate DESC',
      },
      { signal: ctx.signal },
    ),
    matchRecords(input.user_id, input.email, ctx),
  ]);
  const summary = summarizeScore(score, ctx.config.risk_bands);
  const highest = summary.highest;
  // No score is not a zero score: an unscored user's case says so, writes no score field and takes
  // the caller's (a rule's) priority, else a medium band's, never a low one from a made-up 0.
  const band = highest?.risk_band ?? null;
  const siftScore = highest?.sift_score ?? null;
  if (options.recordMatch) await recordMatchOutcome(input.user_id, match.match, tried, ctx);
  const open = cases.find((c) => c.IsClosed !== true);
  if (open) {
    const { IsClosed: _closed, ...row } = open;
    return { band, siftScore, match, open: row };
  }

  // A rule's own queue (automation.score_trigger.case_rules[].queue) or the configured fraud queue.
  const owner = input.queue
    ? await queueId(input.queue, 'the queue argument', ctx)
    : await queueId(settings.fraud_queue, 'salesforce.fraud_queue', ctx);
  // One key per "open case generation": a retry after a lost response upserts the same Case,
  // while a new case after the previous one was closed gets a new key.
  const key = `fraudgate:${input.user_id}:${cases.length + 1}`;
  const casePriority = input.priority ?? ctx.config.mapping.band_priority[band ?? 'medium'];
  const risk = highest ? `${siftScore}/100 (${band}) for ${highest.abuse_type}` : 'not scored';
  const reasons = (highest?.reasons ?? []).map(
    (r) => `- ${r.name}${r.value === undefined ? '' : `: ${String(r.value)}`}`,
  );
  const description = [
    input.summary,
    '',
    `Sift score: ${risk}`,
    ...(reasons.length > 0 ? ['Reasons:', ...reasons] : []),
    '',
    `Opened by ${ctx.principal.id} through fraudgate.`,
  ].join('\n');
  const record: Record<string, unknown> = {
    Subject:
      `Fraud review: ${input.user_id} (${highest ? `Sift ${siftScore}, ${band}` : 'not scored by Sift'})`.slice(
        0,
        255,
      ),
    Description: description,
    Priority: casePriority,
    Status: 'New',
    Origin: settings.case_origin,
    Type: settings.case_type,
    OwnerId: owner,
    [names.sift_user_id]: input.user_id,
    Fraudgate_Key__c: key,
  };
  if (siftScore !== null) record[names.score] = siftScore;
  if (match.account_id) record.AccountId = match.account_id;
  if (match.contact_id) record.ContactId = match.contact_id;
  if (input.email && match.match === 'none') record.SuppliedEmail = input.email;
  return { band, siftScore, match, record, priority: casePriority };
}

export const createFraudCase = defineTool({
  name: 'create_fraud_case',
  title: 'Open a Salesforce fraud case',
  description:
    'Open a Salesforce fraud case for a Sift user with score and reasons, in the fraud queue, linked ' +
    'to the Account/Contact matched by Sift user id, email, then phone; priority from the risk band ' +
    'unless given. An open fraud case is returned instead of a duplicate (existing=true); an ' +
    'unmatched user joins the identity review list.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    summary: z.string().trim().min(10).max(2000).describe('Findings and why a case is needed.'),
    priority: priority.optional().describe('Default: from the Sift risk band (unscored: as medium).'),
    email: z.email().max(80).optional().describe("Must be the user's Segment email."),
    queue: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'a queue DeveloperName (letters, digits, _)')
      .max(80)
      .optional()
      .describe('DeveloperName of the Case queue to own it. Default: the configured fraud queue.'),
  }),
  output: z.object({
    case_id: z.string(),
    case_number: z.string().optional(),
    existing: z.boolean().describe('An open fraud case already existed.'),
    priority: z.string(),
    risk_band: riskBand.nullable(),
    sift_score: z.number().int().min(0).max(100).nullable(),
    match: z.enum(['sift_user_id', 'email', 'phone', 'none']),
    account_id: z.string().optional(),
    contact_id: z.string().optional(),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  async plan(args, ctx) {
    const prepared = await prepareCase(args, ctx, { recordMatch: false });
    const current = { open_case: prepared.open ?? null, match: prepared.match.match };
    return prepared.open
      ? { current, changes: {} }
      : { current, changes: { create: { sobject: 'Case', fields: prepared.record } } };
  },
  async run(args, ctx) {
    const sf = ctx.clients.salesforce;
    const {
      band,
      siftScore,
      match,
      open,
      record,
      priority: casePriority,
    } = await prepareCase(args, ctx, {
      recordMatch: true,
    });
    if (open) {
      return {
        case_id: open.Id,
        case_number: open.CaseNumber,
        existing: true,
        priority: open.Priority ?? '',
        risk_band: band,
        sift_score: siftScore,
        ...match,
      };
    }
    // With the number Salesforce assigned, read back with the write (in the automation's batched
    // write request, a query after the upserts: no call of its own).
    const saved = await sf.upsertAndRead<CaseRow>('Case', 'Fraudgate_Key__c', record, ['CaseNumber'], {
      signal: ctx.signal,
    });
    return {
      case_id: saved.id,
      case_number: saved.row?.CaseNumber,
      existing: !saved.created,
      priority: casePriority,
      risk_band: band,
      sift_score: siftScore,
      ...match,
    };
  },
});
