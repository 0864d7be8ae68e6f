/**
 * How a ledger record is chained to its writer's previous one: no imports beyond node:crypto, so
 * the SQLite writer thread (which chains the records it writes) loads nothing else.
 */
import { hash as digest } from 'node:crypto';

/** `prev_hash` of each writer's first record, and the hash a writer's seq-0 checkpoint seals. */
export const GENESIS_HASH = '0'.repeat(64);

/** Writer ids go into the hashed header, one per line: no separators, bounded. */
export const WRITER_ID_SHAPE = /^[A-Za-z0-9._:@/-]{1,128}$/;

/**
 * The hash chaining one record to its predecessor. The header is hashed as text lines so the body
 * is never parsed; `writer` cannot contain a newline ({@link WRITER_ID_SHAPE}), so no two headers
 * collide.
 */
export function chainHash(writer: string, seq: number, prevHash: string, body: string): string {
  return digest('sha256', `${writer}\n${seq}\n${prevHash}\n${body}`, 'hex');
}
