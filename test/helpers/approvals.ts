/**
 * A new approval row as the tests that decide approvals need one: an `apply_label` on u1 requested by
 * an analyst, pending, expiring an hour after `at`. Each test overrides what it is about.
 */
import { canonicalJson, sha256Hex } from '../../src/governance/canonical-json.ts';
import type { NewApproval } from '../../src/store/approval-store.ts';

/** The hash the pipeline binds an approval's arguments with (approval-integrity.ts checks it). */
export const argsHashOf = (args: Record<string, unknown>) => sha256Hex(canonicalJson(args));

export function labelRequest(id: string, overrides: Partial<NewApproval> = {}, at = Date.now()): NewApproval {
  // One binding per approval (the store keeps at most one open approval per call): the id is in the args.
  const args = overrides.args ?? { user_id: 'u1', description: `request ${id}` };
  return {
    id,
    tool: 'apply_label',
    args,
    args_hash: argsHashOf(args),
    target: 'sift_user:u1',
    requester: 'ana.analyst@example.com',
    requester_role: 'analyst',
    requester_kind: 'user',
    mode: 'approval',
    policy_version: 'p',
    evidence: {},
    created_at: new Date(at).toISOString(),
    expires_at: new Date(at + 3_600_000).toISOString(),
    ...overrides,
  };
}
