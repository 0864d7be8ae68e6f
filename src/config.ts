/**
 * fraudgate's configuration: one zod schema, resolved once at start-up from sources in a fixed
 * order — defaults → config file (JSON) → environment → command-line flags. Secrets come only from
 * the environment, never from the file or flags, so they never land in a repository or a `ps`
 * listing. Unknown keys are refused (a typo must not silently disable a policy), and every problem
 * is listed at once with what to do.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import * as z from 'zod';
import { ABUSE_TYPES } from './clients/types.ts';
import { InvalidInputError, type FieldIssue } from './errors.ts';
import { LOG_LEVELS, logLevelOf } from './logger.ts';

const approvalMode = z
  .enum(['none', 'confirm', 'approval', 'four_eyes'])
  .describe(
    'none: run at once; confirm: the requester may confirm in-band (elicitation) or an approver out of band; ' +
      'approval: an approver decides out of band; four_eyes: an approver who is not the requester decides.',
  );
export type ApprovalMode = z.infer<typeof approvalMode>;

const bucket = z.strictObject({
  /** Burst size. */
  capacity: z.number().int().positive(),
  /** Tokens added per minute. */
  per_minute: z.number().positive(),
});
export type BucketConfig = z.infer<typeof bucket>;

export type RiskBand = 'low' | 'medium' | 'high' | 'critical';

const decisionEffect = z.strictObject({
  /** Traits written to the Segment profile when this category is the user's current decision. */
  segment_traits: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])),
  /** Track event name sent alongside the traits. */
  segment_event: z.string().min(1),
  /** Salesforce picklist value for the Account/Contact decision field. */
  salesforce_value: z.string().min(1),
});

/** A Salesforce field API name; also what keeps configured names safe inside SOQL. */
const fieldApiName = z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'a Salesforce field API name');

/** How one Segment message becomes one `send_sift_event` call (src/webhooks/segment-mapping.ts). */
const segmentRule = z.strictObject({
  sift_event: z.enum(['create_account', 'update_account', 'login', 'logout', 'transaction']),
  /** transaction only; default withdrawal (money leaves the wallet). */
  transaction_type: z.enum(['deposit', 'withdrawal', 'transfer']).optional(),
  /** transaction only; default success. */
  transaction_status: z.enum(['success', 'failure', 'pending']).optional(),
  /** login only; default success. */
  login_status: z.enum(['success', 'failure']).optional(),
  /** Ask Sift for the user's fresh score with the event. */
  return_score: z.boolean().optional(),
});

/**
 * One background job's schedule (src/jobs/): on or off, and `every_ms` or `daily_at` (HH:MM, UTC) to
 * replace the job's default schedule (README "Background jobs").
 */
const jobSettings = z
  .strictObject({
    enabled: z.boolean(),
    every_ms: z.number().int().min(100).optional(),
    daily_at: z
      .string()
      .regex(/^([01]\d|2[0-3]):([0-5]\d)$/, 'a UTC time of day as HH:MM (24-hour), e.g. 02:00')
      .optional(),
  })
  .refine((job) => job.every_ms === undefined || job.daily_at === undefined, {
    message: 'set every_ms or daily_at, not both',
    path: ['daily_at'],
  });
export type JobSettings = z.infer<typeof jobSettings>;

/** Sift abuse types as config spells them (feedback labels, score sync). */
const siftAbuseType = z.enum(ABUSE_TYPES);

/** How far a Salesforce watcher re-reads behind its watermark (src/sync/record-watch.ts): 1 s to 1 day. */
const watchOverlapMs = z
  .number()
  .int()
  .min(1000)
  .max(24 * 60 * 60 * 1000);

/** The toolsets `toolsets` (and --toolsets) may name; `core` (approvals, undo) is exposed whatever is chosen. */
export const TOOLSETS = ['core', 'sift', 'segment', 'salesforce', 'triage'] as const;

