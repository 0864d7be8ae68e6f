import { createHash } from 'node:crypto';
import * as z from 'zod';
import { NotFoundError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { abuseType, chosenScore, segmentUserIdFor, summarizeScore, userId } from './schemas.ts';
import { currentDecisions, latestDecision } from './decision-state.ts';
import { salesforceId } from './salesforce-common.ts';

const EVENTS = ['score_evaluated', 'decision_applied', 'label_applied'] as const;
type FraudEvent = (typeof EVENTS)[number];

/** The warehouse columns: every event has the same typed properties, null where they do not apply. */
const properties = z.strictObject({
  source: z.literal('sift'),
  abuse_type: z.string().nullable(),
  sift_score: z.number().int().min(0).max(100).nullable(),
  risk_band: z.enum(['low', 'medium', 'high', 'critical']).nullable(),
  decision_id: z.string().nullable(),
  decision_category: z.string().nullable(),
  is_bad: z.boolean().nullable(),
  outcome_at: z.string().nullable().describe('When Sift recorded the outcome (ISO 8601), when known.'),
  case_id: z.string().nullable(),
});
type Properties = z.infer<typeof properties>;

const EMPTY: Properties = {
  source: 'sift',
  abuse_type: null,
  sift_score: null,
  risk_band: null,
  decision_id: null,
  decision_category: null,
  is_bad: null,
  outcome_at: null,
  case_id: null,
};

const isoFromSiftTime = (t: number | undefined) =>
  // Sift mixes seconds and milliseconds across APIs; anything before 2001 in ms is taken as seconds.
  t === undefined ? null : new Date(t < 1e12 ? t * 1000 : t).toISOString();

/**
 * The outcome read from Sift for one event kind; the model names the kind, Sift supplies the facts.
 * `at`: when Sift says the outcome happened (a score's computation time), where it says.
 */
async function outcome(
  event: FraudEvent,
  args: { user_id: string; abuse_type?: string; case_id?: string },
  ctx: ToolContext,
): Promise<{ facts: Properties; at: string | number | null }> {
  const base = { ...EMPTY, case_id: args.case_id ?? null };
  if (event === 'decision_applied') {
    // An event reports the decision applied last (of the abuse type, if given), not the user's state.
    const decision = latestDecision(await currentDecisions(args.user_id, ctx), args.abuse_type);
    if (!decision) throw new NotFoundError(`Sift user ${args.user_id} has no current decision to report.`);
    const facts = {
      ...base,
      abuse_type: decision.abuse_type,
      decision_id: decision.decision_id,
      decision_category: decision.category,
      outcome_at: decision.decided_at,
    };
    return { facts, at: facts.outcome_at };
  }
  const raw = await ctx.clients.sift.getUserScore(args.user_id, { signal: ctx.signal });
  const summary = summarizeScore(raw, ctx.config.risk_bands);
  if (event === 'score_evaluated') {
    const chosen = chosenScore(raw, summary, args.abuse_type);
    if (!chosen)
      throw new NotFoundError(`Sift has no ${args.abuse_type ?? ''} score for user ${args.user_id}.`);
    const { entry, time } = chosen;
    const facts = {
      ...base,
      abuse_type: entry.abuse_type,
      sift_score: entry.sift_score,
      risk_band: entry.risk_band,
    };
    return { facts, at: time ?? null };
  }
  const labels = summary.latest_labels.filter((l) => !args.abuse_type || l.abuse_type === args.abuse_type);
  const label = labels.sort((a, b) => (b.time ?? 0) - (a.time ?? 0))[0];
  if (!label) throw new NotFoundError(`Sift user ${args.user_id} has no label to report.`);
  const facts = {
    ...base,
    abuse_type: label.abuse_type,
    is_bad: label.is_bad,
    outcome_at: isoFromSiftTime(label.time),
  };
  return { facts, at: facts.outcome_at };
}

async function prepare(
  args: { user_id: string; event: FraudEvent; abuse_type?: string; case_id?: string },
  ctx: ToolContext,
) {
  const segmentUser = await segmentUserIdFor(args.user_id, ctx);
  const { facts: read, at } = await outcome(args.event, args, ctx);
  const facts = properties.parse(read);
  // Column names are the mapping's (mapping.track_properties); the facts are always the same set.
  const names = ctx.config.mapping.track_properties;
  const props = Object.fromEntries(
    (Object.keys(facts) as (keyof Properties)[]).map((key) => [names[key], facts[key]]),
  );
  const name = ctx.config.mapping.track_events[args.event];
  // One outcome → one messageId: a retry, or a second report of the same outcome, is counted once
  // (Segment drops a messageId it has seen, ~24 h). The outcome's own time from Sift tells a new
  // outcome with the same facts (a score back at an earlier value) from a repeat. Without a time the
  // key is the outcome alone, not the call's idempotency key (fresh for each direct call, so an agent's
  // retry would be counted twice): a score back at an earlier value within Segment's ~24 h window is
  // then deduplicated too, the lesser error for a counted event. (sync_score_to_segment, whose repeat
  // only rewrites the same traits, keeps the call's key.)
  const occurrence = at === null ? 'at:unknown' : `at:${at}`;
  const messageId = `fg-evt-${createHash('sha256')
    .update([args.user_id, segmentUser, name, JSON.stringify(props), occurrence].join('\u0000'))
    .digest('hex')
    .slice(0, 40)}`;
  return { segmentUser, name, props, messageId };
}

export const trackFraudEvent = defineTool({
  name: 'track_fraud_event',
  title: 'Record a Sift outcome as a Segment track event',
  description:
    'Send a Sift outcome (score_evaluated, decision_applied or label_applied, facts read from Sift) ' +
    'to Segment as a track event for analytics. NOT_FOUND without such an outcome. Counted once ' +
    'however often sent.',
  risk: 'write',
  toolset: 'segment',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    event: z.enum(EVENTS).describe('Which Sift outcome to record.'),
    abuse_type: abuseType.optional().describe('Default: riskiest score, latest outcome.'),
    case_id: salesforceId('Case', '500')
      .optional()
      .describe('The Salesforce fraud case (500…), for warehouse joins.'),
  }),
  output: z.object({
    user_id: z.string(),
    segment_user_id: z.string().describe('Mapped Segment user id.'),
    event: z.string().describe('The Segment event name sent.'),
    properties: z
      .record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()]))
      .describe('The event properties (names per configuration).'),
    message_id: z.string(),
  }),
  target: (args) => `sift_user:${args.user_id}`,
  async plan(args, ctx) {
    const { name, props, messageId } = await prepare(args, ctx);
    return { current: {}, changes: { track: { event: name, properties: props, message_id: messageId } } };
  },
  async run(args, ctx) {
    const { segmentUser, name, props, messageId } = await prepare(args, ctx);
    await ctx.clients.segment.track(
      { userId: segmentUser, event: name, properties: props, messageId },
      { signal: ctx.signal },
    );
    return {
      user_id: args.user_id,
      segment_user_id: segmentUser,
      event: name,
      properties: props,
      message_id: messageId,
    };
  },
});
