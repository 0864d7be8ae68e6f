/**
 * `fraudgate audit witness` and `audit verify --witness`. The store alone cannot show a ledger cut
 * back to an earlier checkpoint (records, later checkpoints and the writer's head together) or a
 * writer erased whole: what is left verifies. A witness taken earlier and kept off the box can.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuditLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';
import { databasePath } from '../../src/store/store.ts';
import { CLI, cliEnv } from '../helpers/cli.ts';

const keys = generateKeyPairSync('ed25519');
const signingKeyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A data directory whose ledger holds replica-a (`a` records) and replica-b (`b`), a checkpoint every 5. */
async function dataDir(a: number, b: number) {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-witness-'));
  dirs.push(dir);
  await append(dir, 'replica-a', a);
  await append(dir, 'replica-b', b);
  return dir;
}

async function append(dir: string, writer: string, n: number) {
  const engine = openSqliteLedgerStore(databasePath({ data_dir: dir }));
  const log = createAuditLedger({
    engine,
    writer,
    redactor: createRedactor({ hashKey: 'k' }),
    signer: createCheckpointSigner(keys.privateKey),
    checkpointEvery: 5,
  });
  for (let i = 1; i <= n; i++) {
    await log.append({
      event: 'executed',
      call_id: `${writer}-${i}`,
      tool: 'get_sift_score',
      principal: { id: 'analyst@corp.test', kind: 'user', role: 'analyst' },
    });
  }
  await log.close();
  await engine.close();
}

function fraudgate(dir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: cliEnv(dir, { FRAUDGATE_AUDIT_SIGNING_KEY: signingKeyPem }) },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const attack = (dir: string, script: string) => {
  const db = new DatabaseSync(databasePath({ data_dir: dir }));
  try {
    db.exec(script);
  } finally {
    db.close();
  }
};

/** replica-a cut back to its checkpoint at seq 5: later records, later checkpoints, and the head. */
const CUT_BACK_TO_5 = `
  DELETE FROM audit_records WHERE writer = 'replica-a' AND seq > 5;
  DELETE FROM audit_checkpoints WHERE writer = 'replica-a' AND seq > 5;
  UPDATE audit_writers SET seq = 5, sealed_seq = 5,
    hash = (SELECT hash FROM audit_records WHERE writer = 'replica-a' AND seq = 5)
   WHERE writer = 'replica-a';`;

const ERASE_B = `
  DELETE FROM audit_records WHERE writer = 'replica-b';
  DELETE FROM audit_checkpoints WHERE writer = 'replica-b';
  DELETE FROM audit_writers WHERE writer = 'replica-b';`;

describe('audit witness', { timeout: 60_000 }, () => {
  it('writes the newest signed checkpoint of every writer; an untouched ledger that grew since verifies against it', async () => {
    const dir = await dataDir(12, 7);
    const out = join(dir, 'witness.json');
    const taken = await fraudgate(dir, ['audit', 'witness', '--out', out]);
    expect(taken.code).toBe(0);
    const witness = JSON.parse(readFileSync(out, 'utf8')) as {
      format: string;
      writers: { writer: string; seq: number; signature: string }[];
    };
    expect(witness.format).toBe('fraudgate-audit-witness/1');
    // Each ledger sealed its head on close.
    expect(witness.writers.map((w) => [w.writer, w.seq])).toEqual([
      ['replica-a', 12],
      ['replica-b', 7],
    ]);
    await append(dir, 'replica-a', 3);
    const verified = await fraudgate(dir, ['audit', 'verify', '--witness', out]);
    expect(verified.stdout).toMatch(/intact, 22 records from 2 writers/);
    expect(verified.code).toBe(0);
  });

  it('a writer cut back to an earlier checkpoint verifies alone, and fails against the witness naming writer and seq', async () => {
    const dir = await dataDir(12, 7);
    const out = join(dir, 'witness.json');
    expect((await fraudgate(dir, ['audit', 'witness', '--out', out])).code).toBe(0);
    attack(dir, CUT_BACK_TO_5);
    // The store alone cannot tell (what is left is consistent and signed).
    expect((await fraudgate(dir, ['audit', 'verify'])).code).toBe(0);
    const verified = await fraudgate(dir, ['audit', 'verify', '--witness', out]);
    expect(verified.code).toBe(1);
    expect(verified.stdout).toMatch(
      /TAMPERED at writer replica-a seq 6: missing: .* saw seq 12 but the chain ends at 5/,
    );
  });

  it('a writer erased whole fails against the witness', async () => {
    const dir = await dataDir(12, 7);
    const out = join(dir, 'witness.json');
    expect((await fraudgate(dir, ['audit', 'witness', '--out', out])).code).toBe(0);
    attack(dir, ERASE_B);
    expect((await fraudgate(dir, ['audit', 'verify'])).code).toBe(0);
    const verified = await fraudgate(dir, ['audit', 'verify', '--witness', out]);
    expect(verified.code).toBe(1);
    expect(verified.stdout).toMatch(/TAMPERED at writer replica-b seq 7: writer missing/);
  });

  it('a witness whose entry was altered is refused, naming --witness and the entry', async () => {
    const dir = await dataDir(6, 1);
    const taken = await fraudgate(dir, ['audit', 'witness']);
    expect(taken.code).toBe(0);
    const witness = JSON.parse(taken.stdout) as { writers: { seq: number }[] };
    witness.writers[0]!.seq = 1;
    const forged = join(dir, 'forged.json');
    writeFileSync(forged, JSON.stringify(witness));
    const verified = await fraudgate(dir, ['audit', 'verify', '--witness', forged]);
    expect(verified.code).not.toBe(0);
    expect(verified.stderr).toMatch(
      /--witness.*writers\[0\] \(writer replica-a seq 1\): signature does not verify/,
    );
  });
});
