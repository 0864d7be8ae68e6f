/**
 * CLI conventions and start-up failures, through the real `fraudgate` command in a child process:
 * help on stdout with a line per command and option (exit 0), --version, usage errors exit 2,
 * runtime and start-up failures exit 1 with one line and no stack (and no process left running),
 * and a private data directory (0700, files 0600).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.ts';
import { openStore } from '../../src/store/store.ts';
import { VERSION } from '../../src/version.ts';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
/** Each test starts the CLI once or twice; on a loaded machine a cold start takes seconds. */
const SLOW = 120_000;
let dir: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI; a process still alive after `timeoutMs` is killed and reported as code null (a hang). */
function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        timeout: timeoutMs,
        env: { PATH: process.env.PATH ?? '', HOME: dir, FRAUDGATE_DATA_DIR: join(dir, 'data'), ...env },
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: number; killed?: boolean }) | null;
        resolve({ code: e ? (e.killed ? null : (e.code ?? 1)) : 0, stdout, stderr });
      },
    ).stdin?.end();
  });
}

/** One line, no stack trace. */
function expectOneLine(stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n');
  expect(lines.at(-1)).toMatch(pattern);
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr).not.toContain('internal error');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('help and version', { timeout: SLOW }, () => {
  it('--help prints every command with a description on stdout and exits 0', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    for (const command of ['serve', 'approvals', 'audit', 'identities', 'outbox', 'sync', 'docs', 'help']) {
      expect(run.stdout).toMatch(new RegExp(`^  ${command} +\\S.{10,}$`, 'm'));
    }
    expect(run.stdout).toMatch(/^\s+-v, --version\s+print the version$/m);
  });

  it('`<command> --help` and `help <command>` print its usage and a line per option', async () => {
    const run = await cli(['approvals', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('fraudgate approvals approve ID [--reason TEXT]');
    expect(run.stdout).toContain('FRAUDGATE_APPROVER_TOKEN');
    for (const option of ['--all', '--json', '--reason TEXT', '--config FILE', '--data-dir DIR']) {
      expect(run.stdout).toMatch(new RegExp(`^\\s+${option.replace(/[-]/g, '\\-')} +\\S`, 'm'));
    }
    const viaHelp = await cli(['help', 'approvals']);
    expect(viaHelp).toEqual(run);
  });

  it('a value name with a hyphen (ISO-TIME) stands beside its option, the text aligned with the rest', async () => {
    const run = await cli(['audit', '--help']);
    expect(run.code).toBe(0);
    const since = /^( +--since ISO-TIME +)export from this time/m.exec(run.stdout);
    const file = /^( +--file PATH +)the file to read/m.exec(run.stdout);
    expect(since?.[1]?.length).toBe(file?.[1]?.length);
  });

  it('serve --help names every toolset --toolsets accepts, core included', async () => {
    const run = await cli(['serve', '--help']);
    expect(run.stdout).toMatch(
      /--toolsets LIST +comma-separated toolsets to expose: sift,segment,salesforce,triage \(core,/,
    );
  });

  it('--version prints the package version and exits 0', async () => {
    const run = await cli(['--version']);
    expect(run).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });
});

describe('usage errors exit 2 and point to --help', { timeout: SLOW }, () => {
  it.each([
    [['bogus'], /unknown command 'bogus'/],
    [['--bogus'], /Unknown option '--bogus'$/m],
    [['approvals', '--port', '1'], /approvals does not take --port/],
    [['approvals', 'deny', 'apr_x'], /--reason: a reason is required to deny/],
    [['outbox', 'retry'], /ID: an outbox effect id/],
  ])('%j', async (args, message) => {
    const run = await cli(args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toMatch(/Run `fraudgate .*--help`/);
    expect(run.stderr).not.toContain('To specify a positional argument');
  });

  it.each<[string[], string, RegExp]>([
    [['serve', '--http', '--port', 'abc'], 'serve', /^fraudgate: .*--port: 'abc' is not a port/m],
    [['serve', '--http', '--port', ''], 'serve', /^fraudgate: .*--port: '' is not a port/m],
    [['--port', '65536'], 'serve', /^fraudgate: .*--port: '65536' is not a port/m],
    [['audit', 'export', '--since'], 'audit', /^fraudgate: Option '--since <value>' argument missing$/m],
    [['outbox', 'show', ''], 'outbox', /^fraudgate: .*ID: '' is not an outbox effect id/m],
    [['outbox', 'show', '0'], 'outbox', /^fraudgate: .*ID: '0' is not an outbox effect id/m],
    [['outbox', 'list', '--limit', '0'], 'outbox', /^fraudgate: .*--limit: '0' is not a positive/m],
    [['jobs', 'bogus'], 'jobs', /^fraudgate: .*unexpected 'bogus': jobs takes no arguments/m],
    [
      ['serve', '--toolsets', 'sift,foo'],
      'serve',
      /^fraudgate: .*--toolsets: 'foo' is not one of core, sift, segment, salesforce, triage/m,
    ],
    ...['', ',', ' , '].map(
      (list) =>
        [
          ['serve', '--toolsets', list],
          'serve',
          /^fraudgate: .*--toolsets: no toolset given: name at least one of core, sift/m,
        ] as [string[], string, RegExp],
    ),
    [['budgets', 'lift', 'a'], 'budgets', /^fraudgate: .*KEY: which budget key/m],
    [['budgets', 'lift'], 'budgets', /^fraudgate: .*PRINCIPAL: whose budget.*KEY: which budget key/m],
    ...['approvals', 'identities', 'outbox', 'budgets', 'docs', 'sync', 'audit', 'sandbox'].map(
      (command) =>
        [
          [command, 'bogus'],
          command,
          new RegExp(`^fraudgate: .*unknown ${command} command 'bogus' \\(expected `, 'm'),
        ] as [string[], string, RegExp],
    ),
    [['approvals'], 'approvals', /^fraudgate: .*approvals needs a command: list, show, approve or deny$/m],
  ])('%j names what is wrong and points to `fraudgate %s --help`', async (args, command, message) => {
    const run = await cli(args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(message);
    expect(run.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`^Run \`fraudgate ${command} --help\``));
  });
});

describe('runtime and start-up failures: one line, exit 1, nothing left running', { timeout: SLOW }, () => {
  it('outbox work in sandbox mode: refused as a runtime failure (exit 1), as its help says', async () => {
    const run = await cli(['outbox', 'work', '--once']);
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /^fraudgate: outbox work needs the upstream APIs .*in sandbox mode run serve --http/,
    );
    const help = await cli(['outbox', '--help']);
    expect(help.stdout).toMatch(/work needs the upstream APIs: in sandbox mode it is refused \(exit 1\)/);
  });

  it('an unknown FRAUDGATE_LOG_LEVEL names the variable', async () => {
    const run = await cli(['approvals', 'list'], { FRAUDGATE_LOG_LEVEL: 'warning' });
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /FRAUDGATE_LOG_LEVEL: is not a log level; set it to one of debug, info, warn, error/,
    );
  });

  it('a config file with schema errors and a misspelt policy key: every problem in one run', async () => {
    const file = join(dir, 'two-pass.json');
    writeFileSync(
      file,
      JSON.stringify({
        aproval: 1,
        risk_bands: { medium: 'x' },
        approvals: { tools: { apply_lable: 'none' } },
      }),
    );
    const run = await cli(['jobs', '--config', file]);
    expect(run.code).toBe(1);
    expectOneLine(run.stderr, /^fraudgate: Invalid configuration: /);
    expect(run.stderr).toContain('risk_bands.medium');
    expect(run.stderr).toContain('"aproval"');
    expect(run.stderr).toMatch(
      /approvals\.tools\.apply_lable: unknown tool or approval key; known: .*apply_label/,
    );
  });

  it('a FRAUDGATE_HTTP_PORT that is not a number names the variable and the valid range, as --port does', async () => {
    const run = await cli(['serve', '--http'], { FRAUDGATE_HTTP_PORT: 'abc' });
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /^fraudgate: Invalid configuration: FRAUDGATE_HTTP_PORT: 'abc' is not a port: .*from 1 to 65535, or 0 for any free port$/,
    );
    expect(run.stderr).not.toContain('NaN');
  });

  it('a missing file', async () => {
    const run = await cli(['audit', 'verify', '--file', join(dir, 'nonexistent.jsonl')]);
    expect(run.code).toBe(1);
    expectOneLine(run.stderr, /^fraudgate: .*nonexistent\.jsonl: no such file or directory$/);
  });

  describe('a busy port', () => {
    let busy: Server;
    let port: number;
    beforeAll(async () => {
      busy = createServer();
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
      port = (busy.address() as { port: number }).port;
    });
    afterAll(() => new Promise<void>((resolve) => busy.close(() => resolve())));

    it('names the setting and exits instead of hanging', async () => {
      const run = await cli(['serve', '--http', '--port', String(port)]);
      expect(run.code).toBe(1);
      expectOneLine(
        run.stderr,
        new RegExp(
          `^fraudgate: port ${port} on 127\\.0\\.0\\.1 is already in use: .*--port or FRAUDGATE_HTTP_PORT`,
        ),
      );
    });
  });

  it('a port held by another fraudgate serve on the same data dir: the port line, not a replica-id twin', async () => {
    // The first server's default replica id is host:port; the second must not take the busy port for a twin.
    const dataDir = join(dir, 'busy-port');
    // A fixed port (with 0 the id would carry the pid): one that was free a moment ago.
    const free = createServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const port = String((free.address() as { port: number }).port);
    await new Promise<void>((resolve) => free.close(() => resolve()));
    const first = spawn(process.execPath, [CLI, 'serve', '--http', '--port', port], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: dir,
        FRAUDGATE_DATA_DIR: dataDir,
        FRAUDGATE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      let stderr = '';
      await new Promise<void>((resolve, reject) => {
        first.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          if (stderr.includes('MCP endpoint')) resolve();
        });
        first.once('exit', () => reject(new Error(`the first server exited: ${stderr}`)));
      });
      // The same port by flag: the default replica id is the first server's too.
      const run = await cli(['serve', '--http', '--port', port], { FRAUDGATE_DATA_DIR: dataDir });
      expect(run.code).toBe(1);
      expectOneLine(
        run.stderr,
        new RegExp(
          `^fraudgate: port ${port} on 127\\.0\\.0\\.1 is already in use: .*--port or FRAUDGATE_HTTP_PORT`,
        ),
      );
      expect(run.stderr).not.toContain('replica id');
    } finally {
      first.kill('SIGTERM');
      await new Promise((resolve) => first.once('exit', resolve));
    }
  });

  it('an unreachable Redis names FRAUDGATE_REDIS_URL', async () => {
    writeFileSync(join(dir, 'redis.json'), JSON.stringify({ rate_limits: { store: 'redis' } }));
    const run = await cli(['serve', '--config', join(dir, 'redis.json')], {
      FRAUDGATE_REDIS_URL: 'redis://:hunter2@127.0.0.1:1',
    });
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /^fraudgate: Redis at 127\.0\.0\.1:1 does not answer \(ECONNREFUSED\): .*FRAUDGATE_REDIS_URL/,
    );
    expect(run.stderr).not.toContain('hunter2');
  });

  it('an unreachable PostgreSQL names FRAUDGATE_POSTGRES_URL', async () => {
    writeFileSync(
      join(dir, 'pg.json'),
      JSON.stringify({
        store: 'postgres',
        store_postgres: { startup_timeout_ms: 500 },
        rate_limits: { store: 'memory' },
      }),
    );
    const run = await cli(['serve', '--http', '--port', '0', '--config', join(dir, 'pg.json')], {
      FRAUDGATE_POSTGRES_URL: 'postgres://fraudgate:hunter2@127.0.0.1:1/fraudgate',
      FRAUDGATE_AUDIT_KEY: 'k',
    });
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /^fraudgate: PostgreSQL at 127\.0\.0\.1:1 does not answer \(ECONNREFUSED\): .*FRAUDGATE_POSTGRES_URL/,
    );
    expect(run.stderr).not.toContain('hunter2');
    // Rate limits in memory on PostgreSQL are accepted when asked for, and said to be per replica.
    expect(run.stderr).toContain('rate limits (and the refusal budget) are per replica');
  });

  it('a data directory that cannot be created names FRAUDGATE_DATA_DIR', async () => {
    writeFileSync(join(dir, 'a-file'), '');
    const run = await cli(['approvals', 'list'], { FRAUDGATE_DATA_DIR: join(dir, 'a-file', 'data') });
    expect(run.code).toBe(1);
    expectOneLine(
      run.stderr,
      /^fraudgate: cannot use the data directory .*a-file\/data \(ENOTDIR\): set FRAUDGATE_DATA_DIR or --data-dir/,
    );
  });
});

