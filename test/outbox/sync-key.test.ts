/**
 * The decision sync's idempotency key: the Account/Contact update carries it in the same composite
 * request as the Chatter post, so a worker that dies after Salesforce applied the writes but before
 * the outbox recorded the effect runs it again without posting twice.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { decisionBody, outboxEnv, sign, type OutboxEnv } from './helpers.ts';

let env: OutboxEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

describe('decision sync retried after a crash between the Salesforce write and the outbox commit', () => {
  it('posts to each feed once, thanks to the key the update carries', async () => {
    env = await outboxEnv({ config: { automation: { lease_ms: 300 } } });
    const e = env;
    const { sift, salesforce } = e.sandbox;
    const user = 'fg_sync_key';
    const account = salesforce.insert('Account', { Name: 'Sync Key', Sift_User_Id__c: user });
    const { time } = await sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: user,
    });

    // The first run dies where a crash would hurt most: Salesforce has the writes, the outbox does not.
    const store = e.automation.store;
    const complete = store.complete.bind(store);
    let crashed = 0;
    store.complete = async (id, owner, result, now) => {
      const tool = (await store.list({ limit: 1000 })).find((x) => x.id === id)?.tool;
      if (tool === 'sync_decision_to_salesforce' && crashed === 0) {
        crashed += 1;
        throw new Error('simulated crash before the outbox commit');
      }
      return complete(id, owner, result, now);
    };

    const body = decisionBody(user, 'watch_user_payment_abuse', time);
    expect((await e.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    // The crashed effect stays leased; once its lease lapses it is claimed and run again.
    expect(await e.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    expect(crashed).toBe(1);

    const effects = await store.list({ limit: 100 });
    const sync = effects.filter((x) => x.tool === 'sync_decision_to_salesforce');
    expect(sync.map((x) => x.state)).toEqual(['done']);
    // The retry wrote the value again but found its key on the record: no second post.
    expect((sync[0]?.result as { records: { chatter_post_id: string | null }[] }).records).toEqual([
      expect.objectContaining({ id: account.Id, chatter_post_id: null }),
    ]);
    const posts = salesforce.records('FeedItem').filter((p) => p.ParentId === account.Id);
    expect(posts).toHaveLength(1);
    const stored = salesforce.records('Account').find((a) => a.Id === account.Id);
    expect(stored?.Sift_Decision__c).toBe('Under Review');
    expect(String(posts[0]?.Body)).toContain(String(stored?.Fraudgate_Sync_Key__c));
    // Both runs' writes went out as composite requests (one API call each), the post beside its update.
    // (Lookups that arrive together go as composite requests too: only the writes are counted.)
    const writes = salesforce
      .requests('POST', '/services/data/:version/composite')
      .filter((r) =>
        (r.body as { compositeRequest: { url: string }[] }).compositeRequest.some((sub) =>
          sub.url.includes('/composite/sobjects'),
        ),
      );
    expect(writes).toHaveLength(2);
  }, 60_000);
});

describe('decision sync whose update or post Salesforce refuses: both land or neither', () => {
  /** One sync of `user`'s decision through the webhook and the worker; the sync effect it left. */
  async function syncOnce(e: OutboxEnv, user: string) {
    const { time } = await e.sandbox.sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: user,
    });
    const body = decisionBody(user, 'watch_user_payment_abuse', time);
    expect((await e.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await e.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    const effects = await e.automation.store.list({ limit: 100 });
    const sync = effects.filter((x) => x.tool === 'sync_decision_to_salesforce');
    expect(sync).toHaveLength(1);
    return sync[0]!;
  }

  /** The operator's replay of a failed effect, run to its end. */
  async function replay(e: OutboxEnv, id: number) {
    expect(await e.automation.store.requeue(id)).toBe(true);
    expect(await e.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    return (await e.automation.store.list({ limit: 100 })).find((x) => x.id === id)!;
  }

  it('a refused Chatter post leaves the Account without the sync key, so the replay posts once', async () => {
    env = await outboxEnv();
    const e = env;
    const { salesforce } = e.sandbox;
    const user = 'fg_atomic_post_refused';
    const account = salesforce.insert('Account', { Name: 'Atomic Post', Sift_User_Id__c: user });
    const refusePosts = salesforce.addValidationRule('FeedItem', (post) =>
      post.ParentId === account.Id ? 'feed tracking is not enabled for Account' : undefined,
    );
    const failed = await syncOnce(e, user);
    expect(failed.state).toBe('dead');
    expect(failed.lastError).toContain('Salesforce refused the FeedItem create');
    const stored = () => salesforce.records('Account').find((a) => a.Id === account.Id);
    expect(stored()?.Fraudgate_Sync_Key__c ?? null).toBeNull();
    expect(stored()?.Sift_Decision__c ?? null).toBeNull();
    const posts = () => salesforce.records('FeedItem').filter((p) => p.ParentId === account.Id);
    expect(posts()).toHaveLength(0);

    refusePosts();
    expect((await replay(e, failed.id)).state).toBe('done');
    expect(posts()).toHaveLength(1);
    expect(stored()?.Fraudgate_Sync_Key__c).toEqual(expect.any(String));
  }, 60_000);

  it('a refused Account update leaves no Chatter post, so the replay posts once', async () => {
    env = await outboxEnv();
    const e = env;
    const { salesforce } = e.sandbox;
    const user = 'fg_atomic_update_refused';
    const account = salesforce.insert('Account', { Name: 'Atomic Update', Sift_User_Id__c: user });
    const refuseUpdates = salesforce.addValidationRule('Account', (row) =>
      row.Id === account.Id && row.Fraudgate_Sync_Key__c ? 'the account is on legal hold' : undefined,
    );
    const failed = await syncOnce(e, user);
    expect(failed.state).toBe('dead');
    const posts = () => salesforce.records('FeedItem').filter((p) => p.ParentId === account.Id);
    expect(posts()).toHaveLength(0);

    refuseUpdates();
    expect((await replay(e, failed.id)).state).toBe('done');
    expect(posts()).toHaveLength(1);
  }, 60_000);
});

describe('decision sync meeting a locked row', () => {
  it('is retried until the lock is gone, and lands once', async () => {
    env = await outboxEnv();
    const e = env;
    const { sift, salesforce } = e.sandbox;
    const user = 'fg_atomic_locked';
    const account = salesforce.insert('Account', { Name: 'Locked Row', Sift_User_Id__c: user });
    // Another transaction holds the Account for the sync's first two attempts.
    let held = 0;
    const release = salesforce.lockRows('Account', (row) => row.Id === account.Id && held++ < 2);
    const { time } = await sift.consoleApplyDecision({
      decisionId: 'watch_user_payment_abuse',
      userId: user,
    });
    const body = decisionBody(user, 'watch_user_payment_abuse', time);
    expect((await e.post(body, { 'x-sift-science-signature': sign(body) })).status).toBe(200);
    expect(await e.automation.worker.drain({ timeoutMs: 30_000 })).toBe(true);
    release();
    const sync = (await e.automation.store.list({ limit: 100 })).filter(
      (x) => x.tool === 'sync_decision_to_salesforce',
    );
    // Two attempts refused for the lock (retried: a temporary refusal), the third landed.
    expect(sync.map((x) => [x.state, x.attempts])).toEqual([['done', 2]]);
    expect(held).toBe(3);
    expect(salesforce.records('FeedItem').filter((p) => p.ParentId === account.Id)).toHaveLength(1);
  }, 60_000);
});
