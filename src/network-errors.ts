/**
 * Node and undici error codes of network failures, as named sets that each use picks from: which
 * one decides what a caller may do, so they are subsets of one another rather than separate lists.
 */

/**
 * Connecting failed before any byte of the request left: a write can be sent again without risk of
 * doing it twice (the Sift client retries writes only on these).
 */
export const NEVER_SENT: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * Nothing answers: the above, or the host or network unreachable. The dependency is down rather
 * than failing (the outbox pauses for it). The unreachable codes can also end a connection that
 * was up, so they are not {@link NEVER_SENT}.
 */
export const UNREACHABLE: ReadonlySet<string> = new Set([
  ...NEVER_SENT,
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
]);

/** Any network failure: unreachable, or a connection that was up broke (reset, timed out, closed). */
export const NETWORK_FAILURE: ReadonlySet<string> = new Set([
  ...UNREACHABLE,
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'UND_ERR_SOCKET',
]);