export const configSchema = z.strictObject({
  /** Where the SQLite store (store: sqlite), the audit log and keys live. */
  data_dir: z.string().min(1),
  /**
   * Where every piece of durable state lives (approvals, identities, sync state, the outbox, job
   * leases, …): `sqlite`, a file in data_dir, for one host; `postgres` (FRAUDGATE_POSTGRES_URL),
   * shared by several replicas.
   */
  store: z.enum(['sqlite', 'postgres']),
  /** Settings of the PostgreSQL store (used when `store` is postgres). */
  store_postgres: z.strictObject({
    /** Schema holding fraudgate's tables (created if needed); one per deployment. */
    schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'a lowercase SQL identifier (letters, digits, _)'),
    /**
     * Connections per replica (the store's pool). Work beyond them queues in arrival order instead
     * of failing (src/store/postgres/database.ts), so a wide outbox batch waits its turn.
     */
    pool_size: z.number().int().min(1).max(100),
    /** How long start-up keeps retrying an unreachable server before giving up (exit 1). */
    startup_timeout_ms: z.number().int().min(0),
    /**
     * Bounds on every session (0 turns one off; src/store/postgres/database.ts): a statement runs
     * at most this long, waits for a lock at most this long, and a transaction left idle this long is
     * ended. A held lock or a stuck server then refuses calls (retryable) instead of hanging them.
     */
    statement_timeout_ms: z.number().int().min(0),
    lock_timeout_ms: z.number().int().min(0),
    idle_in_transaction_timeout_ms: z.number().int().min(0),
  }),
  /**
   * This replica's stable id (FRAUDGATE_REPLICA_ID): it owns job leases and outbox leases, so a
   * restarted replica with the same id takes its own work back at once. Default: host name + port.
   */
  replica_id: z.string().min(1).max(200).optional(),
  /** `sandbox` runs the built-in emulators; `live` talks to the real APIs. Decided at start-up. */
  mode: z.enum(['sandbox', 'live']),
  /** The analyst identity for stdio sessions (FRAUDGATE_ANALYST). Write tools refuse without one. */
  analyst: z.string().min(1).optional(),
  /** `$source` sent with Sift labels. */
  label_source: z.string().min(1),
  read_only: z.boolean(),
  /** Toolsets exposed; empty means all. */
  toolsets: z.array(z.enum(TOOLSETS)),
  sift: z.strictObject({
    base_url: z.url(),
    account_id: z.string().min(1).optional(),
    timeout_ms: z.number().int().positive(),
    max_retries: z.number().int().min(0).max(10),
  }),
  segment: z.strictObject({
    host: z.url(),
    profile_base_url: z.url(),
    space_id: z.string().min(1).optional(),
    delivery_timeout_ms: z.number().int().positive(),
    timeout_ms: z.number().int().positive(),
  }),
  salesforce: z.strictObject({
    login_url: z.url(),
    api_version: z.string().regex(/^\d+\.\d$/, 'an API version like 62.0'),
    auth_flow: z.enum(['client_credentials', 'password']),
    timeout_ms: z.number().int().positive(),
    /** DeveloperName of the queue that owns new fraud cases. */
    fraud_queue: z.string().min(1),
    /** Case.Type picklist value for fraud cases. */
    case_type: z.string().min(1),
    case_origin: z.string().min(1),
    /** Case.Status value `resolve_fraud_case` sets (a closed status of the org's Case process). */
    case_closed_status: z.string().min(1),
    /** DeveloperName of the queue that receives leads at or above `lead_score_threshold`. */
    lead_review_queue: z.string().min(1),
    /** Sift score (0–1, like risk_bands) at or above which `enrich_salesforce_lead` routes a lead to review. */
    lead_score_threshold: z.number().min(0).max(1),
    /** Lead Status (a value of your org's LeadStatus) set on a lead routed to review; null leaves Status alone. */
    lead_review_status: z.string().min(1).nullable(),
    /** Sift score (0–1) at or above which `flag_opportunities` flags a user's open opportunities. */
    opportunity_flag_threshold: z.number().min(0).max(1),
    /** Days until the review Task `flag_opportunities` creates for each opportunity owner is due. */
    task_due_days: z.number().int().min(0).max(90),
  }),
  /** Score (0–1) at or above which a band starts. Bands must be increasing. */
  risk_bands: z.strictObject({
    medium: z.number().min(0).max(1),
    high: z.number().min(0).max(1),
    critical: z.number().min(0).max(1),
  }),
  /** The one central mapping: decisions and bands → Segment traits and Salesforce values. */
  mapping: z.strictObject({
    decisions: z.strictObject({ block: decisionEffect, watch: decisionEffect, accept: decisionEffect }),
    /** Segment traits and track event when no decision is current. */
    no_decision: decisionEffect,
    /** Case priority derived from the risk band when the caller gives none. */
    band_priority: z.strictObject({
      low: z.string(),
      medium: z.string(),
      high: z.string(),
      critical: z.string(),
    }),
    /** Segment traits an Engage audience keys on for marketing suppression. */
    suppression_trait: z.string().min(1),
    /** Routing tier (Segment trait value) per risk band, for product flows (`sync_score_to_segment`). */
    routing_tiers: z.strictObject({
      low: z.string().min(1),
      medium: z.string().min(1),
      high: z.string().min(1),
      critical: z.string().min(1),
    }),
    /** Segment trait names `sync_score_to_segment` writes. */
    score_traits: z.strictObject({
      score: z.string().min(1),
      band: z.string().min(1),
      routing_tier: z.string().min(1),
      abuse_type: z.string().min(1),
    }),
    /** Salesforce Case `Resolution__c` picklist value per resolution `resolve_fraud_case` accepts. */
    case_resolutions: z.strictObject({
      confirmed_fraud: z.string().min(1),
      false_positive: z.string().min(1),
      inconclusive: z.string().min(1),
      duplicate: z.string().min(1),
    }),
    /** Segment track event name per fraud outcome `track_fraud_event` sends (warehouse table names follow them). */
    track_events: z.strictObject({
      score_evaluated: z.string().min(1),
      decision_applied: z.string().min(1),
      label_applied: z.string().min(1),
    }),
    /** Property names of `track_fraud_event`'s events (warehouse column names follow them). */
    track_properties: z.strictObject({
      source: z.string().min(1),
      abuse_type: z.string().min(1),
      sift_score: z.string().min(1),
      risk_band: z.string().min(1),
      decision_id: z.string().min(1),
      decision_category: z.string().min(1),
      is_bad: z.string().min(1),
      outcome_at: z.string().min(1),
      case_id: z.string().min(1),
    }),
    /** Salesforce field API names fraudgate reads and writes (custom fields of your org). */
    salesforce_fields: z.strictObject({
      /** On Account, Contact, Lead and Case: the Sift user id that links a record to Sift. */
      sift_user_id: fieldApiName,
      /** On Account and Contact: the decision value (`decisions.*.salesforce_value`). */
      decision: fieldApiName,
      /** On Account, Contact, Lead and Case: the Sift score 0–100. */
      score: fieldApiName,
      /** On Account, Contact and Lead: the risk band. */
      risk_band: fieldApiName,
      /** On Lead: when Sift was last asked. */
      checked_at: fieldApiName,
      /** On Opportunity: the flag `flag_opportunities` sets (to `opportunity_flag_value`). */
      opportunity_flag: fieldApiName,
      /** On Opportunity: the risk summary written with the flag. */
      opportunity_summary: fieldApiName,
    }),
    /** Value the opportunity flag field is set to: true for a checkbox, or a picklist value such as "Elevated". */
    opportunity_flag_value: z.union([z.literal(true), z.string().min(1)]),
    /** Segment track event name (exact, case-sensitive) → the Sift event `POST /webhooks/segment` sends; others are ignored. */
    segment_events: z.record(z.string().min(1), segmentRule),
    /** Segment identify messages → this Sift event (profile updates); null ignores them. */
    segment_identify: segmentRule.nullable(),
    /**
     * A lead Sift has never seen: `report` it as not_scored; `create_account` also sends it to Sift as
     * a new account ($create_account with the lead's email and name) and writes the score that returns.
     */
    lead_not_scored: z.enum(['report', 'create_account']),
  }),
  approvals: z.strictObject({
    /** Per-tool approval mode; tools not listed use the default for their risk. Unknown names stop start-up. */
    tools: z.record(z.string(), approvalMode),
    /**
     * Destructive tools (and BLOCK decisions) need an approver other than the requester; the tools or
     * per-call keys listed here opt in to letting the requester approve (or confirm in-band) their own call.
     */
    self_approval: z.array(z.string().min(1)),
    default_for_write: approvalMode,
    default_for_destructive: approvalMode,
    /** Whether out-of-band approval (CLI / console) is an available channel. Off + no elicitation = refuse. */
    out_of_band: z.boolean(),
    /** How long a pending approval stays valid. */
    ttl_ms: z.number().int().positive(),
    /** How long after it ran an executed destructive action can be undone (`undo_action`, the console's Undo). */
    undo_window_ms: z.number().int().positive(),
    /** How long a tool call waits (with progress) for a decision before returning APPROVAL_PENDING. */
    wait_ms: z.number().int().min(0),
    poll_ms: z.number().int().positive(),
  }),
  /** The audit ledger (README "Audit"): checkpoint cadence and retention. */
  audit: z.strictObject({
    /** A writer signs its chain's head after this many records... */
    checkpoint_every: z.number().int().positive(),
    /** ...or after this long with unsealed records (and on shutdown). */
    checkpoint_interval_ms: z.number().int().positive().max(86_400_000),
    /** Records older than this are pruned (back to a checkpoint, which stays as the anchor); 0 keeps everything. */
    retention_days: z.number().min(0),
  }),
  /**
   * Blast-radius budgets (src/governance/budgets.ts): per principal (an analyst, or the automation
   * principal) and per tool or per-call key (`apply_decision:block`), at most `max_effects` executed
   * effects and `max_targets` distinct targets per `window_ms`; past a ceiling further effects wait
   * until a human lifts the pause (`fraudgate budgets lift`).
   */
  budgets: z.strictObject({
    window_ms: z.number().int().positive(),
    limits: z.record(
      z.string(),
      z.strictObject({
        max_effects: z.number().int().positive().optional(),
        max_targets: z.number().int().positive().optional(),
      }),
    ),
  }),
  rate_limits: z.strictObject({
    /** memory: per process; redis: shared by every replica (FRAUDGATE_REDIS_URL). */
    store: z.enum(['memory', 'redis']),
    read: bucket,
    write: bucket,
    destructive: bucket,
    tools: z.record(z.string(), bucket),
    /**
     * Refused calls (invalid, forbidden, rate limited) per principal, across tools. Within it each
     * refusal is audited on its own; past it refusals are counted and the caller gets RATE_LIMITED.
     * Rejected webhooks have the same budget per client network (IPv4 address, IPv6 /64) and
     * endpoint, under an endpoint ceiling of ten times it (answered as before; webhook-refusals.ts).
     */
    refusals: bucket,
    /**
     * MCP requests per principal over HTTP, whatever their method (a JSON-RPC batch of N requests costs N;
     * answers awaited here, notifications and DELETE cost nothing; answers for another replica take `answers`),
     * taken before anything is dispatched: past it the POST gets 429 with Retry-After.
     */
    requests: bucket,
    /**
     * Client answers relayed to another replica (an elicitation answer that landed on a replica other
     * than the one that asked), per principal over HTTP: apart from `requests`, so a flood of requests
     * cannot starve a human's confirmation, while forged answers stay bounded.
     */
    answers: bucket,
  }),
  /** How a Sift user id finds its Segment profile (`lookup_user`); stored mappings (`fraudgate identities map`) win over these. */
  identity: z.strictObject({
    /** same: the Segment user id is the Sift user id unless mapped; mapped_only: only mapped users have a Segment id. */
    segment_user_id: z.enum(['same', 'mapped_only']),
    /** Sift user id → Segment user id. */
    mappings: z.record(z.string().min(1), z.string().min(1)),
  }),
  /**
   * Salesforce lifecycle → Sift feedback (`fraudgate sync feedback`): Account status transitions,
   * read one by one, with their authors, from the field history (AccountHistory rows of
   * `status_field`, which needs history tracking on), become Sift decisions or labels.
   */
  feedback: z.strictObject({
    /** Pause between polls of `sync feedback` (without --once). */
    poll_interval_ms: z.number().int().positive(),
    /** Account picklist field whose changes are lifecycle transitions. */
    status_field: z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'a Salesforce field API name'),
    /** Records read per SOQL page (LIMIT), so one poll never holds an unbounded result. */
    batch_size: z.number().int().min(1).max(2000),
    /**
     * How far behind its watermark each poll re-reads AccountHistory: history is stamped in whole
     * seconds and a change can commit after a later-stamped one; re-read rows already handled are skipped.
     */
    overlap_ms: watchOverlapMs,
    /**
     * Salesforce user ids whose writes are fraudgate's own (never fed back to Sift; Leads they create
     * are not enriched by the Lead watcher). fraudgate's own session user is always included; list
     * other integration users that write for fraudgate here.
     */
    integration_user_ids: z.array(z.string().min(15).max(18)),
    /** First matching rule wins; a status with no rule is recorded but sends nothing. */
    transitions: z.array(
      z.strictObject({
        /** Previous statuses this rule applies to; absent means any (including a first sighting). */
        from: z.array(z.string()).optional(),
        to: z.string().min(1),
        sift: z.union([
          z.strictObject({ decision_id: z.string().min(1) }),
          z.strictObject({
            label: z.strictObject({
              is_bad: z.boolean(),
              abuse_type: siftAbuseType,
            }),
          }),
        ]),
      }),
    ),
  }),
  /**
   * The Lead watcher (`fraudgate sync leads`, and a job in `serve`): each Lead created since the last
   * poll by anyone but fraudgate is enriched through `enrich_salesforce_lead` (score, risk band, review
   * queue and `salesforce.lead_review_status` over `salesforce.lead_score_threshold`).
   */
  leads: z.strictObject({
    /** Pause between polls of `sync leads` (without --once) and of the job in `serve`. */
    poll_interval_ms: z.number().int().positive(),
    /** Leads read per SOQL page. */
    batch_size: z.number().int().min(1).max(2000),
    /** How far behind its watermark each poll re-reads (CreatedDate is stamped in whole seconds). */
    overlap_ms: watchOverlapMs,
  }),
  /** `fraudgate sync scores`: Sift scores → Account risk fields, and Tasks for big moves. */
  score_sync: z.strictObject({
    /** Sift score requests in flight at once. */
    concurrency: z.number().int().min(1).max(64),
    /** Sift score requests per minute at most (token bucket; bursts up to `concurrency`). */
    sift_budget_per_minute: z.number().positive(),
    /** A Task for the owner when |new − old| exceeds this, on the 0–100 Sift_Score__c scale. */
    task_threshold_delta: z.number().min(0).max(100),
    /** Accounts per page and per composite update (≤200, the sObject Collections limit). */
    batch_size: z.number().int().min(1).max(200),
    /** Days until the owner's Task is due. */
    task_due_days: z.number().int().min(0).max(90),
    /** Abuse type whose score is synced; absent: the riskiest of the user's scores. */
    abuse_type: siftAbuseType.optional(),
  }),
  /**
   * Decision webhooks → automated effects (src/outbox). `rules` route a decision category to effects;
   * each effect is a governed tool call (policy, approvals, audit) under `principal`.
   */
  automation: z.strictObject({
    /** The principal automated effects run as; policy applies to it like to any caller. */
    principal: z.string().regex(/^automation:/, 'must start with automation:'),
    role: z.enum(['analyst', 'admin']),
    /** Effects per decision category, in the order they are routed. */
    rules: z.strictObject({
      block: z.array(z.enum(['segment', 'salesforce', 'case', 'suppress'])),
      watch: z.array(z.enum(['segment', 'salesforce', 'case', 'suppress'])),
      accept: z.array(z.enum(['segment', 'salesforce', 'case', 'suppress'])),
    }),
    /** The tool each effect calls; an effect whose tool is not registered is not routed (logged once). */
    effect_tools: z.strictObject({
      segment: z.string().min(1),
      salesforce: z.string().min(1),
      case: z.string().min(1),
      suppress: z.string().min(1),
    }),
    /** A `case` effect runs only for a highest Sift score (0–1) at or above this. */
    case_score_threshold: z.number().min(0).max(1),
    /** Decision categories whose `suppress` effect runs (others skip it). */
    suppress_categories: z.array(z.enum(['block', 'watch', 'accept'])),
    /** Failed attempts before an effect becomes a dead letter. */
    max_attempts: z.number().int().min(1).max(100),
    backoff_base_ms: z.number().int().positive(),
    backoff_max_ms: z.number().int().positive(),
    /**
     * Effects leased per worker tick (and run concurrently, so their upstream writes share batches).
     * A composite write request carries 1,000 Salesforce records; fewer effects in flight cannot fill one.
     */
    batch_size: z.number().int().min(1).max(2000),
    /** How long an effect's lease lasts (renewed while it runs); a crashed replica's effects are retried after it. */
    lease_ms: z.number().int().positive().max(30_000),
    poll_ms: z.number().int().positive(),
    /**
     * How long an effect's upstream write waits for company: Salesforce updates/creates share one
     * collection call (≤200 records), Segment messages one batch (`segment_batch_size`). Effects
     * start one audit fsync apart, so a longer window makes fuller batches at the cost of latency.
     */
    batch_window_ms: z.number().int().min(0),
    /** Segment messages per batch request (the library also caps a batch at ~500 KB). */
    segment_batch_size: z.number().int().min(1).max(500),
    /** Fraction of the daily Salesforce API allowance (Sforce-Limit-Info) at which automation slows down. */
    salesforce_slowdown_at: z.number().min(0).max(1),
    /** Fraction of the daily allowance kept for humans: automation stops writing to Salesforce above 1 − reserve. */
    salesforce_reserve: z.number().min(0).max(1),
    /** Pause for Salesforce effects after REQUEST_LIMIT_EXCEEDED. */
    salesforce_limit_pause_ms: z.number().int().positive(),
    /** fraudgate's own bucket for the automation principal (per effect tool), instead of rate_limits. */
    rate_limit: bucket,
    /**
     * The score-change trigger: what a fresh score (an event sent with return_score through the outbox,
     * e.g. from a Segment message) sets off, each effect a governed tool call.
     */
    score_trigger: z.strictObject({
      /** segment_score: sync_score_to_segment; track: track_fraud_event score_evaluated; opportunities:
       * flag_opportunities at or above salesforce.opportunity_flag_threshold; case: create_fraud_case per case_rules. */
      effects: z.array(z.enum(['segment_score', 'track', 'opportunities', 'case'])),
      /**
       * Sift decision ids whose decision webhooks are high-risk events (e.g. an ATO watch a Sift
       * Workflow applies on $login): besides their decision effects they set off the score trigger,
       * with the user's current score and the decision id as the event type.
       */
      high_risk_decisions: z.array(z.string().min(1)),
      /**
       * A case for a high-risk event: the first rule whose event type ($login, $transaction, … a
       * decision id, `score_read` for scores fraudgate reads, or *) matches and whose min_score (0–1)
       * is reached. The case goes to the rule's `queue` (a Case queue's DeveloperName; default
       * salesforce.fraud_queue) with the rule's `priority`, else its severity's (`severity_priority`).
       */
      case_rules: z.array(
        z
          .strictObject({
            event: z.string().min(1),
            min_score: z.number().min(0).max(1),
            severity: z.enum(['critical', 'high', 'medium', 'low']).optional(),
            priority: z.enum(['High', 'Medium', 'Low']).optional(),
            queue: z
              .string()
              .regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'a queue DeveloperName (letters, digits, _)')
              .max(80)
              .optional(),
          })
          .refine((rule) => rule.severity !== undefined || rule.priority !== undefined, {
            message: 'give the rule a severity or a priority',
          }),
      ),
      /** Case priority per severity of a case rule. */
      severity_priority: z.strictObject({
        critical: z.enum(['High', 'Medium', 'Low']),
        high: z.enum(['High', 'Medium', 'Low']),
        medium: z.enum(['High', 'Medium', 'Low']),
        low: z.enum(['High', 'Medium', 'Low']),
      }),
      /**
       * Scores fraudgate reads (get_sift_score and every other tool that reads a score, the score
       * sync, the Lead watcher) feed the trigger too, as event type `score_read`: once per user and
       * distinct score. false: only events sent with return_score and high-risk decisions do.
       */
      from_reads: z.boolean(),
    }),
  }),
  /**
   * Background jobs inside `serve`, each on one replica of the fleet at a time under a lease in the
   * store (src/jobs/); `fraudgate jobs` shows them.
   */
  jobs: z.strictObject({
    /** How long a job's lease lasts without a heartbeat (renewed every third of it): how soon another replica takes over from a dead one. */
    lease_ttl_ms: z.number().int().min(1000).max(30_000),
    /** Executes approved actions nobody waits for and expires overdue approvals. Default every 4 × approvals.poll_ms (≥ 1 s). */
    approval_sweep: jobSettings,
    /** Salesforce lifecycle → Sift feedback (`sync feedback`). Default every feedback.poll_interval_ms. */
    lifecycle_feedback: jobSettings,
    /** New Salesforce Leads → enriched (`sync leads`). Default every leads.poll_interval_ms. */
    lead_watcher: jobSettings,
    /** Sift scores → Salesforce accounts (`sync scores`). Default daily at 02:00 UTC. */
    score_sync: jobSettings,
    /** Prunes audit records older than audit.retention_days (off while that is 0). Default hourly. */
    audit_retention: jobSettings,
  }),
  /** `serve --http`: Streamable HTTP at /mcp, health, metrics and (later) the approval console. */
  http: z
    .strictObject({
      /** Bind address. Loopback by default; anything else needs `public_url` or `allowed_hosts` to be reachable. */
      host: z.string().min(1),
      /** 0 picks a free port. */
      port: z.number().int().min(0).max(65535),
      /** Open MCP sessions at most, across all replicas; further initializations get 503. */
      max_sessions: z.number().int().positive(),
      /** Open MCP sessions per principal at most, so one client cannot take every slot; more get 429. */
      max_sessions_per_principal: z.number().int().positive(),
      /** A session with no request for this long is closed. */
      idle_timeout_ms: z.number().int().positive(),
      /** A session that never sent a request after the handshake is closed after this long. */
      unused_session_timeout_ms: z.number().int().positive(),
      /** Largest accepted request body; larger gets 413 with a JSON-RPC error. */
      body_limit_bytes: z.number().int().positive(),
      /** Browser origins allowed besides the server's own (e.g. the console behind a proxy). */
      allowed_origins: z.array(z.string().min(1)),
      /** Host header names allowed besides localhost/127.0.0.1/[::1] and the public URL's host (DNS-rebinding guard). */
      allowed_hosts: z.array(z.string().min(1)),
      /**
       * Addresses of reverse proxies in front of fraudgate: only from these is `X-Forwarded-For`
       * believed (the console's sign-in throttle and the webhook endpoints' refusal budgets key on the
       * client address it names).
       */
      trusted_proxies: z.array(z.ipv4().or(z.ipv6())),
      /** The URL clients use (behind a proxy); the JWT audience and PRM `resource` derive from it. */
      public_url: z.url().optional(),
      /** How long shutdown waits for in-flight calls before closing sessions anyway. */
      shutdown_grace_ms: z.number().int().min(0),
      /** A request (headers and body) must arrive within this, else 408; answers are not limited. */
      request_timeout_ms: z.number().int().min(100),
      /** A request's headers must arrive within this (at most request_timeout_ms), else 408. */
      headers_timeout_ms: z.number().int().min(100),
    })
    .refine((http) => http.headers_timeout_ms <= http.request_timeout_ms, {
      message: 'must be at most http.request_timeout_ms: raise request_timeout_ms or lower this',
      path: ['headers_timeout_ms'],
    }),
  /** Bearer-token authentication for HTTP. stdio is unaffected (its principal is FRAUDGATE_ANALYST). */
  auth: z.strictObject({
    /**
     * API keys, stored only as SHA-256 hex digests of the token (`printf %s TOKEN | sha256sum`).
     * Named `key_hashes` so the file check for secret-looking keys does not refuse it.
     */
    key_hashes: z.array(
      z.strictObject({
        sha256: z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex SHA-256 digest of the key'),
        principal: z.string().min(1),
        kind: z.enum(['user', 'automation', 'service']).default('service'),
        role: z.enum(['viewer', 'analyst', 'approver', 'admin']),
      }),
    ),
    /** JWT access tokens from the organisation's identity provider (OAuth 2.1 resource server). */
    jwt: z
      .strictObject({
        issuer: z.string().min(1),
        /** Defaults to the MCP URL (`public_url` + /mcp): a token must be issued for this server. */
        audience: z.string().min(1).optional(),
        /** Remote JWKS of the identity provider. */
        jwks_url: z.url(),
        /** Authorization servers listed in the protected-resource metadata; defaults to [issuer]. */
        authorization_servers: z.array(z.url()).optional(),
        /** Claim holding the fraudgate role (a string or an array of strings). */
        role_claim: z.string().min(1),
        /** Claim holding the principal id. */
        subject_claim: z.string().min(1),
        /**
         * What a person's token carries that an application's does not (e.g. Okta `uid`, Entra
         * `idtyp: user`, Keycloak `email_verified: true`). When set, a token without it is a service.
         * Tokens with a known machine marker (authenticator.ts) are services whether or not it is set.
         */
        human_claim: z
          .strictObject({
            /** The claim's name. */
            name: z.string().min(1),
            /** Values that mark a person (any one; an array claim needs one element among them). Absent: present and not empty. */
            values: z
              .array(z.union([z.string(), z.number(), z.boolean()]))
              .min(1)
              .optional(),
          })
          .optional(),
        algorithms: z.array(z.string().min(1)).optional(),
      })
      .optional(),
  }),
});

