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

// V8 keeps the code it compiles for fraudgate and its dependencies on disk (os.tmpdir()/
// node-compile-cache, or NODE_COMPILE_CACHE; NODE_DISABLE_COMPILE_CACHE=1 turns it off), keyed by
// each file's content: every start after the first skips compiling them. Enabled here, before the
// first import of fraudgate's own code, so that all of it is cached.
// A git checkout runs the TypeScript sources (Node strips the types); the published package has
// no sources, only the compiled `dist/` that `npm run build` (run by `prepack`) emits.
Promise.all([import('node:fs'), import('node:module')]).then(function (loaded) {
  var fs = loaded[0];
  var module = loaded[1];
  if (module.enableCompileCache) module.enableCompileCache();
  var source = new URL('../src/cli.ts', import.meta.url);
  var entry = fs.existsSync(source) ? source : new URL('../dist/src/cli.js', import.meta.url);
  return import(entry.href).then(function (cli) {
    cli.runCli();
  });
});
