/**
 * `npm run build` (also run by `prepack`): compile src/ and tools/ to dist/ and put beside the
 * compiled code what it reads at run time — the console's static assets and package.json (the
 * version) — at the same relative paths as in a checkout.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const dist = join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
});
cpSync(join(root, 'src/console/assets'), join(dist, 'src/console/assets'), { recursive: true });
cpSync(join(root, 'package.json'), join(dist, 'package.json'));
