/**
 * The console behind a reverse proxy that rewrites Host: the browser's Origin is the public URL's,
 * the Host the server sees is its own address. Sign-in and decisions must accept an Origin the HTTP
 * layer allows (`http.public_url`, `http.allowed_origins`), and still refuse any other.
 */
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/auth/authenticator.ts';
import { createConsoleHandler } from '../../src/console/console.ts';
import { startHttpServer, type HttpServerHandle } from '../../src/transports/http.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const authenticate: Authenticator = async (token) =>
  token === 'approver-token'
    ? { ok: true, principal: { id: 'alice.approver@example.com', kind: 'user', role: 'approver' } }
    : { ok: false, reason: 'unknown or invalid token' };

let env: TestEnv | undefined;
let http: HttpServerHandle | undefined;

afterEach(async () => {
  await http?.close();
  await env?.close();
  http = undefined;
  env = undefined;
});

/** A sign-in POST as the proxy forwards it: Host rewritten to the upstream address, Origin as sent. */
function signIn(origin: string): Promise<{ status: number; body: string }> {
  const url = new URL(`${http!.url}/console/api/session`);
  const payload = JSON.stringify({ token: 'approver-token' });
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          Host: url.host,
          Origin: origin,
          'Content-Type': 'application/json',
          'Content-Length': String(Buffer.byteLength(payload)),
        },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('console behind a proxy that rewrites Host', () => {
  it('accepts the public URL’s and allowed origins, refuses an unrelated one', async () => {
    env = await setup({
      config: {
        http: {
          public_url: 'https://fraudgate.example.com',
          allowed_origins: ['https://ops.example.com'],
        },
      },
    });
    const runtime = env.runtime;
    http = await startHttpServer(runtime, {
      host: '127.0.0.1',
      port: 0,
      authenticator: authenticate,
      extraHandlers: ({ authenticator, allowedOrigins }) => [
        createConsoleHandler({ runtime, authenticate: authenticator, allowedOrigins }),
      ],
    });
    expect((await signIn('https://fraudgate.example.com')).status).toBe(200);
    expect((await signIn('https://ops.example.com')).status).toBe(200);
    const foreign = await signIn('https://evil.example.net');
    expect(foreign.status).toBe(403);
  });
});
