/**
 * The Segment playbook tools through a real MCP client against the emulators: traits and events
 * that reached Segment, deterministic messageIds (retries deduplicated), mapping changes without
 * code changes, dry runs and bad input writing nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const segmentPosts = (e: TestEnv) => e.sandbox.segment.journal.filter((j) => j.method === 'POST');

describe('sync_score_to_segment', () => {
  it('writes score, band and routing tier traits; a repeat is deduplicated', async () => {
    env = await setup();
    const result = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk' });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({ sift_score: 94, risk_band: 'critical', routing_tier: 'blocked' });
    expect(env.sandbox.segment.profile('sandbox-high-risk')).toMatchObject({
      sift_score: 94,
      sift_risk_level: 'critical',
      fraud_routing_tier: 'blocked',
      sift_score_abuse_type: 'payment_abuse',
    });
    const identifies = env.sandbox.segment
      .eventsFor('sandbox-high-risk')
      .filter((e) => e.type === 'identify');
    expect(identifies).toHaveLength(1);
    expect(identifies[0]?.messageId).toBe(result.output.message_id);

    const again = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk' });
    expect(again.output.message_id).toBe(result.output.message_id);
    expect(
      env.sandbox.segment.eventsFor('sandbox-high-risk').filter((e) => e.type === 'identify'),
    ).toHaveLength(1);
    expect(env.sandbox.segment.duplicates).toBe(1);
  });

  it('an abuse type Sift has not scored writes nothing: a blocked user stays blocked', async () => {
    env = await setup();
    const user = 'sandbox-high-risk';
    await env.callTool('sync_score_to_segment', { user_id: user });
    const posts = segmentPosts(env).length;
    const result = await env.callTool('sync_score_to_segment', {
      user_id: user,
      abuse_type: 'content_abuse',
    });
    expect(result.error.code).toBe('NOT_FOUND');
    expect(result.error.message).toContain('abuse_type');
    expect(result.error.message).toContain('payment_abuse');
    expect(segmentPosts(env)).toHaveLength(posts);
    expect(env.sandbox.segment.profile(user)).toMatchObject({
      sift_score: 94,
      sift_risk_level: 'critical',
      fraud_routing_tier: 'blocked',
    });
  });

  it('a score back at an earlier value (94 → 20 → 94) reaches the profile, not deduplicated', async () => {
    env = await setup();
    const user = 'sandbox-high-risk';
    const sync = () => env.callTool('sync_score_to_segment', { user_id: user, abuse_type: 'payment_abuse' });
    const first = await sync();
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.2);
    const lower = await sync();
    expect(lower.output).toMatchObject({ sift_score: 20, routing_tier: 'trusted' });
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.94);
    const back = await sync();
    expect(back.output).toMatchObject({ sift_score: 94, routing_tier: 'blocked' });
    expect(back.output.message_id).not.toBe(first.output.message_id);
    expect(env.sandbox.segment.duplicates).toBe(0);
    expect(env.sandbox.segment.profile(user)).toMatchObject({
      sift_score: 94,
      fraud_routing_tier: 'blocked',
    });
  });

  it('without score times from Sift, each call is its own sync: 94 → 20 → 94 still reaches the profile', async () => {
    env = await setup();
    env.sandbox.sift.setScoreTimes(false);
    const user = 'sandbox-high-risk';
    const sync = () => env.callTool('sync_score_to_segment', { user_id: user, abuse_type: 'payment_abuse' });
    await sync();
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.2);
    await sync();
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.94);
    const back = await sync();
    expect(back.output).toMatchObject({ sift_score: 94 });
    expect(env.sandbox.segment.duplicates).toBe(0);
    expect(env.sandbox.segment.profile(user)).toMatchObject({
      sift_score: 94,
      fraud_routing_tier: 'blocked',
    });
  });

  it('tiers and trait names follow the configured mapping without code changes', async () => {
    env = await setup({
      config: {
        mapping: {
          routing_tiers: { low: 'frictionless', medium: 'frictionless', high: 'manual', critical: 'manual' },
          score_traits: { routing_tier: 'risk_route' },
        },
      },
    });
    const result = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-low-risk' });
    expect(result.output).toMatchObject({ risk_band: 'low', routing_tier: 'frictionless' });
    expect(env.sandbox.segment.profile('sandbox-low-risk')).toMatchObject({ risk_route: 'frictionless' });
    const watch = await env.callTool('sync_score_to_segment', {
      user_id: 'sandbox-high-risk',
      abuse_type: 'account_abuse',
    });
    expect(watch.output).toMatchObject({ sift_score: 71, risk_band: 'high', routing_tier: 'manual' });
  });

  it('dry run reports current vs new traits and sends nothing; bad input names the field', async () => {
    env = await setup();
    const dry = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk', dry_run: true });
    expect(dry.output).toMatchObject({
      dry_run: true,
      current: { traits: { sift_risk_level: 'high' } },
      changes: { traits: { sift_risk_level: 'critical', fraud_routing_tier: 'blocked' } },
    });
    const bad = await env.callTool('sync_score_to_segment', { user_id: 'has space', abuse_type: 'nope' });
    expect(bad.error.code).toBe('INVALID_INPUT');
    expect(bad.error.message).toContain('user_id');
    expect(bad.error.message).toContain('abuse_type');
    expect(segmentPosts(env)).toHaveLength(0);
  });
});

describe('track_fraud_event', () => {
  it('sends the Sift decision as a structured track event, counted once', async () => {
    env = await setup();
    const result = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-blocked',
      event: 'decision_applied',
    });
    expect(result.error).toBeUndefined();
    const tracks = env.sandbox.segment.eventsFor('sandbox-blocked').filter((e) => e.type === 'track');
    expect(tracks).toHaveLength(1);
    expect(tracks[0]).toMatchObject({
      event: 'Sift Decision Applied',
      properties: {
        source: 'sift',
        decision_id: 'block_user_payment_abuse',
        decision_category: 'block',
        abuse_type: 'payment_abuse',
        sift_score: null,
      },
    });
    await env.callTool('track_fraud_event', { user_id: 'sandbox-blocked', event: 'decision_applied' });
    expect(env.sandbox.segment.eventsFor('sandbox-blocked').filter((e) => e.type === 'track')).toHaveLength(
      1,
    );
  });

  it('score events carry score and band; event names follow the configuration', async () => {
    env = await setup({
      config: { mapping: { track_events: { score_evaluated: 'fraud_score_evaluated' } } },
    });
    const result = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-watch',
      event: 'score_evaluated',
      case_id: env.sandbox.salesforce.demo?.openFraudCaseId,
    });
    expect(result.output).toMatchObject({
      event: 'fraud_score_evaluated',
      properties: {
        sift_score: 62,
        risk_band: 'high',
        case_id: env.sandbox.salesforce.demo?.openFraudCaseId,
      },
    });
    expect(env.sandbox.segment.eventsFor('sandbox-watch').at(-1)?.event).toBe('fraud_score_evaluated');
  });

  it('a score evaluated again at an earlier value is a new event; a repeat is counted once', async () => {
    env = await setup();
    const user = 'sandbox-high-risk';
    const evaluate = () =>
      env.callTool('track_fraud_event', {
        user_id: user,
        event: 'score_evaluated',
        abuse_type: 'payment_abuse',
      });
    const first = await evaluate();
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.2);
    await evaluate();
    env.sandbox.sift.setScore(user, 'payment_abuse', 0.94);
    const back = await evaluate();
    expect(back.output.message_id).not.toBe(first.output.message_id);
    expect(env.sandbox.segment.duplicates).toBe(0);
    const repeat = await evaluate();
    expect(repeat.output.message_id).toBe(back.output.message_id);
    expect(env.sandbox.segment.duplicates).toBe(1);
    const scores = env.sandbox.segment
      .eventsFor(user)
      .filter((e) => e.type === 'track')
      .map((e) => e.properties?.sift_score);
    expect(scores).toEqual([94, 20, 94]);
  });

  it('without score times from Sift, an agent repeating the call is still counted once', async () => {
    env = await setup();
    env.sandbox.sift.setScoreTimes(false);
    const user = 'sandbox-high-risk';
    const evaluate = () =>
      env.callTool('track_fraud_event', {
        user_id: user,
        event: 'score_evaluated',
        abuse_type: 'payment_abuse',
      });
    const first = await evaluate();
    const repeat = await evaluate();
    expect(repeat.output.message_id).toBe(first.output.message_id);
    expect(env.sandbox.segment.eventsFor(user).filter((e) => e.type === 'track')).toHaveLength(1);
  });

  it('no such outcome is NOT_FOUND; unknown events and dry runs send nothing', async () => {
    env = await setup();
    const none = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-low-risk',
      event: 'label_applied',
    });
    expect(none.error.code).toBe('NOT_FOUND');
    const bad = await env.callTool('track_fraud_event', { user_id: 'sandbox-low-risk', event: 'made_up' });
    expect(bad.error.code).toBe('INVALID_INPUT');
    expect(bad.error.message).toContain('event');
    const extra = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-low-risk',
      event: 'score_evaluated',
      properties: { sift_score: 1 },
    });
    expect(extra.error.code).toBe('INVALID_INPUT');
    const dry = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-low-risk',
      event: 'score_evaluated',
      dry_run: true,
    });
    expect(dry.output).toMatchObject({
      dry_run: true,
      changes: { track: { event: 'Sift Score Evaluated' } },
    });
    expect(segmentPosts(env)).toHaveLength(0);
  });
});

describe('Segment write key', () => {
  it('a wrong key is not visible on the write path: the sync succeeds and Segment drops the events', async () => {
    env = await setup({ secrets: { segmentWriteKey: 'wk-wrong-source-1' } });
    const before = env.sandbox.segment.profile('sandbox-high-risk');
    const result = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk' });
    expect(result.error).toBeUndefined();
    expect(env.sandbox.segment.events).toEqual([]);
    expect(env.sandbox.segment.profile('sandbox-high-risk')).toEqual(before);
    expect(env.sandbox.segment.rejected).toEqual([
      { reason: 'invalid_write_key', index: 0, messageId: result.output.message_id },
    ]);
  });

  it('a 401 from the Tracking API is a non-retryable error that asks to check the key, without it', async () => {
    env = await setup({ secrets: { segmentWriteKey: 'wk-wrong-source-1' } });
    env.sandbox.segment.refuseWriteKey(5);
    const result = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk' });
    expect(result.error).toMatchObject({ code: 'UPSTREAM_ERROR', retryable: false });
    expect(result.error.message).toContain('refused the write key');
    expect(JSON.stringify(result.raw)).not.toContain('wk-wrong-source-1');
    expect(env.sandbox.segment.events).toEqual([]);
  });
});
