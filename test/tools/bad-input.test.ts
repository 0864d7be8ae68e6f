/**
 * Bad input, for every tool in the registry: an unknown argument and a wrongly typed one each get
 * INVALID_INPUT naming the field, and nothing reaches any upstream (no partial write, no read).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { setup, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv;
beforeAll(async () => {
  env = await setup({
    config: {
      rate_limits: {
        read: { capacity: 1000, per_minute: 1000 },
        write: { capacity: 1000, per_minute: 1000 },
        destructive: { capacity: 1000, per_minute: 1000 },
      },
    },
  });
});
afterAll(async () => {
  await env?.close();
});

const upstreamTraffic = () => [
  ...env.sandbox.sift.journal,
  ...env.sandbox.segment.journal,
  ...env.sandbox.salesforce.journal.filter((j) => !j.path.includes('/oauth2/')),
];

describe.each(tools.map((t) => [t.name]))('%s', (name) => {
  it('refuses an unknown argument, naming it', async () => {
    const before = upstreamTraffic().length;
    const result = await env.callTool(name, { not_a_real_argument: 'x' });
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(result.error.message).toContain('not_a_real_argument');
    expect(upstreamTraffic()).toHaveLength(before);
  });

  it('refuses wrongly typed arguments, naming a field and the rule', async () => {
    const before = upstreamTraffic().length;
    // Every declared argument as an object: no tool takes objects for all of them.
    const shape = Object.keys(
      (tools.find((t) => t.name === name)!.input as { shape: Record<string, unknown> }).shape,
    );
    const result = await env.callTool(name, Object.fromEntries(shape.map((k) => [k, { nested: true }])));
    expect(result.isError).toBe(true);
    expect(result.error.code).toBe('INVALID_INPUT');
    expect(shape.some((field) => result.error.message.includes(field))).toBe(true);
    expect(result.error.message).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    expect(upstreamTraffic()).toHaveLength(before);
  });
});
