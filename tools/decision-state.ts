/**
 * A user's Sift decisions as the sync tools read them. Sift keeps one current decision per abuse
 * type; the user-level state written to Segment and Salesforce is the most severe of them, so a
 * later ACCEPT for one abuse type never clears a BLOCK standing for another.
 */
import type { DecisionCategory, SiftUserDecisionStatus } from '../src/clients/types.ts';
import type { ToolContext } from '../src/tool.ts';

export interface CurrentDecision {
  decision_id: string;
  abuse_type: string;
  category: DecisionCategory;
  decided_at: string;
  time: number;
}

const SEVERITY: Record<DecisionCategory, number> = { accept: 0, watch: 1, block: 2 };

/** The current decision of each abuse type (the latest one per type), with its category. */
export async function currentDecisions(user: string, ctx: ToolContext): Promise<CurrentDecision[]> {
  const statuses = await ctx.clients.sift.getUserDecisions(user, { signal: ctx.signal });
  const latestPerType = new Map<string, SiftUserDecisionStatus>();
  for (const status of statuses) {
    const seen = latestPerType.get(status.abuseType);
    if (!seen || status.time > seen.time) latestPerType.set(status.abuseType, status);
  }
  if (latestPerType.size === 0) return [];
  const catalogue = await ctx.clients.sift.listDecisions({ entityType: 'user' }, { signal: ctx.signal });
  return [...latestPerType.values()].map((status) => ({
    decision_id: status.decisionId,
    abuse_type: status.abuseType,
    // A decision missing from the catalogue was deleted in the Sift console; treat it as a watch, the safe middle.
    category: catalogue.find((d) => d.id === status.decisionId)?.category ?? 'watch',
    decided_at: new Date(status.time).toISOString(),
    time: status.time,
  }));
}

/**
 * The decision that governs the user as a whole: the most severe current one (block > watch >
 * accept), the latest among equals. Undefined when Sift holds no decision for the user.
 */
export function governingDecision(decisions: readonly CurrentDecision[]): CurrentDecision | undefined {
  return decisions.reduce<CurrentDecision | undefined>((best, d) => {
    if (!best) return d;
    const bySeverity = SEVERITY[d.category] - SEVERITY[best.category];
    return bySeverity > 0 || (bySeverity === 0 && d.time > best.time) ? d : best;
  }, undefined);
}

/** The latest decision (of one abuse type, or across all): what a report of "the decision applied" names. */
export function latestDecision(
  decisions: readonly CurrentDecision[],
  abuseType?: string,
): CurrentDecision | undefined {
  return decisions
    .filter((d) => abuseType === undefined || d.abuse_type === abuseType)
    .reduce<CurrentDecision | undefined>((a, b) => (a && a.time >= b.time ? a : b), undefined);
}
