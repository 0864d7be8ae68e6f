/**
 * Human decisions on approvals, shared by the server, the `fraudgate approvals` CLI and the console:
 * expiry, the approver's role, four-eyes and the audit record of each decision. It executes
 * nothing: an approved action is run by the pipeline (a waiting call or the background sweep).
 *
 * Given a store transaction (`transaction`), each transition and its audit record commit together
 * or not at all. Without one (a ledger on another database), the record follows the transition and
 * a decision whose record fails is reverted.
 */
import { randomUUID } from 'node:crypto';
import { sameIdentity } from '../auth/identity.ts';
import { ERROR_CODES, FraudgateError, ForbiddenError, InvalidInputError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Approval, ApprovalStore } from '../store/approval-store.ts';
import type { Config } from '../config.ts';
import type { AnyTool, Principal } from '../tool.ts';
import type { SqlExecutor } from '../store/sql.ts';
import { argsIntegrityProblem, integrityFailure } from './approval-integrity.ts';
import { unrecordedError, type AuditAppendInput, type AuditLog } from './audit.ts';
import { modeNow, modeNowReapplying, whyNotAllowed } from './policy.ts';

/** What the desk needs of a tool to apply the current policy to a decision. */
export type DeskTool = Pick<
  AnyTool,
  'name' | 'risk' | 'toolset' | 'extraRoles' | 'approvalKeys' | 'reapplies' | 'possibleApprovalKeys'
>;

/**
 * The policy in force now (the tools and the configuration): an approval is decided under it, not
 * only under the one it was requested with — see `decide`.
 */
export interface DeskPolicy {
  tools: readonly DeskTool[];
  config: Pick<Config, 'read_only' | 'toolsets' | 'approvals'>;
}

/**
 * Runs `fn` in one store transaction, with the approvals bound to it and its executor (for the
 * audit record): see `Store.transaction`.
 */
