/**
 * Encryption of personal fields at rest. The stores keep what execution needs (an approval's
 * frozen arguments must be replayed exactly), but a copy of the database — a backup, a replica's
 * disk, a `SELECT` by someone with read access — must not be a list of customers' emails and phone
 * numbers. Such fields are sealed with AES-256-GCM under a key from the environment
 * (`FRAUDGATE_DATA_KEY`, 32 bytes as 64 hex characters or base64; the sandbox generates one in its
 * data directory), and bound to where they are stored (table, column, row id) as additional
 * authenticated data, so a sealed value copied into another row does not open.
 *
 * Sealed text is `enc:v1:<key id>:<base64url(iv ‖ tag ‖ ciphertext)>`; the key id (first 8 hex of
 * the key's SHA-256) lets a wrong key be reported as such instead of as corruption. Rows written
 * before encryption were sealed once at start-up (legacy-sealing.ts); plain text in a sealed column
 * is now refused by the stores that read it (sealApprovalFields below, outbox-store's effectFromRow):
 * it was written into the database around us. `open` itself still parses plain JSON as is.
 *
 * Rotation: FRAUDGATE_DATA_KEY_PREVIOUS (same format) is a key for opening only. A sealed value
 * opens under the key its key id names, current or previous; every new seal uses the current key.
 * `fraudgate data-key reseal` (src/store/reseal.ts) rewrites the rows still under the previous
 * key; once `fraudgate data-key status` counts none, the previous key can go.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, FraudgateError, InvalidInputError } from '../errors.ts';
import type { IdentityAttempt } from '../tool.ts';
import type { Approval, ApprovalStore } from './approval-store.ts';
import type { IdentityStore } from './identity-store.ts';

const PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Whether stored text was sealed by a FieldCipher (else it is legacy plain text). */
export const isSealed = (text: string) => text.startsWith(PREFIX);

/** Seals and opens JSON values for one key. */
export interface FieldCipher {
  /** `value` as JSON, encrypted and bound to `context` (e.g. `approvals.args:apr_123`). */
  seal(value: unknown, context: string): string;
  /** The value `seal` was given; plain (legacy, unsealed) JSON is parsed as is. */
  open(text: string, context: string): unknown;
  /** Short public id of the key new seals use (for messages, never the key). */
  readonly keyId: string;
  /** The ids of every key `open` can use: the current one first, then the previous ones. */
  readonly openableKeyIds: readonly string[];
}

const dataKeyId = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 8);

/** The key id a sealed text names (undefined for plain text). */
export function sealedKeyId(text: string): string | undefined {
  return isSealed(text) ? text.slice(PREFIX.length).split(':', 1)[0] : undefined;
}

/**
 * The key id `text` is sealed under when `cipher` does not hold that key (a rotation under way: a
 * replica holding it can open the value); undefined for plain text or a key it holds.
 */
export function unheldKeyId(cipher: FieldCipher, text: string): string | undefined {
  const id = sealedKeyId(text);
  return id !== undefined && !cipher.openableKeyIds.includes(id) ? id : undefined;
}

/**
 * Seals with `key`; opens what `key` or one of `previous` (a rotation's old keys) sealed, each
 * value under the key its key id names.
 */
