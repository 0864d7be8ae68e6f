/**
 * What the configuration's policy keys (`approvals.tools`, `approvals.self_approval`,
 * `rate_limits.tools`, `budgets.limits`) may name — every tool, with its risk (a destructive one may
 * not be set to `none` outside the sandbox), and every approval key — without loading the tools
 * themselves (their schemas, their clients). `fraudgate serve` checks the policy keys against this
 * before it answers any client and loads the tools while the runtime opens
 * (src/transports/stdio.ts); the pipeline checks them again against the tools. Adding a tool or an
 * approval key: one line here too; test/tools/policy-names.test.ts fails until it is there.
 */
import type { AnyTool } from '../src/tool.ts';

export const POLICY_NAMES: readonly Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'>[] = [
  { name: 'get_sift_score', risk: 'read' },
  { name: 'apply_label', risk: 'destructive' },
  { name: 'remove_label', risk: 'destructive' },
  { name: 'send_sift_event', risk: 'write' },
  { name: 'list_sift_decisions', risk: 'read' },
  { name: 'get_user_decisions', risk: 'read' },
  {
    name: 'apply_decision',
    risk: 'destructive',
    approvalKeys: [
      { key: 'apply_decision:block' },
      { key: 'apply_decision:watch' },
      { key: 'apply_decision:accept' },
    ],
  },
  { name: 'sync_decision_to_segment', risk: 'write' },
  { name: 'create_fraud_case', risk: 'write' },
  { name: 'suppress_user', risk: 'destructive' },
  { name: 'get_approval_status', risk: 'read' },
  { name: 'lookup_user', risk: 'read' },
  { name: 'list_unmatched_identities', risk: 'read' },
  { name: 'sync_score_to_segment', risk: 'write' },
  { name: 'track_fraud_event', risk: 'write' },
  { name: 'enrich_salesforce_lead', risk: 'write' },
  { name: 'sync_decision_to_salesforce', risk: 'write' },
  { name: 'flag_opportunities', risk: 'write' },
  { name: 'list_fraud_cases', risk: 'read' },
  { name: 'get_fraud_case', risk: 'read' },
  { name: 'resolve_fraud_case', risk: 'write' },
  { name: 'undo_action', risk: 'destructive', approvalKeys: [{ key: 'undo_action:block' }] },
];
