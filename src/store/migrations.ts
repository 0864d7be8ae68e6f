/**
 * Versioned schema migrations, applied by `openStore` at start-up on both engines.
 *
 * A migration is (version, name, SQL per engine). The runner applies, in version order, every
 * version not yet recorded in `schema_migrations`, all in one transaction, and records each. It is
 * safe when several replicas start at once: on PostgreSQL the whole run holds an advisory lock (per
 * schema), on SQLite it is one `BEGIN IMMEDIATE` transaction. A version once released is never
 * edited: change the schema with a new version.
 *
 * Version ranges are RESERVED per area, so work landing in parallel never collides:
 *     1–99    store core (approvals, identities, sync state, outbox, job leases, replica instances)
 *   100–149   audit ledger
 *   150–199   MCP sessions and console sessions
 *   200–249   workflows (schedules, watchers)
 *   250–299   approval guardrails
 *   300–349   security
 *   350–399   performance
 * Add a range's migrations to `MIGRATIONS` below (one import, one spread).
 *
 * The core migrations use `IF NOT EXISTS`: a data directory created before migrations existed
 * already has these tables, and adopts them unchanged.
 */
import { JOB_MIGRATIONS } from './job-state-store.ts';
import { SESSION_MIGRATIONS } from './session-store.ts';
import { SYNC_STATE_MIGRATIONS } from './sync-state-store.ts';
import type { SqlDatabase, SqlExecutor } from './sql.ts';

export interface Migration {
  version: number;
  /** What it does, in a few words (recorded with the version). */
  name: string;
  sqlite: string;
  postgres: string;
}

/** For SQL both engines accept as written. */
const onBothEngines = (sql: string): Pick<Migration, 'sqlite' | 'postgres'> => ({
  sqlite: sql,
  postgres: sql,
});

