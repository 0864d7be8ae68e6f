import { describe, expect, it } from 'vitest';
import { ARGUMENT_LIMITS } from '../../src/governance/input-bounds.ts';
import { REDACTED, canonicalJson, createRedactor, sha256Hex } from '../../src/governance/redact.ts';

const redactor = createRedactor({ hashKey: 'test-key-1' });
const tag = (value: string): string => `#${redactor.hashPersonal(value)}`;

describe('createRedactor: free text', () => {
  it('masks an email, keeping the first letter and the domain, tagged with the keyed hash', () => {
    const out = redactor.redactValue('Customer jane.doe@example.com wrote in');
    expect(out).toBe(`Customer j***@example.com${tag('jane.doe@example.com')} wrote in`);
  });

  it('masks IPv4 to its /24 and IPv6 to its /48, IPv4-mapped IPv6 like IPv4', () => {
    expect(redactor.redactValue('from 203.0.113.7.')).toBe(`from 203.0.113.x${tag('203.0.113.7')}.`);
    expect(redactor.redactValue('via 2001:db8:85a3::8a2e:370:7334')).toBe(
      `via 2001:db8:85a3::x${tag('2001:db8:85a3::8a2e:370:7334')}`,
    );
    expect(redactor.redactValue('via ::ffff:198.51.100.4')).toBe(
      `via ::ffff:198.51.100.x${tag('::ffff:198.51.100.4')}`,
    );
  });

  it('masks an IPv6 address right after a `word:` label (client:, peer:) as it does after a space', () => {
    for (const address of ['2001:db8:1:2::7', '::1', 'fe80::1', '2001:db8:1:2:3:4:5:6']) {
      const masked = `${redactor.redactValue(`via ${address}`)}`.slice('via '.length);
      expect(redactor.maskIp(address)).toBe(masked);
      for (const label of ['client', 'peer']) {
        expect(redactor.redactValue(`${label}:${address}`)).toBe(`${label}:${masked}`);
        expect(redactor.redactValue(`${label}:${masked}`)).toBe(`${label}:${masked}`);
      }
    }
    // A label of hex digits before a full address (with fewer groups the whole would be one address).
    const full = '2001:db8:1:2:3:4:5:6';
    expect(redactor.redactValue(`dead:${full}`)).toBe(`dead:${redactor.maskIp(full)}`);
    // Still never from the middle of a token.
    expect(redactor.redactValue('1:2:3:4:5:6:7:8:9')).toBe('1:2:3:4:5:6:7:8:9');
    expect(redactor.redactValue('2024-05-01T12:34:56+01:00')).toBe('2024-05-01T12:34:56+01:00');
  });

  it('masks an IPv6 address after a host name, an IPv4 address or a digit-first label too', () => {
    const address = '2001:db8::1';
    const masked = redactor.maskIp(address);
    for (const label of ['host.example.com', 'remote.addr', '9x', 'db-1.internal']) {
      expect(redactor.redactValue(`${label}:${address}`)).toBe(`${label}:${masked}`);
    }
    expect(redactor.redactValue(`203.0.113.7:${address}`)).toBe(
      `${redactor.maskIp('203.0.113.7')}:${masked}`,
    );
    // Not an address after the label: unchanged.
    for (const text of ['host.example.com:8443', 'remote.addr:dead:beef', 'v1.2:abc', '12:30:45.123']) {
      expect(redactor.redactValue(text)).toBe(text);
    }
  });

  it.each([
    ['+44 20 7946 0958', '+44********58'],
    ['+447700900123', '+44********23'],
    ['+1 (415) 555-0100', '+14*******00'],
    ['(415) 555-0100', '********00'],
    ['415-555-0100', '********00'],
    ['415.555.0100', '********00'],
    ['020 7946 0958', '*********58'],
  ])('masks the phone number %s', (phone, masked) => {
    expect(redactor.redactValue(`call ${phone} today`)).toBe(`call ${masked}${tag(phone)} today`);
  });

  it.each([
    'sandbox-high-risk',
    '500Hn00001XyZabAAB',
    '0035e00000AbCdEAAV',
    '2024-05-01T12:34:56.789Z',
    '2024-05-01T12:34:56+01:00',
    '2024-05-01',
    '12:30:45',
    '1234567.89',
    '1,234,567.89',
    '+12345.67',
    '-0.50',
    '1714567890',
    '1714567890123',
    'user_1234567',
    'order-2024-0001-9876543',
    '123e4567-e89b-12d3-a456-426614174000',
    'v1.2.3',
    'promotion_abuse',
    'score 0.97 at 2024-05-01 12:00:00 for $1 234 567',
  ])('leaves the ordinary value %s untouched', (value) => {
    expect(redactor.redactValue(value)).toBe(value);
  });

  it('replaces bearer tokens and secret query parameters', () => {
    expect(redactor.redactValue('Authorization: Bearer abc.def.ghijkl')).toBe(
      `Authorization: Bearer ${REDACTED}`,
    );
    expect(redactor.redactValue('GET /v205/users?api_key=sk_live_123&abuse_types=legacy')).toBe(
      `GET /v205/users?api_key=${REDACTED}&abuse_types=legacy`,
    );
  });
});

