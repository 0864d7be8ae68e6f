/**
 * The baseline for stdio cold start: a bare SDK stdio server with one tool. Run as a child
 * process by bench/figures/cold-start.ts, which times spawn → first `initialize` answer. Plain
 * JavaScript, so Node loads it without type stripping, like fraudgate's compiled dist/.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import * as z from 'zod';

const server = new McpServer({ name: 'bare', version: '0.0.0' });
server.registerTool(
  'get_sift_score',
  { description: 'Sift score of a user.', inputSchema: { user_id: z.string().min(1) } },
  ({ user_id }) => ({ content: [{ type: 'text', text: user_id }] }),
);
await server.connect(new StdioServerTransport());
