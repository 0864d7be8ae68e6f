/**
 * fraudgate's mark on the Segment messages it writes, so that its Segment webhook knows them when
 * Segment's Webhooks destination delivers them back (contract triggers.md §1: the destination posts
 * every message the Tracking API accepted, fraudgate's own included). Without it a decision sync's
 * `identify` comes back as a Sift `$update_account`, which a Sift Workflow can answer with another
 * decision, whose sync comes back again: a loop through three systems.
 *
 * The mark is `context.fraudgate`: an HMAC of the message's type, user and messageId under a key
 * derived from the audit key (which every replica shares, so any replica knows another's writes).
 * A messageId prefix would not do: browser and mobile clients choose their own messageIds, so
 * anyone could make their events look like ours and keep them from Sift. `context`, because Segment
 * hands it to Webhooks destinations as sent (triggers.md §1.1: "every call also carries the context
 * object"; Actions' default mapping is the whole event) and never makes it a profile trait, as
 * `traits` (identify) would; `context.traits` is the one part of context that is a user's, and the
 * mark is not in it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SegmentClient } from './types.ts';

/** The `context` key of the mark. */
export const SEGMENT_ORIGIN_FIELD = 'fraudgate';

// 128 bits: forging one means guessing it, one signed webhook delivery per try.
const MAC_BYTES = 16;
const VERSION = 'v1.';

/** What the mark covers: the same message under another type, user or id is not ours. */
export interface SegmentOriginSubject {
  type: string;
  userId?: string | null | undefined;
  messageId: string;
}

export interface SegmentOrigin {
  /** The mark for a message fraudgate writes (`context.fraudgate`). */
  tag(message: SegmentOriginSubject): string;
  /** Whether `context` carries this deployment's mark for `message` (a forged or stale one: false). */
  isOwn(message: SegmentOriginSubject, context: Record<string, unknown> | undefined): boolean;
}

/** `key`: the runtime's audit key. */
export function createSegmentOrigin(key: string | Buffer): SegmentOrigin {
  // A key of its own, so a mark never equals an audit hash or a cursor seal of the same text.
  const originKey = createHmac('sha256', key).update('fraudgate segment origin v1').digest();
  const macOf = (m: SegmentOriginSubject) =>
    createHmac('sha256', originKey)
      .update(JSON.stringify([m.type, m.userId ?? null, m.messageId]))
      .digest()
      .subarray(0, MAC_BYTES);
  return {
    tag: (message) => VERSION + macOf(message).toString('base64url'),
    isOwn(message, context) {
      const value = context?.[SEGMENT_ORIGIN_FIELD];
      if (typeof value !== 'string' || !value.startsWith(VERSION)) return false;
      const given = Buffer.from(value.slice(VERSION.length), 'base64url');
      return given.length === MAC_BYTES && timingSafeEqual(given, macOf(message));
    },
  };
}

/** `client` with every identify and track it sends marked as fraudgate's (`context.fraudgate`). */
export function originMarkingSegment(client: SegmentClient, origin: SegmentOrigin): SegmentClient {
  const context = (
    type: string,
    message: { userId: string; messageId: string; context?: Record<string, unknown> },
  ) => ({
    ...message.context,
    [SEGMENT_ORIGIN_FIELD]: origin.tag({ type, userId: message.userId, messageId: message.messageId }),
  });
  return {
    ...client,
    identify: (message, options) =>
      client.identify({ ...message, context: context('identify', message) }, options),
    track: (message, options) => client.track({ ...message, context: context('track', message) }, options),
    getProfileTraits: (userId, options) => client.getProfileTraits(userId, options),
    close: () => client.close(),
  };
}
