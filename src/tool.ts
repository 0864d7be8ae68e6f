/**
 * A tool is a value: name, description for a model, one `risk` level, zod input and output
 * schemas and `run`. Tool modules define tools and register nothing; src/server.ts exposes them
 * through the governance pipeline, which derives annotations, approval and rate limits from `risk`.
 */
import * as z from 'zod';
import type { UpstreamClients } from './clients/types.ts';
import type { ApprovalMode, Config } from './config.ts';
import type { FieldClasses } from './governance/redact.ts';

/**
 * `read` never changes upstream state; `write` changes it reversibly (a trait, a case);
 * `destructive` changes what happens to a customer (a label, a block, a suppression) and needs a
 * human's approval by default.
 */
export type Risk = 'read' | 'write' | 'destructive';

export type Toolset = 'core' | 'sift' | 'segment' | 'salesforce' | 'triage';

/** Who is calling. Identity fields sent upstream (analyst, source) come from here, never from arguments. */
export interface Principal {
  /** Stable identity: an analyst's email or login, `automation:<rule>`, … */
  id: string;
  kind: 'user' | 'automation' | 'service';
  role: 'viewer' | 'analyst' | 'approver' | 'admin';
  /**
   * The id is the caller's own claim, proven by nothing: a stdio session's FRAUDGATE_ANALYST. Its
   * approvals tell the approver so (`SELF_DECLARED_REQUESTER`).
   */
  declared?: boolean;
}

/** What an approval requested by a self-declared principal tells its approver (evidence `requester_identity`). */
export const SELF_DECLARED_REQUESTER =
  'self-declared: requested over stdio, where the name is FRAUDGATE_ANALYST as configured, not proven by a credential';

/** What a tool receives besides its arguments. */
export interface ToolContext {
  principal: Principal;
  clients: UpstreamClients;
  config: Pick<Config, 'mapping' | 'risk_bands' | 'label_source' | 'salesforce'> & {
    /** How long after it ran an executed destructive action may be undone (`approvals.undo_window_ms`). */
    undo_window_ms: number;
  };
  /**
   * Stable for one logical action: the approval id for approved actions, else derived from the call.
   * Tools build upstream idempotency keys (Segment messageId, Salesforce external ids) from it.
   */
  idempotencyKey: string;
  signal: AbortSignal;
  /** Report progress to the client when it asked for it; a no-op otherwise. */
  progress(progress: number, total?: number, message?: string): Promise<void>;
  now(): Date;
  /**
   * Approvals, for `get_approval_status` and `undo_action`. Tools can never decide an approval; an
   * undo marks what it reverses, so that action cannot be undone twice.
   */
  approvals: {
    get(id: string): Promise<ApprovalView | undefined>;
    /**
     * executed → undone by `undoneBy` (the undo's idempotency key: its approval id), compare-and-set:
     * true for the one undo that marked it, and again for that same undo re-run after an interruption.
     */
    markUndone(id: string, undoneBy: string): Promise<boolean>;
    /** undone → executed again, after the undo `undoneBy` failed before changing anything. */
    unmarkUndone(id: string, undoneBy: string): Promise<void>;
  };
  /** Sift ↔ Segment id mappings and the identity review list (src/store/identity-store.ts). */
  identities: IdentityDirectory;
  /**
   * Paging cursors a client cannot forge or edit (src/governance/cursor-seal.ts): a tool seals what
   * it needs to resume and refuses a cursor that does not open.
   */
  cursors: CursorSeal;
}

/** Seals and opens paging cursors (`ctx.cursors`); made by src/governance/cursor-seal.ts. */
export interface CursorSeal {
  /** The payload and its MAC, as one URL-safe token. */
  seal(payload: string): string;
  /** The payload of a token `seal` made with the same key; undefined for anything else. */
  open(token: string): string | undefined;
}

/** Where a Segment user id came from: a stored mapping, the config's `identity.mappings`, or the Sift id itself. */
export type SegmentIdSource = 'stored' | 'config' | 'same';

