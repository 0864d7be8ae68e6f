/**
 * Personal fields at rest (issue 13, item 5): AES-256-GCM under FRAUDGATE_DATA_KEY, bound to the
 * row and column they were written for; live mode refuses to start without a key.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createFieldCipher, loadDataKey, parseDataKey } from '../../src/store/field-crypto.ts';

const cipher = createFieldCipher(randomBytes(32));
const args = { user_id: 'u1', description: 'customer jo.doe@example.com called from +1 415 555 0191' };

describe('field encryption', () => {
  it('seals a value so nothing of it is readable, and opens it back', () => {
    const sealed = cipher.seal(args, 'approvals.args:apr_1');
    expect(sealed).toMatch(/^enc:v1:[0-9a-f]{8}:/);
    expect(sealed).not.toContain('jo.doe');
    expect(sealed).not.toContain('555');
    expect(cipher.open(sealed, 'approvals.args:apr_1')).toEqual(args);
    // A fresh IV each time: equal values do not give equal ciphertexts.
    expect(cipher.seal(args, 'approvals.args:apr_1')).not.toBe(sealed);
  });

  it('a sealed value moved to another row, or edited, does not open', () => {
    const sealed = cipher.seal(args, 'approvals.args:apr_1');
    expect(() => cipher.open(sealed, 'approvals.args:apr_2')).toThrow(/integrity/);
    const edited = sealed.slice(0, -4) + (sealed.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    expect(() => cipher.open(edited, 'approvals.args:apr_1')).toThrow(/integrity/);
  });

  it('another key is reported as such, and rows written before encryption still load', () => {
    const other = createFieldCipher(randomBytes(32));
    expect(() => other.open(cipher.seal(args, 'c'), 'c')).toThrow(/another data key/);
    expect(cipher.open(JSON.stringify(args), 'c')).toEqual(args);
  });

  it('the key comes from FRAUDGATE_DATA_KEY (hex or base64); live mode without it refuses to start', () => {
    const key = randomBytes(32);
    expect(parseDataKey(key.toString('hex'))).toEqual(key);
    expect(parseDataKey(key.toString('base64'))).toEqual(key);
    expect(() => parseDataKey('too-short')).toThrow(/FRAUDGATE_DATA_KEY/);
    const dir = mkdtempSync(join(tmpdir(), 'fraudgate-key-'));
    try {
      expect(() => loadDataKey({ data_dir: dir, mode: 'live' }, {})).toThrow(
        /FRAUDGATE_DATA_KEY.*required in live mode/,
      );
      expect(loadDataKey({ data_dir: dir, mode: 'live' }, { dataKey: key.toString('hex') })).toEqual(key);
      // The sandbox makes one, once, readable by the service account only.
      const generated = loadDataKey({ data_dir: dir, mode: 'sandbox' }, {});
      expect(loadDataKey({ data_dir: dir, mode: 'sandbox' }, {})).toEqual(generated);
      expect(statSync(join(dir, 'data.key')).mode & 0o777).toBe(0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
