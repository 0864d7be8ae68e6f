/**
 * Approvals, behind one interface on both engines (SQLite in the data directory, or PostgreSQL
 * shared by every replica), so the server, the CLI and every replica see the same state and an
 * approved action survives a restart.
 *
 * Every state change is a compare-and-set (`UPDATE … WHERE state IN (…)`), so two processes can
 * never both execute one approval. At most one approval per binding (tool, argument hash, target,
 * requester, policy version) is open (pending, approved or executing) — a partial unique index, so
 * a call repeated on any replica, even at the same instant, gets the same approval back.
 */
import type { ApprovalMode } from '../config.ts';
import { placeholders, type SqlExecutor } from './sql.ts';
/**
 * pending → approved | denied | expired; approved → executing → executed | failed;
 * approved → expired when it was not executed before its expiry; executed → undone when
 * `undo_action` reversed it (so it is reversed once).
 */
/** `superseded`: a newer request for the same tool and target replaced it while it was pending. */
export const APPROVAL_STATES = [
  'pending',
  'approved',
  'denied',
  'expired',
  'superseded',
  'executing',
  'executed',
  'failed',
  'undone',
] as const;
export type ApprovalState = (typeof APPROVAL_STATES)[number];

export interface Approval {
  id: string;
  tool: string;
  /** The arguments frozen at request time; the approved action runs with exactly these. */
  args: Record<string, unknown>;
  args_hash: string;
  /** Set (with `args` empty) when the stored arguments were refused: why, for the failure it causes. */
  args_refused?: string;
  target: string;
  requester: string;
  requester_role: string;
  requester_kind: string;
  mode: ApprovalMode;
  /** Hash of the approval policy in force when requested; a policy change does not rebind old approvals. */
  policy_version: string;
  /** What the approver is shown: score, reasons, current decision. */
  evidence: Record<string, unknown>;
  state: ApprovalState;
  created_at: string;
  expires_at: string;
  decided_at?: string;
  decided_by?: string;
  reason?: string;
  executed_at?: string;
  /**
   * The replica id (FRAUDGATE_REPLICA_ID) of the `serve` that claimed it for execution, so that
   * replica, restarted, knows an `executing` one of its own was interrupted; absent for other processes.
   */
  executed_by?: string;
  /**
   * On an `undone` approval: the undo that marked it (its approval id), so that undo, re-run after
   * an interruption, finishes its own compensation instead of being refused as a second undo.
   */
  undone_by?: string;
  /** Tool output once executed. */
  result?: unknown;
  /** Public error once failed. */
  error?: { code: string; message: string };
}

/**
 * Who claimed an approval for execution and when, as a reader saw it: a transition guarded by it
 * fails once the claim was given up and made again (by another replica, or later by the same one).
 */
export type ExecutionClaim = Pick<Approval, 'executed_at' | 'executed_by'>;

/** What deciding and running an approval fill in later: absent from a new one, set by `transition`. */
type OutcomeField =
  'decided_at' | 'decided_by' | 'reason' | 'executed_at' | 'executed_by' | 'undone_by' | 'result' | 'error';

export type NewApproval = Omit<Approval, 'state' | OutcomeField> & {
  /**
   * The version replicas of the previous release look for (legacyApprovalPolicyVersion), stored in the
   * `policy_version` column their queries read, so a call retried on one of them during a rolling
   * deploy joins this approval; `policy_version` then goes to `policy_current` (migration 19), which
   * this release matches and reads back as the approval's version.
   */
  previous_release_policy_version?: string;
};

/** The states in which an approval still binds its call (the partial unique index covers them). */
export const OPEN_APPROVAL_STATES: readonly ApprovalState[] = ['pending', 'approved', 'executing'];

export interface ApprovalBinding {
  tool: string;
  args_hash: string;
  target: string;
  requester: string;
  /** The version it was requested under; several when more than one means the policy in force (an upgrade). */
  policy_version: string | readonly string[];
}

export interface ApprovalListFilter {
  states?: ApprovalState[];
  limit?: number;
  oldestFirst?: boolean;
  /** With `oldestFirst`: only approvals after this one in that order (the last one of the previous page). */
  after?: Pick<Approval, 'created_at' | 'id'>;
}

