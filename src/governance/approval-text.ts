/**
 * What approvals say in words, to agents and to approvers. Agent-facing text says a human must
 * decide and where, never how: no command, flag or API an agent could run to approve its own call.
 */
import type { Config } from '../config.ts';

/** Where a human decides: the console's URL when the server has a public one, else its name. */
export function whereToApprove(config: Pick<Config, 'http'>): string {
  const base = config.http.public_url?.replace(/\/+$/, '');
  return base ? `in the approval console (${base}/console)` : 'in the fraudgate approval console';
}
