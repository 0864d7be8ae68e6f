/**
 * Segment's side of the Webhooks destination (contract triggers.md §1 and §5), for tests and the
 * sandbox: POST one spec message per request (Classic) or a JSON array (Actions batch), signed with
 * lowercase hex HMAC-SHA1 under the shared secret: one message in `X-Signature` over the body; a
 * batch in `X-Segment-Signature` over the whole body (Actions with `useSegmentSignatureHeader`), or,
 * with `signing: 'first_event'`, in `X-Signature` over its first message only (the legacy behaviour
 * Segment keeps, which fraudgate accepts only for a batch of one). Retried on 5xx, 429, timeouts and
 * connection errors with backoff, never on other 4xx.
 */
import { createHmac } from 'node:crypto';

export interface SegmentDelivery {
  status: number;
  attempts: number;
  body: Record<string, unknown>;
}

export interface SegmentSendOptions {
  secret: string;
  /** Attempts in all (Segment retries for up to 4 hours; tests use a handful). */
  attempts?: number;
  backoffMs?: number;
  timeoutMs?: number;
  /** How a batch is signed (default `whole_body`); a single message is always signed whole. */
  signing?: 'whole_body' | 'first_event';
}

export const segmentSignature = (payload: string, secret: string) =>
  createHmac('sha1', secret).update(payload).digest('hex');

/** Deliver one message, or a batch when given an array; resolves with the final answer. */
export async function sendSegmentWebhook(
  url: string,
  messages: Record<string, unknown> | Record<string, unknown>[],
  options: SegmentSendOptions,
): Promise<SegmentDelivery> {
  const body = JSON.stringify(messages);
  const firstEventOnly = Array.isArray(messages) && options.signing === 'first_event';
  const signature = firstEventOnly
    ? { 'x-signature': segmentSignature(JSON.stringify(messages[0] ?? {}), options.secret) }
    : Array.isArray(messages)
      ? { 'x-segment-signature': segmentSignature(body, options.secret) }
      : { 'x-signature': segmentSignature(body, options.secret) };
  const headers = { 'content-type': 'application/json', 'user-agent': 'Segment.io/1.0', ...signature };
  const attempts = options.attempts ?? 1;
  let last: SegmentDelivery = { status: 0, attempts: 0, body: {} };
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
      });
      const text = await res.text();
      last = {
        status: res.status,
        attempts: attempt,
        body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
      };
      if (res.status < 500 && res.status !== 429) return last;
    } catch {
      last = { status: 0, attempts: attempt, body: {} };
    }
    await new Promise((resolve) => setTimeout(resolve, (options.backoffMs ?? 50) * attempt));
  }
  return last;
}
