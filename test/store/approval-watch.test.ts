/**
 * The SQLite cross-process approval watch (src/store/sqlite/approval-watch.ts), check by check, with
 * a second `node:sqlite` connection standing in for another process: other connections' commits
 * that do not move a waited approval wake nobody; a decision committed elsewhere wakes its waiter;
 * and a decision committed between a waiter's read and the watch's first read is not lost.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCrossProcessWatch, type CrossProcessWatch } from '../../src/store/sqlite/approval-watch.ts';
import { openSqliteDatabase, sqliteDataVersion } from '../../src/store/sqlite/database.ts';
import type { SqlDatabase } from '../../src/store/sql.ts';

let dir: string;
let file: string;
let db: SqlDatabase;
let other: DatabaseSync;
let watch: CrossProcessWatch;
let waiting: string[];
let delivered: string[];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-watch-'));
  file = join(dir, 'fraudgate.db');
  db = openSqliteDatabase(file);
  await db.executeScript(`
    CREATE TABLE approvals (id TEXT PRIMARY KEY, state TEXT NOT NULL, decided_at TEXT, executed_at TEXT);
    CREATE TABLE unrelated (n INTEGER);
    INSERT INTO approvals (id, state) VALUES ('ap_1', 'pending'), ('ap_2', 'pending');`);
  other = new DatabaseSync(file);
  waiting = [];
  delivered = [];
  watch = createCrossProcessWatch({
    waiting: () => waiting,
    deliver: (id) => delivered.push(id),
    dataVersion: () => sqliteDataVersion(file),
    sql: db,
  });
});

afterEach(async () => {
  watch.stop();
  other.close();
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Another process decides: the state moves forward in a commit on the other connection. */
const decideElsewhere = (id: string) =>
  other.prepare(`UPDATE approvals SET state = 'approved', decided_at = 'now' WHERE id = ?`).run(id);

describe('SQLite cross-process approval watch', () => {
  it('wakes a waiter when another connection decides its approval, and nobody for unrelated commits', async () => {
    watch.observe('ap_1');
    waiting = ['ap_1'];
    await watch.check();
    // Nothing committed elsewhere since the waiter's read: its first read by the watch wakes nobody.
    expect(delivered).toEqual([]);

    other.exec('INSERT INTO unrelated (n) VALUES (1)');
    other.prepare(`UPDATE approvals SET state = 'denied' WHERE id = 'ap_2'`).run();
    await watch.check();
    expect(delivered).toEqual([]);

    decideElsewhere('ap_1');
    await watch.check();
    expect(delivered).toEqual(['ap_1']);
    await watch.check();
    expect(delivered).toEqual(['ap_1']);
  });

  it('a decision committed between the waiter’s read and the watch’s first read still wakes it', async () => {
    watch.observe('ap_1');
    decideElsewhere('ap_1');
    waiting = ['ap_1'];
    await watch.check();
    expect(delivered).toEqual(['ap_1']);
  });

  it('this connection’s own commits do not change the data version (they wake waiters in-process)', async () => {
    const before = sqliteDataVersion(file);
    await db.execute(`UPDATE approvals SET state = 'approved' WHERE id = 'ap_2'`);
    expect(sqliteDataVersion(file)).toBe(before);
    decideElsewhere('ap_1');
    expect(sqliteDataVersion(file)).not.toBe(before);
  });
});
