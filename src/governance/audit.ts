/**
 * The tamper-evident audit log: append-only JSON Lines, one record per attempt and per state
 * change, each carrying the hash of the record before it (shared/docs/architecture.md, "Audit").
 *
 * Durability: `append` resolves only after the line is fsynced, and rejects if it is not, so the
 * pipeline can refuse to write upstream when the audit cannot be written.
 *
 * Several processes append to one file (the server and `fraudgate approvals approve`). Each append
 * takes an exclusive lock file (`<file>.lock`, created with O_EXCL, holding pid and host), re-reads
 * the last line for seq and prev_hash, writes, fsyncs and unlocks, so writers never fork the chain.
 * A lock whose holder has died on this host is broken; a live holder is always waited for, since
 * breaking a slow writer's lock would fork the chain. Lock files are not reliable on network
 * filesystems: keep the audit file on a local disk.
 *
 * The chain detects edits, deletions and reorderings, but not removal of the newest records nor a
 * rewrite of every hash after an edit: compare the record count and `last_hash` from
 * `verifyAuditFile` with a copy kept elsewhere to cover those.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import { currentTraceId } from '../tracing.ts';
import type { ArgumentSummary } from './input-bounds.ts';
import { canonicalJson, sha256Hex } from './redact.ts';
import type { Redactor } from './redact.ts';

/** Every event an audit record can carry; one record per attempt and per state change. */
export const AUDIT_EVENTS = [
  'attempt',
  'invalid',
  'forbidden',
  'rate_limited',
  'intent',
  'executed',
  'failed',
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

/**
 * One line of the audit file. `hash = sha256(prev_hash + canonicalJson(record without hash))`;
 * the first record's `prev_hash` is {@link GENESIS_HASH} and `seq` counts from 1 with no gaps.
 * `args_redacted`, `target`, `detail` and `outcome.message` have been through the redactor;
 * `args_hash` is whatever the pipeline computed over the raw arguments (it binds approvals).
 */
export interface AuditRecord {
  v: 1;
  seq: number;
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
  prev_hash: string;
  hash: string;
}

/** What callers supply; the log fills in version, sequence, time and the chain. */
export type AuditAppendInput = Omit<AuditRecord, 'v' | 'seq' | 'ts' | 'prev_hash' | 'hash'>;

/** An open audit file. Appends from one instance are applied in call order. */
export interface AuditLog {
  /** Resolves with the stored record once it is on disk; rejects (FraudgateError INTERNAL) if not. */
  append(input: AuditAppendInput): Promise<AuditRecord>;
  /** Waits for pending appends; later appends reject. */
  close(): Promise<void>;
  readonly path: string;
}

export interface AuditLogOptions {
  redactor: Redactor;
  /** How long an append waits for another writer's lock before rejecting. Default 10 s. */
  lockTimeoutMs?: number;
  /** Age after which a lock file with no readable owner (a crash mid-creation) is broken. Default 30 s. */
  staleLockMs?: number;
  /** Clock for `ts`; tests pin it. */
  now?: () => Date;
}

/** `prev_hash` of the first record. */
export const GENESIS_HASH = '0'.repeat(64);

const HASH_SHAPE = /^[0-9a-f]{64}$/;
const TAIL_CHUNK = 64 * 1024;

function auditError(message: string, detail: string, cause?: unknown, retryable = false): FraudgateError {
  return new FraudgateError(ERROR_CODES.INTERNAL, message, { detail, cause, retryable });
}

function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

/** The hash a record must carry, given everything else in it. */
export function hashAuditRecord(record: Omit<AuditRecord, 'hash'> | Record<string, unknown>): string {
  const { hash: _ignored, ...rest } = record as Record<string, unknown>;
  return sha256Hex(String(rest.prev_hash) + canonicalJson(rest));
}

/**
 * Opens (creating if needed, with its directory) the audit file and checks that its tail is a
 * valid record to chain from. Rejects if the file cannot be created or its last line is damaged.
 */
export async function openAuditLog(path: string, options: AuditLogOptions): Promise<AuditLog> {
  const { redactor } = options;
  const lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
  const staleLockMs = options.staleLockMs ?? 30_000;
  const now = options.now ?? (() => new Date());
  const lockPath = `${path}.lock`;

  await mkdir(dirname(path), { recursive: true });
  await ensureFile(path);
  // Under the lock: another process may be mid-append, and its half-written line is not damage.
  const releaseOpen = await acquireLock(lockPath, lockTimeoutMs, staleLockMs);
  try {
    await readChainHead(path);
  } finally {
    await releaseOpen();
  }

  interface Pending {
    input: AuditAppendInput;
    resolve: (record: AuditRecord) => void;
    reject: (error: unknown) => void;
  }
  let pending: Pending[] = [];
  let draining: Promise<void> | undefined;
  let closed = false;

  /**
   * Group commit: appends that arrive while a write is in flight are chained and written together
   * under one lock, one write and one fsync. Each append still resolves only after its own line is
   * durable, in call order; if the batch fails, every append in it rejects.
   */
  const drain = async (): Promise<void> => {
    while (pending.length > 0) {
      const batch = pending.slice(0, MAX_GROUP_COMMIT);
      pending = pending.slice(batch.length);
      const written: { pending: Pending; record: AuditRecord }[] = [];
      try {
        const release = await acquireLock(lockPath, lockTimeoutMs, staleLockMs);
        try {
          let head = await readChainHead(path);
          const lines: string[] = [];
          for (const p of batch) {
            // One record that cannot be built (a value no redactor or JSON can take) fails alone,
            // never the group it shares with other calls' records.
            let record: AuditRecord;
            let line: string;
            try {
              record = buildRecord(p.input, head, now(), redactor);
              line = `${JSON.stringify(record)}\n`;
            } catch (error) {
              p.reject(error);
              continue;
            }
            head = { seq: record.seq, hash: record.hash };
            lines.push(line);
            written.push({ pending: p, record });
          }
          if (lines.length > 0) await appendDurably(path, lines.join(''));
        } finally {
          await release();
        }
      } catch (error) {
        // Nothing of this group reached the disk (a promise already rejected above ignores this).
        for (const p of batch) p.reject(error);
        continue;
      }
      // Resolved only once the lock is released, so a caller never sees its record while holding it.
      for (const { pending: p, record } of written) p.resolve(record);
    }
    draining = undefined;
  };

  return {
    path,
    append(input) {
      if (closed)
        return Promise.reject(auditError('The audit log is closed.', `append after close: ${path}`));
      if (!(AUDIT_EVENTS as readonly string[]).includes(input.event)) {
        return Promise.reject(auditError('Unknown audit event.', `event ${String(input.event)}`));
      }
      // Taken here, in the caller's async context: the drain below runs outside it.
      const traceId = input.trace_id ?? currentTraceId();
      if (traceId) input = { ...input, trace_id: traceId };
      const result = new Promise<AuditRecord>((resolve, reject) => pending.push({ input, resolve, reject }));
      draining ??= drain();
      return result.catch((error: unknown) => {
        if (error instanceof FraudgateError) throw error;
        throw auditError(
          'The audit log could not be written.',
          `append to ${path} failed: ${error instanceof Error ? error.message : String(error)}`,
          error,
        );
      });
    },
    async close() {
      closed = true;
      await draining;
    },
  };
}

/** Most records one group commit writes; bounds one write's size and the latency of the last one. */
const MAX_GROUP_COMMIT = 256;

function buildRecord(
  input: AuditAppendInput,
  head: { seq: number; hash: string },
  ts: Date,
  redactor: Redactor,
): AuditRecord {
  const redactString = (text: string | undefined): string | undefined =>
    text === undefined ? undefined : String(redactor.redactValue(text));
  const outcome =
    input.outcome === undefined
      ? undefined
      : { ...input.outcome, message: redactString(input.outcome.message) };
  // Field order is for human readers; the hash uses canonical (sorted) JSON.
  const draft = {
    v: 1 as const,
    seq: head.seq + 1,
    ts: ts.toISOString(),
    event: input.event,
    call_id: input.call_id,
    tool: input.tool,
    principal: input.principal,
    target: redactString(input.target),
    approval_id: input.approval_id,
    args_hash: input.args_hash,
    args_redacted: input.args_redacted === undefined ? undefined : redactor.redactValue(input.args_redacted),
    args_summary: input.args_summary === undefined ? undefined : redactor.redactValue(input.args_summary),
    outcome,
    upstream: input.upstream,
    duration_ms: input.duration_ms,
    detail: redactString(input.detail),
    refusals: input.refusals,
    trace_id: input.trace_id,
    prev_hash: head.hash,
  };
  // Hash exactly what a reader will parse back, so verification never disagrees with the writer.
  const plain = JSON.parse(JSON.stringify(draft)) as Omit<AuditRecord, 'hash'>;
  return { ...plain, hash: hashAuditRecord(plain) };
}

async function ensureFile(path: string): Promise<void> {
  let created = false;
  try {
    const fh = await open(path, 'wx', 0o600);
    created = true;
    await fh.sync();
    await fh.close();
  } catch (error) {
    if (errnoCode(error) !== 'EEXIST') throw error;
  }
  if (created) await syncDirectory(dirname(path));
}

/** Makes a new directory entry durable; best effort where the platform cannot fsync directories. */
async function syncDirectory(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Windows and some filesystems refuse; the file's own fsync still holds its content.
  } finally {
    await fh?.close();
  }
}

