/**
 * Loopback emulator of Segment's Tracking API (as `@segment/analytics-node` 3.x uses it) and of the
 * Profile API, faithful to shared/contracts/segment.md §4. The real library talks to it unchanged.
 *
 * Deliberately absent: the Regulations API (`/regulations`). fraudgate must never call it (a
 * SUPPRESS regulation blinds fraud analytics), so any call is answered 501 and lands in `unmatched`.
 * Where the contract marks a shape UNVERIFIED, the emulator accepts every plausible variant.
 */
import { randomUUID } from 'node:crypto';
import {
  startEmulatorServer,
  type EmulatorRequest,
  type EmulatorResponse,
  type EmulatorServer,
  type Route,
  replaceContents,
  type EmulatorState,
  type StatefulEmulator,
} from './emulator-http.ts';
import { SEGMENT_DEMO_PROFILES } from './segment-demo-data.ts';
import { isObject } from '../is-object.ts';

/** Segment's documented limits (contract §1.4). */
export const SEGMENT_LIMITS = {
  maxEventBytes: 32 * 1024,
  maxBatchBytes: 500 * 1024,
  maxBatchEvents: 2500,
  /** messageId must be shorter than this. */
  maxMessageIdLength: 100,
} as const;

/** An accepted (and deduplicated) message, as a test sees it. */
export interface StoredSegmentEvent {
  type: string;
  messageId: string;
  /** ISO time the emulator accepted it (Segment adds `receivedAt` on ingest). */
  receivedAt: string;
  userId?: string;
  anonymousId?: string;
  /** Track event name. */
  event?: string;
  traits?: Record<string, unknown>;
  properties?: Record<string, unknown>;
  /** The whole message as stored: batch-level context/integrations merged in, `writeKey` removed. */
  raw: Record<string, unknown>;
}

/** Why an item was answered 200 but dropped (Segment drops these after ingest). */
export type SegmentRejectReason =
  | 'not_an_object'
  | 'missing_type'
  | 'no_user_anon_id'
  | 'missing_event'
  | 'missing_group_id'
  | 'missing_previous_id'
  | 'invalid_message_id'
  | 'batch_limit'
  /** Missing, unknown, or body and Basic keys that disagree: Segment answers 200 and drops the events. */
  | 'invalid_write_key';

export interface RejectedSegmentEvent {
  reason: SegmentRejectReason;
  /** Position in the batch (0 for single-event endpoints). */
  index: number;
  messageId?: string;
}

/**
 * An Engage audience computed from profile traits. Membership shows in the Profile API as a
 * boolean trait named after `key`, as real audiences do (contract §3.1, §3.3).
 */
export interface SegmentAudienceRule {
  key: string;
  matches(traits: Readonly<Record<string, unknown>>): boolean;
}

/** The audience a marketer would define on fraudgate's suppression trait. */
export const FRAUD_SUPPRESSED_AUDIENCE: SegmentAudienceRule = {
  key: 'fraud_suppressed',
  matches: (traits) => traits['suppressed_for_fraud'] === true,
};

export interface SegmentEmulatorOptions {
  /**
   * Accepted write key (body `writeKey` and/or Basic username). Default `sandbox-write-key`. Any other
   * key gets 200 and its events are dropped (`rejected`, `invalid_write_key`), as Segment does
   * (contract §1.5); a 401 is only an injected fault (§4.6).
   */
  writeKey?: string;
  /** Profile API token (Basic username). Default `sandbox-profile-token`. */
  profileToken?: string;
  /** Space id in Profile API paths. Default `sandbox-space`. */
  spaceId?: string;
  /** Seed the demo profiles from segment-demo-data.ts. Default true. */
  seed?: boolean;
  /** Audience rules; default `[FRAUD_SUPPRESSED_AUDIENCE]`. */
  audiences?: SegmentAudienceRule[];
  /** Fixed port (sandbox); default ephemeral. */
  port?: number;
}

