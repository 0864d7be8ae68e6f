import * as z from 'zod';
import { defineTool } from '../src/tool.ts';
import { abuseType, siftEvidence, userId, SIFT_EVIDENCE_NAMES } from './schemas.ts';

/** What approving does, in one sentence (the approval's evidence, or on its own without it). */
const effect = (args: { user_id: string; abuse_type: string }) =>
  `Remove the ${args.abuse_type} label from ${args.user_id} in Sift; this retrains Sift's model ` +
  'and can change what happens to the customer.';

/**
 * The inverse of apply_label, as its own tool rather than an `action` argument: a model picks
 * "remove" by name, the arguments differ (no is_bad), and approvals and audit show the intent plainly.
 */
export const removeLabel = defineTool({
  name: 'remove_label',
  title: "Remove a user's Sift label",
  description:
    "Remove a Sift user's label for one abuse type (e.g. a mistaken apply_label); decisions stay. " +
    "Approval as for apply_label. The reason is kept in fraudgate's audit.",
  risk: 'destructive',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.describe('Others keep theirs.'),
    reason: z.string().trim().min(3).max(1000).describe('Why the label no longer applies.'),
  }),
  output: z.object({
    user_id: z.string(),
    abuse_type: z.string(),
    removed_at: z.string(),
    requested_by: z.string(),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  redaction: { evidence: SIFT_EVIDENCE_NAMES },
  // Labels for different abuse types are independent: only a newer request for the same one replaces a pending one.
  supersedeKey: (args) => `sift_user:${args.user_id}:${args.abuse_type}`,
  effect,
  evidence: (args, ctx) =>
    siftEvidence(args.user_id, ctx, { abuseType: args.abuse_type, effect: effect(args) }),
  async plan(args, ctx) {
    const score = await ctx.clients.sift.getUserScore(args.user_id, { signal: ctx.signal });
    const label = score.latestLabels[args.abuse_type];
    return {
      current: { [args.abuse_type]: label ? { is_bad: label.is_bad } : null },
      changes: { [args.abuse_type]: label ? 'label removed' : 'nothing: no label for this abuse type' },
    };
  },
  async run(args, ctx) {
    await ctx.clients.sift.removeLabel(args.user_id, args.abuse_type, { signal: ctx.signal });
    return {
      user_id: args.user_id,
      abuse_type: args.abuse_type,
      removed_at: ctx.now().toISOString(),
      requested_by: ctx.principal.id,
    };
  },
});
