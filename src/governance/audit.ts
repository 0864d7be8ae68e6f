/**
 * The audit record: what one attempt or state change leaves behind, how it is hashed into its
 * writer's chain, and the interface every part of fraudgate appends through
 * (shared/docs/architecture.md, "Audit"). The ledger that stores records lives in
 * `audit-ledger.ts`; checkpoint signatures in `audit-signing.ts`.
 *
 * A record is stored as its header (writer, seq, prev_hash, hash) plus `body`: the canonical JSON of
 * everything else, hashed byte for byte. Verifying a record therefore hashes stored text and never
 * re-serialises it, which keeps `fraudgate audit verify` fast and immune to serialiser drift.
 *
 * Files written by earlier versions (`audit.jsonl`, one v1 record a line, a single chain) are still
 * verified by {@link verifyLegacyAuditFile}.
 */
import { createReadStream } from 'node:fs';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import { GENESIS_HASH } from './audit-chain.ts';
import { currentTraceId } from '../tracing.ts';
import type { ArgumentSummary } from './input-bounds.ts';
import { canonicalJson, isInCanonicalOrder, sha256Hex } from './redact.ts';
import type { Redactor } from './redact.ts';
import type { SqlExecutor } from '../store/sql.ts';

/** Every event an audit record can carry; one record per attempt and per state change. */
export const AUDIT_EVENTS = [
  'attempt',
  'invalid',
  'forbidden',
  'rate_limited',
  // Refused because a dependency the call needs (the shared rate-limit store) was unreachable.
  'unavailable',
  'intent',
  'executed',
  'failed',
  // A write whose caller cancelled it before its intent was recorded: nothing was done.
  'cancelled',
  'approval_requested',
  // An approved action did not run: its evidence changed before execution; a new approval replaces it.
  'evidence_changed',
  'approved',
  'denied',
  'expired',
  'confirmed',
  'declined',
  'dry_run',
  // Decision webhooks and the outbox (src/webhooks, src/outbox).
  'webhook_accepted',
  'webhook_duplicate',
  'webhook_rejected',
  // A Segment message the mapping does not cover: acknowledged, not stored.
  'webhook_ignored',
  'superseded',
  'dead_lettered',
  'requeued',
  'dropped',
  // Refusals past a principal's refusal budget, counted rather than recorded one by one.
  'refusals_counted',
  // Governance data changed by an authenticated human (src/cli).
  'identity_mapped',
  'identity_unmapped',
  // Blast-radius budgets (src/governance/budgets.ts): a ceiling reached, a human lifting the pause.
  'budget_paused',
  'budget_lifted',
] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];

/** Who made the call. Kept verbatim: the audit exists to say which analyst or automation acted. */
export interface AuditPrincipal {
  id: string;
  kind: 'user' | 'automation' | 'service';
  role?: string;
}

/** How a call or state change ended. `message` is redacted before it is stored. */
export interface AuditOutcome {
  code?: string;
  message?: string;
  retryable?: boolean;
}

/** One upstream request made for the call, for tracing it in the vendor's own logs. */
export interface AuditUpstream {
  service: string;
  request_id?: string;
  latency_ms?: number;
  status?: number;
}

/** The part of a record its writer's chain does not decide: what happened. Stored as `body`. */
export interface AuditPayload {
  ts: string;
  event: AuditEvent;
  call_id: string;
  tool?: string;
  principal: AuditPrincipal;
  args_redacted?: unknown;
  /** Refused calls: a bounded summary (hash, size, field names) instead of the arguments. */
  args_summary?: ArgumentSummary;
  args_hash?: string;
  target?: string;
  approval_id?: string;
  outcome?: AuditOutcome;
  upstream?: AuditUpstream[];
  duration_ms?: number;
  detail?: string;
  /** `refusals_counted`: refusals over the principal's budget, counted since `since`. */
  refusals?: { count: number; since: string; by_event: Record<string, number> };
  /** The OpenTelemetry trace of the call (the caller's, when it sent a traceparent), when tracing is on. */
  trace_id?: string;
}

/**
 * One ledger record. `seq` counts from 1 per writer with no gaps; the first record's `prev_hash` is
 * {@link GENESIS_HASH}; `hash` is `chainHash` (audit-chain.ts) of the header and the canonical body.
 * `args_redacted`, `target`, `detail` and `outcome.message` have been through the redactor;
 * `args_hash` is whatever the pipeline computed over the raw arguments (it binds approvals).
 */
