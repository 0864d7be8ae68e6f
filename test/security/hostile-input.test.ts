/**
 * Hostile input cannot hurt the service (issue 13, items 1, 2 and 6): bounds are checked before
 * any other work, one bad audit record never fails the records it shares a group commit with,
 * refused calls cannot fill the disk, and protocol edges (non-object arguments, reserved keys,
 * made-up tool names) are answered as audited INVALID_INPUT tool results.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import type { AuditRecord } from '../../src/governance/audit.ts';
import { verifyLedger } from '../../src/governance/audit-ledger.ts';
import { ARGUMENT_LIMITS } from '../../src/governance/input-bounds.ts';
import { createLogger } from '../../src/logger.ts';
import { createMetrics } from '../../src/metrics.ts';
import { startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';
import { openTestLedger, storedAuditRecords, verifyStoredAudit } from '../helpers/audit.ts';

let sandbox: Sandbox;
const envs: TestEnv[] = [];

beforeAll(async () => {
  sandbox = await startSandbox(DEFAULTS);
});
afterAll(async () => {
  await sandbox.close();
});
afterEach(async () => {
  for (const env of envs.splice(0)) await env.close();
});

async function open(options: Parameters<typeof setup>[0] = {}): Promise<TestEnv> {
  const env = await setup({ sandbox, ...options });
  envs.push(env);
  return env;
}

function auditRecords(env: TestEnv): Promise<AuditRecord[]> {
  return storedAuditRecords(env.config, env.runtime.audit);
}

/** What the ledger holds, as text: nothing refused may leave its arguments there. */
async function auditText(env: TestEnv): Promise<string> {
  return JSON.stringify(await auditRecords(env));
}

/** `{"junk":[[[…]]]}` nested `depth` levels, built without recursion. */
function nested(depth: number): unknown {
  let value: unknown = 'x';
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** A raw tools/call whose `arguments` the SDK client would not let through its typed helper. */
async function rawCall(env: TestEnv, params: Record<string, unknown>) {
  const result = await env.client.request({ method: 'tools/call', params } as never, CallToolResultSchema);
  const text = result.content.findLast((c) => c.type === 'text');
  const body =
    text?.type === 'text' ? (JSON.parse(text.text) as { error?: { code: string; message: string } }) : {};
  return { isError: result.isError === true, error: body.error };
}

describe('bounds before work', () => {
  it('an argument nested thousands of levels deep is INVALID_INPUT naming the limit, and concurrent writes all succeed', async () => {
    const env = await open({ config: { rate_limits: { write: { capacity: 100, per_minute: 600 } } } });
    const deep = env.callTool('get_sift_score', { user_id: 'sandbox-high-risk', junk: nested(5000) });
    const writes = Array.from({ length: 30 }, (_, i) =>
      env.callTool('send_sift_event', {
        event: { event_type: 'login', user_id: `hostile-${i}`, login_status: 'success' },
      }),
    );
    const [refused, ...written] = await Promise.all([deep, ...writes]);
    expect(refused!.isError).toBe(true);
    expect(refused!.error.code).toBe('INVALID_INPUT');
    expect(refused!.error.message).toContain('max_depth');
    expect(refused!.error.message).toContain('junk');
    expect(written.filter((w) => w.isError).map((w) => w.error)).toEqual([]);
    expect(await verifyStoredAudit(env.config, {}, env.runtime.audit)).toMatchObject({ ok: true });
  });

  it('too many keys, a too-long string and too large arguments are each refused naming their limit', async () => {
    const env = await open();
    const manyKeys = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [`k${i}`, 1]));
    const cases: [Record<string, unknown>, string][] = [
      [{ user_id: 'u', extra: manyKeys }, 'max_entries'],
      [{ user_id: 'x'.repeat(ARGUMENT_LIMITS.max_string_length + 1) }, 'max_string_length'],
      [
        {
          user_id: 'u',
          a: 'y'.repeat(16_000),
          b: 'y'.repeat(16_000),
          c: 'y'.repeat(16_000),
          d: 'y'.repeat(16_000),
          e: 'y'.repeat(16_000),
        },
        'max_total_size',
      ],
    ];
    for (const [args, limit] of cases) {
      const result = await env.callTool('get_sift_score', args);
      expect(result.error?.code, limit).toBe('INVALID_INPUT');
      expect(result.error.message).toContain(limit);
    }
  });
});

