/**
 * The ledger as an operator and a client meet it: `fraudgate audit verify` / `export` on a data
 * directory written by a real runtime, and failing closed (calls refused, `/readyz` 503) while the
 * ledger cannot write, through a real MCP client.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli.ts';
import { databasePath } from '../../src/store/store.ts';
import { startHttpServer } from '../../src/transports/http.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await env?.close();
  env = undefined;
});

/** Runs the CLI in-process and captures what it prints. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stdout = vi
    .spyOn(process.stdout, 'write')
    .mockImplementation((chunk) => ((out += String(chunk)), true));
  const stderr = vi
    .spyOn(process.stderr, 'write')
    .mockImplementation((chunk) => ((err += String(chunk)), true));
  try {
    const code = await main(args);
    return { code, out, err };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

describe('fraudgate audit', () => {
  it('verify checks the data directory’s ledger and names the first tampered record', async () => {
    env = await setup();
    await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    await env.callTool('create_fraud_case', { user_id: 'sandbox-high-risk', summary: 'audited' });
    await env.runtime.audit.close();
    const dir = ['--sandbox', '--data-dir', env.dataDir];

    const intact = await cli(['audit', 'verify', ...dir]);
    expect(intact.code).toBe(0);
    expect(intact.out).toMatch(/intact, 2 records from 1 writers/);

    const db = new DatabaseSync(databasePath(env.config));
    const second = db
      .prepare('SELECT id, writer, seq FROM audit_records ORDER BY id LIMIT 1 OFFSET 1')
      .get() as {
      id: number;
      writer: string;
      seq: number;
    };
    db.prepare(`UPDATE audit_records SET body = replace(body, '"event"', '"event" ') WHERE id = ?`).run(
      second.id,
    );
    db.close();
    const tampered = await cli(['audit', 'verify', ...dir]);
    expect(tampered.code).toBe(1);
    expect(tampered.out).toContain(
      `TAMPERED at writer ${second.writer} seq ${second.seq}: hash mismatch (record edited)`,
    );
  });

  it('export streams JSON Lines that verify as a file; only the trusted key verifies them', async () => {
    env = await setup();
    await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    await env.runtime.audit.close();
    const dir = ['--sandbox', '--data-dir', env.dataDir];

    const exported = await cli(['audit', 'export', '--format', 'jsonl', ...dir]);
    expect(exported.code).toBe(0);
    const lines = exported.out.trimEnd().split('\n');
    const records = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.type !== 'checkpoint');
    expect(records.map((r) => r.event)).toEqual(['executed', 'executed']);
    expect(records[0]).toMatchObject({
      v: 2,
      seq: 1,
      tool: 'get_sift_score',
      principal: { id: env.runtime.config.analyst ?? expect.any(String) },
    });

    const scratch = mkdtempSync(join(tmpdir(), 'fraudgate-audit-cli-'));
    cleanups.push(() => rmSync(scratch, { recursive: true, force: true }));
    const file = join(scratch, 'export.jsonl');
    writeFileSync(file, exported.out);
    expect((await cli(['audit', 'verify', '--file', file, ...dir])).code).toBe(0);

    // An auditor's own copy of some other public key does not vouch for these checkpoints.
    const otherKey = join(scratch, 'other.pub.pem');
    writeFileSync(otherKey, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }));
    const wrongKey = await cli(['audit', 'verify', '--file', file, '--public-key', otherKey, ...dir]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.out).toContain('not the trusted key');

    const badSince = await cli(['audit', 'export', '--since', 'yesterday-ish', ...dir]);
    expect(badSince.code).toBe(2);
    expect(badSince.err).toContain('--since');
  });
});

describe('signing-key rotation', () => {
  it('a ledger spanning a signing-key rotation verifies with both public keys; with only one it reports which checkpoint is signed by an untrusted key', async () => {
    const scratch = mkdtempSync(join(tmpdir(), 'fraudgate-audit-rotation-'));
    cleanups.push(() => rmSync(scratch, { recursive: true, force: true }));
    const pair = (name: string) => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const pub = join(scratch, `${name}.pub.pem`);
      writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }));
      return { pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), pub };
    };
    const oldKey = pair('old');
    const newKey = pair('new');
    const dataDir = join(scratch, 'data');
    // The same writer before and after the operator rotated FRAUDGATE_AUDIT_SIGNING_KEY.
    env = await setup({ dataDir, secrets: { auditSigningKey: oldKey.pem }, replicaId: 'replica-1' });
    await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    env = await env.restart({ secrets: { auditSigningKey: newKey.pem }, replicaId: 'replica-1' });
    await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    await env.runtime.audit.close();
    const dir = ['--sandbox', '--data-dir', dataDir];
    const db = new DatabaseSync(databasePath(env.config));
    const checkpoints = db
      .prepare('SELECT writer, seq FROM audit_checkpoints ORDER BY writer, seq')
      .all() as { writer: string; seq: number }[];
    db.close();
    expect(checkpoints.length).toBeGreaterThanOrEqual(2);
    const first = checkpoints[0]!;
    const last = checkpoints.at(-1)!;

    const both = await cli([
      'audit',
      'verify',
      '--public-key',
      oldKey.pub,
      '--public-key',
      newKey.pub,
      ...dir,
    ]);
    expect(both.out).toMatch(/intact, 2 records from 1 writers/);
    expect(both.code).toBe(0);
    const witness = await cli([
      'audit',
      'witness',
      '--public-key',
      oldKey.pub,
      '--public-key',
      newKey.pub,
      ...dir,
    ]);
    expect(witness.code).toBe(0);

    const onlyNew = await cli(['audit', 'verify', '--public-key', newKey.pub, ...dir]);
    expect(onlyNew.code).toBe(1);
    expect(onlyNew.out).toMatch(
      new RegExp(
        `TAMPERED at writer ${first.writer} seq ${first.seq}: checkpoint signed by key \\w+, not the trusted key`,
      ),
    );
    const onlyOld = await cli(['audit', 'verify', '--public-key', oldKey.pub, ...dir]);
    expect(onlyOld.code).toBe(1);
    expect(onlyOld.out).toMatch(
      new RegExp(
        `TAMPERED at writer ${last.writer} seq ${last.seq}: checkpoint signed by key \\w+, not the trusted key`,
      ),
    );
  });
});

describe('failing closed', () => {
  it('while the ledger cannot write, calls are refused (reads too) and /readyz says so; both recover by themselves', async () => {
    env = await setup();
    const http = await startHttpServer(env.runtime, { host: '127.0.0.1', port: 0 });
    cleanups.push(() => http.close());
    const ready = async () => {
      const res = await fetch(http.mcpUrl.replace(/\/mcp$/, '/readyz'));
      return { status: res.status, body: (await res.json()) as { checks: Record<string, string> } };
    };
    expect((await ready()).body.checks.audit).toBe('ok');

    const db = new DatabaseSync(databasePath(env.config));
    db.exec('ALTER TABLE audit_records RENAME TO audit_records_away');
    const write = await env.callTool('create_fraud_case', {
      user_id: 'sandbox-high-risk',
      summary: 'not now',
    });
    expect(write.isError).toBe(true);
    expect(
      env.sandbox.salesforce.records('Case').filter((c) => c.Sift_User_Id__c === 'sandbox-high-risk'),
    ).toHaveLength(0);

    const read = await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' });
    expect(read.isError).toBe(true);
    expect(read.error).toMatchObject({ code: 'UPSTREAM_ERROR', retryable: true });
    expect(read.error.message).toMatch(/audit ledger cannot be written/);
    expect(env.sandbox.sift.requests('GET', '/v205/users/:id/score')).toHaveLength(0);
    const notReady = await ready();
    expect(notReady.status).toBe(503);
    expect(notReady.body.checks.audit).toBe('failing');

    db.exec('ALTER TABLE audit_records_away RENAME TO audit_records');
    db.close();
    // The ledger retries every second; /readyz follows it.
    const until = Date.now() + 20_000;
    while ((await ready()).body.checks.audit !== 'ok' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await ready()).body.checks.audit).toBe('ok');
    expect((await env.callTool('get_sift_score', { user_id: 'sandbox-low-risk' })).isError).toBe(false);
    const events = (await storedAuditRecords(env.config, env.runtime.audit)).map(
      (r) => `${r.tool}:${r.event}`,
    );
    expect(events.at(-1)).toBe('get_sift_score:executed');
  });
});
