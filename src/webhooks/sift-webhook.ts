/**
 * `POST /webhooks/sift`: Sift decision webhooks (contract sift.md §7) into the durable outbox.
 *
 * Order of checks: method → body size → `X-Sift-Science-Signature` over the raw bytes (any of the
 * configured keys, for rotation) → JSON shape. Only a verified, well-formed event is stored, and
 * the 2xx is sent only after the commit (SQLite synchronous = FULL): an acknowledged decision is
 * never lost. A repeated delivery (same entity, decision and time) is acknowledged and not stored
 * twice. Every accepted, duplicate or rejected delivery leaves an audit record (a rejected one
 * within its client address's refusal budget, past it a count: intake.ts); an accepted or
 * duplicate delivery's record commits in the same transaction as the event (deliveries arriving
 * together share one, src/store/outbox-store.ts), so no acknowledged delivery lacks its record and
 * a record that cannot be written leaves the delivery unacknowledged (503, Sift retries). A
 * rejected body is never stored or logged (it is untrusted and may hold personal data) — only its
 * hash.
 */
import { verifySiftSignature } from '../clients/sift-client.ts';
import type { EnqueuedEvent, OutboxStore } from '../store/outbox-store.ts';
import type { Principal } from '../tool.ts';
import { createWebhookIntake, sendJson, type WebhookEndpointOptions, type WebhookHandler } from './intake.ts';
import { isObject } from '../is-object.ts';

export const SIFT_WEBHOOK_PATH = '/webhooks/sift';

/** The webhook's own principal in the audit log (the sender is Sift, authenticated by the signature). */
export const SIFT_WEBHOOK_PRINCIPAL: Principal = {
  id: 'automation:sift-webhook',
  kind: 'automation',
  role: 'analyst',
};

/** The fields of a decision webhook fraudgate stores (§7.1); everything else in the body is ignored. */
interface SiftDecisionPayload {
  entity: { type: string; id: string };
  decision: { id: string };
  time: number;
}

const isText = (value: unknown, max: number): value is string =>
  typeof value === 'string' && value.length >= 1 && value.length <= max;

/**
 * The decision webhook in `value`, or undefined when it is not one: entity.type (1–64 characters),
 * entity.id and decision.id (1–255), time a non-negative integer. Checked by hand, not with a zod
 * schema: this runs for every delivery on the event loop, and the four checks are all it needs.
 */
function decisionPayload(value: unknown): SiftDecisionPayload | undefined {
  if (!isObject(value)) return undefined;
  const { entity, decision, time } = value;
  if (!isObject(entity) || !isObject(decision)) return undefined;
  if (!isText(entity.type, 64) || !isText(entity.id, 255) || !isText(decision.id, 255)) return undefined;
  if (typeof time !== 'number' || !Number.isSafeInteger(time) || time < 0) return undefined;
  return { entity: { type: entity.type, id: entity.id }, decision: { id: decision.id }, time };
}

export interface SiftWebhookOptions extends WebhookEndpointOptions {
  /** Where accepted events go with their receipt records (the outbox, or src/webhooks/intake-writer.ts). */
  outbox: Pick<OutboxStore, 'enqueue'>;
  /** SIFT_WEBHOOK_KEYS; empty means every delivery is refused (fail closed). */
  keys: readonly string[];
}

/** An `extraHandlers` entry for src/transports/http.ts. */
export function createSiftWebhookHandler(options: SiftWebhookOptions): WebhookHandler {
  const { outbox, audit, logger } = options;
  const keys = options.keys.filter(Boolean);
  if (keys.length === 0)
    logger.warn('SIFT_WEBHOOK_KEYS is not set: every Sift webhook will be refused with 401');
  const { recordOf, reject, receive } = createWebhookIntake({
    path: SIFT_WEBHOOK_PATH,
    tool: 'sift_webhook',
    principal: {
      id: SIFT_WEBHOOK_PRINCIPAL.id,
      kind: SIFT_WEBHOOK_PRINCIPAL.kind,
      role: SIFT_WEBHOOK_PRINCIPAL.role,
    },
    bodyLimitBytes: options.bodyLimitBytes,
    audit,
    logger,
    refusals: options.refusals,
    ...(options.trustedProxies ? { trustedProxies: options.trustedProxies } : {}),
  });

  return async (req, res) => {
    const body = await receive(req, res);
    if (body === false) return false;
    if (body === undefined) return true;
    const header = req.headers['x-sift-science-signature'];
    const signature = Array.isArray(header) ? header[0] : header;
    if (!signature) {
      await reject(res, 401, 'missing signature', body);
      return true;
    }
    if (!verifySiftSignature(body, signature, keys)) {
      await reject(res, 401, 'bad signature', body);
      return true;
    }
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      await reject(res, 400, 'malformed JSON', body);
      return true;
    }
    const parsed = decisionPayload(json);
    if (!parsed) {
      await reject(res, 400, 'not a decision webhook (entity.type, entity.id, decision.id, time)', body);
      return true;
    }
    let stored: EnqueuedEvent;
    try {
      // The receipt's audit record commits with the event, in the group commit of the webhooks
      // arriving together: acknowledged means stored and audited.
      stored = await outbox.enqueue(
        {
          entityType: parsed.entity.type,
          entityId: parsed.entity.id,
          decisionId: parsed.decision.id,
          time: parsed.time,
        },
        undefined,
        {
          audit,
          receipt: recordOf({
            target: `sift_${parsed.entity.type}:${parsed.entity.id}`,
            args_redacted: {
              entity_type: parsed.entity.type,
              decision_id: parsed.decision.id,
              time: parsed.time,
            },
          }),
        },
      );
    } catch (error) {
      // Not stored, so not acknowledged: Sift (or its operator) must deliver it again.
      logger.error('webhook enqueue failed', { error: String(error) });
      sendJson(res, 503, { error: 'could not store the event; retry' });
      return true;
    }
    sendJson(res, 200, { status: stored.duplicate ? 'duplicate' : 'accepted' });
    if (!stored.duplicate) options.onEnqueued?.();
    return true;
  };
}
