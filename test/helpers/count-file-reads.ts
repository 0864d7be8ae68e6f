/**
 * Preloaded into a spawned `fraudgate` (`node --import`): counts `readFileSync` of the files named
 * in FRAUDGATE_TEST_COUNT_READS (comma-separated paths) and prints the counts as one stderr line,
 * `file reads: {"<path>":n,…}`, when the process exits. Node's own modules are shared objects:
 * replacing the function and syncing the ESM exports reaches every `import { readFileSync }`.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { resolve } from 'node:path';
import { isMainThread } from 'node:worker_threads';

const watched = new Map(
  (process.env.FRAUDGATE_TEST_COUNT_READS ?? '')
    .split(',')
    .filter(Boolean)
    .map((path) => [resolve(path), 0]),
);
const read = fs.readFileSync;
fs.readFileSync = function (this: unknown, path: fs.PathOrFileDescriptor, ...rest: unknown[]) {
  if (typeof path === 'string') {
    const count = watched.get(resolve(path));
    if (count !== undefined) watched.set(resolve(path), count + 1);
  }
  return Reflect.apply(read, this, [path, ...rest]) as unknown;
} as typeof fs.readFileSync;
syncBuiltinESMExports();

// A worker thread inherits the preload; only the process's own count is reported.
if (isMainThread) {
  process.on('exit', () =>
    process.stderr.write(`file reads: ${JSON.stringify(Object.fromEntries(watched))}\n`),
  );
}
