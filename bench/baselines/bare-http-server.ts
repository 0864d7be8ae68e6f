/**
 * The baseline for MCP over HTTP: the SDK's Streamable HTTP transport, stateful (one transport and
 * server per session, as fraudgate runs it), on plain node:http, serving the bare read tool of
 * bench/baselines/bare-read-server.ts. No auth, Host/Origin checks, metrics or logging.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { createBareReadServer, type BareSift } from './bare-read-server.ts';

async function readJson(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) parts.push(chunk);
  return parts.length === 0 ? undefined : (JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown);
}

export async function startBareHttpServer(sift: BareSift): Promise<{ url: string; close(): Promise<void> }> {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; close(): Promise<void> }>();
  const server = createServer((req, res) => {
    void (async () => {
      const body = req.method === 'POST' ? await readJson(req) : undefined;
      const id = req.headers['mcp-session-id'];
      const existing = typeof id === 'string' ? sessions.get(id) : undefined;
      if (existing) return existing.transport.handleRequest(req, res, body);
      if (req.method !== 'POST' || !isInitializeRequest(body)) {
        res.writeHead(404).end();
        return;
      }
      const bare = createBareReadServer(sift);
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sessionId) => {
          sessions.set(sessionId, { transport, close: bare.close });
        },
      });
      await bare.server.connect(transport);
      await transport.handleRequest(req, res, body);
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    async close() {
      for (const session of sessions.values()) {
        await session.transport.close();
        await session.close();
      }
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
