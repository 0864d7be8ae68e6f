/**
 * `setup()` for protocol tests: the three emulators, a temp data directory, the real runtime
 * (clients, SQLite store, audit log, pipeline) and a real MCP `Client` connected over the SDK's
 * in-memory transport. `callTool` returns the parsed structured output or error.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { ElicitRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { tools as allTools } from '../../tools/index.ts';
import { configSchema, DEFAULTS, mergeConfig, type Config, type Secrets } from '../../src/config.ts';
import { silentLogger, type Logger } from '../../src/logger.ts';
import { openRuntime, type Runtime } from '../../src/runtime.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { createMcpServer } from '../../src/server.ts';
import type { AnyTool, Principal } from '../../src/tool.ts';

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface SetupOptions {
  config?: DeepPartial<Config>;
  principal?: Principal;
  /** Answer elicitation requests (declares the capability); absent = client without elicitation. */
  elicit?: (message: string) => {
    action: 'accept' | 'decline' | 'cancel';
    content?: Record<string, unknown>;
  };
  tools?: readonly AnyTool[];
  /** Reuse a sandbox (e.g. across a simulated restart). */
  sandbox?: Sandbox;
  dataDir?: string;
  redisUrl?: string;
  /** More secrets, e.g. `postgresUrl` and a shared `dataKey` for replicas on `store: postgres`. */
  secrets?: Partial<Secrets>;
  /** Where the runtime logs (default: nowhere). */
  logger?: Logger;
  /** The replica id `serve` would pass (approvals it executes carry it); default none, as the CLI. */
  replicaId?: string;
}

export interface CallResult {
  isError: boolean;
  /** structuredContent on success. */
  output: Record<string, unknown>;
  /** `error` object of an isError result. */
  error: { code: string; message: string; retryable: boolean; [key: string]: unknown };
  raw: CallToolResult;
}

export interface TestEnv {
  client: Client;
  runtime: Runtime;
  sandbox: Sandbox;
  config: Config;
  dataDir: string;
  callTool(
    name: string,
    args: Record<string, unknown>,
    options?: {
      onprogress?: (p: { progress: number; total?: number; message?: string }) => void;
      signal?: AbortSignal;
    },
  ): Promise<CallResult>;
  /** Reconnect a fresh runtime and client on the same data dir and sandbox (a server restart). */
  restart(options?: Omit<SetupOptions, 'sandbox' | 'dataDir'>): Promise<TestEnv>;
  close(): Promise<void>;
}

export const ANALYST: Principal = { id: 'ana.analyst@example.com', kind: 'user', role: 'analyst' };

const TEST_DEFAULTS: DeepPartial<Config> = {
  approvals: { wait_ms: 0, poll_ms: 20 },
  sift: { max_retries: 2, timeout_ms: 2000 },
  segment: { delivery_timeout_ms: 3000, timeout_ms: 2000 },
  salesforce: { timeout_ms: 5000 },
};

export async function setup(options: SetupOptions = {}): Promise<TestEnv> {
  const sandbox = options.sandbox ?? (await startSandbox(DEFAULTS));
  const ownsSandbox = !options.sandbox;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'fraudgate-test-'));
  const ownsDataDir = !options.dataDir;
  // As loadConfig merges a config file: a map given here (traits, field maps) replaces the default.
  let config: Config = mergeConfig(mergeConfig(DEFAULTS, TEST_DEFAULTS), options.config ?? {}, configSchema);
  config = { ...config, ...sandbox.config, data_dir: dataDir, mode: 'sandbox' };
  if (options.config?.sift) config.sift = { ...config.sift, ...options.config.sift } as Config['sift'];
  if (options.config?.segment)
    config.segment = { ...config.segment, ...options.config.segment } as Config['segment'];
  if (options.config?.salesforce)
    config.salesforce = { ...config.salesforce, ...options.config.salesforce } as Config['salesforce'];
  const runtime = await openRuntime({
    config,
    secrets: {
      ...sandbox.secrets,
      auditKey: 'test-audit-key',
      // Used only by tests that select rate_limits.store = redis.
      redisUrl: options.redisUrl ?? 'redis://127.0.0.1:6379',
      ...options.secrets,
    },
    tools: options.tools ?? allTools,
    logger: options.logger ?? silentLogger,
    ...(options.replicaId ? { replicaId: options.replicaId } : {}),
  });
  const server = createMcpServer({
    pipeline: runtime.pipeline,
    principal: options.principal ?? ANALYST,
    logger: silentLogger,
  });
  const client = new Client(
    { name: 'fraudgate-test', version: '0.0.0' },
    options.elicit ? { capabilities: { elicitation: { form: {} } } } : {},
  );
  if (options.elicit) {
    const answer = options.elicit;
    client.setRequestHandler(ElicitRequestSchema, (request) => answer(request.params.message));
  }
  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair();
  await server.connect(serverTransport);
  await client.connect(clientTransport);
  await client.listTools(); // the SDK client validates structured output only for tools it has listed

  const env: TestEnv = {
    client,
    runtime,
    sandbox,
    config,
    dataDir,
    async callTool(name, args, callOptions = {}) {
      const raw = (await client.callTool({ name, arguments: args }, undefined, {
        ...(callOptions.onprogress ? { onprogress: callOptions.onprogress } : {}),
        ...(callOptions.signal ? { signal: callOptions.signal } : {}),
        timeout: 30_000,
      })) as CallToolResult;
      // The JSON mirror is the last text block (an untrusted-data notice may come first).
      const text = raw.content.findLast((c) => c.type === 'text');
      const parsed = text && text.type === 'text' ? (JSON.parse(text.text) as Record<string, unknown>) : {};
      return {
        isError: raw.isError === true,
        output: (raw.structuredContent ?? {}) as Record<string, unknown>,
        error: (raw.isError ? parsed.error : undefined) as CallResult['error'],
        raw,
      };
    },
    async restart(restartOptions = {}) {
      await client.close();
      await runtime.close();
      return setup({ ...options, ...restartOptions, sandbox, dataDir });
    },
    async close() {
      await client.close();
      await runtime.close();
      if (ownsSandbox) await sandbox.close();
      if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return env;
}