export interface ApprovalStore {
  /**
   * Store a new pending approval unless one is already open for the same binding; then that one is
   * returned with `created: false` (a repeated call, perhaps on another replica, at the same time).
   */
  create(approval: NewApproval): Promise<{ approval: Approval; created: boolean }>;
  /**
   * `evenUnreadable`: an approval whose sealed arguments do not open (field-crypto.ts) is returned
   * with empty `args` and `args_refused` instead of throwing: for what runs nothing (deny, settle).
   */
  get(id: string, options?: { evenUnreadable?: boolean }): Promise<Approval | undefined>;
  /** Newest first, or oldest first from just past `after` (a cursor for paging through a backlog). */
  list(filter?: ApprovalListFilter): Promise<Approval[]>;
  /** The open (pending, approved or executing) approval for exactly this call, if any. */
  findOpen(binding: ApprovalBinding): Promise<Approval | undefined>;
  /**
   * Compare-and-set: moves to `to` only from one of `from` and, when `claim` is given, only while the
   * row still carries exactly that execution claim (an absent field must be NULL); returns the new
   * row, or undefined if it had moved on. With `unexpiredAt`, also only while the approval's expiry is
   * after that instant: claiming an approved action must never run one past its expiry, even when
   * the sweep that marks it expired has not run (or failed).
   */
  transition(
    id: string,
    from: ApprovalState[],
    to: ApprovalState,
    patch?: Partial<Pick<Approval, OutcomeField>>,
    claim?: ExecutionClaim,
    unexpiredAt?: Date,
  ): Promise<Approval | undefined>;
  /** Pending or approved approvals whose expiry has passed. */
  listExpired(now: Date): Promise<Approval[]>;
  /** How many approvals are in these states (metrics). */
  count(states: ApprovalState[]): Promise<number>;
}

interface Row {
  id: string;
  tool: string;
  args: string;
  args_hash: string;
  target: string;
  requester: string;
  requester_role: string;
  requester_kind: string;
  mode: string;
  policy_version: string;
  evidence: string;
  state: string;
  created_at: string;
  expires_at: string;
  decided_at: string | null;
  decided_by: string | null;
  reason: string | null;
  executed_at: string | null;
  executed_by: string | null;
  /** Absent on a row read before migration 16. */
  undone_by?: string | null;
  /** The version this release opened it under, when the column holds the previous release's (migration 19). */
  policy_current?: string | null;
  result: string | null;
  error: string | null;
}

function fromRow(row: Row): Approval {
  const approval: Approval = {
    id: row.id,
    tool: row.tool,
    args: JSON.parse(row.args) as Record<string, unknown>,
    args_hash: row.args_hash,
    target: row.target,
    requester: row.requester,
    requester_role: row.requester_role,
    requester_kind: row.requester_kind,
    mode: row.mode as ApprovalMode,
    policy_version: row.policy_current ?? row.policy_version,
    evidence: JSON.parse(row.evidence) as Record<string, unknown>,
    state: row.state as ApprovalState,
    created_at: row.created_at,
    expires_at: row.expires_at,
  };
  if (row.decided_at !== null) approval.decided_at = row.decided_at;
  if (row.decided_by !== null) approval.decided_by = row.decided_by;
  if (row.reason !== null) approval.reason = row.reason;
  if (row.executed_at !== null) approval.executed_at = row.executed_at;
  if (row.executed_by !== null) approval.executed_by = row.executed_by;
  if (row.undone_by != null) approval.undone_by = row.undone_by;
  if (row.result !== null) approval.result = JSON.parse(row.result) as unknown;
  if (row.error !== null) approval.error = JSON.parse(row.error) as Approval['error'];
  return approval;
}

const PATCHABLE = new Set([
  'decided_at',
  'decided_by',
  'reason',
  'executed_at',
  'executed_by',
  'undone_by',
  'result',
  'error',
]);

