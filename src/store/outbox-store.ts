/**
 * The durable outbox behind Sift decision webhooks: received events (deduplicated by a unique key)
 * and the effects routed from them, each a small state machine driven by the outbox worker.
 *
 *   event:  received → routed (its effects inserted in the same transaction)
 *   effect: pending → leased → done | pending (retry) | awaiting_approval | dead | skipped
 *           awaiting_approval → done | denied | dead;  dead → pending (retry) | dropped
 *
 * An effect whose tool is not idempotent is marked attempted (`markAttempted`, committed) before
 * its call: a lease that finds the mark was taken over from a call that never finished, whose
 * outcome upstream is unknown (a dead letter with reason {@link OUTCOME_UNKNOWN}, never a resend).
 *
 * One implementation on both engines (SQLite for one host, PostgreSQL shared by every replica);
 * only `claim` and `supersede` differ per engine (src/store/sqlite/outbox-queue.ts,
 * src/store/postgres/outbox-queue.ts): how concurrent workers on one file, or on many machines,
 * stay apart. Every state change is a compare-and-set on (state, lease owner): a worker whose lease
 * expired cannot overwrite the work of the worker that took over. Lease owners are replica ids, so a
 * restarted replica takes its own leased effects back at once (`reclaim`) instead of waiting for the
 * leases to expire. Commits are durable before `enqueue` resolves (SQLite `synchronous = FULL`,
 * PostgreSQL `synchronous_commit` on): a 2xx to Sift promises the event survives.
 *
 * Personal fields at rest (issue 13): with a `cipher` (every store opened from configuration has
 * one, key FRAUDGATE_DATA_KEY), an effect's arguments (replayed exactly, so encrypted, not masked),
 * its result and its error detail are sealed like approval arguments (src/store/field-crypto.ts),
 * bound to the row: arguments to (event id, effect), the row's unique key, known before the insert;
 * result and error to the effect id. Rows written without a cipher still load.
 */
import { createHash } from 'node:crypto';
import { ERROR_CODES, FraudgateError } from '../errors.ts';
import type { AuditAppendInput, AuditLog } from '../governance/audit.ts';
import { OPEN_APPROVAL_STATES } from './approval-store.ts';
import { isSealed, unheldKeyId, type FieldCipher } from './field-crypto.ts';
import { placeholders, type SqlExecutor } from './sql.ts';

/** A Sift decision webhook as accepted (§7.1 of the Sift contract); unknown keys are not kept. */
export interface DecisionEvent {
  entityType: string;
  entityId: string;
  decisionId: string;
  /** Epoch ms of the decision (of the receipt, for a Segment message): effects are claimed oldest first. */
  time: number;
  /**
   * The time the deduplication key uses when it is not `time`: a Segment message is ordered by its
   * receipt, yet its redelivery, received later, is the same message.
   */
  dedupeTime?: number;
}

/** A stored event. */
export interface StoredEvent extends DecisionEvent {
  id: number;
  receivedAt: number;
  routed: boolean;
}

export type EffectState =
  'pending' | 'leased' | 'awaiting_approval' | 'done' | 'skipped' | 'denied' | 'dead' | 'dropped';

/** One automated action for one event: a governed tool call with frozen arguments. */
export interface OutboxEffect {
  id: number;
  eventId: number;
  /** Routing name (segment, salesforce, case, suppress). */
  effect: string;
  tool: string;
  args: Record<string, unknown>;
  /** `type:id` of the Sift entity; ordering and superseding are per entity key and effect. */
  entityKey: string;
  decisionTime: number;
  state: EffectState;
  /** Failed attempts so far (a deferral for a budget does not count). */
  attempts: number;
  nextAttemptAt: number;
  leaseOwner?: string;
  leaseUntil?: number;
  approvalId?: string;
  lastError?: string;
  /** What the call returned: set once the effect is `done` (its tool's output, or `not_found`). */
  result?: unknown;
  /**
   * What a continuing effect has done so far, between its shares (the worker's `continuation`
   * counts); never set on a `done` effect. Stored in the result column, which holds nothing else
   * until the effect completes, so that no reader takes it for the effect's result.
   */
  progress?: unknown;
  /**
   * When the call of a non-idempotent effect began (`markAttempted`); cleared when it goes back to
   * pending, where it is known not to have reached the upstream. Set on a leased effect: an earlier
   * attempt may have reached the upstream and never finished.
   */
  attemptedAt?: number;
  /**
   * Set when a stored sealed field did not open (sealed under another FRAUDGATE_DATA_KEY, or
   * edited): which one. Its `args` are then empty: such an effect must never run (the worker
   * dead-letters it, {@link SEALED_DATA_UNREADABLE}).
   */
  unreadable?: string;
  /**
   * Set when every `unreadable` field was sealed under a data key this replica does not hold (a
   * rotation under way): that key's id. Not a dead letter: a replica with the key runs it.
   */
  lackingKeyId?: string;
  createdAt: number;
  updatedAt: number;
}

/** An effect parked for an approval, as the worker settles it. */
export interface ParkedEffect {
  id: number;
  tool: string;
  approvalId: string;
  createdAt: number;
}

