/**
 * Which tools a principal may see and call. One filter, applied both to `tools/list` and to
 * every call, so a hidden tool is also a refused tool. Read-only mode always wins.
 */
import type { ApprovalMode, Config } from '../config.ts';
import type { AnyTool, ApprovalKey, Principal, Risk } from '../tool.ts';

/** What each role may use. Approvers decide in the CLI/console; that is not an MCP tool. */
const ROLE_RISKS: Record<Principal['role'], readonly Risk[]> = {
  viewer: ['read'],
  approver: ['read'],
  analyst: ['read', 'write', 'destructive'],
  admin: ['read', 'write', 'destructive'],
};

export function isVisibleTo(
  tool: Pick<AnyTool, 'risk' | 'toolset'>,
  principal: Principal,
  config: Pick<Config, 'read_only' | 'toolsets'>,
): boolean {
  if (config.read_only && tool.risk !== 'read') return false;
  // `core` tools (score, approvals status…) stay available whatever toolsets are selected.
  if (config.toolsets.length > 0 && tool.toolset !== 'core' && !config.toolsets.includes(tool.toolset))
    return false;
  return ROLE_RISKS[principal.role].includes(tool.risk);
}

const STRICTNESS: Record<ApprovalMode, number> = { none: 0, confirm: 1, approval: 2, four_eyes: 3 };

/**
 * The approval mode a tool gets under this configuration: the per-call key's override (see
 * `ToolDefinition.approvalKey`), else the per-tool override, else by risk; never below the key's floor.
 */
export function resolveApprovalDefault(
  tool: Pick<AnyTool, 'name' | 'risk'>,
  config: Pick<Config, 'approvals'>,
  key?: ApprovalKey,
): ApprovalMode {
  const mode =
    (key ? config.approvals.tools[key.key] : undefined) ??
    config.approvals.tools[tool.name] ??
    (tool.risk === 'destructive'
      ? config.approvals.default_for_destructive
      : tool.risk === 'write'
        ? config.approvals.default_for_write
        : 'none');
  return key?.floor !== undefined && STRICTNESS[key.floor] > STRICTNESS[mode] ? key.floor : mode;
}
