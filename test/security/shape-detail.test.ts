/**
 * A vendor response that fails its schema is audited with the issues' codes and paths only: never
 * zod's message, never a map key (data) on the path. The ledger's redactor masks emails and
 * phones, not names: what reaches `detail` must hold none to begin with.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { describeShapeIssues } from '../../src/clients/shape-issues.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const failedRecord = async (e: TestEnv, tool: string) => {
  const records = await storedAuditRecords(e.config, e.runtime.audit);
  const failed = records.filter((r) => r.tool === tool && r.event === 'failed');
  expect(failed).toHaveLength(1);
  return failed[0]!;
};

describe('a vendor response in an unexpected shape', () => {
  it('Sift: a score keyed by a person’s name is audited as codes and paths, the name nowhere', async () => {
    env = await setup();
    env.sandbox.sift.faults.inject({
      method: 'GET',
      path: '/score',
      status: 200,
      body: {
        status: 0,
        error_message: 'OK',
        user_id: 'sandbox-high-risk',
        scores: { 'Jane Quixote': { score: 'Jane Quixote' } },
      },
    });
    const result = await env.callTool('get_sift_score', { user_id: 'sandbox-high-risk' });
    expect(result.isError).toBe(true);
    expect(JSON.stringify(result.raw)).not.toContain('Quixote');
    const record = await failedRecord(env, 'get_sift_score');
    expect(JSON.stringify(record)).not.toContain('Quixote');
    expect(record.detail).toBe('sift get_user_score: invalid_type (expected number) at $.scores.*.score');
  });

  it('Salesforce: a wrongly typed field holding a name is audited as its code and path', async () => {
    env = await setup();
    // Every query answers a page whose totalSize (a number) is a person's name and whose rows are not rows.
    env.sandbox.salesforce.faults.inject({
      method: 'GET',
      path: '/query',
      status: 200,
      body: { totalSize: 'Jane Quixote', done: true, records: ['Jane Quixote'] },
      count: 10,
    });
    const result = await env.callTool('list_fraud_cases', {});
    expect(result.isError).toBe(true);
    expect(JSON.stringify(result.raw)).not.toContain('Quixote');
    const record = await failedRecord(env, 'list_fraud_cases');
    expect(JSON.stringify(record)).not.toContain('Quixote');
    expect(record.detail).toMatch(
      /: invalid_type \(expected number\) at \$\.totalSize; invalid_type \(expected record\) at \$\.records\[0\]$/,
    );
  });
});

describe('describeShapeIssues', () => {
  const issuesOf = (schema: z.ZodType, value: unknown) => {
    const parsed = schema.safeParse(value);
    if (parsed.success) throw new Error('expected the value to fail');
    return describeShapeIssues(schema, parsed.error);
  };

  it("names no received value where zod's own message would (unrecognized keys, enum, literal)", () => {
    const schema = z.strictObject({
      kind: z.enum(['user', 'order']),
      ok: z.literal(true),
      tags: z.record(z.string(), z.array(z.number())).optional(),
    });
    const value = {
      kind: 'jane@example.com',
      ok: 'Jane Quixote',
      'Jane Quixote': 1,
      tags: { 'Jane Quixote': ['x'] },
    };
    // What zod itself says holds the unknown key: the message must not be what is kept.
    expect(schema.safeParse(value).error?.message).toContain('Jane Quixote');
    const detail = issuesOf(schema, value);
    expect(detail).not.toMatch(/Quixote|jane/);
    expect(detail).toBe(
      'invalid_value at $.kind; invalid_value at $.ok; invalid_type (expected number) at $.tags.*[0]; unrecognized_keys at $',
    );
  });

  it('lists five issues and counts the rest', () => {
    const detail = issuesOf(z.array(z.number()), ['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    expect(detail.split('; ')).toHaveLength(6);
    expect(detail).toMatch(/; \+2 more$/);
  });
});