/**
 * The reason code of a dead letter whose call may or may not have reached the upstream (a lost
 * answer, a timeout, a 5xx, an attempt that never finished) for a tool that is not idempotent:
 * the operator checks the upstream, then replays it (`fraudgate outbox retry`) or drops it.
 */
export const OUTCOME_UNKNOWN = 'OUTCOME_UNKNOWN';

/** Whether the effect is a dead letter whose outcome upstream is unknown (see {@link OUTCOME_UNKNOWN}). */
export function isOutcomeUnknown(effect: Pick<OutboxEffect, 'state' | 'lastError'>): boolean {
  return effect.state === 'dead' && effect.lastError?.startsWith(`${OUTCOME_UNKNOWN}:`) === true;
}

/**
 * The reason code of a dead letter whose continuation stopped (src/outbox/outbox-worker.ts,
 * Continuations): its shares stopped shrinking the work left, or reached their cap — typically an
 * org flow or trigger rewriting what each share writes. `fraudgate outbox retry` starts it afresh.
 */
export const CONTINUATION_STALLED = 'CONTINUATION_STALLED';

/**
 * The reason code of a dead letter whose stored arguments (or progress) do not open under the
 * configured FRAUDGATE_DATA_KEY: edited, moved from another row, or plain text. It is never run.
 * (A value sealed under a key the replica does not hold is not one: it waits for a replica that
 * holds the key, `lackingKeyId`.)
 */
export const SEALED_DATA_UNREADABLE = 'SEALED_DATA_UNREADABLE';

/** Whether the effect is a dead letter whose continuation stopped (see {@link CONTINUATION_STALLED}). */
export function isContinuationStalled(effect: Pick<OutboxEffect, 'state' | 'lastError'>): boolean {
  return effect.state === 'dead' && effect.lastError?.startsWith(`${CONTINUATION_STALLED}:`) === true;
}

export interface NewEffect {
  effect: string;
  tool: string;
  args: Record<string, unknown>;
}

/** Where an event went: its row, and whether it was there already (a repeated delivery). */
export interface EnqueuedEvent {
  id: number;
  duplicate: boolean;
}

/**
 * The audit record of an event's receipt, less what only the store knows: whether the event was
 * new (`webhook_accepted`) or a repeated delivery (`webhook_duplicate`), and which stored event it
 * is (the outcome names it). Plain data, so it can travel to a writer thread.
 */
export type IntakeReceipt = Omit<AuditAppendInput, 'event' | 'outcome'>;

/** The complete record of a receipt, once the store knows where the event went. */
function receiptRecord(receipt: IntakeReceipt, stored: EnqueuedEvent): AuditAppendInput {
  return {
    ...receipt,
    event: stored.duplicate ? 'webhook_duplicate' : 'webhook_accepted',
    outcome: { code: 'OK', message: `outbox event ${stored.id}` },
  };
}

/**
 * An event's receipt record and the ledger it goes to: appended in the transaction that stores the
 * event, so both commit or neither does.
 */
export interface IntakeRecord {
  audit: AuditLog;
  receipt: IntakeReceipt;
}

/**
 * Audit records of a delivery besides its events' receipts (what it acknowledged without storing),
 * appended in the transaction that stores its events. Plain data, like {@link IntakeReceipt}.
 */
export interface DeliveryRecords {
  audit: AuditLog;
  records: AuditAppendInput[];
}

/** An event already routed to its effects, with its receipt's audit record. */
export interface RoutedIntake {
  event: DecisionEvent;
  effects: NewEffect[];
  intake?: IntakeRecord;
}

