/**
 * A ledger commit that finds its writer's head moved re-chains and commits, however many times in
 * a row another appender moves it (the webhook intake's receipts at full ingest do, from their own
 * connection): only a head that keeps moving for the retry bound fails the commit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import type { LedgerCommit, LedgerHead } from '../../src/governance/audit-ledger.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';

const dir = mkdtempSync(join(tmpdir(), 'fraudgate-co-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const commitOf = (head: LedgerHead | undefined, n: number): LedgerCommit => {
  const seq = (head?.seq ?? 0) + 1;
  const row = {
    writer: 'replica-a',
    seq,
    ts: new Date(0).toISOString(),
    body: `{"n":${n}}`,
    prev_hash: head?.hash ?? '0'.repeat(64),
    hash: `h${n}`.padEnd(64, '0'),
  };
  return {
    rows: [row],
    checkpoints: [],
    head: { seq, hash: row.hash, sealed_seq: head?.sealed_seq ?? 0, sealed_at: head?.sealed_at ?? row.ts },
  };
};

describe('SQLite ledger engine with a busy co-writer', () => {
  it('commits after the head moved under it ten times in a row', async () => {
    const path = join(dir, 'fraudgate.db');
    const engine = openSqliteLedgerStore(path);
    const other = new DatabaseSync(path);
    try {
      await engine.commit('replica-a', (head) => commitOf(head, 0));
      let builds = 0;
      await engine.commit('replica-a', (head) => {
        builds += 1;
        // Another connection moves the head after each build, ten times: each send finds it moved.
        if (builds <= 10)
          other
            .prepare('UPDATE audit_writers SET hash = ? WHERE writer = ?')
            .run(`moved${builds}`.padEnd(64, '0'), 'replica-a');
        return commitOf(head, builds);
      });
      expect(builds).toBe(11);
      const [stored] = other.prepare('SELECT seq FROM audit_writers WHERE writer = ?').all('replica-a') as {
        seq: number;
      }[];
      expect(stored?.seq).toBe(2);
    } finally {
      other.close();
      await engine.close();
    }
  });
});