async function appendDurably(path: string, line: string): Promise<void> {
  const fh = await open(path, 'a', 0o600);
  try {
    const bytes = Buffer.from(line, 'utf8');
    let offset = 0;
    while (offset < bytes.length) {
      const { bytesWritten } = await fh.write(bytes, offset, bytes.length - offset);
      offset += bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The seq and hash to chain from: those of the last line, or genesis for an empty file. A last
 * line without its newline or that is not a record means a torn write or an edit; appending after
 * it would bury the damage, so this rejects and the operator must run `fraudgate audit verify`.
 */
async function readChainHead(path: string): Promise<{ seq: number; hash: string }> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size === 0) return { seq: 0, hash: GENESIS_HASH };
    let end = size;
    let collected = Buffer.alloc(0);
    let lineStart = -1;
    while (end > 0 && lineStart < 0) {
      const start = Math.max(0, end - TAIL_CHUNK);
      const chunk = Buffer.alloc(end - start);
      await fh.read(chunk, 0, chunk.length, start);
      collected = Buffer.concat([chunk, collected]);
      end = start;
      // Skip the final byte: it should be the newline ending the last record.
      // (A negative fromIndex would count from the end, hence the length guard.)
      const newline = collected.length >= 2 ? collected.lastIndexOf(0x0a, collected.length - 2) : -1;
      if (newline >= 0) lineStart = newline + 1;
      else if (end === 0) lineStart = 0;
    }
    if (collected[collected.length - 1] !== 0x0a) {
      throw damagedTail(path, 'the last line has no newline (a torn write?)');
    }
    const text = collected.subarray(lineStart, collected.length - 1).toString('utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw damagedTail(path, 'the last line is not valid JSON');
    }
    const record = parsed as Partial<AuditRecord> | null;
    if (
      typeof record !== 'object' ||
      record === null ||
      !Number.isSafeInteger(record.seq) ||
      typeof record.hash !== 'string' ||
      !HASH_SHAPE.test(record.hash)
    ) {
      throw damagedTail(path, 'the last line is not an audit record');
    }
    return { seq: record.seq as number, hash: record.hash };
  } finally {
    await fh.close();
  }
}

