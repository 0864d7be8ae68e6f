/**
 * `fraudgate identities …`: how an operator maps a Sift user id to a Segment user id (stored
 * mappings win over `identity.mappings` in the config) and reads the identity review list.
 * Mapping is deliberately not a tool: a model must not be able to re-point whose profile it reads.
 * A mapping decides whose marketing a suppression stops, so map and unmap need an approver's
 * credential and leave an audit record (written first: no record, no change) naming them.
 */
import { randomUUID } from 'node:crypto';
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { createLogger } from '../logger.ts';
import { openGovernanceState } from '../runtime.ts';
import { authenticateOperator } from './credential.ts';
import { subcommand, UsageError } from './usage.ts';

const USAGE =
  'Usage: fraudgate identities map SIFT_ID SEGMENT_ID | unmap SIFT_ID | list [--json] | unmatched [--json]';

function checkId(field: string, value: string | undefined) {
  return value && value.length <= 255 && !/\s/.test(value)
    ? []
    : [{ field, message: 'give an id of 1–255 characters without spaces' }];
}

export async function runIdentitiesCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('identities', args[0], ['map', 'unmap', 'list', 'unmatched']);
  const [, siftId, segmentId] = args;
  const out = (text: string) => process.stdout.write(text + '\n');
  const state = await openGovernanceState(loaded.config, loaded.secrets, createLogger({ level: 'warn' }));
  const store = state.identities;
  const audited = async (
    event: 'identity_mapped' | 'identity_unmapped',
    actor: Awaited<ReturnType<typeof authenticateOperator>>,
    change: Record<string, unknown>,
  ) =>
    state.audit.append({
      event,
      call_id: randomUUID(),
      principal: { id: actor.id, kind: actor.kind, role: actor.role },
      target: `sift_user:${siftId!}`,
      args_redacted: change,
    });
  try {
    switch (sub) {
      case 'map': {
        const issues = [...checkId('SIFT_ID', siftId), ...checkId('SEGMENT_ID', segmentId)];
        if (issues.length > 0) throw new UsageError(issues, USAGE);
        const actor = await authenticateOperator(loaded, 'change identity mappings');
        const previous = (await store.listMappings()).find((m) => m.sift_user_id === siftId);
        await audited('identity_mapped', actor, {
          sift_user_id: siftId,
          segment_user_id: segmentId,
          previous_segment_user_id: previous?.segment_user_id ?? null,
        });
        await store.map({
          sift_user_id: siftId!,
          segment_user_id: segmentId!,
          mapped_by: actor.id,
          mapped_at: new Date().toISOString(),
        });
        out(`Mapped Sift user ${siftId} to Segment user ${segmentId} (as ${actor.id}).`);
        return 0;
      }
      case 'unmap': {
        const issues = checkId('SIFT_ID', siftId);
        if (issues.length > 0) throw new UsageError(issues, USAGE);
        const actor = await authenticateOperator(loaded, 'change identity mappings');
        const previous = (await store.listMappings()).find((m) => m.sift_user_id === siftId);
        if (previous) {
          await audited('identity_unmapped', actor, {
            sift_user_id: siftId,
            previous_segment_user_id: previous.segment_user_id,
          });
        }
        const removed = previous ? await store.unmap(siftId!) : false;
        out(removed ? `Removed the stored mapping of ${siftId}.` : `No stored mapping for ${siftId}.`);
        return 0;
      }
      case 'list': {
        const mappings = await store.listMappings();
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
        const { items } = await store.listUnmatched({ limit: 200 });
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
    }
  } finally {
    await state.close();
  }
}
