/**
 * Packing record writes into composite requests: at most 5 sObject Collections subrequests (the
 * limit `/composite` sets for collections and queries together) of at most 200 records each, one
 * request counting as one API call. Shared by the plain client (`writeTogether`) and the
 * automation's batching client, which packs the writes of many effects.
 */
import type { SalesforceCollectionWrite, SalesforceRecord, SalesforceWrite } from './types.ts';

export const COMPOSITE_COLLECTIONS = 5;
const COLLECTION_RECORDS = 200;

/** The field of `record` named `field` regardless of case, as Salesforce matches API names. */
export function fieldValue(record: SalesforceRecord, field: string): unknown {
  const name = Object.keys(record).find((k) => k.toLowerCase() === field.toLowerCase());
  return name === undefined ? undefined : record[name];
}

/** The record a write touches, when known before it is sent: Salesforce refuses one record twice in a collection. */
function identity(write: SalesforceWrite): string | undefined {
  if (write.op === 'update') return write.record.Id;
  if (write.op === 'upsert') {
    const value = fieldValue(write.record, write.externalIdField);
    return value === undefined ? undefined : String(value).toLowerCase();
  }
  return undefined;
}

const kindOf = (write: SalesforceWrite) =>
  [write.op, write.sobject, write.op === 'upsert' ? write.externalIdField.toLowerCase() : ''].join('\u0000');

/** One collection being filled; `items` are whatever the packer's user tracks per write. */
export interface PackedCollection<T> {
  kind: string;
  write: Omit<SalesforceCollectionWrite, 'records'>;
  items: { write: SalesforceWrite; item: T }[];
  identities: Set<string>;
}

/** The collections of one composite request, filled group by group. */
export class CompositePacker<T> {
  readonly collections: PackedCollection<T>[] = [];

  get size(): number {
    return this.collections.reduce((n, c) => n + c.items.length, 0);
  }

  /**
   * Add every write of a group, in order, or none of them (false) when they do not all fit: a
   * group's writes always travel in one request.
   */
  tryAdd(group: { write: SalesforceWrite; item: T }[]): boolean {
    const added: { collection: PackedCollection<T>; id: string | undefined }[] = [];
    const opened: PackedCollection<T>[] = [];
    for (const entry of group) {
      const kind = kindOf(entry.write);
      const id = identity(entry.write);
      let target = this.collections.find(
        (c) =>
          c.kind === kind &&
          c.items.length < COLLECTION_RECORDS &&
          (id === undefined || !c.identities.has(id)),
      );
      if (!target) {
        if (this.collections.length >= COMPOSITE_COLLECTIONS) {
          for (const { collection, id: addedId } of added.reverse()) {
            collection.items.pop();
            if (addedId !== undefined) collection.identities.delete(addedId);
          }
          for (const c of opened) this.collections.splice(this.collections.indexOf(c), 1);
          return false;
        }
        const { write } = entry;
        target = {
          kind,
          write: {
            op: write.op,
            sobject: write.sobject,
            ...(write.op === 'upsert' ? { externalIdField: write.externalIdField } : {}),
          },
          items: [],
          identities: new Set(),
        };
        this.collections.push(target);
        opened.push(target);
      }
      target.items.push(entry);
      if (id !== undefined) target.identities.add(id);
      added.push({ collection: target, id });
    }
    return true;
  }

  /** The collections as the client sends them. */
  requests(): SalesforceCollectionWrite[] {
    return this.collections.map((c) => ({ ...c.write, records: c.items.map((i) => i.write.record) }));
  }
}
