/**
 * Persistence for identities: Sift → Segment user id mappings set by operators, and the identity
 * review list of Sift users `lookup_user` could not match to a Salesforce record. In the store (the
 * SQLite file or PostgreSQL), so the server, every replica and the `fraudgate identities` CLI see the
 * same state, and both survive a restart.
 */
import type { Config } from '../config.ts';
import { InvalidInputError } from '../errors.ts';
import type { IdentityAttempt, IdentityDirectory, UnmatchedIdentity } from '../tool.ts';
import { placeholders, type SqlExecutor } from './sql.ts';

/** A stored mapping, as the CLI lists it. */
export interface IdentityMapping {
  sift_user_id: string;
  segment_user_id: string;
  mapped_by: string;
  mapped_at: string;
}

/** The tool-facing directory plus the operator-only operations (mapping changes). */
export interface IdentityStore extends IdentityDirectory {
  map(mapping: IdentityMapping): Promise<void>;
  /** true if a stored mapping was removed (config mappings are unaffected). */
  unmap(siftUserId: string): Promise<boolean>;
  listMappings(): Promise<IdentityMapping[]>;
  /**
   * The stored mappings to any of these Segment user ids, by sift_user_id: indexed lookups, one per
   * SEGMENT_IDS_PER_QUERY distinct ids, so the cost follows the ids asked for, not the map's size.
   */
  mappingsForSegmentUsers(segmentUserIds: readonly string[]): Promise<IdentityMapping[]>;
}

/** Most Segment ids in one lookup: well under SQLite's and PostgreSQL's bound-parameter limits. */
export const SEGMENT_IDS_PER_QUERY = 500;

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
 * The identity store on one executor. `identity` is the config section: its mappings apply when no
 * stored mapping exists.
 */
export function createIdentityStore(db: SqlExecutor, identity: Config['identity']): IdentityStore {
  const greatest = db.engine === 'sqlite' ? 'MAX' : 'GREATEST';
  return {
    async segmentIdFor(siftUserId) {
      const [stored] = await db.query<{ segment_user_id: string }>(
        'SELECT segment_user_id FROM identity_mappings WHERE sift_user_id = $1',
        [siftUserId],
      );
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
    async recordUnmatched({ sift_user_id, tried, at }) {
      const iso = at.toISOString();
      // One statement, so two processes recording the same user concurrently both count.
      const [row] = await db.query<UnmatchedRow>(
        `INSERT INTO unmatched_identities (sift_user_id, tried, first_seen_at, last_seen_at, times_seen)
         VALUES ($1, $2, $3, $3, 1)
         ON CONFLICT (sift_user_id) DO UPDATE SET tried = excluded.tried,
           last_seen_at = ${greatest}(unmatched_identities.last_seen_at, excluded.last_seen_at),
           times_seen = unmatched_identities.times_seen + 1
         RETURNING *`,
        [sift_user_id, JSON.stringify(tried), iso],
      );
      return fromRow(row!);
    },
    async resolveUnmatched(siftUserId) {
      return (await db.execute('DELETE FROM unmatched_identities WHERE sift_user_id = $1', [siftUserId])) > 0;
    },
    async findUnmatched(siftUserId) {
      const [row] = await db.query<UnmatchedRow>(
        'SELECT * FROM unmatched_identities WHERE sift_user_id = $1',
        [siftUserId],
      );
      return row ? fromRow(row) : undefined;
    },
    async listUnmatched({ cursor, limit }) {
      // One extra row says whether another page exists without a count query.
      const rows =
        cursor === undefined
          ? await db.query<UnmatchedRow>(
              'SELECT * FROM unmatched_identities ORDER BY last_seen_at DESC, sift_user_id DESC LIMIT $1',
              [limit + 1],
            )
          : await (() => {
              const p = decodeCursor(cursor);
              return db.query<UnmatchedRow>(
                `SELECT * FROM unmatched_identities
                 WHERE last_seen_at < $1 OR (last_seen_at = $1 AND sift_user_id < $2)
                 ORDER BY last_seen_at DESC, sift_user_id DESC LIMIT $3`,
                [p.at, p.id, limit + 1],
              );
            })();
      const items = rows.slice(0, limit).map(fromRow);
      const last = items.at(-1);
      return rows.length > limit && last
        ? { items, next_cursor: encodeCursor({ at: last.last_seen_at, id: last.sift_user_id }) }
        : { items };
    },
    async map(mapping) {
      await db.execute(
        `INSERT INTO identity_mappings (sift_user_id, segment_user_id, mapped_by, mapped_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sift_user_id) DO UPDATE SET segment_user_id = excluded.segment_user_id,
           mapped_by = excluded.mapped_by, mapped_at = excluded.mapped_at`,
        [mapping.sift_user_id, mapping.segment_user_id, mapping.mapped_by, mapping.mapped_at],
      );
    },
    async unmap(siftUserId) {
      return (await db.execute('DELETE FROM identity_mappings WHERE sift_user_id = $1', [siftUserId])) > 0;
    },
    async listMappings() {
      return db.query<IdentityMapping>(
        'SELECT sift_user_id, segment_user_id, mapped_by, mapped_at FROM identity_mappings ORDER BY sift_user_id',
      );
    },
    async mappingsForSegmentUsers(segmentUserIds) {
      const ids = [...new Set(segmentUserIds)];
      const rows: IdentityMapping[] = [];
      for (let i = 0; i < ids.length; i += SEGMENT_IDS_PER_QUERY) {
        const chunk = ids.slice(i, i + SEGMENT_IDS_PER_QUERY);
        rows.push(
          ...(await db.query<IdentityMapping>(
            `SELECT sift_user_id, segment_user_id, mapped_by, mapped_at FROM identity_mappings
             WHERE segment_user_id IN (${placeholders(chunk.length)}) ORDER BY sift_user_id`,
            chunk,
          )),
        );
      }
      return rows;
    },
  };
}
