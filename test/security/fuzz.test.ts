/**
 * Fuzzing every tool through the protocol (issue 13): a real MCP client sends generated arguments —
 * valid-looking values, personal data, wrong types, deep nesting, extra and reserved keys,
 * non-object arguments, made-up tool names — to every tool. Whatever comes in: no INTERNAL answer,
 * no protocol error (but -32602 for an unknown tool name), every call leaves an audit record, and no
 * raw personal data reaches the audit, the logs or the stored rows. `FRAUDGATE_FUZZ_RUNS` raises the number of calls
 * (the default is kept small for CI).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CallToolResultSchema, ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { createLogger } from '../../src/logger.ts';
import { inputSchemaOf } from '../../src/tool.ts';
import * as z from 'zod';
import { setup, type TestEnv } from '../helpers/setup.ts';
import { countStoredAuditRecords, storedAuditText } from '../helpers/audit.ts';

const RUNS = Number(process.env.FRAUDGATE_FUZZ_RUNS ?? 150);
const registered = new Set(tools.map((t) => t.name));

/** Personal data the fuzzer plants; none of it may be readable anywhere fraudgate writes. */
const PERSONAL = [
  'fuzz.victim.7731@probe-mail.example',
  'josé.garcía.fuzz@example.es',
  '+1 415 555 0191',
  '1-415-555-0192',
  'call+14155550193',
  '(415) 555-0194',
  '06 12 34 56 79',
  '203.0.113.177',
  '203.000.113.178',
  '2001:db8:abcd::4242',
];
/** What must not appear: the distinctive core of each planted value. */
const LEAK_MARKERS = [
  'fuzz.victim.7731',
  'garcía.fuzz',
  '415 555 0191',
  '415-555-0192',
  '14155550193',
  '555-0194',
  '12 34 56 79',
  '203.0.113.177',
  '203.000.113.178',
  'abcd::4242',
];

const SANDBOX_VALUES = [
  'sandbox-high-risk',
  'sandbox-low-risk',
  'sandbox-watch',
  'payment_abuse',
  'account_abuse',
  'bad',
  'block',
  'success',
  'login',
  'transaction',
  'score_evaluated',
  'USD',
  '12.50',
];

const scalar = fc.oneof(
  fc.constantFrom(...PERSONAL),
  fc.constantFrom(...SANDBOX_VALUES),
  fc.string({ maxLength: 40 }),
  fc.constantFrom(...PERSONAL).map((p) => `note: reach me at ${p} please`),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
);
const value = fc.oneof(
  { weight: 6, arbitrary: scalar },
  { weight: 2, arbitrary: fc.array(scalar, { maxLength: 4 }) },
  { weight: 2, arbitrary: fc.dictionary(fc.constantFrom('email', 'phone', 'ip', 'user_id', 'x'), scalar) },
  { weight: 1, arbitrary: fc.integer({ min: 20, max: 200 }).map(deepValue) },
);

function deepValue(depth: number): unknown {
  let v: unknown = PERSONAL[0];
  for (let i = 0; i < depth; i++) v = { nested: v };
  return v;
}

/** The top-level property names of a tool's input schema, nested event shapes included. */
function fieldNames(tool: (typeof tools)[number]): string[] {
  const schema = z.toJSONSchema(inputSchemaOf(tool), { io: 'input', unrepresentable: 'any' }) as {
    properties?: Record<string, unknown>;
  };
  return Object.keys(schema.properties ?? {});
}

const callArbitrary = fc.constantFrom(...tools).chain((tool) => {
  const names = fieldNames(tool);
  const key = fc.oneof(
    { weight: 8, arbitrary: names.length > 0 ? fc.constantFrom(...names) : fc.constant('x') },
    { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'extra', 'analyst') },
    { weight: 1, arbitrary: fc.constantFrom(...PERSONAL) },
  );
  const args = fc.oneof(
    { weight: 10, arbitrary: fc.dictionary(key, value, { maxKeys: 6 }) },
    // Nested events (send_sift_event) with planted data in their fields.
    {
      weight: 3,
      arbitrary: fc.record({
        event: fc.dictionary(
          fc.constantFrom(
            'event_type',
            'user_id',
            'email',
            'phone',
            'ip',
            'login_status',
            'transaction_id',
            'amount',
            'currency',
            'transaction_type',
            'transaction_status',
          ),
          scalar,
        ),
      }),
    },
    { weight: 1, arbitrary: fc.oneof(scalar, fc.array(scalar, { maxLength: 3 })) },
  );
  return fc.record({ name: fc.constant(tool.name), args });
});
/**
 * Well-formed calls with personal data in their free-text and contact fields, so the fuzzer also
 * reaches execution, approvals (their stored arguments) and the identity review list.
 */
