/**
 * The Lead watcher end to end through the emulators and a real store: a baseline on the first run,
 * then each Lead a human creates is enriched once through the governed tool — over the threshold to
 * the review queue with the configured Lead Status, a lead Sift has never seen `not_scored` (or sent
 * to Sift as a new account when the mapping says so), never a failure; fraudgate's own Leads and its
 * own updates never come back; a Sift outage defers the Lead to the next poll (exactly once overall).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { tools } from '../../tools/index.ts';
import type { Config } from '../../src/config.ts';
import { createJobRunner } from '../../src/jobs/job-runner.ts';
import { registerServeJobs } from '../../src/jobs/serve-jobs.ts';
import { silentLogger } from '../../src/logger.ts';
import { openStore } from '../../src/store/store.ts';
import { runLeadWatcherOnce, LEAD_WATCHER_PRINCIPAL } from '../../src/sync/lead-watcher.ts';
import { createAutomationPipeline } from '../../src/sync/lifecycle-poller.ts';
import { storedAuditRecords } from '../helpers/audit.ts';
import { setup, type DeepPartial, type TestEnv } from '../helpers/setup.ts';

let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

async function start(config: DeepPartial<Config> = {}) {
  env = await setup({ config: { salesforce: { lead_review_status: 'Working - Contacted' }, ...config } });
  const e = env;
  const watch = (state = e.runtime.store.syncState) =>
    runLeadWatcherOnce({
      pipeline: createAutomationPipeline(e.runtime, tools),
      salesforce: e.runtime.clients.salesforce,
      state,
      config: e.config,
      logger: silentLogger,
    });
  return { env: e, watch };
}

const lead = (e: TestEnv, id: string) => e.sandbox.salesforce.records('Lead').find((r) => r.Id === id);
const scoreReads = (e: TestEnv) => e.sandbox.sift.requests('GET', '/v205/users/:uid/score').length;

describe('Lead watcher', () => {
  it('enriches each new Lead once: review queue and status over the threshold, not_scored for an unseen one, own Leads skipped', async () => {
    const { env, watch } = await start();
    const baseline = await watch();
    expect(baseline.baseline).toBe(true);
    expect(baseline.leads).toEqual([]);
    // The demo org's existing leads (the README's risky one included) are not "new".
    expect(lead(env, env.sandbox.salesforce.demo?.riskyLeadId ?? '')?.Sift_Checked_At__c ?? null).toBeNull();

    const sf = env.sandbox.salesforce;
    const risky = sf.createAs('Lead', {
      LastName: 'Hal',
      Company: 'High Risk Trading',
      Email: 'hal.new@example.com',
      Sift_User_Id__c: 'sandbox-high-risk',
    });
    const unseen = sf.createAs('Lead', {
      LastName: 'Nova',
      Company: 'Nobody Sift Knows',
      Email: 'nova.lead@example.com',
    });
    const nameless = sf.createAs('Lead', { LastName: 'Anon', Company: 'No Email Co' });
    const enriched = sf.createAs('Lead', {
      LastName: 'Done',
      Company: 'Checked Co',
      Email: 'done.lead@example.com',
      Sift_Checked_At__c: '2026-01-01T00:00:00Z',
    });
    // fraudgate's own session creates one (e.g. a sync writing a Lead): never enriched by the watcher.
    const own = await env.runtime.clients.salesforce.create('Lead', {
      LastName: 'Own',
      Company: 'Fraudgate',
    });

    const first = await watch();
    const by = new Map(first.leads.map((l) => [l.lead_id, l]));
    expect(by.get(risky.Id)).toMatchObject({ outcome: 'scored', routed_to_review: true });
    expect(by.get(unseen.Id)).toMatchObject({
      outcome: 'not_scored',
      sift_score: null,
      routed_to_review: false,
    });
    expect(by.get(nameless.Id)).toMatchObject({ outcome: 'no_identity' });
    expect(by.get(enriched.Id)).toMatchObject({ outcome: 'already_enriched' });
    expect(by.get(own.id)).toMatchObject({ outcome: 'own_lead' });
    expect(first.leads).toHaveLength(5);
    expect(lead(env, risky.Id)).toMatchObject({
      Status: 'Working - Contacted',
      OwnerId: sf.demo?.fraudQueueId,
      Sift_Risk_Band__c: expect.any(String),
    });
    expect(lead(env, unseen.Id)?.Sift_Checked_At__c).toBeTruthy();
    expect(lead(env, unseen.Id)?.Sift_Score__c ?? null).toBeNull();
    expect(env.sandbox.sift.events).toHaveLength(0);
    const reads = scoreReads(env);
    expect(reads).toBeGreaterThanOrEqual(2);

    // fraudgate's updates of those Leads and a restart (another store handle) bring nothing back.
    const reopened = await openStore(env.config, {});
    const again = await watch(reopened.syncState);
    await reopened.close();
    expect(again.leads).toEqual([]);
    expect(scoreReads(env)).toBe(reads);

    const audit = await storedAuditRecords(env.config, env.runtime.audit);
    const executed = audit.filter(
      (r) =>
        r.event === 'executed' &&
        r.tool === 'enrich_salesforce_lead' &&
        JSON.stringify(r.principal).includes(LEAD_WATCHER_PRINCIPAL.id),
    );
    expect(executed).toHaveLength(2);
  });

  it('mapping lead_not_scored: create_account sends an unseen lead to Sift as a new account, once', async () => {
    const { env, watch } = await start({ mapping: { lead_not_scored: 'create_account' } });
    await watch();
    const created = env.sandbox.salesforce.createAs('Lead', {
      FirstName: 'Nia',
      LastName: 'New',
      Company: 'Fresh Co',
      Email: 'nia.new@example.com',
    });
    const result = await watch();
    expect(result.leads).toEqual([expect.objectContaining({ lead_id: created.Id, outcome: 'sent_to_sift' })]);
    await watch();
    const sent = env.sandbox.sift.events.filter((e) => e.type === '$create_account');
    expect(sent).toHaveLength(1);
    expect(sent[0]?.body).toMatchObject({
      $user_id: 'nia.new@example.com',
      $user_email: 'nia.new@example.com',
    });
  });

  it('Sift failing: the Lead is deferred, nothing after it is skipped, and the next poll enriches it once', async () => {
    const { env, watch } = await start({ sift: { max_retries: 0 } });
    await watch();
    const a = env.sandbox.salesforce.createAs('Lead', {
      LastName: 'Retry',
      Company: 'Flaky Co',
      Email: 'retry.a@example.com',
      Sift_User_Id__c: 'sandbox-high-risk',
    });
    env.sandbox.sift.rateLimit(20, { httpStatus: 429 });
    const deferred = await watch();
    expect(deferred.deferred).toBe(true);
    expect(deferred.leads).toEqual([expect.objectContaining({ lead_id: a.Id, outcome: 'deferred' })]);
    expect(lead(env, a.Id)?.Sift_Checked_At__c ?? null).toBeNull();
    env.sandbox.sift.faults.clear();
    const b = env.sandbox.salesforce.createAs('Lead', {
      LastName: 'After',
      Company: 'Later Co',
      Email: 'retry.b@example.com',
    });
    const retried = await watch();
    expect(retried.leads.map((l) => [l.lead_id, l.outcome])).toEqual([
      [a.Id, 'scored'],
      [b.Id, 'not_scored'],
    ]);
    expect((await watch()).leads).toEqual([]);
    const updates = env.sandbox.salesforce.journal.filter(
      (j) => j.method === 'PATCH' && j.path.includes(`/sobjects/Lead/${a.Id}`),
    );
    expect(updates).toHaveLength(1);
  });

  it('runs in serve as the lead_watcher job on its schedule', async () => {
    const off = { enabled: false };
    const { env } = await start({
      jobs: { approval_sweep: off, lifecycle_feedback: off, score_sync: off, audit_retention: off },
    });
    let t = Date.parse('2026-11-30T10:00:00Z');
    const runner = createJobRunner({
      store: env.runtime.store,
      replicaId: 'replica-a',
      logger: silentLogger,
      now: () => t,
    });
    registerServeJobs(runner, env.runtime, tools);
    try {
      await runner.tick();
      t += env.config.leads.poll_interval_ms;
      expect(await runner.tick()).toEqual(['lead_watcher']); // the baseline
      const fresh = env.sandbox.salesforce.createAs('Lead', {
        LastName: 'Job',
        Company: 'Scheduled Co',
        Email: 'job.lead@example.com',
        Sift_User_Id__c: 'sandbox-high-risk',
      });
      t += env.config.leads.poll_interval_ms;
      expect(await runner.tick()).toEqual(['lead_watcher']);
      expect(lead(env, fresh.Id)).toMatchObject({ OwnerId: env.sandbox.salesforce.demo?.fraudQueueId });
    } finally {
      await runner.close();
    }
  });
});
