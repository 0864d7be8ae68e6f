/**
 * Human decisions on approvals, shared by the server, the `fraudgate approvals` CLI and the console:
 * expiry, the approver's role, four-eyes and the audit record of each decision. It executes
 * nothing: an approved action is run by the pipeline (a waiting call or the background sweep).
 */
import { randomUUID } from 'node:crypto';
import { sameIdentity } from '../auth/identity.ts';
import { ERROR_CODES, FraudgateError, ForbiddenError, InvalidInputError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Approval, ApprovalStore } from '../store/approval-store.ts';
import type { Principal } from '../tool.ts';
import type { AuditLog } from './audit.ts';

export interface ApprovalDesk {
  /** Move overdue pending/approved approvals to `expired`, with an audit record each. */
  expireOverdue(): Promise<void>;
  decide(
    approvalId: string,
    decision: { approve: boolean; approver: Principal; reason?: string },
  ): Promise<Approval>;
}

export function createApprovalDesk(deps: {
  approvals: ApprovalStore;
  audit: AuditLog;
  logger: Logger;
  now?: () => Date;
}): ApprovalDesk {
  const { approvals, audit, logger } = deps;
  const now = deps.now ?? (() => new Date());

  async function expireOverdue(): Promise<void> {
    for (const overdue of await approvals.listExpired(now())) {
      const expired = await approvals.transition(overdue.id, ['pending', 'approved'], 'expired', {
        decided_at: now().toISOString(),
      });
      if (!expired) continue;
      try {
        await audit.append({
          event: 'expired',
          call_id: randomUUID(),
          tool: expired.tool,
          principal: { id: 'fraudgate', kind: 'service' },
          target: expired.target,
          args_hash: expired.args_hash,
          approval_id: expired.id,
        });
      } catch (error) {
        logger.error('audit write failed', {
          event: 'expired',
          approval_id: expired.id,
          error: String(error),
        });
      }
    }
  }

  return {
    expireOverdue,
    async decide(approvalId, decision) {
      await expireOverdue();
      const approval = await approvals.get(approvalId);
      if (!approval) throw new FraudgateError(ERROR_CODES.NOT_FOUND, `No approval ${approvalId}.`);
      if (approval.state !== 'pending') {
        throw new FraudgateError(
          ERROR_CODES.CONFLICT,
          `Approval ${approvalId} is already ${approval.state}; it cannot be decided again.`,
        );
      }
      if (!['approver', 'admin'].includes(decision.approver.role)) {
        throw new ForbiddenError(
          `${decision.approver.id} has role '${decision.approver.role}'; only approvers may decide approvals.`,
        );
      }
      if (
        decision.approve &&
        approval.mode === 'four_eyes' &&
        sameIdentity(decision.approver.id, approval.requester)
      ) {
        throw new ForbiddenError(
          `Four-eyes policy: ${decision.approver.id} requested this action and cannot approve it; another approver must.`,
        );
      }
      if (!decision.approve && !decision.reason?.trim()) {
        throw new InvalidInputError([{ field: 'reason', message: 'a reason is required to deny' }]);
      }
      const decided = await approvals.transition(
        approvalId,
        ['pending'],
        decision.approve ? 'approved' : 'denied',
        {
          decided_at: now().toISOString(),
          decided_by: decision.approver.id,
          ...(decision.reason ? { reason: decision.reason } : {}),
        },
      );
      if (!decided)
        throw new FraudgateError(
          ERROR_CODES.CONFLICT,
          `Approval ${approvalId} changed state meanwhile; look again.`,
        );
      try {
        await audit.append({
          event: decision.approve ? 'approved' : 'denied',
          call_id: randomUUID(),
          tool: decided.tool,
          principal: { id: decision.approver.id, kind: decision.approver.kind, role: decision.approver.role },
          target: decided.target,
          args_hash: decided.args_hash,
          approval_id: decided.id,
          ...(decision.reason ? { outcome: { message: decision.reason } } : {}),
        });
      } catch (error) {
        // No record, no decision: an approval must never run without its approver on record. A denial
        // may stand (it runs nothing); an approval goes back to pending unless an executor already
        // claimed it (its intent record still precedes any upstream write).
        if (!decision.approve) throw error;
        const clear = null as unknown as string;
        const reverted = await approvals.transition(approvalId, ['approved'], 'pending', {
          decided_at: clear,
          decided_by: clear,
          reason: clear,
        });
        logger.error('approval decision not recorded', {
          approval_id: approvalId,
          reverted: reverted !== undefined,
          error: String(error),
        });
        throw new FraudgateError(
          ERROR_CODES.INTERNAL,
          `The approval of ${approvalId} could not be written to the audit log` +
            (reverted
              ? ', so it was not applied; the approval is still pending. '
              : '; it was already claimed for execution, which is audited on its own. ') +
            'The operator must fix the audit log (see the server log).',
          {
            retryable: true,
            ...(error instanceof FraudgateError ? { detail: error.detail } : {}),
            cause: error,
          },
        );
      }
      return decided;
    },
  };
}
