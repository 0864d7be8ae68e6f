/**
 * The governance pipeline: every tool call, from every transport, passes through `call()`.
 *
 *   1 principal → 2 authorize → 3 validate → 4 rate limit → 5 approve → 6 intent → 7 execute → 8 outcome
 *   (each stage is an OpenTelemetry span `fraudgate.<stage>` when tracing is on: src/tracing.ts)
 *
 * Plain TypeScript with no MCP SDK and no HTTP: transports hand in a `CallChannel` (principal,
 * elicitation, progress, abort signal) and get back an outcome to render.
 */
import { randomUUID } from 'node:crypto';
import type { UpstreamClients } from '../clients/types.ts';
import type { ApprovalMode, BucketConfig, Config } from '../config.ts';
import {
  ERROR_CODES,
  FraudgateError,
  ForbiddenError,
  InvalidInputError,
  toFraudgateError,
} from '../errors.ts';
import type { Logger } from '../logger.ts';
import { UNIDENTIFIED } from '../auth/identity.ts';
import type { Approval, ApprovalStore, ExecutionClaim, NewApproval } from '../store/approval-store.ts';
import {
  humanTime,
  inputSchemaOf,
  type AnyTool,
  type ApprovalKey,
  type ApprovalView,
  type IdentityDirectory,
  type Principal,
  type ToolContext,
  SELF_DECLARED_REQUESTER,
} from '../tool.ts';
import { unrecordedError, type AuditLog, type AuditRecord } from './audit.ts';
import { inSpan } from '../tracing.ts';
import { checkArgumentBounds, summarizeArguments } from './input-bounds.ts';
import { canonicalJson, sha256Hex, type Redactor } from './redact.ts';
import { argsIntegrityProblem, integrityFailure } from './approval-integrity.ts';
import { createRefusalBudget } from './refusal-budget.ts';
import type { RateLimitDecision, RateLimiter } from './rate-limit.ts';
import {
  approvalPolicyVersions,
  checkPolicyNames,
  isVisibleTo,
  resolveCallApproval,
  whyNotAllowed,
  type ApprovalPolicy,
} from './policy.ts';
import { createApprovalDesk, type ApprovalDesk, type ApprovalTransaction } from './approval-desk.ts';
import type { ApprovalSignal } from '../store/approval-signal.ts';
import { BudgetPausedError, type Budgets } from './budgets.ts';
import type { BudgetPause } from '../store/budget-store.ts';
import { whereToApprove } from './approval-text.ts';
import { createCursorSeal } from './cursor-seal.ts';

/** The answer to an in-band confirmation request. */
export type ElicitAnswer = 'accept' | 'decline' | 'cancel';

/** What a transport provides for one call. */
export interface CallChannel {
  principal: Principal;
  /** Present only when the client declared the elicitation capability. */
  elicit?: (message: string) => Promise<ElicitAnswer>;
  progress(progress: number, total?: number, message?: string): Promise<void>;
  /** The caller's: cancels a call whose write has not started (no intent yet); never one that has. */
  signal: AbortSignal;
  /**
   * Server-owned, optional: stops even a write that has started (the outbox's lost lease, so two
   * workers never run one effect at once). Never a client's cancel.
   */
  stopSignal?: AbortSignal;
  /** How long a call needing approval waits for the decision; default `approvals.wait_ms` (the console: 0). */
  waitMs?: number;
  /**
   * The same for every attempt of one logical call (the outbox passes its effect id), so a call run
   * again after a crash writes with the same idempotency key and the upstream deduplicates it (e.g.
   * suppress_user's Segment messageIds). Default: a fresh key per call.
   */
  idempotencyKey?: string;
}

export type CallOutcome =
  | { ok: true; output: Record<string, unknown>; callId: string }
  | {
      ok: false;
      error: FraudgateError;
      callId: string;
      /** Refused before running (invalid, forbidden, rate limited): covered by the refusal budget. */
      refused?: true;
    };

export interface PipelineDeps {
  tools: readonly AnyTool[];
  config: Config;
  clients: UpstreamClients;
  approvals: ApprovalStore;
  /**
   * The store's transactions, on the ledger's database: an approval's creation, decision, expiry or
   * supersession commits together with its audit record. Absent: the record follows the change.
   */
  approvalTransaction?: ApprovalTransaction;
  /** Wakes a call waiting for a decision as soon as it is made, on any replica; without it, calls poll. */
  approvalSignal?: Pick<ApprovalSignal, 'version' | 'wait'>;
  /**
   * Identity mappings and the review list, handed to tools as `ctx.identities`. Absent (a pipeline
   * without a store): Segment ids equal Sift ids and nothing is remembered.
   */
  identities?: IdentityDirectory;
  /**
   * The secret behind tools' paging cursors (`ctx.cursors`), the same on every replica. Absent: a
   * random one, so cursors only open in this process.
   */
  cursorKey?: string | Buffer;
  audit: AuditLog;
  redactor: Redactor;
  rateLimiter: RateLimiter;
  /** Blast-radius budgets for destructive effects (src/governance/budgets.ts); absent: none. */
  budgets?: Budgets;
  /**
   * This replica's stable id, given by `serve` only (the one process that holds it): approvals it
   * claims for execution carry it, so the replica restarted under the same id re-runs (or fails) those
   * its previous process was running when it died at once, instead of after INTERRUPTED_AFTER_MS.
   */
  replicaId?: string;
  /**
   * When this process took `replicaId` (`serve` passes one time to both its pipelines); default: when
   * the pipeline is created. Only a claim under the id from before it can be a dead predecessor's:
   * a later one is this process's own or a live process's sharing the id, and is never taken.
   */
  startedAt?: Date;
  logger: Logger;
  now?: () => Date;
}

