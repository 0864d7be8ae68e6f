/**
 * `fraudgate approvals …`: how a human lists and decides pending approvals from a terminal.
 * Deciding only records the decision (with its audit record); a running fraudgate server executes
 * an approved action, exactly once, with the arguments frozen at request time.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { createLogger } from '../logger.ts';
import { argsIntegrityProblem } from '../governance/approval-integrity.ts';
import { openGovernanceState } from '../runtime.ts';
import type { Approval } from '../store/approval-store.ts';
import { humanTime } from '../tool.ts';
import { authenticateOperator } from './credential.ts';
import { subcommand, UsageError } from './usage.ts';

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function line(a: Approval): string {
  return [
    a.id,
    a.state.padEnd(9),
    a.tool.padEnd(24),
    a.target.padEnd(32),
    `by ${a.requester}`,
    `${age(a.created_at)} ago`,
  ].join('  ');
}

function show(a: Approval): string {
  const effect = typeof a.evidence.effect === 'string' ? a.evidence.effect : undefined;
  const integrity = argsIntegrityProblem(a);
  return [
    `${a.id}  ${a.state}`,
    ...(effect ? [`  if approved: ${effect}`] : []),
    `  tool:       ${a.tool} (${a.mode === 'four_eyes' ? 'four_eyes: an approver other than the requester' : a.mode})`,
    `  target:     ${a.target}`,
    `  arguments:  ${JSON.stringify(a.args)}`,
    ...(integrity
      ? [`  INTEGRITY:  check failed, ${integrity}; do not approve (deny it or let it expire)`]
      : []),
    `  requester:  ${a.requester}` +
      (typeof a.evidence.requester_identity === 'string' ? ` (${a.evidence.requester_identity})` : ''),
    `  created:    ${humanTime(a.created_at)} (${age(a.created_at)} ago)` +
      (a.state === 'pending' ? `; expires ${humanTime(a.expires_at)}` : ''),
    `  evidence:   ${JSON.stringify(a.evidence, null, 2).replaceAll('\n', '\n              ')}`,
    ...(a.decided_by
      ? [
          `  decided:    ${a.state === 'denied' ? 'denied' : 'approved'} by ${a.decided_by} at ${humanTime(a.decided_at ?? '')}${a.reason ? `: ${a.reason}` : ''}`,
        ]
      : []),
    ...(a.result !== undefined ? [`  result:     ${JSON.stringify(a.result)}`] : []),
    ...(a.error ? [`  error:      ${a.error.code}: ${a.error.message}`] : []),
  ].join('\n');
}

export async function runApprovalsCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('approvals', args[0], ['list', 'show', 'approve', 'deny']);
  const id = args[1];
  const logger = createLogger({ level: 'warn' });
  // A decision applies the current policy to the tool (read-only mode, toolsets, a tightened mode).
  const deciding = sub === 'approve' || sub === 'deny';
  const tools = deciding ? (await import('../../tools/index.ts')).tools : undefined;
  const state = await openGovernanceState(loaded.config, loaded.secrets, logger, tools ? { tools } : {});
  const out = (text: string) => process.stdout.write(text + '\n');
  try {
    switch (sub) {
      case 'list': {
        await state.desk.expireOverdue();
        const list = await state.approvals.list(
          values.all ? { limit: 200 } : { states: ['pending'], limit: 200 },
        );
        if (values.json) out(JSON.stringify(list, null, 2));
        else
          out(
            list.length === 0
              ? values.all
                ? 'No approvals.'
                : 'No pending approvals.'
              : list.map(line).join('\n'),
          );
        return 0;
      }
      case 'show': {
        if (!id) throw new UsageError([{ field: 'ID', message: 'give the approval id' }]);
        const approval = await state.approvals.get(id);
        if (!approval) {
          process.stderr.write(`fraudgate: no approval ${id}\n`);
          return 1;
        }
        out(values.json ? JSON.stringify(approval, null, 2) : show(approval));
        return 0;
      }
      case 'approve':
      case 'deny': {
        const issues = [];
        if (!id) issues.push({ field: 'ID', message: 'give the approval id' });
        if (sub === 'deny' && !values.reason?.trim())
          issues.push({ field: '--reason', message: 'a reason is required to deny' });
        if (issues.length > 0) throw new UsageError(issues, `Usage: fraudgate approvals ${sub}`);
        // The approver is whoever the credential proves, never a name typed on the command line.
        const approver = await authenticateOperator(loaded, `${sub} approvals`);
        const decided = await state.desk.decide(id!, {
          approve: sub === 'approve',
          approver,
          ...(values.reason ? { reason: values.reason } : {}),
        });
        out(
          sub === 'approve'
            ? `Approved ${decided.id} as ${approver.id}. A running fraudgate server executes it once (check: fraudgate approvals show ${decided.id}).`
            : `Denied ${decided.id} as ${approver.id}. Nothing will be executed.`,
        );
        return 0;
      }
    }
  } finally {
    await state.close();
  }
}
