/**
 * OpenTelemetry traces: one span per MCP call (the transport), one per pipeline stage, one per
 * upstream HTTP request, all in the caller's trace when the request's `_meta.traceparent` (W3C)
 * names one; the trace id goes into the call's audit records.
 *
 * Code uses only `@opentelemetry/api`, whose default tracer does nothing: with no exporter
 * configured, a span is a no-op object and nothing else is loaded. `startTracing` (called by
 * `fraudgate serve` when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
 * and by tests with an in-memory exporter) loads the SDK and the OTLP/HTTP exporter on demand.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
export { SpanKind } from '@opentelemetry/api';
import {
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
} from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import { VERSION } from './version.ts';

const tracer = () => trace.getTracer('fraudgate', VERSION);

/**
 * Whether `startTracing` is in force. Without it the API's tracer makes no-op spans, and building
 * them (span, context, closure) on each of a call's stages is pure cost, so `inSpan` skips it.
 */
let tracingActive = false;

function fail(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.name : 'error' });
}

/** Run `fn` in a span named `name` (a child of the active one, or of `parent`); the span ends when `fn` settles. */
export function inSpan<T>(
  name: string,
  fn: () => T,
  options: { attributes?: Attributes; parent?: Context; kind?: SpanKind } = {},
): T {
  if (!tracingActive) return fn();
  const { attributes, parent, kind } = options;
  return tracer().startActiveSpan(name, { attributes, kind }, parent ?? context.active(), (span) => {
    try {
      const result = fn();
      if (result instanceof Promise) {
        return result.then(
          (value: unknown) => (span.end(), value),
          (error: unknown) => {
            fail(span, error);
            span.end();
            throw error;
          },
        ) as T;
      }
      span.end();
      return result;
    } catch (error) {
      fail(span, error);
      span.end();
      throw error;
    }
  });
}

/** The caller's trace from a request's `_meta` (`traceparent`, `tracestate`), else the active context. */
export function contextFromMeta(meta: unknown): Context {
  if (
    typeof meta !== 'object' ||
    meta === null ||
    typeof (meta as Record<string, unknown>).traceparent !== 'string'
  )
    return context.active();
  return propagation.extract(context.active(), meta as Record<string, unknown>, {
    keys: (carrier) => Object.keys(carrier),
    get: (carrier, key) => {
      const value = (carrier as Record<string, unknown>)[key];
      return typeof value === 'string' ? value : undefined;
    },
  });
}

/** The trace id of the active span, when tracing is on. */
export function currentTraceId(): string | undefined {
  const spanContext = trace.getActiveSpan()?.spanContext();
  return spanContext && trace.isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}

export interface Tracing {
  /** Export what is still buffered and stop. */
  shutdown(): Promise<void>;
}

/** Whether the environment asks for traces (OTLP over HTTP). */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * Turn tracing on for this process: W3C trace context, async context propagation, and spans to
 * `exporter` (default: OTLP over HTTP to OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT, batched).
 */
export async function startTracing(options: { exporter?: SpanExporter } = {}): Promise<Tracing> {
  const [
    { TracerProvider, BatchSpanProcessor, SimpleSpanProcessor },
    { AsyncLocalStorageContextManager },
    core,
  ] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
  ]);
  const exporter =
    options.exporter ?? new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  const processor = options.exporter
    ? new SimpleSpanProcessor({ exporter })
    : new BatchSpanProcessor({ exporter });
  const provider = new TracerProvider({ spanProcessors: [processor] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  tracingActive = true;
  const unsubscribe = traceUpstreamRequests();
  return {
    async shutdown() {
      unsubscribe();
      tracingActive = false;
      await provider.shutdown();
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}

/**
 * A client span per outgoing HTTP request, whichever library sends it (undici and fetch for Sift
 * and Segment, node:http for jsforce), from Node's diagnostics channels. Attributes are the method,
 * host, port and status only: paths and queries can carry user ids and API keys.
 */
function traceUpstreamRequests(): () => void {
  const spans = new WeakMap<object, Span>();
  const start = (key: object, method: string, origin: string) => {
    // Only requests made for a traced call: not the exporter's own requests (which would trace
    // themselves forever) nor unrelated traffic.
    if (!trace.getActiveSpan()) return;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return;
    }
    spans.set(
      key,
      tracer().startSpan(`${method} ${url.host}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          'http.request.method': method,
          'server.address': url.hostname,
          'server.port': Number(url.port) || (url.protocol === 'https:' ? 443 : 80),
        },
      }),
    );
  };
  const finish = (key: object, status?: number, error?: unknown) => {
    const span = spans.get(key);
    if (!span) return;
    spans.delete(key);
    if (status !== undefined) span.setAttribute('http.response.status_code', status);
    if (error !== undefined || (status !== undefined && status >= 500)) fail(span, error);
    span.end();
  };
  type UndiciRequest = { method: string; origin: string };
  const handlers: [string, (message: unknown) => void][] = [
    [
      'undici:request:create',
      (m) => {
        const { request } = m as { request: UndiciRequest };
        start(request, request.method, String(request.origin));
      },
    ],
    [
      'undici:request:headers',
      (m) => {
        const { request, response } = m as { request: object; response: { statusCode: number } };
        finish(request, response.statusCode);
      },
    ],
    [
      'undici:request:error',
      (m) => {
        const { request, error } = m as { request: object; error: unknown };
        finish(request, undefined, error);
      },
    ],
    [
      'http.client.request.start',
      (m) => {
        const { request } = m as {
          request: { method: string; protocol: string; host: string; getHeader(n: string): unknown };
        };
        const host = String(request.getHeader('host') ?? request.host);
        start(request, request.method, `${request.protocol}//${host}`);
      },
    ],
    [
      'http.client.response.finish',
      (m) => {
        const { request, response } = m as { request: object; response: { statusCode: number } };
        finish(request, response.statusCode);
      },
    ],
    [
      'http.client.request.error',
      (m) => {
        const { request, error } = m as { request: object; error: unknown };
        finish(request, undefined, error);
      },
    ],
  ];
  const unsubscribers = handlers.map(([channel, handler]) => {
    subscribe(channel, handler);
    return () => unsubscribe(channel, handler);
  });
  return () => unsubscribers.forEach((u) => u());
}