export interface OutboxStore {
  /**
   * Durably store an event; `duplicate` when the same (type, id, decision, time) was stored before.
   * With `intake`, its audit record commits in the same transaction; if the record cannot be
   * written, nothing is stored and the call rejects.
   */
  enqueue(event: DecisionEvent, now?: number, intake?: IntakeRecord): Promise<EnqueuedEvent>;
  /**
   * Store an event already routed to `effects`, in one transaction (events whose effects are known
   * on receipt, e.g. a Segment message); a duplicate stores nothing. `intake` as for `enqueue`.
   */
  enqueueRouted(
    event: DecisionEvent,
    effects: NewEffect[],
    now?: number,
    intake?: IntakeRecord,
  ): Promise<EnqueuedEvent>;
  /**
   * `enqueueRouted` for many events in one transaction (a Segment delivery's messages): all are
   * stored, with their intake records and the delivery's `also` records, or none; per event,
   * `duplicate` as for `enqueueRouted`.
   */
  enqueueRoutedMany(
    events: readonly RoutedIntake[],
    now?: number,
    also?: DeliveryRecords,
  ): Promise<EnqueuedEvent[]>;
  /** Events not yet routed, oldest first. */
  unrouted(limit: number): Promise<StoredEvent[]>;
  /**
   * Insert the event's effects and mark it routed, atomically; repeating it is harmless. `abuseType`
   * is the routing decision's (from the catalogue): a later decision on it supersedes all of this
   * event's effects (SUPERSEDED_EFFECT).
   */
  route(eventId: number, effects: NewEffect[], now?: number, abuseType?: string): Promise<void>;
  /**
   * Mark as skipped each pending effect whose entity has a later event that routed the same effect
   * (a later decision is never overwritten by an earlier one), or a later decision on the same abuse type
   * (see SUPERSEDED_EFFECT); returns them
   * so each can be audited.
   */
  supersede(now?: number): Promise<OutboxEffect[]>;
  /**
   * Lease due effects, oldest decision first, at most one in flight per (entity, effect) so the
   * writes for one user happen in decision-time order. Expired leases count as due (crash recovery).
   * `skip`: ids this claimer leaves alone for now (sealed under a data key it lacks).
   */
  claim(
    owner: string,
    limit: number,
    leaseMs: number,
    now?: number,
    skip?: readonly number[],
  ): Promise<OutboxEffect[]>;
  /**
   * Extend the leases this owner still holds (a heartbeat while effects run, so a slow effect is not
   * claimed again by anyone); returns the ids it still owns.
   */
  renew(ids: number[], owner: string, leaseUntil: number, now?: number): Promise<number[]>;
  /**
   * Record, durably, that the leased effect's call begins (before a call that must not run twice);
   * false when the lease is no longer this owner's, and then nothing may run.
   */
  markAttempted(id: number, owner: string, now?: number): Promise<boolean>;
  complete(id: number, owner: string, result: unknown, now?: number): Promise<boolean>;
  /**
   * Back to pending at `nextAttemptAt`, the attempt mark cleared (the caller knows the call did not
   * reach the upstream); `countAttempt` false for deferrals (budgets, own rate limit).
   */
  retry(
    id: number,
    owner: string,
    nextAttemptAt: number,
    error: string | undefined,
    countAttempt: boolean,
    now?: number,
  ): Promise<boolean>;
  /**
   * Back to pending at `nextAttemptAt` unrun (a deferral before it ran here: a pause, the Salesforce
   * allowance, a data key this replica lacks): its attempt mark and count kept, since an earlier
   * owner's call may have reached the upstream.
   */
  release(id: number, owner: string, nextAttemptAt: number, now?: number): Promise<boolean>;
  deadLetter(id: number, owner: string, error: string, now?: number): Promise<boolean>;
  awaitApproval(id: number, owner: string, approvalId: string, now?: number): Promise<boolean>;
  /** Settle an effect waiting for a human: done, denied or dead. */
  settleApproval(
    id: number,
    to: 'done' | 'denied' | 'dead' | 'skipped',
    detail: unknown,
    now?: number,
  ): Promise<boolean>;
  /**
   * A leased effect whose call did a share of its work and left the rest for another call: back to
   * pending, due at `now`, not an attempt; `progress` is kept in its result column (the effect has
   * no result until it completes) and read back as the effect's `progress`, so the next share can
   * tell whether the work shrank.
   */
  continueLater(id: number, owner: string, progress: unknown, now?: number): Promise<boolean>;
  /**
   * An effect whose approved call left work for another call (its tool's `remaining`): back to
   * pending, due at `now`, its approval let go (the next call asks for its own); not an attempt.
   * `progress` as for `continueLater` (kept as it was when undefined).
   */
  continueAfterApproval(id: number, progress?: unknown, now?: number): Promise<boolean>;
  /**
   * Operator: a dead (or denied) effect back to pending with a fresh attempt count, no attempt
   * mark (for an outcome-unknown effect, a deliberate replay) and no continuation progress.
   */
  requeue(id: number, now?: number): Promise<boolean>;
  /** Operator: give up on a dead effect for good. */
  drop(id: number, now?: number): Promise<boolean>;
  get(id: number): Promise<OutboxEffect | undefined>;
  getEvent(id: number): Promise<StoredEvent | undefined>;
  list(filter?: { states?: EffectState[]; limit?: number }): Promise<OutboxEffect[]>;
  /**
   * Effects parked for an approval that is no longer open (decided, expired, superseded, run or
   * failed), oldest first from just past `after`: one query joining each effect to its approval,
   * so effects still waiting for a human cost nothing to look past.
   */
  parkedOnClosedApprovals(limit: number, after?: ParkedEffect): Promise<ParkedEffect[]>;
  /** Effect counts per state, plus events not yet routed. */
  stats(): Promise<Record<EffectState | 'unrouted', number>>;
  /**
   * A (re)started worker's own leases are left over from before it stopped: make them due now, so
   * a restarted replica resumes its work at once. Returns how many it reclaimed.
   */
  reclaim(owner: string, now?: number): Promise<number>;
  /** When the earliest pending effect is next due (epoch ms), or undefined when none is pending. */
  nextPendingAt(): Promise<number | undefined>;
}

/** An event waiting in a group commit. */
export interface GroupedEvent {
  event: DecisionEvent;
  now: number;
  intake: IntakeRecord | undefined;
}

/** Appends the receipt records of a group's `stored` events in `tx` (the store's own way). */
export type AppendReceipts = (tx: SqlExecutor, stored: readonly EnqueuedEvent[]) => Promise<void>;

