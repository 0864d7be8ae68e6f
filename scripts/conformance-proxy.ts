/**
 * Test-only reverse proxy for the conformance suite, which sends no Authorization header: it
 * forwards every request to fraudgate unchanged except for adding `Authorization: Bearer <token>`
 * and mapping its own `localhost:<port>` in Host/Origin to the server's, as a real reverse proxy
 * for a public URL would. Foreign Host/Origin values (the DNS-rebinding scenario) pass through
 * untouched, so the server's own checks are what the suite measures.
 *
 *   node scripts/conformance-proxy.ts <target-base-url> <token>   → prints the proxy URL on stdout
 */
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

const [target, token] = process.argv.slice(2);
if (!target || !token) {
  process.stderr.write('usage: conformance-proxy.ts TARGET_BASE_URL TOKEN\n');
  process.exit(2);
}
const upstream = new URL(target);

const server = createServer((req, res) => {
  const own = `localhost:${(server.address() as AddressInfo).port}`;
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  if (headers.host === own) headers.host = `localhost:${upstream.port}`;
  if (headers.origin === `http://${own}`) headers.origin = `http://localhost:${upstream.port}`;
  const forward = request(
    { hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  forward.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(forward);
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://localhost:${(server.address() as AddressInfo).port}\n`);
});
