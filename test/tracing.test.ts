/**
 * OpenTelemetry: a span for the MCP call (in the caller's trace when `_meta.traceparent` names
 * one), one per pipeline stage, one per upstream HTTP request (undici for Sift, node:http for
 * jsforce); the trace id in the call's audit records; export over OTLP/HTTP to a loopback receiver;
 * and nothing of the kind while tracing is off.
 */
import { createServer } from 'node:http';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterEach, describe, expect, it } from 'vitest';
import { startTracing, type Tracing } from '../src/tracing.ts';
import type { AuditRecord } from '../src/governance/audit.ts';
import { storedAuditRecords } from './helpers/audit.ts';
import { setup, type TestEnv } from './helpers/setup.ts';

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';
const traceparent = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;

let env: TestEnv | undefined;
let tracing: Tracing | undefined;
afterEach(async () => {
  await env?.close();
  await tracing?.shutdown();
  env = undefined;
  tracing = undefined;
  delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
});

async function audit(e: TestEnv): Promise<AuditRecord[]> {
  await e.runtime.audit.flush(); // reads are recorded write-behind
  return storedAuditRecords(e.config, e.runtime.audit);
}

/** Every ancestor of a span, by parent id, within the exported spans. */
function ancestors(span: ReadableSpan, all: ReadableSpan[]): string[] {
  const names: string[] = [];
  let parent = span.parentSpanContext?.spanId;
  while (parent) {
    const found = all.find((s) => s.spanContext().spanId === parent);
    if (!found) break;
    names.push(found.name);
    parent = found.parentSpanContext?.spanId;
  }
  return names;
}

describe('traces', () => {
  it("spans for the call, each stage and each upstream request, in the caller's trace; its id in the audit", async () => {
    const exporter = new InMemorySpanExporter();
    tracing = await startTracing({ exporter });
    env = await setup();
    const read = await env.client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-high-risk' },
      _meta: { traceparent },
    });
    expect(read.isError).toBeFalsy();
    const cases = await env.client.callTool({
      name: 'list_fraud_cases',
      arguments: {},
      _meta: { traceparent },
    });
    expect(cases.isError).toBeFalsy();

    const spans = exporter.getFinishedSpans();
    const inTrace = spans.filter((s) => s.spanContext().traceId === CALLER_TRACE);
    const transport = inTrace.filter((s) => s.name.startsWith('tools/call '));
    expect(transport.map((s) => s.name).sort()).toEqual([
      'tools/call get_sift_score',
      'tools/call list_fraud_cases',
    ]);
    for (const span of transport) expect(span.parentSpanContext?.spanId).toBe(CALLER_SPAN);
    const names = new Set(inTrace.map((s) => s.name));
    for (const stage of ['authorize', 'validate', 'rate_limit', 'execute', 'outcome']) {
      expect(names).toContain(`fraudgate.${stage}`);
    }
    // Upstream requests: Sift through undici, Salesforce through jsforce's node:http, under `execute`.
    const upstream = inTrace.filter((s) => /^(GET|POST|PATCH) 127\.0\.0\.1:\d+$/.test(s.name));
    const ports = new Set(upstream.map((s) => s.attributes['server.port']));
    expect(ports).toContain(Number(new URL(env.sandbox.sift.url).port));
    expect(ports).toContain(Number(new URL(env.sandbox.salesforce.url).port));
    for (const span of upstream) expect(ancestors(span, spans)).toContain('fraudgate.execute');
    // Nothing that could carry a user id or a key: no path, no query.
    expect(JSON.stringify(upstream.map((s) => s.attributes))).not.toContain('sandbox-high-risk');

    const records = (await audit(env)).filter(
      (r) => r.tool === 'get_sift_score' || r.tool === 'list_fraud_cases',
    );
    expect(records.length).toBeGreaterThanOrEqual(2);
    for (const record of records) expect(record.trace_id).toBe(CALLER_TRACE);
  });

  it('a write traces its intent record, and a call without traceparent starts its own trace', async () => {
    const exporter = new InMemorySpanExporter();
    tracing = await startTracing({ exporter });
    env = await setup();
    const sent = await env.callTool('send_sift_event', {
      event: { event_type: 'login', user_id: 'traced-user', login_status: 'success' },
    });
    expect(sent.isError).toBe(false);
    const spans = exporter.getFinishedSpans();
    const call = spans.find((s) => s.name === 'tools/call send_sift_event');
    expect(call?.parentSpanContext).toBeUndefined();
    const traceId = call!.spanContext().traceId;
    expect(spans.filter((s) => s.spanContext().traceId === traceId).map((s) => s.name)).toContain(
      'fraudgate.intent',
    );
    expect((await audit(env)).filter((r) => r.tool === 'send_sift_event').map((r) => r.trace_id)).toEqual([
      traceId,
      traceId,
    ]);
  });

  it('HTTP requests outside a traced call (such as the exporter’s own) get no span', async () => {
    const exporter = new InMemorySpanExporter();
    tracing = await startTracing({ exporter });
    env = await setup();
    await fetch(`${env.sandbox.sift.url}/v205/score/sandbox-low-risk`);
    expect(exporter.getFinishedSpans()).toEqual([]);
  });

  it('exports over OTLP/HTTP to the configured endpoint', async () => {
    const bodies: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        bodies.push(`${req.method} ${req.url} ${body}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
      tracing = await startTracing();
      env = await setup();
      await env.client.callTool({
        name: 'get_sift_score',
        arguments: { user_id: 'sandbox-low-risk' },
        _meta: { traceparent },
      });
      await tracing.shutdown(); // flushes the batch
      tracing = undefined;
      expect(bodies.length).toBeGreaterThan(0);
      expect(bodies.every((b) => b.startsWith('POST /v1/traces '))).toBe(true);
      expect(bodies.join('\n')).toContain('tools/call get_sift_score');
    } finally {
      receiver.close();
    }
  });

  it('off by default: no trace id in the audit', async () => {
    env = await setup();
    await env.client.callTool({
      name: 'get_sift_score',
      arguments: { user_id: 'sandbox-low-risk' },
      _meta: { traceparent },
    });
    const records = (await audit(env)).filter((r) => r.tool === 'get_sift_score');
    expect(records.length).toBeGreaterThan(0);
    for (const record of records) expect(record.trace_id).toBeUndefined();
  });
});
