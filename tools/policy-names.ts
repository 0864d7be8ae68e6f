/**
 * What the configuration's policy keys (`approvals.tools`, `approvals.self_approval`,
 * `rate_limits.tools`, `budgets.limits`) may name — every tool and every approval key — without
 * loading the tools themselves (their schemas, their clients). `fraudgate serve` checks the policy
 * keys against this before it answers any client and loads the tools while the runtime opens
 * (src/transports/stdio.ts); the pipeline checks them again against the tools. Adding a tool or an
 * approval key: one line here too; test/tools/policy-names.test.ts fails until it is there.
 */
import type { AnyTool } from '../src/tool.ts';

export const POLICY_NAMES: readonly Pick<AnyTool, 'name' | 'approvalKeys'>[] = [
  { name: 'get_sift_score' },
  { name: 'apply_label' },
  { name: 'remove_label' },
  { name: 'send_sift_event' },
  { name: 'list_sift_decisions' },
  { name: 'get_user_decisions' },
  {
    name: 'apply_decision',
    approvalKeys: [
      { key: 'apply_decision:block' },
      { key: 'apply_decision:watch' },
      { key: 'apply_decision:accept' },
    ],
  },
  { name: 'sync_decision_to_segment' },
  { name: 'create_fraud_case' },
  { name: 'suppress_user' },
  { name: 'get_approval_status' },
  { name: 'lookup_user' },
  { name: 'list_unmatched_identities' },
  { name: 'sync_score_to_segment' },
  { name: 'track_fraud_event' },
  { name: 'enrich_salesforce_lead' },
  { name: 'sync_decision_to_salesforce' },
  { name: 'flag_opportunities' },
  { name: 'list_fraud_cases' },
  { name: 'get_fraud_case' },
  { name: 'resolve_fraud_case' },
  { name: 'undo_action' },
];
