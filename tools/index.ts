/**
 * Every tool fraudgate exposes, in the order `tools/list` shows them. Adding a tool is one new
 * module in this folder and one line here; src/server.ts exposes each through the governance pipeline.
 */
import type { AnyTool } from '../src/tool.ts';
import { applyLabel } from './apply-label.ts';
import { createFraudCase } from './create-fraud-case.ts';
import { getApprovalStatus } from './get-approval-status.ts';
import { getSiftScore } from './get-sift-score.ts';
import { suppressUser } from './suppress-user.ts';
import { syncDecisionToSegment } from './sync-decision-to-segment.ts';

export const tools: readonly AnyTool[] = [
  getSiftScore,
  applyLabel,
  syncDecisionToSegment,
  createFraudCase,
  suppressUser,
  getApprovalStatus,
];