describe('createRedactor: hostile text', () => {
  // Strings up to ARGUMENT_LIMITS.max_string_length reach the redactor from tool arguments, webhook
  // fields, upstream text and log lines. With backtracking patterns each of these took from seconds
  // to minutes (far beyond the test timeout); in linear time they finish at once. No timing assertion:
  // the timeout is the bound.
  const length = ARGUMENT_LIMITS.max_string_length;
  const fill = (prefix: string, unit: string, suffix = ''): string =>
    prefix + unit.repeat(Math.floor((length - prefix.length - suffix.length) / unit.length)) + suffix;
  const address = '2001:db8:1::7';
  const masked = redactor.maskIp(address);

  it.each([
    ['colons after a label, then a word character', fill('x:', ':', 'g')],
    ['a label then thousands of groups', fill('a:', '1:')],
    ['hex groups ending in a word', fill('cert:', 'ab:', 'zz')],
    ['colons ending in a digit', fill('x:', ':', '1')],
    ['hex groups after a hex label, ending in a word', fill('dead:', 'f:', 'x')],
    ['groups and dots', fill('', '1:1.')],
  ])('leaves %s unmasked, and still masks an address after it', (_name, text) => {
    expect(text.length).toBeGreaterThan(length - 4);
    expect(redactor.redactValue(text)).toBe(text);
    expect(redactor.redactValue(`${text} via ${address}`)).toBe(`${text} via ${masked}`);
    expect(redactor.redactValue(`${address} ${text}`)).toBe(`${masked} ${text}`);
  });

  it('masks an address inside a long run of colons after a label only where one starts', () => {
    const text = fill('client:', ':', '1');
    // `client:` is a label, and `:::…:1` is not an address: nothing to mask.
    expect(redactor.redactValue(text)).toBe(text);
    expect(redactor.redactValue(`client:${address}`)).toBe(`client:${masked}`);
  });

  it('classifies a long key of capitals and checks a long personal value without backtracking', () => {
    const key = fill('', 'A');
    const email = fill('a@', '.', ' x');
    const out = redactor.redactValue({ [key]: 'kept', email, [`${key}Email`]: 'jane@example.com' });
    expect(out).toEqual({
      [key]: 'kept',
      email: `***${tag(email)}`,
      [`${key}Email`]: `j***@example.com${tag('jane@example.com')}`,
    });
  });
});

describe('createRedactor: by key name', () => {
  it('replaces secrets wholesale whatever their type', () => {
    const out = redactor.redactValue({
      password: 'hunter2',
      token: { nested: 'x' },
      api_key: 'k',
      $api_key: 'k',
      client_secret: 's',
      Authorization: 'Basic abc',
      'x-api-key': 'k',
      card_bin: '411111',
      $card_last4: '4242',
      bank_last4: 1234,
      cardholder: 'Jane',
    });
    for (const value of Object.values(out as Record<string, unknown>)) expect(value).toBe(REDACTED);
  });

  it('keyed-hashes personal values, keeping useful shape for emails, phones and IPs', () => {
    const out = redactor.redactValue({
      email: 'Jane@Example.com',
      $user_email: 'jane@example.com',
      SuppliedEmail: 'jane@example.com',
      $phone: '+447700900123',
      phone: 4155550100,
      $ip: '203.0.113.7',
      name: 'Jane Doe',
      $name: 'Jane Doe',
      first_name: 'Jane',
      LastName: 'Doe',
      billing_address: { $city: 'London', $zipcode: 'N1 9GU' },
    }) as Record<string, unknown>;
    expect(out).toEqual({
      email: `J***@example.com${tag('jane@example.com')}`,
      $user_email: `j***@example.com${tag('jane@example.com')}`,
      SuppliedEmail: `j***@example.com${tag('jane@example.com')}`,
      $phone: `+44********23${tag('+447700900123')}`,
      phone: `********00${tag('4155550100')}`,
      $ip: `203.0.113.x${tag('203.0.113.7')}`,
      name: `***${tag('jane doe')}`,
      $name: `***${tag('Jane Doe')}`,
      first_name: `***${tag('jane')}`,
      LastName: `***${tag('doe')}`,
      billing_address: { $city: `***${tag('london')}`, $zipcode: `***${tag('n1 9gu')}` },
    });
  });

  it('keeps ids, timestamps, amounts and booleans under ordinary keys', () => {
    const input = {
      user_id: 'sandbox-high-risk',
      case_id: '500Hn00001XyZabAAB',
      $time: 1714567890123,
      $amount: 123450000,
      amount: '12.50',
      created_at: '2024-05-01T12:34:56.789Z',
      is_bad: true,
      reasons: [{ name_of_rule: 'velocity', value: 3 }],
      missing: null,
    };
    expect(redactor.redactValue(input)).toEqual(input);
  });

  it('masks free text inside descriptions and keys, deep in arrays', () => {
    const out = redactor.redactValue({
      cases: [{ Description: 'Chargeback from jane@example.com, callback 415-555-0100' }],
      by_email: { 'jane@example.com': 2 },
    });
    expect(JSON.stringify(out)).not.toContain('jane@example.com');
    expect(JSON.stringify(out)).not.toContain('555-0100');
  });
});

