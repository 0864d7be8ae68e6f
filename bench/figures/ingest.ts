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
import { startBareIngestServer, startBarePostgresIngestServer } from '../baselines/bare-ingest-server.ts';
import pg from 'pg';
import { listening } from '../../test/helpers/services.ts';
import { BENCH_AUDIT_KEY, openBenchRuntime, type BenchRuntime } from './bench-runtime.ts';
import { postWebhooks } from './load.ts';
import { silentLogger } from '../../src/logger.ts';
import { DEFAULTS } from '../../src/config.ts';
import { createRateLimiter } from '../../src/governance/rate-limit.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { createWebhookRefusals } from '../../src/webhooks/webhook-refusals.ts';
import { openWebhookIntakeStore } from '../../src/webhooks/intake-writer.ts';
import { createSiftWebhookHandler, type SiftWebhookOptions } from '../../src/webhooks/sift-webhook.ts';

const KEY = 'bench-signature-key';
const SENDERS = 32;

/** `n` distinct decision webhooks per call (fresh times), so neither side answers duplicates. */
function freshBodies(n: number) {
  let batch = 0;
  return () => {
    batch += 1;
    return Array.from({ length: n }, (_, i) =>
      JSON.stringify({
        entity: { type: 'user', id: `bench_${i}` },
        decision: { id: 'block_user_payment_abuse' },
        time: 1_700_000_000_000 + batch * 1_000_000 + i,
      }),
    );
  };
}

/**
 * fraudgate's Sift webhook endpoint on a loopback server, storing through `outbox` and recording in
 * `audit` (also the Salesforce allowance figure's intake).
 */
export async function startSiftWebhookServer(
  outbox: SiftWebhookOptions['outbox'],
  audit: SiftWebhookOptions['audit'],
  key = KEY,
): Promise<{ url: string; close(): Promise<void> }> {
  const handler = createSiftWebhookHandler({
    outbox,
    keys: [key],
    audit,
    logger: silentLogger,
    bodyLimitBytes: 64 * 1024,
    refusals: createWebhookRefusals({
      audit,
      rateLimiter: createRateLimiter(),
      bucket: DEFAULTS.rate_limits.refusals,
      redactor: createRedactor({ hashKey: 'bench-redaction-key' }),
    }),
  });
  const server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/sift`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Both sides of an ingest figure: fraudgate's webhook endpoint on `bench`'s store (through the
 * intake as `serve --http` opens it: the writer thread on SQLite, the outbox's group commit on
 * PostgreSQL) and the `bare` server, each sent the same fresh bodies by 32 senders.
 */
async function senders(
  bench: BenchRuntime,
  bodies: () => string[],
  bare: { url: string; close(): Promise<void> },
) {
  const intake = openWebhookIntakeStore({
    config: bench.config,
    secrets: { auditKey: BENCH_AUDIT_KEY },
    outbox: bench.runtime.store.outbox,
    audit: bench.runtime.audit,
  });
  const server = await startSiftWebhookServer(intake, bench.runtime.audit);
  return {
    fraudgate: async () => ({ value: await postWebhooks(server.url, KEY, bodies(), SENDERS) }),
    baseline: async () => ({ value: await postWebhooks(bare.url, KEY, bodies(), SENDERS) }),
    async close() {
      await server.close();
      await bare.close();
      await intake.close();
      await bench.close();
    },
  };
}

export const ingest: Figure = {
  id: 'ingest_per_s',
  title: 'webhook durable ingest, SQLite, 32 senders',
  unit: 'webhooks/s',
  better: 'higher',
  baseline: 'bare group-commit HTTP + SQLite',
  target: '≥ 5,000/s',
  met: (r) => r.fraudgate.median >= 5000,
  async open({ quick }) {
    const bodies = freshBodies(quick ? 1000 : 4000);
    const bench = await openBenchRuntime();
    return senders(bench, bodies, await startBareIngestServer(join(bench.dataDir, 'bare.db'), KEY));
  },
};

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const ingestPostgres: Figure = {
  id: 'ingest_per_s_postgres',
  title: 'webhook durable ingest, PostgreSQL, 32 senders',
  unit: 'webhooks/s',
  better: 'higher',
  baseline: 'bare group-commit HTTP + PostgreSQL (one multi-row INSERT per group, same pool size)',
  target: 'reported (issue 11 sets no PostgreSQL target)',
  met: () => true,
  async open({ quick }) {
    const bodies = freshBodies(quick ? 1000 : 4000);
    const schema = `fg_bench_ingest_${process.pid}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.query(`DROP SCHEMA IF EXISTS ${schema}_bare CASCADE`);
    const bench = await openBenchRuntime({ postgres: { url: PG_URL, schema } });
    const bare = await startBarePostgresIngestServer(
      PG_URL,
      `${schema}_bare`,
      KEY,
      DEFAULTS.store_postgres.pool_size,
    );
    const run = await senders(bench, bodies, bare);
    return {
      ...run,
      async close() {
        await run.close();
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await admin.query(`DROP SCHEMA IF EXISTS ${schema}_bare CASCADE`);
        await admin.end();
      },
    };
  },
};

/** The ingest figures for bench/run.ts; the PostgreSQL one only where 127.0.0.1:5432 answers. */
export const ingestFigures: Figure[] = [
  ingest,
  ...((await listening(5432))
    ? [ingestPostgres]
    : (process.stderr.write('ingest_per_s_postgres: skipped, nothing listens on 127.0.0.1:5432\n'), [])),
];
