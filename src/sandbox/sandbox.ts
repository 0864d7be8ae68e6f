/**
 * The sandbox: all three emulators started together with their demo data, plus the client
 * settings that point the real clients at them. Used by `fraudgate serve` when no credentials are
 * configured (or with --sandbox), by the tests and by the benchmarks.
 */
import type { Config, Secrets } from '../config.ts';
import { startSalesforceEmulator, type SalesforceEmulator } from './salesforce-emulator.ts';
import { startSegmentEmulator, type SegmentEmulator } from './segment-emulator.ts';
import { startSiftEmulator, type SiftEmulator } from './sift-emulator.ts';

export interface Sandbox {
  sift: SiftEmulator;
  segment: SegmentEmulator;
  salesforce: SalesforceEmulator;
  /** Config overrides that point every client at the emulators. */
  config: Pick<Config, 'sift' | 'segment' | 'salesforce'>;
  /** The emulators' credentials, in the shape live mode reads from the environment. */
  secrets: Secrets;
  close(): Promise<void>;
}

export async function startSandbox(
  base: Pick<Config, 'sift' | 'segment' | 'salesforce'>,
  options: { seed?: boolean } = {},
): Promise<Sandbox> {
  const [sift, segment, salesforce] = await Promise.all([
    startSiftEmulator({ seed: options.seed ?? true }),
    startSegmentEmulator({ seed: options.seed ?? true }),
    startSalesforceEmulator({ seed: options.seed ?? true }),
  ]);
  return {
    sift,
    segment,
    salesforce,
    config: {
      sift: { ...base.sift, base_url: sift.url, account_id: sift.accountId },
      segment: {
        ...base.segment,
        host: segment.url,
        profile_base_url: segment.url,
        space_id: segment.spaceId,
      },
      salesforce: { ...base.salesforce, login_url: salesforce.url, auth_flow: 'client_credentials' },
    },
    secrets: {
      siftApiKey: sift.apiKey,
      segmentWriteKey: segment.writeKey,
      segmentProfileToken: segment.profileToken,
      salesforceClientId: salesforce.credentials.clientId,
      salesforceClientSecret: salesforce.credentials.clientSecret,
    },
    async close() {
      await Promise.all([sift.close(), segment.close(), salesforce.close()]);
    },
  };
}

/**
 * The upstreams a command talks to: in sandbox mode, start the emulators and point config and
 * secrets at them; in live mode, the configuration as given. Callers close `sandbox` when done.
 */
export async function resolveUpstreams(
  config: Config,
  secrets: Secrets,
): Promise<{ config: Config; secrets: Secrets; sandbox?: Sandbox }> {
  if (config.mode !== 'sandbox') return { config, secrets };
  const sandbox = await startSandbox(config);
  return { config: { ...config, ...sandbox.config }, secrets: { ...secrets, ...sandbox.secrets }, sandbox };
}
