/**
 * Configuration: one schema, sources in a fixed order, fail closed with every problem named.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, startupWarnings } from '../src/config.ts';
import { InvalidInputError } from '../src/errors.ts';
import { LIVE_ENV } from './helpers/live-env.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const file = (content: unknown) => {
  const path = join(dir, 'fraudgate.json');
  writeFileSync(path, JSON.stringify(content));
  return path;
};

const problems = (fn: () => unknown): string => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    return (error as Error).message;
  }
  throw new Error('expected the configuration to be refused');
};

describe('loadConfig', () => {
  it('rate limits follow the store: Redis on PostgreSQL unless memory is asked for, with a warning', () => {
    const fleet = { HOME: dir, FRAUDGATE_POSTGRES_URL: 'postgres://u:p@db:5432/f', FRAUDGATE_AUDIT_KEY: 'k' };
    const postgres = file({ store: 'postgres' });
    const refused = problems(() => loadConfig({ configFile: postgres, servesCalls: true }, fleet, dir));
    expect(refused).toContain('FRAUDGATE_REDIS_URL');
    expect(refused).toContain('rate_limits.store to memory');
    // A command that takes no calls (audit verify, approvals…) never rate-limits: it loads without Redis.
    expect(loadConfig({ configFile: postgres }, fleet, dir).config.rate_limits.store).toBe('redis');
    const shared = loadConfig(
      { configFile: postgres },
      { ...fleet, FRAUDGATE_REDIS_URL: 'redis://cache:6379' },
      dir,
    ).config;
    expect(shared.rate_limits.store).toBe('redis');
    expect(startupWarnings(shared)).toEqual([]);

    const perReplica = loadConfig(
      { configFile: file({ store: 'postgres', rate_limits: { store: 'memory' } }) },
      fleet,
      dir,
    ).config;
    expect(perReplica.rate_limits.store).toBe('memory');
    expect(startupWarnings(perReplica)).toEqual([expect.stringContaining('per replica')]);

    // One host: memory stays the default, and nothing to warn about.
    const single = loadConfig({}, { HOME: dir }, dir).config;
    expect(single.rate_limits.store).toBe('memory');
    expect(startupWarnings(single)).toEqual([]);
    // FRAUDGATE_STORE counts like the file's setting.
    expect(
      loadConfig({}, { ...fleet, FRAUDGATE_STORE: 'postgres', FRAUDGATE_REDIS_URL: 'redis://c:6379' }, dir)
        .config.rate_limits.store,
    ).toBe('redis');
  });

  it('store: postgres needs FRAUDGATE_POSTGRES_URL and one audit key for every replica; the old outbox key is refused', () => {
    const postgres = file({ store: 'postgres', store_postgres: { schema: 'fraud_ops' } });
    const message = problems(() => loadConfig({ configFile: postgres }, { HOME: dir }, dir));
    expect(message).toContain('FRAUDGATE_POSTGRES_URL');
    expect(message).toContain('FRAUDGATE_AUDIT_KEY');
    const { config, secrets } = loadConfig(
      { configFile: postgres },
      {
        HOME: dir,
        FRAUDGATE_POSTGRES_URL: 'postgres://u:p@db:5432/f',
        FRAUDGATE_AUDIT_KEY: 'k',
        FRAUDGATE_REDIS_URL: 'redis://cache:6379',
      },
      dir,
    );
    expect(config.store).toBe('postgres');
    expect(config.store_postgres.schema).toBe('fraud_ops');
    expect(secrets.postgresUrl).toBe('postgres://u:p@db:5432/f');
    expect(loadConfig({}, { HOME: dir }, dir).config.store).toBe('sqlite');

    const old = problems(() =>
      loadConfig({ configFile: file({ automation: { outbox_store: 'postgres' } }) }, { HOME: dir }, dir),
    );
    expect(old).toContain('automation.outbox_store');
    expect(old).toContain('"store" setting');
    expect(
      problems(() =>
        loadConfig({ configFile: file({ store_postgres: { schema: 'Bad-Name' } }) }, { HOME: dir }, dir),
      ),
    ).toContain('store_postgres.schema');
    // The pool: connections per replica, bounded; a misspelt key is refused, not ignored.
    expect(
      loadConfig({ configFile: file({ store_postgres: { pool_size: 32 } }) }, { HOME: dir }, dir).config
        .store_postgres.pool_size,
    ).toBe(32);
    for (const bad of [0, 101, 2.5, '8'])
      expect(
        problems(() =>
          loadConfig({ configFile: file({ store_postgres: { pool_size: bad } }) }, { HOME: dir }, dir),
        ),
      ).toContain('store_postgres.pool_size');
    expect(
      problems(() => loadConfig({ configFile: file({ store_postgres: { pool: 32 } }) }, { HOME: dir }, dir)),
    ).toContain('store_postgres: Unrecognized key: "pool"');
    expect(
      problems(() =>
        loadConfig({ configFile: file({ automation: { lease_ms: 120_000 } }) }, { HOME: dir }, dir),
      ),
    ).toContain('automation.lease_ms');
  });

  it('no credentials → sandbox mode, with the reason; a per-mode data dir under the home directory', () => {
    const { config, modeReason } = loadConfig({}, { HOME: dir }, dir);
    expect(config.mode).toBe('sandbox');
    expect(modeReason).toContain('no upstream credentials');
    expect(config.data_dir).toMatch(/\.fraudgate[/\\]sandbox$/);
  });

  it('all credentials → live; some but not all → refused, listing what is missing (never a silent sandbox)', () => {
    expect(loadConfig({}, LIVE_ENV, dir).config.mode).toBe('live');
    const message = problems(() => loadConfig({}, { SIFT_API_KEY: 'k', SALESFORCE_CLIENT_ID: 'id' }, dir));
    expect(message).toContain('Live mode is missing credentials');
    for (const name of ['SIFT_ACCOUNT_ID', 'SEGMENT_WRITE_KEY', 'SALESFORCE_CLIENT_SECRET'])
      expect(message).toContain(name);
  });

  it('any single upstream credential selects live mode and is refused until the rest are set', () => {
    for (const only of ['SEGMENT_PROFILE_TOKEN', 'SALESFORCE_CLIENT_SECRET', 'SIFT_ACCOUNT_ID']) {
      const message = problems(() => loadConfig({}, { [only]: 'x' }, dir));
      expect(message).toContain('Live mode is missing credentials');
      expect(message).toContain('SIFT_API_KEY');
    }
  });

  it('--sandbox wins over credentials', () => {
    expect(loadConfig({ sandbox: true }, LIVE_ENV, dir).config.mode).toBe('sandbox');
  });

  it('auth.jwt.human_claim: a claim name and optional values; an empty list or a misspelt key is refused, naming it', () => {
    const jwt = {
      issuer: 'https://idp.example.com/',
      jwks_url: 'https://idp.example.com/jwks',
      role_claim: 'role',
      subject_claim: 'sub',
    };
    const load = (human_claim: unknown) =>
      loadConfig({ configFile: file({ auth: { key_hashes: [], jwt: { ...jwt, human_claim } } }) }, {}, dir);
    expect(load({ name: 'email_verified', values: [true] }).config.auth.jwt?.human_claim).toEqual({
      name: 'email_verified',
      values: [true],
    });
    const withClaim = load({ name: 'uid' }).config;
    expect(withClaim.auth.jwt?.human_claim).toEqual({ name: 'uid' });
    expect(startupWarnings(withClaim)).toEqual([]);
    // Unset, start-up says a JWT without a machine marker counts as a person's, and what to set.
    const withoutClaim = loadConfig({ configFile: file({ auth: { key_hashes: [], jwt } }) }, {}, dir).config;
    expect(startupWarnings(withoutClaim)).toEqual([expect.stringContaining('auth.jwt.human_claim is unset')]);
    expect(problems(() => load({ name: 'idtyp', values: [] }))).toContain('auth.jwt.human_claim.values');
    expect(problems(() => load({ claim: 'idtyp' }))).toContain('auth.jwt.human_claim');
  });

  it('an unknown key is refused, naming it', () => {
    const message = problems(() =>
      loadConfig({ configFile: file({ approvals: { out_of_bnd: true } }) }, {}, dir),
    );
    expect(message).toContain('approvals');
    expect(message).toContain('out_of_bnd');
  });

  it('secrets in the file are refused: they come from the environment only', () => {
    const message = problems(() => loadConfig({ configFile: file({ sift: { api_key: 'oops' } }) }, {}, dir));
    expect(message).toContain('sift.api_key');
    expect(message).toContain('environment');
  });

  it('every problem is listed at once', () => {
    const message = problems(() =>
      loadConfig({ configFile: file({ risk_bands: { medium: 2 }, approvals: { ttl_ms: -1 } }) }, {}, dir),
    );
    expect(message).toContain('risk_bands.medium');
    expect(message).toContain('approvals.ttl_ms');
  });

  it('sources apply in order: defaults < file < environment < flags', () => {
    const path = file({ data_dir: 'from-file', sift: { timeout_ms: 1234 } });
    const fromFile = loadConfig({ configFile: path }, {}, dir).config;
    expect(fromFile.data_dir).toBe(join(dir, 'from-file'));
    expect(fromFile.sift.timeout_ms).toBe(1234);
    expect(loadConfig({ configFile: path }, { FRAUDGATE_DATA_DIR: 'from-env' }, dir).config.data_dir).toBe(
      join(dir, 'from-env'),
    );
    expect(
      loadConfig({ configFile: path, dataDir: 'from-flag' }, { FRAUDGATE_DATA_DIR: 'from-env' }, dir).config
        .data_dir,
    ).toBe(join(dir, 'from-flag'));
  });

  it("http request timeouts: whole milliseconds, the headers' at most the request's, else refused naming the field", () => {
    const loaded = loadConfig(
      { configFile: file({ http: { request_timeout_ms: 120_000, headers_timeout_ms: 20_000 } }) },
      {},
      dir,
    ).config.http;
    expect(loaded).toMatchObject({ request_timeout_ms: 120_000, headers_timeout_ms: 20_000 });
    const message = problems(() =>
      loadConfig(
        { configFile: file({ http: { request_timeout_ms: 5_000, headers_timeout_ms: 10_000 } }) },
        {},
        dir,
      ),
    );
    expect(message).toContain('http.headers_timeout_ms');
    expect(message).toContain('request_timeout_ms');
    expect(
      problems(() => loadConfig({ configFile: file({ http: { request_timeout_ms: 1.5 } }) }, {}, dir)),
    ).toContain('http.request_timeout_ms');
  });

  it('risk bands must increase', () => {
    const message = problems(() =>
      loadConfig({ configFile: file({ risk_bands: { medium: 0.7, high: 0.6, critical: 0.9 } }) }, {}, dir),
    );
    expect(message).toContain('risk_bands');
  });

  it('FRAUDGATE_READ_ONLY reads true/1/yes/on and false/0/no/off in any case; anything else is refused, naming it', () => {
    for (const value of ['true', 'TRUE', 'True', '1', 'yes', 'YES', 'on', ' On ']) {
      expect(loadConfig({}, { FRAUDGATE_READ_ONLY: value }, dir).config.read_only).toBe(true);
    }
    for (const value of ['false', 'FALSE', '0', 'no', 'No', 'off', 'OFF']) {
      expect(loadConfig({}, { FRAUDGATE_READ_ONLY: value }, dir).config.read_only).toBe(false);
    }
    for (const value of ['ture', 'enabled', 'y', '2', 'read-only']) {
      const message = problems(() => loadConfig({}, { FRAUDGATE_READ_ONLY: value }, dir));
      expect(message).toContain('FRAUDGATE_READ_ONLY');
      expect(message).toContain('true, 1, yes, on');
      expect(message).toContain('false, 0, no, off');
    }
  });

  it('FRAUDGATE_LOG_LEVEL takes debug, info, warn or error in any case; anything else is refused, naming it', () => {
    for (const value of ['debug', 'INFO', 'Warn', ' error ']) {
      expect(() => loadConfig({}, { FRAUDGATE_LOG_LEVEL: value }, dir)).not.toThrow();
    }
    for (const value of ['warning', 'verbose', 'WARNING', 'trace']) {
      const message = problems(() => loadConfig({}, { FRAUDGATE_LOG_LEVEL: value }, dir));
      expect(message).toContain('FRAUDGATE_LOG_LEVEL');
      expect(message).toContain('debug, info, warn, error');
    }
  });

  it('a bad value from a flag is reported under the flag, not as configuration', () => {
    const message = problems(() =>
      loadConfig({ toolsets: ['sift', 'foo'] }, { FRAUDGATE_HTTP_HOST: '127.0.0.1' }, dir),
    );
    expect(message).toContain('--toolsets');
    expect(message).not.toContain('(from configuration)');
  });

  it('a bad value from an environment variable is reported under the variable, not as configuration', () => {
    const port = problems(() => loadConfig({}, { FRAUDGATE_HTTP_PORT: 'abc' }, dir));
    expect(port).toContain('FRAUDGATE_HTTP_PORT');
    expect(port).not.toContain('(from configuration)');
    const store = problems(() => loadConfig({}, { FRAUDGATE_STORE: 'mysql' }, dir));
    expect(store).toContain('FRAUDGATE_STORE');
    // The same key from the file is still the file's.
    const fromFile = problems(() => loadConfig({ configFile: file({ http: { port: -1 } }) }, {}, dir));
    expect(fromFile).toContain('http.port');
    expect(fromFile).not.toContain('FRAUDGATE_HTTP_PORT');
  });

  it('a missing config file and invalid JSON are named', () => {
    expect(problems(() => loadConfig({ configFile: join(dir, 'nope.json') }, {}, dir))).toContain(
      'does not exist',
    );
    const path = join(dir, 'bad.json');
    writeFileSync(path, '{ not json');
    expect(problems(() => loadConfig({ configFile: path }, {}, dir))).toContain('not valid JSON');
  });
});
