#!/usr/bin/env node
// The `fraudgate` command. Kept to syntax any Node parses (no static imports, no top-level await)
// so that an old Node reaches the version check below and exits with one line instead of a
// syntax or loader error.
var MIN = [22, 19];
var current = process.versions.node.split('.').map(Number);
if (current[0] < MIN[0] || (current[0] === MIN[0] && current[1] < MIN[1])) {
  process.stderr.write(
    'fraudgate: needs Node.js ' +
      MIN.join('.') +
      ' or newer (this is Node.js ' +
      process.versions.node +
      '); install a current Node (e.g. `nvm install 24`) and run it again\n',
  );
  process.exit(1);
}

// A git checkout runs the TypeScript sources (Node strips the types); the published package has
// no sources, only the compiled `dist/` that `npm run build` (run by `prepack`) emits.
import('node:fs').then(function (fs) {
  var source = new URL('../src/cli.ts', import.meta.url);
  var entry = fs.existsSync(source) ? source : new URL('../dist/src/cli.js', import.meta.url);
  return import(entry.href).then(function (cli) {
    cli.runCli();
  });
});
