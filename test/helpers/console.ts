/** The approvals console as a browser uses it, for tests that drive it over HTTP. */
import { expect } from 'vitest';

/**
 * Signs in to the console at `baseUrl` with an API key (the sign-in must succeed): the session
 * cookie to send back and the CSRF token its changes must carry.
 */
export async function consoleSignIn(
  baseUrl: string,
  token: string,
): Promise<{ cookie: string; csrf: string }> {
  const signIn = await fetch(`${baseUrl}/console/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  expect(signIn.status).toBe(200);
  const { csrf_token: csrf } = (await signIn.json()) as { csrf_token: string };
  const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0]!;
  return { cookie, csrf };
}