/** How concurrent workers stay apart, and how a group commits: the engine-specific half of the outbox. */
/**
 * SQL (aliases `later` and `e`, two events of one entity): `later` supersedes `e`. The later decision
 * time wins; of equal times the later arrival, then the higher id (PostgreSQL ids come from
 * per-process blocks, so they alone do not say which arrived later).
 */
export const LATER_EVENT_WINS =
  '(later.decision_time > e.decision_time OR (later.decision_time = e.decision_time AND ' +
  '(later.received_at > e.received_at OR (later.received_at = e.received_at AND later.id > e.id))))';

/**
 * SQL condition (alias `f`, a pending effect of event `e`): a later routed event of the same entity
 * makes `f` stale when it routed the same effect, or when it is a decision on the same abuse type.
 * Per effect: the decision syncs (`segment`, `salesforce`) write the user's current state, the most
 * severe across abuse types, whichever decision routed them, so a later sync covers an earlier one;
 * but a `case` or `suppress` is routed only by a BLOCK, and a later decision on another abuse type
 * (an ACCEPT of payment_abuse after a BLOCK of account_abuse) routes neither — it must not cancel the
 * BLOCK's case and suppression, which only a later event routing a case (or a suppression) of its own
 * replaces. Per abuse type: a later decision on the SAME abuse type (an ACCEPT of account_abuse after
 * its BLOCK) reverses the BLOCK, so all of the BLOCK's pending effects go, routed again or not. An
 * event without an abuse type (a score read, a Segment message, one routed by a previous release)
 * matches none. Rows `lf`/`later` are found by the `outbox_effects_entity` index (entity_key, effect)
 * and the events' primary key.
 */
export const SUPERSEDED_EFFECT =
  '(EXISTS (SELECT 1 FROM outbox_effects lf JOIN outbox_events later ON later.id = lf.event_id ' +
  'WHERE lf.entity_key = f.entity_key AND lf.effect = f.effect AND ' +
  'later.entity_type = e.entity_type AND later.entity_id = e.entity_id AND later.routed = 1 AND ' +
  `${LATER_EVENT_WINS}) OR ` +
  '(e.abuse_type IS NOT NULL AND EXISTS (SELECT 1 FROM outbox_events later ' +
  'WHERE later.entity_type = e.entity_type AND later.entity_id = e.entity_id AND later.routed = 1 AND ' +
  `later.abuse_type = e.abuse_type AND ${LATER_EVENT_WINS})))`;

export interface OutboxQueue {
  /**
   * Optional: a group commit in fewer round trips than the shared transaction (PostgreSQL). Resolves
   * what was stored, or undefined when it stored nothing and the group must take the transaction way.
   */
  commitGroup?(
    db: SqlExecutor,
    group: readonly GroupedEvent[],
    appendReceipts: AppendReceipts,
  ): Promise<EnqueuedEvent[] | undefined>;
  supersede(db: SqlExecutor, now: number, toEffect: EffectFromRow): Promise<OutboxEffect[]>;
  claim(
    db: SqlExecutor,
    owner: string,
    limit: number,
    leaseMs: number,
    now: number,
    toEffect: EffectFromRow,
    skip: readonly number[],
  ): Promise<OutboxEffect[]>;
}

/** Turns a stored row into an effect, opening its sealed fields (the store's `effectFromRow`). */
export type EffectFromRow = (row: EffectRow) => OutboxEffect;

/** The deduplication key of a delivery: Sift may deliver the same decision more than once (§7.3). */
export function eventKey(event: DecisionEvent): string {
  return createHash('sha256')
    .update(
      [event.entityType, event.entityId, event.decisionId, String(event.dedupeTime ?? event.time)].join(
        '\u0000',
      ),
    )
    .digest('hex');
}

/** A stored effect row as the SQL stores have it (numbers already numbers). */
export interface EffectRow {
  id: number;
  event_id: number;
  effect: string;
  tool: string;
  args: string;
  entity_key: string;
  decision_time: number;
  state: string;
  attempts: number;
  next_attempt_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  approval_id: string | null;
  last_error: string | null;
  result: string | null;
  attempted_at: number | null;
  created_at: number;
  updated_at: number;
}

/** A stored event row. */
export interface EventRow {
  id: number;
  entity_type: string;
  entity_id: string;
  decision_id: string;
  decision_time: number;
  received_at: number;
  routed: number;
}

/** Where each sealed field is bound (additional authenticated data): table, column and row. */
export const outboxFieldContext = {
  args: (eventId: number, effect: string) => `outbox_effects.args:${eventId}:${effect}`,
  result: (id: number) => `outbox_effects.result:${id}`,
  lastError: (id: number) => `outbox_effects.last_error:${id}`,
};

/** JSON for a column: sealed with a cipher, plain without one. */
function sealJson(cipher: FieldCipher | undefined, value: unknown, context: string): string {
  return cipher ? cipher.seal(value ?? null, context) : JSON.stringify(value ?? null);
}

