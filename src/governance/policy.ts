/**
 * Which tools a principal may see and call, and what approval each call needs. One filter, applied
 * both to `tools/list` and to every call, so a hidden tool is also a refused tool. Read-only mode
 * always wins.
 */
import { DEFAULTS, type ApprovalMode, type Config } from '../config.ts';
import { InvalidInputError, type FieldIssue } from '../errors.ts';
import { isObject } from '../is-object.ts';
import type { AnyTool, ApprovalKey, Principal, Risk } from '../tool.ts';
import { canonicalJson, sha256Hex } from './canonical-json.ts';

/** What each role may use. Approvers decide in the CLI/console; that is not an MCP tool. */
const ROLE_RISKS: Record<Principal['role'], readonly Risk[]> = {
  viewer: ['read'],
  approver: ['read'],
  analyst: ['read', 'write', 'destructive'],
  admin: ['read', 'write', 'destructive'],
};

export function isVisibleTo(
  tool: Pick<AnyTool, 'risk' | 'toolset' | 'extraRoles'>,
  principal: Principal,
  config: Pick<Config, 'read_only' | 'toolsets'>,
): boolean {
  if (config.read_only && tool.risk !== 'read') return false;
  // `core` tools (score, approvals status…) stay available whatever toolsets are selected.
  if (config.toolsets.length > 0 && tool.toolset !== 'core' && !config.toolsets.includes(tool.toolset))
    return false;
  return (
    ROLE_RISKS[principal.role].includes(tool.risk) || (tool.extraRoles?.includes(principal.role) ?? false)
  );
}

/**
 * Why this principal may not use this tool under this configuration (read-only mode, a disabled
 * toolset, the role), in words; undefined when it may. The same rule as {@link isVisibleTo}.
 */
export function whyNotAllowed(
  tool: Pick<AnyTool, 'name' | 'risk' | 'toolset' | 'extraRoles'>,
  principal: Principal,
  config: Pick<Config, 'read_only' | 'toolsets'>,
): string | undefined {
  if (isVisibleTo(tool, principal, config)) return undefined;
  if (config.read_only && tool.risk !== 'read') {
    return `${tool.name} is a write tool and fraudgate runs in read-only mode.`;
  }
  if (config.toolsets.length > 0 && !config.toolsets.includes(tool.toolset)) {
    return `${tool.name} belongs to the '${tool.toolset}' toolset, which is not enabled.`;
  }
  return `Role '${principal.role}' may not use ${tool.name}.`;
}

/**
 * Identifies the approval policy in force; an approval stores the one it was requested under. Only
 * what decides a call's mode and who may approve it counts: replicas tuned differently (wait_ms,
 * poll_ms, ttl_ms, undo_window_ms, as during a rolling deploy) must agree on it, or the same call
 * retried on another replica would not join its open approval and approving both would run it twice.
 */
export function approvalPolicyVersion(config: Pick<Config, 'approvals'>): string {
  const { tools, self_approval, default_for_write, default_for_destructive, out_of_band } = config.approvals;
  return sha256Hex(
    canonicalJson({ tools, self_approval, default_for_write, default_for_destructive, out_of_band }),
  ).slice(0, 16);
}

/**
 * The version this policy had before {@link approvalPolicyVersion} left the timing settings out (a
 * hash of all of `approvals`). Approvals opened under it before the upgrade are still open: a retry
 * of such a call must join its approval, not open a second one beside it (the open-binding index
 * includes the version, so it would not stop that), or approving both would run the call twice.
 * This release also stores new approvals under it (pipeline.ts; the current version goes to the
 * `policy_current` column, approval-store.ts), so that a replica of the previous release, which matches
 * this version only, joins them during a rolling deploy. Retire it in two steps: first stop storing
 * new approvals under it (every replica by then matches both), then,
 * once no approval opened under this one can still be open (`approvals.ttl_ms` after every replica
 * runs that release), drop it and {@link approvalPolicyVersions}' second entry.
 */
export function legacyApprovalPolicyVersion(config: Pick<Config, 'approvals'>): string {
  return sha256Hex(canonicalJson(config.approvals)).slice(0, 16);
}

/** The versions under which an open approval counts as requested under the policy in force: current first. */
export function approvalPolicyVersions(config: Pick<Config, 'approvals'>): [string, string] {
  return [approvalPolicyVersion(config), legacyApprovalPolicyVersion(config)];
}

const STRICTNESS: Record<ApprovalMode, number> = { none: 0, confirm: 1, approval: 2, four_eyes: 3 };

/** The approval a call needs, and whether its requester may be the one who approves (or confirms) it. */
export interface ApprovalPolicy {
  mode: ApprovalMode;
  self_approval: boolean;
}

/**
 * The approval a tool gets under this configuration: the per-call key's override (see
 * `ToolDefinition.approvalKey`), else the per-tool override, else by risk; never below the key's floor.
 *
 * Destructive tools need an approver other than the requester unless `approvals.self_approval`
 * lists them: their `confirm`/`approval` become `four_eyes`. A per-call key with a floor (a BLOCK)
 * must be listed itself — opting `apply_decision` in does not let anyone approve their own block.
 */