export type Config = z.infer<typeof configSchema>;

/** Secrets: only ever read from the environment. Absent means "not configured". */
export interface Secrets {
  siftApiKey?: string;
  segmentWriteKey?: string;
  segmentProfileToken?: string;
  salesforceClientId?: string;
  salesforceClientSecret?: string;
  salesforceUsername?: string;
  salesforcePassword?: string;
  /** Key for the keyed hashes of personal data in the audit log. */
  auditKey?: string;
  /** FRAUDGATE_AUDIT_SIGNING_KEY: the Ed25519 private key (PKCS#8 PEM) that signs audit checkpoints. */
  auditSigningKey?: string;
  /** FRAUDGATE_AUDIT_SIGNING_KEY_FILE: or the file holding it, outside the data directory. */
  auditSigningKeyFile?: string;
  /** FRAUDGATE_DATA_KEY: the AES-256 key for personal fields at rest (src/store/field-crypto.ts). */
  dataKey?: string;
  /** FRAUDGATE_DATA_KEY_PREVIOUS: the data key before a rotation, for opening only (field-crypto.ts). */
  dataKeyPrevious?: string;
  /** Redis for shared rate-limit buckets (may carry a password, so environment only). */
  redisUrl?: string;
  /** FRAUDGATE_DEV_TOKEN: an admin bearer token accepted over HTTP in sandbox mode only. */
  devToken?: string;
  /**
   * FRAUDGATE_APPROVER_TOKEN: the credential (API key or JWT, as the HTTP server accepts) of the human
   * running a governance CLI command such as `approvals approve`; it names the actor in the audit.
   */
  approverToken?: string;
  /** SIFT_WEBHOOK_KEYS: signature keys for decision webhooks, comma-separated (several during a rotation). */
  siftWebhookKeys?: string[];
  /** SEGMENT_WEBHOOK_SECRET: the shared secret of the Segment Webhooks destination (HMAC-SHA1 signatures). */
  segmentWebhookSecret?: string;
  /** FRAUDGATE_POSTGRES_URL: the PostgreSQL connection string (it carries a password) when `store` is postgres. */
  postgresUrl?: string;
}

