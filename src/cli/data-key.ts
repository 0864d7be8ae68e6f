/**
 * `fraudgate data-key status [--json]`: how many stored personal fields each data key sealed, and
 * whether that key is the current FRAUDGATE_DATA_KEY, the FRAUDGATE_DATA_KEY_PREVIOUS or neither.
 * `fraudgate data-key reseal`: seal every value under an older key again under the current one
 * (progress on stderr); when status shows only the current key, the previous one can be dropped.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { createLogger } from '../logger.ts';
import { openConfiguredStore } from '../runtime.ts';
import { configuredFieldCipher } from '../store/field-crypto.ts';
import { countSealedByKey, resealUnderCurrentKey, type ResealProgress } from '../store/reseal.ts';
import { subcommand } from './usage.ts';

export async function runDataKeyCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('data-key', args[0], ['status', 'reseal']);
  const { config, secrets } = loaded;
  const cipher = configuredFieldCipher(config, secrets);
  const [current, ...previous] = cipher.openableKeyIds;
  const role = (keyId: string): { role: 'current' | 'previous' | 'unknown'; label: string } =>
    keyId === current
      ? { role: 'current', label: 'current (FRAUDGATE_DATA_KEY)' }
      : previous.includes(keyId)
        ? { role: 'previous', label: 'previous (FRAUDGATE_DATA_KEY_PREVIOUS)' }
        : { role: 'unknown', label: 'unknown: neither key opens these' };
  const store = await openConfiguredStore(config, secrets, createLogger({ level: 'warn' }));
  try {
    if (sub === 'status') {
      const counts = await countSealedByKey(store.sql);
      const byKey = new Map<string, number>();
      for (const c of counts) byKey.set(c.key_id, (byKey.get(c.key_id) ?? 0) + c.rows);
      if (values.json) {
        process.stdout.write(
          JSON.stringify(
            {
              current_key_id: current,
              keys: [...byKey].map(([key_id, rows]) => ({ key_id, role: role(key_id).role, rows })),
              fields: counts,
            },
            null,
            2,
          ) + '\n',
        );
      } else if (byKey.size === 0) {
        process.stdout.write(`No sealed values stored; current data key ${current}.\n`);
      } else {
        for (const [keyId, rows] of byKey)
          process.stdout.write(`key ${keyId}  ${rows} values  ${role(keyId).label}\n`);
        for (const c of counts) process.stdout.write(`  ${c.field}  key ${c.key_id}  ${c.rows}\n`);
      }
      // Exit 1 while anything is sealed under a key other than the current one: not yet safe to
      // drop FRAUDGATE_DATA_KEY_PREVIOUS.
      return [...byKey.keys()].some((k) => k !== current) ? 1 : 0;
    }
    const tty = process.stderr.isTTY === true;
    let drawnAt = 0;
    const progress = (p: ResealProgress) => {
      if (!tty) {
        process.stderr.write(JSON.stringify({ type: 'progress', ...p }) + '\n');
        return;
      }
      if (Date.now() - drawnAt < 100 && p.done + p.failed + p.skipped < p.total) return;
      drawnAt = Date.now();
      process.stderr.write(`\rresealing: ${p.done}/${p.total} values, ${p.failed} failed`);
    };
    const result = await resealUnderCurrentKey(store.sql, cipher, progress);
    if (tty) process.stderr.write('\n');
    for (const where of result.failures) process.stderr.write(`did not open: ${where}\n`);
    process.stdout.write(
      `resealed ${result.done} of ${result.total} values under the current data key ${current}` +
        (result.skipped > 0
          ? `; ${result.skipped} rewritten meanwhile by a running server, left as they were`
          : '') +
        (result.failed > 0
          ? `; ${result.failed} did not open (set FRAUDGATE_DATA_KEY_PREVIOUS to the key that sealed them and run again)\n`
          : '\n'),
    );
    return result.failed > 0 ? 1 : 0;
  } finally {
    await store.close();
  }
}