/** State (exportState): accepted events, profiles and their traits. */
export interface SegmentEmulator extends EmulatorServer, StatefulEmulator {
  readonly writeKey: string;
  readonly profileToken: string;
  readonly spaceId: string;
  /** Accepted events in arrival order, one per messageId. */
  readonly events: readonly StoredSegmentEvent[];
  eventsFor(userId: string): StoredSegmentEvent[];
  /** The user's traits as the Profile API would show them (audience traits included), or undefined. */
  profile(userId: string): Record<string, unknown> | undefined;
  /** Messages seen again with an already-stored messageId (not stored twice). */
  readonly duplicates: number;
  /** Items answered 200 but dropped. */
  readonly rejected: readonly RejectedSegmentEvent[];
  /** Answer the next `n` requests of one API with 429 + `Retry-After: retryAfterSeconds`. */
  rateLimit(n: number, retryAfterSeconds?: number, api?: 'tracking' | 'profile'): void;
  /**
   * Answer the next `n` Tracking API requests with 401. Real Segment answers a wrong key 200 (see
   * `writeKey`); this is the contract's injected permanent failure (§4.6).
   */
  refuseWriteKey(n?: number): void;
}

interface TraitValue {
  value: unknown;
  updatedAt: string;
}

interface ProfileRecord {
  traits: Map<string, TraitValue>;
}

const SINGLE_EVENT_TYPES = ['identify', 'track', 'group', 'alias', 'page', 'screen'] as const;
const TRACKING_PATH = /^\/v1\/(batch|identify|track|group|alias|page|screen)\/?$/;
const PROFILE_PATH = /^\/v1\/spaces\/[^/]+\/collections\//;
// Real profiles report the source that wrote a trait; the emulator has exactly one of each.
const SOURCE_ID = 'sandbox-source';
const ENGAGE_SOURCE_ID = 'sandbox-engage';

function basicUsername(header: string | undefined): string | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice('Basic '.length).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(0, colon) : decoded;
}

