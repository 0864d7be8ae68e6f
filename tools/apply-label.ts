import * as z from 'zod';
import { defineTool } from '../src/tool.ts';
import { abuseType, siftEvidence, userId, SIFT_EVIDENCE_NAMES } from './schemas.ts';

/** What approving does, in one sentence (the approval's evidence, or on its own without it). */
const effect = (args: { user_id: string; is_bad: boolean; abuse_type: string }) =>
  `Label ${args.user_id} as ${args.is_bad ? 'BAD (fraudulent)' : 'NOT BAD (known good)'} for ${args.abuse_type} ` +
  "in Sift; this trains Sift's model and can change what happens to the customer.";

export const applyLabel = defineTool({
  name: 'apply_label',
  title: 'Label a user in Sift',
  description:
    "Label a Sift user bad (fraud) or not bad for one abuse type; this trains Sift's model. Needs " +
    'human approval: APPROVAL_PENDING gives an id for get_approval_status (do not call again).',
  risk: 'destructive',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    is_bad: z.boolean().describe('true: fraud; false: known good.'),
    abuse_type: abuseType,
    description: z.string().trim().min(3).max(1000).describe('The evidence.'),
  }),
  output: z.object({
    user_id: z.string(),
    abuse_type: z.string(),
    is_bad: z.boolean(),
    analyst: z.string().describe('Who the label is recorded under in Sift.'),
    source: z.string(),
    labelled_at: z.string(),
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
    return {
      current: { label: score.latestLabels[args.abuse_type] ?? null },
      changes: {
        label: {
          abuse_type: args.abuse_type,
          is_bad: args.is_bad,
          description: args.description,
          analyst: ctx.principal.id,
          source: ctx.config.label_source,
        },
      },
    };
  },
  async run(args, ctx) {
    await ctx.clients.sift.addLabel(
      args.user_id,
      {
        isBad: args.is_bad,
        abuseType: args.abuse_type,
        description: args.description,
        source: ctx.config.label_source,
        analyst: ctx.principal.id,
      },
      { signal: ctx.signal },
    );
    return {
      user_id: args.user_id,
      abuse_type: args.abuse_type,
      is_bad: args.is_bad,
      analyst: ctx.principal.id,
      source: ctx.config.label_source,
      labelled_at: ctx.now().toISOString(),
    };
  },
});
