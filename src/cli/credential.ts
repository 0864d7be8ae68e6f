/**
 * Who runs a governance command (`approvals approve|deny`, `identities map|unmap`, `outbox retry|drop`):
 * a human proven by the same credentials the HTTP server accepts — an API key from `auth.key_hashes`
 * or a JWT from the identity provider (in sandbox mode also the dev and persona tokens) — read from
 * FRAUDGATE_APPROVER_TOKEN or, on a terminal, a hidden prompt. Being able to run the CLI or write the
 * data directory proves nothing: an agent with a shell beside the server can do both.
 */
import { createAuthenticator } from '../auth/authenticator.ts';
import type { LoadedConfig } from '../config.ts';
import { ForbiddenError } from '../errors.ts';
import type { Principal } from '../tool.ts';

/** Roles that may decide approvals and change governance data. */
const GOVERNING_ROLES: ReadonlySet<Principal['role']> = new Set(['approver', 'admin']);

/** The audience a JWT must carry when `auth.jwt.audience` is unset: the server's MCP URL, as HTTP computes it. */
function mcpUrlOf(config: LoadedConfig['config']): string {
  const base = config.http.public_url?.replace(/\/+$/, '');
  if (base) return `${base}/mcp`;
  const host = ['0.0.0.0', '::'].includes(config.http.host) ? '127.0.0.1' : config.http.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.http.port}/mcp`;
}

/**
 * The development token the persona tokens derive from, as `serve --http` uses it: FRAUDGATE_DEV_TOKEN,
 * else the one kept in the data dir (sandbox only). Reading that file proves no more than holding the
 * token would: it is the token. Live mode has no development token.
 */
async function sandboxDevTokenOf(loaded: LoadedConfig): Promise<string | undefined> {
  if (loaded.config.mode !== 'sandbox') return undefined;
  if (loaded.secrets.devToken) return loaded.secrets.devToken;
  const { storedSandboxDevToken } = await import('../sandbox/sandbox.ts');
  return storedSandboxDevToken(loaded.config.data_dir);
}

/** Read a line from the terminal without echoing it. */
async function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let typed = '';
      const onData = (chunk: Buffer) => {
        for (const char of chunk.toString('utf8')) {
          if (char === '\r' || char === '\n') {
            stdin.off('data', onData);
            return resolve(typed);
          }
          if (char === '\u0003') {
            stdin.off('data', onData);
            return reject(new ForbiddenError('Cancelled; nothing was changed.'));
          }
          typed = char === '\u007f' ? typed.slice(0, -1) : typed + char;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

/**
 * The authenticated human behind a governance command, or a ForbiddenError saying what to do.
 * `action` completes "… needs an approver's credential to …".
 */
export async function authenticateOperator(loaded: LoadedConfig, action: string): Promise<Principal> {
  let token = loaded.secrets.approverToken;
  if (!token && process.stdin.isTTY) token = (await promptHidden('Approver token (API key or JWT): ')).trim();
  if (!token) {
    throw new ForbiddenError(
      `fraudgate needs an approver's credential to ${action}: set FRAUDGATE_APPROVER_TOKEN to your own API key ` +
        'or JWT (the one you sign in to the console with), or run the command in a terminal to be asked for it.',
    );
  }
  const devToken = await sandboxDevTokenOf(loaded);
  const authenticate = createAuthenticator({
    mode: loaded.config.mode,
    auth: loaded.config.auth,
    audience: mcpUrlOf(loaded.config),
    ...(devToken ? { devToken } : {}),
  });
  const result = await authenticate(token);
  if (!result.ok)
    throw new ForbiddenError(`The approver credential was refused (${result.reason}); nothing was changed.`);
  if (!GOVERNING_ROLES.has(result.principal.role)) {
    throw new ForbiddenError(
      `${result.principal.id} has role '${result.principal.role}'; only an approver or admin may ${action}.`,
    );
  }
  if (result.principal.kind !== 'user') {
    throw new ForbiddenError(
      `${result.principal.id} is a ${result.principal.kind} credential` +
        (result.serviceBecause ? ` (${result.serviceBecause})` : '') +
        `; only a person may ${action}. ` +
        "Set FRAUDGATE_APPROVER_TOKEN to your own API key (an auth.key_hashes entry with kind 'user') or " +
        'identity-provider token; nothing was changed.',
    );
  }
  return result.principal;
}
