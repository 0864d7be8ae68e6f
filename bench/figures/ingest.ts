/**
 * Durable webhook ingest, 32 senders: signed Sift decision webhooks through fraudgate's handler
 * (signature, shape, the event and its audit record in one transaction on the intake's writer
 * thread, then 200) against a bare group-commit HTTP + SQLite server
 * (bench/baselines/bare-ingest-server.ts). Both on SQLite with synchronous = FULL in a fresh data
 * directory; the outbox worker is not running.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Figure } from '../harness.ts';
import { startBareIngestServer } from '../baselines/bare-ingest-server.ts';
import { BENCH_AUDIT_KEY, openBenchRuntime } from './bench-runtime.ts';
import { postWebhooks } from './load.ts';
import { silentLogger } from '../../src/logger.ts';
import { openWebhookIntakeStore } from '../../src/webhooks/intake-writer.ts';
import { createSiftWebhookHandler } from '../../src/webhooks/sift-webhook.ts';

const KEY = 'bench-signature-key';
const SENDERS = 32;

export const ingest: Figure = {
  id: 'ingest_per_s',
  title: 'webhook durable ingest, SQLite, 32 senders',
  unit: 'webhooks/s',
  better: 'higher',
  baseline: 'bare group-commit HTTP + SQLite',
  target: '≥ 5,000/s',
  met: (r) => r.fraudgate.median >= 5000,
  async open({ quick }) {
    const n = quick ? 1000 : 4000;
    const bench = await openBenchRuntime();
    // As `serve --http` has it: the intake's writer thread on SQLite.
    const intake = openWebhookIntakeStore({
      config: bench.config,
      secrets: { auditKey: BENCH_AUDIT_KEY },
      outbox: bench.runtime.store.outbox,
      audit: bench.runtime.audit,
    });
    const handler = createSiftWebhookHandler({
      outbox: intake,
      keys: [KEY],
      audit: bench.runtime.audit,
      logger: silentLogger,
      bodyLimitBytes: 64 * 1024,
    });
    const server = createServer((req, res) => {
      void handler(req, res).then((handled) => {
        if (!handled) res.writeHead(404).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/sift`;
    const bare = await startBareIngestServer(join(bench.dataDir, 'bare.db'), KEY);
    let batch = 0;
    // Fresh events every repetition (distinct times), so neither side answers duplicates.
    const bodies = () => {
      batch += 1;
      return Array.from({ length: n }, (_, i) =>
        JSON.stringify({
          entity: { type: 'user', id: `bench_${i}` },
          decision: { id: 'block_user_payment_abuse' },
          time: 1_700_000_000_000 + batch * 1_000_000 + i,
        }),
      );
    };
    return {
      fraudgate: async () => ({ value: await postWebhooks(url, KEY, bodies(), SENDERS) }),
      baseline: async () => ({ value: await postWebhooks(bare.url, KEY, bodies(), SENDERS) }),
      async close() {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await bare.close();
        await intake.close();
        await bench.close();
      },
    };
  },
};
