import { describe, expect, it } from 'vitest';
import { buildAuditPayload, encodeAuditBody, type AuditAppendInput } from '../../src/governance/audit.ts';
import { canonicalJson, createRedactor } from '../../src/governance/redact.ts';

const redactor = createRedactor({ hashKey: 'test-key-1' });
const at = new Date('2026-01-02T03:04:05.678Z');

describe('the stored audit body', () => {
  it('is canonicalJson of the payload, whether its values list their keys in order or not', () => {
    const inputs: AuditAppendInput[] = [
      // What a governed read records: every nested object already in key order (the native path).
      {
        event: 'executed',
        call_id: 'c1',
        tool: 'get_sift_score',
        principal: { id: 'ana@example.com', kind: 'user', role: 'analyst' },
        args_redacted: { user_id: 'u1', email: 'jane@example.com' },
        args_hash: 'a'.repeat(64),
        target: 'sift_user:u1',
        duration_ms: 3,
      },
      // Upstream entries, an outcome and a principal in another order (the per-key path).
      {
        event: 'failed',
        call_id: 'c2',
        principal: { role: 'analyst', kind: 'user', id: 'ana@example.com' },
        outcome: { retryable: true, code: 'UPSTREAM_ERROR', message: 'call +1 415 555 0100' },
        upstream: [{ service: 'sift', status: 502, request_id: 'r1', latency_ms: 12 }],
        refusals: { since: 'x', count: 2, by_event: { invalid: 1, forbidden: 1 } },
        detail: 'from 203.0.113.7',
      },
    ];
    for (const input of inputs) {
      const payload = buildAuditPayload(input, at, redactor);
      const body = encodeAuditBody(payload);
      expect(body).toBe(canonicalJson(payload));
      expect(JSON.parse(body)).toMatchObject({ ts: at.toISOString(), event: input.event });
      expect(body).not.toContain('jane@example.com');
      expect(body).not.toContain('555 0100');
    }
  });

  it('stores no key beyond the payload fields, however the payload was built', () => {
    const payload = {
      ...buildAuditPayload(
        { event: 'attempt', call_id: 'c3', principal: { id: 'p', kind: 'user' } },
        at,
        redactor,
      ),
      stray: 'x',
    };
    expect(encodeAuditBody(payload)).not.toContain('stray');
  });
});
