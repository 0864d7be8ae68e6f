import { createHash } from 'node:crypto';
import * as z from 'zod';
import type { AbuseType } from '../src/clients/types.ts';
import { ERROR_CODES, FraudgateError, InvalidInputError, NotFoundError } from '../src/errors.ts';
import { defineTool, type ApprovalKey, type ApprovalView, type ToolContext } from '../src/tool.ts';
import { segmentUserIdFor, siftEvidence, SIFT_EVIDENCE_NAMES } from './schemas.ts';
import { DECISION_CATEGORIES, decisionApprovalKey } from './apply-decision.ts';
import { decisionCatalogue } from './list-sift-decisions.ts';
import { suppressionWrites } from './suppress-user.ts';

/**
 * The compensating action of an executed destructive action, derived from what its approval
 * recorded — the frozen arguments and the evidence, which the pipeline re-checked just before the
 * action ran, so it is the state the action changed:
 *
 *   apply_label     → the label for that abuse type as it was (removed, or the earlier one back)
 *   remove_label    → the removed label back
 *   apply_decision  → the decision in force before re-applied (Sift cannot remove a decision)
 *   suppress_user   → the suppression state as it was
 */
type Compensation =
  | { kind: 'label'; user: string; abuseType: AbuseType; restore: { is_bad: boolean } | null }
  | { kind: 'decision'; user: string; abuseType: AbuseType; decisionId: string }
  | { kind: 'suppression'; user: string; suppressed: boolean };

const conflict = (message: string) => new FraudgateError(ERROR_CODES.CONFLICT, message);

/** The destructive tools whose executed actions `undo_action` (and the console's Undo) can reverse. */
export const UNDOABLE_TOOLS: readonly string[] = [
  'apply_label',
  'remove_label',
  'apply_decision',
  'suppress_user',
];

const asRecord = (v: unknown) =>
  (v && typeof v === 'object' && !Array.isArray(v) ? v : {}) as Record<string, unknown>;

function compensationFor(original: ApprovalView): Compensation {
  // Arguments refused or edited in the database say nothing true about what ran: no compensation
  // is built from them (it would target whatever user they now name, or "undefined").
  if (original.args_problem) {
    throw conflict(
      `Approval ${original.id} cannot be undone: integrity check failed: ${original.args_problem}; nothing was ` +
        'done. Check who wrote to the database, then make the change with the matching tool.',
    );
  }
  const args = asRecord(original.args);
  const evidence = original.evidence;
  const user = String(args.user_id);
  if (!('basis' in evidence)) {
    throw conflict(
      `Approval ${original.id} recorded no prior state (it predates undo), so it cannot be undone automatically.`,
    );
  }
  if (original.tool === 'apply_label' || original.tool === 'remove_label') {
    const label = evidence.current_label === null ? null : asRecord(evidence.current_label);
    return {
      kind: 'label',
      user,
      abuseType: args.abuse_type as AbuseType,
      restore: label ? { is_bad: label.is_bad === true } : null,
    };
  }
  if (original.tool === 'apply_decision') {
    const before = evidence.current_decision === null ? null : asRecord(evidence.current_decision);
    if (!before?.decision_id) {
      throw conflict(
        `${user} had no ${String(evidence.abuse_type)} decision before ${original.id}, and Sift cannot remove a ` +
          'decision: apply the decision that should be in force (e.g. an accept decision) with apply_decision.',
      );
    }
    return {
      kind: 'decision',
      user,
      abuseType: evidence.abuse_type as AbuseType,
      decisionId: String(before.decision_id),
    };
  }
  return { kind: 'suppression', user, suppressed: evidence.currently_suppressed === true };
}

/**
 * An undo's per-call keys: one that re-applies a BLOCK carries `apply_decision:block`'s floor (and,
 * like it, must be opted in to self-approval by its own key), or undoing the lift of a block would
 * re-apply it on the model's word alone under `undo_action: none` or a self-confirmed undo.
 */
const APPROVAL_KEYS: readonly ApprovalKey[] = [{ key: 'undo_action:block', floor: 'approval' }];

/**
 * What a compensation re-applies, as its own tool's call would see it: that call's approval key
 * (the undo's approval is never weaker than it, see `ApprovalKey.reapplies`), the budget keys, most
 * specific first, and the category of a re-applied decision (Sift's, read fresh like apply_decision's).
 */
async function reapplied(
  c: Compensation,
  ctx: ToolContext,
): Promise<{ reapplies: NonNullable<ApprovalKey['reapplies']>; budgetKeys: string[]; category?: string }> {
  switch (c.kind) {
    case 'label': {
      const tool = c.restore ? 'apply_label' : 'remove_label';
      return { reapplies: { tool }, budgetKeys: [tool] };
    }
    case 'suppression':
      return { reapplies: { tool: 'suppress_user' }, budgetKeys: ['suppress_user'] };
    case 'decision': {
      const { decisions } = await decisionCatalogue({}, ctx, { fresh: true });
      const decision = decisions.find((d) => d.id === c.decisionId);
      if (!decision) {
        throw conflict(
          `The earlier decision ${c.decisionId} is no longer in Sift's decision catalogue, so it cannot be ` +
            're-applied: apply the decision that should be in force with apply_decision.',
        );
      }
      return {
        reapplies: { tool: 'apply_decision', key: decisionApprovalKey(decision.category) },
        budgetKeys: [`apply_decision:${decision.category}`, 'apply_decision'],
        category: decision.category,
      };
    }
  }
}

