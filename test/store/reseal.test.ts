/**
 * `data-key reseal` on both engines (src/store/reseal.ts): outbox effects (and the start-up key
 * check's value) sealed under the previous data key are counted per key, sealed again under the
 * current key, and then open without the previous key. (The CLI and the approvals' columns: test/security/data-key-rotation.test.ts.)
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createFieldCipher } from '../../src/store/field-crypto.ts';
import { countSealedByKey, resealUnderCurrentKey } from '../../src/store/reseal.ts';
import { openStore } from '../../src/store/store.ts';
import type { SqlExecutor } from '../../src/store/sql.ts';
import { ENGINES } from './engines.ts';

const EMAIL = 'reseal.planted@example.com';

describe.each(ENGINES)('reseal ($name)', (engine) => {
  it.skipIf(engine.skip)('moves values sealed under the previous key to the current one', async () => {
    const { config, secrets } = engine.fresh();
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const event = (decisionId: string) => ({ entityType: 'user', entityId: 'u-1', decisionId, time: 1 });
    const effect = { effect: 'sift_event', tool: 'send_sift_event', args: { email: EMAIL } };

    const before = await openStore(config, secrets, { cipher: createFieldCipher(oldKey) });
    await before.outbox.enqueueRouted(event('d-1'), [effect]);
    await before.outbox.enqueueRouted(event('d-2'), [effect]);
    await before.close();

    const rotated = createFieldCipher(newKey, [oldKey]);
    const during = await openStore(config, secrets, { cipher: rotated });
    try {
      await during.outbox.enqueueRouted(event('d-3'), [effect]);
      const oldId = createFieldCipher(oldKey).keyId;
      const byField = (counts: Awaited<ReturnType<typeof countSealedByKey>>) =>
        counts
          .map(
            (c) =>
              `${c.field} ${c.key_id === oldId ? 'old' : c.key_id === rotated.keyId ? 'new' : '?'} ${c.rows}`,
          )
          .sort();
      // The start-up key check's value was sealed by the first start, under the old key.
      expect(byField(await countSealedByKey(during.sql))).toEqual([
        'key_check.sealed old 1',
        'outbox_effects.args new 1',
        'outbox_effects.args old 2',
      ]);
      const progress: number[] = [];
      const result = await resealUnderCurrentKey(during.sql, rotated, (p) => progress.push(p.done));
      expect(result).toMatchObject({ done: 3, total: 3, failed: 0 });
      expect(progress.at(-1)).toBe(3);
      expect(byField(await countSealedByKey(during.sql))).toEqual([
        'key_check.sealed new 1',
        'outbox_effects.args new 3',
      ]);
    } finally {
      await during.close();
    }

    // Without the previous key: the start-up key check passes, every effect opens.
    const after = await openStore(config, secrets, { cipher: createFieldCipher(newKey) });
    try {
      const effects = await after.outbox.list();
      expect(effects.map((e) => e.args)).toEqual([{ email: EMAIL }, { email: EMAIL }, { email: EMAIL }]);
    } finally {
      await after.close();
    }
  });

  it.skipIf(engine.skip)('a row rewritten meanwhile is not counted as resealed', async () => {
    const { config, secrets } = engine.fresh();
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const effect = { effect: 'sift_event', tool: 'send_sift_event', args: { email: EMAIL } };
    const before = await openStore(config, secrets, { cipher: createFieldCipher(oldKey) });
    await before.outbox.enqueueRouted({ entityType: 'user', entityId: 'u-1', decisionId: 'd-1', time: 1 }, [
      effect,
    ]);
    await before.close();
    const rotated = createFieldCipher(newKey, [oldKey]);
    const during = await openStore(config, secrets, { cipher: rotated });
    try {
      // A running server rewrites the effect's args (under the new key) between reseal's read and write.
      let raced = false;
      const sql: SqlExecutor = {
        engine: during.sql.engine,
        query: (text, params, options) => during.sql.query(text, params, options),
        transaction: (fn) => during.sql.transaction(fn),
        async execute(text, params) {
          if (!raced && text.startsWith('UPDATE outbox_effects')) {
            raced = true;
            await during.sql.execute('UPDATE outbox_effects SET args = $1 WHERE id = $2', [
              String(params?.[2]).replace('enc:v1:', 'enc:v1:x'),
              params?.[1] ?? null,
            ]);
          }
          return during.sql.execute(text, params);
        },
      };
      const result = await resealUnderCurrentKey(sql, rotated);
      expect(raced).toBe(true);
      // key_check resealed; the effect's value changed under it: skipped, not counted as done.
      expect(result).toMatchObject({ done: 1, skipped: 1, total: 2, failed: 0 });
    } finally {
      await during.close();
    }
  });
});
