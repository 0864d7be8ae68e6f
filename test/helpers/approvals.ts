/**
 * A new approval row as the tests that decide approvals need one: an `apply_label` on u1 requested by
 * an analyst, pending, expiring an hour after `at`. Each test overrides what it is about.
 */
import type { NewApproval } from '../../src/store/approval-store.ts';

export function labelRequest(id: string, overrides: Partial<NewApproval> = {}, at = Date.now()): NewApproval {
  return {
    id,
    tool: 'apply_label',
    args: { user_id: 'u1' },
    // One binding per approval: the store keeps at most one open approval per call.
    args_hash: `h-${id}`,
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