export const DEFAULTS: Config = {
  // Filled in by loadConfig: ~/.fraudgate/<mode>, so sandbox approvals never mix with live ones.
  data_dir: '',
  store: 'sqlite',
  store_postgres: {
    schema: 'fraudgate',
    pool_size: 8,
    startup_timeout_ms: 30_000,
    statement_timeout_ms: 30_000,
    lock_timeout_ms: 10_000,
    idle_in_transaction_timeout_ms: 60_000,
  },
  mode: 'sandbox',
  label_source: 'fraudgate',
  read_only: false,
  toolsets: [],
  sift: { base_url: 'https://api.sift.com', timeout_ms: 5_000, max_retries: 3 },
  segment: {
    host: 'https://api.segment.io',
    profile_base_url: 'https://profiles.segment.com',
    delivery_timeout_ms: 15_000,
    timeout_ms: 5_000,
  },
  salesforce: {
    login_url: 'https://login.salesforce.com',
    api_version: '62.0',
    auth_flow: 'client_credentials',
    timeout_ms: 20_000,
    fraud_queue: 'Fraud_Review',
    case_type: 'Fraud',
    case_origin: 'Web',
    case_closed_status: 'Closed',
    lead_review_queue: 'Fraud_Review',
    lead_score_threshold: 0.8,
    lead_review_status: null,
    opportunity_flag_threshold: 0.6,
    task_due_days: 2,
  },
  risk_bands: { medium: 0.3, high: 0.6, critical: 0.85 },
  mapping: {
    decisions: {
      block: {
        segment_traits: { fraud_decision: 'block', fraud_blocked: true },
        segment_event: 'Fraud Decision Applied',
        salesforce_value: 'Blocked',
      },
      watch: {
        segment_traits: { fraud_decision: 'watch', fraud_blocked: false },
        segment_event: 'Fraud Decision Applied',
        salesforce_value: 'Under Review',
      },
      accept: {
        segment_traits: { fraud_decision: 'accept', fraud_blocked: false },
        segment_event: 'Fraud Decision Applied',
        salesforce_value: 'Trusted',
      },
    },
    no_decision: {
      segment_traits: { fraud_decision: null, fraud_blocked: false },
      segment_event: 'Fraud Decision Cleared',
      salesforce_value: 'None',
    },
    band_priority: { low: 'Low', medium: 'Medium', high: 'High', critical: 'High' },
    suppression_trait: 'suppressed_for_fraud',
    routing_tiers: { low: 'trusted', medium: 'standard', high: 'step_up', critical: 'blocked' },
    score_traits: {
      score: 'sift_score',
      band: 'sift_risk_level',
      routing_tier: 'fraud_routing_tier',
      abuse_type: 'sift_score_abuse_type',
    },
    case_resolutions: {
      confirmed_fraud: 'Confirmed Fraud',
      false_positive: 'False Positive',
      inconclusive: 'Inconclusive',
      duplicate: 'Duplicate',
    },
    track_events: {
      score_evaluated: 'Sift Score Evaluated',
      decision_applied: 'Sift Decision Applied',
      label_applied: 'Sift Label Applied',
    },
    track_properties: {
      source: 'source',
      abuse_type: 'abuse_type',
      sift_score: 'sift_score',
      risk_band: 'risk_band',
      decision_id: 'decision_id',
      decision_category: 'decision_category',
      is_bad: 'is_bad',
      outcome_at: 'outcome_at',
      case_id: 'case_id',
    },
    salesforce_fields: {
      sift_user_id: 'Sift_User_Id__c',
      decision: 'Sift_Decision__c',
      score: 'Sift_Score__c',
      risk_band: 'Sift_Risk_Band__c',
      checked_at: 'Sift_Checked_At__c',
      opportunity_flag: 'Fraud_Risk_Flag__c',
      opportunity_summary: 'Fraud_Risk_Summary__c',
    },
    opportunity_flag_value: true,
    segment_events: {
      'Signed Up': { sift_event: 'create_account', return_score: true },
      'User Signed Up': { sift_event: 'create_account', return_score: true },
      'Signed In': { sift_event: 'login' },
      'Signed Out': { sift_event: 'logout' },
      'Checkout Started': {
        sift_event: 'transaction',
        transaction_status: 'pending',
        return_score: true,
      },
      'Payment Info Entered': { sift_event: 'update_account' },
      'Order Completed': { sift_event: 'transaction', transaction_status: 'success', return_score: true },
    },
    segment_identify: { sift_event: 'update_account' },
    lead_not_scored: 'report',
  },
  approvals: {
    tools: {},
    self_approval: [],
    default_for_write: 'none',
    default_for_destructive: 'approval',
    out_of_band: true,
    ttl_ms: 4 * 60 * 60 * 1000,
    undo_window_ms: 24 * 60 * 60 * 1000,
    wait_ms: 30_000,
    poll_ms: 250,
  },
  audit: { checkpoint_every: 1000, checkpoint_interval_ms: 10_000, retention_days: 0 },
  budgets: {
    window_ms: 60 * 60 * 1000,
    limits: {
      'apply_decision:block': { max_effects: 50 },
      suppress_user: { max_effects: 200 },
    },
  },
  rate_limits: {
    store: 'memory',
    read: { capacity: 60, per_minute: 120 },
    write: { capacity: 20, per_minute: 30 },
    destructive: { capacity: 5, per_minute: 10 },
    tools: {},
    refusals: { capacity: 60, per_minute: 60 },
    requests: { capacity: 300, per_minute: 3000 },
    answers: { capacity: 20, per_minute: 60 },
  },
  identity: { segment_user_id: 'same', mappings: {} },
  feedback: {
    poll_interval_ms: 60_000,
    status_field: 'Fraud_Status__c',
    batch_size: 200,
    overlap_ms: 60_000,
    integration_user_ids: [],
    transitions: [
      { to: 'Closed - Fraud', sift: { decision_id: 'block_user_payment_abuse' } },
      { to: 'Paying Customer', sift: { decision_id: 'looks_ok_payment_abuse' } },
    ],
  },
  leads: { poll_interval_ms: 60_000, batch_size: 200, overlap_ms: 60_000 },
  score_sync: {
    concurrency: 8,
    sift_budget_per_minute: 6_000,
    task_threshold_delta: 20,
    batch_size: 200,
    task_due_days: 2,
  },
  automation: {
    principal: 'automation:sift-webhook',
    role: 'analyst',
    rules: {
      block: ['segment', 'salesforce', 'case', 'suppress'],
      watch: ['segment', 'salesforce'],
      accept: ['segment', 'salesforce'],
    },
    effect_tools: {
      segment: 'sync_decision_to_segment',
      salesforce: 'sync_decision_to_salesforce',
      case: 'create_fraud_case',
      suppress: 'suppress_user',
    },
    case_score_threshold: 0.85,
    suppress_categories: ['block'],
    max_attempts: 10,
    backoff_base_ms: 500,
    backoff_max_ms: 5 * 60 * 1000,
    batch_size: 1000,
    lease_ms: 30_000,
    poll_ms: 250,
    batch_window_ms: 1000,
    segment_batch_size: 100,
    salesforce_slowdown_at: 0.7,
    salesforce_reserve: 0.2,
    salesforce_limit_pause_ms: 5 * 60 * 1000,
    rate_limit: { capacity: 2000, per_minute: 60_000 },
    score_trigger: {
      effects: ['segment_score', 'track', 'opportunities', 'case'],
      high_risk_decisions: [],
      case_rules: [
        { event: '$login', min_score: 0.7, severity: 'high' },
        { event: '*', min_score: 0.85, severity: 'critical' },
      ],
      severity_priority: { critical: 'High', high: 'High', medium: 'Medium', low: 'Low' },
      from_reads: true,
    },
  },
  jobs: {
    lease_ttl_ms: 15_000,
    approval_sweep: { enabled: true },
    lifecycle_feedback: { enabled: true },
    lead_watcher: { enabled: true },
    score_sync: { enabled: true },
    audit_retention: { enabled: true },
  },
  http: {
    host: '127.0.0.1',
    port: 8787,
    max_sessions: 100,
    max_sessions_per_principal: 10,
    idle_timeout_ms: 30 * 60 * 1000,
    unused_session_timeout_ms: 30_000,
    body_limit_bytes: 1024 * 1024,
    trusted_proxies: [],
    allowed_origins: [],
    allowed_hosts: [],
    shutdown_grace_ms: 10_000,
    request_timeout_ms: 30_000,
    headers_timeout_ms: 10_000,
  },
  auth: { key_hashes: [] },
};

