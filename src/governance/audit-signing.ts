/**
 * Signed checkpoints: every N records or T seconds a writer signs (Ed25519) the head of its chain.
 * A chain rewritten by someone without the private key cannot carry valid signatures, and a
 * checkpoint naming a record that is gone shows the newest records were cut.
 *
 * Keys. The private key (PKCS#8 PEM) comes from FRAUDGATE_AUDIT_SIGNING_KEY or the file named by
 * FRAUDGATE_AUDIT_SIGNING_KEY_FILE, which must lie outside the data directory; it is never stored
 * in the ledger. Verification trusts only a key given from outside the ledger: the public key file
 * passed to `fraudgate audit verify --public-key`, else the public half of the configured private
 * key. (A key read from the ledger itself would let a forger re-sign with a key of their own.)
 * Sandbox mode may generate a key beside the data directory, never inside it.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';
import type { Config, Secrets } from '../config.ts';
import { InvalidInputError } from '../errors.ts';

/** What a checkpoint asserts: writer `writer`'s record `seq` has hash `hash`, as of `ts`. */
export interface AuditCheckpoint {
  writer: string;
  seq: number;
  hash: string;
  ts: string;
  /** Which key signed it: the first 16 hex digits of the SHA-256 of the public key (SPKI DER). */
  key_id: string;
  /** Ed25519 signature of {@link checkpointMessage}, base64. */
  signature: string;
}

export interface CheckpointSigner {
  readonly keyId: string;
  sign(checkpoint: Omit<AuditCheckpoint, 'key_id' | 'signature'>): AuditCheckpoint;
}

/** Trusts one or several public keys (several across a signing-key rotation). */
export interface CheckpointVerifier {
  /** The trusted keys' ids, in the order given. */
  readonly keyIds: readonly string[];
  /** True when the checkpoint's key is trusted and its signature verifies under that key. */
  verify(checkpoint: AuditCheckpoint): boolean;
}

/** For messages: `the trusted key K`, or `a trusted key (K1, K2)`. */
export function describeTrustedKeys(verifier: CheckpointVerifier): string {
  return verifier.keyIds.length === 1
    ? `the trusted key ${verifier.keyIds[0]}`
    : `a trusted key (${verifier.keyIds.join(', ')})`;
}

/** The exact bytes signed; versioned so a later format cannot be confused with this one. */
export function checkpointMessage(c: Pick<AuditCheckpoint, 'writer' | 'seq' | 'hash' | 'ts'>): string {
  return `fraudgate-audit-checkpoint/1\n${c.writer}\n${c.seq}\n${c.hash}\n${c.ts}`;
}

function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16);
}

export function createCheckpointSigner(privateKey: KeyObject): CheckpointSigner {
  const keyId = keyIdOf(createPublicKey(privateKey));
  return {
    keyId,
    sign(c) {
      const signature = sign(null, Buffer.from(checkpointMessage(c), 'utf8'), privateKey).toString('base64');
      return { ...c, key_id: keyId, signature };
    },
  };
}

/**
 * Verifies checkpoints against the given public keys: each checkpoint under the key its key_id
 * names (after a rotation, old checkpoints under the old key and new ones under the new).
 */
export function createCheckpointVerifier(publicKeys: KeyObject | readonly KeyObject[]): CheckpointVerifier {
  const byId = new Map<string, KeyObject>();
  for (const key of Array.isArray(publicKeys) ? publicKeys : [publicKeys]) byId.set(keyIdOf(key), key);
  return {
    keyIds: [...byId.keys()],
    verify(c) {
      const publicKey = byId.get(c.key_id);
      if (!publicKey) return false;
      try {
        return verify(
          null,
          Buffer.from(checkpointMessage(c), 'utf8'),
          publicKey,
          Buffer.from(c.signature, 'base64'),
        );
      } catch {
        return false;
      }
    },
  };
}

const HOW_TO_MAKE_ONE =
  'an Ed25519 private key in PKCS#8 PEM, e.g. `openssl genpkey -algorithm ed25519 -out audit-signing.pem`';

function refuse(field: string, message: string): never {
  throw new InvalidInputError([{ field, message }], 'Audit signing key');
}

function parsePrivateKey(pem: string, field: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    return refuse(field, `is not a readable private key: expected ${HOW_TO_MAKE_ONE}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    refuse(field, `is a ${key.asymmetricKeyType ?? 'unknown'} key: expected ${HOW_TO_MAKE_ONE}`);
  }
  return key;
}

/** Reads a public key (SPKI PEM), or the public half of a private key, for `audit verify --public-key`. */
export function loadVerifyKey(path: string, field = '--public-key'): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    return refuse(field, `cannot read ${path}`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    return refuse(field, `${path} is not a PEM public key (make one with \`openssl pkey -in KEY -pubout\`)`);
  }
  if (key.asymmetricKeyType !== 'ed25519') refuse(field, `${path} is not an Ed25519 key`);
  return key;
}

function isInside(dir: string, path: string): boolean {
  const rel = relative(resolve(dir), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** Where sandbox mode keeps a generated key: beside the data directory, never in it. */
export const sandboxSigningKeyPath = (dataDir: string) => `${resolve(dataDir)}.audit-signing-key.pem`;

/** {@link loadSigningKey} as the configuration and secrets name it (every caller's way in). */
export function loadConfiguredSigningKey(
  config: Pick<Config, 'data_dir' | 'mode'>,
  secrets: Pick<Secrets, 'auditSigningKey' | 'auditSigningKeyFile'>,
): KeyObject {
  return loadSigningKey({
    pem: secrets.auditSigningKey,
    file: secrets.auditSigningKeyFile,
    dataDir: config.data_dir,
    mode: config.mode,
  });
}

/**
 * The private key that signs checkpoints. Live mode refuses to start without one (fail closed:
 * an unsigned ledger cannot show a re-chain); sandbox mode generates one beside the data directory.
 */
export function loadSigningKey(options: {
  pem?: string;
  file?: string;
  dataDir: string;
  mode: 'sandbox' | 'live';
}): KeyObject {
  if (options.pem) return parsePrivateKey(options.pem, 'FRAUDGATE_AUDIT_SIGNING_KEY');
  if (options.file) {
    const field = 'FRAUDGATE_AUDIT_SIGNING_KEY_FILE';
    if (isInside(options.dataDir, options.file)) {
      refuse(
        field,
        'must name a file outside the data directory (whoever can write the ledger must not hold the key)',
      );
    }
    let pem: string;
    try {
      pem = readFileSync(options.file, 'utf8');
    } catch {
      return refuse(field, `cannot read ${options.file}`);
    }
    return parsePrivateKey(pem, field);
  }
  if (options.mode === 'live') {
    refuse(
      'FRAUDGATE_AUDIT_SIGNING_KEY',
      `(or FRAUDGATE_AUDIT_SIGNING_KEY_FILE) is required in live mode to sign audit checkpoints: ${HOW_TO_MAKE_ONE}`,
    );
  }
  const path = sandboxSigningKeyPath(options.dataDir);
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    const { privateKey } = generateKeyPairSync('ed25519');
    try {
      writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
    } catch (error) {
      // Another process of the same sandbox created it first: use theirs.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  return parsePrivateKey(readFileSync(path, 'utf8'), path);
}
