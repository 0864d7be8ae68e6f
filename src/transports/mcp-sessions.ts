/**
 * MCP sessions that any replica can serve. The registry in the store (src/store/session-store.ts)
 * is the truth: who opened the session and what the client negotiated. A replica keeps only a cache
 * of live SDK objects (one McpServer + transport per session) and rebuilds them on demand.
 *
 * How a replica that never saw the `initialize` rebuilds a session: the SDK has no public way to
 * adopt an existing session id (typescript-sdk#1882 is open; #1668 and #1786 were closed), and
 * writing the transport's private `_initialized`/`sessionId` fields would break silently on an SDK
 * update. Instead we replay the client's handshake through the transport's public `handleRequest`:
 * a fresh transport whose `sessionIdGenerator` returns the stored id receives the stored
 * `initialize` (protocol version, capabilities, client info) and `notifications/initialized`. The
 * SDK's own code then sets the session id and the negotiated state exactly as on the first replica
 * (so elicitation is offered when the client declared it); the replayed answer goes nowhere.
 *
 * A client's answer to a server request (an elicitation) can land on another replica than the tool
 * call that waits for it. Every request the server sends carries an id naming its replica
 * (`fg.<replica>.<n>`), so whichever replica receives the answer forwards it through the relay
 * (PostgreSQL NOTIFY; a direct call on SQLite) to the one that is waiting.
 *
 * Fairness (issue 13): caps per principal and in total are checked atomically in the store at
 * `initialize`; a session nobody used after the handshake is reaped after
 * `http.unused_session_timeout_ms`, any other after `http.idle_timeout_ms`; DELETE removes it at once.
 *
 * A request on a session this replica serves does not read the registry every time (a synchronous
 * SQLite read on the event loop, or a PostgreSQL round trip, per request): the registry's answer is
 * kept for CONFIRMED_FOR_MS, and only while the relay has been listening since before that answer
 * was read. Whoever ends a session (DELETE, the reaper of any replica) announces it through the relay,
 * so every replica forgets it at once; if the relay stopped listening meanwhile (connection lost,
 * store closed) nothing is taken from the cache and the registry is read again (unreachable → 503).
 * What remains is the delivery time of one announcement (milliseconds on PostgreSQL, none on SQLite)
 * and, should one be lost unnoticed, at most CONFIRMED_FOR_MS.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  isJSONRPCErrorResponse,
  isJSONRPCResultResponse,
  LATEST_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  type InitializeRequest,
  type JSONRPCMessage,
  type MessageExtraInfo,
  type RequestId,
} from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from '../logger.ts';
import {
  MAX_RELAYED_BYTES,
  type McpSessionRecord,
  type SessionCapRefusal,
  type SessionStores,
} from '../store/session-store.ts';
import type { Principal } from '../tool.ts';
import { isObject } from '../is-object.ts';

/** A store call failed (database unreachable): the request gets a retryable 503, never a crash. */
export class SessionStoreUnavailableError extends Error {}

/** `initialize` refused because a cap is reached. */
export class SessionCapError extends Error {
  readonly refusal: SessionCapRefusal;
  constructor(refusal: SessionCapRefusal) {
    super(`session cap ${refusal.limit} reached`);
    this.refusal = refusal;
  }
}

export interface McpSessionManagerOptions {
  stores: Pick<SessionStores, 'mcpSessions' | 'relay'>;
  /** Builds the MCP server for one session (the same factory for new and rebuilt sessions). */
  createServer(principal: Principal): McpServer;
  logger: Logger;
  caps: { perPrincipal: number; total: number };
  timeouts: { unusedMs: number; idleMs: number };
}

/** One session's live objects on this replica. */
export interface LiveSession {
  id: string;
  principal: Principal;
  transport: WebStandardStreamableHTTPServerTransport;
  /** What the McpServer writes through (replica-tagged ids; which answers went out first). */
  wire: ReplicaTaggedTransport;
  server: McpServer;
  /** POST requests being answered here (tool calls in flight). */
  calls: number;
  /** GET streams held open here; the replica heartbeats the registry row while any is open. */
  streams: number;
  /** Last request on this replica; a cache entry unused for the idle timeout is dropped. */
  lastSeen: number;
  /** The activity time last written to `last_used_at` (by the reaper tick, or the registry row's). */
  lastTouched: number;
  /** `lastSeen` at the previous reaper tick: unchanged means no request since. */
  seenAtSweep: number;
  used: boolean;
  /** When the registry read that last found this session began (0: read it again before serving). */
  confirmedAt: number;
}

/** How long a registry answer that a session exists is trusted, when no announcement said otherwise. */
const CONFIRMED_FOR_MS = 1_000;

