/**
 * Rotating FRAUDGATE_DATA_KEY: with the old key as FRAUDGATE_DATA_KEY_PREVIOUS, rows it sealed
 * still open (through a real MCP client); new seals use the new key; `fraudgate data-key status`
 * counts the stored values per key and `data-key reseal` moves them under the new key, after which
 * the old key is no longer needed.
 */
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli.ts';
import { createFieldCipher } from '../../src/store/field-crypto.ts';
import { databasePath } from '../../src/store/store.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

const PHONE = '+1 415 555 0188';
const APPROVER = { id: 'ola.approver@example.com', kind: 'user' as const, role: 'approver' as const };

let env: TestEnv | undefined;
afterEach(async () => {
  vi.unstubAllEnvs();
  await env?.close();
  env = undefined;
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((c) => ((out += String(c)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((c) => ((err += String(c)), true));
  try {
    return { code: await main(args), out, err };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

/** The key ids the approvals' sealed columns name (args is stored as a JSON string of the sealed text). */
function storedKeyIds(e: TestEnv): string[] {
  const db = new DatabaseSync(databasePath(e.config));
  try {
    const rows = db.prepare('SELECT args, reason FROM approvals').all() as {
      args: string;
      reason: string | null;
    }[];
    const sealed = rows.flatMap((r) => [JSON.parse(r.args) as unknown, r.reason]);
    return [
      ...new Set(
        sealed
          .filter((t): t is string => typeof t === 'string' && t.startsWith('enc:v1:'))
          .map((t) => t.split(':')[2]!),
      ),
    ].sort();
  } finally {
    db.close();
  }
}

describe('data key rotation', () => {
  it('rows sealed under the previous key open while FRAUDGATE_DATA_KEY_PREVIOUS is set; reseal moves them under the new key', async () => {
    const oldKey = randomBytes(32).toString('hex');
    const newKey = randomBytes(32).toString('hex');
    const oldId = createFieldCipher(Buffer.from(oldKey, 'hex')).keyId;
    const newId = createFieldCipher(Buffer.from(newKey, 'hex')).keyId;
    env = await setup({ config: { approvals: { wait_ms: 0 } }, secrets: { dataKey: oldKey } });
    const pending = await env.callTool('apply_label', {
      user_id: 'sandbox-high-risk',
      is_bad: true,
      abuse_type: 'payment_abuse',
      description: 'chargeback',
    });
    const id = pending.error.approval_id as string;
    await env.runtime.pipeline.decide(id, {
      approve: false,
      reason: `verified by phone ${PHONE}`,
      approver: APPROVER,
    });
    expect(storedKeyIds(env)).toEqual([oldId]);

    // Rotated: the new key seals, the old one still opens what it sealed.
    env = await env.restart({
      config: { approvals: { wait_ms: 0 } },
      secrets: { dataKey: newKey, dataKeyPrevious: oldKey },
    });
    const status = await env.callTool('get_approval_status', { approval_id: id });
    expect(status.isError).toBe(false);
    expect(status.output.reason).toContain(PHONE);
    const second = await env.callTool('apply_label', {
      user_id: 'sandbox-low-risk',
      is_bad: false,
      abuse_type: 'payment_abuse',
      description: 'after rotation',
    });
    expect(second.error.code).toBe('APPROVAL_PENDING');

    expect(storedKeyIds(env)).toEqual([oldId, newId].sort());

    const dir = ['--sandbox', '--data-dir', env.dataDir];
    vi.stubEnv('FRAUDGATE_DATA_KEY', newKey);
    vi.stubEnv('FRAUDGATE_DATA_KEY_PREVIOUS', oldKey);
    const before = await cli(['data-key', 'status', ...dir]);
    expect(before.code).toBe(1);
    expect(before.out).toContain(`key ${oldId}  3 values  previous (FRAUDGATE_DATA_KEY_PREVIOUS)`);
    expect(before.out).toContain(`key ${newId}  1 values  current (FRAUDGATE_DATA_KEY)`);

    const resealed = await cli(['data-key', 'reseal', ...dir]);
    expect(resealed.out).toContain(`resealed 3 of 3 values under the current data key ${newId}`);
    expect(resealed.err).toContain('"type":"progress"');
    expect(resealed.err).not.toContain(PHONE);
    expect(resealed.code).toBe(0);
    expect(storedKeyIds(env)).toEqual([newId]);
    const after = await cli(['data-key', 'status', ...dir]);
    expect(after.out).not.toContain(oldId);
    expect(after.code).toBe(0);

    // A value sealed under a key that is neither current nor previous: --json names its role 'unknown'.
    const strayKey = createFieldCipher(randomBytes(32));
    const db = new DatabaseSync(databasePath(env.config));
    const { reason } = db.prepare('SELECT reason FROM approvals WHERE id = ?').get(id) as { reason: string };
    db.prepare('UPDATE approvals SET reason = ? WHERE id = ?').run(strayKey.seal('stray', 'test'), id);
    const unknown = await cli(['data-key', 'status', '--json', ...dir]);
    db.prepare('UPDATE approvals SET reason = ? WHERE id = ?').run(reason, id);
    db.close();
    const roles = (JSON.parse(unknown.out) as { keys: { key_id: string; role: string }[] }).keys;
    expect(roles).toContainEqual({ key_id: strayKey.keyId, role: 'unknown', rows: 1 });
    expect(roles.find((k) => k.key_id === newId)?.role).toBe('current');
    expect(unknown.code).toBe(1);
    vi.unstubAllEnvs();

    // The previous key is no longer needed: the start-up key check and every row open under the new key.
    env = await env.restart({ config: { approvals: { wait_ms: 0 } }, secrets: { dataKey: newKey } });
    const reopened = await env.callTool('get_approval_status', { approval_id: id });
    expect(reopened.isError).toBe(false);
    expect(reopened.output.reason).toContain(PHONE);
  });
});
