/**
 * Demo Segment profiles for the sandbox. The user ids match the personas the other emulators seed
 * (`sandbox-low-risk` … `sandbox-unmatched`), so one persona can be followed across Sift, Segment and
 * Salesforce. Every address is on example.com (RFC 2606): no real person's data.
 */

/** One seeded profile: the identify traits the Profile API emulator starts with. */
export interface SegmentDemoProfile {
  userId: string;
  traits: Record<string, unknown>;
}

export const SEGMENT_DEMO_PROFILES: readonly SegmentDemoProfile[] = [
  {
    userId: 'sandbox-low-risk',
    traits: {
      email: 'sandbox-low-risk@example.com',
      name: 'Lena Lowrisk',
      plan: 'pro',
      signup_date: '2022-03-14',
      sift_risk_level: 'low',
      suppressed_for_fraud: false,
    },
  },
  {
    userId: 'sandbox-high-risk',
    traits: {
      email: 'sandbox-high-risk@example.com',
      name: 'Hugo Highrisk',
      plan: 'free',
      signup_date: '2025-01-02',
      sift_risk_level: 'high',
      suppressed_for_fraud: false,
    },
  },
  {
    userId: 'sandbox-blocked',
    traits: {
      email: 'blocked.user@example.com',
      name: 'Bea Blocked',
      plan: 'free',
      signup_date: '2025-02-20',
      sift_risk_level: 'high',
      suppressed_for_fraud: true,
      suppressed_for_fraud_at: '2025-02-21T09:30:00.000Z',
    },
  },
  {
    userId: 'sandbox-watch',
    traits: {
      email: 'sandbox-watch@example.com',
      name: 'Walt Watch',
      plan: 'team',
      signup_date: '2024-07-09',
      sift_risk_level: 'medium',
      suppressed_for_fraud: false,
    },
  },
  {
    // Known to Segment but to nobody else: exercises "profile found, no Sift/Salesforce match".
    userId: 'sandbox-unmatched',
    traits: {
      email: 'sandbox-unmatched@example.com',
      name: 'Uma Unmatched',
      plan: 'free',
      signup_date: '2024-11-30',
    },
  },
];
