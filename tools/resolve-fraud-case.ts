import * as z from 'zod';
import { FraudgateError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { retrieveFraudCase, salesforceId, siftUserIdOfRow } from './salesforce-common.ts';

const RESOLUTIONS = ['confirmed_fraud', 'false_positive', 'inconclusive', 'duplicate'] as const;
type Resolution = (typeof RESOLUTIONS)[number];

type CaseRow = {
  Id: string;
  Status?: string;
  IsClosed?: boolean;
  Resolution__c?: string | null;
  [field: string]: unknown;
};

async function prepare(args: { case_id: string; resolution: Resolution; notes: string }, ctx: ToolContext) {
  const row = await retrieveFraudCase<CaseRow>(args.case_id, ctx);
  const siftUserId = siftUserIdOfRow(row, ctx) ?? null;
  const value = ctx.config.mapping.case_resolutions[args.resolution];
  const alreadyClosed = row.IsClosed === true;
  if (alreadyClosed && row.Resolution__c && row.Resolution__c !== value) {
    throw new FraudgateError(
      'CONFLICT',
      `The case is already closed with resolution "${row.Resolution__c}"; reopen it in Salesforce to change that.`,
    );
  }
  const update = {
    Id: row.Id,
    Status: ctx.config.salesforce.case_closed_status,
    Resolution__c: value,
    Resolution_Notes__c: `${args.notes}\n\nResolved by ${ctx.principal.id} through fraudgate.`,
  };
  return { row, value, siftUserId, alreadyClosed: alreadyClosed && row.Resolution__c === value, update };
}

const suggestion = z.object({
  tool: z.string(),
  arguments: z.record(z.string(), z.union([z.string(), z.boolean()])),
  note: z.string(),
});

/** The follow-up calls a resolution usually needs; each goes through its own tool and approval. */
function suggestions(resolution: Resolution, user: string | null | undefined): z.infer<typeof suggestion>[] {
  if (!user) return [];
  if (resolution === 'confirmed_fraud') {
    return [
      {
        tool: 'apply_label',
        arguments: { user_id: user, is_bad: true },
        note: 'Choose abuse_type and give the evidence as description; needs approval.',
      },
      {
        tool: 'apply_decision',
        arguments: { user_id: user },
        note: 'Pick a block decision from list_sift_decisions if the account must be stopped; needs approval.',
      },
    ];
  }
  if (resolution === 'false_positive') {
    return [
      {
        tool: 'apply_label',
        arguments: { user_id: user, is_bad: false },
        note: 'Choose abuse_type; tells Sift the user is good. Needs approval.',
      },
    ];
  }
  return [];
}

export const resolveFraudCase = defineTool({
  name: 'resolve_fraud_case',
  title: 'Close a Salesforce fraud case with a resolution',
  description:
    'Close a Salesforce fraud case with a resolution and notes. It neither labels nor decides in ' +
    'Sift: suggested_next_calls proposes apply_label or apply_decision. The same resolution again ' +
    'changes nothing; another is a CONFLICT.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    case_id: salesforceId('Case', '500'),
    resolution: z.enum(RESOLUTIONS).describe('How the review ended.'),
    notes: z.string().trim().min(10).max(2000).describe('What the analyst concluded and why.'),
  }),
  output: z.object({
    case_id: z.string(),
    status: z.string(),
    resolution: z.string().describe('Mapped Resolution__c value.'),
    already_closed: z.boolean().describe('Already closed so: nothing written.'),
    sift_user_id: z.string().nullable(),
    suggested_next_calls: z.array(suggestion),
  }),
  target: (args) => `salesforce_case:${args.case_id}`,
  async plan(args, ctx) {
    const { row, alreadyClosed, update } = await prepare(args, ctx);
    const { Id: _id, ...fields } = update;
    return {
      current: {
        status: row.Status ?? null,
        is_closed: row.IsClosed === true,
        resolution: row.Resolution__c ?? null,
      },
      changes: alreadyClosed ? {} : { update: { sobject: 'Case', id: row.Id, fields } },
    };
  },
  async run(args, ctx) {
    const { row, value, siftUserId, alreadyClosed, update } = await prepare(args, ctx);
    if (!alreadyClosed) await ctx.clients.salesforce.update('Case', update, { signal: ctx.signal });
    return {
      case_id: row.Id,
      status: alreadyClosed ? (row.Status ?? update.Status) : update.Status,
      resolution: value,
      already_closed: alreadyClosed,
      sift_user_id: siftUserId,
      suggested_next_calls: suggestions(args.resolution, siftUserId),
    };
  },
});