describe('the data directory is private', { timeout: SLOW }, () => {
  it('directory 0700; database, WAL, audit log and key 0600, also when it existed with looser modes', async () => {
    const dataDir = join(dir, 'private');
    const stdio = await cli(['approvals', 'list'], { FRAUDGATE_DATA_DIR: dataDir });
    expect(stdio.code).toBe(0);
    // A serve that fails late (busy port) has still opened the database and the audit log.
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    writeFileSync(join(dataDir, 'loose.txt'), 'x', { mode: 0o644 });
    await cli(['serve', '--http', '--port', String((busy.address() as { port: number }).port)], {
      FRAUDGATE_DATA_DIR: dataDir,
    });
    busy.close();
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    const files = readdirSync(dataDir);
    expect(files).toEqual(expect.arrayContaining(['fraudgate.db', 'audit.key', 'loose.txt']));
    for (const file of files)
      expect([file, statSync(join(dataDir, file)).mode & 0o777]).toEqual([file, 0o600]);
  });
});

describe('outbox show: text by default, JSON with --json', { timeout: SLOW }, () => {
  it('prints the effect for people (UTC times, not epoch ms) and the same data as JSON on request', async () => {
    const dataDir = join(dir, 'outbox');
    mkdirSync(dataDir, { mode: 0o700 });
    const opened = await openStore({ ...DEFAULTS, data_dir: dataDir }, {});
    const store = opened.outbox;
    const decided = Date.parse('2026-03-04T05:06:00Z');
    await store.enqueueRouted(
      {
        entityType: 'user',
        entityId: 'sandbox-watch',
        decisionId: 'watch_user_payment_abuse',
        time: decided,
      },
      [{ effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: 'sandbox-watch' } }],
      decided,
    );
    const [effect] = await store.list({ states: [], limit: 1 });
    await opened.close();

    const text = await cli(['outbox', 'show', String(effect!.id)], { FRAUDGATE_DATA_DIR: dataDir });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^effect ${effect!.id} {2}pending$`, 'm'));
    expect(text.stdout).toMatch(/^ {2}action: +sync_decision_to_segment \(segment\)$/m);
    expect(text.stdout).toContain('watch_user_payment_abuse on user sandbox-watch at 2026-03-04 05:06 UTC');
    expect(text.stdout).not.toContain(String(decided));

    const json = await cli(['outbox', 'show', String(effect!.id), '--json'], { FRAUDGATE_DATA_DIR: dataDir });
    expect(JSON.parse(json.stdout)).toMatchObject({
      effect: { id: effect!.id, tool: 'sync_decision_to_segment', state: 'pending' },
      event: { decisionId: 'watch_user_payment_abuse', time: decided },
    });
  });
});

describe('outbox list: says when there are more than it shows', { timeout: SLOW }, () => {
  it('the newest 500 by default, a line on stderr naming how many there are and --limit', async () => {
    const dataDir = join(dir, 'outbox-many');
    mkdirSync(dataDir, { mode: 0o700 });
    const opened = await openStore({ ...DEFAULTS, data_dir: dataDir }, {});
    const store = opened.outbox;
    for (let u = 0; u < 501; u += 1) {
      await store.enqueueRouted(
        { entityType: 'user', entityId: `fg_many_${u}`, decisionId: 'block_user_payment_abuse', time: u },
        [{ effect: 'segment', tool: 'sync_decision_to_segment', args: { user_id: `fg_many_${u}` } }],
      );
    }
    for (const effect of await store.claim('test', 1000, 60_000)) {
      await store.deadLetter(effect.id, 'test', 'UPSTREAM_ERROR: 400');
    }
    await opened.close();
    const effectLines = (stdout: string) =>
      stdout.split('\n').filter((l) => /^ *\d+ {2}dead /.test(l)).length;

    const capped = await cli(['outbox', 'list'], { FRAUDGATE_DATA_DIR: dataDir });
    expect(capped.code).toBe(0);
    expect(effectLines(capped.stdout)).toBe(500);
    expect(capped.stderr).toBe(
      'fraudgate: listed the newest 500 of 501 effects needing attention (dead, denied, awaiting approval); --limit N lists more, fraudgate outbox show ID shows one\n',
    );

    const all = await cli(['outbox', 'list', '--limit', '501'], { FRAUDGATE_DATA_DIR: dataDir });
    expect(all.code).toBe(0);
    expect(effectLines(all.stdout)).toBe(501);
    expect(all.stderr).toBe('');
  });
});
