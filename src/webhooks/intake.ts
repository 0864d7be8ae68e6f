/**
 * What every inbound webhook endpoint shares before it looks at the vendor's payload: route and
 * method, a body read under a size limit, JSON answers, and refusals that are audited before they
 * are answered (so whoever sees the answer also finds the record). The endpoints are reachable by
 * anyone, so refusals go through refusal budgets per client network and endpoint
 * (webhook-refusals.ts): past them they are counted into one `refusals_counted` record a minute
 * instead of one record each, and answered as before (or, where checking would cost more than an
 * HMAC, with a 429 before the check: `spent`). The Sift and Segment handlers differ only in how
 * they check signatures and what they store.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { clientAddress } from '../auth/client-address.ts';
import type { AuditAppendInput, AuditLog } from '../governance/audit.ts';
import type { Logger } from '../logger.ts';
import type { Principal } from '../tool.ts';
import { readRequestBody } from '../transports/request-body.ts';
import type { WebhookRefusals } from './webhook-refusals.ts';

/** An `extraHandlers` entry for src/transports/http.ts: answers and returns true, or returns false (not its route). */
export type WebhookHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export function sendJson(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A webhook audit record as its handler describes it: the endpoint adds call id, principal and tool. */
export type WebhookRecord = Omit<AuditAppendInput, 'call_id' | 'principal' | 'tool'>;

/** The endpoint's part of every record it writes. */
type EndpointFields = Pick<AuditAppendInput, 'call_id' | 'principal' | 'tool'>;

export interface WebhookIntake {
  /** `input` completed under the endpoint's principal (e.g. a receipt for the outbox's `enqueue`). */
  recordOf<T extends object>(input: T): T & EndpointFields;
  /** Audit a webhook event under the endpoint's principal; a failing audit write is logged, never thrown. */
  auditQuietly(input: WebhookRecord): Promise<void>;
  /**
   * Audit a refusal (with the body's hash, never the body, and the client address masked) within
   * the refusal budgets, or count it past them; then answer it.
   */
  reject(res: ServerResponse, status: number, reason: string, body?: Buffer): Promise<void>;
  /**
   * Milliseconds until the client network of `req` has refusals to spare again, when its refusal
   * budget at this endpoint is known spent (webhook-refusals.ts); undefined otherwise. Cheap: for
   * skipping costly checks of a flooding sender's requests.
   */
  spent(req: IncomingMessage): number | undefined;
  /** Refuse (429, with Retry-After) a request from a network whose refusal budget is spent; counted like any refusal. */
  rejectSpent(res: ServerResponse, retryAfterMs: number, reason: string, body?: Buffer): Promise<void>;
  /**
   * The raw body of a POST to `path`; `false` when the request is not for this endpoint, `undefined`
   * when it was already answered (wrong method, body over the limit).
   */
  receive(req: IncomingMessage, res: ServerResponse): Promise<Buffer | false | undefined>;
}

/** What every webhook endpoint is built with, whatever its vendor: `serve --http` gives each the same. */
export interface WebhookEndpointOptions {
  audit: AuditLog;
  logger: Logger;
  bodyLimitBytes: number;
  /** Bounds the rejection records per client network and endpoint (webhook-refusals.ts); flushed on shutdown. */
  refusals: WebhookRefusals;
  /** `http.trusted_proxies`: whose `X-Forwarded-For` names the client (src/auth/client-address.ts). */
  trustedProxies?: readonly string[];
  /** Called after something was stored (e.g. to wake the worker). */
  onEnqueued?: () => void;
}

export function createWebhookIntake(
  options: Omit<WebhookEndpointOptions, 'onEnqueued'> & {
    path: string;
    /** The audit record's `tool`, e.g. `sift_webhook`. */
    tool: string;
    principal: Principal;
  },
): WebhookIntake {
  const { audit, logger, principal, tool } = options;
  const recordOf: WebhookIntake['recordOf'] = (input) => ({
    ...input,
    call_id: randomUUID(),
    principal,
    tool,
  });
  const auditQuietly: WebhookIntake['auditQuietly'] = async (input) => {
    try {
      await audit.append(recordOf(input));
    } catch (error) {
      logger.error('audit write failed', { event: input.event, error: String(error) });
    }
  };
  const reject: WebhookIntake['reject'] = async (res, status, reason, body) => {
    // The sender is unauthenticated: its address is what the budgets key on.
    try {
      await options.refusals.record(
        principal,
        tool,
        clientAddress(res.req, options.trustedProxies),
        (target) =>
          recordOf({
            event: 'webhook_rejected',
            target,
            outcome: { code: String(status), message: reason },
            ...(body ? { args_hash: createHash('sha256').update(body).digest('hex') } : {}),
          }),
      );
    } catch (error) {
      logger.error('audit write failed', { event: 'webhook_rejected', error: String(error) });
    }
    sendJson(res, status, { error: reason });
  };
  return {
    recordOf,
    auditQuietly,
    reject,
    spent: (req) => options.refusals.spent(tool, clientAddress(req, options.trustedProxies)),
    rejectSpent(res, retryAfterMs, reason, body) {
      res.setHeader('retry-after', String(Math.ceil(retryAfterMs / 1000)));
      return reject(res, 429, reason, body);
    },
    async receive(req, res) {
      const path = (req.url ?? '').split('?')[0];
      if (path !== options.path) return false;
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        sendJson(res, 405, { error: 'method not allowed' });
        return undefined;
      }
      const body = await readRequestBody(req, options.bodyLimitBytes);
      if (body === 'too_large') {
        await reject(res, 413, 'body too large');
        return undefined;
      }
      return body;
    },
  };
}
