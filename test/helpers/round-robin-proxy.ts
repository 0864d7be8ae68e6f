/**
 * A small HTTP load balancer for tests: each request goes to the next replica in turn (nothing
 * sticky), or where `choose` says. Bodies are buffered (MCP requests are small) so `choose` can look
 * at them; responses, SSE streams included, are piped back as they arrive, and a client that goes
 * away closes the upstream request too.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxyRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

export interface RoundRobinProxy {
  url: string;
  /** Which replica served each request, in arrival order. */
  routed: { request: ProxyRequest; replica: number }[];
  /**
   * Requests the proxy answered 502 itself (the replica's connection failed before any answer):
   * the socket error, and whether the request went out on a kept-alive connection reused from an
   * earlier request.
   */
  failed: { replica: number; code: string; message: string; reusedSocket: boolean }[];
  close(): Promise<void>;
}

export async function startRoundRobinProxy(
  /** Replica base URLs, read at each request: replace an entry when a replica restarts on a new port. */
  targets: string[],
  /** Pick a replica index; undefined falls back to round robin. */
  choose?: (req: ProxyRequest) => number | undefined,
): Promise<RoundRobinProxy> {
  let next = 0;
  const routed: RoundRobinProxy['routed'] = [];
  const failed: RoundRobinProxy['failed'] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const proxied: ProxyRequest = {
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      const chosen = choose?.(proxied);
      const replica = chosen ?? next++ % targets.length;
      routed.push({ request: proxied, replica });
      const upstream = request(
        new URL(proxied.path, targets[replica]),
        { method: proxied.method, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.flushHeaders();
          answer.pipe(res);
        },
      );
      upstream.on('error', (error: Error & { code?: string }) => {
        failed.push({
          replica,
          code: error.code ?? '',
          message: error.message,
          reusedSocket: upstream.reusedSocket,
        });
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
      });
      res.on('close', () => upstream.destroy());
      upstream.end(chunks.length ? Buffer.concat(chunks) : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    routed,
    failed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
