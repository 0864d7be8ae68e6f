/**
 * `POST /webhooks/segment`: Segment's Webhooks destination (contract triggers.md §1) into the
 * durable outbox, as `send_sift_event` effects mapped by `mapping.segment_events` /
 * `mapping.segment_identify` (segment-mapping.ts).
 *
 * Order of checks: method → body size → signature → JSON shape → mapping. The signature is
 * HMAC-SHA1 (lowercase hex) with SEGMENT_WEBHOOK_SECRET over the raw bytes, in
 * `X-Segment-Signature` or `X-Signature`. Only when that fails, and only under `X-Signature`, the
 * body is parsed for the lenient variants: the re-serialized body (Classic), or a batch's first event
 * (Segment's legacy batched Actions signing), which authenticates a batch of one event and refuses
 * (401) a longer batch, whose other events nobody signed; a client network past its refusal budget
 * gets a 429 instead, without the parse, for a body over {@link LENIENT_ALWAYS_CHECKED_BYTES} (a
 * smaller one is always checked: Segment's addresses are shared, and so is their budget). A malformed message in a batch (an array) is refused on
 * its own: the others are processed as usual, and the refusals are counted in one audit record
 * committed with them (field paths and what is wrong, never the values). Segment fails a whole batch
 * on a 4xx, for good, so one bad message must not cost the others. A delivery whose every message is
 * malformed (a Classic delivery's one message, or a mapping that sends nothing usable) is refused
 * (400) with the reasons, so it shows as failed in Segment. Mapped messages are committed
 * with their effect and their audit record in one transaction before the 200 (a record that cannot
 * be written leaves the message unstored and the delivery unacknowledged); a repeated messageId is
 * acknowledged and not stored twice. fraudgate's own messages, which Segment delivers back like
 * any other (marked `context.fraudgate`, segment-origin.ts), are acknowledged and counted in one
 * audit record per delivery, never stored: sent to Sift again, a decision's sync could set off the
 * decision again through a Sift Workflow. Messages the mapping does not cover (page views, unmapped events, anonymous or
 * unmapped users) are acknowledged, counted in one audit record per delivery, never stored. Both
 * records commit with the delivery's messages, so a delivery is acknowledged only once they are
 * written (a redelivery adds one record, not one per message). Every delivery leaves an audit
 * record (a rejected one within its client address's refusal budget, past it a count: intake.ts);
 * a rejected body is never stored or logged — only its hash.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import * as z from 'zod';
import type { SegmentOrigin } from '../clients/segment-origin.ts';
import type { Config } from '../config.ts';
import type { AuditAppendInput } from '../governance/audit.ts';
import type { DeliveryRecords, EnqueuedEvent, RoutedIntake } from '../store/outbox-store.ts';
import type { Principal } from '../tool.ts';
import { createWebhookIntake, sendJson, type WebhookEndpointOptions, type WebhookHandler } from './intake.ts';
import {
  ruleFor,
  SegmentMessageError,
  siftEventArgs,
  type SegmentMessage,
  type SegmentRule,
} from './segment-mapping.ts';

export const SEGMENT_WEBHOOK_PATH = '/webhooks/segment';

/** The webhook's principal in the audit log (the sender is Segment, authenticated by the signature). */
export const SEGMENT_WEBHOOK_PRINCIPAL: Principal = {
  id: 'automation:segment-webhook',
  kind: 'automation',
  role: 'analyst',
};

/** Outbox events of this kind carry one Segment message; the dedupe key is its messageId alone. */
export const SEGMENT_MESSAGE_ENTITY = 'segment_message';

/** Segment batches up to 4,000 messages (Actions); a larger body is refused by the size limit first. */
const MAX_MESSAGES = 4000;

const messageSchema = z
  .object({
    type: z.enum(['track', 'identify', 'page', 'screen', 'group', 'alias', 'delete']),
    messageId: z.string().min(1).max(255),
    userId: z.string().max(255).nullish(),
    anonymousId: z.string().max(255).nullish(),
    event: z.string().min(1).max(255).optional(),
    properties: z.record(z.string(), z.unknown()).optional(),
    traits: z.record(z.string(), z.unknown()).optional(),
    context: z.record(z.string(), z.unknown()).optional(),
    timestamp: z.string().max(64).optional(),
  })
  .refine((m) => m.type !== 'track' || m.event !== undefined, {
    path: ['event'],
    message: 'a track message needs event',
  });

