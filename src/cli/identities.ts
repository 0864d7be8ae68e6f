/**
 * `fraudgate identities …`: how an operator maps a Sift user id to a Segment user id (stored
 * mappings win over `identity.mappings` in the config) and reads the identity review list.
 * Mapping is deliberately not a tool: a model must not be able to re-point whose profile it reads.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { UsageError } from './usage.ts';
import { databasePath } from '../runtime.ts';
import { openSqliteIdentityStore } from '../store/identity-store.ts';

const USAGE =
  'Usage: fraudgate identities map SIFT_ID SEGMENT_ID [--as NAME] | unmap SIFT_ID | list [--json] | unmatched [--json]';

function checkId(field: string, value: string | undefined) {
  return value && value.length <= 255 && !/\s/.test(value)
    ? []
    : [{ field, message: 'give an id of 1–255 characters without spaces' }];
}

export function runIdentitiesCommand(args: string[], values: CliValues, loaded: LoadedConfig): number {
  const [sub, siftId, segmentId] = args;
  const out = (text: string) => process.stdout.write(text + '\n');
  const store = openSqliteIdentityStore(databasePath(loaded.config), loaded.config.identity);
  try {
    switch (sub) {
      case 'map': {
        const issues = [...checkId('SIFT_ID', siftId), ...checkId('SEGMENT_ID', segmentId)];
        if (issues.length > 0) throw new UsageError(issues, USAGE);
        store.map({
          sift_user_id: siftId!,
          segment_user_id: segmentId!,
          mapped_by: values.as?.trim() || 'cli',
          mapped_at: new Date().toISOString(),
        });
        out(`Mapped Sift user ${siftId} to Segment user ${segmentId}.`);
        return 0;
      }
      case 'unmap': {
        const issues = checkId('SIFT_ID', siftId);
        if (issues.length > 0) throw new UsageError(issues, USAGE);
        const removed = store.unmap(siftId!);
        out(removed ? `Removed the stored mapping of ${siftId}.` : `No stored mapping for ${siftId}.`);
        return 0;
      }
      case 'list': {
        const mappings = store.listMappings();
        if (values.json) out(JSON.stringify(mappings, null, 2));
        else if (mappings.length === 0) out('No stored mappings.');
        else
          out(
            mappings
              .map((m) => `${m.sift_user_id}  →  ${m.segment_user_id}  (by ${m.mapped_by}, ${m.mapped_at})`)
              .join('\n'),
          );
        return 0;
      }
      case 'unmatched': {
        const { items } = store.listUnmatched({ limit: 200 });
        if (values.json) out(JSON.stringify(items, null, 2));
        else if (items.length === 0) out('The identity review list is empty.');
        else
          out(
            items
              .map(
                (i) =>
                  `${i.sift_user_id}  seen ${i.times_seen}x, last ${i.last_seen_at}; tried ` +
                  i.tried.map((t) => `${t.system}:${t.identifier}`).join(', '),
              )
              .join('\n'),
          );
        return 0;
      }
      default:
        process.stderr.write(USAGE + '\n');
        return 2;
    }
  } finally {
    store.close();
  }
}
