/**
 * Shared set-up for the outbox tests and the benchmark: emulators, a temp data dir, the automation
 * (runtime + outbox + worker) and the real webhook handler on a loopback HTTP server.
 */
import { createHash, createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tools as allTools } from '../../tools/index.ts';
import { DEFAULTS, mergeConfig, type Config, type Secrets } from '../../src/config.ts';
import { sandboxSigningKeyPath } from '../../src/governance/audit-signing.ts';
import { silentLogger } from '../../src/logger.ts';
import { openAutomation, type Automation } from '../../src/outbox/automation.ts';
import { createWebhookRefusals, type WebhookRefusals } from '../../src/webhooks/webhook-refusals.ts';
import type { Runtime } from '../../src/runtime.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import type { AnyTool } from '../../src/tool.ts';
import { openWebhookIntakeStore, type WebhookIntakeStore } from '../../src/webhooks/intake-writer.ts';
import { siftUserResolver } from '../../src/webhooks/segment-mapping.ts';
import { createSegmentWebhookHandler } from '../../src/webhooks/segment-webhook.ts';
import { createSiftWebhookHandler } from '../../src/webhooks/sift-webhook.ts';
import type { DeepPartial } from '../helpers/setup.ts';

export const WEBHOOK_KEYS = ['old-rotated-key', 'current-signature-key'];

export function sign(
  body: string,
  key = WEBHOOK_KEYS[1] ?? '',
  algorithm: 'sha1' | 'sha256' = 'sha256',
): string {
  return `${algorithm}=${createHmac(algorithm, key).update(body).digest('hex')}`;
}

/** The webhook endpoints' refusal budgets as `serve --http` builds them, on `runtime`'s limiter, bucket and redactor. */
export function webhookRefusals(
  runtime: Pick<Runtime, 'audit' | 'rateLimiter' | 'config' | 'redactor'>,
): WebhookRefusals {
  return createWebhookRefusals({
    audit: runtime.audit,
    rateLimiter: runtime.rateLimiter,
    bucket: runtime.config.rate_limits.refusals,
    redactor: runtime.redactor,
  });
}

export interface OutboxEnv {
  sandbox: Sandbox;
  automation: Automation;
  config: Config;
  dataDir: string;
  webhookUrl: string;
  /** Where the webhooks store, as `serve --http` has it: on SQLite, the intake's writer thread. */
  intake: WebhookIntakeStore;
  post(
    body: string,
    headers?: Record<string, string>,
  ): Promise<{ status: number; json: Record<string, unknown> }>;
  auditRecords(): Promise<{ event: string; tool?: string; principal: { id: string }; target?: string }[]>;
  close(): Promise<void>;
}

