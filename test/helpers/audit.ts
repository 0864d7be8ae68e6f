/**
 * Reading the audit ledger from tests: what a runtime recorded (after its write-behind records are
 * committed), and whether the stored chains verify under the runtime's signing key.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recordFromRow, type AuditRecord } from '../../src/governance/audit.ts';
import { join } from 'node:path';
import {
  createAuditLedger,
  verifyLedger,
  type AuditLedgerOptions,
  type LedgerVerifyResult,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';
import type { AuditLog } from '../../src/governance/audit.ts';
import type { Config, Secrets } from '../../src/config.ts';
import { openLedgerEngine, trustedAuditVerifier } from '../../src/runtime.ts';

/** Every record in the data directory's ledger, in commit order, once `audit` has flushed. */
export async function storedAuditRecords(config: Config, audit?: AuditLog): Promise<AuditRecord[]> {
  await audit?.flush();
  const engine = openLedgerEngine(config);
  try {
    const records: AuditRecord[] = [];
    for await (const batch of engine.scan()) {
      for (const r of batch) records.push(recordFromRow(r.writer, r.seq, r.prev_hash, r.hash, r.body));
    }
    return records;
  } finally {
    await engine.close();
  }
}

/** `fraudgate audit verify` on the data directory's ledger, with the runtime's trusted key. */
export async function verifyStoredAudit(
  config: Config,
  secrets: Secrets = {},
  audit?: AuditLog,
): Promise<LedgerVerifyResult> {
  await audit?.flush();
  const engine = openLedgerEngine(config);
  try {
    return await verifyLedger(engine, trustedAuditVerifier(config, secrets));
  } finally {
    await engine.close();
  }
}

/** A fresh Ed25519 signing key (PKCS#8 PEM), for tests that run live mode, where one is required. */
export function testSigningKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** A real ledger on SQLite in `dir`, signed by a fresh key, and the verifier that trusts that key. */
export function openTestLedger(
  dir: string,
  options: Partial<Omit<AuditLedgerOptions, 'engine' | 'signer'>> = {},
) {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const dbPath = join(dir, 'ledger.db');
  const engine = openSqliteLedgerStore(dbPath);
  const audit = createAuditLedger({
    engine,
    writer: 'test-writer',
    redactor: createRedactor({ hashKey: 'audit-test-key' }),
    signer: createCheckpointSigner(privateKey),
    ...options,
  });
  return {
    audit,
    engine,
    dbPath,
    verifier: createCheckpointVerifier(publicKey),
    async close() {
      await audit.close();
      await engine.close();
    },
  };
}
