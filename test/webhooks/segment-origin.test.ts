/**
 * fraudgate's own Segment writes come back: Segment's Webhooks destination delivers every message the
 * Tracking API accepted, the identify and track of a decision sync included. Sent to Sift again
 * (identify → `$update_account`), a Sift Workflow deciding on it would loop through the three
 * systems. They carry fraudgate's mark (`context.fraudgate`, an HMAC under a key from the audit key)
 * and are acknowledged, counted in one audit record and never stored; a mark a client made up, or
 * copied onto another message, is no mark.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SEGMENT_ORIGIN_FIELD } from '../../src/clients/segment-origin.ts';
import { sendSegmentWebhook } from '../../src/sandbox/segment-webhook-sender.ts';
import { decisionBody, outboxEnv, sign, startSegmentIntake, type OutboxEnv } from '../outbox/helpers.ts';

const SECRET = 'segment-shared-secret';
const USER = 'sandbox-high-risk';

let env: OutboxEnv | undefined;
let intake: { url: string; close(): Promise<void> } | undefined;
afterEach(async () => {
  await intake?.close();
  intake = undefined;
  await env?.close();
  env = undefined;
});

const siftEffects = async (e: OutboxEnv) =>
  (await e.automation.store.list({ limit: 100 })).filter((x) => x.tool === 'send_sift_event');

describe("fraudgate's own Segment messages delivered back by Segment", () => {
  it('a decision sync echoed by the Webhooks destination is not sent to Sift; forged marks are processed normally', async () => {
    env = await outboxEnv();
    const e = env;
    intake = await startSegmentIntake(e, SECRET);

    // A Sift Workflow decides; the outbox syncs the decision to Segment (identify + track).
    const { time } = await e.sandbox.sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: USER,
    });
    const body = decisionBody(USER, 'watch_user_payment_abuse', time);
    expect((await e.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await e.automation.worker.drain({ timeoutMs: 20_000 })).toBe(true);
    const written = e.sandbox.segment.eventsFor(USER).map((m) => m.raw);
    expect(written.map((m) => m.type).sort()).toEqual(['identify', 'track']);
    const identify = written.find((m) => m.type === 'identify')!;
    expect((identify.context as Record<string, unknown>)[SEGMENT_ORIGIN_FIELD]).toMatch(/^v2\.[\w-]{22}$/);

    // Segment's Webhooks destination delivers both back, as accepted (context and all).
    const echoed = await sendSegmentWebhook(intake.url, written, { secret: SECRET });
    expect(echoed).toMatchObject({ status: 200, body: { accepted: 0, ignored: 2, own: 2 } });
    expect(await siftEffects(e)).toEqual([]);
    const ignoredRecords = (await e.auditRecords()).filter(
      (r) => r.event === 'webhook_ignored',
    ) as unknown as {
      args_redacted: { own_messages: number; message_ids: string[] };
    }[];
    // One record for the delivery, counting both.
    expect(ignoredRecords.map((r) => r.args_redacted)).toEqual([
      { own_messages: 2, message_ids: written.map((m) => m.messageId) },
    ]);

    // A browser choosing its own messageId cannot borrow the mark: copied onto another message, a
    // made-up one, or an `fg-` id without any, each is an ordinary identify → $update_account.
    const mark = (identify.context as Record<string, unknown>)[SEGMENT_ORIGIN_FIELD] as string;
    const forged = [
      { ...identify, messageId: 'browser-1' },
      { ...identify, messageId: 'browser-2', context: { [SEGMENT_ORIGIN_FIELD]: `v2.${'A'.repeat(22)}` } },
      { ...identify, messageId: `fg-${String(identify.messageId)}-x`, context: {} },
      { ...identify, messageId: 'browser-3', context: { [SEGMENT_ORIGIN_FIELD]: mark.slice(0, -1) } },
    ];
    const processed = await sendSegmentWebhook(intake.url, forged, { secret: SECRET });
    expect(processed).toMatchObject({ status: 200, body: { accepted: 4, ignored: 0, own: 0 } });
    const effects = await siftEffects(e);
    expect(effects.map((x) => (x.args as { event: { event_type: string } }).event.event_type)).toEqual([
      'update_account',
      'update_account',
      'update_account',
      'update_account',
    ]);

    // Whoever can read the mark (a destination, a warehouse) cannot replay another payload under our
    // id and mark once Segment's dedupe window has passed: it covers the traits, event and properties.
    const track = written.find((m) => m.type === 'track')!;
    const replayed = [
      { ...identify, traits: { ...(identify.traits as Record<string, unknown>), sift_score: 1 } },
      { ...track, properties: { ...(track.properties as Record<string, unknown>), forged: true } },
      { ...track, event: 'Another Event' },
    ];
    const replay = await sendSegmentWebhook(intake.url, replayed, { secret: SECRET });
    // None is taken for ours: the identify goes to Sift, the tracks meet the mapping (no rule for them).
    expect(replay).toMatchObject({ status: 200, body: { accepted: 1, ignored: 2, own: 0 } });
    expect(await siftEffects(e)).toHaveLength(5);
  });
});
