import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// One Node everywhere: started by an older Node (e.g. `node_modules/.bin/vitest` picking the system
// Node through its shebang), the tests would fail in confusing ways or be reported as skipped.
// Stop at once and say which Node to use instead.
const engines = (
  JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
    engines: { node: string };
  }
).engines.node;
const [needMajor = 0, needMinor = 0] = (/>=\s*(\d+)\.(\d+)/.exec(engines) ?? []).slice(1).map(Number);
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < needMajor || (major === needMajor && minor < needMinor)) {
  throw new Error(
    `the tests need Node.js ${needMajor}.${needMinor} or newer (package.json engines) but this is Node.js ${process.versions.node}: ` +
      'run them with `npm test` (the pinned Node from node_modules/.bin), or `nvm use` (.nvmrc)',
  );
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Says once per run when the vendor-recorded fixtures (../shared/fixtures) are absent.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: the end-to-end tests spawn servers and browsers; keep parallelism honest.
    maxWorkers: 2,
    // The JSON report is what .ci/run counts; the default reporter is for people.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
