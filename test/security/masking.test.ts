/**
 * Masking that holds (issue 13, item 5): realistic free-text variants of phone numbers, IP
 * addresses and emails — international formats, zero-padded IPv4, IPv6, Unicode local parts — are
 * masked by the one redactor that audit records and logs share, and stay masked when redacted again.
 */
import { describe, expect, it } from 'vitest';
import { createRedactor } from '../../src/governance/redact.ts';

const redactor = createRedactor({ hashKey: 'masking-test-key' });
const mask = (text: string) => String(redactor.redactValue(text));
/** What is left to read once the keyed tags (`#a1b2c3d4`) are taken out. */
const readable = (text: string) => mask(text).replace(/#[0-9a-f]{8}/g, '');
const digits = (text: string) => text.replace(/\D/g, '');

const PHONES = [
  '1-415-555-0191',
  'call+14155550192',
  '(415) 555-0193',
  '06 12 34 56 78',
  '+1 415 555 0191',
  '+14155550191',
  '+1-415-555-0199',
  '+1 (415) 555-0100',
  '415-555-0100',
  '415.555.0100',
  '415 555 0100',
  'tel:+14155550100',
  '+44 20 7946 0958',
  '+44 (0)20 7946 0958',
  '020 7946 0958',
  '07700 900123',
  '+33 6 12 34 56 78',
  '+49 30 901820',
  '+91 98765 43210',
  '+81-3-1234-5678',
  '+61 2 9876 5432',
  '+55 11 98765-4321',
];

const IPS = [
  '203.0.113.77',
  '203.000.113.077',
  '010.001.002.003',
  '2001:db8::1',
  '2001:0db8:0000:0000:0000:ff00:0042:8329',
  '2001:DB8:85A3::8A2E:370:7334',
  '::ffff:203.0.113.9',
  '[2001:db8::5]:443',
  'fe80::1ff:fe23:4567:890a',
];

const EMAILS = [
  'zq.leak.7731@probe-mail.example',
  'josé.garcía@example.com',
  'Ana.Analyst@Example.COM',
  'ÅSA.Öberg@exämple.se',
  'müller+fraud@post.example.de',
  "o'brien@example.ie",
  'user_name-1@sub.example.co.uk',
  '李雷@例子.公司',
];

describe('masking', () => {
  it.each(PHONES)('phone %s keeps at most its last two digits readable', (phone) => {
    for (const text of [phone, `customer said to call ${phone} after lunch`]) {
      const left = readable(text);
      expect(left).not.toContain(phone);
      expect(digits(left).length, left).toBeLessThanOrEqual(4);
    }
  });

  it.each(IPS)('IP address %s is masked', (ip) => {
    const left = readable(`login from ${ip} flagged`);
    const bare = ip.replace(/^\[|\]:\d+$/g, '');
    expect(left).not.toContain(bare);
    expect(left.toLowerCase()).not.toContain(bare.toLowerCase());
    // The host part is gone: the last group of the address is not readable.
    const last = bare.split(/[.:]/).pop()!;
    expect(left.split(/\s+/)[2]).not.toMatch(new RegExp(`${last}$`, 'i'));
  });

  it('a zero-padded IPv4 address gets the same keyed tag as its plain form', () => {
    expect(mask('203.000.113.077')).toBe(mask('203.0.113.77'));
  });

  it.each(EMAILS)('email %s keeps only its first character and domain readable', (email) => {
    const at = email.lastIndexOf('@');
    const local = email.slice(0, at);
    const left = readable(`write to ${email} today`);
    expect(left).not.toContain(local);
    expect(left).not.toContain(Array.from(local).slice(1).join(''));
    expect(left).toContain(`${Array.from(local)[0]}***@`);
  });

  it('masking is idempotent on every variant (layers may redact again)', () => {
    for (const text of [...PHONES, ...IPS, ...EMAILS]) {
      const once = mask(`x ${text} y`);
      expect(redactor.redactValue(once)).toBe(once);
    }
  });

  it('leaves ids, timestamps, dates and amounts alone', () => {
    for (const text of [
      '2026-11-30',
      '1700000000123',
      '12345.67',
      '+12345.67',
      'txn_4155550100',
      'v1.2.3',
      'case 00001234',
    ]) {
      expect(mask(text)).toBe(text);
    }
  });
});
