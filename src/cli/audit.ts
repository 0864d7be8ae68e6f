/** `fraudgate audit verify`: check the hash chain of the audit log; exit 1 naming the first bad line. */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { verifyAuditFile } from '../governance/audit.ts';
import { auditPath } from '../runtime.ts';

export async function runAuditCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  if (args[0] !== 'verify') {
    process.stderr.write('Usage: fraudgate audit verify [--file PATH]\n');
    return 2;
  }
  const file = values.file ?? auditPath(loaded.config);
  const result = await verifyAuditFile(file);
  if (result.ok) {
    process.stdout.write(`${file}: intact, ${result.records} records\n`);
    return 0;
  }
  process.stdout.write(
    `${file}: TAMPERED at line ${result.line}: ${result.reason} (${result.records} records before it verified)\n`,
  );
  return 1;
}
