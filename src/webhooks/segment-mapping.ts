/**
 * Segment → Sift: the central mapping (`mapping.segment_events`, `mapping.segment_identify`) turns
 * a Segment spec message (triggers.md §1, segment.md §1.3) into the arguments of one
 * `send_sift_event` call. Pure: no I/O, so the webhook can refuse a malformed message before
 * anything is stored, and the same message always maps to the same call.
 */
import type { Config } from '../config.ts';

/** The Segment message fields fraudgate reads; every other key is ignored (the contract lists them loosely). */
export interface SegmentMessage {
  type: string;
  messageId: string;
  userId?: string | null;
  anonymousId?: string | null;
  event?: string;
  properties?: Record<string, unknown>;
  traits?: Record<string, unknown>;
  context?: Record<string, unknown>;
  timestamp?: string;
}

export type SegmentRule = NonNullable<Config['mapping']['segment_identify']>;

/** Why a message maps to nothing (acknowledged, audited, not stored). */
export type Ignored = { ignored: string };

/** A message that cannot be mapped because a field is wrong: refused (alone in a batch; segment-webhook.ts). */
export class SegmentMessageError extends Error {}

const SIFT_ID = /^[A-Za-z0-9=.\-_+@:&^%!$]{1,255}$/;

const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;

/** Segment sends money as JSON numbers, but the classic webhook example sends "39.95": accept both. */
function decimal(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const raw = typeof value === 'number' ? String(value) : typeof value === 'string' ? value.trim() : '';
  if (!/^\d{1,20}(\.\d{1,20})?$/.test(raw)) {
    throw new SegmentMessageError(`properties.${field} must be a positive decimal amount`);
  }
  return raw;
}

/** The rule for a message, or why there is none. */
export function ruleFor(message: SegmentMessage, mapping: Config['mapping']): SegmentRule | Ignored {
  if (message.type === 'identify') {
    return mapping.segment_identify ?? { ignored: 'identify is not mapped (mapping.segment_identify)' };
  }
  if (message.type !== 'track') return { ignored: `${message.type} messages are not mapped` };
  const name = message.event ?? '';
  return Object.hasOwn(mapping.segment_events, name)
    ? (mapping.segment_events[name] as SegmentRule)
    : { ignored: `track event "${name}" is not in mapping.segment_events` };
}

/**
 * The `send_sift_event` arguments for a message already known to have a rule, for the Sift user it
 * resolved to. Throws SegmentMessageError naming the field when the message cannot be sent.
 */
export function siftEventArgs(
  message: SegmentMessage,
  rule: SegmentRule,
  siftUserId: string,
): Record<string, unknown> {
  const props = message.properties ?? {};
  const traits = { ...(message.context?.traits as Record<string, unknown> | undefined), ...message.traits };
  const context: Record<string, unknown> = {};
  const ip = text(message.context?.ip);
  if (ip) context.ip = ip;
  const userAgent = text(message.context?.userAgent);
  if (userAgent) context.user_agent = userAgent;
  const at = text(message.timestamp);
  if (at && !Number.isNaN(Date.parse(at))) context.occurred_at = new Date(at).toISOString();

  const person = () => {
    const out: Record<string, unknown> = {};
    const email = text(props.email) ?? text(traits.email);
    if (email) out.email = email;
    const phone = text(props.phone) ?? text(traits.phone);
    if (phone) out.phone = phone;
    const name =
      text(traits.name) ??
      ([text(props.first_name), text(props.last_name)].filter(Boolean).join(' ') || undefined);
    if (name) out.name = name;
    return out;
  };

  let event: Record<string, unknown>;
  switch (rule.sift_event) {
    case 'create_account':
    case 'update_account':
      event = { event_type: rule.sift_event, user_id: siftUserId, ...person(), ...context };
      break;
    case 'login': {
      const username = text(props.username);
      event = {
        event_type: 'login',
        user_id: siftUserId,
        login_status: rule.login_status ?? 'success',
        ...(username ? { username } : {}),
        ...context,
      };
      break;
    }
    case 'logout':
      event = { event_type: 'logout', user_id: siftUserId, ...context };
      break;
    case 'transaction': {
      const amount =
        decimal(props.total, 'total') ?? decimal(props.revenue, 'revenue') ?? decimal(props.value, 'value');
      if (amount === undefined) {
        throw new SegmentMessageError(
          'properties.total (or revenue, or value) is required for a transaction',
        );
      }
      const orderId = text(props.order_id);
      const checkoutId = text(props.checkout_id);
      const [id, idField] = orderId
        ? [orderId, 'properties.order_id']
        : checkoutId
          ? [checkoutId, 'properties.checkout_id']
          : [message.messageId, 'messageId'];
      if (!SIFT_ID.test(id)) {
        throw new SegmentMessageError(
          `${idField} is the Sift transaction id and has characters Sift refuses; ` +
            'send up to 255 letters, digits or = . - _ + @ : & ^ % ! $',
        );
      }
      event = {
        event_type: 'transaction',
        user_id: siftUserId,
        transaction_type: rule.transaction_type ?? 'withdrawal',
        transaction_status: rule.transaction_status ?? 'success',
        transaction_id: id,
        amount,
        currency: (text(props.currency) ?? 'USD').toUpperCase(),
        ...context,
      };
      break;
    }
  }
  return { event, ...(rule.return_score ? { return_score: true } : {}) };
}

/**
 * The Sift user ids for a delivery's Segment user ids, as the identity map reads backwards: a stored
 * mapping (`fraudgate identities map`; of several, the first by Sift id), else `identity.mappings`,
 * else — under `identity.segment_user_id: same` — the Segment id itself. One lookup of the stored
 * mappings per call, for the distinct ids only (`storedMappings`: the identity store's
 * `mappingsForSegmentUsers`). A Segment id with none that applies, or whose Sift id is not valid,
 * is absent from the map.
 */
export function siftUserResolver(
  storedMappings: (
    segmentUserIds: readonly string[],
  ) => Promise<{ sift_user_id: string; segment_user_id: string }[]>,
  identity: Config['identity'],
): (segmentUserIds: readonly string[]) => Promise<Map<string, string>> {
  // The config's first Sift id for each Segment id, as a search through it in order would find.
  const configured = new Map<string, string>();
  for (const [sift, segment] of Object.entries(identity.mappings)) {
    if (!configured.has(segment)) configured.set(segment, sift);
  }
  return async (segmentUserIds) => {
    const ids = [...new Set(segmentUserIds)];
    const stored = new Map<string, string>();
    if (ids.length > 0) {
      for (const m of await storedMappings(ids)) {
        if (!stored.has(m.segment_user_id)) stored.set(m.segment_user_id, m.sift_user_id);
      }
    }
    const resolved = new Map<string, string>();
    for (const segmentUserId of ids) {
      const sift =
        stored.get(segmentUserId) ??
        configured.get(segmentUserId) ??
        (identity.segment_user_id === 'same' ? segmentUserId : undefined);
      if (sift !== undefined && SIFT_ID.test(sift)) resolved.set(segmentUserId, sift);
    }
    return resolved;
  };
}