export function resolveApproval(
  tool: Pick<AnyTool, 'name' | 'risk'>,
  config: Pick<Config, 'approvals'>,
  key?: ApprovalKey,
): ApprovalPolicy {
  const configured =
    (key ? config.approvals.tools[key.key] : undefined) ??
    config.approvals.tools[tool.name] ??
    (tool.risk === 'destructive'
      ? config.approvals.default_for_destructive
      : tool.risk === 'write'
        ? config.approvals.default_for_write
        : 'none');
  const mode =
    key?.floor !== undefined && STRICTNESS[key.floor] > STRICTNESS[configured] ? key.floor : configured;
  const optedIn = config.approvals.self_approval;
  const selfAllowed =
    tool.risk !== 'destructive' ||
    (key !== undefined && optedIn.includes(key.key)) ||
    (key?.floor === undefined && optedIn.includes(tool.name));
  if (mode === 'none') return { mode, self_approval: true };
  if (!selfAllowed && STRICTNESS[mode] < STRICTNESS.four_eyes)
    return { mode: 'four_eyes', self_approval: false };
  return { mode, self_approval: mode !== 'four_eyes' };
}

/** The stricter of two approval modes. */
export function stricterMode(a: ApprovalMode, b: ApprovalMode): ApprovalMode {
  return STRICTNESS[b] > STRICTNESS[a] ? b : a;
}

/** Finds a registered tool by name, for the policy of an effect a call re-applies. */
export type ToolNamed = (name: string) => Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'> | undefined;

/** A re-applied tool this server does not have counts as destructive: the strictest defaults. */
const reappliedTool = (name: string, toolNamed: ToolNamed) =>
  toolNamed(name) ?? { name, risk: 'destructive' as const };

/**
 * The approval one call needs: {@link resolveApproval}, and for a call that re-applies another
 * tool's effect (an undo: `ApprovalKey.reapplies`) never less than that tool's own call would need —
 * the stricter mode, and the requester may approve only where both allow it (so the re-applied key's
 * `approvals.self_approval` opt-in is needed too). An operator's `suppress_user: four_eyes` thus
 * holds for an undo that re-suppresses, whatever `undo_action` is set to.
 */
export function resolveCallApproval(
  tool: Pick<AnyTool, 'name' | 'risk'>,
  config: Pick<Config, 'approvals'>,
  key: ApprovalKey | undefined,
  toolNamed: ToolNamed,
): ApprovalPolicy {
  const own = resolveApproval(tool, config, key);
  if (!key?.reapplies) return own;
  const { tool: name, key: reappliedKey } = key.reapplies;
  const theirs = resolveApproval(reappliedTool(name, toolNamed), config, reappliedKey);
  return {
    mode: stricterMode(own.mode, theirs.mode),
    self_approval: own.self_approval && theirs.self_approval,
  };
}

/**
 * The mode an approval requested earlier needs now: its stored mode, or the current policy's when
 * that is stricter (a tightened policy applies to approvals still waiting). Which per-call key
 * (e.g. a decision's category) applied is not stored, so for a tool with keys the strictest of
 * them counts — only when the policy changed since the request; for a tool that re-applies other
 * tools' effects (`reapplies`, an undo), theirs too, as {@link resolveCallApproval} counted them.
 */