function identity(v: unknown): string | undefined {
  if (typeof v === 'string' && v !== '') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

// The real 400 body is UNVERIFIED (contract §1.5); analytics-node never reads it.
const trackingError = (status: number, code: string, message: string): EmulatorResponse => ({
  status,
  body: { code, message },
});

/** Start the Segment emulator (Tracking API + Profile API) on loopback. */
export async function startSegmentEmulator(options: SegmentEmulatorOptions = {}): Promise<SegmentEmulator> {
  const writeKey = options.writeKey ?? 'sandbox-write-key';
  const profileToken = options.profileToken ?? 'sandbox-profile-token';
  const spaceId = options.spaceId ?? 'sandbox-space';
  const audiences = options.audiences ?? [FRAUD_SUPPRESSED_AUDIENCE];

  const events: StoredSegmentEvent[] = [];
  const byMessageId = new Map<string, StoredSegmentEvent>();
  const rejected: RejectedSegmentEvent[] = [];
  let duplicates = 0;
  const profilesByUser = new Map<string, ProfileRecord>();
  const profilesByAnon = new Map<string, ProfileRecord>();

  function mergeTraits(record: ProfileRecord, traits: Record<string, unknown>, at: string): void {
    // Last write wins per trait; an explicit null is stored as null (whether Segment clears is UNVERIFIED).
    for (const [name, value] of Object.entries(traits)) record.traits.set(name, { value, updatedAt: at });
  }

  function profileFor(userId: string | undefined, anonymousId: string | undefined): ProfileRecord {
    const existing =
      (userId === undefined ? undefined : profilesByUser.get(userId)) ??
      (anonymousId === undefined ? undefined : profilesByAnon.get(anonymousId));
    const record = existing ?? { traits: new Map() };
    if (userId !== undefined) profilesByUser.set(userId, record);
    if (anonymousId !== undefined && !profilesByAnon.has(anonymousId))
      profilesByAnon.set(anonymousId, record);
    return record;
  }

  if (options.seed ?? true) {
    const at = new Date().toISOString();
    for (const demo of SEGMENT_DEMO_PROFILES)
      mergeTraits(profileFor(demo.userId, undefined), demo.traits, at);
  }

  /** Custom traits plus computed audience traits, in a stable order. */
  function traitEntries(
    record: ProfileRecord,
  ): { name: string; trait: TraitValue; source: string; klass: string }[] {
    const custom = [...record.traits].map(([name, trait]) => ({
      name,
      trait,
      source: SOURCE_ID,
      klass: 'trait',
    }));
    const plain = Object.fromEntries([...record.traits].map(([name, t]) => [name, t.value]));
    const latest = [...record.traits.values()].reduce(
      (max, t) => (t.updatedAt > max ? t.updatedAt : max),
      '',
    );
    const computed = audiences.map((rule) => ({
      name: rule.key,
      trait: { value: rule.matches(plain), updatedAt: latest },
      source: ENGAGE_SOURCE_ID,
      klass: 'audience',
    }));
    return [...custom.filter((c) => !audiences.some((a) => a.key === c.name)), ...computed];
  }

  /** Validate one message; store it (first time its messageId is seen) or record why it was dropped. */
  function accept(message: unknown, index: number, receivedAt: string): void {
    if (!isObject(message)) {
      rejected.push({ reason: 'not_an_object', index });
      return;
    }
    const rawId = message['messageId'];
    const messageId = rawId === undefined || rawId === null ? `emulator-${randomUUID()}` : String(rawId);
    const reject = (reason: SegmentRejectReason) => rejected.push({ reason, index, messageId });
    const type = message['type'];
    const userId = identity(message['userId']);
    const anonymousId = identity(message['anonymousId']);
    if (typeof type !== 'string' || type === '') return void reject('missing_type');
    if (userId === undefined && anonymousId === undefined) return void reject('no_user_anon_id');
    if (type === 'track' && (typeof message['event'] !== 'string' || message['event'] === '')) {
      return void reject('missing_event');
    }
    if (type === 'group' && identity(message['groupId']) === undefined)
      return void reject('missing_group_id');
    if (type === 'alias' && identity(message['previousId']) === undefined)
      return void reject('missing_previous_id');
    if (messageId.length >= SEGMENT_LIMITS.maxMessageIdLength) return void reject('invalid_message_id');

    if (byMessageId.has(messageId)) {
      duplicates += 1;
      return;
    }
    const { writeKey: _writeKey, ...raw } = message;
    const stored: StoredSegmentEvent = {
      type,
      messageId,
      receivedAt,
      ...(userId === undefined ? {} : { userId }),
      ...(anonymousId === undefined ? {} : { anonymousId }),
      ...(typeof message['event'] === 'string' ? { event: message['event'] } : {}),
      ...(isObject(message['traits']) ? { traits: message['traits'] } : {}),
      ...(isObject(message['properties']) ? { properties: message['properties'] } : {}),
      raw: { ...raw, messageId, receivedAt },
    };
    byMessageId.set(messageId, stored);
    events.push(stored);
    if (type === 'identify' && isObject(message['traits'])) {
      mergeTraits(profileFor(userId, anonymousId), message['traits'], receivedAt);
    }
  }

  function hasValidWriteKey(req: EmulatorRequest, body: Record<string, unknown>): boolean {
    // 3.0.0 sends only the body key, 3.1.0 both; a Bearer (OAuth) header still carries the body key.
    const keys = [body['writeKey'], basicUsername(req.headers.authorization)].filter(
      (k): k is string => typeof k === 'string',
    );
    return keys.length > 0 && keys.every((k) => k === writeKey);
  }

  /** The Tracking API answers a bad write key 200 and drops every item (contract §1.5). */
  function dropForWriteKey(items: readonly unknown[]): EmulatorResponse {
    items.forEach((item, index) => {
      const messageId = isObject(item) ? identity(item['messageId']) : undefined;
      rejected.push({
        reason: 'invalid_write_key',
        index,
        ...(messageId === undefined ? {} : { messageId }),
      });
    });
    return { status: 200, body: { success: true } };
  }

  const tooLarge = () => trackingError(400, 'invalid_request', 'Exceed payload limit');
  const eventBytes = (e: unknown) => Buffer.byteLength(JSON.stringify(e) ?? '', 'utf8');

  function batchHandler(req: EmulatorRequest): EmulatorResponse {
    if (req.rawBody.length > SEGMENT_LIMITS.maxBatchBytes) return tooLarge();
    if (req.jsonError || !isObject(req.json)) return trackingError(400, 'invalid_request', 'Invalid JSON');
    const body = req.json;
    const batch = body['batch'];
    if (!Array.isArray(batch)) return trackingError(400, 'invalid_request', 'batch must be an array');
    // One oversized event fails the whole request, innocent events included (contract §2.4).
    if (batch.some((e) => eventBytes(e) > SEGMENT_LIMITS.maxEventBytes)) return tooLarge();
    if (!hasValidWriteKey(req, body)) return dropForWriteKey(batch);
    const batchContext = isObject(body['context']) ? body['context'] : undefined;
    const batchIntegrations = isObject(body['integrations']) ? body['integrations'] : undefined;
    const receivedAt = new Date().toISOString();
    batch.forEach((item, index) => {
      if (index >= SEGMENT_LIMITS.maxBatchEvents) {
        rejected.push({
          reason: 'batch_limit',
          index,
          ...(isObject(item) && typeof item['messageId'] === 'string'
            ? { messageId: item['messageId'] }
            : {}),
        });
        return;
      }
      const merged =
        isObject(item) && (batchContext || batchIntegrations)
          ? {
              ...item,
              context: { ...batchContext, ...(isObject(item['context']) ? item['context'] : {}) },
              integrations: {
                ...batchIntegrations,
                ...(isObject(item['integrations']) ? item['integrations'] : {}),
              },
            }
          : item;
      accept(merged, index, receivedAt);
    });
    return { status: 200, body: { success: true } };
  }

  function singleHandler(type: (typeof SINGLE_EVENT_TYPES)[number]) {
    return (req: EmulatorRequest): EmulatorResponse => {
      if (req.rawBody.length > SEGMENT_LIMITS.maxEventBytes) return tooLarge();
      if (req.jsonError || !isObject(req.json)) return trackingError(400, 'invalid_request', 'Invalid JSON');
      if (!hasValidWriteKey(req, req.json)) return dropForWriteKey([req.json]);
      accept({ ...req.json, type }, 0, new Date().toISOString());
      return { status: 200, body: { success: true } };
    };
  }

  function profileError(status: number, code: string, message: string): EmulatorResponse {
    return { status, headers: { 'Request-Id': randomUUID() }, body: { error: { code, message } } };
  }

  function findProfile(idType: string, value: string): ProfileRecord | undefined {
    if (idType === 'user_id') return profilesByUser.get(value);
    if (idType === 'anonymous_id') return profilesByAnon.get(value);
    if (idType === 'email') {
      const wanted = value.trim().toLowerCase();
      for (const record of new Set([...profilesByUser.values(), ...profilesByAnon.values()])) {
        const email = record.traits.get('email')?.value;
        if (typeof email === 'string' && email.trim().toLowerCase() === wanted) return record;
      }
    }
    // Other id types (ga_client_id, ios.idfa, …) exist in Segment but are never seeded here.
    return undefined;
  }

  function traitsHandler(req: EmulatorRequest): EmulatorResponse {
    if (basicUsername(req.headers.authorization) !== profileToken) {
      return profileError(401, 'authentication_error', 'The access token is missing or invalid.');
    }
    // A token is bound to one space; the real answer for another space is UNVERIFIED. A loud 403
    // (not a 404) keeps a misconfigured space id from reading as "no such profile".
    if (req.params['spaceId'] !== spaceId) {
      return profileError(403, 'forbidden', 'The access token does not grant access to this space.');
    }
    const extId = req.params['extId'] ?? '';
    const colon = extId.indexOf(':');
    if (colon <= 0 || colon === extId.length - 1) {
      return profileError(400, 'validation_error', 'The profile id must be `<id_type>:<id>`.');
    }
    const record = findProfile(extId.slice(0, colon), extId.slice(colon + 1));
    if (!record) return profileError(404, 'not_found', 'Profile was not found.');

    const klass = req.query.get('class');
    if (klass !== null && klass !== 'audience' && klass !== 'computed_trait') {
      return profileError(
        400,
        'validation_error',
        'The parameter `class` must be audience or computed_trait.',
      );
    }
    const limitRaw = req.query.get('limit');
    const limit = limitRaw === null ? 10 : Number(limitRaw);
    // The docs give both 100 and 200 as the maximum (UNVERIFIED): accept up to 200.
    if (!Number.isInteger(limit) || limit < 1 || limit > 200) {
      return profileError(400, 'validation_error', 'The parameter `limit` must be an integer from 1 to 200.');
    }
    const offset = Number(req.query.get('next') ?? '0');
    if (!Number.isInteger(offset) || offset < 0) {
      return profileError(400, 'validation_error', 'The parameter `next` is not a valid cursor.');
    }
    const include = req.query
      .get('include')
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const verbose = req.query.get('verbose') === 'true';

    const all = traitEntries(record).filter(
      (t) =>
        (klass === null || (klass === 'audience' ? t.klass === 'audience' : t.klass === 'computed_trait')) &&
        (include === undefined || include.length === 0 || include.includes(t.name)),
    );
    const page = all.slice(offset, offset + limit);
    const hasMore = offset + limit < all.length;
    const traits = Object.fromEntries(
      page.map((t) => [
        t.name,
        verbose
          ? { value: t.trait.value, source_id: t.source, updated_at: t.trait.updatedAt }
          : t.trait.value,
      ]),
    );
    return {
      status: 200,
      headers: { 'Request-Id': randomUUID() },
      body: {
        traits,
        cursor: { url: req.path, has_more: hasMore, next: hasMore ? String(offset + limit) : '' },
      },
    };
  }

  const routes: Route[] = [
    { method: 'POST', pattern: '/v1/batch', handler: batchHandler },
    ...SINGLE_EVENT_TYPES.map((type) => ({
      method: 'POST',
      pattern: `/v1/${type}`,
      handler: singleHandler(type),
    })),
    {
      method: 'GET',
      pattern: '/v1/spaces/:spaceId/collections/users/profiles/:extId/traits',
      handler: traitsHandler,
    },
    {
      // Test/sandbox introspection (contract §4.5); not a Segment route.
      method: 'GET',
      pattern: '/__emulator/events',
      handler: (req) => {
        const userId = req.query.get('userId');
        return {
          status: 200,
          body: { events: userId === null ? events : events.filter((e) => e.userId === userId) },
        };
      },
    },
  ];

  const server = await startEmulatorServer({
    name: 'segment',
    routes,
    ...(options.port === undefined ? {} : { port: options.port }),
  });

  const plainProfile = (record: ProfileRecord) =>
    Object.fromEntries(traitEntries(record).map((t) => [t.name, t.trait.value]));

  const extra = {
    exportState: (): EmulatorState => ({ events, byMessageId, duplicates, profilesByUser, profilesByAnon }),
    importState(state: EmulatorState) {
      replaceContents(events, state.events);
      replaceContents(byMessageId, state.byMessageId);
      replaceContents(profilesByUser, state.profilesByUser);
      replaceContents(profilesByAnon, state.profilesByAnon);
      duplicates = typeof state.duplicates === 'number' ? state.duplicates : 0;
    },
    writeKey,
    profileToken,
    spaceId,
    get events(): readonly StoredSegmentEvent[] {
      return events;
    },
    eventsFor: (userId: string) => events.filter((e) => e.userId === userId),
    profile(userId: string) {
      const record = profilesByUser.get(userId);
      return record && plainProfile(record);
    },
    get duplicates() {
      return duplicates;
    },
    get rejected(): readonly RejectedSegmentEvent[] {
      return rejected;
    },
    rateLimit(n: number, retryAfterSeconds = 1, api: 'tracking' | 'profile' = 'tracking') {
      const seconds = String(retryAfterSeconds);
      server.faults.inject({
        count: n,
        path: api === 'tracking' ? TRACKING_PATH : PROFILE_PATH,
        status: 429,
        headers: {
          'Retry-After': seconds,
          'X-RateLimit-Reset': seconds,
          ...(api === 'profile' ? { 'Request-Id': randomUUID() } : {}),
        },
        body:
          api === 'tracking'
            ? { code: 'rate_limited', message: 'Too many requests' }
            : { error: { code: 'rate_limit_error', message: 'Too many requests' } },
      });
    },
    refuseWriteKey(n = 1) {
      server.faults.inject({
        count: n,
        path: TRACKING_PATH,
        status: 401,
        body: { code: 'invalid_write_key', message: 'Invalid or missing write key.' },
      });
    },
  };
  // defineProperties (not Object.assign) so the counters stay live getters.
  return Object.defineProperties(server, Object.getOwnPropertyDescriptors(extra)) as SegmentEmulator;
}