const CORE: Migration[] = [
  {
    version: 1,
    name: 'approvals',
    sqlite: `
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY, tool TEXT NOT NULL, args TEXT NOT NULL, args_hash TEXT NOT NULL, target TEXT NOT NULL,
  requester TEXT NOT NULL, requester_role TEXT NOT NULL, requester_kind TEXT NOT NULL, mode TEXT NOT NULL,
  policy_version TEXT NOT NULL, evidence TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL, decided_at TEXT, decided_by TEXT, reason TEXT, executed_at TEXT, result TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (tool, args_hash, requester, state);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires_at);`,
    postgres: `
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY, tool TEXT NOT NULL, args TEXT NOT NULL, args_hash TEXT NOT NULL, target TEXT NOT NULL,
  requester TEXT NOT NULL, requester_role TEXT NOT NULL, requester_kind TEXT NOT NULL, mode TEXT NOT NULL,
  policy_version TEXT NOT NULL, evidence TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL, decided_at TEXT, decided_by TEXT, reason TEXT, executed_at TEXT, result TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (tool, args_hash, requester, state);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires_at);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created_at DESC, id DESC);`,
  },
  {
    version: 2,
    name: 'identity mappings and the unmatched list',
    ...onBothEngines(`
CREATE TABLE IF NOT EXISTS identity_mappings (
  sift_user_id TEXT PRIMARY KEY, segment_user_id TEXT NOT NULL, mapped_by TEXT NOT NULL, mapped_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unmatched_identities (
  sift_user_id TEXT PRIMARY KEY, tried TEXT NOT NULL, first_seen_at TEXT NOT NULL, last_seen_at TEXT NOT NULL,
  times_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS unmatched_recency ON unmatched_identities (last_seen_at DESC, sift_user_id DESC);`),
  },
  {
    version: 3,
    name: 'sync watermarks, score-sync runs and the Task ledger',
    ...onBothEngines(`
CREATE TABLE IF NOT EXISTS sync_watermarks (name TEXT PRIMARY KEY, modstamp TEXT NOT NULL, last_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lifecycle_seen (account_id TEXT PRIMARY KEY, status TEXT);
CREATE TABLE IF NOT EXISTS score_sync_runs (
  id TEXT PRIMARY KEY, started_at TEXT NOT NULL, cursor TEXT NOT NULL, state TEXT NOT NULL, counters TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS score_sync_tasks (
  run_id TEXT NOT NULL, account_id TEXT NOT NULL, state TEXT NOT NULL, task_id TEXT, PRIMARY KEY (run_id, account_id)
);`),
  },
  {
    version: 4,
    name: 'outbox events and effects',
    sqlite: `
CREATE TABLE IF NOT EXISTS outbox_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe_key TEXT NOT NULL UNIQUE, entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL, decision_id TEXT NOT NULL, decision_time INTEGER NOT NULL, received_at INTEGER NOT NULL,
  routed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_events_unrouted ON outbox_events (routed, id);
CREATE INDEX IF NOT EXISTS outbox_events_entity ON outbox_events (entity_type, entity_id, routed, decision_time);
CREATE TABLE IF NOT EXISTS outbox_effects (
  id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL REFERENCES outbox_events (id),
  effect TEXT NOT NULL, tool TEXT NOT NULL, args TEXT NOT NULL, entity_key TEXT NOT NULL,
  decision_time INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER, approval_id TEXT, last_error TEXT,
  result TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, UNIQUE (event_id, effect)
);
CREATE INDEX IF NOT EXISTS outbox_effects_due ON outbox_effects (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_effects_entity ON outbox_effects (entity_key, effect, state);`,
    postgres: `
CREATE TABLE IF NOT EXISTS outbox_events (
  id BIGSERIAL PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE, entity_type TEXT NOT NULL, entity_id TEXT NOT NULL,
  decision_id TEXT NOT NULL, decision_time BIGINT NOT NULL, received_at BIGINT NOT NULL,
  routed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_events_unrouted ON outbox_events (routed, id);
CREATE INDEX IF NOT EXISTS outbox_events_entity ON outbox_events (entity_type, entity_id, routed, decision_time);
CREATE TABLE IF NOT EXISTS outbox_effects (
  id BIGSERIAL PRIMARY KEY, event_id BIGINT NOT NULL REFERENCES outbox_events (id), effect TEXT NOT NULL,
  tool TEXT NOT NULL, args TEXT NOT NULL, entity_key TEXT NOT NULL, decision_time BIGINT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL, lease_owner TEXT,
  lease_until BIGINT, approval_id TEXT, last_error TEXT, result TEXT, created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL, UNIQUE (event_id, effect)
);
CREATE INDEX IF NOT EXISTS outbox_effects_due ON outbox_effects (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_effects_entity ON outbox_effects (entity_key, effect, state);`,
  },
  {
    version: 5,
    name: 'job leases',
    sqlite: `
CREATE TABLE job_leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL, acquired_at INTEGER NOT NULL
);`,
    postgres: `
CREATE TABLE job_leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL, acquired_at BIGINT NOT NULL
);`,
  },
  {
    version: 6,
    name: 'one open approval per binding',
    // Before the index, a repeated call on another replica could open a second approval for the same
    // call: keep the oldest open one of each binding and expire the rest, then forbid it for good.
    ...onBothEngines(`
UPDATE approvals SET state = 'expired', reason = 'duplicate of an earlier open approval for the same call'
WHERE state IN ('pending', 'approved') AND EXISTS (
  SELECT 1 FROM approvals older WHERE older.tool = approvals.tool AND older.args_hash = approvals.args_hash
    AND older.target = approvals.target AND older.requester = approvals.requester
    AND older.policy_version = approvals.policy_version AND older.state IN ('pending', 'approved', 'executing')
    AND (older.created_at < approvals.created_at OR (older.created_at = approvals.created_at AND older.id < approvals.id)));
CREATE UNIQUE INDEX approvals_open_binding ON approvals (tool, args_hash, target, requester, policy_version)
  WHERE state IN ('pending', 'approved', 'executing');`),
  },
  {
    version: 7,
    name: 'at most one running score-sync run',
    ...onBothEngines(
      `CREATE UNIQUE INDEX score_sync_one_running ON score_sync_runs (state) WHERE state = 'running';`,
    ),
  },
  {
    version: 8,
    name: 'outbox: when a non-idempotent effect began its upstream call',
    sqlite: 'ALTER TABLE outbox_effects ADD COLUMN attempted_at INTEGER;',
    postgres: 'ALTER TABLE outbox_effects ADD COLUMN attempted_at BIGINT;',
  },
  {
    version: 9,
    name: 'approvals: which replica is executing one',
    ...onBothEngines('ALTER TABLE approvals ADD COLUMN executed_by TEXT;'),
  },
  {
    version: 10,
    name: 'replica instances: which process holds each replica id',
    sqlite: `
CREATE TABLE replica_instances (
  replica_id TEXT PRIMARY KEY, nonce TEXT NOT NULL, started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL,
  beats INTEGER NOT NULL
);`,
    postgres: `
CREATE TABLE replica_instances (
  replica_id TEXT PRIMARY KEY, nonce TEXT NOT NULL, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL,
  beats BIGINT NOT NULL
);`,
  },
  {
    version: 14,
    name: 'identity mappings by Segment user id',
    // A Segment delivery resolves its users by Segment id; without the index each lookup reads the whole map.
    ...onBothEngines(
      'CREATE INDEX IF NOT EXISTS identity_mappings_segment ON identity_mappings (segment_user_id);',
    ),
  },
  {
    version: 16,
    name: 'approvals: which undo marked one undone',
    // Nullable, read only by undo_action: replicas of the previous version neither read nor write it.
    ...onBothEngines('ALTER TABLE approvals ADD COLUMN undone_by TEXT;'),
  },
  {
    version: 19,
    name: "outbox events' abuse type; approvals' current policy version",
    // Nullable, both: replicas of the previous version leave them NULL. A NULL abuse type matches no
    // other event, so their events supersede per effect only, as before. `policy_current` holds the
    // version this release opened an approval under while `policy_version` holds the one the previous
    // release looks for (approval-store.ts); its index keeps one open approval per binding among
    // replicas of this release tuned differently (whose legacy versions differ).
    ...onBothEngines(`
ALTER TABLE outbox_events ADD COLUMN abuse_type TEXT;
ALTER TABLE approvals ADD COLUMN policy_current TEXT;
CREATE UNIQUE INDEX approvals_open_binding_current ON approvals (tool, args_hash, target, requester, policy_current)
  WHERE state IN ('pending', 'approved', 'executing') AND policy_current IS NOT NULL;`),
  },
  {
    version: 32,
    name: 'data key check',
    // One row: a known value sealed under the data key of the first start (store.ts, checkDataKey).
    ...onBothEngines(
      'CREATE TABLE IF NOT EXISTS key_check (id INTEGER PRIMARY KEY, sealed TEXT NOT NULL, created_at BIGINT NOT NULL);',
    ),
  },
];

