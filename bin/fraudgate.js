#!/usr/bin/env node
// Runs the compiled CLI when the package was built (npm pack / publish), else the TypeScript
// sources directly (a git checkout on Node >= 22.19, which strips types natively).
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/src/cli.js', import.meta.url);
const { runCli } = await import(
  existsSync(compiled) ? compiled.href : new URL('../src/cli.ts', import.meta.url).href
);
runCli();
