/**
 * `fraudgate outbox …`: the operator's view of automated effects, and the worker process.
 *
 *   list [--all] [--limit N] [--json]
 *                           dead letters and effects waiting for approval (all states with --all),
 *                           newest first, 500 unless --limit says otherwise
 *   show ID [--json]        one effect with its event
 *   retry ID                a dead (or denied) effect back to pending with a fresh attempt count
 *   drop ID                 give up on a dead effect for good
 *   work [--once]           run the worker (until SIGINT/SIGTERM; --once: what is due now, a summary, exit)
 *
 * retry and drop need an approver's credential (src/cli/credential.ts) and leave an audit record
 * under the identity it proves. A dead letter whose outcome is unknown (`OUTCOME_UNKNOWN`: a
 * non-idempotent call that may have reached the upstream) is shown as such; retrying it sends it
 * again, so its record says so. One whose continuation stalled (`CONTINUATION_STALLED`) is shown as
 * such too, with what to check before retrying it; a continuing effect's counts show as progress.
 */
import { randomUUID } from 'node:crypto';
import { tools } from '../../tools/index.ts';
import type { CliValues } from '../cli.ts';
import { startupWarnings, type LoadedConfig } from '../config.ts';
import { subcommand, UsageError } from './usage.ts';
import { createLogger } from '../logger.ts';
import { openAutomation, type Automation } from '../outbox/automation.ts';
import { humanTime } from '../tool.ts';
import { openGovernanceState } from '../runtime.ts';
import {
  isContinuationStalled,
  isOutcomeUnknown,
  OUTCOME_UNKNOWN,
  type EffectState,
  type OutboxEffect,
  type StoredEvent,
} from '../store/outbox-store.ts';
import { authenticateOperator } from './credential.ts';

/** The state `outbox list` shows: a dead letter that needs more than a retry says which kind it is. */
function stateLabel(e: OutboxEffect): string {
  if (isOutcomeUnknown(e)) return 'outcome unknown';
  if (isContinuationStalled(e)) return 'continuation stalled';
  return e.state;
}

function line(e: OutboxEffect): string {
  return [
    String(e.id).padStart(6),
    stateLabel(e).padEnd(20),
    e.tool.padEnd(28),
    e.entityKey.padEnd(32),
    `attempts ${e.attempts}`,
    e.lastError ? `last: ${e.lastError.slice(0, 80)}` : '',
  ]
    .join('  ')
    .trimEnd();
}

/** `--limit` of `outbox list`: how many effects to show (default 500). */
function limitOf(text: string | undefined): number {
  if (text === undefined) return 500;
  const limit = /^[1-9]\d*$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(limit)) {
    throw new UsageError([{ field: '--limit', message: `'${text}' is not a positive whole number` }]);
  }
  return limit;
}

/** Epoch ms as the CLI shows times (UTC, to the minute). */
const at = (ms: number | undefined) => (ms === undefined ? '—' : humanTime(new Date(ms).toISOString()));

/** A continuing effect's progress as `outbox show` words it (the worker's counts; anything else as stored). */
function progressOf(progress: unknown): string {
  const c = (progress as { continuation?: Record<string, unknown> } | null)?.continuation;
  if (
    c &&
    typeof c.shares === 'number' &&
    typeof c.remaining === 'number' &&
    typeof c.max_shares === 'number'
  )
    return `${c.shares} ${c.shares === 1 ? 'share' : 'shares'} done, ${c.remaining} still to do (at most ${c.max_shares} shares)`;
  return JSON.stringify(progress);
}

