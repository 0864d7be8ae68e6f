/**
 * Changes to governance data (identity mappings) need an authenticated human and leave an audit
 * record naming them: no credential or a non-approver's changes nothing and records nothing.
 * (Outbox retry/drop: test/outbox/worker.test.ts; approval decisions: test/e2e/stdio.test.ts.)
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { runApprovalsCommand } from '../../src/cli/approvals.ts';
import { runIdentitiesCommand } from '../../src/cli/identities.ts';
import { DEFAULTS, type LoadedConfig } from '../../src/config.ts';
import { openStore } from '../../src/store/store.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { labelRequest } from '../helpers/approvals.ts';

const APPROVER_KEY = 'identity-approver-key-0123456789';
const ANALYST_KEY = 'identity-analyst-key-0123456789';
const BOT_KEY = 'identity-bot-admin-key-0123456789';
const sha256 = (key: string) => createHash('sha256').update(key).digest('hex');

let dir: string;
let loaded: LoadedConfig;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-actors-'));
  loaded = {
    config: {
      ...DEFAULTS,
      data_dir: dir,
      auth: {
        key_hashes: [
          {
            sha256: sha256(APPROVER_KEY),
            principal: 'ida.approver@example.com',
            kind: 'user',
            role: 'approver',
          },
          {
            sha256: sha256(ANALYST_KEY),
            principal: 'ana.analyst@example.com',
            kind: 'user',
            role: 'analyst',
          },
          // An agent's key with the admin role: the default kind of an API key is 'service'.
          { sha256: sha256(BOT_KEY), principal: 'ops-bot', kind: 'service', role: 'admin' },
        ],
      },
    },
    secrets: { auditKey: 'test-audit-key' },
    modeReason: 'test',
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const as = (token?: string): LoadedConfig => ({
  ...loaded,
  secrets: { ...loaded.secrets, ...(token ? { approverToken: token } : {}) },
});

const audit = () => storedAuditRecords(loaded.config);

async function mappings() {
  const store = await openStore(loaded.config, loaded.secrets);
  try {
    return await store.identities.listMappings();
  } finally {
    await store.close();
  }
}

async function run(args: string[], config: LoadedConfig) {
  const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    return await runIdentitiesCommand(args, {}, config);
  } finally {
    write.mockRestore();
  }
}

describe('identity mappings', () => {
  it('map and unmap without a credential, or with an analyst key, are refused: nothing changes, nothing is recorded', async () => {
    await expect(run(['map', 'sift-1', 'seg-1'], as())).rejects.toThrow(/FRAUDGATE_APPROVER_TOKEN/);
    await expect(run(['map', 'sift-1', 'seg-1'], as(ANALYST_KEY))).rejects.toThrow(/role 'analyst'/);
    await expect(run(['map', 'sift-1', 'seg-1'], as('forged'))).rejects.toThrow(/refused/);
    expect(await mappings()).toEqual([]);
    expect((await audit()).filter((r) => r.event.startsWith('identity_'))).toEqual([]);
  });

  it('map, re-map and unmap by an approver are audited with that approver and the values before and after', async () => {
    expect(await run(['map', 'sift-1', 'seg-1'], as(APPROVER_KEY))).toBe(0);
    expect(await run(['map', 'sift-1', 'seg-2'], as(APPROVER_KEY))).toBe(0);
    expect(await mappings()).toMatchObject([
      { sift_user_id: 'sift-1', segment_user_id: 'seg-2', mapped_by: 'ida.approver@example.com' },
    ]);
    await expect(run(['unmap', 'sift-1'], as())).rejects.toThrow(/FRAUDGATE_APPROVER_TOKEN/);
    expect(await run(['unmap', 'sift-1'], as(APPROVER_KEY))).toBe(0);
    expect(await mappings()).toEqual([]);

    const records = (await audit()).filter((r) => r.event.startsWith('identity_'));
    expect(records.map((r) => [r.event, r.principal.id, r.principal.role, r.target])).toEqual([
      ['identity_mapped', 'ida.approver@example.com', 'approver', 'sift_user:sift-1'],
      ['identity_mapped', 'ida.approver@example.com', 'approver', 'sift_user:sift-1'],
      ['identity_unmapped', 'ida.approver@example.com', 'approver', 'sift_user:sift-1'],
    ]);
    expect(records.map((r) => r.args_redacted)).toEqual([
      { sift_user_id: 'sift-1', segment_user_id: 'seg-1', previous_segment_user_id: null },
      { sift_user_id: 'sift-1', segment_user_id: 'seg-2', previous_segment_user_id: 'seg-1' },
      { sift_user_id: 'sift-1', previous_segment_user_id: 'seg-2' },
    ]);
  });
});

describe('approval decisions from the CLI', () => {
  it('a service credential, even an admin, cannot approve or deny: refused, still pending, nothing recorded', async () => {
    const store = await openStore(loaded.config, loaded.secrets);
    try {
      await store.approvals.create(labelRequest('apr_clibot0000000000000'));
    } finally {
      await store.close();
    }
    const decide = async (args: string[], values: { reason?: string } = {}) => {
      const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
      try {
        return await runApprovalsCommand(args, values, as(BOT_KEY));
      } finally {
        write.mockRestore();
      }
    };
    await expect(decide(['approve', 'apr_clibot0000000000000'])).rejects.toThrow(
      /ops-bot is a service credential; only a person may approve approvals.*your own API key/,
    );
    await expect(decide(['deny', 'apr_clibot0000000000000'], { reason: 'bot' })).rejects.toThrow(
      /service credential/,
    );
    const after = await openStore(loaded.config, loaded.secrets);
    try {
      expect((await after.approvals.get('apr_clibot0000000000000'))?.state).toBe('pending');
    } finally {
      await after.close();
    }
    expect((await audit()).filter((r) => r.approval_id === 'apr_clibot0000000000000')).toEqual([]);
  });
});
