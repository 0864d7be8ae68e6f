/**
 * stdio transport: one MCP session per process, the principal is the configured analyst
 * (FRAUDGATE_ANALYST). stdout carries only the protocol; everything else goes to stderr.
 *
 * Start-up order: the caller has already refused a bad configuration (nothing is answered then).
 * The transport connects next and answers `initialize` (and `ping`) at once, while the runtime
 * opens — store, audit ledger writer, rate limiter, jobs. Every other message waits, in arrival
 * order, until the runtime is open, so no call can reach a half-opened runtime. Should opening
 * fail (PostgreSQL or Redis unreachable), the process prints one line and exits 1 without
 * answering anything but the handshake: the client sees the connection close.
 */
import process from 'node:process';
import type { Readable, Writable } from 'node:stream';
import { serializeMessage, STDIO_DEFAULT_MAX_BUFFER_SIZE } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  JSONRPCMessageSchema,
  type JSONRPCMessage,
  type MessageExtraInfo,
} from '@modelcontextprotocol/sdk/types.js';
import { normalizeIdentity, UNIDENTIFIED } from '../auth/identity.ts';
import type { Pipeline } from '../governance/pipeline.ts';
import type { BucketConfig } from '../config.ts';
import { createLogBudget } from '../log-budget.ts';
import type { Logger } from '../logger.ts';
import type { Runtime } from '../runtime.ts';
import { createMcpServer, type ServerLogger, type ServerPipeline } from '../server.ts';
import type { Principal } from '../tool.ts';
import { malformedRequestAnswer } from './malformed-request.ts';

/** The stdio principal: the configured analyst, or an unidentified one that may only read. */
export function stdioPrincipal(analyst: string | undefined): Principal {
  // No credential on stdio: whoever starts the process names the analyst, so the name is only a claim.
  return {
    id: analyst ? normalizeIdentity(analyst) : UNIDENTIFIED,
    kind: 'user',
    role: 'analyst',
    declared: true,
  };
}

/**
 * The SDK's StdioServerTransport (newline-delimited JSON-RPC on stdin/stdout), except for a line
 * that is JSON but not a valid JSON-RPC message: the SDK drops it, so a request with, say,
 * `_meta: null` is never answered and its client waits forever. Here a request with a usable id
 * gets a JSON-RPC error for that id naming the field (src/transports/malformed-request.ts); other
 * bad lines are reported to `onerror` and dropped, as before.
 */
export class StdioTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: <T extends JSONRPCMessage>(message: T, extra?: MessageExtraInfo) => void;
  private buffer: Buffer | undefined;
  private started = false;
  private readonly stdin: Readable;
  private readonly stdout: Writable;

  constructor(stdin: Readable = process.stdin, stdout: Writable = process.stdout) {
    this.stdin = stdin;
    this.stdout = stdout;
  }

  private readonly ondata = (chunk: Buffer) => {
    if ((this.buffer?.length ?? 0) + chunk.length > STDIO_DEFAULT_MAX_BUFFER_SIZE) {
      this.buffer = undefined;
      this.onerror?.(new Error(`A message exceeds ${STDIO_DEFAULT_MAX_BUFFER_SIZE} bytes`));
      void this.close();
      return;
    }
    this.buffer = this.buffer ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (let end = this.buffer.indexOf('\n'); end !== -1; end = this.buffer.indexOf('\n')) {
      const line = this.buffer.toString('utf8', 0, end).replace(/\r$/, '');
      this.buffer = this.buffer.subarray(end + 1);
      this.receive(line);
      if (!this.buffer) return; // closed by a handler
    }
  };

  private readonly onstreamerror = (error: Error) => this.onerror?.(error);

  private receive(line: string): void {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      this.onerror?.(error as Error);
      return;
    }
    const parsed = JSONRPCMessageSchema.safeParse(value);
    if (parsed.success) {
      // A handler's throw is reported, as by the SDK's transport; the lines after this one still arrive.
      try {
        this.onmessage?.(parsed.data);
      } catch (error) {
        this.onerror?.(error instanceof Error ? error : new Error(String(error)));
      }
      return;
    }
    const answer = malformedRequestAnswer(value);
    if (answer) void this.send(answer).catch((error: unknown) => this.onerror?.(error as Error));
    else this.onerror?.(parsed.error);
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('StdioTransport already started');
    this.started = true;
    this.stdin.on('data', this.ondata);
    this.stdin.on('error', this.onstreamerror);
  }

  async close(): Promise<void> {
    this.stdin.off('data', this.ondata);
    this.stdin.off('error', this.onstreamerror);
    // Pause stdin only when nothing else reads it (as the SDK's transport does).
    if (this.stdin.listenerCount('data') === 0) this.stdin.pause();
    this.buffer = undefined;
    this.onclose?.();
  }

  send(message: JSONRPCMessage): Promise<void> {
    return new Promise((resolve) => {
      if (this.stdout.write(serializeMessage(message))) resolve();
      else this.stdout.once('drain', resolve);
    });
  }
}

/** What the MCP handshake may be answered with before the runtime is open: it touches no state. */
const ANSWERED_WHILE_OPENING = new Set(['initialize', 'ping', 'notifications/initialized']);

/**
 * The stdio transport with a gate: handshake messages pass at once, every other message is held
 * (in order) until `open()`. `handshakeAnswered` settles when the answer to `initialize` is written.
 */
