/**
 * Webhook receipts on both engines (see engines.ts): the outbox's group commit appends each
 * event's receipt record in the transaction that stores it (two groups in a row on a writer with
 * no head yet, repeats among them recorded as duplicates), the chain verifies, and a receipt that
 * cannot be written leaves its whole group unstored.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { AuditLog } from '../../src/governance/audit.ts';
import { verifyLedger } from '../../src/governance/audit-ledger.ts';
import { createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { silentLogger } from '../../src/logger.ts';
import { openAuditLedger, openLedgerEngine } from '../../src/runtime.ts';
import { openStore } from '../../src/store/store.ts';
import { testSigningKeyPem } from '../helpers/audit.ts';
import { ENGINES } from './engines.ts';

const principal = { id: 'automation:sift-webhook', kind: 'automation' as const, role: 'analyst' };
const event = (i: number) => ({
  entityType: 'user',
  entityId: `r${i % 40}`,
  decisionId: 'watch',
  time: 100 + (i % 40),
});
const receipt = (i: number) => ({
  call_id: `call-${i}`,
  principal,
  tool: 'sift_webhook',
  target: `sift_user:r${i}`,
});

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`outbox receipts: ${engine.name}`, () => {
    it('commits each receipt with its event; groups in a row on a new writer; a failing receipt stores nothing', async () => {
      const { config, secrets: base } = engine.fresh();
      const pem = testSigningKeyPem();
      const secrets = { ...base, auditKey: 'receipt-test-key', auditSigningKey: pem };
      const store = await openStore(config, secrets);
      const audit = await openAuditLedger(
        config,
        secrets,
        createRedactor({ hashKey: 'receipt-test-key' }),
        silentLogger,
        'replica-r',
        store,
      );
      try {
        // Two groups back to back (this turn, then the next) on a writer with no head yet; 10 repeats.
        const first = Array.from({ length: 25 }, (_, i) =>
          store.outbox.enqueue(event(i), undefined, { audit, receipt: receipt(i) }),
        );
        await new Promise((resolve) => setImmediate(resolve));
        const second = Array.from({ length: 25 }, (_, i) =>
          store.outbox.enqueue(event(25 + i), undefined, { audit, receipt: receipt(25 + i) }),
        );
        const stored = await Promise.all([...first, ...second]);
        expect(stored.filter((s) => !s.duplicate)).toHaveLength(40);
        expect(stored.filter((s) => s.duplicate)).toHaveLength(10);

        const failing: AuditLog = {
          ...audit,
          appendManyIn: () => Promise.reject(new Error('injected: ledger full')),
        };
        await expect(
          Promise.all([
            store.outbox.enqueue(event(1000), undefined, { audit: failing, receipt: receipt(1000) }),
            store.outbox.enqueue({ ...event(1001), entityId: 'other' }, undefined, {
              audit,
              receipt: receipt(1001),
            }),
          ]),
        ).rejects.toThrow('injected');
        expect(await store.outbox.unrouted(100)).toHaveLength(40);

        await audit.close();
        const verifier = createCheckpointVerifier(createPublicKey(createPrivateKey(pem)));
        const ledger = await openLedgerEngine(config, secrets, { store });
        try {
          expect(await verifyLedger(ledger, verifier)).toMatchObject({
            ok: true,
            records: 50,
            writers: 1,
            unsealed: 0,
          });
        } finally {
          if (config.store === 'sqlite') await ledger.close();
        }
      } finally {
        await audit.close();
        await store.close();
      }
    });
  });
}
