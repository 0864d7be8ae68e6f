/**
 * Load generation shared by the figures: N signed webhooks from a fixed number of concurrent
 * senders, and sequential `get_sift_score` calls through an MCP client (the read and HTTP figures).
 */
import { createHmac } from 'node:crypto';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { Agent, request } from 'undici';

/** `calls` sequential `get_sift_score` calls on `client`, each one's latency (ms) pushed to `latencies`. */
export async function callScores(client: Client, calls: number, latencies: number[]): Promise<void> {
  for (let i = 0; i < calls; i += 1) {
    const t = performance.now();
    const result = await client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-high-risk' },
    });
    latencies.push(performance.now() - t);
    if (result.isError) throw new Error(`get_sift_score failed: ${JSON.stringify(result.content)}`);
  }
}

/** Posts every body with `senders` requests in flight; returns webhooks per second. Any non-200 fails the run. */
export async function postWebhooks(
  url: string,
  key: string,
  bodies: string[],
  senders: number,
): Promise<number> {
  const dispatcher = new Agent({ connections: senders, keepAliveTimeout: 10_000 });
  const signed = bodies.map((body) => ({
    body,
    signature: `sha256=${createHmac('sha256', key).update(body).digest('hex')}`,
  }));
  let next = 0;
  const start = performance.now();
  try {
    await Promise.all(
      Array.from({ length: senders }, async () => {
        for (let i = next++; i < signed.length; i = next++) {
          const { body, signature } = signed[i] ?? { body: '', signature: '' };
          const res = await request(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-sift-science-signature': signature },
            body,
            dispatcher,
          });
          await res.body.dump();
          if (res.statusCode !== 200) throw new Error(`webhook answered ${res.statusCode}`);
        }
      }),
    );
    return bodies.length / ((performance.now() - start) / 1000);
  } finally {
    await dispatcher.close();
  }
}
