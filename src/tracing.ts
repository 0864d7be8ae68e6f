/**
 * OpenTelemetry traces: one span per MCP call (the transport), one per pipeline stage, one per
 * upstream HTTP request, all in the caller's trace when the request's `_meta.traceparent` (W3C)
 * names one; the trace id goes into the call's audit records.
 *
 * Nothing of OpenTelemetry is loaded until `startTracing` (called by `fraudgate serve` when
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and by tests with an
 * in-memory exporter) loads the API, the SDK and the OTLP/HTTP exporter. Until then `inSpan` just
 * runs its function: the API's default tracer would only make no-op spans, and loading the API's
 * fifty-odd modules is a tenth of a stdio server's start-up (npm run bench, cold start).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type * as OtelApiModule from '@opentelemetry/api';
import type { Attributes, Context, Span, SpanKind as OtelSpanKind } from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import { VERSION } from './version.ts';

/** `@opentelemetry/api`'s SpanKind values, without loading the API to name them. */
export const SpanKind = {
  INTERNAL: 0 as OtelSpanKind.INTERNAL,
  SERVER: 1 as OtelSpanKind.SERVER,
  CLIENT: 2 as OtelSpanKind.CLIENT,
} as const;

type OtelApi = typeof OtelApiModule;
/** The API while `startTracing` is in force; undefined otherwise (tracing off). */
let otel: OtelApi | undefined;

const tracerOf = (api: OtelApi) => api.trace.getTracer('fraudgate', VERSION);

function fail(span: Span, error: unknown): void {
  // SpanStatusCode.ERROR
  span.setStatus({ code: 2, message: error instanceof Error ? error.name : 'error' });
}

export interface SpanOptions {
  attributes?: Attributes;
  /** The span's parent; the active span when not given. */
  parent?: Context;
  kind?: OtelSpanKind;
}

/**
 * Run `fn` in a span named `name` (a child of the active one, or of `parent`); the span ends when `fn` settles.
 * `options` is called only when a span is made, so nothing is built for it while tracing is off.
 */
export function inSpan<T>(name: string, fn: () => T, options?: () => SpanOptions): T {
  const api = otel;
  if (!api) return fn();
  const { attributes, parent, kind } = options?.() ?? {};
  return tracerOf(api).startActiveSpan(name, { attributes, kind }, parent ?? api.context.active(), (span) => {
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

/**
 * The caller's trace from a request's `_meta` (`traceparent`, `tracestate`), else the active
 * context; undefined while tracing is off.
 */
export function contextFromMeta(meta: unknown): Context | undefined {
  const api = otel;
  if (!api) return undefined;
  const { context, propagation } = api;
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
  const trace = otel?.trace;
  const spanContext = trace?.getActiveSpan()?.spanContext();
  return spanContext && trace?.isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
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
    api,
    { TracerProvider, BatchSpanProcessor, SimpleSpanProcessor },
    { AsyncLocalStorageContextManager },
    core,
  ] = await Promise.all([
    import('@opentelemetry/api'),
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
  const { context, propagation, trace } = api;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  otel = api;
  const unsubscribe = traceUpstreamRequests(api);
  return {
    async shutdown() {
      unsubscribe();
      otel = undefined;
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
function traceUpstreamRequests(api: OtelApi): () => void {
  const { trace } = api;
  const tracer = () => tracerOf(api);
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
