/**
 * Everything logged through the runtime's logger passes the audit redactor: a free-text error that
 * carries an email, a phone number or an IP never reaches stderr unmasked.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { setup } from '../helpers/setup.ts';

describe('log redaction', () => {
  it('masks personal data in every field the runtime logs', async () => {
    const lines: string[] = [];
    const env = await setup({ logger: createLogger({ write: (l) => lines.push(l) }) });
    try {
      env.runtime.logger.error('console request failed', {
        error: 'upstream said: no user jane.doe@example.com at 203.0.113.7, call +44 20 7946 0958',
        principal: 'ana.analyst@example.com',
      });
      const line = lines.join('\n');
      expect(line).toContain('console request failed');
      expect(line).not.toContain('jane.doe@example.com');
      expect(line).not.toContain('203.0.113.7');
      expect(line).not.toContain('7946 0958');
      expect(line).not.toContain('ana.analyst@example.com');
    } finally {
      await env.close();
    }
  });
});