export interface SegmentWebhookOptions extends WebhookEndpointOptions {
  /**
   * Durably store a delivery's messages, each with its effect and its receipt's audit record
   * (`intake`), and the records of what it acknowledged without storing (`also`), in one
   * transaction (the 200 follows the commit); per message, `duplicate` when its messageId was
   * stored before. The webhook intake's `enqueueRoutedMany` (intake-writer.ts: off the event loop).
   */
  store(deliveries: RoutedIntake[], also: DeliveryRecords): Promise<EnqueuedEvent[]>;
  /** SEGMENT_WEBHOOK_SECRET; absent means every delivery is refused (fail closed). */
  secret: string | undefined;
  mapping: Config['mapping'];
  /**
   * The Sift user ids for a delivery's Segment user ids (identity map; `siftUserResolver`), called
   * once per delivery: a Segment id without one is absent.
   */
  siftUsersFor(segmentUserIds: readonly string[]): Promise<ReadonlyMap<string, string>>;
  /**
   * Knows fraudgate's own messages (`context.fraudgate`; the runtime's `segmentOrigin`): Segment
   * delivers them back like any other, and sending them to Sift again could loop through a Sift Workflow.
   */
  origin: Pick<SegmentOrigin, 'isOwn'>;
}

const header = (req: IncomingMessage, name: string) => {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
};

/**
 * What a Segment signature authenticates. `first_event_only`: an `X-Signature` that matches only the
 * first event of a batch of several — the legacy batched Actions signing (contract triggers.md
 * §1.3) — which says nothing about the other events, so the delivery is refused: whoever holds one
 * signed event could otherwise append any events to it.
 */
export type SegmentSignatureCheck = 'valid' | 'invalid' | 'first_event_only';

/** The signature headers Segment sends: `X-Segment-Signature` always covers the whole body. */
export type SegmentSignatureHeader = 'x-signature' | 'x-segment-signature';

/** The HMAC-SHA1 a signature header names (40 hex digits), or undefined when it is not one. */
function digestOf(signature: string): Buffer | undefined {
  const hex = signature.trim().toLowerCase();
  return /^[0-9a-f]{40}$/.test(hex) ? Buffer.from(hex, 'hex') : undefined;
}

const signs = (given: Buffer, signed: Buffer | string, secret: string) =>
  timingSafeEqual(createHmac('sha1', secret).update(signed).digest(), given);

/**
 * Whether `signature` (hex HMAC-SHA1 under `secret`) signs the raw bytes: one HMAC, the whole check
 * under `X-Segment-Signature` (Actions signs exactly the body it sends) and the first under
 * `X-Signature`.
 */
export function signsRawBody(raw: Buffer, signature: string, secret: string): boolean {
  const given = digestOf(signature);
  return given !== undefined && signs(given, raw, secret);
}

/**
 * `X-Signature`'s lenient variants (contract triggers.md §1.3), for a body whose raw bytes it does
 * not sign: the re-serialized body (Classic signs `JSON.stringify(body)`), or the first event of an
 * array body (Actions' legacy batched signing), which authenticates a batch of that one event and
 * is `first_event_only` for a longer one. Anything that throws (a body nested too deep to
 * re-serialize) is `invalid`.
 */
export function lenientSignatureCheck(
  parsed: unknown,
  signature: string,
  secret: string,
): SegmentSignatureCheck {
  const given = digestOf(signature);
  if (given === undefined || parsed === undefined) return 'invalid';
  try {
    if (signs(given, JSON.stringify(parsed), secret)) return 'valid';
    if (!Array.isArray(parsed) || parsed.length === 0) return 'invalid';
    const first = JSON.stringify(parsed[0]);
    if (first === undefined || !signs(given, first, secret)) return 'invalid';
    return parsed.length === 1 ? 'valid' : 'first_event_only';
  } catch {
    return 'invalid';
  }
}

const parseJson = (body: Buffer): unknown => {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
};

/**
 * Bodies up to this size get `X-Signature`'s lenient checks even from a network past its refusal
 * budget. The lenient variants authenticate only a delivery of one message (a Classic delivery, or a
 * legacy batch of one), and Segment refuses a message over 32 KB at intake, so every genuine one fits
 * with room for re-serialization (escapes, an array around it). Parsing and re-serializing 64 KiB
 * costs well under a millisecond, the same order as reading it, so a flood of small forgeries from a
 * shared address costs little more than its HMACs, while Segment's genuine deliveries from that
 * address keep working. Larger bodies (only multi-event batches, which the lenient check refuses
 * anyway) get the 429 without a parse.
 */