describe('the audit group commit', () => {
  let dir: string;
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('one record that cannot be built fails alone; the others in its group are written and the chain verifies', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fraudgate-group-'));
    const ledger = openTestLedger(dir);
    const log = ledger.audit;
    const principal = { id: 'ana@example.com', kind: 'user', role: 'analyst' } as const;
    const appends = Array.from({ length: 20 }, (_, i) =>
      log.append({
        event: 'executed',
        call_id: `c${i}`,
        principal,
        // A value JSON cannot encode, in a field kept verbatim: building this one record throws.
        ...(i === 7 ? { upstream: [{ service: 'sift', latency_ms: 1n as unknown as number }] } : {}),
      }),
    );
    const settled = await Promise.allSettled(appends);
    await log.close();
    expect(settled.filter((s) => s.status === 'rejected')).toHaveLength(1);
    expect(settled[7]!.status).toBe('rejected');
    expect(await verifyLedger(ledger.engine, ledger.verifier)).toMatchObject({ ok: true, records: 19 });
    await ledger.close();
  });

  it('no JSON value makes record building throw: a 100,000-level value is recorded, cut short', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fraudgate-group-'));
    const ledger = openTestLedger(dir);
    const log = ledger.audit;
    const record = await log.append({
      event: 'failed',
      call_id: 'deep',
      principal: { id: 'p', kind: 'service' },
      args_redacted: { junk: nested(100_000) },
    });
    await ledger.close();
    expect(JSON.stringify(record)).toContain('[too deep]');
  });
});

