/**
 * Argument and result pieces shared by several tools, so one rule (e.g. Sift's user-id charset)
 * is written once and every tool names the field the same way.
 */
import * as z from 'zod';
import {
  ABUSE_TYPES,
  SCORE_PERCENTILE_WINDOWS,
  type AbuseType,
  type SiftUserScore,
} from '../src/clients/types.ts';
import { NotFoundError } from '../src/errors.ts';
import { describedOutput, humanTime, riskBandFor, type ToolContext } from '../src/tool.ts';
import { isObject } from '../src/is-object.ts';

/** The characters Sift allows in a user id. */
export const USER_ID_CHARS = /^[A-Za-z0-9=.\-_+@:&^%!$]+$/;

export const userId = z
  .string()
  .min(1)
  .max(255)
  .regex(USER_ID_CHARS, 'Sift user ids may only contain a-z A-Z 0-9 = . - _ + @ : & ^ % ! $');

/** Whether `value` is a user id {@link userId} accepts as it is (for hand-written argument parses). */
export const isUserId = (value: unknown): value is string =>
  typeof value === 'string' && value.length >= 1 && value.length <= 255 && USER_ID_CHARS.test(value);

/** A phone number as people write it: digits, spaces, ( ) . - and an optional leading +. */
export const phoneNumber = z
  .string()
  .trim()
  .regex(/^\+?[0-9 ().-]{6,32}$/, 'a phone number: digits, spaces, ( ) . - and an optional leading +');

/**
 * Control characters (C0, DEL, C1: NUL, escapes, line breaks) and the bidi embeddings, overrides and
 * isolates that make text display other than it reads: nothing a name, label or note needs, and
 * they corrupt logs, CRM screens and the upstream's own parsing.
 */
const CONTROL_OR_BIDI = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u;

/**
 * Free text sent on to an upstream: `schema` refusing control and bidi-override characters. A
 * refinement, so `tools/list` pays no bytes for it.
 */
export const plainText = <T extends z.ZodString>(schema: T): T =>
  schema.refine((s) => !CONTROL_OR_BIDI.test(s), 'must not contain control or bidi-override characters');

export const abuseType = z.enum(ABUSE_TYPES);

/** A choice of abuse types: each at most once, so the list is bounded by the types Sift has. */
export const abuseTypes = z
  .array(abuseType)
  .min(1)
  .max(ABUSE_TYPES.length)
  .refine((types) => new Set(types).size === types.length, 'lists an abuse type more than once');

export const riskBand = z.enum(['low', 'medium', 'high', 'critical']);

export const reason = z.object({
  name: z.string(),
  value: z.union([z.string(), z.number(), z.boolean()]).optional(),
});

