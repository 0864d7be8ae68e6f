/**
 * The baseline for durable webhook ingest: a bare node:http server that, like fraudgate's handler,
 * checks the HMAC signature and the JSON shape, and answers 200 only after the event is committed
 * to SQLite (WAL, synchronous = FULL). Requests arriving in the same event-loop turn are committed
 * together in one transaction (group commit) and then each answered. No audit record, no dedupe
 * lookups beyond the unique key: the floor for "durable before acknowledged" on this machine.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DatabaseSync } from 'node:sqlite';

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
  let pending: { key: string; body: string; res: ServerResponse }[] = [];
  const flush = () => {
    const batch = pending;
    pending = [];
    db.exec('BEGIN IMMEDIATE');
    for (const e of batch) insert.run(e.key, e.body, Date.now());
    db.exec('COMMIT');
    for (const e of batch) e.res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
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
      new Promise<void>((resolve) => {
        server.close(() => {
          db.close();
          resolve();
        });
        server.closeAllConnections();
      }),
  };
}
