/**
 * fraudgate's own decisions propagate (issue 9 item 3). Sift sends a decision webhook only for
 * decisions made in its console or by a Workflow — never for one applied through its API
 * (triggers.md §2.1). So every decision fraudgate applies — `apply_decision` from an agent, an
 * approved action, the lifecycle feedback, any automation — is put into the outbox exactly as if
 * Sift had sent that webhook: same event (user, decision id, Sift's decision time), same dedupe key,
 * same routed effects. Nothing is echoed back: the routed effects write Segment and Salesforce and
 * never apply a decision, and a webhook Sift might still send for it deduplicates against this event.
 */
import type { SiftClient } from '../clients/types.ts';
import type { DecisionEvent } from '../store/outbox-store.ts';

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