/** Command-line flags that override the file and the environment. */
export interface ConfigFlags {
  configFile?: string;
  sandbox?: boolean;
  dataDir?: string;
  readOnly?: boolean;
  toolsets?: string[];
  httpHost?: string;
  httpPort?: number;
  /**
   * The command takes tool calls (serve, outbox work, sync): its rate limits need their store, so a
   * Redis store without FRAUDGATE_REDIS_URL is refused. Commands that only read or administer the
   * store (audit, approvals, budgets, outbox list…) never rate-limit and load without it.
   */
  servesCalls?: boolean;
  /**
   * More problems of the configuration, listed with the schema's (the CLI's policy-name checks, which
   * know the tools). Given the configuration as resolved, or as far as it got when the schema refused
   * it, so one run lists every problem: the checks must take any shape.
   */
  problems?: (config: unknown) => FieldIssue[];
}

export interface LoadedConfig {
  config: Config;
  secrets: Secrets;
  /** Why this mode was chosen, for the one start-up line on stderr. */
  modeReason: string;
}

type Env = Record<string, string | undefined>;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A schema with its optional/default/nullable wrappers removed. */
function unwrapSchema(schema: z.ZodType | undefined): z.ZodType | undefined {
  let node = schema;
  while (node && ['optional', 'default', 'nullable'].includes(node.def.type)) {
    node = (node.def as unknown as { innerType: z.ZodType }).innerType;
  }
  return node;
}

