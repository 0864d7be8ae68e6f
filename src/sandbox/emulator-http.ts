/**
 * Shared plumbing for the three loopback emulators (Sift, Segment, Salesforce): a real node:http
 * server on 127.0.0.1 with an ephemeral port, a small router, a request journal, strict handling
 * of unknown routes (501, recorded) and fault injection.
 *
 * Emulators are test and sandbox infrastructure: they are faithful to shared/contracts/ so the
 * real client libraries talk to them unchanged, and they never reach the network.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the emulator received it, with the answer it gave. */
export interface JournalEntry {
  seq: number;
  method: string;
  /** Path without the query string, still percent-encoded as received. */
  path: string;
  query: Record<string, string>;
  /** Header names lower-cased; Authorization is kept so tests can assert on the auth scheme. */
  headers: Record<string, string>;
  rawBody: string;
  /** Parsed JSON body when it parsed, else undefined. */
  body: unknown;
  status: number;
  /** The route pattern that matched, or 'UNMATCHED' / 'FAULT'. */
  route: string;
  at: number;
}

/** What a route handler receives. */
export interface EmulatorRequest {
  method: string;
  path: string;
  /** Path parameters, decoded exactly once. */
  params: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  rawBody: Buffer;
  /** JSON body when it parsed (regardless of Content-Type, as Sift's contract requires). */
  json: unknown;
  jsonError: boolean;
}

