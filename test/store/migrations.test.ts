/**
 * Migrations on both engines: several openers at once (replicas starting together) apply each
 * version exactly once; a second start applies nothing; versions colliding across ranges are
 * refused before anything runs; a data directory from before migrations adopts its tables.
 */
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS, migrate } from '../../src/store/migrations.ts';
import { openPostgresDatabase } from '../../src/store/postgres/database.ts';
import { openSqliteDatabase } from '../../src/store/sqlite/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';
import { openStore } from '../../src/store/store.ts';
import { ENGINES, PG_URL } from './engines.ts';

function openRaw(
  engine: (typeof ENGINES)[number],
  config: ReturnType<(typeof ENGINES)[number]['fresh']>['config'],
): SqlDatabase {
  return engine.name === 'SQLite'
    ? openSqliteDatabase(join(config.data_dir, 'fraudgate.db'))
    : openPostgresDatabase(PG_URL, { schema: config.store_postgres.schema, poolSize: 2 });
}

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`migrations: ${engine.name}`, () => {
    it('concurrent openers apply every version exactly once; a restart applies nothing', async () => {
      const { config } = engine.fresh();
      const dbs = [openRaw(engine, config), openRaw(engine, config), openRaw(engine, config)];
      try {
        const applied = await Promise.all(
          dbs.map((db) => migrate(db, { schema: config.store_postgres.schema })),
        );
        const all = applied.flat().sort((x, y) => x - y);
        expect(all).toEqual(MIGRATIONS.map((m) => m.version).sort((x, y) => x - y));
        expect(await migrate(dbs[0]!, { schema: config.store_postgres.schema })).toEqual([]);
        const rows = await dbs[1]!.query<{ version: number }>(
          'SELECT version FROM schema_migrations ORDER BY version',
        );
        expect(rows.map((r) => Number(r.version))).toEqual(all);
      } finally {
        for (const db of dbs) await db.close();
      }
    });

    it('refuses two migrations with one version before touching the database', async () => {
      const { config } = engine.fresh();
      const db = openRaw(engine, config);
      try {
        const clash = { version: 3, name: 'clash', sqlite: 'SELECT 1', postgres: 'SELECT 1' };
        await expect(
          migrate(db, { migrations: [...MIGRATIONS, clash], schema: config.store_postgres.schema }),
        ).rejects.toThrow(/two migrations share version 3/);
        // Nothing was recorded: the full list still applies afterwards.
        expect((await migrate(db, { schema: config.store_postgres.schema })).length).toBe(MIGRATIONS.length);
      } finally {
        await db.close();
      }
    });
  });
}

describe('migrations: SQLite data dir from before migrations', () => {
  it('adopts existing tables and their rows', async () => {
    const { config, secrets } = ENGINES[0]!.fresh();
    const legacy = new DatabaseSync(join(config.data_dir, 'fraudgate.db'));
    legacy.exec(`CREATE TABLE identity_mappings (sift_user_id TEXT PRIMARY KEY, segment_user_id TEXT NOT NULL,
      mapped_by TEXT NOT NULL, mapped_at TEXT NOT NULL);
      INSERT INTO identity_mappings VALUES ('u1', 'seg-1', 'ops', 't');`);
    legacy.close();
    const store = await openStore(config, secrets);
    try {
      expect(await store.identities.segmentIdFor('u1')).toEqual({
        segment_user_id: 'seg-1',
        source: 'stored',
      });
    } finally {
      await store.close();
    }
  });
});