const LENIENT_ALWAYS_CHECKED_BYTES = 64 * 1024;

/** The refusal of a network past its refusal budget whose signature does not sign the raw bytes. */
const SPENT_REASON =
  'too many refused deliveries from this network: a signature that does not sign the raw body ' +
  'is not checked further for now; retry later, or sign the raw body (X-Segment-Signature)';

/** The refusal of a batch whose signature covers only its first event, with what to change in Segment. */
export const FIRST_EVENT_ONLY_REASON =
  'the signature (X-Signature) covers only the first event of this batch, so the others are not ' +
  'authenticated; in the Segment Webhooks (Actions) destination turn on the whole-body signature ' +
  'header (X-Segment-Signature, setting useSegmentSignatureHeader) or turn batching off';

/** Why fraudgate's own messages are acknowledged and not stored. */
const OWN_MESSAGES_REASON =
  "fraudgate's own Segment writes (marked in context.fraudgate), delivered back by Segment: not sent to Sift again";

/**
 * The record of a delivery's own messages, or of those the mapping does not cover, names this many
 * of their ids (and of the reasons), and counts them all.
 */
const IDS_RECORDED = 20;

/** Why messages the mapping does not cover are acknowledged and not stored. */
const IGNORED_MESSAGES_REASON =
  'not covered by the mapping (page views, unmapped events, anonymous or unmapped users): not sent to Sift';

/** Why a batch's malformed messages are acknowledged with it and not stored. */
const REFUSED_MESSAGES_REASON =
  'malformed (the reasons name the field): not stored, and not sent again by Segment since the rest of ' +
  'the batch was accepted; fix the event at its source or the destination mapping in Segment';

/**
 * Count per reason, for a record of many messages: every reason among the first IDS_RECORDED
 * distinct ones, so a delivery of unrelated failures cannot grow the record without bound.
 */
