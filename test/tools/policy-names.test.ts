/**
 * tools/policy-names.ts lists what policy keys may name without loading the tools (start-up checks
 * the configuration with it before answering a client): it must name exactly the registered tools,
 * their risks and their approval keys.
 */
import { describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import { POLICY_NAMES } from '../../tools/policy-names.ts';

const keysOf = (list: typeof POLICY_NAMES) =>
  list.map((t) => ({ name: t.name, risk: t.risk, approvalKeys: (t.approvalKeys ?? []).map((k) => k.key) }));

describe('POLICY_NAMES', () => {
  it('names every registered tool with its risk and approval keys, in registry order, and nothing else', () => {
    expect(keysOf(POLICY_NAMES)).toEqual(keysOf(tools));
  });
});