export function modeNow(
  approval: { mode: ApprovalMode; policy_version: string },
  tool: Pick<AnyTool, 'name' | 'risk' | 'approvalKeys' | 'reapplies'>,
  config: Pick<Config, 'approvals'>,
  toolNamed: ToolNamed = () => undefined,
): ApprovalMode {
  if (approvalPolicyVersions(config).includes(approval.policy_version)) return approval.mode;
  const modesOf = (t: Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'>) =>
    [undefined, ...(t.approvalKeys ?? [])].map((key) => resolveApproval(t, config, key).mode);
  const candidates = [
    ...modesOf(tool),
    ...(tool.reapplies ?? []).flatMap((name) => modesOf(reappliedTool(name, toolNamed))),
  ];
  return candidates.reduce(stricterMode, approval.mode);
}

/**
 * {@link modeNow} for a tool that re-applies other tools' effects (an undo), never weaker than
 * {@link resolveCallApproval}'s stricter-of rule under the current policy for any key the call may
 * have had (`keys`; unknown: every combination of the tool's own keys and the re-applied tools'),
 * even when the policy is unchanged: an approval stored before that rule holds a weaker mode under
 * the same policy version (which hashes the approvals config only).
 */
export function modeNowReapplying(
  approval: { mode: ApprovalMode; policy_version: string },
  tool: Pick<AnyTool, 'name' | 'risk' | 'approvalKeys' | 'reapplies'>,
  config: Pick<Config, 'approvals'>,
  keys: readonly ApprovalKey[] | undefined,
  toolNamed: ToolNamed = () => undefined,
): ApprovalMode {
  const stored = modeNow(approval, tool, config, toolNamed);
  const own: ApprovalKey[] = [{ key: tool.name }, ...(tool.approvalKeys ?? [])];
  const possible =
    keys && keys.length > 0
      ? keys
      : (tool.reapplies ?? []).flatMap((name) =>
          [undefined, ...(toolNamed(name)?.approvalKeys ?? [])].flatMap((key) =>
            own.map((k) => ({ ...k, reapplies: { tool: name, ...(key ? { key } : {}) } })),
          ),
        );
  return possible
    .map((key) => resolveCallApproval(tool, config, key, toolNamed).mode)
    .reduce(stricterMode, stored);
}

/** The names a policy entry can use for these tools: each tool's, then its per-call keys. */
const keysOf = (tools: readonly Pick<AnyTool, 'name' | 'approvalKeys'>[]): string[] =>
  tools.flatMap((t) => [t.name, ...(t.approvalKeys ?? []).map((k) => k.key)]);

/**
 * Policy keys must name real tools: a typo (`apply_lable`) would otherwise leave the real tool on its
 * default without a word. And a destructive tool (or one of its call keys) set to `none` is refused
 * outside the sandbox: destructive writes always wait for a human. Throws at start-up listing every
 * problem (unknown names with the known ones).
 */
export function checkPolicyNames(
  tools: readonly Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'>[],
  config: Pick<Config, 'approvals' | 'rate_limits' | 'budgets' | 'mode'>,
): void {
  const issues = policyNameProblems(tools, config);
  if (issues.length > 0) throw new InvalidInputError(issues, 'Invalid configuration');
}

/**
 * The problems {@link checkPolicyNames} throws, as a list. `config` may be a configuration the schema
 * refused (a wrong type elsewhere): whatever of the policy sections has the right shape is checked,
 * so one start lists a misspelt key beside the schema's errors (loadConfig's `problems`).
 */
export function policyNameProblems(
  tools: readonly Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'>[],
  config: unknown,
): FieldIssue[] {
  const at = (value: unknown, key: string): unknown => (isObject(value) ? value[key] : undefined);
  const entries = (value: unknown): [string, unknown][] => (isObject(value) ? Object.entries(value) : []);
  const approvalTools = entries(at(at(config, 'approvals'), 'tools'));
  const selfApproval = at(at(config, 'approvals'), 'self_approval');
  const toolNames = tools.map((t) => t.name);
  const approvalKeys = keysOf(tools);
  const issues: FieldIssue[] = [];
  const check = (field: string, names: readonly string[], known: readonly string[], what: string) => {
    for (const name of names) {
      if (!known.includes(name))
        issues.push({ field: `${field}.${name}`, message: `unknown ${what}; known: ${known.join(', ')}` });
    }
  };
  check(
    'approvals.tools',
    approvalTools.map(([name]) => name),
    approvalKeys,
    'tool or approval key',
  );
  check(
    'approvals.self_approval',
    Array.isArray(selfApproval) ? selfApproval.filter((n): n is string => typeof n === 'string') : [],
    approvalKeys,
    'tool or approval key',
  );
  check(
    'rate_limits.tools',
    entries(at(at(config, 'rate_limits'), 'tools')).map(([name]) => name),
    toolNames,
    'tool',
  );
  // The default limits name built-in tools; a server built with fewer tools just never matches them.
  const budgetKeys = entries(at(at(config, 'budgets'), 'limits'))
    .map(([name]) => name)
    .filter((k) => !(k in DEFAULTS.budgets.limits));
  // Only destructive effects are admitted against a budget: one on any other tool would load and never bind.
  const destructiveKeys = keysOf(tools.filter((t) => t.risk === 'destructive'));
  for (const name of budgetKeys) {
    if (destructiveKeys.includes(name)) continue;
    issues.push({
      field: `budgets.limits.${name}`,
      message:
        (approvalKeys.includes(name)
          ? `${name} is not destructive, so a budget on it would never apply; remove it: `
          : 'unknown tool or approval key; ') +
        `budgets apply to destructive tools and their keys, known: ${destructiveKeys.join(', ')}`,
    });
  }
  if (at(config, 'mode') !== 'sandbox') issues.push(...destructiveWithoutHuman(tools, approvalTools));
  return issues;
}

/**
 * `approvals.tools` entries that would let a destructive tool run with no human. The sandbox keeps
 * them (tests and benchmarks drive the outbox's suppressions through emulators without an approver);
 * anywhere else they stop start-up.
 */
function destructiveWithoutHuman(
  tools: readonly Pick<AnyTool, 'name' | 'risk' | 'approvalKeys'>[],
  approvalTools: readonly [string, unknown][],
): FieldIssue[] {
  const destructive = new Set(
    tools
      .filter((t) => t.risk === 'destructive')
      .flatMap((t) => [t.name, ...(t.approvalKeys ?? []).map((k) => k.key)]),
  );
  return approvalTools
    .filter(([name, mode]) => mode === 'none' && destructive.has(name))
    .map(([name]) => ({
      field: `approvals.tools.${name}`,
      message:
        `${name} is destructive and always waits for a human outside the sandbox; remove the entry ` +
        '(the default is a second person) or set approval, four_eyes or confirm ' +
        '(to let the requester decide their own calls, also list it in approvals.self_approval)',
    }));
}