export type ApprovalTransaction = <T>(
  fn: (tx: { approvals: ApprovalStore; sql: SqlExecutor }) => Promise<T>,
) => Promise<T>;

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
  /** The store's transactions, on the ledger's database: transitions and their records commit together. */
  transaction?: ApprovalTransaction;
  /** The current policy; absent, only the approval's own stored mode applies. */
  policy?: DeskPolicy;
}): ApprovalDesk {
  const { approvals, audit, logger, transaction, policy } = deps;
  const toolsByName = new Map(policy?.tools.map((t) => [t.name, t]));
  const now = deps.now ?? (() => new Date());

  /** The audit record of an approval's move to `event` by `principal`. */
  const recordOf =
    (
      event: AuditAppendInput['event'],
      principal: AuditAppendInput['principal'],
      outcome?: AuditAppendInput['outcome'],
    ) =>
    (moved: Approval): AuditAppendInput => ({
      event,
      call_id: randomUUID(),
      tool: moved.tool,
      principal,
      target: moved.target,
      args_hash: moved.args_hash,
      approval_id: moved.id,
      ...(outcome ? { outcome } : {}),
    });

  /**
   * Moves approval `id` and records the move: in one transaction when `transaction` is set (unrecorded,
   * nothing moved), else the move and then its record.
   */
  const moveRecorded = async (
    id: string,
    from: Parameters<ApprovalStore['transition']>[1],
    to: Parameters<ApprovalStore['transition']>[2],
    patch: Parameters<ApprovalStore['transition']>[3],
    record: (moved: Approval) => AuditAppendInput,
  ): Promise<Approval | undefined> => {
    if (transaction) {
      return transaction(async (tx) => {
        const moved = await tx.approvals.transition(id, from, to, patch);
        if (moved) await audit.appendIn(tx.sql, record(moved));
        return moved;
      });
    }
    const moved = await approvals.transition(id, from, to, patch);
    if (moved) await audit.append(record(moved));
    return moved;
  };

  async function expireOverdue(): Promise<void> {
    const expiredRecord = recordOf('expired', { id: 'fraudgate', kind: 'service' });
    for (const overdue of await approvals.listExpired(now())) {
      const patch = { decided_at: now().toISOString() };
      try {
        // Unrecorded in a transaction, it stays as it was (and unexecutable past its expiry): the next
        // sweep retries.
        await moveRecorded(overdue.id, ['pending', 'approved'], 'expired', patch, expiredRecord);
      } catch (error) {
        logger.error('audit write failed', {
          event: 'expired',
          approval_id: overdue.id,
          error: String(error),
        });
      }
    }
  }

  return {
    expireOverdue,
    async decide(approvalId, decision) {
      const { id, kind, role } = decision.approver;
      const approver: AuditAppendInput['principal'] = { id, kind, role };
      await expireOverdue();
      // A denial runs nothing: allowed even when the stored arguments do not open (they are not used).
      const approval = await approvals.get(approvalId, { evenUnreadable: !decision.approve });
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
      // A decision is a human's: an API key of kind service or automation (or a machine JWT) may hold
      // the approver role for other purposes, but an agent holding one must not approve its own work.
      if (decision.approver.kind !== 'user') {
        throw new ForbiddenError(
          `${decision.approver.id} is a ${decision.approver.kind} credential, which cannot decide approvals; ` +
            "sign in with a person's own API key (auth.key_hashes entry with kind 'user') or identity-provider token.",
        );
      }
      // Approving arguments other than the ones requested (edited in the database) fails it, audited.
      const tampered = decision.approve ? argsIntegrityProblem(approval) : undefined;
      if (tampered) {
        const error = integrityFailure(tampered);
        const patch = { decided_at: now().toISOString(), decided_by: decision.approver.id, error };
        await moveRecorded(approvalId, ['pending'], 'failed', patch, recordOf('failed', approver, error));
        logger.warn('approval not approved: its stored arguments failed the integrity check', {
          approval_id: approvalId,
        });
        throw new FraudgateError(
          ERROR_CODES.CONFLICT,
          `Approval ${approvalId} was not approved. ${error.message}`,
        );
      }
      const tool = toolsByName.get(approval.tool);
      const requester = {
        id: approval.requester,
        role: approval.requester_role as Principal['role'],
        kind: approval.requester_kind as Principal['kind'],
      };
      const forbidden = decision.approve && policy && tool && whyNotAllowed(tool, requester, policy.config);
      if (forbidden) {
        throw new ForbiddenError(
          `Policy now forbids this action (${forbidden}); it cannot be approved. ` +
            'Deny it with a reason, or leave it to expire.',
        );
      }
      // A policy tightened since the request applies (say, self-approval withdrawn): the stricter mode
      // wins. An undo is held to the stricter-of rule for what it re-applies whatever it stored: older
      // code stored undo_action's own mode under the same policy version.
      const toolNamed = (name: string) => toolsByName.get(name);
      const mode =
        policy && tool
          ? tool.reapplies?.length
            ? modeNowReapplying(
                approval,
                tool,
                policy.config,
                await tool.possibleApprovalKeys?.(approval.args, (id) => approvals.get(id)),
                toolNamed,
              )
            : modeNow(approval, tool, policy.config, toolNamed)
          : approval.mode;
      if (
        decision.approve &&
        mode === 'four_eyes' &&
        sameIdentity(decision.approver.id, approval.requester)
      ) {
        if (approval.mode !== 'four_eyes') {
          throw new ForbiddenError(
            `Four-eyes policy: the approval policy changed since this was requested (or what it re-applies needs ` +
              `a second person) and now needs an approver other than the requester; ${decision.approver.id} ` +
              'requested it, so another approver must approve it.',
          );
        }
        throw new ForbiddenError(
          `Four-eyes policy: ${decision.approver.id} requested this action and cannot approve it; another approver must.`,
        );
      }
      if (!decision.approve && !decision.reason?.trim()) {
        throw new InvalidInputError([{ field: 'reason', message: 'a reason is required to deny' }]);
      }
      const patch = {
        decided_at: now().toISOString(),
        decided_by: decision.approver.id,
        ...(decision.reason ? { reason: decision.reason } : {}),
      };
      const to = decision.approve ? 'approved' : 'denied';
      const decidedRecord = recordOf(
        to,
        approver,
        decision.reason ? { message: decision.reason } : undefined,
      );
      const changedMeanwhile = () =>
        new FraudgateError(
          ERROR_CODES.CONFLICT,
          `Approval ${approvalId} changed state meanwhile; look again.`,
        );
      const notRecorded = (error: unknown, applied: string) => {
        logger.error('approval decision not recorded', { approval_id: approvalId, error: String(error) });
        return unrecordedError(
          `The ${decision.approve ? 'approval' : 'denial'} of ${approvalId} could not be written to the audit log` +
            applied +
            'The operator must fix the audit log (see the server log).',
          error,
        );
      };
      if (transaction) {
        let decided: Approval | undefined;
        try {
          decided = await moveRecorded(approvalId, ['pending'], to, patch, decidedRecord);
        } catch (error) {
          // The transition rolled back with its record: nothing was decided.
          throw notRecorded(error, ', so it was not applied; the approval is still pending. ');
        }
        if (!decided) throw changedMeanwhile();
        return decided;
      }
      const decided = await approvals.transition(approvalId, ['pending'], to, patch);
      if (!decided) throw changedMeanwhile();
      try {
        await audit.append(decidedRecord(decided));
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
        throw notRecorded(
          error,
          reverted
            ? ', so it was not applied; the approval is still pending. '
            : '; it was already claimed for execution, which is audited on its own. ',
        );
      }
      return decided;
    },
  };
}