/** One identifier a lookup tried, in one system, and whether it found anything. */
export interface IdentityAttempt {
  system: 'sift' | 'segment' | 'salesforce';
  identifier: 'sift_user_id' | 'segment_user_id' | 'email' | 'phone';
  value: string;
  found: boolean;
}

/** A Sift user no Salesforce record could be matched to, awaiting a human's review. */
export interface UnmatchedIdentity {
  sift_user_id: string;
  /** What the latest lookup tried. */
  tried: IdentityAttempt[];
  first_seen_at: string;
  last_seen_at: string;
  times_seen: number;
}

/**
 * The identity map and review list as tools see them. Mapping changes are made by operators (config,
 * `fraudgate identities map`), never by a tool: a model must not be able to re-point a user's identity.
 */
export interface IdentityDirectory {
  /** The Segment user id for a Sift user id: stored mapping, else config mapping, else per `identity.segment_user_id`. */
  segmentIdFor(siftUserId: string): Promise<{ segment_user_id: string; source: SegmentIdSource } | undefined>;
  /** Add or refresh an entry of the review list (times_seen + 1, tried replaced). */
  recordUnmatched(entry: {
    sift_user_id: string;
    tried: IdentityAttempt[];
    at: Date;
  }): Promise<UnmatchedIdentity>;
  /** Drop a user from the review list once a lookup matched them; true if it was listed. */
  resolveUnmatched(siftUserId: string): Promise<boolean>;
  /** The user's entry on the review list, if listed; changes nothing. */
  findUnmatched(siftUserId: string): Promise<UnmatchedIdentity | undefined>;
  /**
   * Newest (last seen) first. `cursor` is opaque, from a previous page; an entry seen again while
   * paging moves to the front and is not repeated on later pages.
   */
  listUnmatched(page: { cursor?: string; limit: number }): Promise<{
    items: UnmatchedIdentity[];
    next_cursor?: string;
  }>;
}

/** What a caller may see of an approval. */
export interface ApprovalView {
  id: string;
  tool: string;
  /** The frozen arguments (the caller's own, or seen by approvers): what `undo_action` reverses. */
  args: Record<string, unknown>;
  state: string;
  target: string;
  requester: string;
  mode: string;
  created_at: string;
  expires_at: string;
  decided_at?: string;
  decided_by?: string;
  reason?: string;
  executed_at?: string;
  /** On an undone one: the undo that marked it (its approval id). */
  undone_by?: string;
  /**
   * Why `args` cannot be trusted (refused as plain text, or not hashing to the hash it was requested
   * under: approval-integrity.ts); nothing is derived from them then. Never shown to a client.
   */
  args_problem?: string;
  evidence: Record<string, unknown>;
  result?: unknown;
  error?: { code: string; message: string };
}

