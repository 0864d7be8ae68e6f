import * as z from 'zod';
import { defineTool } from '../src/tool.ts';
import { decisionCatalogue } from './list-sift-decisions.ts';
import { userId } from './schemas.ts';

export const getUserDecisions = defineTool({
  name: 'get_user_decisions',
  title: "Get a user's current Sift decisions",
  description:
    'The decisions in force on a Sift user: per abuse type the latest decision, its category (unknown ' +
    'if since deleted) and when. Empty: none.',
  risk: 'read',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({ user_id: userId }),
  output: z.object({
    user_id: z.string(),
    decisions: z.array(
      z.object({
        abuse_type: z.string(),
        decision_id: z.string(),
        name: z.string().nullable(),
        category: z.enum(['block', 'watch', 'accept', 'unknown']),
        decided_at: z.string(),
      }),
    ),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  async run(args, ctx) {
    const statuses = await ctx.clients.sift.getUserDecisions(args.user_id, { signal: ctx.signal });
    const { decisions: catalogue } =
      statuses.length > 0 ? await decisionCatalogue({ entityType: 'user' }, ctx) : { decisions: [] };
    return {
      user_id: args.user_id,
      decisions: statuses
        .map((s) => {
          const d = catalogue.find((c) => c.id === s.decisionId);
          return {
            abuse_type: s.abuseType,
            decision_id: s.decisionId,
            name: d?.name ?? null,
            category: d?.category ?? ('unknown' as const),
            decided_at: new Date(s.time).toISOString(),
          };
        })
        .sort((a, b) => b.decided_at.localeCompare(a.decided_at)),
    };
  },
});
