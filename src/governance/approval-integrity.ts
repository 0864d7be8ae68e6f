/**
 * Whether an approval's stored arguments are the ones it was requested, shown and decided under:
 * `args_hash` is the canonical hash the pipeline computed over the call's arguments (without
 * dry_run) when it opened the approval, and every audit record of it names that hash. Arguments
 * that no longer hash to it (edited in the database, or refused as unsealed plain text) are never
 * decided on or run.
 */
import type { Approval } from '../store/approval-store.ts';
import { canonicalJson, sha256Hex } from './canonical-json.ts';

/** Why the stored arguments cannot be trusted, or undefined when they hash to `args_hash`. */
export function argsIntegrityProblem(approval: Approval): string | undefined {
  if (approval.args_refused) return approval.args_refused;
  let hash: string | undefined;
  try {
    hash = sha256Hex(canonicalJson(approval.args));
  } catch {
    hash = undefined;
  }
  return hash === approval.args_hash
    ? undefined
    : 'its stored arguments do not match the argument hash it was requested under (edited in the database)';
}

/** The public failure of an approval whose arguments failed the check: nothing was done. */
export const integrityFailure = (why: string) => ({
  code: 'CONFLICT' as const,
  message:
    `Integrity check failed: ${why}; nothing was done. ` +
    'Check who wrote to the database, then request the action again.',
});