export interface Pipeline {
  /** Run one tool call through every stage. Never throws: failures come back as `{ ok: false }`. */
  call(toolName: string, rawArgs: unknown, channel: CallChannel): Promise<CallOutcome>;
  /** The tools this principal may see and call (role, read-only mode, toolsets). */
  visibleTools(principal: Principal): AnyTool[];
  /** The governance policy in force, as this principal sees it (the `fraudgate://policy` resource). */
  describePolicy(principal: Principal): Record<string, unknown>;
  /**
   * Execute approved approvals nobody is waiting for (the agent's call returned APPROVAL_PENDING,
   * or the server restarted) and expire overdue ones. Safe to run from several processes.
   */
  processApprovals(): Promise<void>;
  /**
   * The part of processApprovals that settles interrupted executions, among them those this replica's
   * previous process died running: `serve` runs it once at start-up, not waiting for a sweep.
   * `predecessors`: replica ids of dead processes whose rows this process took over
   * (replica-registration.ts `takeOverDeadSiblings`): their claims are settled now too.
   */
  recoverInterrupted(predecessors?: readonly string[]): Promise<void>;
  /** Record a human decision (CLI or console); see approval-desk.ts. */
  decide: ApprovalDesk['decide'];
  /**
   * How logs name a tool: its name when registered, else `unknown#<keyed hash>` — a made-up name
   * can be personal data (`lookup +1 415 555 0191`), so it is never logged or stored raw.
   */
  toolLabel(name: string): string;
  /** Writes what is still pending (refusals counted over budget); call on shutdown, before closing the audit. */
  close(): Promise<void>;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** The reason a superseded approval carries; {@link supersedingApprovalId} reads the id back. */
const supersededReason = (newerId: string) =>
  `superseded by ${newerId}, a newer request for the same tool and target`;

/** The approval that superseded this one, from the reason `supersedeOlder` stored. */
function supersedingApprovalId(reason: string | undefined): string | undefined {
  return /^superseded by (apr_[a-z0-9]+),/.exec(reason ?? '')?.[1];
}

function toView(a: Approval): ApprovalView {
  const problem = argsIntegrityProblem(a);
  const {
    args_hash: _hash,
    args_refused: _refused,
    policy_version: _pv,
    requester_role: _r,
    requester_kind: _k,
    ...view
  } = a;
  return problem ? { ...view, args_problem: problem } : view;
}

/** The identity directory of a pipeline without a store: no mappings, an always-empty review list. */
const transientIdentities: IdentityDirectory = {
  segmentIdFor: async (siftUserId) => ({ segment_user_id: siftUserId, source: 'same' }),
  recordUnmatched: async ({ sift_user_id, tried, at }) => ({
    sift_user_id,
    tried,
    first_seen_at: at.toISOString(),
    last_seen_at: at.toISOString(),
    times_seen: 1,
  }),
  resolveUnmatched: async () => false,
  findUnmatched: async () => undefined,
  listUnmatched: async () => ({ items: [] }),
};

export function createPipeline(deps: PipelineDeps): Pipeline {
  const { config, approvals, audit, redactor, logger } = deps;
  checkPolicyNames(deps.tools, config);
  const now = deps.now ?? (() => new Date());
  const startedAt = (deps.startedAt ?? now()).getTime();
  const desk = createApprovalDesk({
    approvals,
    audit,
    logger,
    now,
    ...(deps.approvalTransaction ? { transaction: deps.approvalTransaction } : {}),
    policy: { tools: deps.tools, config },
  });
  const byName = new Map(deps.tools.map((t) => [t.name, t]));
  // An open approval under either is this policy's (see legacyApprovalPolicyVersion). New ones are
  // stored under the legacy one too, for this release (approval-store.ts): a replica of the previous
  // release, still running during a rolling deploy, finds open approvals under that version only, so
  // the same call retried there joins one opened here instead of opening a second (approving both would
  // run it twice). Stop passing it in the release that drops the legacy version.
  const policyVersions = approvalPolicyVersions(config);
  const [policyVersion, legacyPolicyVersion] = policyVersions;
  const toolConfig = {
    mapping: config.mapping,
    risk_bands: config.risk_bands,
    label_source: config.label_source,
    salesforce: config.salesforce,
    undo_window_ms: config.approvals.undo_window_ms,
  };

  // An undo's call: never weaker than the call it re-applies would be (ApprovalKey.reapplies).
  const approvalPolicyFor = (tool: AnyTool, key?: ApprovalKey): ApprovalPolicy =>
    resolveCallApproval(tool, config, key, (name) => byName.get(name));
  const where = whereToApprove(config);
  /** How `fraudgate://policy` shows a tool's approval: the mode and whether the requester may approve it. */
  const policyView = (p: ApprovalPolicy) => ({ approval: p.mode, self_approval: p.self_approval });

  const bucketFor = (tool: AnyTool): BucketConfig =>
    config.rate_limits.tools[tool.name] ?? config.rate_limits[tool.risk];

  // The parts of a tool's context that are the same for every call: built once, not per call.
  const approvalsView: ToolContext['approvals'] = {
    get: async (id) => {
      const a = await approvals.get(id);
      return a ? toView(a) : undefined;
    },
    markUndone: async (id, undoneBy) => {
      if (await approvals.transition(id, ['executed'], 'undone', { undone_by: undoneBy })) return true;
      const current = await approvals.get(id);
      return current?.state === 'undone' && current.undone_by === undoneBy;
    },
    unmarkUndone: async (id, undoneBy) => {
      // Only while it is still this undo's mark: another undo's is never taken away.
      const current = await approvals.get(id);
      if (current?.state !== 'undone' || current.undone_by !== undoneBy) return;
      await approvals.transition(id, ['undone'], 'executed', { undone_by: null as unknown as string });
    },
  };
  const identities = deps.identities ?? transientIdentities;
  const cursors = createCursorSeal(deps.cursorKey);
  const noProgress = async () => {};
  const contextFor = (
    principal: Principal,
    channel: Partial<CallChannel>,
    idempotencyKey: string,
  ): ToolContext => ({
    principal,
    clients: deps.clients,
    config: toolConfig,
    idempotencyKey,
    signal: channel.signal ?? new AbortController().signal,
    progress: channel.progress ?? noProgress,
    now,
    approvals: approvalsView,
    identities,
    cursors,
  });

  type AuditInput = Parameters<AuditLog['append']>[0];
  const record = (input: AuditInput): Promise<AuditRecord> => audit.append(input);
  const refusals = createRefusalBudget({
    audit,
    rateLimiter: deps.rateLimiter,
    bucket: config.rate_limits.refusals,
    now,
    logger,
  });
  const toolLabel = (name: string): string =>
    byName.has(name) ? name : `unknown#${redactor.hashPersonal(name)}`;

  /**
   * Audit a refused call through the principal's refusal budget (refusal-budget.ts), then throw
   * its error; past the budget the refusal is only counted and the caller gets RATE_LIMITED.
   */
  async function refuse(
    error: FraudgateError,
    principal: Principal,
    build: () => Omit<AuditInput, 'principal' | 'outcome'>,
    /** What the audit says instead of `error.message`, when that echoes something not to be stored. */
    auditMessage = error.message,
  ): Promise<never> {
    const who = principalOf(principal);
    const event = build().event;
    const outcome = await refusals.record(who, event, () => ({
      ...build(),
      principal: who,
      outcome: { code: error.code, message: auditMessage, ...(error.retryable ? { retryable: true } : {}) },
    }));
    if (outcome.recorded) {
      refusedErrors.add(error);
      throw error;
    }
    const over = new FraudgateError(
      ERROR_CODES.RATE_LIMITED,
      `Too many refused calls from ${principal.id}; wait ${Math.ceil(outcome.retryAfterMs / 1000)} s. ` +
        `This one was refused as ${error.code}: ${error.message}`,
      { retryable: true, data: { retry_after_ms: outcome.retryAfterMs, refused_as: error.code } },
    );
    refusedErrors.add(over);
    throw over;
  }
  /** The errors `refuse` threw: their outcomes say `refused` (the transports' log budget). */
  const refusedErrors = new WeakSet<object>();

  /**
   * A read's outcome joins the next group commit without the caller waiting (reads change nothing
   * upstream); if that commit fails, the record stays queued and new calls are refused meanwhile.
   */
  const recordBehind = (input: AuditInput) => {
    try {
      audit.enqueue(input);
    } catch (error) {
      logger.error('audit write failed', {
        event: input.event,
        call_id: input.call_id,
        error: String(error),
      });
    }
  };

  /**
   * Audit after the fact without letting an audit failure mask the original outcome. A record whose
   * commit failed is not dropped: it goes back to the ledger's write-behind queue, which keeps it and
   * retries (refusing new calls meanwhile), so the upstream change it reports still gets its record.
   */
  const recordQuietly = async (input: AuditInput) => {
    try {
      await record(input);
    } catch (error) {
      let queued = true;
      try {
        audit.enqueue(input);
      } catch {
        queued = false;
      }
      logger.error(queued ? 'audit write failed; the record is queued for retry' : 'audit write failed', {
        event: input.event,
        call_id: input.call_id,
        error: String(error),
      });
    }
  };

  const principalOf = (p: Principal) => ({ id: p.id, kind: p.kind, role: p.role });

  /** The fields every audit record of one validated call shares. */
  const auditFields = (
    tool: AnyTool,
    args: Record<string, unknown>,
    principal: Principal,
    /** `argsHash` is absent for reads: their records keep the (redacted) arguments, and nothing binds to them. */
    meta: { callId: string; argsHash?: string; target: string; approvalId?: string },
  ) => ({
    call_id: meta.callId,
    tool: tool.name,
    principal: principalOf(principal),
    // Masked once more by the audit; a tool's own field classes first (free-form maps: `custom_fields`).
    args_redacted: tool.redaction?.args ? redactor.redactValue(args, tool.redaction.args) : args,
    ...(meta.argsHash === undefined ? {} : { args_hash: meta.argsHash }),
    target: meta.target,
    ...(meta.approvalId ? { approval_id: meta.approvalId } : {}),
  });

  function authorize(tool: AnyTool, principal: Principal): FraudgateError | undefined {
    const notAllowed =
      whyNotAllowed(tool, principal, config) ??
      (byName.has(tool.name) ? undefined : `Role '${principal.role}' may not use ${tool.name}.`);
    if (notAllowed) return new ForbiddenError(notAllowed);
    if (tool.risk !== 'read' && principal.kind === 'user' && principal.id === UNIDENTIFIED) {
      return new ForbiddenError(
        `${tool.name} changes data, so it needs an analyst identity: set FRAUDGATE_ANALYST to the analyst's ` +
          'login or email in the MCP server configuration, then restart fraudgate.',
      );
    }
    return undefined;
  }

  function validate(tool: AnyTool, rawArgs: unknown): Record<string, unknown> {
    // A hot tool's common call is parsed by hand; anything else (and every refusal) by zod.
    const exact = tool.exactArguments?.(rawArgs ?? {});
    if (exact) return exact;
    const parsed = inputSchemaOf(tool).safeParse(rawArgs ?? {});
    if (parsed.success) return parsed.data;
    throw new InvalidInputError(
      parsed.error.issues.map((issue) => ({
        field: issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : ''),
        message: issue.message,
      })),
      `Invalid arguments for ${tool.name}`,
    );
  }

