/**
 * The npm package as a user gets it: `npm pack` (which builds dist/ through `prepack`), install the
 * tarball into an empty directory, then run the installed `fraudgate`: --help, --version, the
 * console's assets over `serve --http --sandbox`, a real MCP client over `serve --sandbox` (stdio),
 * and on an older Node one line naming the Node it needs.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { VERSION } from '../../src/version.ts';
import { findOldNode } from '../helpers/old-node.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
let dir: string;
let bin: string;

const env = () => ({ PATH: process.env.PATH ?? '', HOME: dir, FRAUDGATE_DATA_DIR: join(dir, 'data') });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-pack-'));
  // prepack builds dist/ first; npm prints the tarball's name last.
  const packed = await run('npm', ['pack', '--pack-destination', dir, '--silent'], { cwd: ROOT });
  const tarball = join(dir, packed.stdout.trim().split('\n').at(-1)!);
  const app = join(dir, 'app');
  await run('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  // Dependencies come from the npm cache when they are there; install scripts are not ours to run.
  await run(
    'npm',
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--ignore-scripts',
      '--loglevel=error',
      tarball,
    ],
    { cwd: app },
  );
  bin = join(app, 'node_modules/.bin/fraudgate');
}, 300_000);

// Removing an installed node_modules can take a while on a loaded machine.
afterAll(() => rmSync(dir, { recursive: true, force: true }), 120_000);

describe('the packed tarball, installed', { timeout: 120_000 }, () => {
  it('ships compiled code, not sources, plus LICENSE and README', () => {
    const pkg = join(dir, 'app/node_modules/fraudgate');
    expect(readdirSync(pkg).sort()).toEqual(['LICENSE', 'README.md', 'bin', 'dist', 'package.json']);
    expect(existsSync(join(pkg, 'dist/src/cli.js'))).toBe(true);
    expect(existsSync(join(pkg, 'dist/src/console/assets/console.js'))).toBe(true);
  });

  it('`fraudgate --help` and `--version` work', async () => {
    const help = await run(process.execPath, [bin, '--help'], { env: env() });
    expect(help.stdout).toMatch(/^Usage: fraudgate \[command\] \[options\]$/m);
    const version = await run(process.execPath, [bin, '--version'], { env: env() });
    expect(version.stdout).toBe(`${VERSION}\n`);
  });

  it('`fraudgate serve --sandbox` answers a real MCP client over stdio', async () => {
    const client = new Client({ name: 'pack-test', version: '0.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [bin, 'serve', '--sandbox'],
        env: env(),
        stderr: 'ignore',
      }),
    );
    try {
      expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(
        tools.map((t) => t.name).sort(),
      );
      const score = await client.callTool({
        name: 'get_sift_score',
        arguments: { user_id: 'sandbox-high-risk' },
      });
      expect(score.isError).toBeFalsy();
      expect(score.structuredContent).toMatchObject({ user_id: 'sandbox-high-risk' });
    } finally {
      await client.close();
    }
  });

  it('`fraudgate serve --http --sandbox` serves the console and its assets', async () => {
    const child = spawn(process.execPath, [bin, 'serve', '--http', '--sandbox', '--port', '0'], {
      env: env(),
    });
    try {
      const [url, tryIt] = await new Promise<[string, string]>((resolve, reject) => {
        let err = '';
        child.stderr.on('data', (chunk: Buffer) => {
          err += chunk.toString();
          const match = /approval console: (\S+)/.exec(err);
          const line = /try it: (.*)\n/.exec(err);
          if (match && line) resolve([match[1]!, line[1]!]);
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
      });
      // Installed, there is no Inspector (a devDependency): the printed line fetches it with npx.
      expect(tryIt).toMatch(/^npx @modelcontextprotocol\/inspector --cli http:\/\/127\.0\.0\.1:\d+\/mcp /);
      for (const asset of ['', '/assets/console.js', '/assets/console.css']) {
        const response = await fetch(url + asset);
        expect([asset, response.status]).toEqual([asset, 200]);
        expect((await response.text()).length).toBeGreaterThan(100);
      }
    } finally {
      child.kill('SIGTERM');
    }
  });

  const oldNode = findOldNode();
  it.skipIf(!oldNode)(
    `on an older Node (${oldNode?.version ?? 'none found on PATH'}) it exits at once with one line`,
    async () => {
      const result = await run(oldNode!.path, [bin, '--help'], { env: env() }).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => error,
      );
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `fraudgate: needs Node.js 22.19 or newer (this is Node.js ${oldNode!.version}); install a current Node (e.g. \`nvm install 24\`) and run it again\n`,
      );
    },
  );
});
