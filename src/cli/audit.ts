/**
 * `fraudgate audit verify [--file PATH] [--public-key FILE]... [--witness FILE]`: check the ledger in
 * the store (or an exported file, or a legacy audit.jsonl), and with a witness that it still
 * reaches every witnessed writer's head; exit 1 naming the first bad record. On a terminal, stderr
 * shows a running count meanwhile.
 * `fraudgate audit export [--since ISO-TIME] [--format jsonl]`: stream the ledger as JSON Lines.
 * `fraudgate audit witness [--out FILE]`: the newest signed checkpoint per writer, as JSON, for the
 * operator to keep off the box (see audit-witness.ts).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { subcommand, UsageError } from './usage.ts';
import {
  exportLedger,
  verifyAuditFile,
  verifyLedger,
  type FileVerifyResult,
  type LedgerVerifyResult,
} from '../governance/audit-ledger.ts';
import {
  createCheckpointVerifier,
  describeTrustedKeys,
  loadVerifyKey,
  type CheckpointVerifier,
} from '../governance/audit-signing.ts';
import { readWitness, takeWitness, type AuditWitness } from '../governance/audit-witness.ts';
import { openLedgerEngine, trustedAuditVerifier } from '../runtime.ts';

export async function runAuditCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const command = subcommand('audit', args[0], ['verify', 'export', 'witness']);
  if (command === 'export') return exportCommand(values, loaded);
  // Every --public-key given is trusted (several across a signing-key rotation); none: the
  // configured key's public half.
  const publicKeys = values['public-key'] ?? [];
  const verifier =
    publicKeys.length > 0
      ? createCheckpointVerifier(publicKeys.map((path) => loadVerifyKey(path)))
      : trustedAuditVerifier(loaded.config, loaded.secrets);
  if (command === 'witness') return witnessCommand(values, loaded, verifier);
  const witness = values.witness === undefined ? undefined : loadWitness(values.witness, verifier);
  const progress = verifyProgress(process.stderr);
  const options = {
    ...(progress ? { onProgress: progress.update } : {}),
    ...(witness ? { witness } : {}),
  };
  if (values.file) {
    const result = await verifyAuditFile(values.file, verifier, options).finally(() => progress?.clear());
    return report(values.file, result);
  }
  const engine = await openLedgerEngine(loaded.config, loaded.secrets);
  try {
    const result = await verifyLedger(engine, verifier, options).finally(() => progress?.clear());
    return report(`audit ledger (${engine.kind})`, { format: 'ledger', ...result });
  } finally {
    await engine.close();
  }
}

/**
 * A running count of verified records on a terminal, redrawn in place at most ten times a second
 * and erased before the result; undefined when `stream` is not a terminal, so a pipe or a log
 * stays clean.
 */
export function verifyProgress(
  stream: { isTTY?: boolean; write(text: string): unknown },
  now: () => number = Date.now,
): { update(verified: number): void; clear(): void } | undefined {
  if (stream.isTTY !== true) return undefined;
  let drawnAt: number | undefined;
  return {
    update(verified) {
      if (drawnAt !== undefined && now() - drawnAt < 100) return;
      drawnAt = now();
      stream.write(`\rverifying: ${verified.toLocaleString('en-US')} records`);
    },
    clear() {
      if (drawnAt !== undefined) stream.write('\r\x1b[K');
    },
  };
}

/** A witness file, its signatures checked with the trusted key; a usage error naming what is wrong. */
function loadWitness(path: string, verifier: CheckpointVerifier): AuditWitness {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new UsageError([{ field: '--witness', message: `cannot read ${path}` }]);
  }
  try {
    return readWitness(text, verifier);
  } catch (error) {
    throw new UsageError([{ field: '--witness', message: `${path} ${(error as Error).message}` }]);
  }
}

/**
 * Writes the witness to stdout, or to `--out` (whole or not at all: written beside it, then renamed,
 * so a scheduled copy never ships half a file).
 */
async function witnessCommand(
  values: CliValues,
  loaded: LoadedConfig,
  verifier: CheckpointVerifier,
): Promise<number> {
  const engine = await openLedgerEngine(loaded.config, loaded.secrets);
  let taken: ReturnType<typeof takeWitness>;
  try {
    taken = takeWitness(await engine.checkpoints(), verifier, new Date());
  } finally {
    await engine.close();
  }
  const text = `${JSON.stringify(taken.witness, null, 2)}\n`;
  if (values.out === undefined) {
    process.stdout.write(text);
  } else {
    const partial = `${values.out}.partial`;
    writeFileSync(partial, text);
    renameSync(partial, values.out);
    process.stderr.write(
      `witness of ${taken.witness.writers.length} writers written to ${values.out}; keep it off this host\n`,
    );
  }
  if (taken.skipped > 0) {
    process.stderr.write(
      `${taken.skipped} checkpoints do not verify with ${describeTrustedKeys(verifier)} and were left out: run \`fraudgate audit verify\`\n`,
    );
    return 1;
  }
  return 0;
}

function report(source: string, result: FileVerifyResult): number {
  if (result.format === 'legacy') {
    if (result.ok) {
      process.stdout.write(
        `${source}: intact (legacy format, no checkpoints), ${result.records} records, last hash ${result.last_hash}\n`,
      );
      return 0;
    }
    process.stdout.write(
      `${source}: TAMPERED at line ${result.line}: ${result.reason} (${result.records} records before it verified)\n`,
    );
    return 1;
  }
  const r: LedgerVerifyResult = result;
  if (r.ok) {
    process.stdout.write(
      `${source}: intact, ${r.records} records from ${r.writers} writers, ${r.checkpoints} signed checkpoints` +
        (r.unsealed > 0 ? ` (${r.unsealed} newest records not yet sealed by a checkpoint)` : '') +
        '\n',
    );
    return 0;
  }
  const where = r.line === undefined ? '' : ` (line ${r.line})`;
  process.stdout.write(
    `${source}: TAMPERED at writer ${r.writer} seq ${r.seq}${where}: ${r.reason} (${r.records} records before it verified)\n`,
  );
  return 1;
}

async function exportCommand(values: CliValues, loaded: LoadedConfig): Promise<number> {
  if (values.format !== undefined && values.format !== 'jsonl') {
    throw new UsageError([{ field: '--format', message: 'must be jsonl' }]);
  }
  let since: Date | undefined;
  if (values.since !== undefined) {
    since = new Date(values.since);
    if (Number.isNaN(since.getTime())) {
      throw new UsageError([
        { field: '--since', message: 'must be an ISO 8601 time, e.g. 2026-01-31T00:00:00Z' },
      ]);
    }
  }
  const engine = await openLedgerEngine(loaded.config, loaded.secrets);
  try {
    for await (const chunk of exportLedger(engine, since ? { since } : {})) {
      // Respect back-pressure: a slow SIEM pipe must not make the export buffer the whole ledger.
      if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
    }
  } finally {
    await engine.close();
  }
  return 0;
}
