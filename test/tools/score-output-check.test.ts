/**
 * get_sift_score's results are checked by hand (`isExactOutput`, tools/schemas.ts) instead of being
 * copied through zod on every read. The hand check may only accept what the zod schema accepts and
 * gives back unchanged; anything zod would strip or refuse must go to zod. And real reads take the
 * hand-checked path (otherwise it would be dead code).
 */
import { isDeepStrictEqual } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { getSiftScore } from '../../tools/get-sift-score.ts';
import { summarizeScore } from '../../tools/schemas.ts';
import { DEFAULTS } from '../../src/config.ts';
import { SIFT_DEMO_USERS } from '../../src/sandbox/sift-demo-data.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const full = {
  user_id: 'u-1',
  refreshed: false,
  ...summarizeScore(
    {
      userId: 'u-1',
      scores: {
        payment_abuse: {
          score: 0.91,
          reasons: [{ name: 'UsersPerDevice', value: 4 }, { name: 'no value' }],
          time: 1736154000,
          percentiles: { last_7_days: 0.97, last_1_days: 0.5 },
        },
        account_abuse: { score: 0.12, reasons: [{ name: 'flag', value: true }] },
      },
      latestDecisions: {
        payment_abuse: {
          id: 'block_user_payment_abuse',
          category: 'block',
          source: 'MANUAL_REVIEW',
          time: 1,
        },
        account_abuse: { id: 'looks_ok_account_abuse', category: 'accept' },
      },
      latestLabels: { payment_abuse: { is_bad: true, description: 'card testing', time: 2 } },
    },
    DEFAULTS.risk_bands,
  ),
};

type Output = Record<string, unknown>;
const clone = (): Output => structuredClone(full) as Output;
// Variants reach into nested results freely: typing each path would only hide what is changed.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const with_ = (change: (o: Record<string, any>) => void): Output => {
  const o = clone();
  change(o);
  return o;
};

const variants: [string, unknown][] = [
  ['a full result', clone()],
  [
    'no scores',
    { user_id: 'u', refreshed: true, highest: null, scores: [], latest_decisions: [], latest_labels: [] },
  ],
  ['decision fields present but undefined', with_((o) => (o.latest_decisions[1].source = undefined))],
  ['an extra top-level key', with_((o) => (o.raw = { email: 'a@b.example' }))],
  ['an extra key in a score entry', with_((o) => (o.scores[0].email = 'a@b.example'))],
  ['an extra key in highest', with_((o) => (o.highest.extra = 1))],
  ['an extra key in a reason', with_((o) => (o.scores[0].reasons[0].details = { a: 1 }))],
  ['an extra key in a decision', with_((o) => (o.latest_decisions[0].analyst = 'x'))],
  ['an extra key in a label', with_((o) => (o.latest_labels[0].by = 'x'))],
  ['an unknown percentile window', with_((o) => (o.scores[0].percentiles.last_99_days = 0.5))],
  ['a percentile of -1', with_((o) => (o.scores[0].percentiles.last_7_days = -1))],
  ['a percentile above 1', with_((o) => (o.scores[0].percentiles.last_7_days = 1.5))],
  ['percentiles not an object', with_((o) => (o.scores[0].percentiles = [0.5]))],
  ['score above 1', with_((o) => (o.scores[0].score = 1.2))],
  ['score NaN', with_((o) => (o.scores[0].score = Number.NaN))],
  ['score Infinity', with_((o) => (o.scores[0].score = Number.POSITIVE_INFINITY))],
  ['score as text', with_((o) => (o.scores[0].score = '0.9'))],
  ['sift_score not an integer', with_((o) => (o.scores[0].sift_score = 90.5))],
  ['sift_score above 100', with_((o) => (o.scores[0].sift_score = 101))],
  ['sift_score negative', with_((o) => (o.scores[0].sift_score = -1))],
  ['unknown risk band', with_((o) => (o.scores[0].risk_band = 'extreme'))],
  ['reason value null', with_((o) => (o.scores[0].reasons[0].value = null))],
  ['reason value an object', with_((o) => (o.scores[0].reasons[0].value = { n: 1 }))],
  ['reason without a name', with_((o) => delete o.scores[0].reasons[0].name)],
  ['reasons not an array', with_((o) => (o.scores[0].reasons = {}))],
  ['highest missing', with_((o) => delete o.highest)],
  ['highest not an entry', with_((o) => (o.highest = 'payment_abuse'))],
  ['scores missing', with_((o) => delete o.scores)],
  ['a score entry null', with_((o) => (o.scores[1] = null))],
  ['decision time as text', with_((o) => (o.latest_decisions[0].time = '1'))],
  ['decision without category', with_((o) => delete o.latest_decisions[0].category)],
  ['label is_bad as text', with_((o) => (o.latest_labels[0].is_bad = 'true'))],
  ['label description a number', with_((o) => (o.latest_labels[0].description = 7))],
  ['user_id missing', with_((o) => delete o.user_id)],
  ['refreshed as text', with_((o) => (o.refreshed = 'false'))],
  ['an array', [full]],
  ['null', null],
];

describe('get_sift_score output check', () => {
  it.each(variants)('%s', (_name, value) => {
    const parsed = getSiftScore.output.safeParse(value);
    if (getSiftScore.isExactOutput!(value)) {
      // Accepted as it is only when zod accepts it and gives it back unchanged.
      expect(parsed.success).toBe(true);
      expect(isDeepStrictEqual(parsed.data, value)).toBe(true);
    }
    // Everything zod would change or refuse is left to zod.
    if (!parsed.success || !isDeepStrictEqual(parsed.data, value))
      expect(getSiftScore.isExactOutput!(value)).toBe(false);
  });

  it('accepts the results summarizeScore builds', () => {
    expect(getSiftScore.isExactOutput!(full)).toBe(true);
  });
});

describe('get_sift_score through an MCP client', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    vi.restoreAllMocks();
    await env?.close();
    env = undefined;
  });

  it('answers every demo user without copying the result through zod, and the client accepts it', async () => {
    env = await setup();
    const parse = vi.spyOn(getSiftScore.output, 'safeParse');
    for (const user of SIFT_DEMO_USERS) {
      const result = await env.callTool('get_sift_score', { user_id: user.userId });
      expect(result.isError).toBe(false);
      expect(result.output.user_id).toBe(user.userId);
      // The same result zod would give (the client has validated it against the output schema too).
      expect(getSiftScore.output.parse(result.output)).toEqual(result.output);
    }
    // The pipeline never needed zod's copy for these results.
    expect(parse).not.toHaveBeenCalled();
  });
});
