/**
 * The identity store contract, on both engines: stored mappings win over config mappings and are
 * shared by every store on the database; the review list counts concurrent sightings from two
 * stores and pages by keyset.
 */
import { describe, expect, it } from 'vitest';
import { SEGMENT_IDS_PER_QUERY } from '../../src/store/identity-store.ts';
import type { SqlExecutor } from '../../src/store/sql.ts';
import { openStore } from '../../src/store/store.ts';
import { dropSchema, ENGINES, uniqueSchema } from './engines.ts';

const attempt = [
  { system: 'salesforce' as const, identifier: 'sift_user_id' as const, value: 'x', found: false },
];

for (const engine of ENGINES) {
  describe.skipIf(engine.skip)(`identity store contract: ${engine.name}`, () => {
    it('stored mappings win over config mappings and are seen by every store', async () => {
      const { config, secrets } = engine.fresh();
      const withConfigMapping = {
        ...config,
        identity: { segment_user_id: 'same' as const, mappings: { u1: 'seg-config' } },
      };
      const a = await openStore(withConfigMapping, secrets);
      const b = await openStore(withConfigMapping, secrets);
      try {
        expect(await b.identities.segmentIdFor('u1')).toEqual({
          segment_user_id: 'seg-config',
          source: 'config',
        });
        expect(await b.identities.segmentIdFor('constructor')).toEqual({
          segment_user_id: 'constructor',
          source: 'same',
        });
        await a.identities.map({
          sift_user_id: 'u1',
          segment_user_id: 'seg-1',
          mapped_by: 'ops',
          mapped_at: 't1',
        });
        await a.identities.map({
          sift_user_id: 'u1',
          segment_user_id: 'seg-2',
          mapped_by: 'ops',
          mapped_at: 't2',
        });
        expect(await b.identities.segmentIdFor('u1')).toEqual({ segment_user_id: 'seg-2', source: 'stored' });
        expect(await b.identities.listMappings()).toEqual([
          { sift_user_id: 'u1', segment_user_id: 'seg-2', mapped_by: 'ops', mapped_at: 't2' },
        ]);
        expect(await b.identities.unmap('u1')).toBe(true);
        expect(await b.identities.unmap('u1')).toBe(false);
        expect((await a.identities.segmentIdFor('u1'))?.source).toBe('config');
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('the review list counts every sighting from both stores and pages newest first', async () => {
      const [a, b] = await engine.open();
      const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
      await Promise.all([
        a.identities.recordUnmatched({ sift_user_id: 'x', tried: attempt, at: at(1) }),
        b.identities.recordUnmatched({ sift_user_id: 'x', tried: attempt, at: at(2) }),
        a.identities.recordUnmatched({ sift_user_id: 'x', tried: attempt, at: at(3) }),
      ]);
      const x = (await b.identities.listUnmatched({ limit: 10 })).items[0];
      expect(x).toMatchObject({ sift_user_id: 'x', times_seen: 3, last_seen_at: at(3).toISOString() });
      // An older sighting arriving late never moves last_seen_at backwards.
      await a.identities.recordUnmatched({ sift_user_id: 'x', tried: attempt, at: at(0) });
      expect((await b.identities.listUnmatched({ limit: 10 })).items[0]?.last_seen_at).toBe(
        at(3).toISOString(),
      );

      for (const [id, s] of [
        ['y', 4],
        ['z', 5],
      ] as const) {
        await b.identities.recordUnmatched({ sift_user_id: id, tried: attempt, at: at(s) });
      }
      const first = await a.identities.listUnmatched({ limit: 2 });
      expect(first.items.map((i) => i.sift_user_id)).toEqual(['z', 'y']);
      const second = await a.identities.listUnmatched({ limit: 2, cursor: first.next_cursor! });
      expect(second.items.map((i) => i.sift_user_id)).toEqual(['x']);
      expect(second.next_cursor).toBeUndefined();
      await expect(a.identities.listUnmatched({ limit: 2, cursor: 'nonsense' })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
      // Looking an entry up (lookup_user steered by a caller's identifier) changes nothing.
      expect(await a.identities.findUnmatched('x')).toMatchObject({ sift_user_id: 'x', times_seen: 4 });
      expect(await a.identities.findUnmatched('x')).toMatchObject({ times_seen: 4 });
      expect(await a.identities.findUnmatched('nobody')).toBeUndefined();
      expect(await b.identities.resolveUnmatched('x')).toBe(true);
      expect(await a.identities.resolveUnmatched('x')).toBe(false);
      expect(await b.identities.findUnmatched('x')).toBeUndefined();
    });

    it('mappings are looked up by Segment user id through an index, in one query per chunk of ids', async () => {
      const { config, secrets } = engine.fresh();
      const schema = `cases_${uniqueSchema()}`;
      const store = await openStore(
        { ...config, store_postgres: { ...config.store_postgres, schema } },
        secrets,
      );
      try {
        for (let k = 0; k < 20; k++) {
          await store.identities.map({
            sift_user_id: `sift-${k}`,
            segment_user_id: `seg-${k * 50}`,
            mapped_by: 'ops',
            mapped_at: 't',
          });
        }
        await store.identities.map({
          sift_user_id: 'other',
          segment_user_id: 'seg-0',
          mapped_by: 'ops',
          mapped_at: 't',
        });
        const wanted = Array.from({ length: 2 * SEGMENT_IDS_PER_QUERY + 1 }, (_, i) => `seg-${i}`);
        const sql = store.sql;
        const query = sql.query.bind(sql);
        let queries = 0;
        sql.query = ((text: string, ...rest: unknown[]) => {
          if (text.includes('identity_mappings')) queries += 1;
          return (query as (...args: unknown[]) => unknown)(text, ...rest);
        }) as SqlExecutor['query'];
        const found = await store.identities.mappingsForSegmentUsers([...wanted, ...wanted]);
        sql.query = query;
        expect(queries).toBe(3);
        const expected = [
          ...Array.from({ length: 20 }, (_, k) => [`sift-${k}`, `seg-${k * 50}`]),
          ['other', 'seg-0'],
        ].sort();
        expect(found.map((m) => [m.sift_user_id, m.segment_user_id]).sort()).toEqual(expected);
        expect(await store.identities.mappingsForSegmentUsers([])).toEqual([]);

        // The lookup reads the index, not the whole map.
        const plan =
          engine.name === 'SQLite'
            ? (
                await sql.query<{ detail: string }>(
                  "EXPLAIN QUERY PLAN SELECT sift_user_id FROM identity_mappings WHERE segment_user_id IN ('a', 'b')",
                )
              ).map((r) => r.detail)
            : await sql.transaction(async (tx) => {
                await tx.execute('SET LOCAL enable_seqscan = off');
                return (
                  await tx.query<{ 'QUERY PLAN': string }>(
                    "EXPLAIN SELECT sift_user_id FROM identity_mappings WHERE segment_user_id IN ('a', 'b')",
                  )
                ).map((r) => r['QUERY PLAN']);
              });
        expect(plan.join('\n')).toContain('identity_mappings_segment');
      } finally {
        await store.close();
        if (engine.name === 'PostgreSQL') await dropSchema(schema);
      }
    });
  });
}