function damagedTail(path: string, why: string): FraudgateError {
  return auditError(
    'The audit log is damaged, so nothing more can be recorded; the operator must run `fraudgate audit verify`.',
    `${path}: ${why}`,
  );
}

interface LockOwner {
  pid: number;
  host: string;
}

async function acquireLock(
  lockPath: string,
  timeoutMs: number,
  staleMs: number,
): Promise<() => Promise<void>> {
  const started = Date.now();
  let delay = 2;
  for (;;) {
    // The lock appears with its owner already in it (written aside, then hard-linked into place):
    // a process killed between creating the lock and writing its pid would otherwise leave an
    // ownerless lock that only ages out after `staleMs`, stalling a restarted process that long.
    const draft = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(draft, `${process.pid}\n${hostname()}\n${new Date().toISOString()}\n`, { mode: 0o600 });
      await link(draft, lockPath);
      return async () => {
        await unlink(lockPath).catch(() => undefined);
      };
    } catch (error) {
      if (errnoCode(error) !== 'EEXIST') throw error;
    } finally {
      await unlink(draft).catch(() => undefined);
    }
    if (await isStale(lockPath, staleMs)) {
      await breakStaleLock(lockPath, staleMs);
      continue;
    }
    if (Date.now() - started > timeoutMs) {
      throw auditError(
        'The audit log is busy, so the call was not recorded; try again shortly.',
        `timed out after ${timeoutMs} ms waiting for ${lockPath}; if no fraudgate process is running, delete it`,
        undefined,
        true,
      );
    }
    // Jitter keeps two waiting processes from retrying in lockstep.
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 50);
  }
}

