import * as z from 'zod';
import { NotFoundError } from '../src/errors.ts';
import { defineTool } from '../src/tool.ts';
import { APPROVAL_STATES } from '../src/store/approval-store.ts';

export const getApprovalStatus = defineTool({
  name: 'get_approval_status',
  title: 'Check an approval',
  description:
    'An approval from APPROVAL_PENDING: its state, who decided and why, the evidence, and once ' +
    'executed the result. Approved actions run by themselves: never call the original tool again.',
  risk: 'read',
  toolset: 'core',
  idempotent: true,
  openWorld: false,
  input: z.strictObject({
    approval_id: z.string().regex(/^apr_[a-z0-9]{20}$/, 'an approval id like apr_0123456789abcdef0123'),
  }),
  output: z.object({
    approval_id: z.string(),
    tool: z.string(),
    state: z.enum(APPROVAL_STATES),
    target: z.string(),
    requester: z.string(),
    mode: z.string(),
    created_at: z.string(),
    expires_at: z.string(),
    decided_by: z.string().optional(),
    decided_at: z.string().optional(),
    reason: z.string().optional(),
    executed_at: z.string().optional(),
    evidence: z.record(z.string(), z.unknown()),
    result: z.record(z.string(), z.unknown()).optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
  }),
  target: (args) => `approval:${args.approval_id}`,
  async run(args, ctx) {
    const approval = await ctx.approvals.get(args.approval_id);
    const mayRead =
      approval &&
      (approval.requester === ctx.principal.id || ['approver', 'admin'].includes(ctx.principal.role));
    // Someone else's approval answers exactly like a missing one: ids must not leak what others do.
    if (!approval || !mayRead) throw new NotFoundError(`No approval ${args.approval_id} that you can see.`);
    const { id, result, args_problem: _problem, ...rest } = approval;
    return {
      approval_id: id,
      ...rest,
      state: rest.state as 'pending',
      ...(result === undefined ? {} : { result: result as Record<string, unknown> }),
    };
  },
});
