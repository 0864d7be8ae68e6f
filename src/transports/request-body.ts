import type { IncomingMessage } from 'node:http';

/**
 * A request's body under a size limit, for the MCP endpoint and the webhooks alike. Read with
 * 'data'/'end' listeners rather than `for await`: the async iterator costs a promise and an
 * iterator result per chunk, and on the webhook path (one small chunk a request, thousands a
 * second) that was a visible share of the event loop. Over the limit nothing more is read (the
 * caller still answers 413); a request closed before its body ended rejects.
 */
export function readRequestBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large'> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.resolve('too_large');
  return new Promise((resolve, reject) => {
    let first: Buffer | undefined;
    let parts: Buffer[] | undefined;
    let size = 0;
    let settled = false;
    const settle = () => {
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    function onData(chunk: Buffer) {
      size += chunk.length;
      if (size > limit) {
        settle();
        // Read no further; the 413 still goes out, then the connection closes (the body is unfinished).
        req.pause();
        resolve('too_large');
        return;
      }
      // Most bodies arrive in one chunk: no array and no copy for them.
      if (first === undefined) first = chunk;
      else (parts ??= [first]).push(chunk);
    }
    function onEnd() {
      settle();
      resolve(parts ? Buffer.concat(parts, size) : (first ?? Buffer.alloc(0)));
    }
    function onError(error: Error) {
      settle();
      reject(error);
    }
    function onClose() {
      // Closed before 'end' (the sender went away): nothing complete to store.
      if (!settled) onError(new Error('the request was aborted before its body was complete'));
    }
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