/** The approval store on one executor: the database, or a transaction (`store.transaction`). */
export function createApprovalStore(db: SqlExecutor): ApprovalStore {
  const byId = async (id: string) => {
    const [row] = await db.query<Row>('SELECT * FROM approvals WHERE id = $1', [id]);
    return row ? fromRow(row) : undefined;
  };
  const open = `state IN (${OPEN_APPROVAL_STATES.map((s) => `'${s}'`).join(', ')})`;
  const findOpen = async (b: ApprovalBinding) => {
    const versions = typeof b.policy_version === 'string' ? [b.policy_version] : [...b.policy_version];
    const inVersions = `IN (${placeholders(versions.length, 5)})`;
    const [row] = await db.query<Row>(
      `SELECT * FROM approvals WHERE tool = $1 AND args_hash = $2 AND target = $3 AND requester = $4
         AND (policy_version ${inVersions} OR policy_current ${inVersions}) AND ${open}
         ORDER BY created_at DESC LIMIT 1`,
      [b.tool, b.args_hash, b.target, b.requester, ...versions],
    );
    return row ? fromRow(row) : undefined;
  };

  return {
    async create(approval) {
      // No conflict target: the partial unique index on the open binding is the one that can fire.
      const inserted = await db.execute(
        `INSERT INTO approvals (id, tool, args, args_hash, target, requester, requester_role, requester_kind, mode,
           policy_version, evidence, state, created_at, expires_at, policy_current)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14) ON CONFLICT DO NOTHING`,
        [
          approval.id,
          approval.tool,
          JSON.stringify(approval.args),
          approval.args_hash,
          approval.target,
          approval.requester,
          approval.requester_role,
          approval.requester_kind,
          approval.mode,
          approval.previous_release_policy_version ?? approval.policy_version,
          JSON.stringify(approval.evidence),
          approval.created_at,
          approval.expires_at,
          approval.previous_release_policy_version === undefined ? null : approval.policy_version,
        ],
      );
      const { previous_release_policy_version: _previous, ...stored } = approval;
      if (inserted > 0) return { approval: { ...stored, state: 'pending' }, created: true };
      const existing = await findOpen(approval);
      if (existing) return { approval: existing, created: false };
      // The id itself collided (random ids: practically never) or the open one closed meanwhile.
      throw new Error(`approval ${approval.id} could not be stored`);
    },
    get: byId,
    async list(filter = {}) {
      const states = filter.states ?? [];
      const values: (string | number)[] = [...states];
      const conditions = states.length > 0 ? [`state IN (${placeholders(states.length)})`] : [];
      if (filter.oldestFirst && filter.after) {
        values.push(filter.after.created_at, filter.after.id);
        conditions.push(`(created_at, id) > ($${values.length - 1}, $${values.length})`);
      }
      const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '';
      const order = filter.oldestFirst ? 'created_at, id' : 'created_at DESC, id DESC';
      values.push(filter.limit ?? 100);
      const rows = await db.query<Row>(
        `SELECT * FROM approvals ${where} ORDER BY ${order} LIMIT $${values.length}`,
        values,
      );
      return rows.map(fromRow);
    },
    findOpen,
    async transition(id, from, to, patch = {}, claim, unexpiredAt) {
      const sets = ['state = $1'];
      const values: (string | null)[] = [to];
      for (const [key, value] of Object.entries(patch)) {
        if (!PATCHABLE.has(key)) throw new Error(`approval field ${key} cannot be patched`);
        values.push(key === 'result' || key === 'error' ? JSON.stringify(value) : (value as string));
        sets.push(`${key} = $${values.length}`);
      }
      values.push(id);
      const conditions = [`id = $${values.length}`];
      if (claim) {
        // IS NULL spelled out rather than IS NOT DISTINCT FROM, which SQLite lacks.
        for (const column of ['executed_at', 'executed_by'] as const) {
          const expected = claim[column];
          if (expected === undefined) {
            conditions.push(`${column} IS NULL`);
          } else {
            values.push(expected);
            conditions.push(`${column} = $${values.length}`);
          }
        }
      }
      if (unexpiredAt) {
        // ISO-8601 UTC strings, written by toISOString() everywhere: they compare in time order.
        values.push(unexpiredAt.toISOString());
        conditions.push(`expires_at > $${values.length}`);
      }
      conditions.push(`state IN (${placeholders(from.length, values.length + 1)})`);
      const [row] = await db.query<Row>(
        `UPDATE approvals SET ${sets.join(', ')} WHERE ${conditions.join(' AND ')} RETURNING *`,
        [...values, ...from],
      );
      return row ? fromRow(row) : undefined;
    },
    async listExpired(now) {
      const rows = await db.query<Row>(
        `SELECT * FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= $1 ORDER BY created_at`,
        [now.toISOString()],
      );
      return rows.map(fromRow);
    },
    async count(states) {
      const [row] = await db.query<{ n: number }>(
        `SELECT COUNT(*) AS n FROM approvals WHERE state IN (${placeholders(states.length)})`,
        states,
      );
      return Number(row?.n ?? 0);
    },
  };
}