  /**
   * The channel a tool runs on. A read runs on the caller's: cancelling it stops the reads. A write,
   * once its intent is recorded, runs on a server-owned signal (the channel's `stopSignal`, else only
   * the upstream clients' own timeouts end it): a cancel or disconnect mid-run would otherwise stop
   * it between two upstream writes (a Segment identify sent, its track not) and record the half-done
   * change as failed. Progress to a caller who went away is dropped rather than failing the write.
   */
  function runChannel(tool: AnyTool, channel: Partial<CallChannel>): Partial<CallChannel> {
    if (tool.risk === 'read') return channel;
    const progress = channel.progress;
    return {
      ...(channel.stopSignal ? { signal: channel.stopSignal } : {}),
      ...(progress
        ? { progress: (done, total, message) => progress(done, total, message).catch(() => {}) }
        : {}),
    };
  }

  /** Stages 6–8 for one execution: intent record, run, outcome record. */
  async function execute(
    tool: AnyTool,
    args: Record<string, unknown>,
    principal: Principal,
    channel: Partial<CallChannel>,
    meta: {
      callId: string;
      argsHash?: string;
      target: string;
      approvalId?: string;
      idempotencyKey: string;
      /** The budgets to admit against (see `ApprovalKey.budgetKeys`); absent: the tool's. */
      budgetKeys?: BudgetKeys;
    },
  ): Promise<Record<string, unknown>> {
    const base = auditFields(tool, args, principal, meta);
    if (tool.risk === 'destructive' && deps.budgets) {
      try {
        // All checked, then counted in one store transaction: a paused or spent budget leaves no count
        // in the others (the action, run again after the lift, would otherwise be counted twice there).
        await deps.budgets.admitAll(principal, meta.budgetKeys ?? [[tool.name]], meta.target);
      } catch (thrown) {
        const e = toFraudgateError(thrown);
        await recordQuietly({
          ...base,
          event: 'rate_limited',
          outcome: { code: e.code, message: e.message, retryable: e.retryable },
        });
        throw e;
      }
    }
    if (tool.risk !== 'read' && channel.signal?.aborted) {
      // The caller cancelled (or went away) before anything started: refuse cleanly, nothing written.
      const message = 'The call was cancelled before it started; nothing was done.';
      await recordQuietly({ ...base, event: 'cancelled', outcome: { code: 'CANCELLED', message } });
      throw new FraudgateError(ERROR_CODES.CONFLICT, message, { retryable: true });
    }
    if (tool.risk !== 'read') {
      try {
        await inSpan('fraudgate.intent', () => record({ ...base, event: 'intent' }));
      } catch (error) {
        // No audit, no write: the record of intent must exist before anything changes upstream.
        throw unrecordedError(
          'The audit log could not be written, so nothing was changed; try again shortly. The operator must fix the audit log (see the server log and /readyz).',
          error,
        );
      }
    }
    const started = Date.now();
    try {
      const output = (await inSpan('fraudgate.execute', () =>
        tool.run(args, contextFor(principal, runChannel(tool, channel), meta.idempotencyKey)),
      )) as Record<string, unknown>;
      let result = output;
      // Checked by hand where the tool has such a check (hot reads): no copy of the result through zod.
      if (!tool.isExactOutput?.(output)) {
        const checked = tool.output.safeParse(output);
        if (!checked.success) {
          throw new Error(`output of ${tool.name} broke its schema: ${checked.error.message}`);
        }
        result = checked.data as Record<string, unknown>;
      }
      const executed = { ...base, event: 'executed' as const, duration_ms: Date.now() - started };
      if (tool.risk === 'read') inSpan('fraudgate.outcome', () => recordBehind(executed));
      else await inSpan('fraudgate.outcome', () => recordQuietly(executed));
      return result;
    } catch (thrown) {
      const error = toFraudgateError(thrown);
      const failed = {
        ...base,
        event: 'failed' as const,
        duration_ms: Date.now() - started,
        outcome: { code: error.code, message: error.message, retryable: error.retryable },
        ...(error.detail ? { detail: error.detail } : {}),
      };
      if (tool.risk === 'read') recordBehind(failed);
      else await recordQuietly(failed);
      if (error.code === ERROR_CODES.INTERNAL)
        logger.error('tool failed', {
          tool: tool.name,
          call_id: meta.callId,
          // The detail is a raw error message and stack: it can hold personal data, as the audit's does.
          detail: redactor.redactValue(error.detail),
        });
      throw error;
    }
  }

  /**
   * The budgets of an approved call (see `ApprovalKey.budgetKeys`): its per-call key when the tool
   * has one (re-read, e.g. the decision's category), then the tool. A failed read throws: run under
   * the tool's key alone, a BLOCK would escape the `apply_decision:block` budget, even a paused one.
   */
  async function budgetKeysOf(
    tool: AnyTool,
    args: Record<string, unknown>,
    principal: Principal,
    channel: Partial<CallChannel>,
    /** The approval's id: the key its run uses, so the tool recognises its own earlier attempt. */
    idempotencyKey: string,
  ): Promise<BudgetKeys> {
    if (tool.risk !== 'destructive' || !tool.approvalKey || !deps.budgets) return [[tool.name]];
    return budgetKeysFor(tool, await tool.approvalKey(args, contextFor(principal, channel, idempotencyKey)));
  }

  /** What an approval carries for the approver: the tool's evidence, with a plain-language `effect` always present. */
  async function evidenceFor(
    tool: AnyTool,
    args: Record<string, unknown>,
    target: string,
    ctx: ToolContext,
  ): Promise<Record<string, unknown>> {
    const evidence = tool.evidence ? await tool.evidence(args, ctx) : {};
    // Stored with the approval and shown to approvers: masked like the audit (the basis compared on
    // re-check is masked the same way both times, so it still compares).
    return redactor.redactValue(
      { effect: `Run ${tool.name} (${tool.title}) on ${target}.`, ...evidence },
      tool.redaction?.evidence,
    ) as Record<string, unknown>;
  }

