/**
 * The audit ledger's tables, per engine (versions 100–149 are reserved for the ledger). Each
 * statement is idempotent, so several processes may apply them at once.
 *
 * - `audit_records`: one row per record; `id` is insertion order (export order), `(writer, seq)`
 *   unique so a chain can never fork.
 * - `audit_checkpoints`: signed heads; the earliest kept per writer anchors what retention left.
 * - `audit_writers`: each writer's head, locked and advanced in every commit.
 */
export interface LedgerMigration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
}

export const LEDGER_MIGRATIONS: readonly LedgerMigration[] = [
  {
    version: 100,
    name: 'audit ledger',
    sqlite: `
CREATE TABLE IF NOT EXISTS audit_records (
  id INTEGER PRIMARY KEY,
  writer TEXT NOT NULL,
  seq INTEGER NOT NULL,
  ts TEXT NOT NULL,
  body TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  UNIQUE (writer, seq)
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  writer TEXT NOT NULL,
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  ts TEXT NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL,
  PRIMARY KEY (writer, seq)
);
CREATE TABLE IF NOT EXISTS audit_writers (
  writer TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  sealed_seq INTEGER NOT NULL,
  sealed_at TEXT NOT NULL
);`,
    postgres: `
CREATE TABLE IF NOT EXISTS audit_records (
  id BIGSERIAL PRIMARY KEY,
  writer TEXT NOT NULL,
  seq BIGINT NOT NULL,
  ts TEXT NOT NULL,
  body TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  UNIQUE (writer, seq)
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  writer TEXT NOT NULL,
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL,
  ts TEXT NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL,
  PRIMARY KEY (writer, seq)
);
CREATE TABLE IF NOT EXISTS audit_writers (
  writer TEXT PRIMARY KEY,
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL,
  sealed_seq BIGINT NOT NULL,
  sealed_at TEXT NOT NULL
);`,
  },
];