export interface ToolDefinition<I extends z.ZodObject = z.ZodObject, O extends z.ZodObject = z.ZodObject> {
  /** snake_case wire name; the module file is the kebab-case of it. */
  name: string;
  title: string;
  /** Written for a model: when to use it, what it returns, what it will not do. */
  description: string;
  risk: Risk;
  toolset: Toolset;
  /**
   * Roles that may call this tool beyond what its risk allows them (src/governance/policy.ts), e.g.
   * approvers may request `undo_action` — which still needs another approver's approval.
   */
  extraRoles?: readonly Principal['role'][];
  /** Whether repeating the same call has no further effect (drives `idempotentHint`). */
  idempotent: boolean;
  /**
   * Whether the tool reaches an external system (Sift, Segment, Salesforce); drives `openWorldHint`.
   * Default true; false for tools that only read fraudgate's own store.
   */
  openWorld?: boolean;
  input: I;
  output: O;
  /**
   * A hand-written parse of a hot tool's arguments: exactly what the schema clients see
   * (`inputSchemaOf`: `input`, plus `dry_run` for write tools) would give for `raw`, defaults applied,
   * or undefined to let zod parse them (and word any refusal). The pipeline then skips zod for the
   * common call. A test must hold it to that schema.
   */
  exactArguments?(raw: unknown): z.infer<I> | undefined;
  /**
   * A hand-written check for a hot tool's results: true only when `output.safeParse(value)` would
   * succeed and give back an equal value (no key it would strip). The pipeline then answers the
   * result as it is instead of copying it through zod; on false it parses with zod as usual (which
   * strips, or refuses with the full message). A test must hold it to the schema.
   */
  isExactOutput?(value: unknown): boolean;
  /**
   * Output fields (dotted paths, `[]` for array items) that carry text attackers can write: names,
   * notes, descriptions, event fields. Results name them so clients and models treat them as data.
   */
  untrustedFields?: readonly string[];
  /**
   * Where the key-name redactor misreads this tool's copies kept by fraudgate: the audit's `args`,
   * the approver's `evidence`, the approval's stored `result` (src/governance/redact.ts FieldClasses).
   */
  redaction?: { args?: FieldClasses; evidence?: FieldClasses; result?: FieldClasses };
  /** The entity the call acts on (e.g. `sift_user:abc`), for approvals and audit. */
  target?(args: z.infer<I>): string;
  /**
   * What a newer request replaces: a pending approval of this tool with the same key is superseded
   * by a newer request (default: the target). Narrower where two requests on one target are
   * independent, e.g. labels for different abuse types.
   */
  supersedeKey?(args: z.infer<I>): string;
  /**
   * What an approver is shown (score, reasons, current decision), captured when approval is requested.
   * Must not write anything.
   */
  evidence?(args: z.infer<I>, ctx: ToolContext): Promise<Record<string, unknown>>;
  /**
   * What approving will do, in one sentence (the evidence's `effect`): shown on its own when the
   * evidence cannot be read (e.g. a user Sift has not scored). Must not write anything.
   */
  effect?(args: z.infer<I>, ctx: ToolContext): string | Promise<string>;
  /**
   * Per-call approval policy, for tools whose stakes depend on the call (e.g. `apply_decision:block`).
   * The pipeline uses `approvals.tools[key]`, else `approvals.tools[name]`, else the default for the
   * risk, and never less than `floor`. Runs after validation and before approval; it may read
   * upstream (never write) and may throw `InvalidInputError` to refuse the call.
   */
  approvalKey?(args: z.infer<I>, ctx: ToolContext): Promise<ApprovalKey>;
  /** Every key `approvalKey` can return, so the policy config can be checked and shown (`fraudgate://policy`). */
  approvalKeys?: readonly ApprovalKey[];
  /**
   * The tools whose effects `approvalKey` may name in `ApprovalKey.reapplies` (an undo): a waiting
   * approval's mode under a changed policy counts theirs too (`modeNow`).
   */
  reapplies?: readonly string[];
  /**
   * For a tool that `reapplies` others: the keys `approvalKey` may have given a call with these
   * (stored) arguments, found without reading upstream (`approvalOf` reads a stored approval), so
   * the desk holds a waiting approval to the stricter-of rule for them (`modeNowReapplying`): which
   * key applied is not stored. Undefined: every combination of its keys and `reapplies`.
   */
  possibleApprovalKeys?(
    args: Record<string, unknown>,
    approvalOf: (id: string) => Promise<{ tool: string } | undefined>,
  ): Promise<readonly ApprovalKey[] | undefined>;
  /**
   * For write tools: what `dry_run: true` reports — the current upstream state and what the call
   * would change. Reads only; never writes, needs no approval. Required for every non-read tool.
   */
  plan?(args: z.infer<I>, ctx: ToolContext): Promise<DryRunPlan>;
  run(args: z.infer<I>, ctx: ToolContext): Promise<z.infer<O>>;
}

/** A dry run's answer: the state now and the changes the call would make. */
export interface DryRunPlan {
  current: Record<string, unknown>;
  changes: Record<string, unknown>;
}

