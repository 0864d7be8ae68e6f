/**
 * The audit ledger, one contract on both engines: SQLite (always) and PostgreSQL (when a server
 * listens on 127.0.0.1:5432; FRAUDGATE_TEST_PG_URL overrides the URL; each run in its own schema).
 * Group commit, per-writer chains, signed checkpoints, the tamper cases verify must catch (each
 * naming the first bad record), export, retention and failing closed.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { hashLegacyAuditRecord, type AuditAppendInput, type AuditLog } from '../../src/governance/audit.ts';
import { chainHash, GENESIS_HASH } from '../../src/governance/audit-chain.ts';
import {
  createAuditLedger,
  exportLedger,
  pruneLedger,
  verifyAuditFile,
  verifyLedger,
  type AuditLedgerOptions,
  type LedgerEngine,
} from '../../src/governance/audit-ledger.ts';
import { createCheckpointSigner, createCheckpointVerifier } from '../../src/governance/audit-signing.ts';
import { createRedactor } from '../../src/governance/redact.ts';
import { takeWitness } from '../../src/governance/audit-witness.ts';
import { openPostgresLedgerStore } from '../../src/store/postgres/audit-ledger-store.ts';
import { openSqliteLedgerStore } from '../../src/store/sqlite/audit-ledger-store.ts';
import { listening } from '../helpers/services.ts';

const PG_URL = process.env.FRAUDGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const pgListening = await listening(5432);
if (!pgListening) {
  process.stderr.write('audit-ledger: PostgreSQL tests skipped: nothing listens on 127.0.0.1:5432\n');
}

const redactor = createRedactor({ hashKey: 'audit-test-key' });
const analyst = { id: 'analyst@corp.test', kind: 'user', role: 'analyst' } as const;
const keys = generateKeyPairSync('ed25519');
const verifier = createCheckpointVerifier(keys.publicKey);

/** A place to put a ledger: engines on it, and raw SQL for playing the attacker. */
interface Backend {
  open(): Promise<LedgerEngine>;
  sql(statement: string, params?: (string | number)[]): Promise<Record<string, unknown>[]>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sqliteBackend(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'fraudgate-ledger-'));
  const path = join(dir, 'fraudgate.db');
  const db = () => new DatabaseSync(path);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return {
    async open() {
      const engine = openSqliteLedgerStore(path);
      cleanups.push(() => engine.close());
      return engine;
    },
    async sql(statement, params = []) {
      const conn = db();
      try {
        if (/^\s*select/i.test(statement))
          return conn.prepare(statement).all(...params) as Record<string, unknown>[];
        conn.prepare(statement).run(...params);
        return [];
      } finally {
        conn.close();
      }
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const schema = `fg_ledger_${process.pid}_${randomBytes(4).toString('hex')}`;
  const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
  await client.connect();
  cleanups.push(async () => {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });
  return {
    async open() {
      const engine = await openPostgresLedgerStore({ url: PG_URL, schema });
      cleanups.push(() => engine.close());
      return engine;
    },
    async sql(statement, params = []) {
      // Positional `?` as in SQLite, so one attack script serves both engines.
      let n = 0;
      const text = statement.replace(/\?/g, () => `$${(n += 1)}`);
      const result = await client.query(text, params);
      return result.rows.map((row: Record<string, unknown>) =>
        Object.fromEntries(
          Object.entries(row).map(([k, v]) => [
            k,
            typeof v === 'string' && /^(seq|id)$/.test(k) ? Number(v) : v,
          ]),
        ),
      );
    },
  };
}

function entry(n: number, extra: Partial<AuditAppendInput> = {}): AuditAppendInput {
  return { event: 'executed', call_id: `call-${n}`, tool: 'get_sift_score', principal: analyst, ...extra };
}

function contract(name: string, makeBackend: () => Promise<Backend>, skip = false) {
  describe.skipIf(skip)(`audit ledger: ${name}`, () => {
    const opened: AuditLog[] = [];
    afterEach(async () => {
      for (const log of opened.splice(0)) await log.close();
    });

    function ledger(
      engine: LedgerEngine,
      options: Partial<AuditLedgerOptions> = {},
      signingKey: KeyObject = keys.privateKey,
    ) {
      const log = createAuditLedger({
        engine,
        writer: 'replica-a',
        redactor,
        signer: createCheckpointSigner(signingKey),
        ...options,
      });
      opened.push(log);
      return log;
    }

    /** A closed ledger of `count` records with a checkpoint every `every`; the backend to attack. */
    async function written(count: number, every = 5) {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine, { checkpointEvery: every });
      for (let i = 1; i <= count; i += 1) await log.append(entry(i));
      await log.close();
      return { backend, engine };
    }

    const rows = (b: Backend, writer = 'replica-a') =>
      b.sql('SELECT seq, body, prev_hash, hash FROM audit_records WHERE writer = ? ORDER BY seq', [
        writer,
      ]) as Promise<{ seq: number; body: string; prev_hash: string; hash: string }[]>;

    /** `real` with every commit counted (`chain` too, where the engine chains records itself), held back by `gate`. */
    const counted = (real: LedgerEngine, count: () => void, gate?: Promise<void>): LedgerEngine => ({
      ...real,
      commit: async (w, build) => {
        count();
        await gate;
        return real.commit(w, build);
      },
      ...(real.chain
        ? {
            chain: async (w: string, group: Parameters<NonNullable<LedgerEngine['chain']>>[1]) => {
              count();
              await gate;
              return real.chain!(w, group);
            },
          }
        : {}),
    });

    it('chains each record to its writer, group-commits concurrent appends, and verifies', async () => {
      const backend = await makeBackend();
      const real = await backend.open();
      let commits = 0;
      const counting = counted(real, () => (commits += 1));
      const log = ledger(counting);
      const records = await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(entry(i + 1))));
      expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      expect(records.every((r) => r.writer === 'replica-a' && r.v === 2)).toBe(true);
      expect(records[0]?.prev_hash).toBe(GENESIS_HASH);
      expect(records[1]?.prev_hash).toBe(records[0]?.hash);
      // 300 concurrent appends, a handful of transactions.
      expect(commits).toBeLessThanOrEqual(3);
      await log.close();
      expect(await verifyLedger(real, verifier)).toMatchObject({
        ok: true,
        records: 300,
        writers: 1,
        unsealed: 0,
      });
    });

    it('seals heads while commits overlap: every checkpoint once, on a record of the chain, nothing unsealed after close', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine, { checkpointEvery: 50 });
      let next = 1;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          for (let i = next++; i <= 1500; i = next++) await log.append(entry(i));
        }),
      );
      await log.close();
      const cps = (await backend.sql('SELECT seq, hash FROM audit_checkpoints ORDER BY seq')) as {
        seq: number;
        hash: string;
      }[];
      const seqs = cps.map((c) => Number(c.seq));
      expect(new Set(seqs).size).toBe(seqs.length);
      expect(seqs[0]).toBe(0);
      expect(seqs.at(-1)).toBe(1500);
      // No run of 50 records without a seal, give or take the group in flight when one was due.
      for (let i = 1; i < seqs.length; i += 1) expect(seqs[i]! - seqs[i - 1]!).toBeLessThan(50 + 64 * 2);
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 1500, unsealed: 0 });
    });

    it('starts the chain afresh, signed, when the store was emptied under a running writer', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine, { checkpointEvery: 2 });
      for (let i = 1; i <= 3; i += 1) await log.append(entry(i));
      await log.flush();
      for (const table of ['audit_records', 'audit_checkpoints', 'audit_writers']) {
        await backend.sql(`DELETE FROM ${table}`);
      }
      expect((await log.append(entry(4))).seq).toBe(1);
      await log.close();
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 1, unsealed: 0 });
    });

    it('keeps one chain per writer: two writers append at once without waiting on each other, both verify', async () => {
      const backend = await makeBackend();
      const a = ledger(await backend.open(), { writer: 'replica-a' });
      const b = ledger(await backend.open(), { writer: 'replica-b' });
      const both = await Promise.all(
        Array.from({ length: 50 }, (_, i) => [a.append(entry(i)), b.append(entry(i))]).flat(),
      );
      expect(both.filter((r) => r.writer === 'replica-b').map((r) => r.seq)).toEqual(
        Array.from({ length: 50 }, (_, i) => i + 1),
      );
      await a.close();
      await b.close();
      expect(await verifyLedger(await backend.open(), verifier)).toMatchObject({
        ok: true,
        records: 100,
        writers: 2,
      });
    });

    it('two processes sharing one writer id never fork its chain', async () => {
      const backend = await makeBackend();
      const first = ledger(await backend.open());
      const second = ledger(await backend.open());
      await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? first : second).append(entry(i))));
      await first.close();
      await second.close();
      expect(await verifyLedger(await backend.open(), verifier)).toMatchObject({
        ok: true,
        records: 40,
        writers: 1,
      });
    });

    it('signs a seq-0 checkpoint, then every N records and on close', async () => {
      const { backend } = await written(12, 5);
      const cps = await backend.sql('SELECT seq, key_id FROM audit_checkpoints ORDER BY seq');
      expect(cps.map((c) => c.seq)).toEqual([0, 5, 10, 12]);
      expect(new Set(cps.map((c) => c.key_id))).toEqual(new Set(verifier.keyIds));
    });

    it('reads queue without waiting (write-behind) and are durable after the next commit', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine);
      log.enqueue(entry(1));
      log.enqueue(entry(2));
      const waited = await log.append(entry(3, { event: 'intent', tool: 'apply_label' }));
      expect(waited.seq).toBe(3);
      expect((await rows(backend)).map((r) => r.seq)).toEqual([1, 2, 3]);
    });

    it("builds a write-behind record when its group commits, off the call's path, with the call's time", async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      let redactions = 0;
      const counting = {
        ...redactor,
        redactValue: (value: unknown) => ((redactions += 1), redactor.redactValue(value)),
      };
      let clock = Date.parse('2026-11-30T10:00:00.000Z');
      const log = ledger(engine, {
        redactor: counting,
        now: () => new Date(clock),
        writeBehindLingerMs: 60_000,
      });
      log.enqueue(entry(1, { args_redacted: { email: 'pat@example.com' }, target: 'sift_user:pat' }));
      // The call answers without redacting or serialising anything.
      expect(redactions).toBe(0);
      clock += 5_000;
      await log.flush();
      expect(redactions).toBeGreaterThan(0);
      const [stored] = await rows(backend);
      const body = JSON.parse(stored!.body) as Record<string, unknown>;
      // Stamped when the call recorded, not when the group committed; redacted like any record.
      expect(body.ts).toBe('2026-11-30T10:00:00.000Z');
      expect(JSON.stringify(body)).not.toContain('pat@example.com');
      expect(body.call_id).toBe('call-1');
    });

    it('a write-behind record that cannot be built is still recorded, saying so', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      // A redactor with a bug that throws on some arguments: the call must not lose its record.
      const faulty = {
        ...redactor,
        redactValue: (value: unknown) => {
          if (typeof value === 'object' && value !== null && 'explode' in value)
            throw new Error('redactor bug');
          return redactor.redactValue(value);
        },
      };
      const log = ledger(engine, { redactor: faulty, writeBehindLingerMs: 60_000 });
      log.enqueue(entry(1, { args_redacted: { explode: true } }));
      log.enqueue(entry(2));
      await log.flush();
      const stored = (await rows(backend)).map((r) => JSON.parse(r.body) as Record<string, unknown>);
      expect(stored.map((b) => b.call_id)).toEqual(['call-1', 'call-2']);
      expect(stored[0]).toMatchObject({ event: 'executed', tool: 'get_sift_score', principal: analyst });
      expect(String(stored[0]!.detail)).toMatch(/^the audit record could not be built/);
      expect(stored[0]!.args_redacted).toBeUndefined();
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 2 });
    });

    it('reads share commits: write-behind records wait for company, and flush commits them at once', async () => {
      const backend = await makeBackend();
      const real = await backend.open();
      let commits = 0;
      const counting = counted(real, () => (commits += 1));
      const log = ledger(counting, { writeBehindLingerMs: 60_000 });
      // Sequential reads, each in its own event-loop turn: none of them starts a commit of its own.
      for (let i = 1; i <= 20; i += 1) {
        log.enqueue(entry(i));
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(commits).toBe(0);
      await log.flush();
      expect(commits).toBe(1);
      expect((await rows(backend)).map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      // A waiting append takes the queued reads along at once.
      log.enqueue(entry(21));
      const appended = await log.append(entry(22, { event: 'intent', tool: 'apply_label' }));
      expect(appended.seq).toBe(22);
      expect(commits).toBe(2);
    });

    it('reads that arrive during a commit wait for company too, not for that commit to finish', async () => {
      const backend = await makeBackend();
      const real = await backend.open();
      let commits = 0;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const gated = counted(real, () => (commits += 1), gate);
      const log = ledger(gated, { writeBehindLingerMs: 60_000 });
      const appended = log.append(entry(1, { event: 'intent', tool: 'apply_label' }));
      for (let i = 2; i <= 10; i += 1) {
        await new Promise((resolve) => setImmediate(resolve));
        log.enqueue(entry(i));
      }
      expect(commits).toBe(1);
      release();
      expect((await appended).seq).toBe(1);
      for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
      // Committing them now would cost a commit (an fsync) per handful of reads while reads arrive.
      expect(commits).toBe(1);
      await log.flush();
      expect(commits).toBe(2);
      expect((await rows(backend)).map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    });

    it('redacts arguments, target, detail and outcome message before hashing and storing', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine, { now: () => new Date('2025-01-02T03:04:05.000Z') });
      const record = await log.append({
        event: 'failed',
        call_id: 'call-1',
        tool: 'suppress_user',
        principal: analyst,
        target: 'sift_user:jane.doe@example.com',
        args_redacted: {
          user_id: 'jane.doe@example.com',
          $ip: '203.0.113.7',
          api_key: 'sk_live_1',
          reason: 'fraud',
        },
        args_hash: 'a'.repeat(64),
        outcome: { code: 'UPSTREAM_ERROR', message: 'Sift rejected jane.doe@example.com', retryable: false },
        upstream: [{ service: 'sift', request_id: 'req-1', latency_ms: 12, status: 400 }],
        duration_ms: 15,
        detail: 'body: {"email":"jane.doe@example.com","phone":"+44 20 7946 0958"}',
      });
      const [stored] = await rows(backend);
      for (const secret of ['jane.doe@example.com', '7946 0958', '203.0.113.7', 'sk_live_1']) {
        expect(stored!.body).not.toContain(secret);
      }
      expect(record).toMatchObject({
        v: 2,
        writer: 'replica-a',
        seq: 1,
        ts: '2025-01-02T03:04:05.000Z',
        principal: analyst,
        args_hash: 'a'.repeat(64),
        args_redacted: { reason: 'fraud', api_key: '[REDACTED]' },
        upstream: [{ service: 'sift', request_id: 'req-1', latency_ms: 12, status: 400 }],
      });
      expect(record.target).toBe(
        `sift_user:j***@example.com#${redactor.hashPersonal('jane.doe@example.com')}`,
      );
      expect(JSON.parse(stored!.body)).toMatchObject({ call_id: 'call-1', target: record.target });
      await expect(log.append({ ...entry(2), event: 'bogus' as 'executed' })).rejects.toThrow(/event/);
      await log.close();
      await expect(log.append(entry(3))).rejects.toThrow(/closed/);
    });

    describe('tampering is detected and the first bad record named', () => {
      it('an edited record', async () => {
        const { backend, engine } = await written(12);
        const [, , third] = await rows(backend);
        await backend.sql('UPDATE audit_records SET body = ? WHERE writer = ? AND seq = 3', [
          third!.body.replace('call-3', 'call-x'),
          'replica-a',
        ]);
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          writer: 'replica-a',
          seq: 3,
          reason: expect.stringContaining('edited'),
        });
      });

      it('a deleted record', async () => {
        const { backend, engine } = await written(12);
        await backend.sql('DELETE FROM audit_records WHERE writer = ? AND seq = 7', ['replica-a']);
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          seq: 8,
          reason: expect.stringContaining('deleted'),
        });
      });

      it('reordered records', async () => {
        const { backend, engine } = await written(12);
        // Swap the contents of records 4 and 6, keeping each row's seq.
        const list = await rows(backend);
        const [four, six] = [list[3]!, list[5]!];
        const set = 'UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE writer = ? AND seq = ?';
        await backend.sql(set, [six.body, six.prev_hash, six.hash, 'replica-a', 4]);
        await backend.sql(set, [four.body, four.prev_hash, four.hash, 'replica-a', 6]);
        expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: false, seq: 4 });
      });

      it('an inserted record, chained correctly to its predecessor', async () => {
        const { backend, engine } = await written(12);
        const list = await rows(backend);
        // Make room at seq 4 (two steps: (writer, seq) is unique), then insert a well-formed forgery.
        await backend.sql('UPDATE audit_records SET seq = -seq - 1 WHERE writer = ? AND seq >= 4', [
          'replica-a',
        ]);
        await backend.sql('UPDATE audit_records SET seq = -seq WHERE writer = ? AND seq < 0', ['replica-a']);
        const body = list[3]!.body.replace('call-4', 'call-forged');
        const prev = list[2]!.hash;
        await backend.sql(
          'INSERT INTO audit_records (writer, seq, ts, body, prev_hash, hash) VALUES (?, 4, ?, ?, ?, ?)',
          ['replica-a', new Date().toISOString(), body, prev, chainHash('replica-a', 4, prev, body)],
        );
        const result = await verifyLedger(engine, verifier);
        expect(result).toMatchObject({ ok: false, writer: 'replica-a' });
        expect(result.ok === false && result.seq).toBeGreaterThanOrEqual(4);
        expect(result.ok === false && result.seq).toBeLessThanOrEqual(5);
      });

      it('the newest records removed back past the last checkpoint', async () => {
        const { backend, engine } = await written(12);
        await backend.sql('DELETE FROM audit_records WHERE writer = ? AND seq >= 9', ['replica-a']);
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          writer: 'replica-a',
          seq: 9,
          reason: expect.stringContaining('newest records removed'),
        });
      });

      it('cut back to an earlier checkpoint (records, checkpoints and head): only a witness taken before shows it', async () => {
        const { backend, engine } = await written(12);
        const { witness } = takeWitness(await engine.checkpoints(), verifier, new Date());
        expect(witness.writers).toMatchObject([{ writer: 'replica-a', seq: 12 }]);
        expect(await verifyLedger(engine, verifier, { witness })).toMatchObject({ ok: true, records: 12 });
        await backend.sql('DELETE FROM audit_records WHERE writer = ? AND seq > 5', ['replica-a']);
        await backend.sql('DELETE FROM audit_checkpoints WHERE writer = ? AND seq > 5', ['replica-a']);
        await backend.sql(
          'UPDATE audit_writers SET seq = 5, sealed_seq = 5, hash = (SELECT hash FROM audit_records WHERE writer = ? AND seq = 5) WHERE writer = ?',
          ['replica-a', 'replica-a'],
        );
        expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 5 });
        expect(await verifyLedger(engine, verifier, { witness })).toMatchObject({
          ok: false,
          writer: 'replica-a',
          seq: 6,
          reason: expect.stringContaining('saw seq 12 but the chain ends at 5'),
        });
      });

      it('a writer erased whole: only a witness shows it', async () => {
        const { backend, engine } = await written(7);
        const { witness } = takeWitness(await engine.checkpoints(), verifier, new Date());
        for (const table of ['audit_records', 'audit_checkpoints', 'audit_writers']) {
          await backend.sql(`DELETE FROM ${table} WHERE writer = ?`, ['replica-a']);
        }
        expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 0 });
        expect(await verifyLedger(engine, verifier, { witness })).toMatchObject({
          ok: false,
          writer: 'replica-a',
          seq: 7,
          reason: expect.stringContaining('writer missing'),
        });
      });

      it('a full re-chain by someone without the key: rewritten hashes, forged or deleted checkpoints', async () => {
        const { backend, engine } = await written(12);
        // Edit record 3 and recompute every hash after it: the chain alone now looks perfect.
        const list = await rows(backend);
        let prev = list[1]!.hash;
        for (const r of list.slice(2)) {
          const body = r.seq === 3 ? r.body.replace('call-3', 'call-x') : r.body;
          const hash = chainHash('replica-a', r.seq, prev, body);
          await backend.sql(
            'UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE writer = ? AND seq = ?',
            [body, prev, hash, 'replica-a', r.seq],
          );
          prev = hash;
        }
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          seq: 5,
          reason: expect.stringContaining('checkpoint'),
        });

        // Re-signing the checkpoints with a key of one's own does not help...
        const forger = createCheckpointSigner(generateKeyPairSync('ed25519').privateKey);
        const cps = await backend.sql('SELECT seq, ts FROM audit_checkpoints WHERE writer = ?', [
          'replica-a',
        ]);
        const hashes = new Map((await rows(backend)).map((r) => [r.seq, r.hash]));
        for (const cp of cps) {
          const seq = Number(cp.seq);
          const forged = forger.sign({
            writer: 'replica-a',
            seq,
            hash: hashes.get(seq) ?? GENESIS_HASH,
            ts: String(cp.ts),
          });
          await backend.sql(
            'UPDATE audit_checkpoints SET hash = ?, key_id = ?, signature = ? WHERE writer = ? AND seq = ?',
            [forged.hash, forged.key_id, forged.signature, 'replica-a', seq],
          );
        }
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          reason: expect.stringContaining('not the trusted key'),
        });

        // ...nor does deleting them.
        await backend.sql('DELETE FROM audit_checkpoints');
        expect(await verifyLedger(engine, verifier)).toMatchObject({
          ok: false,
          writer: 'replica-a',
          seq: 1,
          reason: expect.stringContaining('no signed checkpoint'),
        });
      });
    });

    it('exports JSON Lines that verify on their own; an edited export line is named by line', async () => {
      const { engine } = await written(12);
      const dir = mkdtempSync(join(tmpdir(), 'fraudgate-export-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const file = join(dir, 'export.jsonl');
      let text = '';
      for await (const chunk of exportLedger(engine)) text += chunk;
      writeFileSync(file, text);
      const lines = text.trimEnd().split('\n');
      const records = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.type !== 'checkpoint');
      expect(records).toHaveLength(12);
      expect(records[0]).toMatchObject({
        v: 2,
        writer: 'replica-a',
        seq: 1,
        call_id: 'call-1',
        event: 'executed',
      });
      expect(await verifyAuditFile(file, verifier)).toMatchObject({
        format: 'ledger',
        ok: true,
        records: 12,
      });

      const at = lines.findIndex((l) => l.includes('"call-6"'));
      lines[at] = lines[at]!.replace('call-6', 'call-x');
      writeFileSync(file, `${lines.join('\n')}\n`);
      expect(await verifyAuditFile(file, verifier)).toMatchObject({ ok: false, seq: 6, line: at + 1 });
    });

    it('export --since starts each writer at its last checkpoint before that time, and still verifies', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const start = Date.parse('2026-01-01T00:00:00.000Z');
      let clock = start;
      const log = ledger(engine, {
        checkpointEvery: 5,
        checkpointIntervalMs: 1e12,
        now: () => new Date(clock),
      });
      for (let i = 1; i <= 20; i += 1) {
        clock = start + i * 60_000;
        await log.append(entry(i));
      }
      await log.close();
      // Record 12's minute; the last checkpoint before it sealed seq 10.
      const since = new Date(start + 12 * 60_000 + 30_000);
      let text = '';
      for await (const chunk of exportLedger(engine, { since })) text += chunk;
      const seqs = text
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { type?: string; seq: number })
        .filter((l) => l.type !== 'checkpoint')
        .map((l) => l.seq);
      expect(seqs[0]).toBe(11);
      expect(seqs.at(-1)).toBe(20);
      const dir = mkdtempSync(join(tmpdir(), 'fraudgate-export-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      writeFileSync(join(dir, 'since.jsonl'), text);
      expect(await verifyAuditFile(join(dir, 'since.jsonl'), verifier)).toMatchObject({
        ok: true,
        records: 10,
      });
    });

    it('retention prunes old records back to a checkpoint, and what remains still verifies', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const start = Date.parse('2026-01-01T00:00:00.000Z');
      let clock = start;
      const log = ledger(engine, {
        checkpointEvery: 5,
        checkpointIntervalMs: 1e12,
        now: () => new Date(clock),
      });
      for (let i = 1; i <= 20; i += 1) {
        clock = start + i * 86_400_000;
        await log.append(entry(i));
      }
      await log.close();
      // One record a day; keep the last 7.5 days: records up to the checkpoint at seq 10 go.
      const pruned = await pruneLedger(engine, new Date(start + 12.5 * 86_400_000));
      expect(pruned.records).toBe(10);
      expect((await rows(backend)).map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 11));
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 10 });
      // A witness taken before retention pruned its seq: the signed anchor after it stands for it.
      const early = {
        format: 'fraudgate-audit-witness/1' as const,
        taken_at: new Date(start).toISOString(),
        writers: [
          {
            writer: 'replica-a',
            seq: 5,
            hash: 'pruned'.padEnd(64, '0'),
            signed_at: '',
            key_id: '',
            signature: '',
          },
        ],
      };
      expect(await verifyLedger(engine, verifier, { witness: early })).toMatchObject({ ok: true });
      // The anchor still catches a deletion at the new start.
      await backend.sql('DELETE FROM audit_records WHERE writer = ? AND seq = 11', ['replica-a']);
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: false, seq: 12 });
    });

    it('fails closed while it cannot write, keeps queued read records, and recovers by itself', async () => {
      const backend = await makeBackend();
      const engine = await backend.open();
      const log = ledger(engine, { retryMs: 20 });
      await log.append(entry(1));
      await backend.sql('ALTER TABLE audit_records RENAME TO audit_records_away');
      await expect(log.append(entry(2))).rejects.toMatchObject({ code: 'UPSTREAM_ERROR', retryable: true });
      expect(() => log.assertWritable()).toThrow(/refuses calls/);
      expect(log.health()).toMatchObject({ ok: false });
      log.enqueue(entry(3));
      await backend.sql('ALTER TABLE audit_records_away RENAME TO audit_records');
      const until = Date.now() + 10_000;
      while (!log.health().ok && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(log.health()).toEqual({ ok: true });
      expect(() => log.assertWritable()).not.toThrow();
      await log.flush();
      const stored = await rows(backend);
      expect(stored.map((r) => JSON.parse(r.body).call_id)).toEqual(['call-1', 'call-3']);
      await log.close();
      expect(await verifyLedger(engine, verifier)).toMatchObject({ ok: true, records: 2 });
    });
  });
}

contract('sqlite', sqliteBackend);
contract('postgres', postgresBackend, !pgListening);

describe('legacy audit.jsonl files', () => {
  it('still verify, and an edit in one is named by line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-legacy-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'audit.jsonl');
    let prev = GENESIS_HASH;
    const lines: string[] = [];
    for (let seq = 1; seq <= 4; seq += 1) {
      const draft = {
        v: 1,
        seq,
        ts: '2025-01-01T00:00:00.000Z',
        event: 'executed',
        call_id: `c${seq}`,
        principal: analyst,
        prev_hash: prev,
      };
      const hash = hashLegacyAuditRecord(draft);
      lines.push(JSON.stringify({ ...draft, hash }));
      prev = hash;
    }
    writeFileSync(file, `${lines.join('\n')}\n`);
    expect(await verifyAuditFile(file, verifier)).toMatchObject({ format: 'legacy', ok: true, records: 4 });
    writeFileSync(file, readFileSync(file, 'utf8').replace('"c3"', '"cx"'));
    expect(await verifyAuditFile(file, verifier)).toMatchObject({ format: 'legacy', ok: false, line: 3 });
  });
});
