/**
 * Persistence for approvals, behind one interface. The default implementation is an embedded
 * SQLite file (Node's built-in `node:sqlite`, WAL mode) in the data directory, so the server and
 * the `fraudgate approvals` CLI — separate processes — see the same state, and an approved action
 * survives a restart.
 *
 * Every state change is a compare-and-set (`UPDATE … WHERE state IN (…)`), so two processes can
 * never both execute one approval.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { ApprovalMode } from '../config.ts';

/**
 * pending → approved | denied | expired; approved → executing → executed | failed;
 * approved → expired when it was not executed before its expiry.
 */
/** `superseded`: a newer request for the same tool and target replaced it while it was pending. */
export type ApprovalState =
  'pending' | 'approved' | 'denied' | 'expired' | 'superseded' | 'executing' | 'executed' | 'failed';

export interface Approval {
  id: string;
  tool: string;
  /** The arguments frozen at request time; the approved action runs with exactly these. */
  args: Record<string, unknown>;
  args_hash: string;
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
  /** Tool output once executed. */
  result?: unknown;
  /** Public error once failed. */
  error?: { code: string; message: string };
}

export type NewApproval = Omit<
  Approval,
  'state' | 'decided_at' | 'decided_by' | 'reason' | 'executed_at' | 'result' | 'error'
>;

export interface ApprovalStore {
  create(approval: NewApproval): Approval;
  get(id: string): Approval | undefined;
  /** Newest first. */
  list(filter?: { states?: ApprovalState[]; limit?: number }): Approval[];
  /** A pending or approved (not yet executed) approval for exactly this call by this requester. */
  findOpen(binding: {
    tool: string;
    args_hash: string;
    requester: string;
    policy_version: string;
  }): Approval | undefined;
  /** Compare-and-set: moves to `to` only from one of `from`; returns the new row, or undefined if the state had moved on. */
  transition(
    id: string,
    from: ApprovalState[],
    to: ApprovalState,
    patch?: Partial<
      Pick<Approval, 'decided_at' | 'decided_by' | 'reason' | 'executed_at' | 'result' | 'error'>
    >,
  ): Approval | undefined;
  /** Pending or approved approvals whose expiry has passed. */
  listExpired(now: Date): Approval[];
  close(): void;
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
    policy_version: row.policy_version,
    evidence: JSON.parse(row.evidence) as Record<string, unknown>,
    state: row.state as ApprovalState,
    created_at: row.created_at,
    expires_at: row.expires_at,
  };
  if (row.decided_at !== null) approval.decided_at = row.decided_at;
  if (row.decided_by !== null) approval.decided_by = row.decided_by;
  if (row.reason !== null) approval.reason = row.reason;
  if (row.executed_at !== null) approval.executed_at = row.executed_at;
  if (row.result !== null) approval.result = JSON.parse(row.result) as unknown;
  if (row.error !== null) approval.error = JSON.parse(row.error) as Approval['error'];
  return approval;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  tool TEXT NOT NULL,
  args TEXT NOT NULL,
  args_hash TEXT NOT NULL,
  target TEXT NOT NULL,
  requester TEXT NOT NULL,
  requester_role TEXT NOT NULL,
  requester_kind TEXT NOT NULL,
  mode TEXT NOT NULL,
  policy_version TEXT NOT NULL,
  evidence TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  decided_at TEXT,
  decided_by TEXT,
  reason TEXT,
  executed_at TEXT,
  result TEXT,
  error TEXT
);
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (tool, args_hash, requester, state);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires_at);
`;

/** Open (and create if needed) the SQLite approval store at `path`; `:memory:` for a throwaway one. */
export function openSqliteApprovalStore(path: string): ApprovalStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  // WAL lets the CLI read while the server writes; busy_timeout makes concurrent writers wait, not fail.
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  db.exec(SCHEMA);

  const insert = db.prepare(
    `INSERT INTO approvals (id, tool, args, args_hash, target, requester, requester_role, requester_kind, mode,
       policy_version, evidence, state, created_at, expires_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)`,
  );
  const byId = db.prepare('SELECT * FROM approvals WHERE id = ?');
  const open = db.prepare(
    `SELECT * FROM approvals WHERE tool = ? AND args_hash = ? AND requester = ? AND policy_version = ?
       AND state IN ('pending', 'approved') AND expires_at > ? ORDER BY created_at DESC LIMIT 1`,
  );
  const expired = db.prepare(
    `SELECT * FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= ? ORDER BY created_at`,
  );

  return {
    create(approval) {
      insert.run(
        approval.id,
        approval.tool,
        JSON.stringify(approval.args),
        approval.args_hash,
        approval.target,
        approval.requester,
        approval.requester_role,
        approval.requester_kind,
        approval.mode,
        approval.policy_version,
        JSON.stringify(approval.evidence),
        approval.created_at,
        approval.expires_at,
      );
      return { ...approval, state: 'pending' };
    },
    get(id) {
      const row = byId.get(id) as Row | undefined;
      return row ? fromRow(row) : undefined;
    },
    list(filter = {}) {
      const states = filter.states ?? [];
      const where = states.length > 0 ? `WHERE state IN (${states.map(() => '?').join(', ')})` : '';
      const rows = db
        .prepare(`SELECT * FROM approvals ${where} ORDER BY created_at DESC, id DESC LIMIT ?`)
        .all(...states, filter.limit ?? 100) as unknown as Row[];
      return rows.map(fromRow);
    },
    findOpen(binding) {
      const row = open.get(
        binding.tool,
        binding.args_hash,
        binding.requester,
        binding.policy_version,
        new Date().toISOString(),
      ) as Row | undefined;
      return row ? fromRow(row) : undefined;
    },
    transition(id, from, to, patch = {}) {
      const sets = ['state = ?'];
      const values: (string | null)[] = [to];
      for (const [key, value] of Object.entries(patch)) {
        sets.push(`${key} = ?`);
        values.push(key === 'result' || key === 'error' ? JSON.stringify(value) : (value as string));
      }
      const changed = db
        .prepare(
          `UPDATE approvals SET ${sets.join(', ')} WHERE id = ? AND state IN (${from.map(() => '?').join(', ')})`,
        )
        .run(...values, id, ...from);
      if (Number(changed.changes) === 0) return undefined;
      const row = byId.get(id) as Row | undefined;
      return row ? fromRow(row) : undefined;
    },
    listExpired(now) {
      return (expired.all(now.toISOString()) as unknown as Row[]).map(fromRow);
    },
    close() {
      db.close();
    },
  };
}