describe('createRedactor: field classes a caller knows better', () => {
  const fields = {
    notPersonal: ['score.reasons[].name', 'decision.name'],
    personal: ['event.custom_fields', 'event.app.device_unique_id'],
  };

  it('keeps the names at the paths said not to be personal, and hashes a name anywhere else', () => {
    const out = redactor.redactValue(
      {
        score: { reasons: [{ name: 'UsersPerDevice', value: 4 }, { name: 'Refund from jane@example.com' }] },
        decision: { name: 'Block user', password: 'hunter2' },
        name: 'Jane Public',
        customer: { name: 'Jane Public' },
        reasons: [{ name: 'Jane Public' }],
      },
      fields,
    );
    expect(out).toEqual({
      score: {
        reasons: [
          { name: 'UsersPerDevice', value: 4 },
          { name: `Refund from j***@example.com${tag('jane@example.com')}` },
        ],
      },
      decision: { name: 'Block user', password: REDACTED },
      name: `***${tag('Jane Public')}`,
      customer: { name: `***${tag('Jane Public')}` },
      reasons: [{ name: `***${tag('Jane Public')}` }],
    });
  });

  it('hashes every value under a path said to be personal, keeping its keys, whatever they are named', () => {
    const out = redactor.redactValue(
      {
        event: {
          custom_fields: { spouse: 'Marge Simpson', national_id: 'AB123456C', vip: true },
          app: { device_unique_id: 'A1B2-C3D4', device_model: 'iPhone' },
          user_id: 'u1',
        },
      },
      fields,
    );
    expect(out).toEqual({
      event: {
        custom_fields: {
          spouse: `***${tag('Marge Simpson')}`,
          national_id: `***${tag('AB123456C')}`,
          // A yes/no fact about a person is personal too: masked alike, true or false.
          vip: '***',
        },
        app: { device_unique_id: `***${tag('A1B2-C3D4')}`, device_model: 'iPhone' },
        user_id: 'u1',
      },
    });
    // And stays as it is when redacted again without them (the audit masks once more).
    expect(redactor.redactValue(out)).toEqual(out);
    expect(redactor.redactValue(out, fields)).toEqual(out);
  });
});

