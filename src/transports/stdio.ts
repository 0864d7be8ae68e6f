/**
 * stdio transport: one MCP session per process, the principal is the configured analyst
 * (FRAUDGATE_ANALYST). stdout carries only the protocol; everything else goes to stderr.
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { normalizeIdentity } from '../auth/identity.ts';
import { UNIDENTIFIED } from '../governance/pipeline.ts';
import type { Runtime } from '../runtime.ts';
import { createMcpServer } from '../server.ts';
import type { Principal } from '../tool.ts';

/** The stdio principal: the configured analyst, or an unidentified one that may only read. */
export function stdioPrincipal(analyst: string | undefined): Principal {
  return { id: analyst ? normalizeIdentity(analyst) : UNIDENTIFIED, kind: 'user', role: 'analyst' };
}

/** Serve MCP over stdin/stdout until the client closes the stream. */
export async function serveStdio(runtime: Runtime, onClose: () => Promise<void>): Promise<void> {
  const server = createMcpServer({
    pipeline: runtime.pipeline,
    principal: stdioPrincipal(runtime.config.analyst),
    logger: runtime.logger,
  });
  const transport = new StdioServerTransport();
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    await server.close().catch(() => {});
    await onClose();
  };
  transport.onclose = () => void close();
  process.stdin.on('end', () => void close());
  await server.connect(transport);
}
