import { createHash } from 'node:crypto';
import * as z from 'zod';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { segmentUserIdFor, siftEvidence, userId, SIFT_EVIDENCE_NAMES } from './schemas.ts';

/** The traits and event a (un)suppression writes; shared by the dry run and the real run. */
export function suppressionWrites(suppressed: boolean, ctx: ToolContext) {
  const trait = ctx.config.mapping.suppression_trait;
  const traits = { [trait]: suppressed, [`${trait}_at`]: suppressed ? ctx.now().toISOString() : null };
  return { trait, traits, event: suppressed ? 'Fraud Suppression Applied' : 'Fraud Suppression Lifted' };
}

export const suppressUser = defineTool({
  name: 'suppress_user',
  title: 'Suppress a user from marketing',
  description:
    'Stop (default) or resume marketing to a user for fraud: sets the Segment trait the suppression ' +
    'audience keys on, plus a track event. Deletes nothing (not GDPR suppression). Needs human ' +
    'approval.',
  risk: 'destructive',
  toolset: 'segment',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    reason: z.string().trim().min(3).max(500).describe('Shown to the approver.'),
    suppressed: z.boolean().default(true).describe('false lifts it.'),
  }),
  output: z.object({
    user_id: z.string(),
    segment_user_id: z.string().describe('Mapped Segment user id.'),
    suppressed: z.boolean(),
    trait: z.string().describe('The Segment trait the audience keys on.'),
    traits_written: z.record(z.string(), z.union([z.string(), z.boolean(), z.null()])),
    event: z.string(),
    message_ids: z.object({ identify: z.string(), track: z.string() }),
  }),
  target: (args) => `segment_user:${args.user_id}`,
  redaction: { evidence: SIFT_EVIDENCE_NAMES },
  async evidence(args, ctx) {
    const trait = ctx.config.mapping.suppression_trait;
    const effect = args.suppressed
      ? `Stop marketing to ${args.user_id}: set the Segment trait ${trait} to true, which the marketing suppression audience keys on.`
      : `Resume marketing to ${args.user_id}: set the Segment trait ${trait} to false, taking them out of the marketing suppression audience.`;
    const segmentUser = await segmentUserIdFor(args.user_id, ctx);
    const [sift, profile] = await Promise.all([
      siftEvidence(args.user_id, ctx, { system: 'segment', effect }).catch((e: Error) => ({
        effect,
        system: 'segment',
        sift_unavailable: e.message,
      })),
      ctx.clients.segment.getProfileTraits(segmentUser, { signal: ctx.signal }),
    ]);
    const suppressed = profile?.[trait] === true;
    return {
      ...sift,
      segment_user_id: segmentUser,
      currently_suppressed: suppressed,
      segment_profile_exists: profile !== null,
      // The profile written and its suppression state are part of what the approver agreed to, like
      // the band and decision: a mapping or suppression change before execution means re-approval.
      basis: {
        ...((sift as { basis?: Record<string, unknown> }).basis ?? {}),
        segment_user_id: segmentUser,
        suppressed,
      },
    };
  },
  async plan(args, ctx) {
    const segmentUser = await segmentUserIdFor(args.user_id, ctx);
    const { traits, event } = suppressionWrites(args.suppressed, ctx);
    const profile = await ctx.clients.segment.getProfileTraits(segmentUser, { signal: ctx.signal });
    const current = Object.fromEntries(Object.keys(traits).map((k) => [k, profile?.[k] ?? null]));
    return {
      current: { segment_user_id: segmentUser, traits: current },
      changes: { traits, track: { event } },
    };
  },
  async run(args, ctx) {
    // Resolved when the approved action runs, so a mapping made while it waited is honoured.
    const segmentUser = await segmentUserIdFor(args.user_id, ctx);
    const { trait, traits, event } = suppressionWrites(args.suppressed, ctx);
    // The idempotency key is the approval id: re-running one approved action is deduplicated by Segment.
    const base = createHash('sha256')
      .update(`${ctx.idempotencyKey}\u0000${segmentUser}\u0000${args.suppressed}`)
      .digest('hex');
    const ids = { identify: `fg-sup-id-${base.slice(0, 40)}`, track: `fg-sup-tr-${base.slice(0, 40)}` };
    await ctx.clients.segment.identify(
      { userId: segmentUser, traits, messageId: ids.identify },
      { signal: ctx.signal },
    );
    await ctx.clients.segment.track(
      {
        userId: segmentUser,
        event,
        properties: { reason: args.reason, suppressed: args.suppressed, requested_by: ctx.principal.id },
        messageId: ids.track,
      },
      { signal: ctx.signal },
    );
    return {
      user_id: args.user_id,
      segment_user_id: segmentUser,
      suppressed: args.suppressed,
      trait,
      traits_written: traits,
      event,
      message_ids: ids,
    };
  },
});
