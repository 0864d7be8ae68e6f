/**
 * fraudgate's mark on the Segment messages it writes, so that its Segment webhook knows them when
 * Segment's Webhooks destination delivers them back (contract triggers.md §1: the destination posts
 * every message the Tracking API accepted, fraudgate's own included). Without it a decision sync's
 * `identify` comes back as a Sift `$update_account`, which a Sift Workflow can answer with another
 * decision, whose sync comes back again: a loop through three systems.
 *
 * The mark is `context.fraudgate`: an HMAC of the message's type, user, messageId, event name and
 * payload (canonical JSON of its traits or properties) under a key derived from the audit key (which
 * every replica shares, so any replica knows another's writes). The payload is covered because the
 * mark is readable wherever the message goes (a destination, a warehouse): over the id alone, anyone
 * who read it could replay a different track for the same user under our id and mark once Segment's
 * dedupe window passed, and keep it from Sift. (v1 marks covered the id only and are no longer
 * accepted: during a rolling upgrade a message a previous-release replica wrote comes back as not
 * ours and reaches Sift once, as an `$update_account` or track with facts Sift already has.)
 * A messageId prefix would not do: browser and mobile clients choose their own messageIds, so
 * anyone could make their events look like ours and keep them from Sift. `context`, because Segment
 * hands it to Webhooks destinations as sent (triggers.md §1.1: "every call also carries the context
 * object"; Actions' default mapping is the whole event) and never makes it a profile trait, as
 * `traits` (identify) would; `context.traits` is the one part of context that is a user's, and the
 * mark is not in it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from '../governance/canonical-json.ts';
import type { SegmentClient } from './types.ts';
import { purposeKey } from '../governance/audit-key.ts';

/** The `context` key of the mark. */
export const SEGMENT_ORIGIN_FIELD = 'fraudgate';

// 128 bits: forging one means guessing it, one signed webhook delivery per try.
const MAC_BYTES = 16;
const VERSION = 'v2.';

/** What the mark covers: the same message under another type, user, id, event or payload is not ours. */
export interface SegmentOriginSubject {
  type: string;
  userId?: string | null | undefined;
  messageId: string;
  /** A track's event name. */
  event?: string | null | undefined;
  /** An identify's traits. */
  traits?: Record<string, unknown> | null | undefined;
  /** A track's properties. */
  properties?: Record<string, unknown> | null | undefined;
}

export interface SegmentOrigin {
  /** The mark for a message fraudgate writes (`context.fraudgate`). */
  tag(message: SegmentOriginSubject): string;
  /** Whether `context` carries this deployment's mark for `message` (a forged or stale one: false). */
  isOwn(message: SegmentOriginSubject, context: Record<string, unknown> | undefined): boolean;
}

/** `key`: the runtime's audit key. */
export function createSegmentOrigin(key: string | Buffer): SegmentOrigin {
  const originKey = purposeKey(key, 'fraudgate segment origin v1');
  const macOf = (m: SegmentOriginSubject) =>
    createHmac('sha256', originKey)
      .update(
        canonicalJson([
          m.type,
          m.userId ?? null,
          m.messageId,
          m.event ?? null,
          m.traits ?? null,
          m.properties ?? null,
        ]),
      )
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
    message: Omit<SegmentOriginSubject, 'type'> & { userId: string; context?: Record<string, unknown> },
  ) => ({
    ...message.context,
    [SEGMENT_ORIGIN_FIELD]: origin.tag({
      type,
      userId: message.userId,
      messageId: message.messageId,
      event: message.event,
      traits: message.traits,
      properties: message.properties,
    }),
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