export const scoreEntry = z.object({
  abuse_type: z.string(),
  score: z.number().min(0).max(1).describe('Sift score 0–1, higher is riskier.'),
  sift_score: z.number().int().min(0).max(100).describe('As the Sift console shows it.'),
  risk_band: riskBand,
  reasons: z.array(reason),
  percentiles: z
    .partialRecord(z.enum(SCORE_PERCENTILE_WINDOWS), z.number().min(0).max(1))
    .optional()
    .describe('Where Sift sends them: rank 0–1 per window.'),
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

/**
 * get_sift_score's summary as other tools' results embed it: `tools/list` says where it comes from
 * instead of repeating its schema (src/wire-schema.ts).
 */
export const scoreSummaryFields = {
  highest: describedOutput(scoreEntry.nullable(), 'As in get_sift_score.'),
  scores: describedOutput(z.array(scoreEntry), 'As in get_sift_score.'),
  latest_decisions: describedOutput(z.array(latestDecision), 'As in get_sift_score.'),
  latest_labels: describedOutput(z.array(latestLabel), 'As in get_sift_score.'),
};

/** A user's current Sift decision as the sync tools report it. */
export const currentDecisionSummary = z.object({
  decision_id: z.string(),
  abuse_type: z.string(),
  category: z.string(),
  decided_at: z.string(),
});

export type ScoreEntry = z.infer<typeof scoreEntry>;

/**
 * A Sift score response as tools report it: one entry per abuse type, riskiest first (equal scores
 * keep Sift's order). Every read of a score passes here, so it is written as plain loops.
 */
export function summarizeScore(score: SiftUserScore, bands: ToolContext['config']['risk_bands']) {
  const scores: ScoreEntry[] = [];
  for (const type in score.scores) {
    const s = score.scores[type as AbuseType];
    if (s === undefined) continue;
    const reasons: ScoreEntry['reasons'] = [];
    for (const r of s.reasons)
      reasons.push(r.value === undefined ? { name: r.name } : { name: r.name, value: r.value });
    const entry: ScoreEntry = {
      abuse_type: type,
      score: s.score,
      sift_score: Math.round(s.score * 100),
      risk_band: riskBandFor(s.score, bands),
      reasons,
    };
    if (s.percentiles) entry.percentiles = s.percentiles;
    // Insertion in order (a handful of abuse types): after every entry at least as risky.
    let at = scores.length;
    while (at > 0 && scores[at - 1]!.score < entry.score) at -= 1;
    scores.splice(at, 0, entry);
  }
  const latest_decisions: z.infer<typeof latestDecision>[] = [];
  for (const type in score.latestDecisions) {
    const d = score.latestDecisions[type as AbuseType];
    if (d)
      latest_decisions.push({
        abuse_type: type,
        decision_id: d.id,
        category: String(d.category).toLowerCase(),
        source: d.source,
        time: d.time,
      });
  }
  const latest_labels: z.infer<typeof latestLabel>[] = [];
  for (const type in score.latestLabels) {
    const l = score.latestLabels[type as AbuseType];
    if (l)
      latest_labels.push({ abuse_type: type, is_bad: l.is_bad, description: l.description, time: l.time });
  }
  return { scores, highest: scores[0] ?? null, latest_decisions, latest_labels };
}

/**
 * The summarized score of `abuseType`, else (none asked for) the highest, with the time Sift
 * computed it from the raw answer (undefined when Sift leaves it out); undefined when there is no
 * such score.
 */
export function chosenScore(
  raw: SiftUserScore,
  summary: ReturnType<typeof summarizeScore>,
  abuseType: string | undefined,
): { entry: ScoreEntry; time: number | undefined } | undefined {
  const entry = abuseType ? summary.scores.find((s) => s.abuse_type === abuseType) : summary.highest;
  if (!entry) return undefined;
  return { entry, time: raw.scores[entry.abuse_type as AbuseType]?.time };
}

// Hand checks of summarizeScore's results, for get_sift_score's `isExactOutput` (src/tool.ts): every
// read of a score passes here, and zod's parse would copy the whole result to check it. Each is true
// only for a value the schema above accepts as it is (no key it would strip);
// test/tools/get-sift-score-hand-checks.test.ts holds them to the schemas.

const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isUnit = (v: unknown) => isFiniteNumber(v) && v >= 0 && v <= 1;
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v);
const isString = (v: unknown) => typeof v === 'string';
/** Whether every key of `value` is one of `keys` (zod would strip any other). */
export function onlyKeys(value: Record<string, unknown>, keys: ReadonlySet<string>): boolean {
  for (const key in value) if (!keys.has(key)) return false;
  return true;
}
const everyItem = (v: unknown, check: (item: unknown) => boolean) => Array.isArray(v) && v.every(check);

const REASON_KEYS = new Set(['name', 'value']);
const isReasonOutput = (r: unknown) =>
  isObject(r) &&
  onlyKeys(r, REASON_KEYS) &&
  isString(r.name) &&
  (r.value === undefined || isString(r.value) || isFiniteNumber(r.value) || typeof r.value === 'boolean');

const PERCENTILE_WINDOWS: ReadonlySet<string> = new Set(SCORE_PERCENTILE_WINDOWS);
const isPercentilesOutput = (p: unknown) => {
  if (!isObject(p)) return false;
  // zod's partialRecord refuses a window present with no value, so this does too.
  for (const key in p) if (!PERCENTILE_WINDOWS.has(key) || !isUnit(p[key])) return false;
  return true;
};

const RISK_BANDS: ReadonlySet<unknown> = new Set(riskBand.options);
const SCORE_ENTRY_KEYS = new Set([
  'abuse_type',
  'score',
  'sift_score',
  'risk_band',
  'reasons',
  'percentiles',
]);
const isScoreEntryOutput = (e: unknown) =>
  isObject(e) &&
  onlyKeys(e, SCORE_ENTRY_KEYS) &&
  isString(e.abuse_type) &&
  isUnit(e.score) &&
  Number.isSafeInteger(e.sift_score) &&
  (e.sift_score as number) >= 0 &&
  (e.sift_score as number) <= 100 &&
  RISK_BANDS.has(e.risk_band) &&
  everyItem(e.reasons, isReasonOutput) &&
  optional(e.percentiles, isPercentilesOutput);

const DECISION_KEYS = new Set(['abuse_type', 'decision_id', 'category', 'source', 'time']);
const isLatestDecisionOutput = (d: unknown) =>
  isObject(d) &&
  onlyKeys(d, DECISION_KEYS) &&
  isString(d.abuse_type) &&
  isString(d.decision_id) &&
  isString(d.category) &&
  optional(d.source, isString) &&
  optional(d.time, isFiniteNumber);

const LABEL_KEYS = new Set(['abuse_type', 'is_bad', 'description', 'time']);
const isLatestLabelOutput = (l: unknown) =>
  isObject(l) &&
  onlyKeys(l, LABEL_KEYS) &&
  isString(l.abuse_type) &&
  typeof l.is_bad === 'boolean' &&
  optional(l.description, isString) &&
  optional(l.time, isFiniteNumber);

/** The summary's four fields in `value` (other keys are the caller's to check). */
export function hasScoreSummary(value: Record<string, unknown>): boolean {
  return (
    (value.highest === null || isScoreEntryOutput(value.highest)) &&
    everyItem(value.scores, isScoreEntryOutput) &&
    everyItem(value.latest_decisions, isLatestDecisionOutput) &&
    everyItem(value.latest_labels, isLatestLabelOutput)
  );
}

/** Sift times are epoch ms (older samples: seconds); shown to people as `2026-11-30 14:05 UTC`. */
function readableSiftTime(time: number | undefined): string | undefined {
  if (time === undefined || !Number.isFinite(time) || time <= 0) return undefined;
  return humanTime(new Date(time < 1e12 ? time * 1000 : time).toISOString());
}

/** What an approval is about: the abuse type, the system written to and, in one sentence, the effect. */
export interface EvidenceFocus {
  /** The abuse type the call acts on; default: the user's riskiest. */
  abuseType?: AbuseType;
  system?: 'sift' | 'segment' | 'salesforce';
  /** One plain-language sentence: what approving will do. */
  effect?: string;
}

/**
 * What the key-name redactor would hash in {@link siftEvidence} but is not personal: Sift's reason
 * names (`UsersPerDevice`), which approvers read. A tool using it declares `redaction: { evidence: … }`.
 */
export const SIFT_EVIDENCE_NAMES = { notPersonal: ['score.reasons[].name'] } as const;

/**
 * Evidence an approver sees for an action on a Sift user, for the abuse type the call acts on (not
 * the riskiest one): its score, band and reasons, the decision and label currently in force, with
 * readable times, the other abuse types' scores for context, and `basis` — the band, decision and
 * label the approval rests on, which the pipeline re-reads just before executing (a change means
 * re-approval).
 */
export async function siftEvidence(
  user: string,
  ctx: ToolContext,
  focus: EvidenceFocus = {},
): Promise<Record<string, unknown>> {
  const raw = await ctx.clients.sift.getUserScore(user, { signal: ctx.signal });
  const summary = summarizeScore(raw, ctx.config.risk_bands);
  const type = (focus.abuseType ?? summary.highest?.abuse_type) as AbuseType | undefined;
  const entry = summary.scores.find((s) => s.abuse_type === type);
  const decision = type ? raw.latestDecisions[type] : undefined;
  const label = type ? raw.latestLabels[type] : undefined;
  return {
    ...(focus.effect ? { effect: focus.effect } : {}),
    system: focus.system ?? 'sift',
    user_id: user,
    abuse_type: type ?? null,
    score: entry
      ? { sift_score: entry.sift_score, risk_band: entry.risk_band, reasons: entry.reasons }
      : null,
    current_decision: decision
      ? {
          decision_id: decision.id,
          category: String(decision.category).toLowerCase(),
          ...(readableSiftTime(decision.time) ? { decided: readableSiftTime(decision.time) } : {}),
        }
      : null,
    current_label: label
      ? {
          is_bad: label.is_bad,
          ...(readableSiftTime(label.time) ? { labelled: readableSiftTime(label.time) } : {}),
        }
      : null,
    other_scores: summary.scores
      .filter((s) => s.abuse_type !== type)
      .map(({ abuse_type, sift_score, risk_band }) => ({ abuse_type, sift_score, risk_band })),
    basis: {
      risk_band: entry?.risk_band ?? null,
      decision_id: decision?.id ?? null,
      label: label ? (label.is_bad ? 'bad' : 'not_bad') : null,
    },
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