/** Every migration, all ranges; the runner sorts them by version. */
export const MIGRATIONS: readonly Migration[] = [
  ...CORE,
  ...SESSION_MIGRATIONS,
  ...SYNC_STATE_MIGRATIONS,
  ...JOB_MIGRATIONS,
];

const TRACKING_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL
)`;

/** Reject a list with duplicate versions before touching the database (two ranges colliding). */
function checkVersions(migrations: readonly Migration[]): Migration[] {
  const sorted = [...migrations].sort((a, b) => a.version - b.version);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.version === sorted[i - 1]!.version) {
      throw new Error(`two migrations share version ${sorted[i]!.version}: see the ranges in migrations.ts`);
    }
  }
  return sorted;
}

/**
 * Apply every migration not yet recorded, in version order, in one transaction; returns the
 * versions it applied (empty when the schema was up to date). `schema` is the PostgreSQL schema
 * (created if needed); ignored on SQLite.
 */
export async function migrate(
  db: SqlDatabase,
  options: { schema?: string; migrations?: readonly Migration[] } = {},
): Promise<number[]> {
  const migrations = checkVersions(options.migrations ?? MIGRATIONS);
  const apply = async (tx: SqlExecutor): Promise<number[]> => {
    await tx.execute(TRACKING_TABLE);
    const done = new Set(
      (await tx.query<{ version: number }>('SELECT version FROM schema_migrations')).map((r) =>
        Number(r.version),
      ),
    );
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      // Statements run one by one: a parameterless multi-statement string is fine on PostgreSQL
      // but SQLite's prepare() takes one statement at a time.
      for (const statement of splitStatements(db.engine === 'sqlite' ? m.sqlite : m.postgres)) {
        await tx.execute(statement);
      }
      await tx.execute('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        m.version,
        m.name,
        new Date().toISOString(),
      ]);
      applied.push(m.version);
    }
    return applied;
  };

  if (db.engine === 'sqlite') return db.transaction(apply);
  const schema = options.schema ?? 'public';
  // Replicas starting together: the first takes the lock and migrates, the others wait, then find
  // nothing to do. The lock is per schema, so test runs in their own schemas do not wait on each other.
  return db.transaction(async (tx) => {
    // A migration may rewrite a large table, and the replicas behind the first wait for its lock
    // as long as it takes: the pool's statement and lock timeouts are for calls, not for this.
    await tx.execute('SET LOCAL statement_timeout = 0');
    await tx.execute('SET LOCAL lock_timeout = 0');
    await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
      `fraudgate-migrations:${schema}`,
    ]);
    await tx.execute(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    return apply(tx);
  });
}

/** Split a migration script on `;` at line ends (our migrations hold no semicolons in literals). */
function splitStatements(script: string): string[] {
  return script
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
