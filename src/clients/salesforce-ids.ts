/**
 * Salesforce record ids (shared/contracts/salesforce.md §6): 15 characters, case-sensitive, or 18
 * characters = the 15 plus a 3-character checksum that makes them safe in case-insensitive places:
 * an 18-character id is case-insensitive, the checksum's bits giving each of the first 15
 * characters its case back. The first three characters are the key prefix that names the object.
 */

const CHECKSUM_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345';
const ID_PATTERN = /^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$/;

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
 * (wrong length, bad characters, or an 18-character id whose checksum no id has: a character outside
 * the checksum alphabet, or a bit that makes a digit upper-case). An 18-character id is matched
 * case-insensitively: its first 15 characters get their case from the checksum's bits, so
 * `00q…` and `00Q…` with the same checksum are the same (canonical) id.
 */
export function toSalesforceId18(id: string): string | undefined {
  if (!ID_PATTERN.test(id)) return undefined;
  if (id.length === 15) return id + salesforceIdChecksum(id);
  const checksum = id.slice(15).toUpperCase();
  let id15 = '';
  for (let i = 0; i < 15; i += 1) {
    const bits = CHECKSUM_ALPHABET.indexOf(checksum.charAt(Math.floor(i / 5)));
    if (bits < 0) return undefined;
    const upper = (bits >> (i % 5)) & 1;
    const ch = id.charAt(i);
    if (ch >= '0' && ch <= '9') {
      if (upper) return undefined;
      id15 += ch;
    } else {
      id15 += upper ? ch.toUpperCase() : ch.toLowerCase();
    }
  }
  return id15 + checksum;
}

/**
 * The id as Salesforce names the record: a 15-character id as given (case-sensitive), an
 * 18-character one in its canonical case (toSalesforceId18); undefined when not a well-formed id.
 */
export function canonicalSalesforceId(id: string): string | undefined {
  const id18 = toSalesforceId18(id);
  return id18 && id.length === 15 ? id : id18;
}

/** True for a well-formed 15- or 18-character id (checksum verified for 18). */
export function isSalesforceId(id: string): boolean {
  return toSalesforceId18(id) !== undefined;
}
