/**
 * Salesforce record ids (shared/contracts/salesforce.md §6): 15 characters, case-sensitive, or 18
 * characters = the 15 plus a 3-character checksum that makes them safe in case-insensitive places.
 * The first three characters are the key prefix that names the object.
 */

const CHECKSUM_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345';
const ID_PATTERN = /^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$/;

/** Key prefixes of the standard objects fraudgate touches. Custom objects have org-specific prefixes. */
export const SALESFORCE_KEY_PREFIXES = {
  Account: '001',
  AccountHistory: '017',
  Contact: '003',
  User: '005',
  Opportunity: '006',
  Organization: '00D',
  Group: '00G',
  Lead: '00Q',
  Task: '00T',
  FeedItem: '0D5',
  Case: '500',
} as const;

/** The 3-character checksum of a 15-character id. */
export function salesforceIdChecksum(id15: string): string {
  let suffix = '';
  for (let chunk = 0; chunk < 3; chunk += 1) {
    let bits = 0;
    for (let i = 0; i < 5; i += 1) {
      const ch = id15.charAt(chunk * 5 + i);
      if (ch >= 'A' && ch <= 'Z') bits |= 1 << i;
    }
    suffix += CHECKSUM_ALPHABET.charAt(bits);
  }
  return suffix;
}

/**
 * The 18-character form of a 15- or 18-character id, or undefined when `id` is not a well-formed id
 * (wrong length, bad characters or an 18-character id whose checksum does not match).
 */
export function toSalesforceId18(id: string): string | undefined {
  if (!ID_PATTERN.test(id)) return undefined;
  const id15 = id.slice(0, 15);
  const id18 = id15 + salesforceIdChecksum(id15);
  if (id.length === 18 && id.slice(15).toUpperCase() !== id18.slice(15)) return undefined;
  return id18;
}

/** True for a well-formed 15- or 18-character id (checksum verified for 18). */
export function isSalesforceId(id: string): boolean {
  return toSalesforceId18(id) !== undefined;
}