  /**
   * Just before an approved action runs, re-read its evidence. If what the approval rests on (the
   * `basis`: score band, current decision, label, suppression state) changed since the approver saw
   * it, nothing runs: this approval fails with CONFLICT and a new one with the fresh evidence replaces
   * it, both audited. Returns the approval to continue with, or undefined to execute.
   */
  async function recheckEvidence(
    tool: AnyTool,
    approval: Approval,
    requester: Principal,
    channel: Partial<CallChannel>,
    claim: ExecutionClaim,
  ): Promise<Approval | undefined> {
    const seen = approval.evidence.basis;
    if (!tool.evidence || seen === undefined) return undefined;
    const auditBase = {
      call_id: randomUUID(),
      tool: tool.name,
      principal: principalOf(requester),
      target: approval.target,
      args_hash: approval.args_hash,
    };
    let fresh: Record<string, unknown>;
    try {
      fresh = await evidenceFor(
        tool,
        approval.args,
        approval.target,
        contextFor(requester, channel, approval.id),
      );
    } catch (thrown) {
      // Fail closed: without a fresh look nothing runs on the strength of an old one.
      const error = toFraudgateError(thrown);
      const message =
        `The evidence could not be re-checked just before running (${error.message}); nothing was done. ` +
        'Request the action again.';
      await recordQuietly({
        ...auditBase,
        event: 'failed',
        approval_id: approval.id,
        outcome: { code: error.code, message },
      });
      // Not moved (another process holds the execution now): still nothing runs here.
      return (
        (await approvals.transition(
          approval.id,
          ['executing'],
          'failed',
          { executed_at: now().toISOString(), error: { code: error.code, message } },
          claim,
        )) ??
        (await approvals.get(approval.id)) ??
        approval
      );
    }
    const changes = describeBasisChange(seen, fresh.basis);
    if (changes.length === 0) return undefined;
    // The old approval closes first: it is still open (executing), and the binding allows one open approval.
    const replacementId = newApprovalId();
    const message =
      `The evidence changed after approval (${changes.join('; ')}); nothing was done. ` +
      `Approval ${replacementId}, with the new evidence, replaces it and needs a new decision.`;
    const closed = await approvals.transition(
      approval.id,
      ['executing'],
      'failed',
      { executed_at: now().toISOString(), error: { code: ERROR_CODES.CONFLICT, message } },
      claim,
    );
    // Another process took this execution over meanwhile (the 10-minute rule): it decides, not us.
    if (!closed) return (await approvals.get(approval.id)) ?? approval;
    const { approval: replacement } = await approvals.create({
      id: replacementId,
      // The same binding (call, requester, policy): only the evidence and the clock are new.
      tool: approval.tool,
      args: approval.args,
      args_hash: approval.args_hash,
      target: approval.target,
      requester: approval.requester,
      requester_role: approval.requester_role,
      requester_kind: approval.requester_kind,
      mode: approval.mode,
      policy_version: approval.policy_version,
      // Findable by a previous-release replica too, as a new approval is (see policyVersions).
      ...(approval.policy_version === policyVersion
        ? { previous_release_policy_version: legacyPolicyVersion }
        : {}),
      evidence:
        approval.evidence.requester_identity === undefined
          ? fresh
          : { ...fresh, requester_identity: approval.evidence.requester_identity },
      created_at: now().toISOString(),
      expires_at: new Date(now().getTime() + config.approvals.ttl_ms).toISOString(),
    });
    await recordQuietly({
      ...auditBase,
      event: 'evidence_changed',
      approval_id: approval.id,
      outcome: { code: ERROR_CODES.CONFLICT, message },
    });
    await recordQuietly({
      ...auditBase,
      event: 'approval_requested',
      approval_id: replacement.id,
      outcome: { message: `replaces ${approval.id}: the evidence changed` },
    });
    return replacement;
  }

  /**
   * An approved action the current policy forbids: it fails (FORBIDDEN) before anything is claimed
   * or sent upstream, with its audit record. Another process that moved it meanwhile decides instead.
   */
  async function refuseApproved(
    approval: Approval,
    tool: AnyTool,
    requester: Principal,
    forbidden: FraudgateError,
    interrupted: boolean,
  ): Promise<Approval> {
    if (interrupted) {
      return failInterrupted(
        approval,
        tool,
        requester,
        `policy now forbids running it again (${forbidden.message})`,
      );
    }
    return failApproved(approval, tool, requester, {
      code: ERROR_CODES.FORBIDDEN,
      message:
        `Policy now forbids this action (${forbidden.message}); nothing was done. ` +
        'Request it again once the policy allows it.',
    });
  }

  /**
   * An interrupted execution (re-run after a crash) that will not be re-run, for `why`: its first
   * attempt was cut off mid-call and may have changed the upstream, so "nothing was done" would be
   * untrue. Worded and coded like the recovery of a non-idempotent execution.
   */
  async function failInterrupted(
    approval: Approval,
    tool: AnyTool,
    requester: Principal,
    why: string,
  ): Promise<Approval> {
    // An undo marks the action it reverses before restoring it; cut off after that, the mark is not
    // taken back here (the restore may have happened), and the message says so.
    const undone = typeof approval.args.approval_id === 'string' ? approval.args.approval_id : undefined;
    const marked =
      tool.name === 'undo_action' &&
      undone !== undefined &&
      (await approvals.get(undone))?.state === 'undone';
    return failApproved(approval, tool, requester, {
      code: ERROR_CODES.INTERNAL,
      message:
        `Execution was interrupted (the server stopped mid-call) and may have reached ${upstreamOf(tool)}; ` +
        `${why}, so it was not re-run. ` +
        (marked ? `Approval ${undone} stays marked undone. ` : '') +
        'Check the upstream before requesting it again.',
    });
  }

  /**
   * An approved (unclaimed) action that will never run: failed with this error and audited.
   * Another process that moved it meanwhile decides instead.
   */
  async function failApproved(
    approval: Approval,
    tool: AnyTool,
    requester: Principal,
    error: { code: FraudgateError['code']; message: string },
  ): Promise<Approval> {
    const failed = await approvals.transition(approval.id, ['approved'], 'failed', {
      executed_at: now().toISOString(),
      error,
    });
    if (!failed) return (await approvals.get(approval.id)) ?? approval;
    await recordQuietly({
      call_id: randomUUID(),
      tool: tool.name,
      principal: principalOf(requester),
      target: approval.target,
      args_hash: approval.args_hash,
      approval_id: approval.id,
      event: 'failed',
      outcome: error,
    });
    return failed;
  }

  /**
   * Run an approved approval exactly once: whoever wins the approved → executing compare-and-set runs
   * it, after re-checking its evidence (skipped when re-running an interrupted execution, whose first
   * attempt may itself have changed the evidence).
   */
  async function executeApproval(
    approval: Approval,
    channel: Partial<CallChannel>,
    callId: string,
    options: {
      recheck?: boolean;
      /** The active budget pauses as read once for a sweep; absent: read for this approval. */
      pauses?: readonly BudgetPause[];
    } = {},
  ): Promise<Approval> {
    const tool = byName.get(approval.tool);
    const requester: Principal = {
      id: approval.requester,
      role: approval.requester_role as Principal['role'],
      kind: approval.requester_kind as Principal['kind'],
    };
    // Only the arguments the approval was requested and decided under run: fail closed otherwise.
    const tampered = argsIntegrityProblem(approval);
    if (tampered && tool) {
      logger.warn('approved action not run: its stored arguments failed the integrity check', {
        approval_id: approval.id,
        tool: approval.tool,
      });
      return options.recheck === false
        ? failInterrupted(
            approval,
            tool,
            requester,
            `its stored arguments failed the integrity check (${tampered})`,
          )
        : failApproved(approval, tool, requester, integrityFailure(tampered));
    }
    // The policy may have changed since the request (read-only mode, a toolset switched off, the
    // requester's role): an approval never runs what its requester could not call now.
    const forbidden = tool ? authorize(tool, requester) : undefined;
    if (tool && forbidden)
      return refuseApproved(approval, tool, requester, forbidden, options.recheck === false);
    let budgetKeys: BudgetKeys = [];
    try {
      if (tool) budgetKeys = await budgetKeysOf(tool, approval.args, requester, channel, approval.id);
    } catch (thrown) {
      const error = toFraudgateError(thrown);
      // A refusal that no retry changes (undo_action of an action another undo reversed; a decision
      // gone from Sift's catalogue): it fails now, naming why, instead of waiting out its expiry.
      if (tool && FINAL_REFUSALS.has(error.code)) {
        const why = String(redactor.redactValue(error.message));
        // A re-run after a crash: the first attempt may have reached the upstream.
        if (options.recheck === false) {
          return failInterrupted(approval, tool, requester, `it can no longer run (${why})`);
        }
        const message = `The approved action can no longer run (${why}); nothing was done.`;
        return failApproved(approval, tool, requester, { code: error.code, message });
      }
      // Fail closed: without its budget key nothing runs; it stays approved and the next sweep retries.
      logger.warn('approved action waits: its budget key could not be read', {
        approval_id: approval.id,
        tool: approval.tool,
        code: error.code,
        error: redactor.redactValue(error.message),
      });
      return approval;
    }
    // A paused budget: the approved action waits, still approved, and runs once a human lifts the pause.
    if (
      tool?.risk === 'destructive' &&
      deps.budgets &&
      (await pausedForAny(deps.budgets, requester.id, budgetKeys, options.pauses))
    ) {
      return approval;
    }
    // Counted before the claim and uncounted after the outcome is stored, so an `executing` approval
    // under this replica id that is not counted here is never one this process is running.
    executingHere.set(approval.id, (executingHere.get(approval.id) ?? 0) + 1);
    try {
      return await claimAndRun(approval, tool, requester, budgetKeys, channel, callId, options.recheck);
    } finally {
      const attempts = (executingHere.get(approval.id) ?? 1) - 1;
      if (attempts > 0) executingHere.set(approval.id, attempts);
      else executingHere.delete(approval.id);
    }
  }

