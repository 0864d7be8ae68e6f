/**
 * get_sift_score's common arguments are parsed by hand (`exactArguments`) and its results checked by
 * hand (`isExactOutput`, tools/schemas.ts) instead of going through zod on every read. Each may only
 * accept what the zod schema accepts, giving exactly what zod gives; anything zod would change or
 * refuse must go to zod. And real reads take the hand-checked paths (otherwise they would be dead code).
 */
import { isDeepStrictEqual } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { getSiftScore } from '../../tools/get-sift-score.ts';
import { summarizeScore } from '../../tools/schemas.ts';
import { DEFAULTS } from '../../src/config.ts';
import { inputSchemaOf } from '../../src/tool.ts';
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
  ['a percentile window with no value', with_((o) => (o.scores[0].percentiles.last_5_days = undefined))],
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

const argumentVariants: [string, unknown][] = [
  ['a user id', { user_id: 'sandbox-high-risk' }],
  ['every allowed character', { user_id: 'Az09=.-_+@:&^%!$' }],
  ['refresh true', { user_id: 'u1', refresh: true }],
  ['refresh false', { user_id: 'u1', refresh: false }],
  ['abuse types (left to zod)', { user_id: 'u1', abuse_types: ['payment_abuse'] }],
  ['an empty abuse type list', { user_id: 'u1', abuse_types: [] }],
  ['a 255-character id', { user_id: 'a'.repeat(255) }],
  ['a 256-character id', { user_id: 'a'.repeat(256) }],
  ['an empty id', { user_id: '' }],
  ['a space in the id', { user_id: 'a b' }],
  ['a slash in the id', { user_id: 'a/b' }],
  ['a non-ASCII id', { user_id: 'ü' }],
  ['a numeric id', { user_id: 42 }],
  ['no id', {}],
  ['refresh as text', { user_id: 'u1', refresh: 'true' }],
  ['refresh null', { user_id: 'u1', refresh: null }],
  ['an unknown key', { user_id: 'u1', verbose: true }],
  ['dry_run on a read', { user_id: 'u1', dry_run: true }],
  ['a __proto__ key', JSON.parse('{"user_id":"u1","__proto__":{"refresh":true}}')],
  ['an array', [{ user_id: 'u1' }]],
  ['null', null],
  ['a string', 'u1'],
];

describe('get_sift_score argument parse', () => {
  it.each(argumentVariants)('%s', (_name, raw) => {
    const parsed = inputSchemaOf(getSiftScore).safeParse(raw);
    const exact = getSiftScore.exactArguments!(raw);
    if (exact !== undefined) {
      expect(parsed.success).toBe(true);
      expect(exact).toStrictEqual(parsed.data);
    }
    if (!parsed.success) expect(exact).toBeUndefined();
  });

  it('parses the common calls itself', () => {
    expect(getSiftScore.exactArguments!({ user_id: 'u1' })).toStrictEqual({ user_id: 'u1', refresh: false });
    expect(getSiftScore.exactArguments!({ user_id: 'u1', refresh: true })).toStrictEqual({
      user_id: 'u1',
      refresh: true,
    });
  });
});

describe('get_sift_score through an MCP client', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    vi.restoreAllMocks();
    await env?.close();
    env = undefined;
  });

  it('answers every demo user without zod for its arguments or result, and the client accepts it', async () => {
    env = await setup();
    const parse = vi.spyOn(getSiftScore.output, 'safeParse');
    const parseArguments = vi.spyOn(getSiftScore.input, 'safeParse');
    for (const user of SIFT_DEMO_USERS) {
      const result = await env.callTool('get_sift_score', { user_id: user.userId });
      expect(result.isError).toBe(false);
      expect(result.output.user_id).toBe(user.userId);
      // The same result zod would give (the client has validated it against the output schema too).
      expect(getSiftScore.output.parse(result.output)).toEqual(result.output);
    }
    // The pipeline never needed zod for these arguments and results.
    expect(parse).not.toHaveBeenCalled();
    expect(parseArguments).not.toHaveBeenCalled();
    // Arguments it does not parse itself still get zod's refusal, naming the field.
    const refused = await env.callTool('get_sift_score', { user_id: 'a b' });
    expect(refused.isError).toBe(true);
    expect(JSON.stringify(refused)).toContain('user_id');
    expect(parseArguments).toHaveBeenCalledTimes(1);
  });
});
