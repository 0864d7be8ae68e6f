/**
 * Demo data for the Sift emulator: a few personas across the score range and a decisions
 * catalogue shaped like shared/fixtures/sift/decisions-list.json (lowercase enums, ms timestamps).
 *
 * Exported so the README, the sandbox banner and other emulators (Salesforce seeds the same user
 * ids, except `sandbox-unmatched`) can list them without copying values.
 */
import type { AbuseType, DecisionCategory, SiftReason } from '../clients/types.ts';

/** A decision as configured in the Sift Console (one entry of `GET /v3/accounts/{acct}/decisions`). */
export interface SiftDecisionRecord {
  id: string;
  name: string;
  description: string;
  entity_type: 'user' | 'order' | 'session' | 'content';
  abuse_type: AbuseType;
  category: DecisionCategory;
  /** Empty: the emulator only ever calls the webhook URL given in its own options, never the network. */
  webhook_url: string;
  created_at: number;
  created_by: string;
  updated_at: number;
  updated_by: string;
}

/** A seeded user: scores per abuse type and, optionally, a decision already applied from the console. */
export interface SiftDemoUser {
  userId: string;
  /** One line for humans (README, sandbox banner). */
  summary: string;
  scores: Partial<Record<AbuseType, { score: number; reasons: SiftReason[] }>>;
  decision?: {
    id: string;
    source: 'MANUAL_REVIEW' | 'AUTOMATED_RULE' | 'CHARGEBACK';
    analyst?: string;
    description?: string;
  };
}

// Fixed instants keep demo output stable across runs (2025-01-06T09:00:00Z and a week later).
const CREATED_AT = 1736154000000;
const UPDATED_AT = 1736758800000;
const ADMIN = 'sandbox-admin@fraudgate.invalid';

function decision(
  id: string,
  name: string,
  description: string,
  entityType: SiftDecisionRecord['entity_type'],
  abuseType: AbuseType,
  category: DecisionCategory,
): SiftDecisionRecord {
  return {
    id,
    name,
    description,
    entity_type: entityType,
    abuse_type: abuseType,
    category,
    webhook_url: '',
    created_at: CREATED_AT,
    created_by: ADMIN,
    updated_at: UPDATED_AT,
    updated_by: ADMIN,
  };
}

export const SIFT_DEMO_DECISIONS: readonly SiftDecisionRecord[] = [
  decision(
    'block_user_payment_abuse',
    'Block user',
    'Cancel pending orders and block payments.',
    'user',
    'payment_abuse',
    'block',
  ),
  decision(
    'watch_user_payment_abuse',
    'Watch user',
    'Allow, but route new orders to review.',
    'user',
    'payment_abuse',
    'watch',
  ),
  decision(
    'looks_ok_payment_abuse',
    'Looks OK',
    'Reviewed: legitimate customer.',
    'user',
    'payment_abuse',
    'accept',
  ),
  decision(
    'block_user_account_abuse',
    'Ban account',
    'Disable the account for abuse.',
    'user',
    'account_abuse',
    'block',
  ),
  decision(
    'looks_ok_account_abuse',
    'Account OK',
    'Reviewed: legitimate account.',
    'user',
    'account_abuse',
    'accept',
  ),
  decision(
    'cancel_order_payment_abuse',
    'Cancel order',
    'Cancel and refund the order.',
    'order',
    'payment_abuse',
    'block',
  ),
  decision(
    'ship_order_payment_abuse',
    'Ship order',
    'Release the order for shipping.',
    'order',
    'payment_abuse',
    'accept',
  ),
  decision(
    'lock_session_account_takeover',
    'Lock session',
    'Force a password reset.',
    'session',
    'account_takeover',
    'block',
  ),
  decision(
    'remove_post_content_abuse',
    'Remove post',
    'Hide the content item.',
    'content',
    'content_abuse',
    'block',
  ),
];

export const SIFT_DEMO_USERS: readonly SiftDemoUser[] = [
  {
    userId: 'sandbox-low-risk',
    summary: 'Long-standing customer, low scores, no decisions.',
    scores: {
      payment_abuse: { score: 0.08, reasons: [{ name: 'Account age (days)', value: 1460 }] },
      account_abuse: { score: 0.04, reasons: [] },
    },
  },
  {
    userId: 'sandbox-high-risk',
    summary: 'Card testing pattern, high payment_abuse score, no decision yet.',
    scores: {
      payment_abuse: {
        score: 0.94,
        reasons: [
          { name: 'UsersPerDevice', value: 4 },
          { name: 'Card velocity (1h)', value: 9 },
          { name: 'Billing/shipping country mismatch', value: 'true' },
        ],
      },
      account_abuse: { score: 0.71, reasons: [{ name: 'Accounts per IP (24h)', value: 6 }] },
    },
  },
  {
    userId: 'sandbox-blocked',
    summary: 'Already blocked for payment abuse by a reviewer.',
    scores: { payment_abuse: { score: 0.97, reasons: [{ name: 'Chargebacks (90d)', value: 3 }] } },
    decision: {
      id: 'block_user_payment_abuse',
      source: 'MANUAL_REVIEW',
      analyst: 'reviewer@fraudgate.invalid',
      description: 'Confirmed stolen cards',
    },
  },
  {
    userId: 'sandbox-watch',
    summary: 'Medium score, on a watch list.',
    scores: { payment_abuse: { score: 0.62, reasons: [{ name: 'New payment method (24h)', value: 2 }] } },
    decision: { id: 'watch_user_payment_abuse', source: 'AUTOMATED_RULE', description: 'Score above 0.6' },
  },
  {
    userId: 'sandbox-unmatched',
    summary: 'Known to Sift but has no Salesforce record.',
    scores: { payment_abuse: { score: 0.55, reasons: [{ name: 'Email age (days)', value: 2 }] } },
  },
];

/** A finished workflow run for `GET /v3/accounts/{acct}/workflows/runs/{id}` (fixture shape). */
export const SIFT_DEMO_WORKFLOW_RUN = {
  id: 'sandbox-run-1',
  state: 'finished',
  config: { id: 'sandbox-flow', version: String(CREATED_AT) },
  config_display_name: 'sandbox create order flow',
  abuse_types: ['payment_abuse'],
  entity: { type: 'user', id: 'sandbox-watch' },
  history: [
    {
      app: 'decision',
      name: 'watch user',
      state: 'finished',
      config: { decision_id: 'watch_user_payment_abuse' },
    },
    { app: 'user_scorer', name: 'Entity', state: 'finished' },
    { app: 'event_processor', name: 'Event', state: 'finished' },
  ],
} as const;
