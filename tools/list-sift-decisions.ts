import * as z from 'zod';
import type { AbuseType, SiftClient, SiftDecisionDefinition } from '../src/clients/types.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { abuseTypes } from './schemas.ts';

/** The catalogue changes only when someone edits decisions in the Sift console. */
export const DECISIONS_TTL_MS = 60_000;

interface CacheEntry {
  fetchedAt: number;
  decisions: SiftDecisionDefinition[];
}

/** Filters cached per client at most; the least recently fetched is dropped first. */
export const DECISIONS_CACHE_ENTRIES = 64;

// Keyed by client instance, so two runtimes in one process (tests, restarts) never share entries.
const caches = new WeakMap<SiftClient, Map<string, CacheEntry>>();

export interface DecisionFilter {
  entityType?: 'user' | 'order' | 'session' | 'content';
  abuseTypes?: AbuseType[];
}

/**
 * The account's decisions catalogue for a filter, from a per-client cache kept `DECISIONS_TTL_MS`
 * (clock: `ctx.now()`); `fresh: true` bypasses and refills it (policy decisions use that).
 */
export async function decisionCatalogue(
  filter: DecisionFilter,
  ctx: ToolContext,
  options: { fresh?: boolean } = {},
): Promise<{ decisions: SiftDecisionDefinition[]; cached: boolean; fetchedAt: number }> {
  const client = ctx.clients.sift;
  let cache = caches.get(client);
  if (!cache) {
    cache = new Map();
    caches.set(client, cache);
  }
  const key = JSON.stringify([filter.entityType ?? '*', [...new Set(filter.abuseTypes ?? [])].sort()]);
  const now = ctx.now().getTime();
  const hit = cache.get(key);
  if (!options.fresh && hit && now - hit.fetchedAt < DECISIONS_TTL_MS && now >= hit.fetchedAt) {
    return { decisions: hit.decisions, cached: true, fetchedAt: hit.fetchedAt };
  }
  const decisions = await client.listDecisions(
    {
      ...(filter.entityType ? { entityType: filter.entityType } : {}),
      ...(filter.abuseTypes ? { abuseTypes: filter.abuseTypes } : {}),
    },
    { signal: ctx.signal },
  );
  // Re-inserted so Map order is fetch order, and the first key is the one to evict.
  cache.delete(key);
  cache.set(key, { fetchedAt: now, decisions });
  for (const oldest of cache.keys()) {
    if (cache.size <= DECISIONS_CACHE_ENTRIES) break;
    cache.delete(oldest);
  }
  return { decisions, cached: false, fetchedAt: now };
}

export const decisionEntry = z.object({
  decision_id: z.string().describe('Pass this to apply_decision.'),
  name: z.string(),
  description: z.string().optional(),
  entity_type: z.string(),
  abuse_type: z.string(),
  category: z.enum(['block', 'watch', 'accept']),
});

export const listSiftDecisions = defineTool({
  name: 'list_sift_decisions',
  title: 'List the Sift decisions catalogue',
  description:
    'The decisions configured in Sift (id, name, entity type, abuse type, category): the only ' +
    'decision_ids apply_decision accepts. Up to 60 s old.',
  risk: 'read',
  toolset: 'sift',
  idempotent: true,
  input: z.strictObject({
    entity_type: z
      .enum(['user', 'order', 'session', 'content'])
      .optional()
      .describe('apply_decision takes user decisions.'),
    abuse_types: abuseTypes.optional().describe('Only these abuse types; default all.'),
    category: z.enum(['block', 'watch', 'accept']).optional().describe('Only this category.'),
  }),
  output: z.object({
    decisions: z.array(decisionEntry),
    cached: z.boolean().describe("Served from fraudgate's cache."),
    fetched_at: z.string(),
  }),
  async run(args, ctx) {
    const { decisions, cached, fetchedAt } = await decisionCatalogue(
      {
        ...(args.entity_type ? { entityType: args.entity_type } : {}),
        ...(args.abuse_types ? { abuseTypes: args.abuse_types } : {}),
      },
      ctx,
    );
    return {
      decisions: decisions
        .filter((d) => args.category === undefined || d.category === args.category)
        .map((d) => ({
          decision_id: d.id,
          name: d.name,
          ...(d.description === undefined ? {} : { description: d.description }),
          entity_type: d.entityType,
          abuse_type: d.abuseType,
          category: d.category,
        })),
      cached,
      fetched_at: new Date(fetchedAt).toISOString(),
    };
  },
});