const WIRE_ID = /^fg\.([0-9a-f]{12})\.(.+)$/;

/** Wraps any store failure so the HTTP layer can answer 503 instead of 500. */
async function stored<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (error) {
    throw new SessionStoreUnavailableError(error instanceof Error ? error.message : String(error));
  }
}

/** A valid JSON-RPC response (result or error): the full check, for messages from the network. */
const isResponse = (m: unknown): m is JSONRPCMessage & { id: RequestId } =>
  isJSONRPCResultResponse(m) || isJSONRPCErrorResponse(m);

/**
 * Shape-only tests for routing: cheap on every request, where the SDK's validators (zod) cost
 * more than the rest of the routing, and a failed parse most of all. The SDK transport still
 * validates every message it accepts; anything forwarded to another replica is checked in full.
 */
const hasKey = (m: unknown, key: string): m is Record<string, unknown> => isObject(m) && key in m;
/** Shaped like a request: a method and an id. */
export const isRequestShaped = (m: unknown): m is { id: RequestId; method: string } =>
  hasKey(m, 'method') && (typeof m.id === 'string' || typeof m.id === 'number');
/** Shaped like a response: an id and no method. */
const isResponseShaped = (m: unknown): m is { id: RequestId } =>
  hasKey(m, 'id') && !('method' in m) && ('result' in m || 'error' in m);

/**
 * The transport the McpServer talks to: forwards to the SDK's HTTP transport, but gives every
 * request the server sends an id that names this replica, and maps the client's answer back.
 */
export class ReplicaTaggedTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;
  private readonly pending = new Map<string, RequestId>();
  /** Per client request being answered: what this server wrote first on its response stream. */
  private readonly firstOnStream = new Map<RequestId, 'answer' | 'other'>();
  private readonly inner: WebStandardStreamableHTTPServerTransport;
  private readonly replica: string;

  constructor(inner: WebStandardStreamableHTTPServerTransport, replica: string) {
    this.inner = inner;
    this.replica = replica;
    inner.onmessage = (message, extra) => this.receive(message, extra);
    inner.onclose = () => this.onclose?.();
    inner.onerror = (error) => this.onerror?.(error);
  }

  get sessionId() {
    return this.inner.sessionId;
  }

  start() {
    return this.inner.start();
  }

  close() {
    return this.inner.close();
  }

  send(message: JSONRPCMessage, options?: TransportSendOptions) {
    if (isResponseShaped(message)) {
      // The first message on this request's stream is its answer, unless something went before it.
      if (!this.firstOnStream.has(message.id)) this.firstOnStream.set(message.id, 'answer');
    } else if (options?.relatedRequestId !== undefined && !this.firstOnStream.has(options.relatedRequestId)) {
      this.firstOnStream.set(options.relatedRequestId, 'other');
    }
    if (isRequestShaped(message)) {
      const wireId = `fg.${this.replica}.${String(message.id)}`;
      this.pending.set(wireId, message.id);
      return this.inner.send({ ...message, id: wireId }, options);
    }
    return this.inner.send(message, options);
  }

  /**
   * Whether the first message written on the response stream of the client's request `id` was its
   * answer (nothing before it: no progress, no elicitation). The HTTP layer asks after the stream's
   * first chunk, and calls `forget` once the request is done.
   */
  answeredFirst(id: RequestId): boolean {
    return this.firstOnStream.get(id) === 'answer';
  }

  /** Whether a call here waits for the answer with this (wire) id: only such an answer is free of the budget. */
  awaits(id: unknown): boolean {
    return typeof id === 'string' && this.pending.has(id);
  }

  /** Drops what was noted for the client's request `id`; the HTTP layer calls it when its POST ends. */
  forget(id: RequestId): void {
    this.firstOnStream.delete(id);
  }

  /** A client message, from this replica's HTTP request or relayed from another replica. */
  receive(message: JSONRPCMessage, extra?: MessageExtraInfo) {
    if (isResponseShaped(message) && typeof message.id === 'string') {
      const original = this.pending.get(message.id);
      if (original !== undefined) {
        this.pending.delete(message.id);
        this.onmessage?.({ ...message, id: original }, extra);
        return;
      }
    }
    this.onmessage?.(message, extra);
  }
}

/** The replica a client response is addressed to, from the id the server gave its request. */
function replicaOf(message: JSONRPCMessage & { id: RequestId }): string | undefined {
  return typeof message.id === 'string' ? WIRE_ID.exec(message.id)?.[1] : undefined;
}

const INTERNAL_URL = 'http://fraudgate.internal/mcp';
const REPLAY_HEADERS = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' };

