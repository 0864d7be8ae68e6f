import { createHash } from 'node:crypto';
import * as z from 'zod';
import { NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { abuseType, chosenScore, riskBand, segmentUserIdFor, summarizeScore, userId } from './schemas.ts';

const traitValue = z.union([z.string(), z.number(), z.boolean(), z.null()]);

/** The traits a score sync writes; shared by the dry run and the real run. */
async function prepare(args: { user_id: string; abuse_type?: string }, ctx: ToolContext) {
  const segmentUser = await segmentUserIdFor(args.user_id, ctx);
  const raw = await ctx.clients.sift.getUserScore(args.user_id, { signal: ctx.signal });
  const summary = summarizeScore(raw, ctx.config.risk_bands);
  const chosen = chosenScore(raw, summary, args.abuse_type);
  // No score is not a zero score: writing band low would move a blocked user to the trusted tier.
  if (!chosen) {
    const scored = summary.scores.map((s) => s.abuse_type).join(', ') || 'none';
    throw new NotFoundError(
      args.abuse_type
        ? `abuse_type: Sift has no ${args.abuse_type} score for this user (scored: ${scored}); nothing was written. Omit abuse_type for the riskiest score.`
        : 'Sift has no score for this user; nothing was written.',
    );
  }
  const { entry, time: computedAt } = chosen;
  const band = entry.risk_band;
  const tier = ctx.config.mapping.routing_tiers[band];
  const names = ctx.config.mapping.score_traits;
  const traits: Record<string, string | number | null> = {
    [names.score]: entry.sift_score,
    [names.band]: band,
    [names.routing_tier]: tier,
    [names.abuse_type]: entry.abuse_type,
  };
  // Segment drops a messageId it has seen (~24 h), so the id must change with every real change
  // of score, including one back to an earlier value (94 → 71 → 94), and stay the same for a
  // retry. The traits plus the time Sift computed the score do both: a retry, an outbox re-run or
  // a second sync of an unchanged score carries the same time. Sift may leave the time out; then
  // the call's idempotency key stands in (the same for an outbox re-run or an approved call,
  // fresh per direct call, whose repeat rewrites the same traits: harmless).
  const occurrence = computedAt === undefined ? `key:${ctx.idempotencyKey}` : `time:${computedAt}`;
  const messageId = `fg-score-${createHash('sha256')
    .update(
      [args.user_id, segmentUser, ...Object.entries(traits).flat().map(String), occurrence].join('\u0000'),
    )
    .digest('hex')
    .slice(0, 40)}`;
  return { segmentUser, entry, band, tier, traits, messageId };
}

export const syncScoreToSegment = defineTool({
  name: 'sync_score_to_segment',
  title: "Sync a user's Sift score and routing tier to Segment",
  description:
    "Write a user's current Sift score (0–100, read from Sift), risk band and routing tier " +
    '(configured per band) to their Segment profile as traits. Riskiest abuse type unless abuse_type; ' +
    'no score is NOT_FOUND, nothing written. Unchanged scores are not resent.',
  risk: 'write',
  toolset: 'segment',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.optional().describe('Default: the riskiest.'),
  }),
  output: z.object({
    user_id: z.string(),
    segment_user_id: z.string().describe('Mapped Segment user id.'),
    sift_score: z.number().int().min(0).max(100),
    risk_band: riskBand,
    routing_tier: z.string(),
    traits_written: z.record(z.string(), traitValue),
    message_id: z.string(),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  async plan(args, ctx) {
    const { segmentUser, traits } = await prepare(args, ctx);
    const profile = await ctx.clients.segment.getProfileTraits(segmentUser, { signal: ctx.signal });
    const current = Object.fromEntries(Object.keys(traits).map((k) => [k, profile?.[k] ?? null]));
    return { current: { segment_user_id: segmentUser, traits: current }, changes: { traits } };
  },
  async run(args, ctx) {
    const { segmentUser, entry, band, tier, traits, messageId } = await prepare(args, ctx);
    await ctx.clients.segment.identify({ userId: segmentUser, traits, messageId }, { signal: ctx.signal });
    return {
      user_id: args.user_id,
      segment_user_id: segmentUser,
      sift_score: entry.sift_score,
      risk_band: band,
      routing_tier: tier,
      traits_written: traits,
      message_id: messageId,
    };
  },
});
