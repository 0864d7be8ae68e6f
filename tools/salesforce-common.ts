/**
 * Pieces the Salesforce playbook tools share: record-id arguments, the queue lookup and the Sift
 * score as these tools record it. Kept apart from schemas.ts because only Salesforce tools use them.
 */
import * as z from 'zod';
import { soqlQuote } from '../src/clients/salesforce-client.ts';
import { FraudgateError, InvalidInputError } from '../src/errors.ts';
import type { ToolContext } from '../src/tool.ts';
import { summarizeScore } from './schemas.ts';

/** A Salesforce record id of one object (15 or 18 characters, checked by key prefix). */
export function salesforceId(object: string, prefix: string) {
  return z
    .string()
    .regex(/^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$/, 'a 15- or 18-character Salesforce id')
    .refine((id) => id.startsWith(prefix), `a ${object} id (starting with ${prefix})`)
    .describe(`Salesforce ${object} id (${prefix}…, 15 or 18 characters).`);
}

/**
 * Refuse calls that give none or several of mutually exclusive arguments. Checked in the tool, not
 * with a zod refinement, because the pipeline extends write tools' input schemas with `dry_run`.
 */
export function exactlyOne(args: Record<string, unknown>, fields: string[]): string {
  const given = fields.filter((f) => args[f] !== undefined);
  if (given.length !== 1) {
    throw new InvalidInputError(
      fields.map((field) => ({ field, message: `give exactly one of ${fields.join(', ')}` })),
    );
  }
  return given[0] as string;
}

/** The Id of a queue by DeveloperName; an UPSTREAM_ERROR naming the config key when it does not exist. */
export async function queueId(developerName: string, configKey: string, ctx: ToolContext): Promise<string> {
  const rows = await ctx.clients.salesforce.query<{ Id: string }>(
    `SELECT Id FROM Group WHERE Type = 'Queue' AND DeveloperName = ${soqlQuote(developerName)} LIMIT 1`,
    { signal: ctx.signal },
  );
  if (!rows[0]) {
    throw new FraudgateError(
      'UPSTREAM_ERROR',
      `Salesforce has no queue named ${developerName}; set ${configKey} to the queue's DeveloperName.`,
    );
  }
  return rows[0].Id;
}

/** The user's riskiest Sift score as Salesforce records it (0–100) with its band. */
export async function siftRisk(user: string, ctx: ToolContext) {
  const summary = summarizeScore(
    await ctx.clients.sift.getUserScore(user, { signal: ctx.signal }),
    ctx.config.risk_bands,
  );
  const highest = summary.highest;
  return {
    summary,
    score: highest?.score ?? 0,
    sift_score: highest?.sift_score ?? 0,
    risk_band: highest?.risk_band ?? ('low' as const),
    abuse_type: highest?.abuse_type ?? null,
    reasons: (highest?.reasons ?? []).map((r) => r.name),
  };
}

/** Cut a list to `max` items and say whether anything was left out. */
export function capped<T>(items: readonly T[], max: number): { items: T[]; truncated: boolean } {
  return { items: items.slice(0, max), truncated: items.length > max };
}
