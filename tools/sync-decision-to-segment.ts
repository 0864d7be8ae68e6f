import { createHash } from 'node:crypto';
import * as z from 'zod';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { currentDecisions, governingDecision, latestDecision } from './decision-state.ts';
import { abuseType, userId, currentDecisionSummary, segmentUserIdFor } from './schemas.ts';

const traitValue = z.union([z.string(), z.number(), z.boolean(), z.null()]);

/** Segment messageIds must be < 100 chars and the same for the same decision, so a retried sync is deduplicated. */
function messageId(kind: string, parts: (string | number)[]): string {
  return `fg-${kind}-${createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 40)}`;
}

/**
 * What a sync writes: the user-level state of the most severe current decision across abuse types
 * (a later ACCEPT for one abuse type must not clear a BLOCK for another). `type` only picks the
 * abuse type's own decision to report back. Shared by the dry run and the real run.
 */
async function plannedWrites(user: string, type: string | undefined, ctx: ToolContext) {
  const segmentUser = await segmentUserIdFor(user, ctx);
  const decisions = await currentDecisions(user, ctx);
  const decision = governingDecision(decisions);
  const reported = type === undefined ? undefined : (latestDecision(decisions, type) ?? null);
  const effect = decision ? ctx.config.mapping.decisions[decision.category] : ctx.config.mapping.no_decision;
  const traits: Record<string, string | number | boolean | null> = {
    ...effect.segment_traits,
    fraud_decision_id: decision?.decision_id ?? null,
    fraud_decision_abuse_type: decision?.abuse_type ?? null,
    fraud_decision_at: decision?.decided_at ?? null,
  };
  const properties: Record<string, string | number | boolean | null> = {
    decision_id: decision?.decision_id ?? null,
    category: decision?.category ?? null,
    abuse_type: decision?.abuse_type ?? null,
    decided_at: decision?.decided_at ?? null,
    source: 'sift',
  };
  const key = [
    user,
    segmentUser,
    decision?.decision_id ?? 'none',
    decision?.abuse_type ?? '',
    decision?.time ?? 'none',
  ];
  const ids = { identify: messageId('dec-id', key), track: messageId('dec-tr', key) };
  return { segmentUser, decision, reported, effect, traits, properties, ids, event: effect.segment_event };
}

export const syncDecisionToSegment = defineTool({
  name: 'sync_decision_to_segment',
  title: "Sync a user's Sift decision to Segment",
  description:
    "Copy a user's Sift decision (read from Sift; the most severe across abuse types) to their " +
    'Segment profile as mapped traits plus a track event; no decision writes the no-decision traits. ' +
    'Safe to repeat.',
  risk: 'write',
  toolset: 'segment',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.optional().describe("Also report this abuse type's decision."),
  }),
  output: z.object({
    user_id: z.string(),
    segment_user_id: z.string().describe('Mapped Segment user id.'),
    decision: currentDecisionSummary.nullable().describe('The most severe current one.'),
    abuse_type_decision: currentDecisionSummary.nullable().optional().describe('With abuse_type.'),
    traits_written: z.record(z.string(), traitValue),
    event_written: z.object({ event: z.string(), properties: z.record(z.string(), traitValue) }),
    message_ids: z.object({ identify: z.string(), track: z.string() }),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  async plan(args, ctx) {
    const { segmentUser, traits, event, properties } = await plannedWrites(
      args.user_id,
      args.abuse_type,
      ctx,
    );
    const profile = await ctx.clients.segment.getProfileTraits(segmentUser, { signal: ctx.signal });
    const current = Object.fromEntries(Object.keys(traits).map((k) => [k, profile?.[k] ?? null]));
    return {
      current: { segment_user_id: segmentUser, traits: current },
      changes: { traits, track: { event, properties } },
    };
  },
  async run(args, ctx) {
    const { segmentUser, decision, reported, effect, traits, properties, ids } = await plannedWrites(
      args.user_id,
      args.abuse_type,
      ctx,
    );
    await ctx.clients.segment.identify(
      { userId: segmentUser, traits, messageId: ids.identify },
      { signal: ctx.signal },
    );
    await ctx.clients.segment.track(
      { userId: segmentUser, event: effect.segment_event, properties, messageId: ids.track },
      { signal: ctx.signal },
    );
    return {
      user_id: args.user_id,
      segment_user_id: segmentUser,
      decision: decision ? currentDecisionSummary.parse(decision) : null,
      ...(reported === undefined
        ? {}
        : { abuse_type_decision: reported ? currentDecisionSummary.parse(reported) : null }),
      traits_written: traits,
      event_written: { event: effect.segment_event, properties },
      message_ids: ids,
    };
  },
});