  async function claimAndRun(
    approval: Approval,
    tool: AnyTool | undefined,
    requester: Principal,
    budgetKeys: BudgetKeys,
    channel: Partial<CallChannel>,
    callId: string,
    recheck: boolean | undefined,
  ): Promise<Approval> {
    // executed_at marks when execution started until it finishes; a crash leaves it behind (see below).
    // Always written: a claim by a process without a replica id must not keep an earlier claimer's.
    const claimedAt = now();
    // Never past its expiry, even if the sweep that marks it expired has not run or failed. A re-run
    // of an interrupted execution (no re-check) was claimed in time once; it is finished, not dropped.
    const claimed = await approvals.transition(
      approval.id,
      ['approved'],
      'executing',
      {
        executed_at: claimedAt.toISOString(),
        executed_by: deps.replicaId ?? (null as unknown as string),
      },
      undefined,
      recheck === false ? undefined : claimedAt,
    );
    if (!claimed) return (await approvals.get(approval.id)) ?? approval;
    // Every transition out of `executing` below is guarded by this claim: if the 10-minute rule
    // handed a slow execution to another process meanwhile, this late outcome must not overwrite its.
    const ours: ExecutionClaim = { executed_at: claimed.executed_at, executed_by: claimed.executed_by };
    // This process's outcome arrived after the execution was taken over: the row is the other's to settle.
    const takenOver = async (outcome: string): Promise<Approval> => {
      logger.warn('approval outcome discarded: its execution was taken over by another process', {
        approval_id: approval.id,
        outcome,
      });
      return (await approvals.get(approval.id)) ?? approval;
    };
    if (!tool) {
      return (
        (await approvals.transition(
          approval.id,
          ['executing'],
          'failed',
          { error: { code: ERROR_CODES.INTERNAL, message: `Tool ${approval.tool} no longer exists.` } },
          ours,
        )) ?? approval
      );
    }
    if (recheck !== false) {
      const instead = await recheckEvidence(tool, approval, requester, channel, ours);
      if (instead) return instead;
    }
    try {
      const output = await execute(tool, approval.args, requester, channel, {
        callId,
        argsHash: approval.args_hash,
        target: approval.target,
        approvalId: approval.id,
        idempotencyKey: approval.id,
        budgetKeys,
      });
      const executed = await approvals.transition(
        approval.id,
        ['executing'],
        'executed',
        {
          executed_at: now().toISOString(),
          // Stored masked (it outlives the call, readable by get_approval_status and the console);
          // the call that ran it answers with the real output.
          result: redactor.redactValue(output, tool.redaction?.result),
        },
        ours,
      );
      return executed ? { ...executed, result: output } : await takenOver('executed');
    } catch (thrown) {
      if (thrown instanceof BudgetPausedError) {
        // Paused meanwhile: back to approved (nothing ran), to run after the lift.
        const clear = null as unknown as string;
        return (
          (await approvals.transition(
            approval.id,
            ['executing'],
            'approved',
            { executed_at: clear, executed_by: clear },
            ours,
          )) ?? (await takenOver('budget paused'))
        );
      }
      const error = toFraudgateError(thrown);
      return (
        (await approvals.transition(
          approval.id,
          ['executing'],
          'failed',
          {
            executed_at: now().toISOString(),
            error: { code: error.code, message: String(redactor.redactValue(error.message)) },
          },
          ours,
        )) ?? (await takenOver('failed'))
      );
    }
  }

  /**
   * An approval left `executing` longer than any call can take was interrupted (the process died
   * mid-call); so was one claimed under this replica's id before this process started that it is
   * not running (the replica was restarted: its previous process made that claim). An idempotent
   * tool is run again — its upstream keys (approval id as Segment messageId, the same label) make a
   * repeat harmless; any other tool is marked failed, because whether the first attempt reached the
   * upstream is unknown and a blind retry could duplicate it.
   *
   * Each recovery can be a full upstream call, so the rows listed up front go stale: meanwhile a
   * claim may have been given up (a budget pause) and made again by another replica. Every
   * transition here is therefore guarded by the very claim that was listed.
   */
  /** Every `executing` approval, oldest first, in pages (a start-up must not miss old orphans behind new ones). */
  async function everyExecuting(): Promise<Approval[]> {
    const all: Approval[] = [];
    let after: Pick<Approval, 'created_at' | 'id'> | undefined;
    for (let page = 0; page < MAX_RECOVERY_PAGES; page += 1) {
      const batch = await approvals.list({
        states: ['executing'],
        limit: RECOVERY_PAGE,
        oldestFirst: true,
        ...(after ? { after } : {}),
      });
      all.push(...batch);
      const last = batch.at(-1);
      if (batch.length < RECOVERY_PAGE || !last) break;
      after = { created_at: last.created_at, id: last.id };
    }
    return all;
  }

  async function recoverInterrupted(predecessors: readonly string[] = []): Promise<void> {
    const staleBefore = now().getTime() - INTERRUPTED_AFTER_MS;
    for (const stuck of await everyExecuting()) {
      if (!stuck.executed_at) continue;
      const claimedAt = Date.parse(stuck.executed_at);
      const underOurId = deps.replicaId !== undefined && stuck.executed_by === deps.replicaId;
      // Claimed by a dead process whose id this one took over: it can claim nothing more.
      const byPredecessor = stuck.executed_by !== undefined && predecessors.includes(stuck.executed_by);
      const orphaned = byPredecessor || (underOurId && claimedAt < startedAt && !executingHere.has(stuck.id));
      if (underOurId && claimedAt >= startedAt) await noticeTwin(stuck);
      if (!orphaned && claimedAt > staleBefore) continue;
      const claim: ExecutionClaim = { executed_at: stuck.executed_at, executed_by: stuck.executed_by };
      const tool = byName.get(stuck.tool);
      if (tool?.idempotent) {
        const clear = null as unknown as string;
        const requeued = await approvals.transition(
          stuck.id,
          ['executing'],
          'approved',
          // Cleared, so no later claim (say, by a replica of an older version) carries this one's id.
          { executed_at: clear, executed_by: clear },
          claim,
        );
        if (requeued) await executeApproval(requeued, {}, randomUUID(), { recheck: false });
        continue;
      }
      await approvals.transition(
        stuck.id,
        ['executing'],
        'failed',
        {
          error: {
            code: ERROR_CODES.INTERNAL,
            message:
              'Execution was interrupted (the server stopped mid-call); whether it reached the upstream is unknown. ' +
              'Check the upstream before requesting it again.',
          },
        },
        claim,
      );
    }
  }

  let twinWarned = false;

  /**
   * A claim under this replica id made since this process started, that this process is not running
   * and still holds, was made by another live process using the same id (e.g. a `replica_id` in a
   * config file shared by several stdio processes): say so once. executingHere has an entry from
   * before its claim's executed_at is taken until after its outcome is stored, so a claim older than
   * the look at executingHere and still in place after it cannot be this process's.
   */
  async function noticeTwin(listed: Approval): Promise<void> {
    if (twinWarned || executingHere.has(listed.id)) return;
    const lookedAt = now().getTime();
    if (Date.parse(listed.executed_at ?? '') >= lookedAt) return;
    const current = await approvals.get(listed.id);
    if (
      current?.state !== 'executing' ||
      current.executed_at !== listed.executed_at ||
      current.executed_by !== listed.executed_by
    ) {
      return;
    }
    twinWarned = true;
    logger.warn(
      'another running process uses this replica id; give each process its own (FRAUDGATE_REPLICA_ID), ' +
        'or each may take over the leases of the other',
      { replica_id: deps.replicaId, approval_id: listed.id },
    );
  }

  /** Where the last sweep of approved approvals stopped: the next one continues after it. */
  let approvedCursor: Pick<Approval, 'created_at' | 'id'> | undefined;

