/**
 * Placeholder credentials for Sift, Segment and Salesforce: with these in the environment (and no
 * `sandbox` asked for) the configuration resolves to live mode.
 */
export const LIVE_ENV = {
  SIFT_API_KEY: 'k',
  SIFT_ACCOUNT_ID: 'acct',
  SEGMENT_WRITE_KEY: 'w',
  SEGMENT_PROFILE_TOKEN: 't',
  SEGMENT_SPACE_ID: 'spa',
  SALESFORCE_CLIENT_ID: 'id',
  SALESFORCE_CLIENT_SECRET: 's',
};
