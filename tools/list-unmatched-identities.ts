import * as z from 'zod';
import { InvalidInputError } from '../src/errors.ts';
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
    // Sealed (`ctx.cursors`): a position at a 255-character id seals to about 540 characters.
    cursor: z.string().min(1).max(1024).optional().describe('next_cursor from the previous page.'),
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
    // A client hands the cursor back, never writes it: an edited or made-up position does not open.
    const position = args.cursor === undefined ? undefined : ctx.cursors.open(args.cursor);
    if (args.cursor !== undefined && position === undefined) {
      throw new InvalidInputError([
        {
          field: 'cursor',
          message:
            'is not a next_cursor this server returned; pass one back unchanged, or omit it to start over',
        },
      ]);
    }
    const page = await ctx.identities.listUnmatched({
      limit: args.limit,
      ...(position !== undefined ? { cursor: position } : {}),
    });
    return page.next_cursor === undefined
      ? page
      : { ...page, next_cursor: ctx.cursors.seal(page.next_cursor) };
  },
});