/** `outbox show` for people: what the effect does, for which decision, where it stands. */
function showEffect(e: OutboxEffect, event: StoredEvent | undefined): string {
  return [
    `effect ${e.id}  ${e.state}`,
    `  action:     ${e.tool} (${e.effect})`,
    ...(isOutcomeUnknown(e)
      ? [
          `  outcome:    unknown: the call began at ${at(e.attemptedAt)} and may have reached the upstream. ` +
            `Check there first; fraudgate outbox retry ${e.id} sends it again, fraudgate outbox drop ${e.id} gives it up.`,
        ]
      : []),
    ...(isContinuationStalled(e)
      ? [
          '  stalled:    the effect ran in shares and stopped: the work left did not shrink, or it took the most shares ' +
            'it may. Check the org for a flow or trigger that clears or rewrites what it writes (the fraud flag of ' +
            `the opportunities); once fixed, fraudgate outbox retry ${e.id} starts it afresh (every share runs again), ` +
            `fraudgate outbox drop ${e.id} gives it up.`,
        ]
      : []),
    `  arguments:  ${JSON.stringify(e.args)}`,
    `  entity:     ${e.entityKey}`,
    event
      ? `  decision:   ${event.decisionId} on ${event.entityType} ${event.entityId} at ${at(event.time)} (event ${event.id}, received ${at(event.receivedAt)})`
      : `  decision:   event ${e.eventId} (no longer stored)`,
    `  attempts:   ${e.attempts}` + (e.state === 'pending' ? `; next at ${at(e.nextAttemptAt)}` : ''),
    ...(e.leaseOwner ? [`  leased by:  ${e.leaseOwner} until ${at(e.leaseUntil)}`] : []),
    ...(e.approvalId ? [`  approval:   ${e.approvalId} (fraudgate approvals show ${e.approvalId})`] : []),
    ...(e.lastError ? [`  last error: ${e.lastError}`] : []),
    ...(e.progress !== undefined ? [`  progress:   ${progressOf(e.progress)}`] : []),
    ...(e.result !== undefined ? [`  result:     ${JSON.stringify(e.result)}`] : []),
    `  created:    ${at(e.createdAt)}; updated ${at(e.updatedAt)}`,
  ].join('\n');
}

export async function runOutboxCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('outbox', args[0], ['list', 'show', 'retry', 'drop', 'work']);
  const rawId = args[1];
  const out = (text: string) => process.stdout.write(text + '\n');
  if (sub === 'work') return runWorker(loaded, values.once === true);

  const state = await openGovernanceState(loaded.config, loaded.secrets, createLogger({ level: 'warn' }));
  const store = state.store.outbox;
  try {
    const needId = () => {
      if (rawId === undefined) {
        throw new UsageError([{ field: 'ID', message: 'an outbox effect id (see fraudgate outbox list)' }]);
      }
      // Number('') is 0 and Number(' 7') is 7: only plain digits name an effect.
      const id = /^[1-9]\d*$/.test(rawId) ? Number(rawId) : NaN;
      if (!Number.isSafeInteger(id)) {
        throw new UsageError([
          {
            field: 'ID',
            message: `'${rawId}' is not an outbox effect id: a positive whole number (see fraudgate outbox list)`,
          },
        ]);
      }
      return id;
    };
    switch (sub) {
      case 'list': {
        const limit = limitOf(values.limit);
        const states: EffectState[] = values.all ? [] : ['dead', 'awaiting_approval', 'denied'];
        // One more than shown: whether there are more to say so.
        const listed = await store.list({ states, limit: limit + 1 });
        const effects = listed.slice(0, limit);
        const stats = await store.stats();
        if (values.json) out(JSON.stringify({ effects, stats }));
        else {
          out(
            effects.length === 0
              ? 'No dead letters or effects waiting for approval.'
              : effects.map(line).join('\n'),
          );
          const totals = Object.entries(stats).filter(([, count]) => count > 0);
          out(`totals: ${totals.map(([state, count]) => `${state} ${count}`).join(', ') || 'none'}`);
        }
        if (listed.length > limit) {
          const matching = Object.entries(stats)
            .filter(
              ([state]) =>
                state !== 'unrouted' && (states.length === 0 || states.includes(state as EffectState)),
            )
            .reduce((sum, [, count]) => sum + count, 0);
          process.stderr.write(
            `fraudgate: listed the newest ${limit} of ${matching} ${values.all ? 'effects' : 'effects needing attention (dead, denied, awaiting approval)'}; ` +
              `--limit N lists more, fraudgate outbox show ID shows one\n`,
          );
        }
        return 0;
      }
      case 'show': {
        const effect = await store.get(needId());
        if (!effect) {
          process.stderr.write(`fraudgate: no outbox effect ${rawId}\n`);
          return 1;
        }
        const event = await store.getEvent(effect.eventId);
        out(values.json ? JSON.stringify({ effect, event }, null, 2) : showEffect(effect, event));
        return 0;
      }
      case 'retry':
      case 'drop': {
        const effectId = needId();
        const actor = await authenticateOperator(loaded, `${sub} outbox effects`);
        // The change and its audit record in one transaction: an unrecorded retry or drop never stands.
        const done = await state.store.transaction(async (tx) => {
          const before = await tx.outbox.get(effectId);
          if (before === undefined) return 'missing';
          const changed =
            sub === 'retry' ? await tx.outbox.requeue(effectId) : await tx.outbox.drop(effectId);
          if (!changed) return undefined;
          // The record says when the operator acted on an unknown outcome (a retry sends it again).
          const unknown = isOutcomeUnknown(before);
          const outcome = {
            ...(unknown ? { code: OUTCOME_UNKNOWN } : {}),
            ...(values.reason ? { message: values.reason } : {}),
          };
          await state.audit.appendIn(tx.sql, {
            event: sub === 'retry' ? 'requeued' : 'dropped',
            call_id: randomUUID(),
            tool: before?.tool,
            principal: { id: actor.id, kind: actor.kind, role: actor.role },
            target: `outbox_effect:${effectId}`,
            ...(Object.keys(outcome).length > 0 ? { outcome } : {}),
          });
          return { unknown };
        });
        if (done === 'missing') {
          process.stderr.write(
            `fraudgate: no outbox effect ${effectId} (fraudgate outbox list --all shows every effect)\n`,
          );
          return 1;
        }
        if (!done) {
          process.stderr.write(
            `fraudgate: effect ${effectId} is not a dead letter (see fraudgate outbox show ${effectId})\n`,
          );
          return 1;
        }
        out(
          sub === 'drop'
            ? `effect ${effectId} dropped`
            : done.unknown
              ? `effect ${effectId} queued again: it will be sent again, although its first attempt may have reached the upstream`
              : `effect ${effectId} queued again`,
        );
        return 0;
      }
    }
  } finally {
    await state.close();
  }
}