/** A stored JSON column: opened when sealed, parsed when plain (no data key, or not an args column). */
function openJson(cipher: FieldCipher | undefined, text: string, context: string): unknown {
  if (!isSealed(text)) return JSON.parse(text) as unknown;
  if (!cipher) {
    throw new FraudgateError(
      ERROR_CODES.INTERNAL,
      'Stored outbox data is encrypted; open the store with FRAUDGATE_DATA_KEY set to the key that wrote it.',
      { detail: context },
    );
  }
  return cipher.open(text, context);
}

/** The error column is free text: sealed as a JSON string with a cipher, plain otherwise. */
function sealError(cipher: FieldCipher | undefined, error: string, id: number): string {
  return cipher ? cipher.seal(error, outboxFieldContext.lastError(id)) : error;
}

/**
 * A stored row as an effect. A sealed field that does not open (another data key, or edited) does
 * not throw: one such row must not stop every claim or list. The effect is returned with its
 * metadata, empty `args` and `unreadable` naming the field, and the worker dead-letters it unrun.
 */
export function effectFromRow(row: EffectRow, cipher?: FieldCipher): OutboxEffect {
  const id = Number(row.id);
  const unreadable: string[] = [];
  const lacking = new Set<string>();
  let damaged = false;
  const open = (field: string | undefined, text: string, context: string): unknown => {
    // With the data key, plain args were written into the database, not by us (rows from before
    // sealing were sealed at start-up, legacy-sealing.ts): refused like args that do not open.
    if (field === 'args' && cipher && !isSealed(text)) {
      unreadable.push('args (plain text, not sealed)');
      damaged = true;
      return undefined;
    }
    try {
      return openJson(cipher, text, context);
    } catch {
      if (field) {
        unreadable.push(field);
        const keyId = cipher ? unheldKeyId(cipher, text) : undefined;
        if (keyId !== undefined) lacking.add(keyId);
        else damaged = true;
      }
      return undefined;
    }
  };
  const args = open('args', row.args, outboxFieldContext.args(Number(row.event_id), row.effect));
  const effect: OutboxEffect = {
    id,
    eventId: Number(row.event_id),
    effect: row.effect,
    tool: row.tool,
    args: (args ?? {}) as Record<string, unknown>,
    entityKey: row.entity_key,
    decisionTime: Number(row.decision_time),
    state: row.state as EffectState,
    attempts: Number(row.attempts),
    nextAttemptAt: Number(row.next_attempt_at),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
  if (row.lease_owner !== null) effect.leaseOwner = row.lease_owner;
  if (row.lease_until !== null) effect.leaseUntil = Number(row.lease_until);
  if (row.approval_id !== null) effect.approvalId = row.approval_id;
  if (row.attempted_at !== null) effect.attemptedAt = Number(row.attempted_at);
  if (row.last_error !== null) {
    effect.lastError = isSealed(row.last_error)
      ? // An unreadable error message stops nothing: the effect may still run.
        String(open(undefined, row.last_error, outboxFieldContext.lastError(id)) ?? '(unreadable)')
      : row.last_error;
  }
  if (row.result !== null) {
    const stored = open('result', row.result, outboxFieldContext.result(id));
    // Only a completed effect's column holds its result; before that, a continuation's progress.
    if (effect.state === 'done') effect.result = stored;
    else effect.progress = stored;
  }
  if (unreadable.length > 0) effect.unreadable = unreadable.join(', ');
  if (unreadable.length > 0 && !damaged && lacking.size > 0) effect.lackingKeyId = [...lacking].join(', ');
  return effect;
}

export function eventFromRow(row: EventRow): StoredEvent {
  return {
    id: Number(row.id),
    entityType: row.entity_type,
    entityId: row.entity_id,
    decisionId: row.decision_id,
    time: Number(row.decision_time),
    receivedAt: Number(row.received_at),
    routed: Number(row.routed) === 1,
  };
}

/** Counts per effect state, all zero: the start of every store's `stats()`. */
export function emptyOutboxStats(): Record<EffectState | 'unrouted', number> {
  return {
    pending: 0,
    leased: 0,
    awaiting_approval: 0,
    done: 0,
    skipped: 0,
    denied: 0,
    dead: 0,
    dropped: 0,
    unrouted: 0,
  };
}

/** Events per INSERT statement: well under both engines' bound-parameter limits (6 per event). */
const EVENTS_PER_INSERT = 500;
/** Most events one group commit carries; the rest go in the next. */
const MAX_GROUP = 2000;

/**
 * The outbox on one executor; `queue` is the engine's claim/supersede. With `groupCommit` (the
 * database-level store, not one bound to a transaction) events enqueued in the same event-loop turn
 * (webhooks arriving together) share one transaction, so a durable commit costs one sync per group,
 * not one per webhook; each caller still resolves only after its event is committed, and all of a
 * group fail together. One group commits at a time (the next forms meanwhile): their receipt
 * records serialise on the ledger writer's head anyway, and a brand-new writer's first records
 * must not be chained twice from no head. An engine's `commitGroup` (PostgreSQL: one statement)
 * commits a group when it can; the shared transaction commits the rest.
 */
export function createOutboxStore(
  db: SqlExecutor,
  queue: OutboxQueue,
  options: { groupCommit?: boolean; cipher?: FieldCipher } = {},
): OutboxStore {
  const { cipher } = options;
  const toEffect: EffectFromRow = (row) => effectFromRow(row, cipher);
  const sealArgs = (eventId: number, e: NewEffect) =>
    sealJson(cipher, e.args, outboxFieldContext.args(eventId, e.effect));
  const changed = async (sql: string, params: (string | number | null)[]) =>
    (await db.execute(sql, params)) > 0;

  /** An event with its effects, unless its key is stored already (then a duplicate, nothing stored). */
  const insertRouted = async (
    tx: SqlExecutor,
    event: DecisionEvent,
    effects: readonly NewEffect[],
    now: number,
  ): Promise<EnqueuedEvent> => {
    const key = eventKey(event);
    const [inserted] = await tx.query<{ id: number }>(
      `INSERT INTO outbox_events (dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at, routed)
       VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
      [key, event.entityType, event.entityId, event.decisionId, event.time, now],
    );
    if (!inserted) {
      const [existing] = await tx.query<{ id: number }>(
        'SELECT id FROM outbox_events WHERE dedupe_key = $1',
        [key],
      );
      return { id: Number(existing?.id ?? 0), duplicate: true };
    }
    const id = Number(inserted.id);
    for (const e of effects) {
      await tx.execute(
        `INSERT INTO outbox_effects (event_id, effect, tool, args, entity_key, decision_time, state,
           next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7) ON CONFLICT (event_id, effect) DO NOTHING`,
        [id, e.effect, e.tool, sealArgs(id, e), `${event.entityType}:${event.entityId}`, event.time, now],
      );
    }
    return { id, duplicate: false };
  };

  /**
   * Inserts `events` (a multi-row statement per chunk) and finds the rows of those already stored;
   * a key repeated within `events` is stored once, its later deliveries are duplicates of it.
   */
  const insertEvents = async (
    tx: SqlExecutor,
    events: readonly { event: DecisionEvent; now: number }[],
  ): Promise<EnqueuedEvent[]> => {
    const keys = events.map((e) => eventKey(e.event));
    const inserted = new Map<string, number>();
    for (let from = 0; from < events.length; from += EVENTS_PER_INSERT) {
      const chunk = events.slice(from, from + EVENTS_PER_INSERT);
      const rows = await tx.query<{ id: number; dedupe_key: string }>(
        `INSERT INTO outbox_events (dedupe_key, entity_type, entity_id, decision_id, decision_time, received_at)
         VALUES ${chunk.map((_, i) => `(${placeholders(6, 6 * i + 1)})`).join(', ')}
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key`,
        chunk.flatMap(({ event, now }, i) => [
          keys[from + i]!,
          event.entityType,
          event.entityId,
          event.decisionId,
          event.time,
          now,
        ]),
      );
      for (const row of rows) inserted.set(row.dedupe_key, Number(row.id));
    }
    const missing = [...new Set(keys.filter((k) => !inserted.has(k)))];
    const existing = new Map<string, number>();
    for (let from = 0; from < missing.length; from += EVENTS_PER_INSERT) {
      const chunk = missing.slice(from, from + EVENTS_PER_INSERT);
      const rows = await tx.query<{ id: number; dedupe_key: string }>(
        `SELECT id, dedupe_key FROM outbox_events WHERE dedupe_key IN (${placeholders(chunk.length)})`,
        chunk,
      );
      for (const row of rows) existing.set(row.dedupe_key, Number(row.id));
    }
    return keys.map((key) => {
      const id = inserted.get(key);
      if (id !== undefined) {
        // The first delivery of a key in this group is the one stored.
        inserted.delete(key);
        existing.set(key, id);
        return { id, duplicate: false };
      }
      return { id: existing.get(key) ?? 0, duplicate: true };
    });
  };

  /**
   * Appends the intake records of `stored` events in `tx`, then `also`'s, one ledger call per
   * audit log.
   */
  const appendIntakeRecords = async (
    tx: SqlExecutor,
    intakes: readonly (IntakeRecord | undefined)[],
    stored: readonly EnqueuedEvent[],
    also?: DeliveryRecords,
  ) => {
    const perLog = new Map<AuditLog, AuditAppendInput[]>();
    const add = (audit: AuditLog, input: AuditAppendInput) => {
      const inputs = perLog.get(audit) ?? [];
      inputs.push(input);
      perLog.set(audit, inputs);
    };
    intakes.forEach((intake, i) => {
      if (intake) add(intake.audit, receiptRecord(intake.receipt, stored[i]!));
    });
    for (const input of also?.records ?? []) add(also!.audit, input);
    for (const [audit, inputs] of perLog) await audit.appendManyIn(tx, inputs);
  };

  type Waiting = GroupedEvent & {
    resolve: (stored: EnqueuedEvent) => void;
    reject: (error: unknown) => void;
  };
  const group: Waiting[] = [];
  /** A group is committing: the next one forms meanwhile and starts when it ends. */
  let committing = false;
  const commitGroup = () => {
    if (committing || group.length === 0) return;
    committing = true;
    const batch = group.splice(0, MAX_GROUP);
    const intakes = batch.map((e) => e.intake);
    const appendReceipts: AppendReceipts = (tx, stored) => appendIntakeRecords(tx, intakes, stored);
    (async () =>
      (await queue.commitGroup?.(db, batch, appendReceipts)) ??
      db.transaction(async (tx) => {
        const stored = await insertEvents(tx, batch);
        await appendReceipts(tx, stored);
        return stored;
      }))()
      .then(
        (stored) => batch.forEach((e, i) => e.resolve(stored[i]!)),
        (error: unknown) => batch.forEach((e) => e.reject(error)),
      )
      .finally(() => {
        committing = false;
        if (group.length > 0) setImmediate(commitGroup);
      });
  };

  return {
    enqueue(event, now = Date.now(), intake) {
      if (!options.groupCommit) {
        return (async () => {
          const stored = await insertEvents(db, [{ event, now }]);
          await appendIntakeRecords(db, [intake], stored);
          return stored[0]!;
        })();
      }
      return new Promise((resolve, reject) => {
        if (group.length === 0 && !committing) setImmediate(commitGroup);
        group.push({ event, now, intake, resolve, reject });
      });
    },

    async enqueueRouted(event, effects, now = Date.now(), intake) {
      return db.transaction(async (tx) => {
        const stored = await insertRouted(tx, event, effects, now);
        await appendIntakeRecords(tx, [intake], [stored]);
        return stored;
      });
    },

    async enqueueRoutedMany(events, now = Date.now(), also) {
      return db.transaction(async (tx) => {
        const stored: EnqueuedEvent[] = [];
        for (const { event, effects } of events) stored.push(await insertRouted(tx, event, effects, now));
        await appendIntakeRecords(
          tx,
          events.map((e) => e.intake),
          stored,
          also,
        );
        return stored;
      });
    },

    async unrouted(limit) {
      return (
        await db.query<EventRow>('SELECT * FROM outbox_events WHERE routed = 0 ORDER BY id LIMIT $1', [limit])
      ).map(eventFromRow);
    },

    async route(eventId, effects, now = Date.now(), abuseType) {
      await db.transaction(async (tx) => {
        // FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock.
        const lock = tx.engine === 'postgres' ? ' FOR UPDATE' : '';
        const [row] = await tx.query<EventRow>(`SELECT * FROM outbox_events WHERE id = $1${lock}`, [eventId]);
        if (!row || Number(row.routed) === 1) return;
        const entityKey = `${row.entity_type}:${row.entity_id}`;
        for (const e of effects) {
          await tx.execute(
            `INSERT INTO outbox_effects (event_id, effect, tool, args, entity_key, decision_time, state,
               next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7) ON CONFLICT (event_id, effect) DO NOTHING`,
            [eventId, e.effect, e.tool, sealArgs(eventId, e), entityKey, Number(row.decision_time), now],
          );
        }
        await tx.execute('UPDATE outbox_events SET routed = 1, abuse_type = $2 WHERE id = $1', [
          eventId,
          abuseType ?? null,
        ]);
      });
    },

    supersede: (now = Date.now()) => queue.supersede(db, now, toEffect),

    claim: (owner, limit, leaseMs, now = Date.now(), skip = []) =>
      queue.claim(db, owner, limit, leaseMs, now, toEffect, skip),

    async renew(ids, owner, leaseUntil, now = Date.now()) {
      if (ids.length === 0) return [];
      const rows = await db.query<{ id: number }>(
        `UPDATE outbox_effects SET lease_until = $1, updated_at = $2
         WHERE id IN (${placeholders(ids.length, 4)}) AND state = 'leased' AND lease_owner = $3 RETURNING id`,
        [leaseUntil, now, owner, ...ids],
      );
      return rows.map((r) => Number(r.id));
    },

    markAttempted: (id, owner, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET attempted_at = $1, updated_at = $1
         WHERE id = $2 AND state = 'leased' AND lease_owner = $3`,
        [now, id, owner],
      ),

    complete: (id, owner, result, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'done', result = $1, last_error = NULL, lease_until = NULL, updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [sealJson(cipher, result, outboxFieldContext.result(id)), now, id, owner],
      ),

    retry: (id, owner, nextAttemptAt, error, countAttempt, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = attempts + $1, next_attempt_at = $2,
           last_error = COALESCE($3, last_error), lease_until = NULL, attempted_at = NULL, updated_at = $4
         WHERE id = $5 AND state = 'leased' AND lease_owner = $6`,
        [
          countAttempt ? 1 : 0,
          nextAttemptAt,
          error === undefined ? null : sealError(cipher, error, id),
          now,
          id,
          owner,
        ],
      ),

    release: (id, owner, nextAttemptAt, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', next_attempt_at = $1, lease_until = NULL, updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [nextAttemptAt, now, id, owner],
      ),

    deadLetter: (id, owner, error, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'dead', attempts = attempts + 1, last_error = $1, lease_until = NULL,
           updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [sealError(cipher, error, id), now, id, owner],
      ),

    awaitApproval: (id, owner, approvalId, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'awaiting_approval', approval_id = $1, lease_until = NULL,
           attempted_at = NULL, updated_at = $2
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [approvalId, now, id, owner],
      ),

    settleApproval: (id, to, detail, now = Date.now()) => {
      // The detail is the result when done, else the error: sealed for the column it lands in.
      const json =
        to === 'done'
          ? sealJson(cipher, detail, outboxFieldContext.result(id))
          : cipher
            ? cipher.seal(JSON.stringify(detail ?? null), outboxFieldContext.lastError(id))
            : JSON.stringify(detail ?? null);
      return changed(
        `UPDATE outbox_effects SET state = CAST($1 AS TEXT),
           result = CASE WHEN CAST($1 AS TEXT) = 'done' THEN CAST($2 AS TEXT) ELSE result END,
           last_error = CASE WHEN CAST($1 AS TEXT) = 'done' THEN NULL ELSE CAST($2 AS TEXT) END, updated_at = $3
         WHERE id = $4 AND state = 'awaiting_approval'`,
        [to, json, now, id],
      );
    },

    continueLater: (id, owner, progress, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', next_attempt_at = $1, result = $2, lease_until = NULL,
           attempted_at = NULL, updated_at = $1
         WHERE id = $3 AND state = 'leased' AND lease_owner = $4`,
        [now, sealJson(cipher, progress, outboxFieldContext.result(id)), id, owner],
      ),

    continueAfterApproval: (id, progress, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', next_attempt_at = $1, approval_id = NULL,
           result = COALESCE(CAST($2 AS TEXT), result), updated_at = $1
         WHERE id = $3 AND state = 'awaiting_approval'`,
        [now, progress === undefined ? null : sealJson(cipher, progress, outboxFieldContext.result(id)), id],
      ),

    requeue: (id, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
           lease_until = NULL, approval_id = NULL, attempted_at = NULL, result = NULL, updated_at = $1
         WHERE id = $2 AND state IN ('dead', 'denied')`,
        [now, id],
      ),

    drop: (id, now = Date.now()) =>
      changed(
        `UPDATE outbox_effects SET state = 'dropped', updated_at = $1 WHERE id = $2 AND state IN ('dead', 'denied')`,
        [now, id],
      ),

    async get(id) {
      const [row] = await db.query<EffectRow>('SELECT * FROM outbox_effects WHERE id = $1', [id]);
      return row ? toEffect(row) : undefined;
    },

    async getEvent(id) {
      const [row] = await db.query<EventRow>('SELECT * FROM outbox_events WHERE id = $1', [id]);
      return row ? eventFromRow(row) : undefined;
    },

    async list(filter = {}) {
      const states = filter.states ?? [];
      const where = states.length > 0 ? `WHERE state IN (${placeholders(states.length)})` : '';
      return (
        await db.query<EffectRow>(
          `SELECT * FROM outbox_effects ${where} ORDER BY id DESC LIMIT $${states.length + 1}`,
          [...states, filter.limit ?? 100],
        )
      ).map(toEffect);
    },

    async parkedOnClosedApprovals(limit, after) {
      const values: (string | number)[] = [];
      let past = '';
      if (after) {
        values.push(after.createdAt, after.id);
        past = 'AND (e.created_at, e.id) > ($1, $2)';
      }
      values.push(limit);
      const rows = await db.query<{ id: number; tool: string; approval_id: string; created_at: number }>(
        `SELECT e.id, e.tool, e.approval_id, e.created_at FROM outbox_effects e
           JOIN approvals a ON a.id = e.approval_id
         WHERE e.state = 'awaiting_approval' AND a.state NOT IN (${OPEN_APPROVAL_STATES.map((st) => `'${st}'`).join(', ')})
           ${past}
         ORDER BY e.created_at, e.id LIMIT $${values.length}`,
        values,
      );
      return rows.map((row) => ({
        id: Number(row.id),
        tool: row.tool,
        approvalId: row.approval_id,
        createdAt: Number(row.created_at),
      }));
    },

    async stats() {
      const out = emptyOutboxStats();
      for (const row of await db.query<{ state: EffectState; n: number }>(
        'SELECT state, COUNT(*) AS n FROM outbox_effects GROUP BY state',
      )) {
        out[row.state] = Number(row.n);
      }
      const [unrouted] = await db.query<{ n: number }>(
        'SELECT COUNT(*) AS n FROM outbox_events WHERE routed = 0',
      );
      out.unrouted = Number(unrouted?.n ?? 0);
      return out;
    },

    async reclaim(owner, now = Date.now()) {
      return db.execute(
        `UPDATE outbox_effects SET lease_until = $1, updated_at = $1 WHERE state = 'leased' AND lease_owner = $2`,
        [now, owner],
      );
    },

    async nextPendingAt() {
      const [row] = await db.query<{ at: number | null }>(
        `SELECT MIN(next_attempt_at) AS at FROM outbox_effects WHERE state = 'pending'`,
      );
      return row?.at == null ? undefined : Number(row.at);
    },
  };
}
