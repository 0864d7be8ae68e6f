/**
 * Demo org for the Salesforce emulator. It follows the sandbox personas shared with the Sift and
 * Segment emulators (`sandbox-low-risk` … `sandbox-unmatched`) so one user can be traced across the
 * three APIs:
 * - low-risk, high-risk, watch: an Account and a Contact linked by `Sift_User_Id__c`;
 * - blocked: a Contact WITHOUT `Sift_User_Id__c`, findable only by email `blocked.user@example.com`
 *   (exercises the email fallback when linking);
 * - unmatched: nothing at all.
 * Plus the `Fraud_Review` queue, two analysts, a few Leads, open Opportunities on the high-risk
 * account and two fraud Cases (one open for `sandbox-watch`, owned by the queue; one closed).
 * Every address is on example.com (RFC 2606): no real person's data.
 */

/** What the seeder needs: insert a record (read-only fields allowed) and get its id back. */
export type SalesforceSeedInsert = (sobject: string, fields: Record<string, unknown>) => { Id: string };

/** Ids of the seeded records, for tests and the sandbox banner. */
export interface SalesforceDemoIds {
  fraudQueueId: string;
  analystUserIds: [string, string];
  accounts: Record<'sandbox-low-risk' | 'sandbox-high-risk' | 'sandbox-watch', string>;
  contacts: Record<'sandbox-low-risk' | 'sandbox-high-risk' | 'sandbox-watch' | 'sandbox-blocked', string>;
  leadIds: string[];
  riskyLeadId: string;
  opportunityIds: string[];
  openFraudCaseId: string;
  closedFraudCaseId: string;
}

/** The queue fraud cases are routed to (`Group` with Type 'Queue'). */
export const SALESFORCE_FRAUD_QUEUE = {
  Name: 'Fraud Review',
  DeveloperName: 'Fraud_Review',
  Type: 'Queue',
} as const;

/** The email of the blocked persona's Contact (no Sift_User_Id__c on it). */
export const SALESFORCE_BLOCKED_CONTACT_EMAIL = 'blocked.user@example.com';

/** The email of the Lead that a risky sign-up left behind. */
export const SALESFORCE_RISKY_LEAD_EMAIL = 'lead.risky@example.com';

const LINKED_PERSONAS = [
  {
    siftUserId: 'sandbox-low-risk',
    account: {
      Name: 'Low Risk Outfitters',
      Type: 'Customer',
      Sift_Decision__c: 'accept',
      Sift_Score__c: 5,
    },
    contact: { FirstName: 'Lena', LastName: 'Lowrisk', Email: 'sandbox-low-risk@example.com' },
    band: 'low',
  },
  {
    siftUserId: 'sandbox-high-risk',
    account: { Name: 'High Risk Trading', Type: 'Customer', Sift_Score__c: 93 },
    contact: { FirstName: 'Hal', LastName: 'Highrisk', Email: 'sandbox-high-risk@example.com' },
    band: 'critical',
  },
  {
    siftUserId: 'sandbox-watch',
    account: { Name: 'Watchlist Goods', Type: 'Customer', Sift_Decision__c: 'watch', Sift_Score__c: 62 },
    contact: { FirstName: 'Wren', LastName: 'Watch', Email: 'sandbox-watch@example.com' },
    band: 'medium',
  },
] as const;

