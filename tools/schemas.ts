/**
 * Argument and result pieces shared by several tools, so one rule (e.g. Sift's user-id charset)
 * is written once and every tool names the field the same way.
 */
import * as z from 'zod';
import { ABUSE_TYPES, type SiftUserScore } from '../src/clients/types.ts';
import { NotFoundError } from '../src/errors.ts';
import { riskBandFor, type ToolContext } from '../src/tool.ts';

export const userId = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[A-Za-z0-9=.\-_+@:&^%!$]+$/, 'Sift user ids may only contain a-z A-Z 0-9 = . - _ + @ : & ^ % ! $')
  .describe('The Sift user id ($user_id), e.g. "sandbox-high-risk". Case-sensitive.');

export const abuseType = z.enum(ABUSE_TYPES).describe('Sift abuse type, e.g. payment_abuse.');

export const riskBand = z.enum(['low', 'medium', 'high', 'critical']);

export const reason = z.object({
  name: z.string(),
  value: z.union([z.string(), z.number(), z.boolean()]).optional(),
});

export const scoreEntry = z.object({
  abuse_type: z.string(),
  score: z.number().min(0).max(1).describe('Sift score 0–1, higher is riskier.'),
  sift_score: z
    .number()
    .int()
    .min(0)
    .max(100)
    .describe('The same score as the Sift console shows it, 0–100.'),
  risk_band: riskBand,
  reasons: z.array(reason),
});

export const latestDecision = z.object({
  abuse_type: z.string(),
  decision_id: z.string(),
  category: z.string(),
  source: z.string().optional(),
  time: z.number().optional(),
});

export const latestLabel = z.object({
  abuse_type: z.string(),
  is_bad: z.boolean(),
  description: z.string().optional(),
  time: z.number().optional(),
});

/** A user's current Sift decision as the sync tools report it. */
export const currentDecisionSummary = z.object({
  decision_id: z.string(),
  abuse_type: z.string(),
  category: z.string(),
  decided_at: z.string(),
});

export type ScoreEntry = z.infer<typeof scoreEntry>;

/** A Sift score response as tools report it: one entry per abuse type, riskiest first. */
export function summarizeScore(score: SiftUserScore, bands: ToolContext['config']['risk_bands']) {
  const scores: ScoreEntry[] = Object.entries(score.scores)
    .filter((entry): entry is [string, NonNullable<(typeof entry)[1]>] => entry[1] !== undefined)
    .map(([type, s]) => ({
      abuse_type: type,
      score: s.score,
      sift_score: Math.round(s.score * 100),
      risk_band: riskBandFor(s.score, bands),
      reasons: s.reasons.map((r) =>
        r.value === undefined ? { name: r.name } : { name: r.name, value: r.value },
      ),
    }))
    .sort((a, b) => b.score - a.score);
  const latest_decisions = Object.entries(score.latestDecisions).flatMap(([type, d]) =>
    d
      ? [
          {
            abuse_type: type,
            decision_id: d.id,
            category: String(d.category).toLowerCase(),
            source: d.source,
            time: d.time,
          },
        ]
      : [],
  );
  const latest_labels = Object.entries(score.latestLabels).flatMap(([type, l]) =>
    l ? [{ abuse_type: type, is_bad: l.is_bad, description: l.description, time: l.time }] : [],
  );
  return { scores, highest: scores[0] ?? null, latest_decisions, latest_labels };
}

/** Evidence an approver sees for an action on a Sift user: the score summary and current decisions. */
export async function siftEvidence(user: string, ctx: ToolContext): Promise<Record<string, unknown>> {
  const summary = summarizeScore(
    await ctx.clients.sift.getUserScore(user, { signal: ctx.signal }),
    ctx.config.risk_bands,
  );
  return {
    highest_score: summary.highest,
    scores: summary.scores.map(({ abuse_type, sift_score, risk_band }) => ({
      abuse_type,
      sift_score,
      risk_band,
    })),
    latest_decisions: summary.latest_decisions,
    latest_labels: summary.latest_labels,
  };
}

/**
 * The Segment user id every Segment write for a Sift user goes to: a stored mapping (`fraudgate
 * identities map`), else `identity.mappings`, else the Sift id itself (`identity.segment_user_id:
 * same`). Under `mapped_only` an unmapped user has no Segment profile to write to: NOT_FOUND.
 */
export async function segmentUserIdFor(siftUserId: string, ctx: ToolContext): Promise<string> {
  const mapped = await ctx.identities.segmentIdFor(siftUserId);
  if (!mapped) {
    throw new NotFoundError(
      `Sift user ${siftUserId} has no Segment user id: identity.segment_user_id is mapped_only and no ` +
        'mapping exists. An operator can add one; nothing was written.',
    );
  }
  return mapped.segment_user_id;
}
