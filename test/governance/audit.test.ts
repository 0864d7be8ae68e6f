import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  GENESIS_HASH,
  openAuditLog,
  readAuditRecords,
  verifyAuditFile,
  type AuditAppendInput,
  type AuditLog,
  type AuditRecord,
} from '../../src/governance/audit.ts';
import { FraudgateError } from '../../src/errors.ts';
import { createRedactor } from '../../src/governance/redact.ts';

const run = promisify(execFile);
const redactor = createRedactor({ hashKey: 'audit-test-key' });
const analyst = { id: 'analyst@corp.test', kind: 'user', role: 'analyst' } as const;

let dir: string;
let file: string;
const opened: AuditLog[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fraudgate-audit-'));
  file = join(dir, 'audit.jsonl');
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((log) => log.close()));
  await rm(dir, { recursive: true, force: true });
});

async function openLog(
  path = file,
  extra: { lockTimeoutMs?: number; now?: () => Date } = {},
): Promise<AuditLog> {
  const log = await openAuditLog(path, { redactor, ...extra });
  opened.push(log);
  return log;
}

function entry(n: number, extra: Partial<AuditAppendInput> = {}): AuditAppendInput {
  return { event: 'attempt', call_id: `call-${n}`, tool: 'get_user_score', principal: analyst, ...extra };
}

async function writeRecords(count: number): Promise<AuditRecord[]> {
  const log = await openLog();
  const records: AuditRecord[] = [];
  for (let i = 1; i <= count; i += 1) records.push(await log.append(entry(i)));
  return records;
}

async function lines(): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').slice(0, -1);
}

async function writeLines(list: string[]): Promise<void> {
  await writeFile(file, list.map((l) => `${l}\n`).join(''));
}

describe('audit chain', () => {
  it('chains records from genesis and verifies an intact file', async () => {
    const records = await writeRecords(5);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(records[0]?.prev_hash).toBe(GENESIS_HASH);
    expect(records[1]?.prev_hash).toBe(records[0]?.hash);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, records: 5, last_hash: records[4]?.hash });
  });

  it('verifies an empty file', async () => {
    await openLog();
    expect(await verifyAuditFile(file)).toEqual({ ok: true, records: 0, last_hash: GENESIS_HASH });
  });

  it('finds an edited field at its line', async () => {
    await writeRecords(4);
    const list = await lines();
    list[2] = list[2]!.replace('"call-3"', '"call-x"');
    await writeLines(list);
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 3,
      records: 2,
      reason: expect.stringMatching(/hash mismatch/),
    });
  });

  it('finds an edit whose own hash was recomputed at the next line', async () => {
    await writeRecords(4);
    const list = await lines();
    const record = JSON.parse(list[1]!) as AuditRecord;
    const { hashAuditRecord } = await import('../../src/governance/audit.ts');
    const forged = { ...record, tool: 'suppress_user' };
    list[1] = JSON.stringify({ ...forged, hash: hashAuditRecord(forged) });
    await writeLines(list);
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 3,
      reason: expect.stringMatching(/prev_hash/),
    });
  });

  it('finds a deleted middle line', async () => {
    await writeRecords(5);
    const list = await lines();
    list.splice(2, 1);
    await writeLines(list);
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 3,
      reason: expect.stringMatching(/deleted or reordered/),
    });
  });

  it('finds a deleted first line', async () => {
    await writeRecords(3);
    await writeLines((await lines()).slice(1));
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 1 });
  });

  it('finds two swapped lines', async () => {
    await writeRecords(5);
    const list = await lines();
    [list[1], list[2]] = [list[2]!, list[1]!];
    await writeLines(list);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 2 });
  });

  it('finds a renumbered reordering through prev_hash', async () => {
    await writeRecords(3);
    const list = (await lines()).map((l) => JSON.parse(l) as AuditRecord);
    const swapped = [list[1]!, list[0]!, list[2]!].map((r, i) => JSON.stringify({ ...r, seq: i + 1 }));
    await writeLines(swapped);
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 1,
      reason: expect.stringMatching(/prev_hash/),
    });
  });

  it('finds a truncated last line, and refuses to append after it', async () => {
    const log = await openLog();
    for (let i = 1; i <= 3; i += 1) await log.append(entry(i));
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.slice(0, -20));
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 3, records: 2 });
    await expect(log.append(entry(4))).rejects.toThrow(/damaged/);
    await expect(openAuditLog(file, { redactor })).rejects.toThrow(/damaged/);
  });

  it('finds a line that is not JSON or a blank line', async () => {
    await writeRecords(3);
    const list = await lines();
    await writeLines([list[0]!, '', list[1]!]);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 2, reason: 'empty line' });
    await writeLines([list[0]!, '{"v":1,', list[1]!]);
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 2,
      reason: expect.stringMatching(/JSON/),
    });
  });

  it('resumes the chain after the log is reopened', async () => {
    const first = await writeRecords(2);
    const again = await openLog();
    const next = await again.append(entry(3));
    expect(next.seq).toBe(3);
    expect(next.prev_hash).toBe(first[1]?.hash);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 3 });
  });

  it('handles records longer than the tail read chunk', async () => {
    const log = await openLog();
    await log.append(entry(1, { detail: 'x'.repeat(200_000) }));
    await log.append(entry(2, { detail: 'y'.repeat(150_000) }));
    const reopened = await openLog();
    expect((await reopened.append(entry(3))).seq).toBe(3);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 3 });
  });
});

