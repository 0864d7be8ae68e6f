/**
 * Identity everywhere (issue 9 item 7): every Segment write for a Sift user goes to the Segment
 * user id the identity map gives (stored mapping, config mapping, or the Sift id itself), never to
 * the raw Sift id once a mapping exists; under `mapped_only` an unmapped user is refused with
 * nothing written.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
afterEach(async () => {
  await env?.close();
});

const segmentPosts = (e: TestEnv) => e.sandbox.segment.journal.filter((j) => j.method === 'POST');

describe('Segment writes honour the identity map', () => {
  it('sync_decision_to_segment, sync_score_to_segment, track_fraud_event and suppress_user all write to the mapped profile', async () => {
    env = await setup({ config: { approvals: { tools: { suppress_user: 'none' } } } });
    await env.runtime.identities.map({
      sift_user_id: 'sandbox-watch',
      segment_user_id: 'seg-watch-777',
      mapped_by: 'ops@example.com',
      mapped_at: new Date().toISOString(),
    });
    const before = env.sandbox.segment.eventsFor('sandbox-watch').length;

    const decision = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-watch' });
    expect(decision.error).toBeUndefined();
    expect(decision.output.segment_user_id).toBe('seg-watch-777');
    const score = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-watch' });
    expect(score.output.segment_user_id).toBe('seg-watch-777');
    const tracked = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-watch',
      event: 'decision_applied',
    });
    expect(tracked.output.segment_user_id).toBe('seg-watch-777');
    const suppressed = await env.callTool('suppress_user', {
      user_id: 'sandbox-watch',
      reason: 'chargeback confirmed',
    });
    expect(suppressed.error).toBeUndefined();
    expect(suppressed.output.segment_user_id).toBe('seg-watch-777');

    const mapped = env.sandbox.segment.eventsFor('seg-watch-777');
    // decision: identify + track; score: identify; track_fraud_event: track; suppress: identify + track.
    expect(mapped.filter((e) => e.type === 'identify')).toHaveLength(3);
    expect(mapped.filter((e) => e.type === 'track')).toHaveLength(3);
    expect(env.sandbox.segment.eventsFor('sandbox-watch')).toHaveLength(before);
    expect(env.sandbox.segment.profile('seg-watch-777')).toMatchObject({
      fraud_decision: 'watch',
      sift_score: 62,
      suppressed_for_fraud: true,
    });
  });

  it('a config mapping is honoured too, and the dry run names the profile it would write', async () => {
    env = await setup({ config: { identity: { mappings: { 'sandbox-high-risk': 'seg-high-1' } } } });
    const dry = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk', dry_run: true });
    expect(dry.output).toMatchObject({ current: { segment_user_id: 'seg-high-1' } });
    const real = await env.callTool('sync_score_to_segment', { user_id: 'sandbox-high-risk' });
    expect(real.output.segment_user_id).toBe('seg-high-1');
    expect(env.sandbox.segment.profile('seg-high-1')).toMatchObject({ sift_score: 94 });
  });

  it('mapped_only without a mapping: NOT_FOUND, nothing reaches Segment', async () => {
    env = await setup({ config: { identity: { segment_user_id: 'mapped_only' } } });
    for (const [tool, args] of [
      ['sync_decision_to_segment', { user_id: 'sandbox-watch' }],
      ['sync_score_to_segment', { user_id: 'sandbox-watch' }],
      ['track_fraud_event', { user_id: 'sandbox-watch', event: 'score_evaluated' }],
    ] as const) {
      const result = await env.callTool(tool, args);
      expect(result.error?.code, tool).toBe('NOT_FOUND');
      expect(result.error.message).toContain('mapped_only');
    }
    expect(segmentPosts(env)).toHaveLength(0);
  });
});