function countPerReason(items: readonly { reason: string }[]): Record<string, number> {
  const reasons = new Map<string, number>();
  for (const { reason } of items) {
    if (reasons.has(reason) || reasons.size < IDS_RECORDED)
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  return Object.fromEntries(reasons);
}

/**
 * A message refused on its own: where it is in the delivery (`[3].`, or nothing for a Classic
 * delivery's one message), the id a record names it by (its messageId, or its position when it has
 * no usable one) and why, as a field path and what is wrong with it — never the value.
 */
interface Refused {
  index: number;
  where: string;
  id: string;
  reason: string;
}

/** A zod issue as a reason: the field path and the schema's message, which names no input value. */
function reasonOf(issue: z.core.$ZodIssue | undefined): string {
  const path = issue?.path.join('.') ?? '';
  return `${path === '' ? 'message' : path}: ${issue?.message ?? 'invalid'}`;
}

/** The 400 of a delivery with no usable message: one refusal as before, several summarized per reason. */
function refusalOf(refused: readonly Refused[]): string {
  const [first] = refused;
  if (refused.length === 1 && first) return `${first.where}${first.reason}`;
  const perReason = Object.entries(countPerReason(refused)).slice(0, 5);
  const firstAt = (reason: string) => refused.find((r) => r.reason === reason)?.where.slice(0, -1) ?? '';
  return (
    `all ${refused.length} messages are malformed, so none was stored: ` +
    perReason.map(([reason, n]) => `${reason} (${n}, first ${firstAt(reason)})`).join('; ')
  );
}

/** An `extraHandlers` entry for src/transports/http.ts. */
export function createSegmentWebhookHandler(options: SegmentWebhookOptions): WebhookHandler {
  const { audit, logger } = options;
  if (!options.secret)
    logger.warn('SEGMENT_WEBHOOK_SECRET is not set: every Segment webhook will be refused with 401');
  const { recordOf, reject, receive, spent, rejectSpent } = createWebhookIntake({
    path: SEGMENT_WEBHOOK_PATH,
    tool: 'segment_webhook',
    principal: { ...SEGMENT_WEBHOOK_PRINCIPAL },
    bodyLimitBytes: options.bodyLimitBytes,
    audit,
    logger,
    refusals: options.refusals,
    ...(options.trustedProxies ? { trustedProxies: options.trustedProxies } : {}),
  });

  /**
   * The one record of a delivery's messages acknowledged without storing (ignored, refused or own):
   * counted under `countKey`, the first IDS_RECORDED ids, and the reasons when there are any.
   */
  const summaryRecord = (
    countKey: 'ignored_messages' | 'refused_messages' | 'own_messages',
    messageIds: readonly string[],
    reasons: Record<string, number> | undefined,
    code: 'IGNORED' | 'REFUSED',
    message: string,
  ): AuditAppendInput =>
    recordOf({
      event: 'webhook_ignored',
      args_redacted: {
        [countKey]: messageIds.length,
        message_ids: messageIds.slice(0, IDS_RECORDED),
        ...(reasons ? { reasons } : {}),
      },
      outcome: { code, message },
    });

  return async (req, res) => {
    const body = await receive(req, res);
    if (body === false) return false;
    if (body === undefined) return true;
    // The whole-body header decides when it is sent: an X-Signature beside it may cover only the first event.
    const wholeBody = header(req, 'x-segment-signature');
    const signatureHeader: SegmentSignatureHeader = wholeBody ? 'x-segment-signature' : 'x-signature';
    const signature = signatureHeader === 'x-segment-signature' ? wholeBody : header(req, 'x-signature');
    if (!options.secret) {
      await reject(res, 401, 'SEGMENT_WEBHOOK_SECRET is not configured on this server', body);
      return true;
    }
    if (!signature) {
      await reject(res, 401, 'missing signature (X-Signature or X-Segment-Signature)', body);
      return true;
    }
    // One HMAC over the raw bytes first: what Segment signs whole passes here, and a forgery costs
    // no more unless its header allows the lenient variants, which parse and re-serialize the body.
    let parsed: unknown;
    if (signsRawBody(body, signature, options.secret)) parsed = parseJson(body);
    else {
      if (signatureHeader === 'x-segment-signature') {
        await reject(res, 401, 'bad signature', body);
        return true;
      }
      // A large body from a network already past its refusal budget gets no parse: a flood of forged
      // bodies costs an HMAC each. A small one is checked in full: Segment sends from shared
      // addresses, so the budget may have been spent by strangers, and the genuine lenient deliveries
      // (one message, which Segment caps at 32 KB) all fit under the threshold.
      const retryAfterMs = body.length > LENIENT_ALWAYS_CHECKED_BYTES ? spent(req) : undefined;
      if (retryAfterMs !== undefined) {
        await rejectSpent(res, retryAfterMs, SPENT_REASON, body);
        return true;
      }
      parsed = parseJson(body);
      const check = lenientSignatureCheck(parsed, signature, options.secret);
      if (check === 'first_event_only') {
        await reject(res, 401, FIRST_EVENT_ONLY_REASON, body);
        return true;
      }
      if (check === 'invalid') {
        await reject(res, 401, 'bad signature', body);
        return true;
      }
    }
    if (parsed === undefined) {
      await reject(res, 400, 'malformed JSON', body);
      return true;
    }
    const list = Array.isArray(parsed) ? parsed : [parsed];
    if (list.length === 0 || list.length > MAX_MESSAGES) {
      await reject(res, 400, `a delivery holds 1 to ${MAX_MESSAGES} messages`, body);
      return true;
    }

    // A malformed message is refused on its own (Segment fails a whole batch on a 4xx, for good);
    // only a delivery with nothing else in it is refused, below.
    const refused: Refused[] = [];
    const ruled: { message: SegmentMessage; rule: SegmentRule; where: string; index: number }[] = [];
    const ignored: { messageId: string; reason: string }[] = [];
    const own: string[] = [];
    for (const [index, item] of list.entries()) {
      const where = Array.isArray(parsed) ? `[${index}].` : '';
      const result = messageSchema.safeParse(item);
      if (!result.success) {
        // Without an issue of its own, the messageId is one the schema accepts.
        const id = (item as { messageId?: unknown } | null)?.messageId;
        const idOk = typeof id === 'string' && !result.error.issues.some((i) => i.path[0] === 'messageId');
        refused.push({
          index,
          where,
          id: idOk ? id : `[${index}]`,
          reason: reasonOf(result.error.issues[0]),
        });
        continue;
      }
      const message = result.data as SegmentMessage;
      if (options.origin.isOwn(message, message.context)) {
        own.push(message.messageId);
        continue;
      }
      const rule = ruleFor(message, options.mapping);
      if ('ignored' in rule) ignored.push({ messageId: message.messageId, reason: rule.ignored });
      else ruled.push({ message, rule, where, index });
    }

    // One identity lookup for the whole delivery: a batch repeats a few users many times.
    const segmentUsers = ruled.flatMap(({ message }) => (message.userId ? [message.userId] : []));
    const siftUsers = segmentUsers.length > 0 ? await options.siftUsersFor(segmentUsers) : new Map();
    const mapped: { message: SegmentMessage; siftUser: string; args: Record<string, unknown> }[] = [];
    for (const { message, rule, where, index } of ruled) {
      const segmentUser = message.userId ?? undefined;
      const siftUser = segmentUser ? siftUsers.get(segmentUser) : undefined;
      if (!siftUser) {
        ignored.push({
          messageId: message.messageId,
          reason: segmentUser ? 'no Sift user is mapped to this Segment userId' : 'anonymous (no userId)',
        });
        continue;
      }
      try {
        mapped.push({ message, siftUser, args: siftEventArgs(message, rule, siftUser) });
      } catch (error) {
        if (!(error instanceof SegmentMessageError)) throw error;
        refused.push({ index, where, id: message.messageId, reason: error.message });
      }
    }
    // In the delivery's order: the mapping's refusals come after the shape's.
    refused.sort((a, b) => a.index - b.index);
    if (refused.length === list.length) {
      // Nothing usable: a misconfigured mapping should show as failures in Segment's dashboard.
      await reject(res, 400, refusalOf(refused), body);
      return true;
    }

    // One record per delivery for what it acknowledges without storing, however many messages:
    // one per message would cost a commit each, and every redelivery as many again.
    const also: AuditAppendInput[] = [];
    if (ignored.length > 0) {
      also.push(
        summaryRecord(
          'ignored_messages',
          ignored.map((i) => i.messageId),
          countPerReason(ignored),
          'IGNORED',
          IGNORED_MESSAGES_REASON,
        ),
      );
    }
    if (refused.length > 0) {
      also.push(
        summaryRecord(
          'refused_messages',
          refused.map((r) => r.id),
          countPerReason(refused),
          'REFUSED',
          REFUSED_MESSAGES_REASON,
        ),
      );
    }
    if (own.length > 0) {
      // Every decision sync comes back this way.
      also.push(summaryRecord('own_messages', own, undefined, 'IGNORED', OWN_MESSAGES_REASON));
    }

    let accepted = 0;
    let duplicates = 0;
    // The effects sort by receipt among the outbox's others: stored at 0 they would always be
    // claimed first, ahead of older decisions' effects.
    const receivedAt = Date.now();
    let stored: EnqueuedEvent[];
    try {
      // One transaction for the whole delivery: each message with its effect and its receipt's
      // audit record, and the records above, committed together (one commit, off the event loop).
      stored = await options.store(
        mapped.map(({ message, siftUser, args }) => ({
          event: {
            entityType: SEGMENT_MESSAGE_ENTITY,
            entityId: message.messageId,
            // Constant, so the dedupe key is the messageId alone (a redelivery is the same message).
            decisionId: 'segment',
            time: receivedAt,
            dedupeTime: 0,
          },
          effects: [{ effect: 'sift_event', tool: 'send_sift_event', args }],
          intake: {
            audit,
            receipt: recordOf({
              target: `sift_user:${siftUser}`,
              args_redacted: {
                message_id: message.messageId,
                type: message.type,
                event: message.event ?? null,
                sift_event: (args.event as { event_type: string }).event_type,
              },
            }),
          },
        })),
        { audit, records: also },
      );
    } catch (error) {
      // Not stored, so not acknowledged: Segment retries 5xx for up to 4 hours.
      logger.error('segment webhook enqueue failed', { error: String(error) });
      sendJson(res, 503, { error: 'could not store the event; retry' });
      return true;
    }
    for (const entry of stored) {
      if (entry.duplicate) duplicates += 1;
      else accepted += 1;
    }
    sendJson(res, 200, {
      accepted,
      duplicates,
      ignored: ignored.length + own.length,
      own: own.length,
      refused: refused.length,
    });
    if (accepted > 0) options.onEnqueued?.();
    return true;
  };
}