describe('createRedactor: contract', () => {
  it('is a deep copy: the input is not modified', () => {
    const input = { email: 'jane@example.com', nested: { text: 'ip 203.0.113.7' } };
    const snapshot = structuredClone(input);
    redactor.redactValue(input);
    expect(input).toEqual(snapshot);
  });

  it('is idempotent, so layers can redact defensively', () => {
    const input = {
      email: 'jane@example.com',
      $phone: '+447700900123',
      $ip: '2001:db8::1',
      name: 'Jane',
      note: 'jane@example.com 203.0.113.7 ::ffff:198.51.100.4 +44 20 7946 0958 (415) 555-0100',
    };
    const once = redactor.redactValue(input);
    expect(redactor.redactValue(once)).toEqual(once);
  });

  it('hashes stably for the same input and key, and differently for another key or input', () => {
    const other = createRedactor({ hashKey: Buffer.from('test-key-2') });
    expect(redactor.hashPersonal('jane@example.com')).toBe(redactor.hashPersonal(' Jane@Example.COM '));
    expect(redactor.hashPersonal('jane@example.com')).toMatch(/^[0-9a-f]{8}$/);
    expect(redactor.hashPersonal('jane@example.com')).not.toBe(other.hashPersonal('jane@example.com'));
    expect(redactor.hashPersonal('jane@example.com')).not.toBe(redactor.hashPersonal('john@example.com'));
    expect(redactor.hashPersonal('+44 7700 900123')).toBe(redactor.hashPersonal('+447700900123'));
  });

  it('refuses an empty key', () => {
    expect(() => createRedactor({ hashKey: '' })).toThrow(/hashKey/);
  });

  it('returns plain JSON data for dates, bigints, binary, functions and cycles', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(
      redactor.redactValue({
        when: new Date(0),
        big: 10n,
        bytes: Buffer.from('abc'),
        fn: () => 1,
        cyclic,
        error: new Error('failed for jane@example.com'),
      }),
    ).toEqual({
      when: '1970-01-01T00:00:00.000Z',
      big: '10',
      bytes: '[binary 3 bytes]',
      cyclic: { a: 1, self: '[Circular]' },
      error: { name: 'Error', message: `failed for j***@example.com${tag('jane@example.com')}` },
    });
  });
});

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined like JSON.stringify', () => {
    expect(canonicalJson({ b: 1, a: [undefined, 2, { d: undefined, c: 'x' }] })).toBe(
      '{"a":[null,2,{"c":"x"}],"b":1}',
    );
    expect(canonicalJson({ x: 1, y: { b: 2, a: 1 } })).toBe(canonicalJson({ y: { a: 1, b: 2 }, x: 1 }));
  });

  it('honours toJSON and turns non-finite numbers into null', () => {
    expect(canonicalJson({ d: new Date(0), n: Number.NaN })).toBe(
      '{"d":"1970-01-01T00:00:00.000Z","n":null}',
    );
  });

  it('throws on cycles and bigints instead of hashing something ambiguous', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(/circular/);
    expect(() => canonicalJson({ n: 1n })).toThrow(/bigint/);
  });

  it('writes the same text whether keys arrive sorted (native fast path) or not, at any depth', () => {
    // An independent reference: sorted keys, JSON.stringify's rules for everything else.
    const reference = (input: unknown): string | undefined => {
      let value = input;
      if (value !== null && typeof (value as { toJSON?: unknown })?.toJSON === 'function') {
        value = (value as { toJSON: () => unknown }).toJSON();
      }
      if (value === null) return 'null';
      if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : 'null';
      if (typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
      if (typeof value !== 'object') return undefined;
      if (Array.isArray(value)) return `[${value.map((item) => reference(item) ?? 'null').join(',')}]`;
      const parts = Object.keys(value)
        .sort()
        .flatMap((key) => {
          const encoded = reference((value as Record<string, unknown>)[key]);
          return encoded === undefined ? [] : [`${JSON.stringify(key)}:${encoded}`];
        });
      return `{${parts.join(',')}}`;
    };
    const reversed = (value: unknown): unknown => {
      if (value === null || typeof value !== 'object' || 'toJSON' in value) return value;
      if (Array.isArray(value)) return value.map(reversed);
      return Object.fromEntries(
        Object.entries(value)
          .reverse()
          .map(([k, v]) => [k, reversed(v)]),
      );
    };
    class Point {
      x = 1;
      y = 2;
    }
    const withToJson = Object.assign([1, 2], { toJSON: () => ({ b: 1, a: 2 }) });
    const values: unknown[] = [
      {
        a: 1,
        b: [1, 'two', null, true, { c: undefined, d: Number.NaN, e: -0 }],
        f: { g: { h: 'é\u2028"' } },
      },
      { args: { user_id: 'u1', amount: 12.5, tags: ['x', 'y'] }, principal: { id: 'a', kind: 'user' } },
      { '10': 'ten', '9': 'nine', a: 'letter' },
      { when: new Date(0), nested: { also: new Date(1) } },
      {
        point: new Point(),
        boxed: Object(new String('s')),
        bare: Object.assign(Object.create(null), { z: 1, a: 2 }),
      },
      { list: withToJson, fn: () => 1, sym: Symbol('s') },
      [undefined, () => 1, { b: 2, a: 1 }],
      'text',
      42,
      null,
      { deep: JSON.parse(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`) as unknown },
    ];
    for (const value of values) {
      expect(canonicalJson(value)).toBe(reference(value) ?? 'null');
      expect(canonicalJson(reversed(value))).toBe(canonicalJson(value));
    }
  });

  it('sha256Hex hashes UTF-8 text to lower-case hex', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