  /**
   * Run approved approvals nobody is waiting for, oldest first. Those whose budget is paused stay
   * approved and are stepped over (they would otherwise fill every page and starve the rest), so
   * the sweep pages on, from where the previous one stopped, until it has run a page's worth or
   * read a bounded number of pages; at the end of the backlog it starts again from the oldest.
   */
  async function runApproved(): Promise<void> {
    // One read of the pauses per sweep, not one per approval; the execution itself still admits.
    const pauses = deps.budgets ? await deps.budgets.activePauses() : [];
    let ran = 0;
    for (let page = 0; page < APPROVED_PAGES_PER_SWEEP && ran < APPROVED_PAGE; page++) {
      const batch = await approvals.list({
        states: ['approved'],
        limit: APPROVED_PAGE,
        oldestFirst: true,
        ...(approvedCursor ? { after: approvedCursor } : {}),
      });
      for (const approved of batch) {
        approvedCursor = { created_at: approved.created_at, id: approved.id };
        const after = await executeApproval(approved, {}, randomUUID(), { pauses });
        if (after.state !== 'approved') ran += 1;
        if (ran >= APPROVED_PAGE) break;
      }
      if (batch.length < APPROVED_PAGE) {
        approvedCursor = undefined;
        break;
      }
    }
  }

  function pendingError(approval: Approval): FraudgateError {
    if (approval.state === 'approved') {
      return new FraudgateError(
        ERROR_CODES.APPROVAL_PENDING,
        `Approval ${approval.id} (${approval.tool} on ${approval.target}) is approved but has not run yet, e.g. ` +
          'because a blast-radius budget is paused until a human lifts it; it runs by itself. Check it with ' +
          `get_approval_status {"approval_id":"${approval.id}"}; do not call ${approval.tool} again.`,
        { retryable: true, data: { approval_id: approval.id, state: approval.state } },
      );
    }
    return new FraudgateError(
      ERROR_CODES.APPROVAL_PENDING,
      `${approval.tool} on ${approval.target} needs a human's approval` +
        (approval.mode === 'four_eyes' ? ' by an approver other than the requester' : '') +
        `. Approval ${approval.id} is pending until ${humanTime(approval.expires_at)}. Only a human approver, signed in ` +
        `with their own credential, can decide it ${where}; tell the user. ` +
        `Check the outcome with get_approval_status {"approval_id":"${approval.id}"}; do not call ${approval.tool} again meanwhile.`,
      {
        retryable: true,
        data: { approval_id: approval.id, state: approval.state, expires_at: approval.expires_at },
      },
    );
  }

  /** Turn a settled approval into the call's result. */
  function settle(approval: Approval): Record<string, unknown> {
    // Undone later: it ran, and this is what it did.
    if (approval.state === 'executed' || approval.state === 'undone')
      return approval.result as Record<string, unknown>;
    if (approval.state === 'failed') {
      throw new FraudgateError(
        (approval.error?.code as FraudgateError['code'] | undefined) ?? ERROR_CODES.UPSTREAM_ERROR,
        `Approval ${approval.id} was granted but the action failed: ${approval.error?.message ?? 'unknown error'}`,
        { data: { approval_id: approval.id } },
      );
    }
    if (approval.state === 'superseded') {
      const newer = supersedingApprovalId(approval.reason);
      // Final for this call: calling again would open yet another request and supersede the newer one.
      throw new FraudgateError(
        ERROR_CODES.CONFLICT,
        `Approval ${approval.id} (${approval.tool} on ${approval.target}) was superseded by ` +
          `${newer ?? 'a newer request'}, a newer request for the same tool and target; it will never run, ` +
          `and this call did nothing. The newer request stands in its place: do not call ${approval.tool} again for this.`,
        {
          retryable: false,
          data: {
            approval_id: approval.id,
            state: approval.state,
            ...(newer === undefined ? {} : { superseded_by: newer }),
          },
        },
      );
    }
    if (approval.state === 'denied' || approval.state === 'expired') {
      throw new FraudgateError(
        ERROR_CODES.APPROVAL_DENIED,
        approval.state === 'expired'
          ? `Approval ${approval.id} expired without a decision; nothing was done.`
          : `Approval ${approval.id} was denied by ${approval.decided_by ?? 'an approver'}` +
              `${approval.reason ? `: ${approval.reason}` : ''}. Nothing was done.`,
        { data: { approval_id: approval.id, state: approval.state } },
      );
    }
    throw pendingError(approval);
  }

  /** Wait (bounded, with progress) for a decision; execute it when approved. */
  async function awaitDecision(
    approval: Approval,
    channel: CallChannel,
    callId: string,
  ): Promise<Record<string, unknown>> {
    const waitMs = channel.waitMs ?? config.approvals.wait_ms;
    const deadline = Date.now() + waitMs;
    const total = Math.max(1, Math.ceil(waitMs / 1000));
    let lastProgressAt = 0;
    let current: Approval = approval;
    let seen = deps.approvalSignal?.version(approval.id) ?? 0;
    for (;;) {
      // The approved action runs on the server's behalf, never on the requester's channel: the
      // requester cancelling or going away mid-run must not stop it half-done (see runChannel).
      if (current.state === 'approved')
        current = await executeApproval(current, { progress: channel.progress }, callId);
      if (current.state !== 'pending' && current.state !== 'approved' && current.state !== 'executing')
        return settle(current);
      if (Date.now() >= deadline || channel.signal.aborted) return settle(current);
      if (Date.now() - lastProgressAt >= 1000) {
        lastProgressAt = Date.now();
        const elapsed = Math.min(total, Math.floor((Date.now() - (deadline - waitMs)) / 1000));
        await channel.progress(
          elapsed,
          total,
          `Waiting for a human approver to decide ${current.id} ${where}`,
        );
      }
      // Woken by the decision (approval-signal.ts) or, failing that, at the next poll.
      const pollMs = Math.min(config.approvals.poll_ms, Math.max(0, deadline - Date.now()));
      if (deps.approvalSignal) await deps.approvalSignal.wait(current.id, pollMs, seen, channel.signal);
      else await sleep(pollMs, channel.signal);
      seen = deps.approvalSignal?.version(current.id) ?? 0;
      await expireOverdue();
      current = (await approvals.get(current.id)) ?? current;
    }
  }

  const expireOverdue = () => desk.expireOverdue();

  async function approve(
    tool: AnyTool,
    args: Record<string, unknown>,
    principal: Principal,
    channel: CallChannel,
    meta: { callId: string; argsHash: string; target: string; budgetKeys: BudgetKeys },
    mode: ApprovalMode,
  ): Promise<Record<string, unknown>> {
    const base = auditFields(tool, args, principal, meta);
    // `confirm` survives policy resolution only where the requester may approve their own call.

    await expireOverdue();
    const open = await approvals.findOpen({
      tool: tool.name,
      args_hash: meta.argsHash,
      target: meta.target,
      requester: principal.id,
      policy_version: policyVersions,
    });
    if (open) {
      // The same call again: it joins the open approval, and like every call it leaves a record.
      await record({ ...base, event: 'approval_requested', approval_id: open.id });
      return awaitDecision(open, channel, meta.callId);
    }

    if (mode === 'confirm' && channel.elicit) {
      const answer = await channel.elicit(
        `Confirm ${tool.title} (${tool.name}) on ${meta.target} with ${JSON.stringify(redactor.redactValue(args))}? ` +
          'This is recorded in the audit log under your name.',
      );
      if (answer !== 'accept') {
        await recordQuietly({
          ...base,
          event: 'declined',
          outcome: { code: ERROR_CODES.APPROVAL_DENIED, message: `user ${answer}` },
        });
        throw new FraudgateError(
          ERROR_CODES.APPROVAL_DENIED,
          `The user did not confirm (${answer}); nothing was done.`,
        );
      }
      await record({ ...base, event: 'confirmed' });
      return execute(tool, args, principal, channel, { ...meta, idempotencyKey: `confirm:${meta.callId}` });
    }

    if (!config.approvals.out_of_band) {
      throw new ForbiddenError(
        `${tool.name} needs approval (${mode}) but no approval channel is available: ` +
          (mode === 'confirm'
            ? 'this client does not support elicitation, and out-of-band approvals are disabled. '
            : 'out-of-band approvals are disabled. ') +
          'The operator must enable approvals.out_of_band in the fraudgate configuration so human approvers can decide.',
      );
    }

    let evidence: Record<string, unknown>;
    const toolContext = contextFor(principal, channel, meta.callId);
    try {
      evidence = await evidenceFor(tool, args, meta.target, toolContext);
    } catch (thrown) {
      // Approvers must still see that evidence is missing rather than the request failing, and
      // what approving does in the tool's own words when it can say so without the evidence.
      const error = toFraudgateError(thrown);
      const effect = await (async () => tool.effect?.(args, toolContext))().catch(() => undefined);
      evidence = redactor.redactValue(
        {
          effect: effect ?? `Run ${tool.name} (${tool.title}) on ${meta.target}.`,
          unavailable: error.message,
        },
        tool.redaction?.evidence,
      ) as Record<string, unknown>;
    }
    // The approver sees that the requester's name is only a claim (four-eyes still compares it).
    if (principal.declared) evidence = { ...evidence, requester_identity: SELF_DECLARED_REQUESTER };
    const request: NewApproval = {
      id: newApprovalId(),
      tool: tool.name,
      args,
      args_hash: meta.argsHash,
      target: meta.target,
      requester: principal.id,
      requester_role: principal.role,
      requester_kind: principal.kind,
      mode,
      policy_version: policyVersion,
      previous_release_policy_version: legacyPolicyVersion,
      evidence,
      created_at: now().toISOString(),
      expires_at: new Date(now().getTime() + config.approvals.ttl_ms).toISOString(),
    };
    // Not new: the same call opened it meanwhile (on this replica or another); like a repeat above, it
    // joins that one, and either way the call leaves its record.
    const requested = ({ approval, created }: { approval: Approval; created: boolean }): AuditInput => ({
      ...base,
      event: 'approval_requested',
      approval_id: approval.id,
      ...(created ? {} : { outcome: { message: 'joined the open approval for the same call' } }),
    });
    const { approval: created, created: isNew } = deps.approvalTransaction
      ? await deps.approvalTransaction(async (tx) => {
          const result = await tx.approvals.create(request);
          await audit.appendIn(tx.sql, requested(result));
          return result;
        })
      : await approvals.create(request).then(async (result) => {
          await record(requested(result));
          return result;
        });
    if (isNew) await supersedeOlder(tool, created, base);
    return awaitDecision(created, channel, meta.callId);
  }