/**
 * Deep merge where objects merge and everything else (arrays included) replaces. With `schema`,
 * a key whose schema is a record (a trait map, a field map, `identity.mappings`, …) is replaced
 * whole: a configured map is the map, never the defaults plus additions.
 */
export function mergeConfig<T>(base: T, override: unknown, schema?: z.ZodType): T {
  if (!isPlainObject(base) || !isPlainObject(override))
    return (override === undefined ? base : override) as T;
  const node = unwrapSchema(schema);
  const shape = node?.def.type === 'object' ? (node as z.ZodObject).shape : undefined;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const child = shape && Object.hasOwn(shape, key) ? (shape[key] as z.ZodType) : undefined;
    out[key] =
      key in out && unwrapSchema(child)?.def.type !== 'record' ? mergeConfig(out[key], value, child) : value;
  }
  return out as T;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** Environment variables that configure an upstream; any one of them selects live mode. */
const UPSTREAM_CREDENTIAL_VARS = [
  'SIFT_API_KEY',
  'SIFT_ACCOUNT_ID',
  'SEGMENT_WRITE_KEY',
  'SEGMENT_PROFILE_TOKEN',
  'SEGMENT_SPACE_ID',
  'SALESFORCE_CLIENT_ID',
  'SALESFORCE_CLIENT_SECRET',
  'SALESFORCE_USERNAME',
  'SALESFORCE_PASSWORD',
] as const;

export function readSecrets(env: Env): Secrets {
  return {
    siftApiKey: nonEmpty(env.SIFT_API_KEY),
    segmentWriteKey: nonEmpty(env.SEGMENT_WRITE_KEY),
    segmentProfileToken: nonEmpty(env.SEGMENT_PROFILE_TOKEN),
    salesforceClientId: nonEmpty(env.SALESFORCE_CLIENT_ID),
    salesforceClientSecret: nonEmpty(env.SALESFORCE_CLIENT_SECRET),
    salesforceUsername: nonEmpty(env.SALESFORCE_USERNAME),
    salesforcePassword: nonEmpty(env.SALESFORCE_PASSWORD),
    auditKey: nonEmpty(env.FRAUDGATE_AUDIT_KEY),
    auditSigningKey: nonEmpty(env.FRAUDGATE_AUDIT_SIGNING_KEY),
    auditSigningKeyFile: nonEmpty(env.FRAUDGATE_AUDIT_SIGNING_KEY_FILE),
    dataKey: nonEmpty(env.FRAUDGATE_DATA_KEY),
    dataKeyPrevious: nonEmpty(env.FRAUDGATE_DATA_KEY_PREVIOUS),
    redisUrl: nonEmpty(env.FRAUDGATE_REDIS_URL),
    devToken: nonEmpty(env.FRAUDGATE_DEV_TOKEN),
    approverToken: nonEmpty(env.FRAUDGATE_APPROVER_TOKEN),
    postgresUrl: nonEmpty(env.FRAUDGATE_POSTGRES_URL),
    segmentWebhookSecret: nonEmpty(env.SEGMENT_WEBHOOK_SECRET),
    siftWebhookKeys: nonEmpty(env.SIFT_WEBHOOK_KEYS)
      ?.split(',')
      .map((k) => k.trim())
      .filter(Boolean),
  };
}

const SECRET_KEYS_IN_FILE = /(api_key|write_key|token|secret|password)/i;

function findSecretKeys(value: unknown, path: string[] = []): string[] {
  if (!isPlainObject(value)) return [];
  return Object.entries(value).flatMap(([k, v]) =>
    SECRET_KEYS_IN_FILE.test(k) ? [[...path, k].join('.')] : findSecretKeys(v, [...path, k]),
  );
}

/** Values a boolean environment variable may take (any case, surrounding spaces ignored). */
const ENV_TRUE = ['true', '1', 'yes', 'on'];
const ENV_FALSE = ['false', '0', 'no', 'off'];

/**
 * A boolean from the environment, or undefined when it is anything else: a typo (`ture`, `enabled`)
 * must stop start-up, never quietly read as false and switch a safeguard off.
 */
function envBoolean(value: string): boolean | undefined {
  const normalized = value.trim().toLowerCase();
  if (ENV_TRUE.includes(normalized)) return true;
  if (ENV_FALSE.includes(normalized)) return false;
  return undefined;
}

/** Settings the environment gives, which variable gave each (by dotted key), and the values it refused. */
interface EnvOverrides {
  values: Record<string, unknown>;
  sources: Map<string, string>;
  issues: FieldIssue[];
}