export function createFieldCipher(key: Buffer, previous: readonly Buffer[] = []): FieldCipher {
  const keys = new Map<string, Buffer>();
  for (const k of [key, ...previous]) {
    if (k.length !== 32) throw new TypeError('createFieldCipher: the key must be 32 bytes (AES-256)');
    if (!keys.has(dataKeyId(k))) keys.set(dataKeyId(k), k);
  }
  const keyId = dataKeyId(key);
  return {
    keyId,
    openableKeyIds: [...keys.keys()],
    seal(value, context) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const body = Buffer.concat([cipher.update(JSON.stringify(value) ?? 'null', 'utf8'), cipher.final()]);
      return `${PREFIX}${keyId}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    },
    open(text, context) {
      if (!text.startsWith(PREFIX)) return JSON.parse(text) as unknown;
      const [id = '', payload = ''] = text.slice(PREFIX.length).split(':', 2);
      const openingKey = keys.get(id);
      if (!openingKey) {
        throw new FraudgateError(
          ERROR_CODES.INTERNAL,
          'Stored data was encrypted with another data key; set FRAUDGATE_DATA_KEY to the key that wrote it ' +
            '(or, while rotating, FRAUDGATE_DATA_KEY_PREVIOUS to the old key).',
          { detail: `${context}: sealed under key ${id}, keys available ${[...keys.keys()].join(', ')}` },
        );
      }
      const raw = Buffer.from(payload, 'base64url');
      try {
        const decipher = createDecipheriv('aes-256-gcm', openingKey, raw.subarray(0, IV_BYTES));
        decipher.setAAD(Buffer.from(context, 'utf8'));
        decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
        const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
        return JSON.parse(plain.toString('utf8')) as unknown;
      } catch (error) {
        throw new FraudgateError(
          ERROR_CODES.INTERNAL,
          'Stored data failed its integrity check (edited, or moved from another row); it was not used.',
          { detail: `${context}: ${error instanceof Error ? error.message : String(error)}`, cause: error },
        );
      }
    },
  };
}

/** Parses FRAUDGATE_DATA_KEY (or `field`): 64 hex characters, or base64/base64url of 32 bytes. */
export function parseDataKey(text: string, field = 'FRAUDGATE_DATA_KEY'): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, 'hex')
    : Buffer.from(trimmed, 'base64');
  if (key.length !== 32) {
    throw new InvalidInputError(
      [
        {
          field,
          message: 'must be 32 random bytes as 64 hex characters or base64 (e.g. `openssl rand -hex 32`)',
        },
      ],
      'Invalid data key',
    );
  }
  return key;
}

/**
 * The data key: FRAUDGATE_DATA_KEY; in sandbox mode, if unset, a random key created once in the
 * data directory (mode 0600). Live mode without it refuses to start: a generated key on one
 * replica's disk would leave the others unable to read, and losing it loses the data.
 */
export function loadDataKey(
  config: { data_dir: string; mode: 'sandbox' | 'live' },
  secrets: { dataKey?: string },
): Buffer {
  if (secrets.dataKey) return parseDataKey(secrets.dataKey);
  if (config.mode === 'live') {
    throw new InvalidInputError(
      [
        {
          field: 'FRAUDGATE_DATA_KEY',
          message:
            'is required in live mode: personal fields are encrypted at rest with it. Generate one with ' +
            '`openssl rand -hex 32`, keep it in your secret store, and give every replica the same key.',
        },
      ],
      'Missing data key',
    );
  }
  const path = join(config.data_dir, 'data.key');
  if (existsSync(path)) return parseDataKey(readFileSync(path, 'utf8'));
  mkdirSync(config.data_dir, { recursive: true });
  const key = randomBytes(32);
  writeFileSync(path, key.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return key;
}

/**
 * FRAUDGATE_DATA_KEY_PREVIOUS: the data key before a rotation, for opening rows it sealed (never
 * for sealing). Environment only, like the data key itself.
 */
export function loadPreviousDataKeys(secrets: { dataKeyPrevious?: string }): Buffer[] {
  return secrets.dataKeyPrevious
    ? [parseDataKey(secrets.dataKeyPrevious, 'FRAUDGATE_DATA_KEY_PREVIOUS')]
    : [];
}

/**
 * The cipher of personal fields as configured: sealing with the data key, opening with it and the
 * previous key. `keys`: already loaded (`LoadedKeys`, src/runtime.ts); default: loaded here.
 */
export function configuredFieldCipher(
  config: { data_dir: string; mode: 'sandbox' | 'live' },
  secrets: { dataKey?: string; dataKeyPrevious?: string },
  keys?: { dataKey: Buffer; previousDataKeys?: readonly Buffer[] },
): FieldCipher {
  const { dataKey, previousDataKeys } = configuredDataKeys(config, secrets, keys);
  return createFieldCipher(dataKey, previousDataKeys);
}

/** The data key and the previous ones: those of `keys` when given (already loaded), else loaded. */
export function configuredDataKeys(
  config: { data_dir: string; mode: 'sandbox' | 'live' },
  secrets: { dataKey?: string; dataKeyPrevious?: string },
  keys?: { dataKey: Buffer; previousDataKeys?: readonly Buffer[] },
): { dataKey: Buffer; previousDataKeys: Buffer[] } {
  return keys
    ? { dataKey: keys.dataKey, previousDataKeys: [...(keys.previousDataKeys ?? [])] }
    : { dataKey: loadDataKey(config, secrets), previousDataKeys: loadPreviousDataKeys(secrets) };
}

/** Where each sealed approval field is bound (additional authenticated data): table, column and row. */
export const approvalFieldContext = {
  args: (id: string) => `approvals.args:${id}`,
  reason: (id: string) => `approvals.reason:${id}`,
};

/** Where the start-up check value (store.ts `checkDataKey`) is bound: its one row, id 1. */
export const KEY_CHECK_CONTEXT = 'key_check.sealed:1';

/**
 * The approval store with its personal fields sealed: the frozen arguments (execution replays them
 * exactly, so they are encrypted rather than masked) and the approver's free-text reason. Evidence,
 * results and error messages arrive already masked (the pipeline's redactor), so they stay readable.
 */
export function sealApprovalFields(
  inner: ApprovalStore,
  cipher: FieldCipher,
  /** Told about each listed approval whose sealed fields do not open (it is left out of the list). */
  onUnreadable: (id: string, error: unknown) => void = () => undefined,
): ApprovalStore {
  const { args: argsContext, reason: reasonContext } = approvalFieldContext;
  /**
   * Opens the sealed fields. `lenient` (for what runs nothing: expiry, denial, settling): one that
   * does not open leaves empty `args` and `args_refused`, so it can still be closed (never run).
   */
  const open = (approval: Approval, lenient = false): Approval => {
    const opened: Approval = { ...approval };
    try {
      const args = approval.args as unknown;
      if (typeof args === 'string' && isSealed(args)) {
        opened.args = cipher.open(args, argsContext(approval.id)) as Approval['args'];
      } else {
        // Plain arguments in a sealed column were written into the database, not by us: never used.
        // Nothing runs with them: the args_hash check fails such an approval (approval-integrity.ts).
        opened.args = {};
        opened.args_refused = 'its stored arguments are not sealed (written into the database as plain text)';
      }
      if (approval.reason !== undefined) {
        opened.reason = isSealed(approval.reason)
          ? (cipher.open(approval.reason, reasonContext(approval.id)) as string)
          : '(withheld: this reason was stored unsealed, so it may have been written into the database)';
      }
    } catch (error) {
      const lacking = [approval.args as unknown, approval.reason]
        .map((text) => (typeof text === 'string' ? unheldKeyId(cipher, text) : undefined))
        .find((id) => id !== undefined);
      if (lenient) {
        return {
          ...approval,
          args: {},
          ...(approval.reason !== undefined ? { reason: '(withheld: it does not open)' } : {}),
          args_refused: lacking
            ? `its stored arguments are sealed under data key ${lacking}, which this replica does not hold`
            : 'its stored arguments failed their integrity check (edited, or moved from another row)',
        };
      }
      if (lacking) {
        // A rotation under way: valid, and a replica holding that key can use it. Not a failure.
        throw new FraudgateError(
          ERROR_CODES.CONFLICT,
          `Approval ${approval.id} is sealed under data key ${lacking}, which this replica does not hold (a key ` +
            'rotation is under way); try again (another replica may hold it), or give this replica that key ' +
            'as FRAUDGATE_DATA_KEY_PREVIOUS.',
          { retryable: true, data: { key_id: lacking }, cause: error },
        );
      }
      // Fails closed: an approval whose frozen arguments are unknown can be neither decided nor run.
      throw new FraudgateError(
        ERROR_CODES.CONFLICT,
        `Approval ${approval.id}'s stored arguments do not open under FRAUDGATE_DATA_KEY (sealed under another ` +
          'key, or edited); it cannot be decided or run. Start fraudgate with the key that wrote it.',
        {
          cause: error,
          ...(error instanceof FraudgateError && error.detail ? { detail: error.detail } : {}),
        },
      );
    }
    return opened;
  };
  const openMaybe = (approval: Approval | undefined, lenient = false) =>
    approval ? open(approval, lenient) : undefined;
  /** A list never breaks on one bad row: those that do not open are reported and left out. */
  const openAll = (approvals: Approval[]): Approval[] =>
    approvals.flatMap((approval) => {
      try {
        return [open(approval)];
      } catch (error) {
        onUnreadable(approval.id, error);
        return [];
      }
    });
  return {
    async create(approval) {
      const stored = await inner.create({
        ...approval,
        // Stored as the sealed text; `open` turns it back into the arguments.
        args: cipher.seal(approval.args, argsContext(approval.id)) as unknown as Approval['args'],
      });
      return { ...stored, approval: open(stored.approval) };
    },
    get: async (id, options) => openMaybe(await inner.get(id), options?.evenUnreadable === true),
    list: async (filter) => openAll(await inner.list(filter)),
    findOpen: async (binding) => openMaybe(await inner.findOpen(binding)),
    transition: async (id, from, to, patch, claim, unexpiredAt) =>
      openMaybe(
        await inner.transition(
          id,
          from,
          to,
          patch?.reason === undefined || patch.reason === null
            ? patch
            : { ...patch, reason: cipher.seal(patch.reason, reasonContext(id)) },
          claim,
          unexpiredAt,
        ),
        // Closed without running: it must close even if it does not open (else it stays open forever).
        to === 'expired' || to === 'denied',
      ),
    // Expiry needs only clear columns (state, expiry, tool, target, args_hash): every overdue one expires.
    listExpired: async (now) => (await inner.listExpired(now)).map((approval) => open(approval, true)),
    count: (states) => inner.count(states),
  };
}

/**
 * The identity store with the review list's tried identifiers (emails, phones looked up in the
 * CRM) masked like the audit: an entry still says what was tried, by keyed tag, not who.
 */
export function maskUnmatchedIdentities(
  inner: IdentityStore,
  mask: (value: unknown) => unknown,
): IdentityStore {
  return {
    ...inner,
    segmentIdFor: (siftUserId) => inner.segmentIdFor(siftUserId),
    recordUnmatched: (entry) =>
      inner.recordUnmatched({ ...entry, tried: mask(entry.tried) as IdentityAttempt[] }),
    resolveUnmatched: (siftUserId) => inner.resolveUnmatched(siftUserId),
    findUnmatched: (siftUserId) => inner.findUnmatched(siftUserId),
    listUnmatched: (page) => inner.listUnmatched(page),
    map: (mapping) => inner.map(mapping),
    unmap: (siftUserId) => inner.unmap(siftUserId),
    listMappings: () => inner.listMappings(),
  };
}
