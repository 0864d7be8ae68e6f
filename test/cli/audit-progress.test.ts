/**
 * Progress of `fraudgate audit verify` on a large ledger: the verifiers report how far they got,
 * a terminal shows a running count (erased before the result), and a pipe stays clean.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyProgress } from '../../src/cli/audit.ts';
import {
  createAuditLedger,
  exportLedger,
  verifyAuditFile,
  verifyLedger,
  type LedgerEngine,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const RECORDS = 2500;
const keys = generateKeyPairSync('ed25519');
const verifier = createCheckpointVerifier(keys.publicKey);
const dir = mkdtempSync(join(tmpdir(), 'fraudgate-audit-progress-'));
const exportFile = join(dir, 'export.jsonl');
const publicKeyFile = join(dir, 'audit.pub.pem');
let engine: LedgerEngine;

beforeAll(async () => {
  engine = openSqliteLedgerStore(join(dir, 'ledger.db'));
  const log = createAuditLedger({
    engine,
    writer: 'replica-a',
    redactor: createRedactor({ hashKey: 'audit-progress-key' }),
    signer: createCheckpointSigner(keys.privateKey),
    checkpointEvery: 500,
  });
  const principal = { id: 'analyst@corp.test', kind: 'user', role: 'analyst' } as const;
  for (let i = 1; i <= RECORDS; i += 1) {
    await log.append({ event: 'executed', call_id: `call-${i}`, tool: 'get_sift_score', principal });
  }
  await log.close();
  let text = '';
  for await (const chunk of exportLedger(engine)) text += chunk;
  writeFileSync(exportFile, text);
  writeFileSync(publicKeyFile, keys.publicKey.export({ type: 'spki', format: 'pem' }));
});
afterAll(async () => {
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('audit verify progress', { timeout: 120_000 }, () => {
  it('the verifiers report the records verified so far, ending at the total', async () => {
    const fromStore: number[] = [];
    expect(await verifyLedger(engine, verifier, { onProgress: (n) => fromStore.push(n) })).toMatchObject({
      ok: true,
      records: RECORDS,
    });
    const fromFile: number[] = [];
    expect(
      await verifyAuditFile(exportFile, verifier, { onProgress: (n) => fromFile.push(n) }),
    ).toMatchObject({ ok: true, records: RECORDS });
    for (const seen of [fromStore, fromFile]) {
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.at(-1)).toBe(RECORDS);
      expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    }
    // A file reports as it goes, not only at the end.
    expect(fromFile).toContain(1000);
  });

  it('on a terminal: a running count redrawn in place, erased before the result', () => {
    let t = 0;
    const written: string[] = [];
    const progress = verifyProgress({ isTTY: true, write: (s) => written.push(s) }, () => t);
    progress!.update(1000);
    progress!.update(2000); // too soon after the last drawing: skipped
    t += 1000;
    progress!.update(120_000);
    progress!.clear();
    expect(written).toEqual(['\rverifying: 1,000 records', '\rverifying: 120,000 records', '\r\u001b[K']);
  });

  it('not on a terminal: no progress at all', () => {
    expect(verifyProgress({ isTTY: false, write: () => true })).toBeUndefined();
    expect(verifyProgress({ write: () => true })).toBeUndefined();
  });

  it('through the real command with stderr a pipe: the result on stdout, nothing on stderr', async () => {
    const run = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [CLI, 'audit', 'verify', '--file', exportFile, '--public-key', publicKeyFile],
        {
          timeout: 90_000,
          env: { PATH: process.env.PATH ?? '', HOME: dir, FRAUDGATE_DATA_DIR: join(dir, 'data') },
        },
        (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ).stdin?.end();
    });
    expect(run).toEqual({
      code: 0,
      stdout: `${exportFile}: intact, ${RECORDS} records from 1 writers, ${RECORDS / 500 + 1} signed checkpoints\n`,
      stderr: '',
    });
  });
});