  /**
   * A newer request for the same tool and target replaces an older pending one (two BLOCK decisions
   * must not leave two suppressions waiting for a human): the older one becomes `superseded`,
   * audited, and can no longer be approved.
   */
  async function supersedeOlder(tool: AnyTool, newer: Approval, base: ReturnType<typeof auditFields>) {
    const keyOf = (approval: Approval) => tool.supersedeKey?.(approval.args) ?? approval.target;
    const key = keyOf(newer);
    const pending = await approvals.list({ states: ['pending'], limit: 1000 });
    for (const older of pending) {
      if (older.id === newer.id || older.tool !== newer.tool || keyOf(older) !== key) continue;
      const reason = supersededReason(newer.id);
      const patch = { decided_at: now().toISOString(), reason };
      // One pending approval per tool and target, whoever asked: the ledger says when the newer
      // request was someone else's (the approval's own reason, shown to its requester, does not).
      const byWhom =
        newer.requester === older.requester
          ? ''
          : `; the newer request is ${newer.requester}'s, the superseded one was ${older.requester}'s`;
      const superseded: AuditInput = {
        ...base,
        event: 'superseded',
        approval_id: older.id,
        outcome: { code: 'SUPERSEDED', message: reason + byWhom },
      };
      if (!deps.approvalTransaction) {
        const moved = await approvals.transition(older.id, ['pending'], 'superseded', patch);
        if (moved) await recordQuietly(superseded);
        continue;
      }
      try {
        await deps.approvalTransaction(async (tx) => {
          const moved = await tx.approvals.transition(older.id, ['pending'], 'superseded', patch);
          if (moved) await audit.appendIn(tx.sql, superseded);
        });
      } catch (error) {
        // Rolled back with its record: the older approval stays pending (an approver can still deny it).
        logger.error('audit write failed', {
          event: 'superseded',
          approval_id: older.id,
          error: String(error),
        });
      }
    }
  }

  /** `dry_run: true`: read the current state and report what would change; no write, no approval. */
  async function planOnly(
    tool: AnyTool,
    args: Record<string, unknown>,
    principal: Principal,
    channel: CallChannel,
    meta: { callId: string; argsHash: string; target: string; mode: ApprovalMode },
  ): Promise<Record<string, unknown>> {
    if (!tool.plan) {
      throw new FraudgateError(ERROR_CODES.INTERNAL, `${tool.name} cannot dry-run.`, {
        detail: 'tool has no plan()',
      });
    }
    let plan: Awaited<ReturnType<NonNullable<AnyTool['plan']>>>;
    try {
      plan = await tool.plan(args, contextFor(principal, channel, `dry:${meta.callId}`));
    } catch (thrown) {
      // A dry run that fails (e.g. no lead_id nor email) is a call like any other: it leaves a record.
      const e = toFraudgateError(thrown);
      await recordQuietly({
        ...auditFields(tool, args, principal, meta),
        event: e.code === ERROR_CODES.INVALID_INPUT ? 'invalid' : 'failed',
        outcome: { code: e.code, message: e.message, retryable: e.retryable },
      });
      throw e;
    }
    await recordQuietly({ ...auditFields(tool, args, principal, meta), event: 'dry_run' });
    return { dry_run: true, tool: tool.name, target: meta.target, approval_required: meta.mode, ...plan };
  }

  async function callInner(toolName: string, rawArgs: unknown, channel: CallChannel, callId: string) {
    // Fail closed: a call that cannot be recorded does not run (not even a read or a refusal).
    audit.assertWritable();
    const principal = channel.principal;
    const tool = byName.get(toolName);
    // Refused calls keep a bounded summary of their arguments, never the arguments: a refusal
    // must not be a way to write megabytes (or unvalidated personal data) into the audit.
    const refusal = (event: 'invalid' | 'forbidden') => () => ({
      event,
      call_id: callId,
      tool: toolLabel(toolName),
      args_summary: summarizeArguments(rawArgs === undefined ? {} : rawArgs),
    });
    // Bounds before any other work: nothing below (zod, the redactor, hashing) sees hostile shapes.
    const bounds = checkArgumentBounds(rawArgs);
    if (bounds) {
      return refuse(
        new InvalidInputError([{ field: bounds.field, message: bounds.message }], 'Arguments refused'),
        principal,
        refusal('invalid'),
      );
    }
    if (!tool) {
      return refuse(
        // The name is echoed to the caller who sent it; the audit keeps only its keyed hash (toolLabel).
        new InvalidInputError(
          [{ field: 'name', message: `unknown tool '${toolName}'; see tools/list` }],
          'Unknown tool',
        ),
        principal,
        refusal('invalid'),
        'Unknown tool (its name is recorded only as the keyed hash in `tool`).',
      );
    }
    const forbidden = inSpan('fraudgate.authorize', () => authorize(tool, principal));
    if (forbidden) return refuse(forbidden, principal, refusal('forbidden'));
    let args: Record<string, unknown>;
    try {
      args = inSpan('fraudgate.validate', () => validate(tool, rawArgs));
    } catch (error) {
      return refuse(toFraudgateError(error), principal, refusal('invalid'));
    }
    // dry_run is a mode of the call, not an argument of the action: it is never part of an approval.
    const dryRun = args.dry_run === true;
    // Only when present: deleting a property slows every later use of the object (V8 dictionary mode).
    if ('dry_run' in args) delete args.dry_run;
    // The canonical hash binds approvals and identifies a write's arguments; a read that runs needs
    // none (its record keeps the redacted arguments), so it is computed only on the paths that use it.
    let argsHash: string | undefined;
    const hashArgs = () => (argsHash ??= sha256Hex(canonicalJson(args)));
    const target = tool.target?.(args) ?? tool.name;
    let limit: RateLimitDecision;
    try {
      const limiter = deps.rateLimiter;
      const key = `${principal.id}\u0000${tool.name}`;
      // An in-process store answers at once: no await (and no microtask turn) for it.
      const taken = inSpan('fraudgate.rate_limit', () =>
        limiter.takeNow ? limiter.takeNow(key, bucketFor(tool)) : limiter.take(key, bucketFor(tool)),
      );
      limit = taken instanceof Promise ? await taken : taken;
    } catch (thrown) {
      // Fail closed: without a working limiter nothing runs. Not a bug (INTERNAL) but an outage the
      // caller can retry through, and like every refusal it is audited.
      logger.warn('rate-limit store unavailable; call refused', { tool: tool.name, error: String(thrown) });
      const error = new FraudgateError(
        ERROR_CODES.UPSTREAM_ERROR,
        'The rate-limit store is unavailable, so nothing was done; try again shortly.',
        { retryable: true },
      );
      return refuse(error, principal, () => ({
        event: 'unavailable',
        call_id: callId,
        tool: tool.name,
        args_hash: hashArgs(),
        target,
      }));
    }
    if (!limit.allowed) {
      const error = new FraudgateError(
        ERROR_CODES.RATE_LIMITED,
        `Too many ${tool.name} calls for ${principal.id}; try again in ${Math.ceil(limit.retryAfterMs / 1000)} s.`,
        { retryable: true, data: { retry_after_ms: limit.retryAfterMs } },
      );
      return refuse(error, principal, () => ({
        event: 'rate_limited',
        call_id: callId,
        tool: tool.name,
        args_hash: hashArgs(),
        target,
      }));
    }
    const meta = { callId, target };
    let approvalKey: ApprovalKey | undefined;
    if (tool.approvalKey) {
      try {
        approvalKey = await tool.approvalKey(args, contextFor(principal, channel, callId));
      } catch (thrown) {
        const e = toFraudgateError(thrown);
        await recordQuietly({
          event: e.code === ERROR_CODES.INVALID_INPUT ? 'invalid' : 'failed',
          call_id: callId,
          tool: tool.name,
          principal: principalOf(principal),
          args_hash: hashArgs(),
          target,
          outcome: { code: e.code, message: e.message, retryable: e.retryable },
        });
        throw e;
      }
    }
    const { mode } = approvalPolicyFor(tool, approvalKey);
    if (dryRun) return planOnly(tool, args, principal, channel, { ...meta, argsHash: hashArgs(), mode });
    const budgetKeys = approvalKey ? budgetKeysFor(tool, approvalKey) : [[tool.name]];
    if (mode !== 'none')
      return inSpan(
        'fraudgate.approve',
        () => approve(tool, args, principal, channel, { ...meta, argsHash: hashArgs(), budgetKeys }, mode),
        () => ({ attributes: { 'fraudgate.approval_mode': mode } }),
      );
    // Awaited rather than returned: an async function resolving to another promise takes two more
    // microtask turns than one awaiting it.
    return await execute(tool, args, principal, channel, {
      ...meta,
      ...(tool.risk === 'read' ? {} : { argsHash: hashArgs() }),
      budgetKeys,
      idempotencyKey: channel.idempotencyKey ?? `call:${callId}`,
    });
  }

