/**
 * The central mapping reaches everything it should (issue 9 item 8): a configured map replaces the
 * default one (no deep merge of trait or field maps); Salesforce field API names, the opportunity
 * flag value and track-event property names come from the mapping; bad mapping config stops
 * start-up with every problem listed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';
import { InvalidInputError } from '../src/errors.ts';
import { setup, type TestEnv } from './helpers/setup.ts';

let env: TestEnv | undefined;
let dir: string | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function loadFromFile(content: unknown) {
  dir = mkdtempSync(join(tmpdir(), 'fraudgate-mapping-'));
  const path = join(dir, 'fraudgate.json');
  writeFileSync(path, JSON.stringify(content));
  return loadConfig({ configFile: path }, { HOME: dir }, dir).config;
}

describe('a configured map replaces the default', () => {
  it('loadConfig: BLOCK traits given in the file are the traits; unspecified entries keep their defaults', () => {
    const config = loadFromFile({
      mapping: { decisions: { block: { segment_traits: { trust_status: 'banned' } } } },
    });
    expect(config.mapping.decisions.block.segment_traits).toEqual({ trust_status: 'banned' });
    expect(config.mapping.decisions.block.segment_event).toBe('Fraud Decision Applied');
    expect(config.mapping.decisions.watch.segment_traits).toEqual({
      fraud_decision: 'watch',
      fraud_blocked: false,
    });
  });

  it('sync_decision_to_segment writes only the configured BLOCK traits (plus the decision details)', async () => {
    const config = loadFromFile({
      mapping: { decisions: { block: { segment_traits: { trust_status: 'banned' } } } },
    });
    env = await setup({ config: { mapping: config.mapping } });
    const result = await env.callTool('sync_decision_to_segment', { user_id: 'sandbox-blocked' });
    expect(result.error).toBeUndefined();
    const identify = env.sandbox.segment
      .eventsFor('sandbox-blocked')
      .filter((e) => e.type === 'identify')
      .at(-1);
    expect(identify?.traits).toMatchObject({ trust_status: 'banned' });
    expect(identify?.traits).not.toHaveProperty('fraud_decision');
    expect(identify?.traits).not.toHaveProperty('fraud_blocked');
  });
});

describe('names and values come from the mapping', () => {
  it('flag_opportunities sets the configured field to the configured value ("Elevated" picklist)', async () => {
    env = await setup({
      config: {
        mapping: {
          salesforce_fields: { opportunity_flag: 'Fraud_Risk_Level__c' },
          opportunity_flag_value: 'Elevated',
        },
      },
    });
    const result = await env.callTool('flag_opportunities', { user_id: 'sandbox-high-risk' });
    expect(result.error).toBeUndefined();
    expect(result.output.flagged).toBeGreaterThan(0);
    const account = env.sandbox.salesforce.demo?.accounts['sandbox-high-risk'];
    const open = env.sandbox.salesforce
      .records('Opportunity')
      .filter((o) => o.AccountId === account && o.IsClosed === false);
    expect(open.length).toBeGreaterThan(0);
    expect(open.every((o) => o.Fraud_Risk_Level__c === 'Elevated')).toBe(true);
    expect(open.some((o) => o.Fraud_Risk_Flag__c === true)).toBe(false);
    // A repeat finds them flagged with the configured value: nothing rewritten.
    const again = await env.callTool('flag_opportunities', { user_id: 'sandbox-high-risk' });
    expect(again.output).toMatchObject({ flagged: 0, already_flagged: open.length });
  });

  it('track_fraud_event names its properties as configured', async () => {
    env = await setup({
      config: { mapping: { track_properties: { sift_score: 'risk_score', risk_band: 'risk_level' } } },
    });
    const result = await env.callTool('track_fraud_event', {
      user_id: 'sandbox-high-risk',
      event: 'score_evaluated',
    });
    expect(result.error).toBeUndefined();
    const track = env.sandbox.segment.eventsFor('sandbox-high-risk').find((e) => e.type === 'track');
    expect(track?.properties).toMatchObject({
      risk_score: 94,
      risk_level: 'critical',
      abuse_type: 'payment_abuse',
    });
    expect(track?.properties).not.toHaveProperty('sift_score');
  });
});

describe('bad mapping config stops start-up with every problem listed', () => {
  it('collisions and bad field names are all named at once', () => {
    let message = '';
    try {
      loadFromFile({
        mapping: {
          score_traits: { band: 'sift_score' },
          suppression_trait: 'fraud_routing_tier',
          track_properties: { is_bad: 'abuse_type' },
          decisions: { block: { segment_traits: { fraud_routing_tier: true } } },
        },
      });
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidInputError);
      message = (error as Error).message;
    }
    for (const field of [
      'mapping.score_traits.band',
      'mapping.suppression_trait',
      'mapping.track_properties.is_bad',
      'mapping.decisions.block.segment_traits.fraud_routing_tier',
    ]) {
      expect(message).toContain(field);
    }
  });

  it('a field API name that is not one is refused by the schema, naming the key', () => {
    expect(() =>
      loadFromFile({ mapping: { salesforce_fields: { decision: 'Sift_Decision__c; DELETE' } } }),
    ).toThrow(/mapping\.salesforce_fields\.decision/);
  });
});