async function readLockOwner(lockPath: string): Promise<LockOwner | undefined> {
  const text = await readFile(lockPath, 'utf8');
  const [pidText, host] = text.split('\n');
  const pid = Number(pidText);
  return Number.isSafeInteger(pid) && pid > 0 && host ? { pid, host } : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to another user.
    return errnoCode(error) === 'EPERM';
  }
}

async function isStale(lockPath: string, staleMs: number): Promise<boolean> {
  try {
    const owner = await readLockOwner(lockPath);
    if (owner && owner.host === hostname()) return !isAlive(owner.pid);
    // Unreadable owner (creator died before writing it) or another host: only age can tell.
    const { mtimeMs } = await stat(lockPath);
    return Date.now() - mtimeMs > staleMs;
  } catch (error) {
    // Gone already: not stale, just retry.
    if (errnoCode(error) === 'ENOENT') return false;
    throw error;
  }
}

/**
 * Two waiters may both judge a lock stale; without care the second would delete the lock the
 * first has just re-taken. Breaking is therefore itself serialised by `<lock>.break`, and the
 * lock is re-checked under it.
 */
async function breakStaleLock(lockPath: string, staleMs: number): Promise<void> {
  const breakPath = `${lockPath}.break`;
  let fh: FileHandle;
  try {
    fh = await open(breakPath, 'wx', 0o600);
  } catch (error) {
    if (errnoCode(error) !== 'EEXIST') throw error;
    // A breaker that died leaves its marker; it only guards a few ms of work.
    const age = await stat(breakPath).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (age > staleMs) await unlink(breakPath).catch(() => undefined);
    await sleep(5);
    return;
  }
  try {
    await fh.close();
    if (await isStale(lockPath, staleMs)) await unlink(lockPath).catch(() => undefined);
  } finally {
    await unlink(breakPath).catch(() => undefined);
  }
}

/** Result of {@link verifyAuditFile}; `line` is 1-based and names the first bad line. */
export type AuditVerifyResult =
  | { ok: true; records: number; last_hash: string }
  | { ok: false; records: number; line: number; reason: string };

interface RawLine {
  number: number;
  text: string;
  terminated: boolean;
}

/** Lines split on bytes (so multi-byte characters across chunks survive), noting a missing final newline. */
async function* readLines(path: string): AsyncGenerator<RawLine> {
  const stream = createReadStream(path);
  let pending: Buffer[] = [];
  let number = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, from)) {
        pending.push(chunk.subarray(from, nl));
        number += 1;
        yield { number, text: Buffer.concat(pending).toString('utf8'), terminated: true };
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

/** Why a line is not a well-formed record, or undefined if its shape is right. */
function shapeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const r = value as Record<string, unknown>;
  if (r.v !== 1) return `unsupported version ${JSON.stringify(r.v)}`;
  if (!Number.isSafeInteger(r.seq)) return 'seq is not an integer';
  if (typeof r.hash !== 'string' || !HASH_SHAPE.test(r.hash)) return 'hash is missing or malformed';
  if (typeof r.prev_hash !== 'string' || !HASH_SHAPE.test(r.prev_hash))
    return 'prev_hash is missing or malformed';
  if (typeof r.event !== 'string' || !(AUDIT_EVENTS as readonly string[]).includes(r.event))
    return 'unknown event';
  return undefined;
}

