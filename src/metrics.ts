/**
 * A tiny Prometheus registry for `/metrics`: counters, one histogram and scrape-time gauges,
 * rendered in the text exposition format (0.0.4). No dependency: the handful of series fraudgate
 * exposes does not justify prom-client.
 *
 * Fed by the `onToolCall` hook of src/server.ts (one event per `tools/call`) and by the HTTP
 * transport (requests, sessions). Label values come from a bounded set (the registered tool names,
 * anything else is `unknown`) so a client sending random tool names cannot blow up the series count.
 */
import { UpstreamError, type FraudgateError } from './errors.ts';

/** One finished `tools/call`, as server.ts reports it. */
export interface ToolCallEvent {
  tool: string;
  /** `ok` or the error code (FORBIDDEN, RATE_LIMITED, APPROVAL_PENDING, …). */
  outcome: string;
  durationMs: number;
  error?: FraudgateError;
}

/** What server.ts calls after each tool call; see `CreateServerOptions.metrics`. */
export type ToolCallObserver = (event: ToolCallEvent) => void;

export interface Metrics {
  onToolCall: ToolCallObserver;
  onHttpRequest(method: string, status: number): void;
  /**
   * A gauge read at scrape time (pending approvals from the store, open sessions). Gauges of one
   * name with different `labels` are one family (e.g. `service` for each upstream).
   */
  gauge(
    name: string,
    help: string,
    read: () => number | Promise<number>,
    labels?: Record<string, string>,
  ): void;
  /** The exposition text. */
  render(): Promise<string>;
}

/** Seconds; tool calls span from sub-millisecond refusals to approval waits of tens of seconds. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const MAX_TOOL_LABELS = 200;
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export interface MetricsOptions {
  /**
   * The registered tool names: the only `tool` label values besides `unknown`, so made-up names
   * can neither crowd real tools out of the label set nor put their text (personal data) in it.
   */
  toolNames?: Iterable<string>;
}
const RATE_LIMIT_CODES = new Set(['RATE_LIMITED', 'UPSTREAM_RATE_LIMITED']);

const escapeLabel = (value: string) =>
  value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const labels = (pairs: Record<string, string>) => {
  const body = Object.entries(pairs)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(',');
  return body ? `{${body}}` : '';
};

class Counter {
  readonly values = new Map<string, number>();
  inc(labelText: string, by = 1) {
    this.values.set(labelText, (this.values.get(labelText) ?? 0) + by);
  }
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registered = options.toolNames ? new Set(options.toolNames) : undefined;
  const toolLabels = new Set<string>();
  const toolLabel = (name: string) => {
    if (registered) return registered.has(name) ? name : 'unknown';
    if (!TOOL_NAME.test(name)) return 'invalid';
    if (toolLabels.has(name)) return name;
    if (toolLabels.size >= MAX_TOOL_LABELS) return 'other';
    toolLabels.add(name);
    return name;
  };
  const calls = new Counter();
  const upstreamErrors = new Counter();
  const rateLimited = new Counter();
  const httpRequests = new Counter();
  const histogram = new Map<string, { buckets: number[]; sum: number; count: number }>();
  const gauges = new Map<
    string,
    { help: string; series: { labels: string; read: () => number | Promise<number> }[] }
  >();

  return {
    onToolCall(event) {
      const tool = toolLabel(event.tool);
      calls.inc(labels({ tool, outcome: event.outcome }));
      const seconds = event.durationMs / 1000;
      const h = histogram.get(tool) ?? { buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
      LATENCY_BUCKETS.forEach((le, i) => {
        if (seconds <= le) h.buckets[i] = (h.buckets[i] ?? 0) + 1;
      });
      h.sum += seconds;
      h.count += 1;
      histogram.set(tool, h);
      if (event.error instanceof UpstreamError) upstreamErrors.inc(labels({ service: event.error.service }));
      else if (event.error && typeof event.error.data?.service === 'string') {
        upstreamErrors.inc(labels({ service: event.error.data.service }));
      }
      if (RATE_LIMIT_CODES.has(event.outcome)) rateLimited.inc(labels({ tool, code: event.outcome }));
    },
    onHttpRequest(method, status) {
      const m = ['GET', 'POST', 'DELETE', 'HEAD', 'OPTIONS'].includes(method) ? method : 'OTHER';
      httpRequests.inc(labels({ method: m, status: String(status) }));
    },
    gauge(name, help, read, labelPairs = {}) {
      const family = gauges.get(name) ?? { help, series: [] };
      family.series.push({ labels: labels(labelPairs), read });
      gauges.set(name, family);
    },
    async render() {
      const out: string[] = [];
      const counter = (name: string, help: string, c: Counter) => {
        out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
        for (const [l, v] of c.values) out.push(`${name}${l} ${v}`);
      };
      counter('fraudgate_tool_calls_total', 'Tool calls by tool and outcome (ok or error code).', calls);
      out.push(
        '# HELP fraudgate_tool_call_duration_seconds Tool call latency, including approval waits.',
        '# TYPE fraudgate_tool_call_duration_seconds histogram',
      );
      for (const [tool, h] of histogram) {
        LATENCY_BUCKETS.forEach((le, i) =>
          out.push(
            `fraudgate_tool_call_duration_seconds_bucket${labels({ tool, le: String(le) })} ${h.buckets[i] ?? 0}`,
          ),
        );
        out.push(`fraudgate_tool_call_duration_seconds_bucket${labels({ tool, le: '+Inf' })} ${h.count}`);
        out.push(`fraudgate_tool_call_duration_seconds_sum${labels({ tool })} ${h.sum}`);
        out.push(`fraudgate_tool_call_duration_seconds_count${labels({ tool })} ${h.count}`);
      }
      counter(
        'fraudgate_upstream_errors_total',
        'Tool calls that failed upstream, by service.',
        upstreamErrors,
      );
      counter(
        'fraudgate_rate_limit_rejections_total',
        'Calls refused by a rate limit (ours or upstream).',
        rateLimited,
      );
      counter('fraudgate_http_requests_total', 'HTTP requests by method and status.', httpRequests);
      for (const [name, family] of gauges) {
        out.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} gauge`);
        for (const series of family.series) {
          let value: number;
          try {
            value = await series.read();
          } catch {
            // A gauge whose source is down (the store) reads NaN; the scrape itself still works.
            value = Number.NaN;
          }
          out.push(`${name}${series.labels} ${value}`);
        }
      }
      return out.join('\n') + '\n';
    },
  };
}
