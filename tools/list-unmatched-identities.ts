import * as z from 'zod';
import { defineTool } from '../src/tool.ts';

export const listUnmatchedIdentities = defineTool({
  name: 'list_unmatched_identities',
  title: 'List users awaiting identity review',
  description:
    'The identity review list: Sift users lookup_user could not match in Salesforce, newest first, ' +
    'with the identifiers tried. A later match removes them.',
  risk: 'read',
  toolset: 'triage',
  idempotent: true,
  openWorld: false,
  input: z.strictObject({
    cursor: z.string().min(1).max(512).optional().describe('next_cursor from the previous page.'),
    limit: z.number().int().min(1).max(100).default(20).describe('Entries per page.'),
  }),
  output: z.object({
    items: z.array(
      z.object({
        sift_user_id: z.string(),
        tried: z.array(
          z.object({
            system: z.enum(['sift', 'segment', 'salesforce']),
            identifier: z.enum(['sift_user_id', 'segment_user_id', 'email', 'phone']),
            value: z.string(),
            found: z.boolean(),
          }),
        ),
        first_seen_at: z.string(),
        last_seen_at: z.string(),
        times_seen: z.number().int().min(1),
      }),
    ),
    next_cursor: z.string().optional().describe('Absent on the last page.'),
  }),
  async run(args, ctx) {
    return ctx.identities.listUnmatched({
      limit: args.limit,
      ...(args.cursor ? { cursor: args.cursor } : {}),
    });
  },
});