export function createMcpSessionManager(options: McpSessionManagerOptions) {
  const { stores, logger, caps, timeouts } = options;
  const registry = stores.mcpSessions;
  /** This process's tag in server request ids; random, since waiting calls do not survive a restart. */
  const replica = randomBytes(6).toString('hex');
  const live = new Map<string, LiveSession>();
  const wires = new Map<string, ReplicaTaggedTransport>();
  const restoring = new Map<string, Promise<LiveSession>>();
  let initializing = 0;

  function build(id: string, principal: Principal, recordedAt = Date.now()): LiveSession {
    const server = options.createServer(principal);
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: () => id });
    const wire = new ReplicaTaggedTransport(transport, replica);
    const session: LiveSession = {
      id,
      principal,
      transport,
      wire,
      server,
      calls: 0,
      streams: 0,
      lastSeen: Date.now(),
      lastTouched: recordedAt,
      seenAtSweep: 0,
      used: false,
      confirmedAt: 0,
    };
    wires.set(id, wire);
    return session;
  }

  async function connect(session: LiveSession) {
    const wire = wires.get(session.id)!;
    await session.server.connect(wire);
    // Registered after connect (which installs the server's own onclose): the cache forgets closed sessions.
    const serverOnClose = wire.onclose;
    wire.onclose = () => {
      serverOnClose?.();
      if (live.get(session.id) === session) forget(session.id);
    };
  }

  function forget(id: string) {
    const session = live.get(id);
    live.delete(id);
    wires.delete(id);
    if (!session) return;
    void session.transport.close().catch(() => {});
    void session.server.close().catch(() => {});
  }

  /**
   * The row is gone already; other replicas drop their objects now. Should the announcement fail,
   * they still read the registry again within CONFIRMED_FOR_MS.
   */
  async function announceEnded(ids: readonly string[]) {
    await stores.relay.announceEnded(ids).catch((error: unknown) =>
      logger.warn('could not announce ended sessions to the other replicas', {
        error: error instanceof Error ? error.message : String(error),
      }),
    );
  }

  /** Rebuilds a session this replica has not seen, from its registry row (see the header comment). */
  async function restore(row: McpSessionRecord): Promise<LiveSession> {
    // Its activity as the registry last recorded it (by any replica), not the time of the rebuild.
    const session = build(row.id, row.principal, row.last_used_at);
    await connect(session);
    const initialize = await session.transport.handleRequest(
      new Request(INTERNAL_URL, {
        method: 'POST',
        headers: REPLAY_HEADERS,
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 'fraudgate-restore',
          method: 'initialize',
          params: {
            protocolVersion: row.protocol_version,
            capabilities: row.client_capabilities,
            clientInfo: row.client_info,
          },
        }),
      }),
    );
    // Reading the replayed answer to its end also waits until the server has processed initialize.
    await initialize.text();
    if (initialize.status !== 200) throw new Error(`session restore failed with HTTP ${initialize.status}`);
    const initialized = await session.transport.handleRequest(
      new Request(INTERNAL_URL, {
        method: 'POST',
        headers: {
          ...REPLAY_HEADERS,
          'mcp-session-id': row.id,
          'mcp-protocol-version': row.protocol_version,
        },
        body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
      }),
    );
    await initialized.text();
    session.used = row.used;
    live.set(row.id, session);
    logger.info('mcp session restored on this replica', { principal: row.principal.id });
    return session;
  }

  /** Announcements that ended sessions; a registry read in flight meanwhile must not be trusted later. */
  let endings = 0;
  const stopHearingEnded = stores.relay.onEnded((ids) => {
    endings += 1;
    for (const id of ids) forget(id);
  });

  const samePrincipal = (a: Principal, b: Principal) =>
    a.id === b.id && a.kind === b.kind && a.role === b.role;

  /** Relayed answers addressed to this replica: hand them to the waiting session, if it is still here. */
  const listening = stores.relay.listen(replica, ({ session_id, message }) => {
    const wire = wires.get(session_id);
    if (!wire) {
      logger.debug('relayed answer for a session not open here', {});
      return;
    }
    wire.receive(message as JSONRPCMessage);
  });

  return {
    replica,
    /** Resolves once the relay listens (a replica must not serve before answers can reach it). */
    ready: listening,

    /** Open sessions fleet-wide (the registry), for /metrics and tests. */
    count: () => stored(registry.count()),

    /** Sessions open in this process, and `initialize` requests in progress. */
    localCount: () => live.size,
    inFlightCalls: () => [...live.values()].reduce((n, s) => n + s.calls, 0) + initializing,

    /**
     * Registers a new session (caps checked atomically), then lets the SDK transport answer the
     * `initialize` request. Throws SessionCapError or SessionStoreUnavailableError.
     */
    async initialize(principal: Principal, body: InitializeRequest, request: Request): Promise<Response> {
      initializing += 1;
      try {
        const id = randomUUID();
        const requested = body.params.protocolVersion;
        const now = Date.now();
        const created = await stored(
          registry.create(
            {
              id,
              principal,
              // The same rule as the SDK's Server._oninitialize, so a rebuilt session negotiates the same.
              protocol_version: SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
                ? requested
                : LATEST_PROTOCOL_VERSION,
              client_capabilities: body.params.capabilities as Record<string, unknown>,
              client_info: body.params.clientInfo as Record<string, unknown>,
              created_at: now,
              last_used_at: now,
              used: false,
            },
            caps,
          ),
        );
        if (!created.ok) throw new SessionCapError(created);
        const session = build(id, principal, now);
        await connect(session);
        live.set(id, session);
        const response = await session.transport.handleRequest(request, { parsedBody: body });
        if (response.status !== 200) {
          // The transport refused the handshake (e.g. a wrong Accept header): nothing to keep.
          forget(id);
          await registry.delete(id).catch(() => false);
        } else {
          logger.info('mcp session opened', { principal: principal.id });
        }
        return response;
      } finally {
        initializing -= 1;
      }
    },

    /**
     * The live session for `id` if it belongs to `principal`, rebuilt here when another replica
     * opened it; undefined answers 404 whether the id is unknown or another principal's.
     */
    async resolve(id: string, principal: Principal): Promise<LiveSession | undefined> {
      const readAt = Date.now();
      const known = live.get(id);
      const since = stores.relay.listeningSince();
      if (
        known &&
        since !== undefined &&
        since <= known.confirmedAt &&
        readAt - known.confirmedAt < CONFIRMED_FOR_MS
      ) {
        if (samePrincipal(known.principal, principal)) return known;
        logger.warn('session used by another principal', { principal: principal.id });
        return undefined;
      }
      const endingsBefore = endings;
      const row = await stored(registry.get(id));
      // An announcement since the read began may have ended the session after the row was read.
      const confirmedAt = () => (endings === endingsBefore ? readAt : 0);
      const cached = live.get(id);
      if (!row) {
        if (cached) forget(id); // ended on another replica (DELETE or reaped)
        return undefined;
      }
      if (!samePrincipal(row.principal, principal)) {
        logger.warn('session used by another principal', { principal: principal.id });
        return undefined;
      }
      if (cached) {
        cached.confirmedAt = confirmedAt();
        return cached;
      }
      let pending = restoring.get(id);
      if (!pending) {
        pending = restore(row).finally(() => restoring.delete(id));
        restoring.set(id, pending);
      }
      const restored = await pending;
      restored.confirmedAt = confirmedAt();
      return restored;
    },

    /** Whether this replica has the session's live objects (no registry read needed to find it). */
    knows: (sessionId: string) => live.has(sessionId),

    /**
     * Whether `message` answers a request a call on this replica waits for in session `sessionId`:
     * the one kind of client answer the request budget does not pay for (see http.ts withinBudget).
     */
    awaitedHere: (sessionId: string, message: unknown) =>
      isResponseShaped(message) && (wires.get(sessionId)?.awaits(message.id) ?? false),

    /**
     * Whether `message` is a client answer addressed to another replica's call (an `fg.<tag>.*` id
     * naming a tag other than this replica's): what `relayIfElsewhere` forwards, or drops when no
     * replica listens for the tag. The HTTP layer takes it from the principal's answers budget.
     */
    addressedElsewhere: (message: unknown) => {
      if (!isResponseShaped(message)) return false;
      const target = replicaOf(message as JSONRPCMessage & { id: RequestId });
      return target !== undefined && target !== replica;
    },

    /**
     * Whether `body` only answers requests this replica sent (responses with `fg.<this replica>.*`
     * ids): a draining replica still takes these, since a call here is waiting for them.
     */
    answersOwnRequests(body: unknown): boolean {
      const messages = Array.isArray(body) ? body : [body];
      return (
        messages.length > 0 &&
        messages.every(isResponseShaped) &&
        messages.every(isResponse) &&
        messages.every((m) => replicaOf(m) === replica)
      );
    },

    /**
     * Client answers addressed to another replica's waiting call are forwarded there; returns true
     * when every message was addressed elsewhere (the request is answered 202 without touching a
     * transport). Only answers to a live replica's tag are forwarded: one naming a tag no replica
     * listens for (forged, or its replica gone) answers nothing anywhere and is dropped, so it costs
     * no NOTIFY that every replica would receive and parse. The answers budget paid for each beforehand.
     */
    async relayIfElsewhere(sessionId: string, body: unknown): Promise<boolean> {
      const messages = Array.isArray(body) ? body : [body];
      // Requests and notifications (nearly every POST) never relay: decided on shape alone.
      if (messages.length === 0 || !messages.every(isResponseShaped) || !messages.every(isResponse))
        return false;
      const targets = messages.map((m) => replicaOf(m));
      if (targets.some((t) => t === undefined || t === replica)) return false;
      const live = new Map<string, boolean>();
      for (const target of new Set(targets as string[]))
        live.set(target, await stored(stores.relay.isListening(target)));
      for (const [i, message] of messages.entries()) {
        if (!live.get(targets[i]!)) {
          logger.debug('client answer addressed to no live replica; dropped', {});
          continue;
        }
        let relayed: unknown = message;
        if (Buffer.byteLength(JSON.stringify(message)) > MAX_RELAYED_BYTES) {
          // Too big for a NOTIFY payload: the waiting call gets an error now instead of waiting in vain.
          logger.warn('client answer too large to relay; the waiting call gets an error', {
            limit_bytes: MAX_RELAYED_BYTES,
          });
          relayed = {
            jsonrpc: '2.0',
            id: message.id,
            error: { code: -32600, message: `The answer exceeds ${MAX_RELAYED_BYTES} bytes.` },
          };
        }
        await stored(stores.relay.publish(targets[i]!, { session_id: sessionId, message: relayed }));
      }
      return true;
    },

    /**
     * Records activity. Only the session's first request after the handshake writes at once (`used`:
     * an unused session is reaped sooner, by any replica). Later activity is written by the next
     * reaper tick, for every session in one statement: a write per request, or per session every
     * few seconds, is a synchronous commit on SQLite that stalls every request in flight.
     */
    async touch(session: LiveSession, used: boolean) {
      const now = Date.now();
      session.lastSeen = now;
      if (used && !session.used) {
        session.lastTouched = now;
        session.used = true;
        await stored(registry.touch(session.id, now, true));
      }
    },

    /** DELETE /mcp: the row goes at once, so every replica answers 404 from now on. */
    async terminate(id: string) {
      await stored(registry.delete(id));
      forget(id);
      await announceEnded([id]);
      logger.info('mcp session closed', { reason: 'deleted' });
    },

    /**
     * One reaper tick: heartbeat sessions with open streams here, remove unused and idle sessions
     * fleet-wide, drop cache entries this replica no longer serves.
     */
    async sweep(now = Date.now()) {
      // Sessions with a call or stream open here, or requests not yet recorded, are written as used
      // now, in one statement, when their record is a quarter of their timeout old or they went
      // quiet: `last_used_at` never lags the activity by more than half the timeout, and a quiet
      // session's last request is recorded within two ticks, so a session is never reaped early.
      const active: LiveSession[] = [];
      for (const session of live.values()) {
        const open = session.streams + session.calls > 0;
        const unrecorded = session.lastSeen > session.lastTouched;
        // No request since the previous tick: record the last one now, so the timeout counts from it.
        const wentQuiet = unrecorded && !open && session.lastSeen === session.seenAtSweep;
        session.seenAtSweep = session.lastSeen;
        if (!open && !unrecorded) continue;
        // A session in steady use is written once per quarter of its timeout, not every tick: each
        // write is a commit (a sync on SQLite, on the event loop), and the row still never looks
        // older than half the timeout (a quarter plus a tick of at most a quarter) while in use.
        const refreshMs = (session.used ? timeouts.idleMs : timeouts.unusedMs) / 4;
        if (wentQuiet || now - session.lastTouched >= refreshMs) active.push(session);
      }
      if (active.length > 0) {
        await registry.touchMany(
          active.map((session) => session.id),
          now,
        );
        for (const session of active) session.lastTouched = now;
      }
      const reaped = await registry.reap(now, timeouts);
      for (const id of reaped) forget(id);
      if (reaped.length > 0) {
        await announceEnded(reaped);
        logger.info('mcp sessions reaped', { count: reaped.length });
      }
      for (const [id, session] of live) {
        if (session.calls + session.streams === 0 && now - session.lastSeen >= timeouts.idleMs) forget(id);
      }
    },

    /** Shutdown: close this replica's live objects; the rows stay, so clients continue elsewhere. */
    async closeAll() {
      stopHearingEnded();
      for (const id of [...live.keys()]) forget(id);
    },
  };
}

export type McpSessionManager = ReturnType<typeof createMcpSessionManager>;