const freeText = fc.constantFrom(...PERSONAL).map((p) => `Customer asked us to use ${p} from now on.`);
const email = fc.constantFrom(PERSONAL[0]!, PERSONAL[1]!);
const phone = fc.constantFrom(PERSONAL[2]!, PERSONAL[3]!, PERSONAL[5]!);
const user = fc.constantFrom('sandbox-high-risk', 'sandbox-watch', 'sandbox-unmatched', 'sandbox-low-risk');
const wellFormed = fc.oneof(
  fc.record({
    name: fc.constant('apply_label'),
    args: fc.record({
      user_id: user,
      is_bad: fc.boolean(),
      abuse_type: fc.constant('payment_abuse'),
      description: freeText,
    }),
  }),
  fc.record({
    name: fc.constant('suppress_user'),
    args: fc.record({ user_id: user, reason: freeText }),
  }),
  fc.record({
    name: fc.constant('create_fraud_case'),
    args: fc.record({ user_id: user, summary: freeText, email }),
  }),
  fc.record({
    name: fc.constant('lookup_user'),
    args: fc.record({ user_id: user, email, phone }),
  }),
  fc.record({
    name: fc.constant('send_sift_event'),
    args: fc.record({
      event: fc.record({
        event_type: fc.constant('login'),
        user_id: user,
        login_status: fc.constant('success'),
      }),
    }),
  }),
);
const unknownName = fc.record({
  name: fc.oneof(fc.constantFrom(...PERSONAL), fc.string({ minLength: 1, maxLength: 30 })),
  args: fc.constant({}),
});

let env: TestEnv;
const logs: string[] = [];

beforeAll(async () => {
  env = await setup({
    logger: createLogger({ level: 'debug', write: (line) => logs.push(line) }),
    config: {
      approvals: { wait_ms: 0 },
      rate_limits: {
        read: { capacity: 100_000, per_minute: 100_000 },
        write: { capacity: 100_000, per_minute: 100_000 },
        destructive: { capacity: 100_000, per_minute: 100_000 },
        // Every refusal is recorded one by one here, so "every call is audited" can be counted.
        refusals: { capacity: 100_000, per_minute: 100_000 },
      },
    },
  });
});
afterAll(async () => {
  await env?.close();
});

function auditCount(): Promise<number> {
  return countStoredAuditRecords(env.config, env.runtime.audit);
}

describe(`fuzzing every tool through the protocol (${RUNS} calls)`, () => {
  it('no INTERNAL, no protocol error, every call audited', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          { weight: 12, arbitrary: callArbitrary },
          { weight: 4, arbitrary: wellFormed },
          { weight: 1, arbitrary: unknownName },
        ),
        async ({ name, args }) => {
          const before = await auditCount();
          let result;
          try {
            result = await env.client.request(
              { method: 'tools/call', params: { name, arguments: args } } as never,
              CallToolResultSchema,
              { timeout: 20_000 },
            );
          } catch (error) {
            // The one protocol error allowed: an unknown tool name is -32602 (MCP convention), audited.
            if (!(
              error instanceof McpError &&
              error.code === ErrorCode.InvalidParams &&
              !registered.has(name)
            ))
              throw error;
            expect(await auditCount(), `call of an unknown tool left no audit record`).toBeGreaterThan(
              before,
            );
            return;
          }
          const text = result.content.findLast((c) => c.type === 'text');
          const body = text?.type === 'text' ? (JSON.parse(text.text) as { error?: { code: string } }) : {};
          if (result.isError) expect(body.error?.code, JSON.stringify(body)).not.toBe('INTERNAL');
          expect(await auditCount(), `call of ${name} left no audit record`).toBeGreaterThan(before);
        },
      ),
      { numRuns: RUNS, endOnFailure: true },
    );
  }, 600_000);

  it('no planted personal data is readable in the audit, the logs or the stored rows', async () => {
    await env.runtime.pipeline.close();
    const places: [string, string][] = [
      ['audit', await storedAuditText(env.config, env.runtime.audit)],
      ['logs', logs.join('\n')],
      // The database files byte for byte: approvals, identities, the ledger, whatever else is stored.
      ...readdirSync(env.dataDir)
        .filter((f) => /\.db(-wal)?$/.test(f))
        .map((f): [string, string] => [f, readFileSync(join(env.dataDir, f)).toString('utf8')]),
    ];
    for (const [where, text] of places) {
      for (const marker of LEAK_MARKERS)
        expect(text.includes(marker), `${marker} readable in ${where}`).toBe(false);
    }
  });
});
