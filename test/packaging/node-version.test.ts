/**
 * One Node everywhere: the pinned Node (the `node` devDependency, .nvmrc) satisfies `engines`, the
 * bin shim checks the same minimum, and the test runner started by an older Node stops at once
 * with a message saying which Node to use.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findOldNode, requiredNode } from '../helpers/old-node.ts';

const ROOT = join(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
  devDependencies: Record<string, string>;
  scripts: Record<string, string>;
};

describe('the pinned Node', () => {
  it('.nvmrc names the pinned devDependency, which satisfies engines, as does the Node running this', () => {
    const nvmrc = readFileSync(join(ROOT, '.nvmrc'), 'utf8').trim();
    expect(nvmrc).toBe(pkg.devDependencies.node);
    const [major, minor] = requiredNode();
    for (const version of [nvmrc, process.versions.node]) {
      const [a = 0, b = 0] = version.split('.').map(Number);
      expect(a > major || (a === major && b >= minor), version).toBe(true);
    }
  });

  it("the bin shim's minimum is engines' minimum", () => {
    const shim = readFileSync(join(ROOT, 'bin/fraudgate.js'), 'utf8');
    expect(/var MIN = \[(\d+), (\d+)\];/.exec(shim)?.slice(1).map(Number)).toEqual(requiredNode());
  });

  it('every npm script that runs a program runs it through node (the pinned one inside npm scripts)', () => {
    for (const [name, script] of Object.entries(pkg.scripts)) {
      expect([name, /^(node |npm run |tsc|eslint|prettier|vitest)/.test(script)]).toEqual([name, true]);
    }
  });

  const oldNode = findOldNode();
  it.skipIf(!oldNode)(
    `vitest started by an older Node (${oldNode?.version ?? 'none found on PATH'}) stops with a clear message`,
    async () => {
      const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
        execFile(
          oldNode!.path,
          [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', 'test/config.test.ts', '--reporter=dot'],
          { cwd: ROOT, env: { PATH: process.env.PATH ?? '', CI: '1' }, timeout: 60_000 },
          (error, stdout, stderr) =>
            resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
        );
      });
      expect(result.code).toBe(1);
      expect(result.output).toContain(
        `the tests need Node.js ${requiredNode().join('.')} or newer (package.json engines) but this is Node.js ${oldNode!.version}: run them with \`npm test\``,
      );
      expect(result.output).not.toContain('Test Files');
    },
  );
});