export interface AuditRecord extends AuditPayload {
  v: 2;
  writer: string;
  seq: number;
  prev_hash: string;
  hash: string;
}

/** What callers supply; the ledger fills in time, writer, sequence and the chain. */
export type AuditAppendInput = Omit<AuditPayload, 'ts'>;

/** Where every part of fraudgate records what happened. One instance per process. */
export interface AuditLog {
  /** Resolves with the stored record once it is durable; rejects (FraudgateError INTERNAL) if not. */
  append(input: AuditAppendInput): Promise<AuditRecord>;
  /**
   * Appends inside the caller's open store transaction (`store.transaction`), on its connection:
   * the record commits or rolls back with the state change it records (an approval or outbox
   * transition). Durable once that transaction commits; it does not join a group commit.
   */
  appendIn(tx: SqlExecutor, input: AuditAppendInput): Promise<AuditRecord>;
  /**
   * {@link appendIn} for several records at once (one head update): the records of a group of
   * state changes committed together, e.g. webhooks arriving together. Resolves in input order.
   */
  appendManyIn(tx: SqlExecutor, inputs: readonly AuditAppendInput[]): Promise<AuditRecord[]>;
  /**
   * Write-behind for calls that change nothing upstream (reads): the record joins the next group
   * commit without the caller waiting. Kept and retried if that commit fails; while it does,
   * {@link assertWritable} refuses new calls.
   */
  enqueue(input: AuditAppendInput): void;
  /** Throws a retryable UPSTREAM_ERROR (data.dependency 'ledger') while the ledger cannot write: calls fail closed. */
  assertWritable(): void;
  /** For `/readyz`: whether the last commit succeeded, and why not. */
  health(): { ok: true } | { ok: false; reason: string };
  /** Resolves once everything appended or enqueued so far is durable. */
  flush(): Promise<void>;
  /** Flushes, seals the chain with a final checkpoint and stops; later appends reject. */
  close(): Promise<void>;
  /** This process's chain in the ledger. */
  readonly writer: string;
}

/**
 * A ledger failure. A retryable one (the store behind the ledger cannot be written for now) is a
 * dependency's failure, UPSTREAM_ERROR like an unavailable rate-limit store, not a bug (INTERNAL).
 */
export function auditError(message: string, detail: string, cause?: unknown, retryable = false) {
  return new FraudgateError(retryable ? ERROR_CODES.UPSTREAM_ERROR : ERROR_CODES.INTERNAL, message, {
    detail,
    cause,
    retryable,
    ...(retryable ? { data: { dependency: 'ledger' } } : {}),
  });
}

/**
 * What a caller throws when the record its action needs could not be written (`error`, from the
 * ledger), with its own `message` saying what was (not) done: a ledger that cannot write for now
 * stays a dependency's outage (retryable UPSTREAM_ERROR, `data.dependency` 'ledger'; the outbox
 * pauses for it without spending attempts); anything else (a bug) is INTERNAL.
 */
export function unrecordedError(message: string, error: unknown): FraudgateError {
  const retryable = error instanceof FraudgateError && error.retryable;
  return new FraudgateError(retryable ? ERROR_CODES.UPSTREAM_ERROR : ERROR_CODES.INTERNAL, message, {
    detail: error instanceof FraudgateError ? (error.detail ?? error.message) : String(error),
    cause: error,
    retryable,
    ...(retryable ? { data: { dependency: 'ledger' } } : {}),
  });
}

export function isAuditEvent(value: unknown): value is AuditEvent {
  return typeof value === 'string' && (AUDIT_EVENTS as readonly string[]).includes(value);
}

/** The trace a call's record carries: its own `trace_id`, else the active span's, else none (null). */
export const callTraceId = (input: AuditAppendInput): string | null =>
  input.trace_id ?? currentTraceId() ?? null;

/**
 * A record's payload: the input with personal data redacted and the time stamped. Its keys are
 * written in sorted order, so {@link encodeAuditBody} can usually serialise it natively.
 */
