import { createHash } from 'node:crypto';
import * as z from 'zod';
import type { SiftUserDecisionStatus } from '../src/clients/types.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { abuseType, userId, currentDecisionSummary, segmentUserIdFor } from './schemas.ts';

const traitValue = z.union([z.string(), z.number(), z.boolean(), z.null()]);

/** Segment messageIds must be < 100 chars and the same for the same decision, so a retried sync is deduplicated. */
function messageId(kind: string, parts: (string | number)[]): string {
  return `fg-${kind}-${createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 40)}`;
}

/** The user's current decision (for one abuse type, or the most recent across all) with its category. */
export async function currentDecision(user: string, type: string | undefined, ctx: ToolContext) {
  const statuses = await ctx.clients.sift.getUserDecisions(user, { signal: ctx.signal });
  const candidates = statuses.filter((s) => type === undefined || s.abuseType === type);
  const latest = candidates.reduce<SiftUserDecisionStatus | undefined>(
    (a, b) => (a && a.time >= b.time ? a : b),
    undefined,
  );
  if (!latest) return undefined;
  const catalogue = await ctx.clients.sift.listDecisions({ entityType: 'user' }, { signal: ctx.signal });
  const definition = catalogue.find((d) => d.id === latest.decisionId);
  return {
    decision_id: latest.decisionId,
    abuse_type: latest.abuseType,
    // A decision missing from the catalogue was deleted in the Sift console; treat it as a watch, the safe middle.
    category: definition?.category ?? ('watch' as const),
    decided_at: new Date(latest.time).toISOString(),
    time: latest.time,
  };
}

/** What a sync writes for the user's current decision; shared by the dry run and the real run. */
async function plannedWrites(user: string, type: string | undefined, ctx: ToolContext) {
  const segmentUser = await segmentUserIdFor(user, ctx);
  const decision = await currentDecision(user, type, ctx);
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
  return { segmentUser, decision, effect, traits, properties, ids, event: effect.segment_event };
}

export const syncDecisionToSegment = defineTool({
  name: 'sync_decision_to_segment',
  title: "Sync a user's Sift decision to Segment",
  description:
    "Copy a user's current Sift decision (read from Sift) to their Segment profile as mapped traits " +
    'plus a track event; no decision writes the no-decision traits. Safe to repeat.',
  risk: 'write',
  toolset: 'segment',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_type: abuseType.optional().describe('Default: the latest decision.'),
  }),
  output: z.object({
    user_id: z.string(),
    segment_user_id: z.string().describe('Mapped Segment user id.'),
    decision: currentDecisionSummary.nullable(),
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
    const { segmentUser, decision, effect, traits, properties, ids } = await plannedWrites(
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
      traits_written: traits,
      event_written: { event: effect.segment_event, properties },
      message_ids: ids,
    };
  },
});