/** What a route handler answers. `body` objects are JSON-encoded; strings and Buffers are sent as-is. */
export interface EmulatorResponse {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export type RouteHandler = (req: EmulatorRequest) => EmulatorResponse | Promise<EmulatorResponse>;

export interface Route {
  method: string;
  /** Pattern with `:name` segments, e.g. `/v205/users/:user_id/score`. A trailing slash is optional. */
  pattern: string;
  handler: RouteHandler;
}

/** A fault to apply to the next matching requests instead of (or before) the real handler. */
export interface FaultSpec {
  /** How many matching requests it applies to (default 1). */
  count?: number;
  /** Only requests whose method and path match (path: substring or RegExp). Default: every request. */
  method?: string;
  path?: string | RegExp;
  /** Answer with this status (and optional body/headers) instead of running the handler. */
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Wait this long before answering (with `status`) or before running the handler. */
  delayMs?: number;
  /** Destroy the socket without an answer (a connection reset). */
  reset?: boolean;
  /** Run the real handler (so state changes) but destroy the socket instead of answering: a lost response. */
  dropResponse?: boolean;
}

interface ActiveFault extends FaultSpec {
  remaining: number;
}

export interface FaultController {
  /** Queue a fault for the next matching request(s). Faults apply in the order they were queued. */
  inject(spec: FaultSpec): void;
  /** Fail a fraction of requests at random with the given specs, until cleared. */
  chaos(rate: number, specs: FaultSpec[], random?: () => number): void;
  clear(): void;
}

export interface EmulatorServer {
  url: string;
  port: number;
  journal: JournalEntry[];
  /** Requests that matched no route (answered 501). A test can fail on surprises. */
  unmatched: JournalEntry[];
  faults: FaultController;
  /** Journal entries for a method and path pattern (same syntax as routes). */
  requests(method: string, pattern: string): JournalEntry[];
  clearJournal(): void;
  /** Call `listener` after every request that may have changed state (any method but GET/HEAD). */
  onWrite(listener: () => void): void;
  close(): Promise<void>;
}

/**
 * An emulator's data — records, profiles, labels, counters; not its faults, tokens or journal —
 * as plain containers (Maps, arrays, numbers) that `node:v8` serializes with shared objects
 * intact. The sandbox persists it in the data directory so a restart remembers.
 */
export type EmulatorState = Record<string, unknown>;

export interface StatefulEmulator {
  exportState(): EmulatorState;
  importState(state: EmulatorState): void;
}

/** Replace a live container's contents with a restored one's (the containers are captured by closures). */
export function replaceContents<K, V>(target: Map<K, V> | V[], source: unknown): void {
  if (target instanceof Map) {
    target.clear();
    if (source instanceof Map) for (const [key, value] of source as Map<K, V>) target.set(key, value);
  } else {
    target.length = 0;
    if (Array.isArray(source)) target.push(...(source as V[]));
  }
}

export interface StartEmulatorOptions {
  name: string;
  routes: Route[];
  /** Fixed port (e.g. for the sandbox's documented ports); default ephemeral. */
  port?: number;
  /** Body returned with 501 for unknown routes. */
  unknownRouteBody?: (method: string, path: string) => unknown;
}

interface CompiledRoute extends Route {
  regex: RegExp;
  names: string[];
}

function compilePattern(pattern: string): { regex: RegExp; names: string[] } {
  const names: string[] = [];
  const source = pattern
    .replace(/\/+$/, '')
    .split('/')
    .map((segment) => {
      if (segment.startsWith(':')) {
        names.push(segment.slice(1));
        return '([^/]+)';
      }
      return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { regex: new RegExp(`^${source}/?$`), names };
}

function matchRoute(
  route: { regex: RegExp; names: string[] },
  path: string,
): Record<string, string> | undefined {
  const m = route.regex.exec(path);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  route.names.forEach((name, i) => {
    params[name] = decodeURIComponent(m[i + 1] ?? '');
  });
  return params;
}

/** Path parameters when `path` matches a route pattern (same syntax as routes), else undefined. */
export function matchPattern(pattern: string, path: string): Record<string, string> | undefined {
  return matchRoute(compilePattern(pattern), path);
}

function faultMatches(fault: FaultSpec, method: string, path: string): boolean {
  if (fault.method && fault.method.toUpperCase() !== method) return false;
  if (fault.path instanceof RegExp) return fault.path.test(path);
  if (typeof fault.path === 'string') return path.includes(fault.path);
  return true;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function sendResponse(res: ServerResponse, answer: EmulatorResponse): void {
  const headers: Record<string, string> = { ...(answer.headers ?? {}) };
  let payload: string | Buffer | undefined;
  if (answer.body === undefined || answer.status === 204) {
    payload = undefined;
  } else if (typeof answer.body === 'string' || Buffer.isBuffer(answer.body)) {
    payload = answer.body;
    headers['content-type'] ??= 'text/plain; charset=utf-8';
  } else {
    payload = JSON.stringify(answer.body);
    headers['content-type'] ??= 'application/json';
  }
  res.writeHead(answer.status, headers);
  res.end(payload);
}

/** Start a loopback emulator server. */
export async function startEmulatorServer(options: StartEmulatorOptions): Promise<EmulatorServer> {
  const compiled: CompiledRoute[] = options.routes.map((r) => ({
    ...r,
    method: r.method.toUpperCase(),
    ...compilePattern(r.pattern),
  }));
  const journal: JournalEntry[] = [];
  const unmatched: JournalEntry[] = [];
  const queued: ActiveFault[] = [];
  let chaosConfig: { rate: number; specs: FaultSpec[]; random: () => number } | undefined;
  let seq = 0;
  const writeListeners: (() => void)[] = [];
  const sockets = new Set<Socket>();

  const takeFault = (method: string, path: string): FaultSpec | undefined => {
    const index = queued.findIndex((f) => faultMatches(f, method, path));
    if (index >= 0) {
      const fault = queued[index]!;
      fault.remaining -= 1;
      if (fault.remaining <= 0) queued.splice(index, 1);
      return fault;
    }
    if (chaosConfig && chaosConfig.random() < chaosConfig.rate) {
      const specs = chaosConfig.specs.filter((s) => faultMatches(s, method, path));
      if (specs.length > 0) return specs[Math.floor(chaosConfig.random() * specs.length)];
    }
    return undefined;
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void handle(req, res, Buffer.concat(chunks));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse, rawBody: Buffer): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://emulator.invalid');
    const path = url.pathname;
    const rawText = rawBody.toString('utf8');
    let json: unknown;
    let jsonError = false;
    if (rawBody.length > 0) {
      try {
        json = JSON.parse(rawText);
      } catch {
        jsonError = true;
      }
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      headers[k] = Array.isArray(v) ? v.join(', ') : (v ?? '');
    const entry: JournalEntry = {
      seq: ++seq,
      method,
      path,
      query: Object.fromEntries(url.searchParams),
      headers,
      rawBody: rawText,
      body: json,
      status: 0,
      route: 'UNMATCHED',
      at: Date.now(),
    };
    journal.push(entry);

    const fault = takeFault(method, path);
    if (fault) {
      if (fault.delayMs) await sleep(fault.delayMs);
      if (fault.reset) {
        entry.route = 'FAULT';
        entry.status = -1;
        req.socket.destroy();
        return;
      }
      if (fault.status !== undefined) {
        entry.route = 'FAULT';
        entry.status = fault.status;
        sendResponse(res, { status: fault.status, body: fault.body, headers: fault.headers });
        return;
      }
    }

    for (const route of compiled) {
      if (route.method !== method) continue;
      const params = matchRoute(route, path);
      if (!params) continue;
      entry.route = route.pattern;
      let answer: EmulatorResponse;
      try {
        answer = await route.handler({
          method,
          path,
          params,
          query: url.searchParams,
          headers: req.headers,
          rawBody,
          json,
          jsonError,
        });
      } catch (error) {
        answer = { status: 500, body: { error: 'emulator_bug', description: String(error) } };
      }
      entry.status = answer.status;
      if (fault?.dropResponse) {
        entry.route = 'FAULT';
        req.socket.destroy();
        return;
      }
      sendResponse(res, answer);
      if (method !== 'GET' && method !== 'HEAD') for (const listener of writeListeners) listener();
      return;
    }

    entry.status = 501;
    unmatched.push(entry);
    sendResponse(res, {
      status: 501,
      body: options.unknownRouteBody?.(method, path) ?? {
        error: 'not_implemented',
        description: `${options.name} emulator has no route ${method} ${path}`,
      },
    });
  }

  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    journal,
    unmatched,
    faults: {
      inject(spec) {
        queued.push({ ...spec, remaining: spec.count ?? 1 });
      },
      chaos(rate, specs, random = Math.random) {
        chaosConfig = { rate, specs, random };
      },
      clear() {
        queued.length = 0;
        chaosConfig = undefined;
      },
    },
    requests(method, pattern) {
      const compiledPattern = compilePattern(pattern);
      return journal.filter(
        (e) => e.method === method.toUpperCase() && matchRoute(compiledPattern, e.path) !== undefined,
      );
    },
    clearJournal() {
      journal.length = 0;
      unmatched.length = 0;
    },
    onWrite(listener) {
      writeListeners.push(listener);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
