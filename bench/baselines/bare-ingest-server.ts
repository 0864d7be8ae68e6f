/**
 * The baselines for durable webhook ingest: a bare node:http server that, like fraudgate's handler,
 * checks the HMAC signature and the JSON shape, and answers 200 only after the event is committed.
 * Requests arriving in the same event-loop turn are committed together in one transaction (group
 * commit) and then each answered. No audit record, no dedupe lookups beyond the unique key: the
 * floor for "durable before acknowledged" on this machine.
 *
 * - SQLite (WAL, synchronous = FULL): the commit runs on the event loop, one group at a time.
 * - PostgreSQL (synchronous_commit on): one multi-row INSERT per group on a pool of as many
 *   connections as fraudgate's (store_postgres.pool_size default), so groups overlap on the wire
 *   as fraudgate's do.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';

interface BareEvent {
  key: string;
  body: string;
}

/** The HTTP side both baselines share; `commit` stores a group durably (or throws). */
async function startServer(
  key: string,
  commit: (batch: BareEvent[]) => void | Promise<void>,
  onClose: () => void | Promise<void>,
): Promise<{ url: string; close(): Promise<void> }> {
  let pending: (BareEvent & { res: ServerResponse })[] = [];
  const flush = () => {
    const batch = pending;
    pending = [];
    void (async () => {
      try {
        await commit(batch);
      } catch {
        for (const e of batch) e.res.writeHead(503).end();
        return;
      }
      for (const e of batch) e.res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    })();
  };
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const signature = String(req.headers['x-sift-science-signature'] ?? '').replace(/^sha256=/, '');
      const expected = createHmac('sha256', key).update(body).digest();
      const given = Buffer.from(signature, 'hex');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        res.writeHead(401).end();
        return;
      }
      const event = JSON.parse(body.toString('utf8')) as {
        entity: { id: string };
        decision: { id: string };
        time: number;
      };
      if (pending.length === 0) setImmediate(flush);
      pending.push({
        key: `${event.entity.id}|${event.decision.id}|${event.time}`,
        body: body.toString('utf8'),
        res,
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/sift`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close(() => {
          Promise.resolve(onClose()).then(resolve, reject);
        });
        server.closeAllConnections();
      }),
  };
}

export async function startBareIngestServer(
  path: string,
  key: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;');
  db.exec(`CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, dedupe_key TEXT UNIQUE NOT NULL, body TEXT NOT NULL, received_at INTEGER NOT NULL)`);
  const insert = db.prepare(
    'INSERT INTO events (dedupe_key, body, received_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
  );
  return startServer(
    key,
    (batch) => {
      db.exec('BEGIN IMMEDIATE');
      for (const e of batch) insert.run(e.key, e.body, Date.now());
      db.exec('COMMIT');
    },
    () => db.close(),
  );
}

export async function startBarePostgresIngestServer(
  url: string,
  schema: string,
  key: string,
  poolSize: number,
): Promise<{ url: string; close(): Promise<void> }> {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await pool.query(`CREATE TABLE IF NOT EXISTS ${schema}.events (
    id BIGSERIAL PRIMARY KEY, dedupe_key TEXT UNIQUE NOT NULL, body TEXT NOT NULL, received_at BIGINT NOT NULL)`);
  return startServer(
    key,
    async (batch) => {
      // One statement is its own transaction: one durable commit per group.
      await pool.query(
        `INSERT INTO ${schema}.events (dedupe_key, body, received_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING`,
        [batch.map((e) => e.key), batch.map((e) => e.body), batch.map(() => Date.now())],
      );
    },
    () => pool.end(),
  );
}