describe('refused calls cannot fill the disk', () => {
  it('a refused call is recorded with a bounded summary (hash, size, field names), not its arguments', async () => {
    const env = await open({ principal: { id: 'vic.viewer@example.com', kind: 'user', role: 'viewer' } });
    const big = 'z'.repeat(15_000);
    const forbidden = await env.callTool('apply_label', {
      user_id: 'u1',
      notes: big,
      contact: 'jo.doe@example.com',
    });
    expect(forbidden.error.code).toBe('FORBIDDEN');
    const invalid = await env.callTool('get_sift_score', { user_id: 'u1', padding: big });
    expect(invalid.error.code).toBe('INVALID_INPUT');
    const refused = (await auditRecords(env)).filter((r) => r.event === 'forbidden' || r.event === 'invalid');
    expect(refused).toHaveLength(2);
    for (const r of refused) {
      expect(r.args_redacted).toBeUndefined();
      expect(r.args_summary).toMatchObject({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
      expect(r.args_summary!.bytes).toBeGreaterThan(15_000);
      expect(JSON.stringify(r).length).toBeLessThan(2_000);
    }
    expect(refused[0]!.args_summary!.fields).toEqual(['user_id', 'notes', 'contact']);
    expect(await auditText(env)).not.toContain('jo.doe@example.com');
  });

  it('past the refusal budget refusals are RATE_LIMITED and counted in one record, so the audit stops growing', async () => {
    const env = await open({ config: { rate_limits: { refusals: { capacity: 5, per_minute: 1 } } } });
    const big = { user_id: 'u1', padding: 'p'.repeat(10_000) };
    const answers = [];
    for (let i = 0; i < 40; i++) answers.push(await env.callTool('get_sift_score', big));
    expect(answers.slice(0, 5).every((a) => a.error.code === 'INVALID_INPUT')).toBe(true);
    const limited = answers.slice(5);
    expect(limited.every((a) => a.error.code === 'RATE_LIMITED')).toBe(true);
    // Still actionable: the caller learns why the call itself was refused.
    expect(limited[0]!.error.message).toContain('padding');
    expect(limited[0]!.error.retry_after_ms).toBeGreaterThan(0);
    const sizeAfterFlood = (await auditText(env)).length;
    expect(sizeAfterFlood).toBeLessThan(10_000);
    await env.runtime.pipeline.close();
    const records = await auditRecords(env);
    expect(records.filter((r) => r.event === 'invalid')).toHaveLength(5);
    const counted = records.filter((r) => r.event === 'refusals_counted');
    expect(counted).toHaveLength(1);
    expect(counted[0]!.refusals).toMatchObject({ count: 35, by_event: { invalid: 35 } });
    expect(counted[0]!.principal.id).toBe('ana.analyst@example.com');
  });
});

describe('protocol edges', () => {
  it('a dry run that fails leaves an audit record like any other call', async () => {
    const env = await open();
    const result = await env.callTool('enrich_salesforce_lead', { dry_run: true });
    expect(result.isError).toBe(true);
    const records = await auditRecords(env);
    expect(records.filter((r) => r.tool === 'enrich_salesforce_lead')).toHaveLength(1);
  });

  it('non-object arguments get an INVALID_INPUT tool result, and the call is audited', async () => {
    const env = await open();
    for (const value of [42, 'user_id=x', [1, 2], null, true]) {
      const result = await rawCall(env, { name: 'get_sift_score', arguments: value });
      expect(result.isError).toBe(true);
      expect(result.error?.code).toBe('INVALID_INPUT');
      expect(result.error?.message).toContain('JSON object');
    }
    const invalid = (await auditRecords(env)).filter((r) => r.event === 'invalid');
    expect(invalid.map((r) => r.args_summary?.type)).toEqual([
      'number',
      'string',
      'array',
      'null',
      'boolean',
    ]);
  });

  it.each(['__proto__', 'constructor', 'prototype'])('a %s key is refused by name', async (key) => {
    const env = await open();
    const args = JSON.parse(`{"user_id":"sandbox-high-risk","${key}":{"polluted":true}}`) as Record<
      string,
      unknown
    >;
    const result = await env.callTool('get_sift_score', args);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain(key);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('an unknown tool name is neither stored nor logged raw', async () => {
    const lines: string[] = [];
    const env = await open({ logger: createLogger({ write: (l) => lines.push(l) }) });
    const names = [
      'zq.leak.7731@probe-mail.example',
      'lookup +1 415 555 0191',
      'ip 203.0.113.77',
      'secret-project-x',
    ];
    for (const name of names) {
      // Unknown tool: a JSON-RPC -32602 to the caller who sent the name, an audited refusal here.
      await expect(env.callTool(name, {})).rejects.toMatchObject({ code: -32602 });
    }
    const audit = await auditText(env);
    const records = await auditRecords(env);
    expect(records.map((r) => r.tool)).toEqual(
      names.map(() => expect.stringMatching(/^unknown#[0-9a-f]{8}$/)),
    );
    for (const name of names) {
      expect(audit).not.toContain(name);
      expect(lines.join('\n')).not.toContain(name);
    }
    expect(audit).not.toContain('secret-project');
  });

  it('metrics label only registered tools: made-up names cannot crowd out or leak into the label set', async () => {
    const metrics = createMetrics({ toolNames: ['get_sift_score'] });
    for (let i = 0; i < 250; i++)
      metrics.onToolCall({ tool: `made_up_${i}`, outcome: 'INVALID_INPUT', durationMs: 1 });
    metrics.onToolCall({ tool: 'get_sift_score', outcome: 'ok', durationMs: 1 });
    const text = await metrics.render();
    expect(text).toContain('fraudgate_tool_calls_total{tool="get_sift_score",outcome="ok"} 1');
    expect(text).toContain('fraudgate_tool_calls_total{tool="unknown",outcome="INVALID_INPUT"} 250');
    expect(text).not.toContain('made_up_');
  });
});