/** The worker as its own process (several may run against one database: leases keep them apart). */
async function runWorker(loaded: LoadedConfig, once: boolean): Promise<number> {
  const logger = createLogger();
  if (loaded.config.mode === 'sandbox') {
    process.stderr.write(
      'fraudgate: outbox work needs the upstream APIs (credentials in the environment); in sandbox mode run serve --http, which runs the worker itself\n',
    );
    // A refusal of this deployment, not of the command line: 2 is for usage errors only.
    return 1;
  }
  for (const warning of startupWarnings(loaded.config)) logger.warn(warning);
  const automation = await openAutomation({ config: loaded.config, secrets: loaded.secrets, tools, logger });
  if (once) {
    try {
      return await workOnce(automation);
    } finally {
      await automation.close();
    }
  }
  automation.worker.start();
  logger.info('outbox worker started', { stats: await automation.store.stats() });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await automation.close();
  return 0;
}

/**
 * `outbox work --once`: passes until one claims nothing that is due, so an effect waiting out a
 * backoff or a deferral ends the run instead of holding it (a scheduler runs it again later). One
 * line on stderr says what happened; exit 1 only when an effect failed for good (a dead letter).
 */
/** How long `outbox work --once` may keep passing over a queue that keeps coming due. */
const ONCE_DEADLINE_MS = 10 * 60 * 1000;

async function workOnce(automation: Automation): Promise<number> {
  const totals = { done: 0, dead: 0 };
  // Passes end when one claims and routes nothing; the deadline only bounds a pathological queue
  // whose effects come due again at once on every pass (a retry-after of 0), as `drain` did before.
  const deadline = Date.now() + ONCE_DEADLINE_MS;
  let overran = false;
  for (;;) {
    const pass = await automation.worker.tick();
    totals.done += pass.done;
    totals.dead += pass.dead;
    if (pass.claimed === 0 && pass.routed === 0) break;
    if (Date.now() > deadline) {
      overran = true;
      break;
    }
  }
  const stats = await automation.store.stats();
  const nextAt = stats.pending > 0 ? await automation.store.nextPendingAt() : undefined;
  const deferred =
    `deferred ${stats.pending}` +
    (nextAt === undefined
      ? ''
      : ` until ${new Date(nextAt).toISOString().slice(0, 19).replace('T', ' ')} UTC`);
  const waiting = [
    ...(stats.awaiting_approval > 0 ? [`${stats.awaiting_approval} waiting for approval`] : []),
    ...(stats.leased > 0 ? [`${stats.leased} running in another worker`] : []),
    ...(stats.unrouted > 0 ? [`${stats.unrouted} events not yet routed (see the log)`] : []),
  ];
  process.stderr.write(
    `fraudgate: outbox work --once: done ${totals.done}, ${deferred}, failed ${totals.dead}` +
      (totals.dead > 0 ? ' (fraudgate outbox list)' : '') +
      (waiting.length > 0 ? `; ${waiting.join(', ')}` : '') +
      (overran ? `; stopped after ${ONCE_DEADLINE_MS / 60_000} min with work still coming due` : '') +
      '\n',
  );
  return totals.dead > 0 ? 1 : 0;
}