/**
 * Re-walks the chain. Reports the first line that is torn, not a record, out of sequence
 * (deleted or reordered records), chained to the wrong predecessor, or whose content no longer
 * matches its hash (edited). Rejects only if the file cannot be read.
 */
export async function verifyAuditFile(path: string): Promise<AuditVerifyResult> {
  let prevHash = GENESIS_HASH;
  let records = 0;
  const fail = (line: number, reason: string): AuditVerifyResult => ({ ok: false, records, line, reason });
  for await (const { number, text, terminated } of readLines(path)) {
    if (!terminated) return fail(number, 'line has no newline (torn write or truncation)');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return fail(number, text.trim() === '' ? 'empty line' : 'not valid JSON (truncated or edited)');
    }
    const problem = shapeProblem(parsed);
    if (problem) return fail(number, problem);
    const record = parsed as AuditRecord;
    if (record.seq !== records + 1) {
      return fail(
        number,
        `seq ${record.seq} where ${records + 1} was expected (record deleted or reordered)`,
      );
    }
    if (record.prev_hash !== prevHash) {
      return fail(number, 'prev_hash does not match the previous record (record deleted or reordered)');
    }
    if (hashAuditRecord(record) !== record.hash) return fail(number, 'hash mismatch (record edited)');
    prevHash = record.hash;
    records += 1;
  }
  return { ok: true, records, last_hash: prevHash };
}

/** Selects records for `fraudgate audit tail/export`; every given field must match. */
export interface AuditRecordFilter {
  event?: AuditEvent | readonly AuditEvent[];
  call_id?: string;
  tool?: string;
  principal_id?: string;
  approval_id?: string;
  /** Inclusive lower bound on `ts`. */
  since?: Date | string;
  /** Exclusive upper bound on `ts`. */
  until?: Date | string;
}

function matches(record: AuditRecord, filter: AuditRecordFilter): boolean {
  if (filter.event !== undefined) {
    const events: readonly AuditEvent[] = typeof filter.event === 'string' ? [filter.event] : filter.event;
    if (!events.includes(record.event)) return false;
  }
  if (filter.call_id !== undefined && record.call_id !== filter.call_id) return false;
  if (filter.tool !== undefined && record.tool !== filter.tool) return false;
  if (filter.principal_id !== undefined && record.principal.id !== filter.principal_id) return false;
  if (filter.approval_id !== undefined && record.approval_id !== filter.approval_id) return false;
  const ts = Date.parse(record.ts);
  if (filter.since !== undefined && !(ts >= new Date(filter.since).getTime())) return false;
  if (filter.until !== undefined && !(ts < new Date(filter.until).getTime())) return false;
  return true;
}

/**
 * Streams records in file order, filtered. Does not check the chain (use `verifyAuditFile`), but
 * throws on a line that is not a record rather than silently skipping it: an export must not
 * hide damage. A torn final line is reported the same way.
 */
export async function* readAuditRecords(
  path: string,
  filter: AuditRecordFilter = {},
): AsyncGenerator<AuditRecord, void, undefined> {
  for await (const { number, text, terminated } of readLines(path)) {
    let parsed: unknown;
    try {
      parsed = terminated ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    const problem = parsed === undefined ? 'not a complete JSON line' : shapeProblem(parsed);
    if (problem) {
      throw auditError(
        `Audit file line ${number} is not a valid record (${problem}); run \`fraudgate audit verify\`.`,
        `${path}:${number}: ${problem}`,
      );
    }
    const record = parsed as AuditRecord;
    if (matches(record, filter)) yield record;
  }
}
