/**
 * The refusal budget of the webhook endpoints, whose senders are anonymous until their signature
 * checks (src/governance/refusal-budget.ts keeps the tokens and the counts). Two bounds:
 *
 * - per client network at each endpoint: an IPv4 address, or an IPv6 /64 (one subscriber's
 *   allocation, so its 2^64 addresses are one sender, not 2^64 fresh budgets);
 * - per endpoint, a ceiling over all of them ({@link WEBHOOK_CEILING_NETWORKS} networks' worth), so
 *   no set of addresses writes more than a bounded number of records a minute; past it rejections
 *   are counted into one `refusals_counted` record for the endpoint.
 *
 * The ledger only ever sees the address as the redactor masks it (`client:203.0.113.x#tag`).
 */
import { isIP } from 'node:net';
import type { BucketConfig } from '../config.ts';
import type { AuditAppendInput, AuditLog, AuditPrincipal } from '../governance/audit.ts';
import type { Logger } from '../logger.ts';
import type { RateLimiter } from '../governance/rate-limit.ts';
import { ipv6Hextets, type Redactor } from '../governance/redact.ts';
import { createRefusalBudget, type RefusalOutcome } from '../governance/refusal-budget.ts';

/** The endpoint ceiling, in client networks' budgets (`rate_limits.refusals`). */
export const WEBHOOK_CEILING_NETWORKS = 10;

export interface WebhookRefusals {
  /**
   * Audits the rejection of a request to `tool` from `address` (`build` gets the masked target to
   * write, and runs only when the record will be written), or counts it past a budget. Rejects only
   * when a record could not be written.
   */
  record(
    principal: AuditPrincipal,
    tool: string,
    address: string,
    build: (target: string) => AuditAppendInput,
  ): Promise<RefusalOutcome>;
  /**
   * Milliseconds until `address`'s network has refusals to spare again at `tool`, when this
   * process knows its budget spent (it counted one of its refusals since the budget last allowed
   * one); undefined otherwise. Answered here, without the store: a handler asks before costly work.
   */
  spent(tool: string, address: string): number | undefined;
  /** Writes the pending counts (on shutdown). */
  flush(): Promise<void>;
}

export function createWebhookRefusals(deps: {
  audit: AuditLog;
  rateLimiter: RateLimiter;
  /** Per client network at each endpoint (`rate_limits.refusals`). */
  bucket: BucketConfig;
  /** Per endpoint; {@link WEBHOOK_CEILING_NETWORKS} times `bucket` unless given. */
  ceiling?: BucketConfig;
  redactor: Pick<Redactor, 'maskIp'>;
  now?: () => Date;
  /** Where the budget says it falls back to this process while its store is down (and back). */
  logger?: Logger;
}): WebhookRefusals {
  const budget = createRefusalBudget(deps);
  const ceiling = deps.ceiling ?? {
    capacity: deps.bucket.capacity * WEBHOOK_CEILING_NETWORKS,
    per_minute: deps.bucket.per_minute * WEBHOOK_CEILING_NETWORKS,
  };
  const masked = (address: string) => (isIP(address) === 0 ? 'unknown' : deps.redactor.maskIp(address));
  return {
    record(principal, tool, address, build) {
      const target = `client:${masked(address)}`;
      const network = clientNetwork(address);
      return budget.record(principal, 'webhook_rejected', () => build(target), {
        key: scopeKey(tool, network),
        // The count covers the whole /64: it is named by the network's mask, not one address's.
        target: isIP(address) === 6 ? `client:${masked(network)}/64` : target,
        tool,
        ceiling: { key: tool, target: `endpoint:${tool}`, bucket: ceiling },
      });
    },
    spent: (tool, address) => budget.spent(scopeKey(tool, clientNetwork(address))),
    flush: () => budget.flush(),
  };
}

const scopeKey = (tool: string, network: string) => `${tool}\u0000${network}`;

/** What one budget covers: an IPv4 address itself, an IPv6 address's /64 (as `2001:db8:1:2::`). */
export function clientNetwork(address: string): string {
  if (isIP(address) !== 6) return address;
  return `${ipv6Hextets(address).slice(0, 4).join(':')}::`;
}
