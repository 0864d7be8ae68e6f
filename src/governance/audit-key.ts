/**
 * The audit key: keyed hashes of personal data in the audit log, and the seal of list cursors. Kept
 * apart from the runtime so start-up (src/startup.ts `loadServeKeys`) loads it without the rest.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config, Secrets } from '../config.ts';

/**
 * The key for keyed hashes of personal data in the audit log: FRAUDGATE_AUDIT_KEY, or a random key
 * created once in the data directory (mode 0600) so hashes stay comparable across restarts.
 */
export function loadAuditKey(config: Pick<Config, 'data_dir'>, secrets: Pick<Secrets, 'auditKey'>): string {
  if (secrets.auditKey) return secrets.auditKey;
  const path = join(config.data_dir, 'audit.key');
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  mkdirSync(config.data_dir, { recursive: true });
  const key = randomBytes(32).toString('hex');
  writeFileSync(path, key + '\n', { mode: 0o600, flag: 'wx' });
  return key;
}

/**
 * A key of its own for one use of the audit key (cursor seals, rate-limit bucket names, Segment
 * marks): a MAC made for one use never equals another use's, nor the audit log's hash of the same
 * text. Replicas sharing the audit key derive the same key. No secret: a random one (this process only).
 */
export function purposeKey(secret: string | Buffer | undefined, purpose: string): Buffer {
  return createHmac('sha256', secret ?? randomBytes(32))
    .update(purpose)
    .digest();
}