export function buildAuditPayload(
  input: AuditAppendInput,
  ts: Date,
  redactor: Redactor,
  /**
   * The calling span's trace (`input.trace_id`, else the active span's): passed in, `null` for none,
   * when the payload is built later than the call (write-behind), in another span.
   */
  traceId: string | null = callTraceId(input),
): AuditPayload {
  const redactString = (text: string | undefined): string | undefined =>
    text === undefined ? undefined : String(redactor.redactValue(text));
  return {
    approval_id: input.approval_id,
    args_hash: input.args_hash,
    args_redacted: input.args_redacted === undefined ? undefined : redactor.redactValue(input.args_redacted),
    args_summary:
      input.args_summary === undefined
        ? undefined
        : (redactor.redactValue(input.args_summary) as ArgumentSummary),
    call_id: input.call_id,
    detail: redactString(input.detail),
    duration_ms: input.duration_ms,
    event: input.event,
    outcome:
      input.outcome === undefined
        ? undefined
        : { ...input.outcome, message: redactString(input.outcome.message) },
    principal: input.principal,
    refusals: input.refusals,
    target: redactString(input.target),
    tool: input.tool,
    trace_id: traceId ?? undefined,
    ts: ts.toISOString(),
    upstream: input.upstream,
  };
}

/** The payload's fields in sorted order: the body is canonical JSON without sorting on every record. */
const PAYLOAD_KEYS = [
  'approval_id',
  'args_hash',
  'args_redacted',
  'args_summary',
  'call_id',
  'detail',
  'duration_ms',
  'event',
  'outcome',
  'principal',
  'refusals',
  'target',
  'tool',
  'trace_id',
  'ts',
  'upstream',
] as const satisfies readonly (keyof AuditPayload)[];
/** Fails to compile when AuditPayload gains a field that PAYLOAD_KEYS does not list (it would not be stored). */
const _everyPayloadKeyListed: [Exclude<keyof AuditPayload, (typeof PAYLOAD_KEYS)[number]>] extends [never]
  ? true
  : never = true;

/**
 * The stored body: exactly `canonicalJson(payload)` (sorted keys, so the same payload always hashes
 * the same wherever it was written). Every append pays for it: a payload from
 * {@link buildAuditPayload} whose nested objects list their keys in order too (the common case)
 * is serialised natively in one go; otherwise the top level goes in its fixed order and each
 * value through `canonicalJson`.
 */
export function encodeAuditBody(payload: AuditPayload): string {
  if (hasOnlyPayloadKeys(payload) && isInCanonicalOrder(payload)) return JSON.stringify(payload);
  let out = '';
  for (const key of PAYLOAD_KEYS) {
    const value = payload[key];
    if (value === undefined) continue;
    const encoded = typeof value === 'string' ? JSON.stringify(value) : canonicalJson(value);
    out += `${out ? ',' : '{'}"${key}":${encoded}`;
  }
  return out ? `${out}}` : '{}';
}

const PAYLOAD_KEY_SET: ReadonlySet<string> = new Set(PAYLOAD_KEYS);

/** Whether every key of `payload` is a payload field (a stray key would be stored by the native path only). */
function hasOnlyPayloadKeys(payload: AuditPayload): boolean {
  for (const key in payload) if (!PAYLOAD_KEY_SET.has(key)) return false;
  return true;
}

/** The header of an exported record line; the body's fields follow it in the same object. */
function exportHeader(writer: string, seq: number, prevHash: string, hash: string): string {
  return `{"v":2,"writer":${JSON.stringify(writer)},"seq":${seq},"prev_hash":"${prevHash}","hash":"${hash}"`;
}

/**
 * One record as a flat JSON object (a line of `fraudgate audit export`). The body is spliced in
 * verbatim after the header, so {@link bodyOfExportLine} recovers the exact hashed text.
 */
export function exportRecordLine(writer: string, seq: number, prevHash: string, hash: string, body: string) {
  return body === '{}'
    ? `${exportHeader(writer, seq, prevHash, hash)}}`
    : `${exportHeader(writer, seq, prevHash, hash)},${body.slice(1)}`;
}

/** The hashed body inside an exported record line, or undefined if the line was not written that way. */
export function bodyOfExportLine(
  line: string,
  record: { writer: string; seq: number; prev_hash: string; hash: string },
) {
  const header = exportHeader(record.writer, record.seq, record.prev_hash, record.hash);
  if (!line.startsWith(header)) return undefined;
  const rest = line.slice(header.length);
  if (rest === '}') return '{}';
  return rest.startsWith(',') ? `{${rest.slice(1)}` : undefined;
}

