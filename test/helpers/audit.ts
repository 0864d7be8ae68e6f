/**
 * Reading the audit ledger from tests: what a runtime recorded (after its write-behind records are
 * committed), and whether the stored chains verify under the runtime's signing key.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recordFromRow, type AuditRecord } from '../../src/governance/audit.ts';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
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
import { silentLogger } from '../../src/logger.ts';
import { openAuditLedger, openLedgerEngine, trustedAuditVerifier } from '../../src/runtime.ts';
import { databasePath, openStore } from '../../src/store/store.ts';

/** Every record in the data directory's ledger, in commit order, once `audit` has flushed. */
export async function storedAuditRecords(
  config: Config,
  audit?: AuditLog,
  secrets: Secrets = {},
): Promise<AuditRecord[]> {
  await audit?.flush();
  const engine = await openLedgerEngine(config, secrets);
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
  const engine = await openLedgerEngine(config, secrets);
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

/**
 * A store and the audit ledger running on it, as a process writing as `writer` opens them (the
 * redactor keyed by the audit key); both go on `closers`, which the caller closes in reverse.
 */
export async function openStoreWithLedger(
  config: Config,
  secrets: Secrets & { auditKey: string },
  writer: string,
  closers: (() => Promise<void>)[],
) {
  const store = await openStore(config, secrets);
  closers.push(() => store.close());
  const audit = await openAuditLedger(
    config,
    secrets,
    createRedactor({ hashKey: secrets.auditKey }),
    silentLogger,
    writer,
    store,
  );
  closers.push(() => audit.close());
  return { store, audit };
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

/** How many records the data directory's ledger holds, once `audit` has flushed (cheap: no parsing). */
export async function countStoredAuditRecords(config: Config, audit?: AuditLog): Promise<number> {
  await audit?.flush();
  const db = new DatabaseSync(databasePath(config), { readOnly: true });
  try {
    return Number((db.prepare('SELECT count(*) AS n FROM audit_records').get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/** The ledger's stored record bodies as one text, exactly as stored: for "this never appears" checks. */
export async function storedAuditText(config: Config, audit?: AuditLog): Promise<string> {
  await audit?.flush();
  const db = new DatabaseSync(databasePath(config), { readOnly: true });
  try {
    const rows = db.prepare('SELECT body FROM audit_records ORDER BY id').all() as { body: string }[];
    return rows.map((r) => r.body).join('\n');
  } finally {
    db.close();
  }
}
