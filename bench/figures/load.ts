/** Load generation shared by the figures: N signed webhooks from a fixed number of concurrent senders. */
import { createHmac } from 'node:crypto';
import { Agent, request } from 'undici';

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