export class OpeningGate implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: <T extends JSONRPCMessage>(message: T, extra?: MessageExtraInfo) => void;
  readonly handshakeAnswered: Promise<void>;
  private readonly inner: Transport;
  private held: [JSONRPCMessage, MessageExtraInfo | undefined][] | undefined = [];
  private initializeId: string | number | undefined;
  private answered!: () => void;

  constructor(inner: Transport) {
    this.inner = inner;
    this.handshakeAnswered = new Promise((resolve) => (this.answered = resolve));
  }

  async start(): Promise<void> {
    this.inner.onmessage = (message, extra) => this.receive(message, extra);
    this.inner.onclose = () => this.onclose?.();
    this.inner.onerror = (error) => this.onerror?.(error);
    await this.inner.start();
  }

  async send(message: JSONRPCMessage, options?: Parameters<Transport['send']>[1]): Promise<void> {
    await this.inner.send(message, options);
    if (this.initializeId !== undefined && 'id' in message && message.id === this.initializeId)
      this.answered();
  }

  async close(): Promise<void> {
    await this.inner.close();
  }

  /** The runtime is open: deliver what was held, in order, and everything after it directly. */
  open(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const [message, extra] of held) this.onmessage?.(message, extra);
  }

  private receive(message: JSONRPCMessage, extra?: MessageExtraInfo): void {
    const method = 'method' in message ? message.method : undefined;
    if (this.held && !(method !== undefined && ANSWERED_WHILE_OPENING.has(method))) {
      this.held.push([message, extra]);
      return;
    }
    if (method === 'initialize' && 'id' in message) this.initializeId ??= message.id;
    this.onmessage?.(message, extra);
  }
}

/** The object `current` returns; throws when the runtime is not open yet (used only behind the gate). */
function whenOpen<T>(what: string, current: () => T | undefined): () => T {
  return () => {
    const target = current();
    if (!target) throw new Error(`${what} used before the runtime opened`);
    return target;
  };
}

/** Stands in for the runtime's pipeline: each call goes to it once it is open. */
function pipelineWhenOpen(current: () => Pipeline | undefined): ServerPipeline {
  const pipeline = whenOpen('the pipeline', current);
  return {
    call: (toolName, rawArgs, channel) => pipeline().call(toolName, rawArgs, channel),
    visibleTools: (principal) => pipeline().visibleTools(principal),
    describePolicy: (principal) => pipeline().describePolicy(principal),
    toolLabel: (name) => pipeline().toolLabel(name),
  };
}

/** Stands in for the runtime's logger once it is open, and for the start-up logger before. */
function loggerWhenOpen(current: () => Logger | undefined): ServerLogger {
  const logger = whenOpen('the logger', current);
  return {
    enabled: (level) => logger().enabled(level),
    info: (msg, fields) => logger().info(msg, fields),
    warn: (msg, fields) => logger().warn(msg, fields),
  };
}

export interface StdioServeOptions {
  /** FRAUDGATE_ANALYST: who this session acts as. */
  analyst: string | undefined;
  /** Logs before the runtime is open; afterwards the runtime's (redacting) logger is used. */
  logger: Logger;
  /**
   * Opens the runtime and what runs beside it; called once the handshake is answered. Its `close`
   * runs when the client closes the stream.
   */
  open(): Promise<{ runtime: Runtime; close(): Promise<void> }>;
  /** Called after everything is closed (the CLI exits the process here). */
  onClosed(): void;
  /**
   * The log budget of refused calls' lines (`rate_limits.refusals`): past it they are counted into
   * one `log lines over budget` line a minute, and at the stream's end.
   */
  refusalLogBudget: BucketConfig;
}

/**
 * Serve MCP over stdin/stdout until the client closes the stream. Resolves once the runtime is
 * open; rejects when it cannot open (the caller reports it and exits).
 */
export async function serveStdio(options: StdioServeOptions): Promise<void> {
  // Set while the runtime opens, then once it is open.
  const state: { opening?: ReturnType<StdioServeOptions['open']>; runtime?: Runtime } = {};
  const logger = loggerWhenOpen(() => state.runtime?.logger ?? options.logger);
  // A flood that stops still gets its summary within a minute and ten seconds; the rest at the end.
  const logBudget = createLogBudget({ logger, bucket: options.refusalLogBudget, summaryEveryMs: 10_000 });
  const server = createMcpServer({
    pipeline: pipelineWhenOpen(() => state.runtime?.pipeline),
    principal: stdioPrincipal(options.analyst),
    logger,
    logBudget,
  });
  const gate = new OpeningGate(new StdioTransport());
  let closing = false;
  let closed!: () => void;
  const streamClosed = new Promise<void>((resolve) => (closed = resolve));
  let started!: () => void;
  const openingStarted = new Promise<void>((resolve) => (started = resolve));
  const close = async () => {
    if (closing) return;
    closing = true;
    closed();
    await server.close().catch(() => {});
    // Before the runtime (and its logger) closes: the counted lines' summary is not lost.
    logBudget.close();
    // The runtime opens even when the stream closed first (as before any client), so a start-up
    // failure still ends the process with its one line and exit 1 (reported by the caller); what
    // opened is closed again.
    const opened = await openingStarted.then(() => state.opening?.catch(() => undefined));
    if (!opened) return;
    await opened.close();
    options.onClosed();
  };
  gate.onclose = () => void close();
  process.stdin.on('end', () => void close());
  await server.connect(gate);
  // The client sent `initialize` with (or right after) spawning us: it is answered in this turn of
  // the event loop, before the runtime's synchronous work (SQLite, module loading) would delay it.
  // A client that waits longer before its handshake does not hold the runtime back.
  await Promise.race([
    gate.handshakeAnswered,
    streamClosed,
    new Promise((resolve) => setTimeout(resolve, 50)),
  ]);
  state.opening = options.open();
  started();
  state.runtime = (await state.opening).runtime;
  if (closing) return;
  gate.open();
}
