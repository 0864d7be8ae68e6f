/**
 * Persistence for identities: Sift → Segment user id mappings set by operators, and the identity
 * review list of Sift users `lookup_user` could not match to a Salesforce record. SQLite (WAL) in the
 * same database file as the approval store, so the server and the `fraudgate identities` CLI —
 * separate processes — see the same state, and both survive a restart.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Config } from '../config.ts';
import { InvalidInputError } from '../errors.ts';
import type { IdentityAttempt, IdentityDirectory, UnmatchedIdentity } from '../tool.ts';

/** A stored mapping, as the CLI lists it. */
export interface IdentityMapping {
  sift_user_id: string;
  segment_user_id: string;
  mapped_by: string;
  mapped_at: string;
}

/** The tool-facing directory plus the operator-only operations (mapping changes) and `close`. */
export interface IdentityStore extends IdentityDirectory {
  map(mapping: IdentityMapping): void;
  /** true if a stored mapping was removed (config mappings are unaffected). */
  unmap(siftUserId: string): boolean;
  listMappings(): IdentityMapping[];
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS identity_mappings (
  sift_user_id TEXT PRIMARY KEY,
  segment_user_id TEXT NOT NULL,
  mapped_by TEXT NOT NULL,
  mapped_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unmatched_identities (
  sift_user_id TEXT PRIMARY KEY,
  tried TEXT NOT NULL,
  first_seen_at TEXT NOT NULL,
  last_seen_at TEXT NOT NULL,
  times_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS unmatched_recency ON unmatched_identities (last_seen_at DESC, sift_user_id DESC);
`;

interface UnmatchedRow {
  sift_user_id: string;
  tried: string;
  first_seen_at: string;
  last_seen_at: string;
  times_seen: number;
}

function fromRow(row: UnmatchedRow): UnmatchedIdentity {
  return {
    sift_user_id: row.sift_user_id,
    tried: JSON.parse(row.tried) as IdentityAttempt[],
    first_seen_at: row.first_seen_at,
    last_seen_at: row.last_seen_at,
    times_seen: Number(row.times_seen),
  };
}

/** Keyset cursor over (last_seen_at, sift_user_id) descending: stable while entries are added. */
interface Position {
  at: string;
  id: string;
}

const encodeCursor = (p: Position) => Buffer.from(JSON.stringify([p.at, p.id])).toString('base64url');

function decodeCursor(cursor: string): Position {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(value) && typeof value[0] === 'string' && typeof value[1] === 'string') {
      return { at: value[0], id: value[1] };
    }
  } catch {
    // fall through: reported below as bad input
  }
  throw new InvalidInputError([{ field: 'cursor', message: 'is not a cursor from a previous page' }]);
}

/**
 * Open (and create if needed) the identity store at `path` (`:memory:` for a throwaway one).
 * `identity` is the config section: its mappings apply when no stored mapping exists.
 */
export function openSqliteIdentityStore(path: string, identity: Config['identity']): IdentityStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
  db.exec(SCHEMA);

  const mappingOf = db.prepare('SELECT segment_user_id FROM identity_mappings WHERE sift_user_id = ?');
  const upsertMapping = db.prepare(
    `INSERT INTO identity_mappings (sift_user_id, segment_user_id, mapped_by, mapped_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (sift_user_id) DO UPDATE SET segment_user_id = excluded.segment_user_id,
       mapped_by = excluded.mapped_by, mapped_at = excluded.mapped_at`,
  );
  const deleteMapping = db.prepare('DELETE FROM identity_mappings WHERE sift_user_id = ?');
  const allMappings = db.prepare('SELECT * FROM identity_mappings ORDER BY sift_user_id');
  // One statement, so two processes recording the same user concurrently both count.
  const upsertUnmatched = db.prepare(
    `INSERT INTO unmatched_identities (sift_user_id, tried, first_seen_at, last_seen_at, times_seen)
     VALUES (?, ?, ?, ?, 1)
     ON CONFLICT (sift_user_id) DO UPDATE SET tried = excluded.tried,
       last_seen_at = MAX(last_seen_at, excluded.last_seen_at), times_seen = times_seen + 1
     RETURNING *`,
  );
  const deleteUnmatched = db.prepare('DELETE FROM unmatched_identities WHERE sift_user_id = ?');
  const firstPage = db.prepare(
    'SELECT * FROM unmatched_identities ORDER BY last_seen_at DESC, sift_user_id DESC LIMIT ?',
  );
  const nextPage = db.prepare(
    `SELECT * FROM unmatched_identities WHERE last_seen_at < ? OR (last_seen_at = ? AND sift_user_id < ?)
     ORDER BY last_seen_at DESC, sift_user_id DESC LIMIT ?`,
  );

  return {
    segmentIdFor(siftUserId) {
      const stored = mappingOf.get(siftUserId) as { segment_user_id: string } | undefined;
      if (stored) return { segment_user_id: stored.segment_user_id, source: 'stored' };
      // Own-property check: a Sift id like "constructor" must not hit Object.prototype.
      if (Object.hasOwn(identity.mappings, siftUserId)) {
        const mapped = identity.mappings[siftUserId];
        if (mapped !== undefined) return { segment_user_id: mapped, source: 'config' };
      }
      return identity.segment_user_id === 'same'
        ? { segment_user_id: siftUserId, source: 'same' }
        : undefined;
    },
    recordUnmatched({ sift_user_id, tried, at }) {
      const iso = at.toISOString();
      const row = upsertUnmatched.get(
        sift_user_id,
        JSON.stringify(tried),
        iso,
        iso,
      ) as unknown as UnmatchedRow;
      return fromRow(row);
    },
    resolveUnmatched(siftUserId) {
      return Number(deleteUnmatched.run(siftUserId).changes) > 0;
    },
    listUnmatched({ cursor, limit }) {
      // One extra row says whether another page exists without a count query.
      const rows = (cursor === undefined
        ? firstPage.all(limit + 1)
        : (() => {
            const p = decodeCursor(cursor);
            return nextPage.all(p.at, p.at, p.id, limit + 1);
          })()) as unknown as UnmatchedRow[];
      const items = rows.slice(0, limit).map(fromRow);
      const last = items.at(-1);
      return rows.length > limit && last
        ? { items, next_cursor: encodeCursor({ at: last.last_seen_at, id: last.sift_user_id }) }
        : { items };
    },
    map(mapping) {
      upsertMapping.run(mapping.sift_user_id, mapping.segment_user_id, mapping.mapped_by, mapping.mapped_at);
    },
    unmap(siftUserId) {
      return Number(deleteMapping.run(siftUserId).changes) > 0;
    },
    listMappings() {
      return allMappings.all() as unknown as IdentityMapping[];
    },
    close() {
      db.close();
    },
  };
}
