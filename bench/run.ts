/**
 * `npm run bench`: every figure of bench/figures/ beside its baseline, in one run, on this machine,
 * against the loopback emulators (bench/harness.ts: ABBA order, medians and spread). Writes
 * bench/results.json; `npm run bench:readme` then regenerates the README's performance table.
 *
 *   BENCH_QUICK=1         fewer rounds and smaller loads (a CI-like run of a minute or two)
 *   BENCH_ONLY=id,id      only these figures (ids as in results.json)
 *
 * Adding a figure: a module in bench/figures/ exporting a `Figure`, and one line below.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { runFigure, type Figure, type FigureResult } from './harness.ts';
import { catalogue } from './figures/catalogue.ts';
import { coldStart } from './figures/cold-start.ts';
import { http } from './figures/http.ts';
import { ingestFigures } from './figures/ingest.ts';
import { ledgerFigures } from './figures/ledger.ts';
import { read } from './figures/read.ts';
import { salesforceAllowance } from './figures/salesforce-allowance.ts';

const FIGURES: Figure[] = [
  read,
  http,
  ...ingestFigures,
  coldStart,
  salesforceAllowance,
  catalogue,
  ...ledgerFigures,
];

const quick = ['1', 'true', 'yes'].includes(String(process.env.BENCH_QUICK ?? '').toLowerCase());
const only = (process.env.BENCH_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const selected = FIGURES.filter((f) => only.length === 0 || only.includes(f.id));
if (selected.length === 0) {
  process.stderr.write(`BENCH_ONLY matched no figure; ids: ${FIGURES.map((f) => f.id).join(', ')}\n`);
  process.exit(2);
}

const fmt = (x: number) => (Math.abs(x) >= 100 ? String(Math.round(x)) : String(+x.toPrecision(3)));
const results: FigureResult[] = [];
for (const figure of selected) {
  process.stderr.write(`${figure.id}: running…\n`);
  const result = await runFigure(figure, { quick });
  results.push(result);
  const f = result.fraudgate;
  const b = result.baseline;
  process.stdout.write(
    `${result.title}: fraudgate ${fmt(f.median)} ${result.unit} (${fmt(f.min)}–${fmt(f.max)})` +
      (b
        ? ` vs baseline ${fmt(b.median)} ${result.unit} (${fmt(b.min)}–${fmt(b.max)}), ×${result.ratio}`
        : '') +
      ` — target ${result.target}: ${result.met ? 'met' : 'NOT met'}` +
      (Object.keys(f.extra).length > 0 ? `\n    fraudgate ${JSON.stringify(f.extra)}` : '') +
      (b && Object.keys(b.extra).length > 0 ? `\n    baseline  ${JSON.stringify(b.extra)}` : '') +
      '\n',
  );
}

const path = join(import.meta.dirname, 'results.json');
// A BENCH_ONLY run replaces its figures and keeps the others from the previous run.
const previous = existsSync(path)
  ? ((JSON.parse(readFileSync(path, 'utf8')) as { figures?: FigureResult[] }).figures ?? [])
  : [];
const figures = FIGURES.flatMap(
  (f) => results.find((r) => r.id === f.id) ?? previous.find((r) => r.id === f.id) ?? [],
);
const document = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
  quick,
  figures,
};
writeFileSync(path, JSON.stringify(document, null, 2) + '\n');
process.stdout.write('results: bench/results.json (README table: npm run bench:readme)\n');
