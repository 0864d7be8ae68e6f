/**
 * What most figures share: the three emulators, a fresh data directory and the real runtime
 * (clients, store, audit, pipeline) with rate limits raised out of the way — a benchmark measures
 * the cost of governance, not its refusals.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tools } from '../../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config } from '../../src/config.ts';
import type { AuditLog } from '../../src/governance/audit.ts';
import { silentLogger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';

const UNLIMITED = { capacity: 1_000_000, per_minute: 1_000_000 };
/** The runtime's audit key (what the redactor hashes identifiers with). */
export const BENCH_AUDIT_KEY = 'bench-audit-key';

export interface BenchRuntime {
  sandbox: Sandbox;
  runtime: Runtime;
  config: Config;
  dataDir: string;
  close(): Promise<void>;
}

/**
 * `audit`: another audit sink instead of the runtime's own ledger (the ledger figure's baseline).
 * `postgres`: the store (and so the ledger) on PostgreSQL, in `schema`, instead of SQLite.
 */
export async function openBenchRuntime(
  options: { audit?: AuditLog; postgres?: { url: string; schema: string } } = {},
): Promise<BenchRuntime> {
  const sandbox = await startSandbox(DEFAULTS);
  const dataDir = mkdtempSync(join(tmpdir(), 'fraudgate-bench-'));
  const config: Config = {
    ...mergeConfig(DEFAULTS, {
      rate_limits: { read: UNLIMITED, write: UNLIMITED, destructive: UNLIMITED, requests: UNLIMITED },
      http: { max_sessions_per_principal: 100 },
    }),
    ...sandbox.config,
    data_dir: dataDir,
    mode: 'sandbox',
    ...(options.postgres
      ? {
          store: 'postgres' as const,
          store_postgres: { ...DEFAULTS.store_postgres, schema: options.postgres.schema },
        }
      : {}),
  };
  const runtime = await openRuntime({
    config,
    secrets: {
      ...sandbox.secrets,
      auditKey: BENCH_AUDIT_KEY,
      ...(options.postgres ? { postgresUrl: options.postgres.url } : {}),
    },
    tools,
    logger: silentLogger,
    ...(options.audit ? { audit: options.audit } : {}),
  });
  return {
    sandbox,
    runtime,
    config,
    dataDir,
    async close() {
      await runtime.close();
      await sandbox.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