/** An undo's approval key: one that re-applies a BLOCK carries the BLOCK's approval floor. */
const undoKey = (reapplies: NonNullable<ApprovalKey['reapplies']>, category?: string): ApprovalKey => ({
  ...(category === 'block' ? APPROVAL_KEYS[0]! : { key: 'undo_action' }),
  reapplies,
});

/**
 * Every approval key `approvalKey` can give an undo of an action of `undoneTool` (see `reapplied`):
 * a label's undo re-applies or removes a label, a suppression's re-applies a suppression, a
 * decision's re-applies a decision of some category (or of none with its own policy); undefined for
 * a tool with no undo.
 */
function undoKeysFor(undoneTool: string): ApprovalKey[] | undefined {
  switch (undoneTool) {
    case 'apply_label':
    case 'remove_label':
      return [undoKey({ tool: 'apply_label' }), undoKey({ tool: 'remove_label' })];
    case 'suppress_user':
      return [undoKey({ tool: 'suppress_user' })];
    case 'apply_decision':
      return [...DECISION_CATEGORIES, 'other'].map((category) =>
        undoKey({ tool: 'apply_decision', key: decisionApprovalKey(category) }, category),
      );
    default:
      return undefined;
  }
}

function describe(c: Compensation): string {
  switch (c.kind) {
    case 'label':
      return c.restore
        ? `put back the ${c.abuseType} label ${c.restore.is_bad ? 'BAD' : 'NOT BAD'} on ${c.user} in Sift`
        : `remove the ${c.abuseType} label from ${c.user} in Sift (it had none before)`;
    case 'decision':
      return `re-apply the earlier ${c.abuseType} decision ${c.decisionId} to ${c.user} in Sift`;
    case 'suppression':
      return `${c.suppressed ? 'suppress marketing to' : 'resume marketing to'} ${c.user} in Segment, as before`;
  }
}

/** The executed action an undo refers to, checked: visible to the caller, undoable, within the window. */
async function undoable(
  approvalId: string,
  ctx: ToolContext,
): Promise<{ original: ApprovalView; compensation: Compensation }> {
  const original = await ctx.approvals.get(approvalId);
  const mayRead =
    original &&
    (original.requester === ctx.principal.id || ['approver', 'admin'].includes(ctx.principal.role));
  if (!original || !mayRead) throw new NotFoundError(`No approval ${approvalId} that you can see.`);
  if (!UNDOABLE_TOOLS.includes(original.tool)) {
    throw new InvalidInputError([
      {
        field: 'approval_id',
        message: `${original.tool} has no undo; undo covers ${UNDOABLE_TOOLS.join(', ')}`,
      },
    ]);
  }
  // This very undo marked it and was interrupted before it finished: re-running it completes the
  // same compensation (idempotent), so neither the mark nor the window that passed meanwhile refuses it.
  const ownMark = original.state === 'undone' && original.undone_by === ctx.idempotencyKey;
  if (ownMark) return { original, compensation: compensationFor(original) };
  if (original.state === 'undone') {
    throw conflict(
      `Approval ${approvalId} was already undone; an action is undone once. To change the state again, ` +
        'use the matching tool.',
    );
  }
  if (original.state !== 'executed' || !original.executed_at) {
    throw conflict(`Approval ${approvalId} is ${original.state}: only an executed action can be undone.`);
  }
  const deadline = Date.parse(original.executed_at) + ctx.config.undo_window_ms;
  if (ctx.now().getTime() > deadline) {
    throw conflict(
      `Approval ${approvalId} ran more than ${Math.round(ctx.config.undo_window_ms / 3_600_000)} h ago, past the undo ` +
        'window (approvals.undo_window_ms); make the change with the matching tool instead.',
    );
  }
  return { original, compensation: compensationFor(original) };
}

