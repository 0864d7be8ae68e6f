/**
 * The real `fraudgate` CLI as the end-to-end tests run it, in processes of their own over a temp
 * data dir that is also their HOME.
 */
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

export const CLI = join(import.meta.dirname, '../../src/cli.ts');

/**
 * The CLI's environment over `dataDir`, plus `extra`: of the host's own only PATH, so that
 * FRAUDGATE_* settings of whoever runs the tests cannot change what they test.
 */
export function cliEnv(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: dataDir,
    FRAUDGATE_DATA_DIR: dataDir,
    FRAUDGATE_LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** `fraudgate serve` in a child process (its stderr ignored), connected over stdio to a client named `clientName`. */
export async function connectServe(clientName: string, env: Record<string, string>): Promise<Client> {
  const client = new Client({ name: clientName, version: '0.0.0' });
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [CLI, 'serve'],
      env,
      stderr: 'ignore',
    }),
  );
  return client;
}
