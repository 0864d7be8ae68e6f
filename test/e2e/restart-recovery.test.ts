/**
 * End to end: `serve` restarted under its replica id settles at start-up the approvals its previous
 * process died executing, without waiting for an approval sweep (turned off here, as on a replica
 * that does not hold the sweep's lease); another replica's claim is left to the 10-minute rule.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, connectServe } from '../helpers/cli.ts';

const REPLICA = 'replica-restart-e2e';

let dataDir: string;
const startServe = () =>
  connectServe(
    'restart-recovery-test',
    cliEnv(dataDir, {
      FRAUDGATE_ANALYST: 'e2e.analyst@example.com',
      FRAUDGATE_CONFIG: join(dataDir, 'config.json'),
      FRAUDGATE_REPLICA_ID: REPLICA,
    }),
  );

async function requestLabel(client: Client, abuseType: string): Promise<string> {
  const result = (await client.callTool({
    name: 'apply_label',
    arguments: { user_id: 'sandbox-high-risk', is_bad: true, abuse_type: abuseType, description: 'e2e' },
  })) as CallToolResult;
  const block = result.content[0];
  const body = block?.type === 'text' ? (JSON.parse(block.text) as { error?: { approval_id?: string } }) : {};
  return String(body.error?.approval_id);
}

const stateOf = (id: string) => {
  const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
  try {
    return (db.prepare('SELECT state FROM approvals WHERE id = ?').get(id) as { state: string }).state;
  } finally {
    db.close();
  }
};

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-restart-'));
  writeFileSync(
    join(dataDir, 'config.json'),
    JSON.stringify({ approvals: { wait_ms: 0 }, jobs: { approval_sweep: { enabled: false } } }),
  );
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('serve restarted under its replica id', () => {
  it(
    'settles at start-up what its previous process died executing, and only that',
    { timeout: 120_000 },
    async () => {
      const first = await startServe();
      const [ours, theirs] = [
        await requestLabel(first, 'payment_abuse'),
        await requestLabel(first, 'account_abuse'),
      ];
      await first.close();
      // What the previous process, killed mid-call moments ago, and a live other replica leave behind.
      const db = new DatabaseSync(join(dataDir, 'fraudgate.db'));
      const claim = db.prepare(
        "UPDATE approvals SET state = 'executing', executed_at = ?, executed_by = ? WHERE id = ?",
      );
      claim.run(new Date().toISOString(), REPLICA, ours);
      claim.run(new Date().toISOString(), 'another-replica', theirs);
      db.close();

      const second = await startServe();
      try {
        // No sweep runs here: only the start-up recovery can move it.
        for (let tries = 0; tries < 300 && stateOf(ours) === 'executing'; tries++) await sleep(100);
        expect(stateOf(ours)).toBe('executed');
        expect(stateOf(theirs)).toBe('executing');
      } finally {
        await second.close();
      }
    },
  );
});