describe('audit concurrency', () => {
  it('keeps 200 parallel appends on one log in call order', async () => {
    const log = await openLog();
    const records = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(entry(i + 1))));
    expect(records.map((r) => r.call_id)).toEqual(records.map((_, i) => `call-${i + 1}`));
    expect(records.map((r) => r.seq)).toEqual(records.map((_, i) => i + 1));
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 200 });
  });

  it('keeps the chain when two log instances append to one file at once', async () => {
    const a = await openLog();
    const b = await openLog();
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => [
        a.append(entry(i, { tool: 'a' })),
        b.append(entry(i, { tool: 'b' })),
      ]).flat(),
    );
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 200 });
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('keeps the chain when separate processes append to one file', async () => {
    const moduleUrl = pathToFileURL(join(import.meta.dirname, '../../src/governance/audit.ts')).href;
    const redactUrl = pathToFileURL(join(import.meta.dirname, '../../src/governance/redact.ts')).href;
    const script = `
      const { openAuditLog } = await import(${JSON.stringify(moduleUrl)});
      const { createRedactor } = await import(${JSON.stringify(redactUrl)});
      const log = await openAuditLog(process.argv[1], { redactor: createRedactor({ hashKey: 'k' }) });
      await Promise.all(Array.from({ length: 50 }, (_, i) =>
        log.append({ event: 'executed', call_id: 'child-' + process.pid + '-' + i, principal: { id: 'cli', kind: 'user' } })));
      await log.close();
    `;
    const child = () =>
      run(process.execPath, ['--no-warnings', '--input-type=module', '-e', script, file], {
        timeout: 20_000,
      });
    const parent = await openLog();
    await Promise.all([child(), child(), ...Array.from({ length: 50 }, (_, i) => parent.append(entry(i)))]);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 150 });
  });
});

