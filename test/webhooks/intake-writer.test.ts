/**
 * The SQLite intake's writer thread appends receipts to the process's ledger chain from a
 * connection of its own, while the main thread's ledger appends to the same chain: neither fails
 * for the other moving the head (the main ledger's commits re-chain), the chain stays whole,
 * checkpoints fall due on both sides, and the closed process leaves it sealed.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';
import { decisionBody, outboxEnv, sign } from '../outbox/helpers.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-intake-writer-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('webhook intake writer thread (SQLite)', () => {
  it('shares the process chain with the main ledger under load, and leaves it verified and sealed', async () => {
    const env = await outboxEnv({ dataDir, config: { audit: { checkpoint_every: 25 } } });
    const audit = env.automation.runtime.audit;
    const principal = { id: 'analyst@example.com', kind: 'user' as const, role: 'analyst' };
    const webhooks = Array.from({ length: 250 }, (_, i) =>
      decisionBody(`user_thread_${i}`, 'block_user_payment_abuse', 1_700_000_300_000 + i),
    );
    const [answers, appended] = await Promise.all([
      Promise.all(webhooks.map((body) => env.post(body, { 'x-sift-science-signature': sign(body) }))),
      // One commit per append, each racing the intake's commits for the head.
      (async () => {
        const records = [];
        for (let i = 0; i < 250; i += 1) {
          records.push(
            await audit.append({ event: 'executed', call_id: randomUUID(), tool: `main_${i}`, principal }),
          );
        }
        return records;
      })(),
    ]);
    expect(answers.every((a) => a.status === 200 && a.json.status === 'accepted')).toBe(true);
    expect(appended).toHaveLength(250);
    expect(audit.health()).toEqual({ ok: true });
    await env.close();

    const config = env.config;
    const records = await storedAuditRecords(config);
    expect(records.filter((r) => r.event === 'webhook_accepted')).toHaveLength(250);
    expect(records.filter((r) => r.tool?.startsWith('main_'))).toHaveLength(250);
    expect(new Set(records.map((r) => r.writer))).toEqual(new Set([audit.writer]));
    expect(await verifyStoredAudit(config)).toMatchObject({ ok: true, writers: 1, unsealed: 0 });
  });
});