function envOverrides(env: Env): EnvOverrides {
  const values: Record<string, unknown> = {};
  const sources = new Map<string, string>();
  const issues: FieldIssue[] = [];
  const set = (path: string[], name: string, value: unknown) => {
    let node = values;
    for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
    node[path.at(-1)!] = value;
    sources.set(path.join('.'), name);
  };
  const text = (path: string[], name: string, transform: (value: string) => unknown = (v) => v) => {
    const value = nonEmpty(env[name]);
    if (value !== undefined) set(path, name, transform(value));
  };
  const flag = (path: string[], name: string) => {
    const value = nonEmpty(env[name]);
    if (value === undefined) return;
    const parsed = envBoolean(value);
    if (parsed === undefined) {
      issues.push({
        field: name,
        message: `is not a boolean; set it to one of ${ENV_TRUE.join(', ')} (on) or ${ENV_FALSE.join(', ')} (off), in any case`,
      });
    } else set(path, name, parsed);
  };
  if (logLevelOf(env.FRAUDGATE_LOG_LEVEL) === null) {
    // Read by the logger itself, not a setting; checked here so a typo stops start-up like any other.
    issues.push({
      field: 'FRAUDGATE_LOG_LEVEL',
      message: `is not a log level; set it to one of ${LOG_LEVELS.join(', ')}, in any case`,
    });
  }
  text(['data_dir'], 'FRAUDGATE_DATA_DIR');
  text(['store'], 'FRAUDGATE_STORE');
  text(['replica_id'], 'FRAUDGATE_REPLICA_ID', (v) => v.trim());
  text(['analyst'], 'FRAUDGATE_ANALYST', (v) => v.trim());
  flag(['read_only'], 'FRAUDGATE_READ_ONLY');
  text(['sift', 'base_url'], 'SIFT_BASE_URL');
  text(['sift', 'account_id'], 'SIFT_ACCOUNT_ID');
  text(['segment', 'host'], 'SEGMENT_HOST');
  text(['segment', 'profile_base_url'], 'SEGMENT_PROFILE_BASE_URL');
  text(['segment', 'space_id'], 'SEGMENT_SPACE_ID');
  text(['salesforce', 'login_url'], 'SALESFORCE_LOGIN_URL');
  text(['salesforce', 'api_version'], 'SALESFORCE_API_VERSION');
  text(['salesforce', 'auth_flow'], 'SALESFORCE_AUTH_FLOW');
  text(['http', 'host'], 'FRAUDGATE_HTTP_HOST');
  const port = nonEmpty(env.FRAUDGATE_HTTP_PORT);
  if (port !== undefined) {
    // As strict as --port (portFrom).
    const value = portFrom(port.trim());
    if (value !== undefined) set(['http', 'port'], 'FRAUDGATE_HTTP_PORT', value);
    else {
      issues.push({
        field: 'FRAUDGATE_HTTP_PORT',
        message: `'${port}' is not a port: set it to a whole number from 1 to 65535, or 0 for any free port`,
      });
    }
  }
  text(['http', 'public_url'], 'FRAUDGATE_PUBLIC_URL');
  return { values, sources, issues };
}

/**
 * A port as `--port` and FRAUDGATE_HTTP_PORT take it: a whole number 0–65535 (0: any free port),
 * digits only; undefined otherwise. Number() would let '' and '1e3' through and turn 'abc' into NaN.
 */
export function portFrom(text: string): number | undefined {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  return port >= 0 && port <= 65535 ? port : undefined;
}

/**
 * Schema issues as the operator can act on them: a value that came from an environment variable is
 * reported under that variable (they set FRAUDGATE_HTTP_PORT, not `http.port`).
 */
function issuesFrom(
  error: z.ZodError,
  envSources: ReadonlyMap<string, string>,
  flagSources: ReadonlyMap<string, string>,
): FieldIssue[] {
  return error.issues.map((issue) => {
    const field = issue.path.join('.');
    // A list's item (`toolsets.0`) came from whatever gave the list.
    const sourceOf = (sources: ReadonlyMap<string, string>) =>
      issue.path
        .map((_, end) => sources.get(issue.path.slice(0, issue.path.length - end).join('.')))
        .find((source) => source !== undefined);
    const flag = sourceOf(flagSources);
    if (flag !== undefined) return { field: flag, message: `${issue.message} (it sets ${field})` };
    const variable = sourceOf(envSources);
    return variable === undefined
      ? { field, message: `${issue.message} (from configuration)` }
      : { field: variable, message: `${issue.message} (from the environment; it sets ${field})` };
  });
}

/** What live mode needs, per service; listed so the refusal says exactly what is missing. */
function missingLiveSecrets(config: Config, secrets: Secrets): string[] {
  const missing: string[] = [];
  if (!secrets.siftApiKey) missing.push('SIFT_API_KEY');
  if (!config.sift.account_id) missing.push('SIFT_ACCOUNT_ID');
  if (!secrets.segmentWriteKey) missing.push('SEGMENT_WRITE_KEY');
  if (!secrets.segmentProfileToken) missing.push('SEGMENT_PROFILE_TOKEN');
  if (!config.segment.space_id) missing.push('SEGMENT_SPACE_ID');
  if (!secrets.salesforceClientId) missing.push('SALESFORCE_CLIENT_ID');
  if (!secrets.salesforceClientSecret) missing.push('SALESFORCE_CLIENT_SECRET');
  if (config.salesforce.auth_flow === 'password') {
    if (!secrets.salesforceUsername) missing.push('SALESFORCE_USERNAME');
    if (!secrets.salesforcePassword) missing.push('SALESFORCE_PASSWORD');
  }
  return missing;
}

/**
 * Resolve the configuration. Throws InvalidInputError listing every problem; the CLI prints it
 * and exits non-zero.
 */
