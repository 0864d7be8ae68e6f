/**
 * fraudgate's own decisions propagate (issue 9 item 3). Sift sends a decision webhook only for
 * decisions made in its console or by a Workflow — never for one applied through its API
 * (triggers.md §2.1). So every decision fraudgate applies — `apply_decision` from an agent, an
 * approved action, the lifecycle feedback, any automation — is put into the outbox exactly as if
 * Sift had sent that webhook: same event (user, decision id, Sift's decision time), same dedupe key,
 * same routed effects. Nothing is echoed back: the routed effects write Segment and Salesforce and
 * never apply a decision, and a webhook Sift might still send for it deduplicates against this event.
 */
import type { SiftClient, SiftUserScore } from '../clients/types.ts';
import type { DecisionEvent } from '../store/outbox-store.ts';

/** Outbox events of this entity type carry a fresh score for the score-change trigger (entity id: the user). */
export const SCORE_ENTITY = 'score';

/** The event type (for `case_rules`) of scores fraudgate reads, as opposed to events it sends. */
export const SCORE_READ_EVENT = 'score_read';

/** Where decisions go: the outbox (`enqueue`). */
export interface DecisionSink {
  enqueue(event: DecisionEvent): Promise<unknown>;
}

/**
 * The Sift client with `applyUserDecision` followed by the enqueue of its decision event. The
 * enqueue failing fails the call (after Sift applied the decision): the caller sees an error and the
 * audit records it, rather than a decision whose downstream effects silently never happen.
 */
export function propagatingSift<T extends SiftClient>(sift: T, sink: DecisionSink): T {
  return {
    ...sift,
    async applyUserDecision(userId, input, options) {
      const applied = await sift.applyUserDecision(userId, input, options);
      await sink.enqueue({
        entityType: 'user',
        entityId: userId,
        decisionId: applied.decisionId,
        time: applied.time,
      });
      return applied;
    },
  };
}

/**
 * The outbox event for a score fraudgate read: one per user and distinct score (the riskiest abuse
 * type, its value and Sift's computation time), so reading an unchanged score again stores nothing,
 * and a changed one sets off the score-change trigger once. Undefined for a user without scores.
 */
export function scoreReadEvent(score: SiftUserScore): DecisionEvent | undefined {
  const highest = riskiestOf(score);
  if (!highest) return undefined;
  return {
    entityType: SCORE_ENTITY,
    entityId: score.userId,
    decisionId: scoreReadId(highest),
    // Sift's epoch seconds → ms; also orders a user's scores, so a newer one supersedes an older one's effects.
    time: (highest.time || 0) * 1000,
  };
}

/** The riskiest abuse type's entry (the first of equals), or undefined for a user without scores. */
function riskiestOf(score: SiftUserScore) {
  let type: string | undefined;
  let highest: { score: number; time?: number } | undefined;
  for (const key in score.scores) {
    const s = score.scores[key as keyof SiftUserScore['scores']];
    if (s && (!highest || s.score > highest.score)) {
      type = key;
      highest = s;
    }
  }
  return type === undefined || !highest ? undefined : { type, score: highest.score, time: highest.time };
}

const scoreReadId = (highest: { type: string; score: number }) =>
  `${SCORE_READ_EVENT}:${highest.type}:${Math.round(highest.score * 100)}`;

/**
 * The Sift client with every score it reads — `getUserScore`, and the score returned with an event
 * (`return_score`) — fed to the score-change trigger (issue 9 item 2). Only for the runtime agents and
 * jobs use: the automation runtime that runs the trigger's effects reads scores unobserved, so an
 * effect never sets the trigger off again. An enqueue failure fails the call, as for decisions.
 */
export function scoreObservingSift<T extends SiftClient>(sift: T, sink: DecisionSink): T {
  // The last score stored per user: re-reading an unchanged score (the common case) writes nothing.
  // The outbox's dedupe key stays the authority (other processes, restarts); this only saves the write.
  const stored = new Map<string, string>();
  // Undefined when there is nothing to store, so the read does not wait a turn for nothing.
  const observe = (score: SiftUserScore | undefined): Promise<void> | undefined => {
    // Every read passes here: the unchanged score is told by its key alone, without building the event.
    const highest = score && riskiestOf(score);
    if (!highest) return undefined;
    const key = `${scoreReadId(highest)}@${(highest.time || 0) * 1000}`;
    if (stored.get(score.userId) === key) return undefined;
    const event = scoreReadEvent(score)!;
    return sink.enqueue(event).then(() => {
      stored.delete(event.entityId);
      stored.set(event.entityId, key);
      if (stored.size > 10_000) stored.delete(stored.keys().next().value as string);
    });
  };
  return {
    ...sift,
    async getUserScore(userId, options) {
      const score = await sift.getUserScore(userId, options);
      const storing = observe(score);
      if (storing) await storing;
      return score;
    },
    async sendEvent(event, options) {
      const result = await sift.sendEvent(event, options);
      const storing = observe(result.score);
      if (storing) await storing;
      return result;
    },
  };
}
