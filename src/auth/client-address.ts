/**
 * The client address a request can be trusted to come from. Behind a reverse proxy every request
 * arrives from the proxy's address, so keying anything (a sign-in throttle) on the socket address
 * would put every user in one bucket; but `X-Forwarded-For` is only as trustworthy as whoever
 * appended to it. So: the socket address, unless that is a configured proxy
 * (`http.trusted_proxies`), in which case the right-most forwarded address that is not itself a
 * configured proxy — the last hop a trusted proxy saw. Entries left of it were written by the
 * client and are ignored.
 */
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** `::ffff:10.0.0.1` and `10.0.0.1` are one address; so are `2001:DB8::1` and `2001:db8::1`. */
function canonical(address: string): string {
  const text = address.trim().toLowerCase();
  return text.startsWith('::ffff:') && isIP(text.slice(7)) === 4 ? text.slice(7) : text;
}

export function clientAddress(req: IncomingMessage, trustedProxies: readonly string[] = []): string {
  const peer = canonical(req.socket.remoteAddress ?? 'unknown');
  if (trustedProxies.length === 0) return peer;
  const trusted = new Set(trustedProxies.map(canonical));
  if (!trusted.has(peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map(canonical)
    .filter((hop) => hop !== '');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!;
    if (trusted.has(hop)) continue;
    // Garbage in the header is not an address: fall back to the proxy rather than key on it.
    return isIP(hop) !== 0 ? hop : peer;
  }
  return peer;
}