export async function outboxEnv(
  options: {
    config?: DeepPartial<Config>;
    dataDir?: string;
    sandbox?: Sandbox;
    tools?: readonly AnyTool[];
    /** Added to the sandbox's secrets (e.g. `postgresUrl` for `store: postgres`). */
    secrets?: Partial<Secrets>;
  } = {},
): Promise<OutboxEnv> {
  const sandbox = options.sandbox ?? (await startSandbox(DEFAULTS));
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'fraudgate-outbox-'));
  let config: Config = mergeConfig(
    mergeConfig(DEFAULTS, {
      approvals: { wait_ms: 0, poll_ms: 20 },
      sift: { max_retries: 2, timeout_ms: 1500 },
      segment: { delivery_timeout_ms: 4000, timeout_ms: 1500 },
      salesforce: { timeout_ms: 1500 },
      automation: { poll_ms: 20, backoff_base_ms: 20, backoff_max_ms: 400, batch_window_ms: 50 },
    }),
    options.config ?? {},
  );
  config = {
    ...config,
    sift: {
      ...config.sift,
      base_url: sandbox.config.sift.base_url,
      account_id: sandbox.config.sift.account_id,
    },
    segment: {
      ...config.segment,
      host: sandbox.config.segment.host,
      profile_base_url: sandbox.config.segment.profile_base_url,
      space_id: sandbox.config.segment.space_id,
    },
    salesforce: {
      ...config.salesforce,
      login_url: sandbox.config.salesforce.login_url,
      auth_flow: 'client_credentials',
    },
    data_dir: dataDir,
    mode: 'sandbox',
  };
  const secrets = {
    ...sandbox.secrets,
    auditKey: 'test-audit-key',
    siftWebhookKeys: WEBHOOK_KEYS,
    ...options.secrets,
  };
  const automation = await openAutomation({
    config,
    secrets,
    tools: options.tools ?? allTools,
    logger: silentLogger,
  });
  // As `serve --http` has it: on SQLite, the intake's writer thread.
  const intake = openWebhookIntakeStore({
    config,
    secrets,
    outbox: automation.store,
    audit: automation.runtime.audit,
  });
  const handler = createSiftWebhookHandler({
    outbox: intake,
    keys: WEBHOOK_KEYS,
    audit: automation.runtime.audit,
    logger: silentLogger,
    bodyLimitBytes: 64 * 1024,
    refusals: webhookRefusals(automation.runtime),
    onEnqueued: () => automation.worker.wake(),
  });
  const server: Server = createServer((req, res) => {
    handler(req, res).then(
      (handled) => {
        if (!handled) {
          res.writeHead(404);
          res.end();
        }
      },
      () => {
        res.writeHead(500);
        res.end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const webhookUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/sift`;
  return {
    sandbox,
    automation,
    config,
    dataDir,
    webhookUrl,
    intake,
    async post(body, headers = {}) {
      const res = await fetch(webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
      const text = await res.text();
      return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
    },
    auditRecords() {
      return storedAuditRecords(config, automation.runtime.audit, secrets);
    },
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await intake.close();
      await automation.close();
      if (!options.sandbox) await sandbox.close();
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The real Segment webhook handler (`POST /webhooks/segment`, signed with `secret`) in front of
 * `env`'s outbox, on a loopback server of its own: each mapped message becomes a `send_sift_event` effect.
 */
export async function startSegmentIntake(
  env: OutboxEnv,
  secret: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const { automation, config } = env;
  const handler = createSegmentWebhookHandler({
    store: (deliveries, also) => env.intake.enqueueRoutedMany(deliveries, Date.now(), also),
    secret,
    mapping: config.mapping,
    siftUsersFor: siftUserResolver(
      (ids) => automation.runtime.identities.mappingsForSegmentUsers(ids),
      config.identity,
    ),
    audit: automation.runtime.audit,
    logger: silentLogger,
    bodyLimitBytes: 64 * 1024,
    refusals: webhookRefusals(automation.runtime),
    origin: automation.runtime.segmentOrigin,
    onEnqueued: () => automation.worker.wake(),
  });
  const server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/segment`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A decision webhook body as Sift sends it (§7.1). */
/**
 * The loaded configuration `fraudgate outbox` commands run with: as `env` has it (`loaded`), and
 * with an approver's token (`asOps`, principal ops@example.com) for retry and drop.
 */
export function operatorConfigs(env: OutboxEnv) {
  const opsKey = 'ops-approver-key-0123456789';
  const config = {
    ...env.config,
    auth: {
      ...env.config.auth,
      key_hashes: [
        {
          sha256: createHash('sha256').update(opsKey).digest('hex'),
          principal: 'ops@example.com',
          kind: 'user' as const,
          role: 'approver' as const,
        },
      ],
    },
  };
  const secrets = { auditKey: 'test-audit-key' };
  const loaded = { config, secrets, modeReason: 'test' };
  return { loaded, asOps: { ...loaded, secrets: { ...secrets, approverToken: opsKey } } };
}

export function decisionBody(userId: string, decisionId: string, time: number): string {
  return JSON.stringify({ entity: { type: 'user', id: userId }, decision: { id: decisionId }, time });
}

/** `count` open opportunities (`Deal 0`, `Deal 1`, …) on `account`, beside whatever it already has. */
export function insertOpenOpportunities(
  salesforce: Sandbox['salesforce'],
  account: string | undefined,
  count: number,
) {
  for (let i = 0; i < count; i++) {
    salesforce.insert('Opportunity', {
      Name: `Deal ${i}`,
      StageName: 'Prospecting',
      CloseDate: '2026-12-31',
      AccountId: account,
    });
  }
}

/** The org's own flow clears every flag the API writes, so no flagged one reads back as flagged. */
export function clearWrittenFlags(salesforce: Sandbox['salesforce']) {
  salesforce.onWrite(() => {
    for (const o of salesforce.records('Opportunity')) {
      if (o.Fraud_Risk_Flag__c === true)
        salesforce.editAs('Opportunity', o.Id, { Fraud_Risk_Flag__c: false });
    }
  });
}

/** Run `fn` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

/**
 * The environment of a `fraudgate outbox work` process in live mode against `e`'s emulators and data
 * dir, with the data key and audit signing key `e`'s (sandbox) runtime generated, so both read the
 * same rows and one key verifies the whole ledger.
 */
export function liveWorkerEnv(e: OutboxEnv, configFile: string): Record<string, string> {
  const { sandbox } = e;
  return {
    PATH: process.env.PATH ?? '',
    FRAUDGATE_CONFIG: configFile,
    FRAUDGATE_DATA_DIR: e.dataDir,
    FRAUDGATE_AUDIT_KEY: 'test-audit-key',
    FRAUDGATE_DATA_KEY: readFileSync(join(e.dataDir, 'data.key'), 'utf8').trim(),
    FRAUDGATE_AUDIT_SIGNING_KEY_FILE: sandboxSigningKeyPath(e.dataDir),
    FRAUDGATE_LOG_LEVEL: 'error',
    SIFT_BASE_URL: sandbox.config.sift.base_url,
    SIFT_ACCOUNT_ID: sandbox.config.sift.account_id ?? '',
    SIFT_API_KEY: sandbox.secrets.siftApiKey ?? '',
    SEGMENT_HOST: sandbox.config.segment.host,
    SEGMENT_PROFILE_BASE_URL: sandbox.config.segment.profile_base_url,
    SEGMENT_SPACE_ID: sandbox.config.segment.space_id ?? '',
    SEGMENT_WRITE_KEY: sandbox.secrets.segmentWriteKey ?? '',
    SEGMENT_PROFILE_TOKEN: sandbox.secrets.segmentProfileToken ?? '',
    SALESFORCE_LOGIN_URL: sandbox.config.salesforce.login_url,
    SALESFORCE_CLIENT_ID: sandbox.secrets.salesforceClientId ?? '',
    SALESFORCE_CLIENT_SECRET: sandbox.secrets.salesforceClientSecret ?? '',
  };
}
