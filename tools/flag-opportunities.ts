import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import type { SalesforceSaveResult } from '../src/clients/types.ts';
import { NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { capped, exactlyOne, salesforceId, siftRisk, siftUserIdOfRow } from './salesforce-common.ts';
import { riskBand, siftEvidence, userId, SIFT_EVIDENCE_NAMES } from './schemas.ts';

type OpportunityRow = { Id: string; OwnerId?: string; [field: string]: unknown };

/** Ids and failures listed in a result at most; counts are always complete. */
const MAX_LISTED = 50;
/** What approving does, in one sentence (the approval's evidence, or on its own without it). */
const effect = (user: string) =>
  `Flag the open Opportunities of ${user}'s Salesforce Account as a fraud risk and create a review Task for each owner.`;

/**
 * Opportunities one call may write: 5 collection requests, well inside a client's usual 60 s
 * timeout even when Salesforce triggers slow each batch. The earliest closing go first; the output's
 * `remaining` says how many wait for the next call, which skips those already flagged. A call reads
 * no more opportunities than this (+1), and creates at most one review Task per owner of its share.
 */
export const MAX_FLAGS_PER_CALL = 1000;
/** Records per sObject Collections request, Salesforce's limit; progress is reported per batch. */
const BATCH = 200;
const USER_ID_PREFIX = '005';

/** The account and the Sift user it belongs to, from whichever one the caller gave. */
async function resolveAccount(args: { user_id?: string; account_id?: string }, ctx: ToolContext) {
  const by = exactlyOne(args, ['user_id', 'account_id']);
  const siftId = ctx.config.mapping.salesforce_fields.sift_user_id;
  const where =
    by === 'user_id'
      ? `${siftId} = ${soqlQuote(args.user_id ?? '')}`
      : `Id = ${soqlQuote(args.account_id ?? '')}`;
  const rows = await ctx.clients.salesforce.query<{ Id: string; [field: string]: unknown }>(
    `SELECT Id, ${siftId} FROM Account WHERE ${where} LIMIT 1`,
    { signal: ctx.signal },
  );
  const account = rows[0];
  if (!account) throw new NotFoundError(`No Salesforce Account matches that ${by}.`);
  const user = args.user_id ?? siftUserIdOfRow(account, ctx);
  if (!user) {
    throw new NotFoundError(
      `The Account has no ${siftId}, so it has no Sift score; call with user_id instead.`,
    );
  }
  return { accountId: account.Id, user };
}

/** The subject is the duplicate key: one open review Task per owner and account. */
const taskSubject = (user: string) => `Fraud risk review: open opportunities of Sift user ${user}`;

function dueDate(ctx: ToolContext): string {
  const due = new Date(ctx.now().getTime() + ctx.config.salesforce.task_due_days * 86_400_000);
  return due.toISOString().slice(0, 10);
}

/** How many opportunities `from` (a `FROM Opportunity WHERE …` clause) matches: a count, no records read. */
async function countOf(from: string, ctx: ToolContext): Promise<number> {
  const page = await ctx.clients.salesforce.queryPage(
    { soql: `SELECT COUNT() ${from}` },
    { signal: ctx.signal },
  );
  return page.totalSize;
}

type FlagArgs = { user_id?: string; account_id?: string; closing_by?: string };

/** Everything a flagging decides before writing; shared by the dry run and the real run. */
async function prepare(args: FlagArgs, ctx: ToolContext) {
  const sf = ctx.clients.salesforce;
  const { accountId, user } = await resolveAccount(args, ctx);
  const risk = await siftRisk(user, ctx);
  const threshold = ctx.config.salesforce.opportunity_flag_threshold;
  const over = risk.score >= threshold;
  // No timestamp in the summary: the same score writes the same text, however often it runs.
  const summary = [
    `Sift score ${risk.sift_score}/100 (${risk.risk_band}${risk.abuse_type ? `, ${risk.abuse_type}` : ''}) for Sift user ${user}.`,
    risk.reasons.length > 0 ? `Top reasons: ${risk.reasons.slice(0, 5).join(', ')}.` : '',
    'Flagged by fraudgate; review before closing.',
  ]
    .filter(Boolean)
    .join(' ');
  const { opportunity_flag: flag, opportunity_summary: summaryField } = ctx.config.mapping.salesforce_fields;
  const flagValue = ctx.config.mapping.opportunity_flag_value;
  const fields = { [flag]: flagValue, [summaryField]: summary };
  const open = `FROM Opportunity WHERE AccountId = ${soqlQuote(accountId)} AND IsClosed = false${args.closing_by ? ` AND CloseDate <= ${args.closing_by}` : ''}`;
  // SOQL's != also matches an empty flag. Filtering on the flag alone: the summary is a long text
  // area, which SOQL cannot filter, so a flagged opportunity is never re-read to compare it.
  const unflaggedWhere = `${open} AND ${flag} != ${flagValue === true ? 'true' : soqlQuote(flagValue)}`;
  // Reads bounded by the writes: this call's share, earliest closing first, plus one to know whether
  // more remain; the totals are counts, so a big account costs this call no more than its share.
  const [openCount, share] = over
    ? await Promise.all([
        countOf(open, ctx),
        sf.query<OpportunityRow>(
          `SELECT Id, OwnerId ${unflaggedWhere} ORDER BY CloseDate, Id LIMIT ${MAX_FLAGS_PER_CALL + 1}`,
          { signal: ctx.signal },
        ),
      ])
    : [0, []];
  const unflagged = share.length > MAX_FLAGS_PER_CALL ? await countOf(unflaggedWhere, ctx) : share.length;
  const flagging = share.slice(0, MAX_FLAGS_PER_CALL);
  const updates = flagging.map((o) => ({ Id: o.Id, ...fields }));

  // Review Tasks for the owners of this share only: an owner of a later share is tasked by the call
  // that flags it, and one already tasked (by an earlier share or call) has an open Task and is skipped.
  const owners = new Map<string, string[]>();
  const skippedOwners = new Set<string>();
  for (const o of flagging) {
    if (!o.OwnerId) continue;
    // Tasks are owned by users; an opportunity owned by a queue has no one to assign the review to.
    if (!o.OwnerId.startsWith(USER_ID_PREFIX)) skippedOwners.add(o.OwnerId);
    else owners.set(o.OwnerId, [...(owners.get(o.OwnerId) ?? []), o.Id]);
  }
  const subject = taskSubject(user);
  const openTasks =
    owners.size > 0
      ? await sf.lookup<{ Id: string; OwnerId?: string }>(
          {
            sobject: 'Task',
            field: 'OwnerId',
            values: [...owners.keys()],
            select: ['OwnerId'],
            where: `WhatId = ${soqlQuote(accountId)} AND Subject = ${soqlQuote(subject)} AND IsClosed = false`,
          },
          { signal: ctx.signal },
        )
      : [];
  const hasTask = new Set(openTasks.map((t) => t.OwnerId));
  const remaining = Math.max(0, unflagged - updates.length);
  const tasks = [...owners.entries()]
    .filter(([owner]) => !hasTask.has(owner))
    .map(([owner, ids]) => ({
      OwnerId: owner,
      WhatId: accountId,
      Subject: subject,
      ActivityDate: dueDate(ctx),
      Priority: 'High',
      Status: 'Not Started',
      Description: [
        summary,
        `Your open opportunities flagged on this account (${ids.length}${remaining > 0 ? ' so far' : ''}): ${capped(ids, MAX_LISTED).items.join(', ')}${ids.length > MAX_LISTED ? ', …' : ''}`,
      ].join('\n'),
    }));
  return {
    accountId,
    user,
    fields,
    risk,
    threshold,
    over,
    summary,
    openCount,
    unflagged,
    updates,
    remaining,
    tasks,
    skippedOwners,
    openTasks,
  };
}

/** What the caller does about the opportunities a call left for the next one. */
function nextStep(remaining: number): string | null {
  if (remaining === 0) return null;
  return (
    `${remaining} more open Opportunities need flagging: call flag_opportunities again with the same ` +
    'arguments (flagged ones are skipped) until remaining is 0.'
  );
}

function failures(results: SalesforceSaveResult[], ids: string[]) {
  return results.flatMap((r, i) =>
    r.success ? [] : [{ id: ids[i] ?? r.id, codes: r.errors.map((e) => e.statusCode) }],
  );
}

export const flagOpportunities = defineTool({
  name: 'flag_opportunities',
  title: "Flag a risky customer's open Salesforce opportunities",
  description:
    "When a customer's Sift score reaches the threshold, flag every open Opportunity of their Account " +
    'with a risk summary and create one review Task per owner. Give user_id or account_id. Below the ' +
    `threshold nothing is written. At most ${MAX_FLAGS_PER_CALL} a call, earliest closing first; ` +
    'call again while remaining > 0. Safe to repeat.',
  risk: 'write',
  toolset: 'salesforce',
  idempotent: true,
  input: z.strictObject({
    user_id: userId.optional(),
    account_id: salesforceId('Account', '001').optional(),
    closing_by: z.iso.date().optional().describe('Only opportunities closing by this date (YYYY-MM-DD).'),
  }),
  output: z.object({
    account_id: z.string(),
    user_id: z.string(),
    sift_score: z.number().int().min(0).max(100),
    risk_band: riskBand,
    threshold: z.number().int().min(0).max(100).describe('The flag threshold on the 0–100 scale.'),
    over_threshold: z.boolean(),
    open_opportunities: z.number().int(),
    flagged: z.number().int().describe('Written by this call.'),
    already_flagged: z.number().int(),
    remaining: z.number().int().describe('Still to flag: call again, flagged ones are skipped.'),
    next_step: z.string().nullable(),
    tasks_created: z.number().int(),
    owners_with_open_task: z.number().int().describe('Skipped: review Task still open.'),
    owners_skipped_not_users: z.number().int().describe('Queue-owned: no user to task.'),
    task_due_date: z.string().nullable(),
    flagged_ids: z.array(z.string()),
    task_ids: z.array(z.string()),
    failures: z.array(
      z.object({ sobject: z.enum(['Opportunity', 'Task']), id: z.string(), codes: z.array(z.string()) }),
    ),
    truncated: z.boolean().describe('A list was cut to 50.'),
  }),
  target: (args) => (args.account_id ? `salesforce_account:${args.account_id}` : `sift_user:${args.user_id}`),
  effect: async (args, ctx) => effect((await resolveAccount(args, ctx)).user),
  redaction: { evidence: SIFT_EVIDENCE_NAMES },
  async evidence(args, ctx) {
    const { user } = await resolveAccount(args, ctx);
    return siftEvidence(user, ctx, { system: 'salesforce', effect: effect(user) });
  },
  async plan(args, ctx) {
    const p = await prepare(args, ctx);
    const updates = capped(p.updates, MAX_LISTED);
    const tasks = capped(p.tasks, MAX_LISTED);
    return {
      current: {
        account_id: p.accountId,
        sift_score: p.risk.sift_score,
        over_threshold: p.over,
        open_opportunities: p.openCount,
        already_flagged: Math.max(0, p.openCount - p.unflagged),
        open_review_tasks: p.openTasks.length,
      },
      changes: {
        update_opportunities: {
          count: p.updates.length,
          fields: p.fields,
          ids: updates.items.map((u) => u.Id),
          // The whole job, for whoever approves or plans it: this call's share is `count`.
          total: p.unflagged,
          remaining: p.remaining,
          calls: Math.ceil(p.unflagged / MAX_FLAGS_PER_CALL),
        },
        create_tasks: { count: p.tasks.length, records: tasks.items },
        truncated: updates.truncated || tasks.truncated,
      },
    };
  },
  async run(args, ctx) {
    const sf = ctx.clients.salesforce;
    const p = await prepare(args, ctx);
    // Batch by batch, so a long call reports progress (and a client resetting its timeout on it waits).
    const total = p.updates.length + p.tasks.length;
    let done = 0;
    const updateResults: SalesforceSaveResult[] = [];
    for (let i = 0; i < p.updates.length; i += BATCH) {
      const batch = p.updates.slice(i, i + BATCH);
      updateResults.push(...(await sf.updateMany('Opportunity', batch, { signal: ctx.signal })));
      done += batch.length;
      await ctx.progress(done, total, `Flagged ${i + batch.length} of ${p.updates.length} opportunities`);
    }
    const taskResults: SalesforceSaveResult[] = [];
    for (let i = 0; i < p.tasks.length; i += BATCH) {
      const batch = p.tasks.slice(i, i + BATCH);
      taskResults.push(...(await sf.createMany('Task', batch, { signal: ctx.signal })));
      done += batch.length;
      await ctx.progress(done, total, `Created ${i + batch.length} of ${p.tasks.length} review tasks`);
    }
    const flaggedIds = p.updates.filter((_, i) => updateResults[i]?.success).map((u) => u.Id);
    const taskIds = taskResults.filter((r) => r.success).map((r) => r.id);
    const failed = [
      ...failures(
        updateResults,
        p.updates.map((u) => u.Id),
      ).map((f) => ({ sobject: 'Opportunity' as const, ...f })),
      ...failures(
        taskResults,
        p.tasks.map((t) => t.OwnerId),
      ).map((f) => ({ sobject: 'Task' as const, ...f })),
    ];
    const lists = [
      capped(flaggedIds, MAX_LISTED),
      capped(taskIds, MAX_LISTED),
      capped(failed, MAX_LISTED),
    ] as const;
    return {
      account_id: p.accountId,
      user_id: p.user,
      sift_score: p.risk.sift_score,
      risk_band: p.risk.risk_band,
      threshold: Math.round(p.threshold * 100),
      over_threshold: p.over,
      open_opportunities: p.openCount,
      flagged: flaggedIds.length,
      already_flagged: Math.max(0, p.openCount - p.unflagged),
      remaining: p.remaining,
      next_step: nextStep(p.remaining),
      tasks_created: taskIds.length,
      owners_with_open_task: new Set(p.openTasks.map((t) => t.OwnerId)).size,
      owners_skipped_not_users: p.skippedOwners.size,
      task_due_date: p.tasks.length > 0 ? dueDate(ctx) : null,
      flagged_ids: lists[0].items,
      task_ids: lists[1].items,
      failures: lists[2].items,
      truncated: lists.some((l) => l.truncated),
    };
  },
});