export const undoAction = defineTool({
  name: 'undo_action',
  title: 'Undo an executed destructive action',
  description:
    'Undo a label, label removal, decision or suppression fraudgate executed (by approval_id) within ' +
    'the undo window, restoring the state before it. Needs human approval.',
  risk: 'destructive',
  toolset: 'core',
  idempotent: true,
  extraRoles: ['approver'],
  input: z.strictObject({
    approval_id: z.string().regex(/^apr_[a-z0-9]{20}$/, 'the approval id of the executed action'),
    reason: z.string().trim().min(3).max(500).describe('Why it is undone (required).'),
  }),
  output: z.object({
    undone_approval_id: z.string(),
    undone_tool: z.string(),
    compensation: z.string().describe('How the earlier state was restored.'),
    undone_at: z.string(),
  }),
  target: (args) => `approval:${args.approval_id}`,
  redaction: { evidence: SIFT_EVIDENCE_NAMES },
  approvalKeys: APPROVAL_KEYS,
  reapplies: UNDOABLE_TOOLS,
  // What the desk holds a waiting undo to: the keys an undo of that action can get, found from the
  // undone action's tool alone (a decision's category would need Sift: every category counts).
  async possibleApprovalKeys(args, approvalOf) {
    const id = args.approval_id;
    const original = typeof id === 'string' ? await approvalOf(id) : undefined;
    return original ? undoKeysFor(original.tool) : undefined;
  },
  // Runs before an approval is requested: an action that cannot be undone is refused at once.
  async approvalKey(args, ctx) {
    const { compensation } = await undoable(args.approval_id, ctx);
    // What it re-applies counts against that budget too: a paused `apply_decision:block` or
    // `suppress_user` budget is not sidestepped by undoing the action that lifted a block or suppression.
    // A re-applied BLOCK also carries the BLOCK's approval floor (labels and suppressions have none).
    // And its approval is never weaker than that call's: an operator's `suppress_user: four_eyes`
    // holds for an undo that re-suppresses, whatever `undo_action` is set to.
    const { reapplies, budgetKeys, category } = await reapplied(compensation, ctx);
    return { ...undoKey(reapplies, category), budgetKeys: [budgetKeys, ['undo_action']] };
  },
  async evidence(args, ctx) {
    const { original, compensation } = await undoable(args.approval_id, ctx);
    const effect = `Undo ${original.tool} ${original.id} on ${original.target}: ${describe(compensation)}.`;
    // The current state of what is restored; a change before the undo runs means re-approval.
    const now =
      compensation.kind === 'suppression'
        ? await siftEvidence(compensation.user, ctx, { system: 'segment', effect })
        : await siftEvidence(compensation.user, ctx, { abuseType: compensation.abuseType, effect });
    return {
      ...now,
      undoes: { approval_id: original.id, tool: original.tool, executed_at: original.executed_at },
    };
  },
  async plan(args, ctx) {
    const { original, compensation } = await undoable(args.approval_id, ctx);
    return {
      current: { approval_id: original.id, tool: original.tool },
      changes: { undo: describe(compensation) },
    };
  },
  async run(args, ctx) {
    const { original, compensation: c } = await undoable(args.approval_id, ctx);
    // Marked first, compare-and-set: of two undos of one action, one runs.
    if (!(await ctx.approvals.markUndone(original.id, ctx.idempotencyKey))) {
      throw conflict(`Approval ${original.id} was already undone by another undo; nothing was done.`);
    }
    try {
      return await compensate(original, c, args.reason, ctx);
    } catch (error) {
      // Not (or not all) restored: unmarked, so it can still be undone.
      await ctx.approvals.unmarkUndone(original.id, ctx.idempotencyKey);
      throw error;
    }
  },
});

/** Apply the compensation: the state before `original` back in Sift or Segment. */
async function compensate(
  original: ApprovalView,
  c: Compensation,
  reason: string,
  ctx: ToolContext,
): Promise<{ undone_approval_id: string; undone_tool: string; compensation: string; undone_at: string }> {
  const note = `Undo of ${original.id}: ${reason}`;
  const sift = ctx.clients.sift;
  if (c.kind === 'label' && c.restore) {
    await sift.addLabel(
      c.user,
      {
        isBad: c.restore.is_bad,
        abuseType: c.abuseType,
        description: note,
        source: ctx.config.label_source,
        analyst: ctx.principal.id,
      },
      { signal: ctx.signal },
    );
  } else if (c.kind === 'label') {
    await sift.removeLabel(c.user, c.abuseType, { signal: ctx.signal });
  } else if (c.kind === 'decision') {
    await sift.applyUserDecision(
      c.user,
      { decisionId: c.decisionId, source: 'MANUAL_REVIEW', analyst: ctx.principal.id, description: note },
      { signal: ctx.signal },
    );
  } else {
    const segmentUser = await segmentUserIdFor(c.user, ctx);
    const { traits, event } = suppressionWrites(c.suppressed, ctx);
    // Keyed by the undo's own approval: a repeated run is deduplicated by Segment.
    const key = createHash('sha256').update(`${ctx.idempotencyKey}\u0000undo`).digest('hex').slice(0, 40);
    await ctx.clients.segment.identify(
      { userId: segmentUser, traits, messageId: `fg-undo-id-${key}` },
      { signal: ctx.signal },
    );
    await ctx.clients.segment.track(
      {
        userId: segmentUser,
        event,
        properties: {
          reason: note,
          suppressed: c.suppressed,
          requested_by: ctx.principal.id,
          undo_of: original.id,
        },
        messageId: `fg-undo-tr-${key}`,
      },
      { signal: ctx.signal },
    );
  }
  return {
    undone_approval_id: original.id,
    undone_tool: original.tool,
    compensation: describe(c),
    undone_at: ctx.now().toISOString(),
  };
}