  return {
    async call(toolName, rawArgs, channel) {
      const callId = randomUUID();
      try {
        const output = await callInner(toolName, rawArgs, channel, callId);
        return { ok: true, output, callId };
      } catch (thrown) {
        const error = toFraudgateError(thrown);
        if (error.code === ERROR_CODES.INTERNAL)
          logger.error('call failed', {
            tool: toolName,
            call_id: callId,
            detail: redactor.redactValue(error.detail),
          });
        return refusedErrors.has(error)
          ? { ok: false, error, callId, refused: true }
          : { ok: false, error, callId };
      }
    },

    visibleTools(principal) {
      return deps.tools.filter((t) => isVisibleTo(t, principal, config));
    },

    describePolicy(principal) {
      return {
        policy_version: policyVersion,
        principal: principalOf(principal),
        read_only: config.read_only,
        toolsets: config.toolsets.length > 0 ? config.toolsets : 'all',
        tools: deps.tools
          .filter((t) => isVisibleTo(t, principal, config))
          .map((t) => ({
            name: t.name,
            risk: t.risk,
            ...policyView(approvalPolicyFor(t)),
            ...(t.approvalKeys
              ? {
                  per_call: Object.fromEntries(
                    t.approvalKeys.map((k) => [k.key, policyView(approvalPolicyFor(t, k))]),
                  ),
                }
              : {}),
            ...(t.reapplies
              ? {
                  approval_rule:
                    `each call: the stricter of this and what the call it re-applies needs ` +
                    `(${t.reapplies.join(', ')}, with its call key); self-approval only if both allow it`,
                }
              : {}),
            rate_limit: bucketFor(t),
          })),
        per_key_approvals: config.approvals.tools,
        // Destructive tools need an approver other than the requester unless listed here (explicit opt-in).
        self_approval_opt_in: config.approvals.self_approval,
        approvals: {
          out_of_band: config.approvals.out_of_band,
          ttl_ms: config.approvals.ttl_ms,
          wait_ms: config.approvals.wait_ms,
        },
        risk_bands: config.risk_bands,
        mapping: config.mapping,
      };
    },

    async processApprovals() {
      await expireOverdue();
      await recoverInterrupted();
      await runApproved();
    },

    recoverInterrupted,

    decide: (approvalId, decision) => desk.decide(approvalId, decision),

    toolLabel,

    close: () => refusals.flush(),
  };
}

/**
 * Approvals some pipeline of this process may be executing, with how many attempts (a waiting call
 * and a sweep can try the same one; one claims it). Process-wide, not per pipeline: `serve` runs two
 * (MCP and automation) under one replica id, and neither may take the other's for orphans.
 */
const executingHere = new Map<string, number>();

const newApprovalId = () => `apr_${randomUUID().replaceAll('-', '').slice(0, 20)}`;

/** What changed between the basis the approver saw and the fresh one, e.g. `risk_band: high → critical`. */
function describeBasisChange(seen: unknown, fresh: unknown): string[] {
  const before = (seen ?? {}) as Record<string, unknown>;
  const after = (fresh ?? {}) as Record<string, unknown>;
  const show = (v: unknown) => (v === null || v === undefined ? 'none' : String(v));
  return [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((key) => canonicalJson(before[key] ?? null) !== canonicalJson(after[key] ?? null))
    .map((key) => `${key}: ${show(before[key])} → ${show(after[key])}`);
}

/** The budgets a call counts against: lists of keys, most specific first (see `ApprovalKey.budgetKeys`). */
type BudgetKeys = readonly (readonly string[])[];

const budgetKeysFor = (tool: Pick<AnyTool, 'name'>, key: ApprovalKey): BudgetKeys =>
  key.budgetKeys ?? [[key.key, tool.name]];

/** The first active pause among these budgets for this principal, if any. */
async function pausedForAny(
  budgets: Budgets,
  principalId: string,
  keys: BudgetKeys,
  pauses?: readonly BudgetPause[],
): Promise<BudgetPause | undefined> {
  // One read of the pauses for all the lists, not one each.
  const active = keys.length > 1 ? (pauses ?? (await budgets.activePauses())) : pauses;
  for (const list of keys) {
    const pause = await budgets.pausedFor(principalId, list, active);
    if (pause) return pause;
  }
  return undefined;
}

/** Errors of a tool's approval key that no later attempt changes: the approved action fails with them. */
const FINAL_REFUSALS: ReadonlySet<string> = new Set([
  ERROR_CODES.CONFLICT,
  ERROR_CODES.NOT_FOUND,
  ERROR_CODES.INVALID_INPUT,
]);

/** The upstream a tool writes to, in words, for an outcome that may have reached it. */
function upstreamOf(tool: AnyTool): string {
  const byToolset: Record<string, string> = { sift: 'Sift', segment: 'Segment', salesforce: 'Salesforce' };
  // A core tool (undo_action) writes to whichever system the action it reverses did.
  return byToolset[tool.toolset] ?? 'the upstream (Sift or Segment)';
}

/** How many approved approvals one sweep runs at most, and reads per page. */
const APPROVED_PAGE = 50;
/** How many pages of approved approvals one sweep reads at most (past paused ones); the next continues. */
const APPROVED_PAGES_PER_SWEEP = 20;

/** An approval `executing` for longer than this was interrupted: every upstream call times out well before. */
const INTERRUPTED_AFTER_MS = 10 * 60 * 1000;
/** Recovery reads `executing` approvals this many at a time, at most this many pages per pass. */
const RECOVERY_PAGE = 50;
const MAX_RECOVERY_PAGES = 40;