describe('audit durability and locking', () => {
  it('rejects opening a log whose directory cannot be created', async () => {
    await writeFile(join(dir, 'not-a-dir'), '');
    await expect(openAuditLog(join(dir, 'not-a-dir', 'audit.jsonl'), { redactor })).rejects.toThrow();
  });

  it('rejects an append that cannot be written, and records nothing', async () => {
    const log = await openLog();
    await log.append(entry(1));
    const saved = await readFile(file);
    await rm(file);
    await mkdir(file); // the path is now unwritable as a file, even for root
    const failure = await log.append(entry(2)).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(FraudgateError);
    expect((failure as FraudgateError).code).toBe('INTERNAL');
    expect(existsSync(`${file}.lock`)).toBe(false);
    await rm(file, { recursive: true });
    await writeFile(file, saved);
    expect((await log.append(entry(3))).seq).toBe(2);
  });

  it('waits for a live lock holder and then gives up with a retryable error', async () => {
    const log = await openLog(file, { lockTimeoutMs: 150 });
    await writeFile(`${file}.lock`, `${process.pid}\n${hostname()}\n`);
    const failure = await log.append(entry(1)).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(FraudgateError);
    expect((failure as FraudgateError).retryable).toBe(true);
    await rm(`${file}.lock`);
    expect((await log.append(entry(2))).seq).toBe(1);
  });

  it('breaks a lock left by a process that has died', async () => {
    const { stdout } = await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const log = await openLog(file, { lockTimeoutMs: 2_000 });
    await writeFile(`${file}.lock`, `${stdout}\n${hostname()}\n`);
    expect((await log.append(entry(1))).seq).toBe(1);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it('rejects appends after close and unknown events', async () => {
    const log = await openLog();
    await expect(log.append({ ...entry(1), event: 'bogus' as 'attempt' })).rejects.toThrow(/event/);
    await log.close();
    await expect(log.append(entry(2))).rejects.toThrow(/closed/);
  });
});

describe('audit content', () => {
  it('redacts arguments, target, detail and outcome message before hashing and writing', async () => {
    const log = await openLog(file, { now: () => new Date('2025-01-02T03:04:05.000Z') });
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
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain('jane.doe@example.com');
    expect(text).not.toContain('7946 0958');
    expect(text).not.toContain('203.0.113.7');
    expect(text).not.toContain('sk_live_1');
    expect(record).toMatchObject({
      v: 1,
      ts: '2025-01-02T03:04:05.000Z',
      principal: analyst,
      args_hash: 'a'.repeat(64),
      args_redacted: { reason: 'fraud', api_key: '[REDACTED]' },
      upstream: [{ service: 'sift', request_id: 'req-1', latency_ms: 12, status: 400 }],
      duration_ms: 15,
    });
    expect(record.target).toBe(`sift_user:j***@example.com#${redactor.hashPersonal('jane.doe@example.com')}`);
    expect(JSON.parse(text.trim())).toEqual(record);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 1 });
  });

  it('reads records back with filters, and refuses to read past a damaged line', async () => {
    let clock = Date.parse('2025-01-01T00:00:00.000Z');
    const log = await openLog(file, { now: () => new Date((clock += 60_000)) });
    await log.append(entry(1));
    await log.append(entry(2, { event: 'approval_requested', approval_id: 'apr-1' }));
    await log.append(
      entry(3, { event: 'approved', approval_id: 'apr-1', principal: { id: 'lead', kind: 'user' } }),
    );
    const collect = async (filter: Parameters<typeof readAuditRecords>[1]) => {
      const out: string[] = [];
      for await (const r of readAuditRecords(file, filter)) out.push(r.call_id);
      return out;
    };
    expect(await collect({})).toEqual(['call-1', 'call-2', 'call-3']);
    expect(await collect({ approval_id: 'apr-1' })).toEqual(['call-2', 'call-3']);
    expect(await collect({ event: ['attempt', 'approved'] })).toEqual(['call-1', 'call-3']);
    expect(await collect({ principal_id: 'lead' })).toEqual(['call-3']);
    expect(
      await collect({ since: '2025-01-01T00:02:00.000Z', until: new Date('2025-01-01T00:03:00.000Z') }),
    ).toEqual(['call-2']);
    await writeFile(file, (await readFile(file, 'utf8')).slice(0, -5));
    await expect(collect({})).rejects.toThrow(/line 3/);
  });
});
