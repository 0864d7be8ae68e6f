import * as z from 'zod';
import type { SiftDecisionDefinition } from '../src/clients/types.ts';
import { InvalidInputError } from '../src/errors.ts';
import { defineTool, type ApprovalKey, type ToolContext } from '../src/tool.ts';
import { decisionCatalogue } from './list-sift-decisions.ts';
import { SIFT_EVIDENCE_NAMES, siftEvidence, userId } from './schemas.ts';

/**
 * The catalogue entry for a decision id, read fresh from Sift: the category that selects the
 * approval policy must be Sift's, never the model's. Unknown or non-user decisions are INVALID_INPUT.
 */
async function userDecision(decisionId: string, ctx: ToolContext): Promise<SiftDecisionDefinition> {
  const { decisions } = await decisionCatalogue({}, ctx, { fresh: true });
  const found = decisions.find((d) => d.id === decisionId);
  if (!found) {
    throw new InvalidInputError([
      {
        field: 'decision_id',
        message: `Sift has no decision "${decisionId}"; pick one from list_sift_decisions`,
      },
    ]);
  }
  if (found.entityType !== 'user') {
    throw new InvalidInputError([
      {
        field: 'decision_id',
        message: `"${decisionId}" is a ${found.entityType} decision; apply_decision applies user decisions only`,
      },
    ]);
  }
  return found;
}

/** Sift's decision categories (an undo of a decision may re-apply one of any: undo-action.ts). */
export const DECISION_CATEGORIES = ['block', 'watch', 'accept'] as const;

/** Policy per decision category. BLOCK never runs on the model's word alone, whatever the tool's default. */
const APPROVAL_KEYS: readonly ApprovalKey[] = [
  { key: 'apply_decision:block', floor: 'approval' },
  { key: 'apply_decision:watch' },
  { key: 'apply_decision:accept' },
];

/** The approval key of a decision in this category: also an undo's that re-applies one (undo-action.ts). */
export const decisionApprovalKey = (category: string): ApprovalKey =>
  APPROVAL_KEYS.find((k) => k.key === `apply_decision:${category}`) ?? { key: 'apply_decision' };

/** What approving does, in one sentence (the approval's evidence, or on its own without it). */
const effect = (decision: SiftDecisionDefinition, user: string) =>
  `Apply the ${decision.category.toUpperCase()} decision "${decision.name}" to ${user} for ` +
  `${decision.abuseType} in Sift; this changes what happens to the customer.`;

export const applyDecision = defineTool({
  name: 'apply_decision',
  title: 'Apply a Sift decision to a user',
  description:
    'Apply a configured Sift user decision (from list_sift_decisions) to a user. BLOCK always needs ' +
    'human approval, WATCH and ACCEPT per policy (APPROVAL_PENDING: see get_approval_status). Order, ' +
    'session and content decisions are refused.',
  risk: 'destructive',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    decision_id: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9_.:-]+$/, 'a decision id from list_sift_decisions, e.g. block_user_payment_abuse')
      .describe('From list_sift_decisions.'),
    description: z.string().trim().min(3).max(1000).describe('The evidence.'),
  }),
  output: z.object({
    user_id: z.string(),
    decision_id: z.string(),
    name: z.string(),
    category: z.enum(DECISION_CATEGORIES),
    abuse_type: z.string(),
    source: z.literal('MANUAL_REVIEW'),
    analyst: z.string().describe('Who the decision is recorded under in Sift.'),
    applied_at: z.string(),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  // Sift's decision names (`Block payment abuse`) are not personal: the approver and the stored result keep them.
  redaction: {
    evidence: { notPersonal: [...SIFT_EVIDENCE_NAMES.notPersonal, 'decision.name'] },
    result: { notPersonal: ['name'] },
  },
  approvalKeys: APPROVAL_KEYS,
  async approvalKey(args, ctx) {
    const decision = await userDecision(args.decision_id, ctx);
    return decisionApprovalKey(decision.category);
  },
  effect: async (args, ctx) => effect(await userDecision(args.decision_id, ctx), args.user_id),
  async evidence(args, ctx) {
    const decision = await userDecision(args.decision_id, ctx);
    return {
      decision: {
        id: decision.id,
        name: decision.name,
        category: decision.category,
        abuse_type: decision.abuseType,
      },
      ...(await siftEvidence(args.user_id, ctx, {
        abuseType: decision.abuseType,
        effect: effect(decision, args.user_id),
      })),
    };
  },
  async plan(args, ctx) {
    const decision = await userDecision(args.decision_id, ctx);
    const current = await ctx.clients.sift.getUserDecisions(args.user_id, { signal: ctx.signal });
    const now = current.find((d) => d.abuseType === decision.abuseType);
    return {
      current: {
        [decision.abuseType]: now
          ? { decision_id: now.decisionId, decided_at: new Date(now.time).toISOString() }
          : null,
      },
      changes: {
        [decision.abuseType]: { decision_id: decision.id, category: decision.category },
        source: 'MANUAL_REVIEW',
        analyst: ctx.principal.id,
      },
    };
  },
  async run(args, ctx) {
    const decision = await userDecision(args.decision_id, ctx);
    const applied = await ctx.clients.sift.applyUserDecision(
      args.user_id,
      {
        decisionId: decision.id,
        source: 'MANUAL_REVIEW',
        analyst: ctx.principal.id,
        description: args.description,
      },
      { signal: ctx.signal },
    );
    return {
      user_id: args.user_id,
      decision_id: decision.id,
      name: decision.name,
      category: decision.category,
      abuse_type: decision.abuseType,
      source: 'MANUAL_REVIEW' as const,
      analyst: ctx.principal.id,
      applied_at: new Date(applied.time > 0 ? applied.time : ctx.now().getTime()).toISOString(),
    };
  },
});