export function loadConfig(
  flags: ConfigFlags = {},
  env: Env = process.env,
  cwd = process.cwd(),
): LoadedConfig {
  const issues: FieldIssue[] = [];
  let merged: unknown = DEFAULTS;
  let rateLimitStoreGiven = false;

  const configFile = flags.configFile ?? nonEmpty(env.FRAUDGATE_CONFIG);
  if (configFile) {
    const path = resolve(cwd, configFile);
    if (!existsSync(path)) {
      issues.push({
        field: 'config_file',
        message: `${path} does not exist (from --config / FRAUDGATE_CONFIG)`,
      });
    } else {
      try {
        const fromFile: unknown = JSON.parse(readFileSync(path, 'utf8'));
        for (const key of findSecretKeys(fromFile)) {
          issues.push({
            field: key,
            message: `secrets are read only from the environment; remove it from ${path} and set the matching env var`,
          });
        }
        const automation = isPlainObject(fromFile) ? fromFile.automation : undefined;
        if (isPlainObject(automation) && 'outbox_store' in automation) {
          issues.push({
            field: 'automation.outbox_store',
            message: `replaced by the top-level "store" setting (every piece of state moves together); remove it from ${path}`,
          });
        }
        if ('mode' in (isPlainObject(fromFile) ? fromFile : {})) {
          issues.push({
            field: 'mode',
            message: 'mode is decided at start-up (--sandbox or credentials); remove it from the file',
          });
        }
        const rateLimits = isPlainObject(fromFile) ? fromFile.rate_limits : undefined;
        if (isPlainObject(rateLimits) && rateLimits.store !== undefined) rateLimitStoreGiven = true;
        merged = mergeConfig(merged, fromFile, configSchema);
      } catch (error) {
        // V8's message quotes the text around the error, which may be a secret: keep only the position.
        const where = / at position \d+(?: \(line \d+ column \d+\))?/.exec((error as Error).message)?.[0];
        issues.push({
          field: 'config_file',
          message: `${path} is not valid JSON${where ?? ''}; fix its syntax`,
        });
      }
    }
  }

  const fromEnv = envOverrides(env);
  issues.push(...fromEnv.issues);
  merged = mergeConfig(merged, fromEnv.values);
  // A flag replaces the environment's value, so a problem with that key is no longer the variable's.
  const envSources = new Map(fromEnv.sources);
  const flagOverrides: Record<string, unknown> = {};
  if (flags.dataDir) flagOverrides.data_dir = flags.dataDir;
  if (flags.readOnly) flagOverrides.read_only = true;
  if (flags.toolsets) flagOverrides.toolsets = flags.toolsets;
  if (flags.httpHost !== undefined || flags.httpPort !== undefined) {
    flagOverrides.http = {
      ...(flags.httpHost === undefined ? {} : { host: flags.httpHost }),
      ...(flags.httpPort === undefined ? {} : { port: flags.httpPort }),
    };
  }
  const flagSources = new Map<string, string>();
  if (flags.dataDir) flagSources.set('data_dir', '--data-dir');
  if (flags.toolsets) flagSources.set('toolsets', '--toolsets');
  if (flags.httpHost !== undefined) flagSources.set('http.host', '--host');
  if (flags.httpPort !== undefined) flagSources.set('http.port', '--port');
  for (const key of flagSources.keys()) envSources.delete(key);
  merged = mergeConfig(merged, flagOverrides);

  const secrets = readSecrets(env);
  // Any upstream credential means the operator meant live mode: a half-configured deployment must
  // refuse (and list what is missing), never quietly run the sandbox with an admin dev token.
  const anyCredential = UPSTREAM_CREDENTIAL_VARS.some((name) => nonEmpty(env[name]) !== undefined);
  let modeReason: string;
  if (flags.sandbox) {
    merged = mergeConfig(merged, { mode: 'sandbox' });
    modeReason = '--sandbox was given';
  } else if (!anyCredential) {
    merged = mergeConfig(merged, { mode: 'sandbox' });
    modeReason =
      'no upstream credentials are configured; set SIFT_API_KEY, SEGMENT_WRITE_KEY and SALESFORCE_CLIENT_ID (and the rest, see README) for live mode';
  } else {
    merged = mergeConfig(merged, { mode: 'live' });
    modeReason = 'upstream credentials are configured';
  }

  // Replicas behind a load balancer must share their buckets, or each principal gets N× its limit:
  // on PostgreSQL the rate limits default to Redis; memory stays possible, but only when asked for.
  if ((merged as Config).store === 'postgres' && !rateLimitStoreGiven) {
    merged = mergeConfig(merged, { rate_limits: { store: 'redis' } });
  }
  if (!(merged as Config).data_dir) {
    merged = mergeConfig(merged, { data_dir: join(homedir(), '.fraudgate', (merged as Config).mode) });
  }
  // Parsed once per process: zod's compiled fast path (generated code, built on first parse) would
  // cost start-up more than it could ever save here.
  const parsed = configSchema.safeParse(merged, { jitless: true });
  if (!parsed.success) {
    issues.push(...issuesFrom(parsed.error, envSources, flagSources));
    // What the schema did not refuse is checked too, so the next run does not bring new problems.
    issues.push(...(flags.problems?.(merged) ?? []));
    throw new InvalidInputError(issues, 'Invalid configuration');
  }
  if (issues.length > 0) throw new InvalidInputError(issues, 'Invalid configuration');

  const config = { ...parsed.data, data_dir: resolve(cwd, parsed.data.data_dir) };
  // Every problem of the values together, so one edit fixes them all.
  const valueIssues = mappingProblems(config.mapping);
  if (config.approvals.default_for_destructive === 'none') {
    // No deployment needs it: the sandbox's own exceptions are per tool (approvals.tools), see policy.ts.
    valueIssues.push({
      field: 'approvals.default_for_destructive',
      message:
        "'none' would run labels, decisions and suppressions with no human; destructive writes always " +
        'wait for one. Set approval (the default: a second person), four_eyes or confirm',
    });
  }
  const bands = config.risk_bands;
  if (!(bands.medium < bands.high && bands.high < bands.critical)) {
    valueIssues.push({ field: 'risk_bands', message: 'thresholds must increase: medium < high < critical' });
  }
  valueIssues.push(...(flags.problems?.(config) ?? []));
  if (valueIssues.length > 0) throw new InvalidInputError(valueIssues, 'Invalid configuration');
  // Every missing service secret at once, so one restart fixes them all.
  const missingServices: FieldIssue[] = [];
  if (flags.servesCalls && config.rate_limits.store === 'redis' && !secrets.redisUrl) {
    missingServices.push({
      field: 'FRAUDGATE_REDIS_URL',
      message: rateLimitStoreGiven
        ? 'required when rate_limits.store is redis (e.g. redis://127.0.0.1:6379)'
        : 'required when store is postgres: every replica shares its rate limits through Redis ' +
          '(e.g. redis://127.0.0.1:6379); or set rate_limits.store to memory for limits per replica',
    });
  }
  if (config.store === 'postgres') {
    if (!secrets.postgresUrl) {
      missingServices.push({
        field: 'FRAUDGATE_POSTGRES_URL',
        message: 'required when store is postgres (e.g. postgres://fraudgate:…@db.internal:5432/fraudgate)',
      });
    }
    // Replicas must hash one customer the same way: a key generated per data dir would differ.
    if (!secrets.auditKey) {
      missingServices.push({
        field: 'FRAUDGATE_AUDIT_KEY',
        message:
          'required when store is postgres: every replica must use the same key (e.g. `openssl rand -hex 32`)',
      });
    }
  }
  if (missingServices.length > 0) throw new InvalidInputError(missingServices, 'Invalid configuration');
  if (config.mode === 'live') {
    const missing = missingLiveSecrets(config, secrets);
    if (missing.length > 0) {
      // Real mode never falls back to the sandbox silently: a half-configured deployment stops here.
      throw new InvalidInputError(
        missing.map((name) => ({ field: name, message: 'required in live mode (or start with --sandbox)' })),
        'Live mode is missing credentials',
      );
    }
  }
  return { config, secrets, modeReason };
}

/**
 * What a valid but risky configuration should say at start-up, one line each: PostgreSQL (a fleet)
 * with rate limits in memory gives each principal its limit once per replica.
 */
export function startupWarnings(
  config: Pick<Config, 'store' | 'rate_limits'> & Partial<Pick<Config, 'auth'>>,
): string[] {
  const warnings: string[] = [];
  // Machine markers catch the providers we know; a person's claim catches the rest (fail closed).
  if (config.auth?.jwt && !config.auth.jwt.human_claim) {
    warnings.push(
      'auth.jwt.human_claim is unset: a JWT without a known machine marker counts as a person, who may ' +
        "sign in to the console and decide approvals; set it to a claim only people's tokens carry " +
        '(e.g. {"name": "uid"} for Okta, {"name": "idtyp", "values": ["user"]} for Entra)',
    );
  }
  if (config.store === 'postgres' && config.rate_limits.store === 'memory') {
    warnings.push(
      'rate_limits.store is memory with store postgres: rate limits (and the refusal budget) are per ' +
        'replica, so behind a load balancer each principal gets its limit once per replica; ' +
        'set FRAUDGATE_REDIS_URL and rate_limits.store to redis to share them',
    );
  }
  return warnings;
}

/** Names that must differ within one map, or one write would overwrite another. */
function duplicates(section: string, names: Record<string, string>): FieldIssue[] {
  const seen = new Map<string, string>();
  const issues: FieldIssue[] = [];
  for (const [key, name] of Object.entries(names)) {
    const first = seen.get(name);
    if (first !== undefined) {
      issues.push({
        field: `${section}.${key}`,
        message: `"${name}" is also ${section}.${first}; give each its own name`,
      });
    } else seen.set(name, key);
  }
  return issues;
}

/**
 * Problems the schema cannot see in the central mapping: names that collide (one write would
 * overwrite another). Every one is listed, so one edit fixes them all.
 */
export function mappingProblems(mapping: Config['mapping']): FieldIssue[] {
  const issues = [
    ...duplicates('mapping.score_traits', mapping.score_traits),
    ...duplicates('mapping.track_properties', mapping.track_properties),
    ...duplicates('mapping.salesforce_fields', mapping.salesforce_fields),
  ];
  const scoreTraits = new Set(Object.values(mapping.score_traits));
  if (scoreTraits.has(mapping.suppression_trait)) {
    issues.push({
      field: 'mapping.suppression_trait',
      message: `"${mapping.suppression_trait}" is also a score trait; a score sync would overwrite the suppression`,
    });
  }
  const decisions = { ...mapping.decisions, no_decision: mapping.no_decision };
  for (const [category, effect] of Object.entries(decisions)) {
    const prefix = category === 'no_decision' ? 'mapping.no_decision' : `mapping.decisions.${category}`;
    for (const trait of Object.keys(effect.segment_traits)) {
      if (trait.trim() === '')
        issues.push({ field: `${prefix}.segment_traits`, message: 'a trait name is empty' });
      if (trait === mapping.suppression_trait) {
        issues.push({
          field: `${prefix}.segment_traits.${trait}`,
          message: 'is the suppression trait; suppression is set only by suppress_user (with its approval)',
        });
      }
    }
  }
  return issues;
}

/** The risk band for a 0–1 score under the configured thresholds. */
export function riskBandFor(score: number, bands: Config['risk_bands']): RiskBand {
  if (score >= bands.critical) return 'critical';
  if (score >= bands.high) return 'high';
  if (score >= bands.medium) return 'medium';
  return 'low';
}