/** A stored record as an object, for callers that read the ledger (tests, the console, export). */
export function recordFromRow(writer: string, seq: number, prevHash: string, hash: string, body: string) {
  return {
    v: 2,
    writer,
    seq,
    prev_hash: prevHash,
    hash,
    ...(JSON.parse(body) as AuditPayload),
  } as AuditRecord;
}

// ---------------------------------------------------------------------------------------------
// Legacy audit.jsonl files (v1: one chain, one record a line), written before the ledger existed.

/** `prev_hash` of a legacy file's first record. */
const LEGACY_GENESIS = GENESIS_HASH;
const HASH_SHAPE = /^[0-9a-f]{64}$/;

/** The hash a legacy (v1) record must carry: `sha256(prev_hash + canonicalJson(record without hash))`. */
export function hashLegacyAuditRecord(record: Record<string, unknown>): string {
  const { hash: _ignored, ...rest } = record;
  return sha256Hex(String(rest.prev_hash) + canonicalJson(rest));
}

/** Result of a file verification; `line` is 1-based and names the first bad line. */
export type AuditFileVerifyResult =
  | { ok: true; records: number; last_hash: string }
  | { ok: false; records: number; line: number; reason: string };

export interface RawLine {
  number: number;
  text: string;
  terminated: boolean;
}

/** Lines split on bytes (so multi-byte characters across chunks survive), noting a missing final newline. */
export async function* readLines(path: string): AsyncGenerator<RawLine> {
  const stream = createReadStream(path, { highWaterMark: 1 << 20 });
  let pending: Buffer[] = [];
  let number = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, from)) {
        pending.push(chunk.subarray(from, nl));
        number += 1;
        yield {
          number,
          text: (pending.length === 1 ? pending[0]! : Buffer.concat(pending)).toString('utf8'),
          terminated: true,
        };
        pending = [];
        from = nl + 1;
      }
      if (from < chunk.length) pending.push(chunk.subarray(from));
    }
    if (pending.length > 0) {
      number += 1;
      yield { number, text: Buffer.concat(pending).toString('utf8'), terminated: false };
    }
  } finally {
    // Callers stop early on the first bad line; leaving the loop already closes the stream.
    stream.destroy();
  }
}

/** Why a line is not a well-formed v1 record, or undefined if its shape is right. */
function legacyShapeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const r = value as Record<string, unknown>;
  if (r.v !== 1) return `unsupported version ${JSON.stringify(r.v)}`;
  if (!Number.isSafeInteger(r.seq)) return 'seq is not an integer';
  if (typeof r.hash !== 'string' || !HASH_SHAPE.test(r.hash)) return 'hash is missing or malformed';
  if (typeof r.prev_hash !== 'string' || !HASH_SHAPE.test(r.prev_hash))
    return 'prev_hash is missing or malformed';
  if (!isAuditEvent(r.event)) return 'unknown event';
  return undefined;
}

/**
 * Re-walks a legacy `audit.jsonl` chain. Reports the first line that is torn, not a record, out of
 * sequence (deleted or reordered records), chained to the wrong predecessor, or whose content no
 * longer matches its hash (edited). Such files carry no checkpoints: a cut tail or a full re-chain
 * cannot be told from an intact file. Rejects only if the file cannot be read.
 */
export async function verifyLegacyAuditFile(path: string): Promise<AuditFileVerifyResult> {
  let prevHash = LEGACY_GENESIS;
  let records = 0;
  const fail = (line: number, reason: string): AuditFileVerifyResult => ({
    ok: false,
    records,
    line,
    reason,
  });
  for await (const { number, text, terminated } of readLines(path)) {
    if (!terminated) return fail(number, 'line has no newline (torn write or truncation)');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return fail(number, text.trim() === '' ? 'empty line' : 'not valid JSON (truncated or edited)');
    }
    const problem = legacyShapeProblem(parsed);
    if (problem) return fail(number, problem);
    const record = parsed as { seq: number; prev_hash: string; hash: string };
    if (record.seq !== records + 1) {
      return fail(
        number,
        `seq ${record.seq} where ${records + 1} was expected (record deleted or reordered)`,
      );
    }
    if (record.prev_hash !== prevHash) {
      return fail(number, 'prev_hash does not match the previous record (record deleted or reordered)');
    }
    if (hashLegacyAuditRecord(parsed as Record<string, unknown>) !== record.hash)
      return fail(number, 'hash mismatch (record edited)');
    prevHash = record.hash;
    records += 1;
  }
  return { ok: true, records, last_hash: prevHash };
}
