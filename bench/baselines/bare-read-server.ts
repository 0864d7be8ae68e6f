/**
 * The baseline for a governed read: a bare `McpServer` with one `get_sift_score` tool that makes
 * the same undici request fraudgate's Sift client makes (same keep-alive agent settings, Basic
 * auth, the same query — Sift's score percentiles — and user agent, JSON body) and returns the body
 * as structured content — no policy, validation beyond the SDK's, rate limit, audit or result
 * shaping. What the SDK alone costs for the same upstream answer.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { Agent, request } from 'undici';
import * as z from 'zod';

export interface BareSift {
  baseUrl: string;
  apiKey: string;
}

export function createBareReadServer(sift: BareSift): { server: McpServer; close(): Promise<void> } {
  const dispatcher = new Agent({ keepAliveTimeout: 10_000, connections: 16 });
  const authorization = `Basic ${Buffer.from(`${sift.apiKey}:`).toString('base64')}`;
  const base = sift.baseUrl.endsWith('/') ? sift.baseUrl : `${sift.baseUrl}/`;
  const server = new McpServer({ name: 'bare', version: '0.0.0' });
  server.registerTool(
    'get_sift_score',
    { description: 'Sift score of a user.', inputSchema: { user_id: z.string().min(1) } },
    async ({ user_id }) => {
      const url = new URL(`v205/users/${encodeURIComponent(user_id)}/score?fields=SCORE_PERCENTILES`, base);
      const res = await request(url, {
        headers: {
          'user-agent': 'SiftScience/v205 fraudgate/0.1.0',
          authorization,
          accept: 'application/json',
        },
        dispatcher,
      });
      const body = (await res.body.json()) as Record<string, unknown>;
      return { content: [{ type: 'text', text: JSON.stringify(body) }], structuredContent: body };
    },
  );
  return { server, close: () => dispatcher.close() };
}
