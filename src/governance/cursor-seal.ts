/**
 * Opaque paging cursors that a client can hand back but not forge or edit: the payload travels in
 * the clear (base64url) with a truncated HMAC-SHA256 beside it. The key is derived from the
 * runtime's audit key, which every replica shares, so any replica opens another's cursor.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { CursorSeal } from '../tool.ts';
import { purposeKey } from './audit-key.ts';

// 128 bits: forging one means guessing it, and every try is a rate-limited tool call.
const MAC_BYTES = 16;

/** `key`: the runtime's secret; absent, a random one (cursors then only open in this process). */
export function createCursorSeal(key?: string | Buffer): CursorSeal {
  const cursorKey = purposeKey(key, 'fraudgate cursor seal v1');
  const macOf = (body: string) =>
    createHmac('sha256', cursorKey).update(body).digest().subarray(0, MAC_BYTES);
  return {
    seal(payload) {
      const body = Buffer.from(payload, 'utf8').toString('base64url');
      return `${body}.${macOf(body).toString('base64url')}`;
    },
    open(token) {
      const dot = token.lastIndexOf('.');
      if (dot <= 0) return undefined;
      const body = token.slice(0, dot);
      const mac = Buffer.from(token.slice(dot + 1), 'base64url');
      if (mac.length !== MAC_BYTES || !timingSafeEqual(mac, macOf(body))) return undefined;
      return Buffer.from(body, 'base64url').toString('utf8');
    },
  };
}
