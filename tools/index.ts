/**
 * Every tool fraudgate exposes, in the order `tools/list` shows them. Adding a tool is one new
 * module in this folder, one line here and one in ./policy-names.ts (what the configuration's policy
 * keys may name, checked at start-up without loading the tools; test/tools/policy-names.test.ts fails
 * until it is there). src/server.ts exposes each through the governance pipeline.
 */
import type { AnyTool } from '../src/tool.ts';
import { applyDecision } from './apply-decision.ts';
import { applyLabel } from './apply-label.ts';
import { createFraudCase } from './create-fraud-case.ts';
import { enrichSalesforceLead } from './enrich-salesforce-lead.ts';
import { flagOpportunities } from './flag-opportunities.ts';
import { getApprovalStatus } from './get-approval-status.ts';
import { getFraudCase } from './get-fraud-case.ts';
import { getSiftScore } from './get-sift-score.ts';
import { getUserDecisions } from './get-user-decisions.ts';
import { listFraudCases } from './list-fraud-cases.ts';
import { listSiftDecisions } from './list-sift-decisions.ts';
import { listUnmatchedIdentities } from './list-unmatched-identities.ts';
import { lookupUser } from './lookup-user.ts';
import { removeLabel } from './remove-label.ts';
import { resolveFraudCase } from './resolve-fraud-case.ts';
import { sendSiftEvent } from './send-sift-event.ts';
import { suppressUser } from './suppress-user.ts';
import { syncDecisionToSalesforce } from './sync-decision-to-salesforce.ts';
import { syncDecisionToSegment } from './sync-decision-to-segment.ts';
import { syncScoreToSegment } from './sync-score-to-segment.ts';
import { trackFraudEvent } from './track-fraud-event.ts';
import { undoAction } from './undo-action.ts';

export const tools: readonly AnyTool[] = [
  getSiftScore,
  applyLabel,
  removeLabel,
  sendSiftEvent,
  listSiftDecisions,
  getUserDecisions,
  applyDecision,
  syncDecisionToSegment,
  createFraudCase,
  suppressUser,
  getApprovalStatus,
  lookupUser,
  listUnmatchedIdentities,
  syncScoreToSegment,
  trackFraudEvent,
  enrichSalesforceLead,
  syncDecisionToSalesforce,
  flagOpportunities,
  listFraudCases,
  getFraudCase,
  resolveFraudCase,
  undoAction,
];
