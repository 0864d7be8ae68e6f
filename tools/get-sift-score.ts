import * as z from 'zod';
import { defineTool } from '../src/tool.ts';
import {
  abuseTypes,
  hasScoreSummary,
  isUserId,
  onlyKeys,
  latestDecision,
  latestLabel,
  scoreEntry,
  summarizeScore,
  userId,
} from './schemas.ts';
import { isObject } from '../src/is-object.ts';

const COMMON_ARGUMENT_KEYS = new Set(['user_id', 'refresh']);
const OUTPUT_KEYS = new Set([
  'user_id',
  'refreshed',
  'highest',
  'scores',
  'latest_decisions',
  'latest_labels',
]);

export const getSiftScore = defineTool({
  name: 'get_sift_score',
  title: 'Get Sift risk score',
  description:
    "A user's Sift risk per abuse type: score (0–1 and the console's 0–100), risk band, reasons, " +
    'latest decisions and labels. refresh=true rescores first. Unknown user: NOT_FOUND.',
  risk: 'read',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({
    user_id: userId,
    abuse_types: abuseTypes.optional().describe('Only these abuse types; default all.'),
    refresh: z.boolean().default(false).describe('Rescore first.'),
  }),
  output: z.object({
    user_id: z.string(),
    refreshed: z.boolean(),
    highest: scoreEntry.nullable().describe('The riskiest abuse type; null: no scores.'),
    scores: z.array(scoreEntry),
    latest_decisions: z.array(latestDecision),
    latest_labels: z.array(latestLabel),
  }),
  // The common call, `{ user_id }` with maybe `refresh`, without zod (abuse_types and refusals go to zod).
  exactArguments(raw) {
    if (!isObject(raw) || !onlyKeys(raw, COMMON_ARGUMENT_KEYS)) return undefined;
    const { user_id, refresh = false } = raw;
    if (!isUserId(user_id) || typeof refresh !== 'boolean') return undefined;
    return { user_id, refresh };
  },
  isExactOutput: (value) =>
    isObject(value) &&
    onlyKeys(value, OUTPUT_KEYS) &&
    typeof value.user_id === 'string' &&
    typeof value.refreshed === 'boolean' &&
    hasScoreSummary(value),
  target: (args) => `sift_user:${args.user_id}`,
  async run(args, ctx) {
    const score = await ctx.clients.sift.getUserScore(args.user_id, {
      abuseTypes: args.abuse_types,
      refresh: args.refresh,
      signal: ctx.signal,
    });
    return {
      user_id: args.user_id,
      refreshed: args.refresh,
      ...summarizeScore(score, ctx.config.risk_bands),
    };
  },
});
