/**
 * One person, one identity string. Principal ids arrive from several edges — API-key config, JWT
 * subjects, FRAUDGATE_ANALYST, the automation principal — typed by different people and systems:
 * `Ana.Analyst@Example.com ` and `ana.analyst@example.com` are the same approver. Every edge passes
 * ids through {@link normalizeIdentity} once, so four-eyes, session binding, rate limits and the
 * audit all compare and record one form.
 */

/** The principal of a stdio session without FRAUDGATE_ANALYST: may read, may not write. */
export const UNIDENTIFIED = 'unidentified';

/**
 * Trimmed, Unicode NFC (so `é` typed as one code point or as `e` + combining accent is one
 * string) and, for email addresses, lower-cased whole: mail systems treat the domain as
 * case-insensitive and identity providers in practice the local part too.
 */
export function normalizeIdentity(id: string): string {
  const text = id.normalize('NFC').trim();
  return text.includes('@') ? text.toLowerCase().normalize('NFC') : text;
}

/** Whether two principal ids name the same person; tolerates ids stored before normalization. */
export function sameIdentity(a: string, b: string): boolean {
  return normalizeIdentity(a) === normalizeIdentity(b);
}