/** Output parts that `tools/list` describes in one line instead of spelling out (src/wire-schema.ts). */
export const describedOutputs = z.registry<{ description: string }>();

/**
 * Marks an output part that repeats what the catalogue already says elsewhere (another tool's
 * result, the dry-run plan): `tools/list` shows only `description`. The server still
 * checks results against the full schema.
 */
export function describedOutput<T extends z.ZodType>(schema: T, description: string): T {
  const marked = schema.describe(description) as T;
  describedOutputs.add(marked, { description });
  return marked;
}

/** The structured result of a dry run, whatever the tool. */
export const dryRunResultSchema = describedOutput(
  z.object({
    dry_run: z.literal(true),
    tool: z.string(),
    target: z.string(),
    approval_required: z.string(),
    current: z.record(z.string(), z.unknown()),
    changes: z.record(z.string(), z.unknown()),
  }),
  'The dry_run plan: current state, changes, approval_required.',
);

// Explained once in the server's instructions (src/server.ts), not in every write tool's schema.
const dryRunArgument = z.boolean().optional();

const withDryRun = new WeakMap<AnyTool, z.ZodObject>();

/** The input schema a client sees: write tools gain `dry_run`. */
export function inputSchemaOf(tool: AnyTool): z.ZodObject {
  const input = tool.input as z.ZodObject;
  if (tool.risk === 'read') return input;
  // Built once per tool: every call of a write tool validates against it.
  let schema = withDryRun.get(tool);
  if (!schema) withDryRun.set(tool, (schema = input.extend({ dry_run: dryRunArgument })));
  return schema;
}

/** What `approvalKey` returns: the config key to look up and the least strict mode allowed. */
export interface ApprovalKey {
  key: string;
  floor?: ApprovalMode;
  /**
   * The blast-radius budgets the call counts against: each a list of keys, most specific first (the
   * first with a configured limit decides), and every list admits the effect. Default `[[key, tool]]`;
   * an undo counts against `undo_action` and against what it re-applies (e.g. `apply_decision:block`).
   */
  budgetKeys?: readonly (readonly string[])[];
  /**
   * The effect the call re-applies, keyed as that tool's own call would be (an undo re-suppressing:
   * `suppress_user`): the call's approval is never weaker than that call's would be (the stricter
   * mode; the requester may approve only where both allow it).
   */
  reapplies?: { tool: string; key?: ApprovalKey };
}

/** Define a tool; the identity function exists so TypeScript infers the argument and result types. */
export function defineTool<I extends z.ZodObject, O extends z.ZodObject>(
  tool: ToolDefinition<I, O>,
): ToolDefinition<I, O> {
  return tool;
}

/** A tool with its types erased, as the registry holds it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyTool = ToolDefinition<any, any>;

export interface ToolAnnotations {
  readOnlyHint: boolean;
  destructiveHint: boolean;
  idempotentHint: boolean;
  openWorldHint: boolean;
}

/**
 * Annotations derived from `risk`, always set explicitly: the spec's defaults read as
 * "destructive, not idempotent", which makes hosts prompt for harmless reads. The display name is
 * the tool's own `title` (MCP 2025-06-18 on), not repeated here: every client reads the catalogue.
 */
export function annotationsFor(tool: Pick<AnyTool, 'risk' | 'idempotent' | 'openWorld'>): ToolAnnotations {
  return {
    readOnlyHint: tool.risk === 'read',
    destructiveHint: tool.risk === 'destructive',
    idempotentHint: tool.risk === 'read' || tool.idempotent,
    openWorldHint: tool.openWorld ?? true,
  };
}

/** A timestamp as people read it, `2026-11-30 14:05 UTC` (approvals, evidence, console, CLI). */
export function humanTime(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** Risk bands are configuration, but tools compute them: re-exported here so tools need not import config. */
export { riskBandFor, type RiskBand } from './config.ts';
