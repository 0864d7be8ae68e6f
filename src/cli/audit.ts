/**
 * `fraudgate audit verify [--file PATH] [--public-key FILE]`: check the ledger in the store (or an
 * exported file, or a legacy audit.jsonl); exit 1 naming the first bad record.
 * `fraudgate audit export [--since ISO-TIME] [--format jsonl]`: stream the ledger as JSON Lines.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { UsageError } from './usage.ts';
import {
  exportLedger,
  verifyAuditFile,
  verifyLedger,
  type FileVerifyResult,
  type LedgerVerifyResult,
} from '../governance/audit-ledger.ts';
import { createCheckpointVerifier, loadVerifyKey } from '../governance/audit-signing.ts';
import { openLedgerEngine, trustedAuditVerifier } from '../runtime.ts';

const USAGE =
  'fraudgate audit verify [--file PATH] [--public-key FILE] | export [--since ISO-TIME] [--format jsonl]';

export async function runAuditCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const [sub] = args;
  if (sub === 'export') return exportCommand(values, loaded);
  if (sub !== 'verify') {
    throw new UsageError([{ field: 'command', message: `expected verify or export (${USAGE})` }]);
  }
  const verifier = values['public-key']
    ? createCheckpointVerifier(loadVerifyKey(values['public-key']))
    : trustedAuditVerifier(loaded.config, loaded.secrets);
  if (values.file) {
    const result = await verifyAuditFile(values.file, verifier);
    return report(values.file, result);
  }
  const engine = await openLedgerEngine(loaded.config, loaded.secrets);
  try {
    return report(`audit ledger (${engine.kind})`, {
      format: 'ledger',
      ...(await verifyLedger(engine, verifier)),
    });
  } finally {
    await engine.close();
  }
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