/** Insert the demo org through `insert`; returns the ids of what it created. */
export function seedSalesforceDemoData(insert: SalesforceSeedInsert): SalesforceDemoIds {
  const queue = insert('Group', { ...SALESFORCE_FRAUD_QUEUE, Email: 'fraud-review@example.com' });
  const analystA = insert('User', {
    Username: 'ana.analyst@example.com',
    FirstName: 'Ana',
    LastName: 'Analyst',
    Email: 'ana.analyst@example.com',
    Alias: 'aanal',
  });
  const analystB = insert('User', {
    Username: 'ben.reviewer@example.com',
    FirstName: 'Ben',
    LastName: 'Reviewer',
    Email: 'ben.reviewer@example.com',
    Alias: 'brevi',
  });

  const accounts: Record<string, string> = {};
  const contacts: Record<string, string> = {};
  for (const persona of LINKED_PERSONAS) {
    const account = insert('Account', {
      ...persona.account,
      Sift_User_Id__c: persona.siftUserId,
      Sift_Risk_Band__c: persona.band,
    });
    accounts[persona.siftUserId] = account.Id;
    contacts[persona.siftUserId] = insert('Contact', {
      ...persona.contact,
      AccountId: account.Id,
      Sift_User_Id__c: persona.siftUserId,
      Sift_Score__c: persona.account.Sift_Score__c,
      Sift_Risk_Band__c: persona.band,
    }).Id;
  }
  contacts['sandbox-blocked'] = insert('Contact', {
    FirstName: 'Blake',
    LastName: 'Blocked',
    Email: SALESFORCE_BLOCKED_CONTACT_EMAIL,
  }).Id;

  const riskyLead = insert('Lead', {
    FirstName: 'Rex',
    LastName: 'Risky',
    Company: 'Risky Ventures',
    Email: SALESFORCE_RISKY_LEAD_EMAIL,
    LeadSource: 'Web',
    Sift_Score__c: 88,
    Sift_Risk_Band__c: 'high',
  });
  const leadIds = [
    riskyLead.Id,
    insert('Lead', {
      FirstName: 'Penny',
      LastName: 'Prospect',
      Company: 'Prospect Labs',
      Email: 'penny.prospect@example.com',
    }).Id,
    insert('Lead', {
      FirstName: 'Walt',
      LastName: 'Working',
      Company: 'Working Widgets',
      Email: 'walt.working@example.com',
      Status: 'Working - Contacted',
    }).Id,
  ];

  const highRiskAccount = accounts['sandbox-high-risk'] ?? '';
  const opportunityIds = [
    insert('Opportunity', {
      Name: 'High Risk Trading - Bulk order',
      StageName: 'Negotiation/Review',
      CloseDate: '2026-09-30',
      Amount: 48000,
      AccountId: highRiskAccount,
    }).Id,
    insert('Opportunity', {
      Name: 'High Risk Trading - Renewal',
      StageName: 'Prospecting',
      CloseDate: '2026-12-15',
      Amount: 12000,
      AccountId: highRiskAccount,
    }).Id,
  ];

  const openFraudCase = insert('Case', {
    Subject: 'Fraud review: sandbox-watch',
    Description: 'Opened by the demo data: Sift score in the watch band.',
    Type: 'Fraud',
    Reason: 'Payment Fraud',
    Status: 'New',
    Priority: 'High',
    Origin: 'Web',
    OwnerId: queue.Id,
    AccountId: accounts['sandbox-watch'],
    ContactId: contacts['sandbox-watch'],
    Sift_User_Id__c: 'sandbox-watch',
    Sift_Score__c: 62,
  });
  const closedFraudCase = insert('Case', {
    Subject: 'Fraud review: sandbox-low-risk (cleared)',
    Description: 'Closed by the demo data: reviewed and cleared.',
    Type: 'Fraud',
    Reason: 'Chargeback',
    Status: 'Closed',
    Priority: 'Low',
    Origin: 'Email',
    OwnerId: analystA.Id,
    AccountId: accounts['sandbox-low-risk'],
    ContactId: contacts['sandbox-low-risk'],
    Sift_User_Id__c: 'sandbox-low-risk',
    Sift_Score__c: 5,
  });

  return {
    fraudQueueId: queue.Id,
    analystUserIds: [analystA.Id, analystB.Id],
    accounts: accounts as SalesforceDemoIds['accounts'],
    contacts: contacts as SalesforceDemoIds['contacts'],
    leadIds,
    riskyLeadId: riskyLead.Id,
    opportunityIds,
    openFraudCaseId: openFraudCase.Id,
    closedFraudCaseId: closedFraudCase.Id,
  };
}
