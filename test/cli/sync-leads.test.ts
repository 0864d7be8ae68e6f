/**
 * `fraudgate sync leads --once` through the real CLI, against a sandbox another process runs on the
 * same data dir (the emulators live in this test process, as they would in a running `serve`): the
 * first poll takes a baseline, a Lead a human then creates is enriched by the next poll, and a third
 * poll (a new process, so only the store's watermark remembers) finds nothing new.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { startPersistentSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
let dataDir: string;
let sandbox: Sandbox;

function syncLeads(): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'sync', 'leads', '--once'],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: dataDir,
          FRAUDGATE_DATA_DIR: dataDir,
          FRAUDGATE_LOG_LEVEL: 'warn',
        },
        timeout: 90_000,
      },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The poll's one JSON line on stdout. */
async function poll(): Promise<{ baseline?: boolean; leads: { lead_id: string; outcome: string }[] }> {
  const run = await syncLeads();
  expect(run.code, run.stderr).toBe(0);
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  const line = JSON.parse(lines[0]!) as { type: string; baseline?: boolean; leads: [] };
  expect(line.type).toBe('poll');
  return line;
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-sync-leads-'));
  sandbox = await startPersistentSandbox(DEFAULTS, dataDir);
});
afterAll(async () => {
  await sandbox?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('fraudgate sync leads --once', () => {
  it(
    'takes a baseline, enriches a Lead created after it exactly once, across processes',
    { timeout: 240_000 },
    async () => {
      const first = await poll();
      expect(first.baseline).toBe(true);
      expect(first.leads).toEqual([]);

      const created = sandbox.salesforce.createAs('Lead', {
        LastName: 'Hal',
        Company: 'High Risk Trading',
        Email: 'hal.cli@example.com',
        Sift_User_Id__c: 'sandbox-high-risk',
      });
      const second = await poll();
      expect(second.leads).toEqual([expect.objectContaining({ lead_id: created.Id, outcome: 'scored' })]);
      const lead = sandbox.salesforce.records('Lead').find((r) => r.Id === created.Id);
      expect(lead?.Sift_Checked_At__c).toBeTruthy();
      expect(lead?.Sift_Score__c).toBe(94);

      const third = await poll();
      expect(third.leads).toEqual([]);
    },
  );
});
