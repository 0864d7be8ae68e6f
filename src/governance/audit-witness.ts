/**
 * The external witness of the audit ledger (`fraudgate audit witness`, `audit verify --witness`).
 *
 * Checkpoints live in the same database as the records they seal, so whoever can rewrite the
 * database can cut every writer back to an earlier checkpoint (dropping the later records, the later
 * checkpoints and moving the head) or erase a writer altogether, and the ledger still verifies: what
 * is left is a consistent, signed, shorter ledger. A witness is the newest signed checkpoint of
 * every writer, written out and kept where the database's attacker cannot reach (a SIEM, an object
 * store with retention). Verifying against it, a writer that is gone, whose records end before the
 * witnessed seq, or whose record at that seq has another hash, is tampering. Its limit: what is cut
 * after the newest witness was taken is only caught against the next one.
 */
import { describeTrustedKeys, type AuditCheckpoint, type CheckpointVerifier } from './audit-signing.ts';

export const WITNESS_FORMAT = 'fraudgate-audit-witness/1';

/** One writer's newest signed checkpoint, as witnessed. */
export interface WitnessEntry {
  writer: string;
  seq: number;
  hash: string;
  /** The checkpoint's `ts` (part of what was signed). */
  signed_at: string;
  key_id: string;
  signature: string;
}

export interface AuditWitness {
  format: typeof WITNESS_FORMAT;
  /** When the witness was taken: tampering after this is for the next witness to catch. */
  taken_at: string;
  writers: WitnessEntry[];
}

const asCheckpoint = (e: WitnessEntry): AuditCheckpoint => ({
  writer: e.writer,
  seq: e.seq,
  hash: e.hash,
  ts: e.signed_at,
  key_id: e.key_id,
  signature: e.signature,
});

/**
 * The witness of `checkpoints`: per writer, its newest checkpoint that verifies under the trusted
 * key (`skipped` counts those that do not: `audit verify` names them).
 */
export function takeWitness(
  checkpoints: readonly AuditCheckpoint[],
  verifier: CheckpointVerifier,
  takenAt: Date,
): { witness: AuditWitness; skipped: number } {
  const newest = new Map<string, AuditCheckpoint>();
  let skipped = 0;
  for (const cp of checkpoints) {
    if (!verifier.verify(cp)) {
      skipped += 1;
      continue;
    }
    if ((newest.get(cp.writer)?.seq ?? -1) < cp.seq) newest.set(cp.writer, cp);
  }
  const writers = [...newest.values()]
    .sort((a, b) => (a.writer < b.writer ? -1 : a.writer > b.writer ? 1 : 0))
    .map((cp) => ({
      writer: cp.writer,
      seq: cp.seq,
      hash: cp.hash,
      signed_at: cp.ts,
      key_id: cp.key_id,
      signature: cp.signature,
    }));
  return { witness: { format: WITNESS_FORMAT, taken_at: takenAt.toISOString(), writers }, skipped };
}

/**
 * A witness file's text, checked: the format, every entry's fields, and every entry's signature
 * under the trusted key (a witness nobody with the key signed proves nothing). Throws an Error
 * saying what is wrong and with which entry.
 */
export function readWitness(text: string, verifier: CheckpointVerifier): AuditWitness {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error('is not JSON: expected the output of `fraudgate audit witness`');
  }
  const w = parsed as Partial<AuditWitness> | null;
  if (!w || w.format !== WITNESS_FORMAT || typeof w.taken_at !== 'string' || !Array.isArray(w.writers)) {
    throw new Error(`is not a witness: expected "format": "${WITNESS_FORMAT}", "taken_at" and "writers"`);
  }
  const seen = new Set<string>();
  w.writers.forEach((e: Partial<WitnessEntry>, i) => {
    if (
      typeof e?.writer !== 'string' ||
      !Number.isSafeInteger(e.seq) ||
      (e.seq as number) < 0 ||
      typeof e.hash !== 'string' ||
      typeof e.signed_at !== 'string' ||
      typeof e.key_id !== 'string' ||
      typeof e.signature !== 'string'
    ) {
      throw new Error(`writers[${i}] needs writer, seq, hash, signed_at, key_id and signature`);
    }
    if (seen.has(e.writer)) throw new Error(`writers[${i}]: writer ${e.writer} is witnessed twice`);
    seen.add(e.writer);
    if (!verifier.verify(asCheckpoint(e as WitnessEntry))) {
      throw new Error(
        verifier.keyIds.includes(e.key_id)
          ? `writers[${i}] (writer ${e.writer} seq ${e.seq}): signature does not verify (witness altered)`
          : `writers[${i}] (writer ${e.writer}): signed by key ${e.key_id}, not ${describeTrustedKeys(verifier)}`,
      );
    }
  });
  return w as AuditWitness;
}
