import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { FraudgateError, InvalidInputError } from '../src/errors.ts';
import { defineTool, type IdentityAttempt, type ToolContext } from '../src/tool.ts';
import { matchContactByFallback, recordMatchOutcome } from './salesforce-common.ts';
import { riskBand, summarizeScore, userId } from './schemas.ts';

const priority = z.enum(['High', 'Medium', 'Low']);

interface CaseRow {
  Id: string;
  CaseNumber?: string;
  Priority?: string;
  Status?: string;
  [key: string]: unknown;
}

/**
 * Account and Contact for a Sift user: by Sift_User_Id__c first, else a Contact by email or phone
 * (the caller's email, else the mapped Segment profile's), as lookup_user matches.
 */
async function matchRecords(user: string, email: string | undefined, ctx: ToolContext) {
  const sf = ctx.clients.salesforce;
  const q = soqlQuote(user);
  const siftId = ctx.config.mapping.salesforce_fields.sift_user_id;
  const [accounts, contacts] = await Promise.all([
    sf.query<{ Id: string }>(`SELECT Id FROM Account WHERE ${siftId} = ${q} LIMIT 1`, {
      signal: ctx.signal,
    }),
    sf.query<{ Id: string; AccountId?: string }>(
      `SELECT Id, AccountId FROM Contact WHERE ${siftId} = ${q} LIMIT 1`,
      { signal: ctx.signal },
    ),
  ]);
  const byId: IdentityAttempt = {
    system: 'salesforce',
    identifier: 'sift_user_id',
    value: user,
    found: true,
  };
  if (accounts[0] || contacts[0]) {
    return {
      match: 'sift_user_id' as const,
      account_id: accounts[0]?.Id ?? contacts[0]?.AccountId ?? undefined,
      contact_id: contacts[0]?.Id,
      tried: [byId],
    };
  }
  const fallback = await matchContactByFallback<{ Id: string; AccountId?: string }>(
    user,
    { email },
    'Id, AccountId',
    ctx,
  );
  return {
    match: fallback.matched_by,
    account_id: fallback.contact?.AccountId ?? undefined,
    contact_id: fallback.contact?.Id,
    tried: [{ ...byId, found: false }, ...fallback.tried],
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
  const summary = summarizeScore(
    await ctx.clients.sift.getUserScore(input.user_id, { signal: ctx.signal }),
    ctx.config.risk_bands,
  );
  const highest = summary.highest;
  const band = highest?.risk_band ?? 'low';
  const siftScore = highest?.sift_score ?? 0;
  const q = soqlQuote(input.user_id);
  const names = ctx.config.mapping.salesforce_fields;
  const fraudCases = `FROM Case WHERE ${names.sift_user_id} = ${q} AND Type = ${soqlQuote(settings.case_type)}`;

  const open = await sf.query<CaseRow>(
    `SELECT Id, CaseNumber, Priority, AccountId, ContactId ${fraudCases} AND IsClosed = false ORDER BY CreatedDate DESC LIMIT 1`,
    { signal: ctx.signal },
  );
  const { tried, ...match } = await matchRecords(input.user_id, input.email, ctx);
  if (options.recordMatch) await recordMatchOutcome(input.user_id, match.match, tried, ctx);
  if (open[0]) return { band, siftScore, match, open: open[0] };

  const queueName = input.queue ?? settings.fraud_queue;
  const queues = await sf.query<{ Id: string }>(
    `SELECT Id FROM Group WHERE Type = 'Queue' AND DeveloperName = ${soqlQuote(queueName)} LIMIT 1`,
    { signal: ctx.signal },
  );
  if (!queues[0]) {
    if (input.queue)
      throw new InvalidInputError([
        { field: 'queue', message: `Salesforce has no queue named ${input.queue}` },
      ]);
    throw new FraudgateError(
      'UPSTREAM_ERROR',
      `Salesforce has no queue named ${settings.fraud_queue}; set salesforce.fraud_queue to the fraud review queue's DeveloperName.`,
    );
  }
  // One key per "open case generation": a retry after a lost response upserts the same Case,
  // while a new case after the previous one was closed gets a new key.
  const closed = await sf.query<CaseRow>(`SELECT Id ${fraudCases} AND IsClosed = true`, {
    signal: ctx.signal,
  });
  const key = `fraudgate:${input.user_id}:${closed.length + 1}`;
  const casePriority = input.priority ?? ctx.config.mapping.band_priority[band];
  const reasons = (highest?.reasons ?? []).map(
    (r) => `- ${r.name}${r.value === undefined ? '' : `: ${String(r.value)}`}`,
  );
  const description = [
    input.summary,
    '',
    `Sift score: ${siftScore}/100 (${band}) for ${highest?.abuse_type ?? 'no abuse type'}`,
    ...(reasons.length > 0 ? ['Reasons:', ...reasons] : []),
    '',
    `Opened by ${ctx.principal.id} through fraudgate.`,
  ].join('\n');
  const record: Record<string, unknown> = {
    Subject: `Fraud review: ${input.user_id} (Sift ${siftScore}, ${band})`.slice(0, 255),
    Description: description,
    Priority: casePriority,
    Status: 'New',
    Origin: settings.case_origin,
    Type: settings.case_type,
    OwnerId: queues[0].Id,
    [names.sift_user_id]: input.user_id,
    [names.score]: siftScore,
    Fraudgate_Key__c: key,
  };
  if (match.account_id) record.AccountId = match.account_id;
  if (match.contact_id) record.ContactId = match.contact_id;
  if (input.email && match.match === 'none') record.SuppliedEmail = input.email;
  return { band, siftScore, match, record, priority: casePriority };
}

export const createFraudCase = defineTool({
  name: 'create_fraud_case',
  title: 'Open a Salesforce fraud case',
  description:
    'Open a Salesforce fraud case for a Sift user with the score and reasons, in the fraud queue, ' +
    'linked to the Account/Contact matched by Sift user id, email, then phone. Priority follows the ' +
    'risk band unless given. An open fraud case is returned instead of a duplicate (existing=true); ' +
    'an unmatched user still gets one (match=none) and joins the identity review list.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    summary: z.string().trim().min(10).max(2000).describe('Findings and why a case is needed.'),
    priority: priority.optional().describe('Default: derived from the Sift risk band.'),
    email: z.email().optional().describe('Contact email to match by.'),
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
    risk_band: riskBand,
    sift_score: z.number().int().min(0).max(100),
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
    const saved = await sf.upsert('Case', 'Fraudgate_Key__c', record, { signal: ctx.signal });
    const created = await sf.retrieve<CaseRow>('Case', saved.id, { signal: ctx.signal });
    return {
      case_id: saved.id,
      case_number: created?.CaseNumber,
      existing: !saved.created,
      priority: casePriority,
      risk_band: band,
      sift_score: siftScore,
      ...match,
    };
  },
});
