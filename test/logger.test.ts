/**
 * Logging costs nothing below its level: a filtered call writes nothing and, through the
 * redacting logger, does not even run the redactor over its fields.
 */
import { describe, expect, it } from 'vitest';
import { createLogger, redactingLogger } from '../src/logger.ts';

describe('logger levels', () => {
  it('FRAUDGATE_LOG_LEVEL is read in any case', () => {
    const before = process.env.FRAUDGATE_LOG_LEVEL;
    process.env.FRAUDGATE_LOG_LEVEL = 'WARN';
    try {
      const logger = createLogger({ write: () => {} });
      expect(logger.enabled('info')).toBe(false);
      expect(logger.enabled('warn')).toBe(true);
    } finally {
      if (before === undefined) delete process.env.FRAUDGATE_LOG_LEVEL;
      else process.env.FRAUDGATE_LOG_LEVEL = before;
    }
  });

  it('writes at and above the level, and nothing below it', () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'warn', write: (line) => lines.push(line) });
    logger.debug('d');
    logger.info('i', { a: 1 });
    logger.warn('w', { a: 2 });
    logger.error('e');
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['w', 'e']);
    expect(logger.enabled('info')).toBe(false);
    expect(logger.enabled('error')).toBe(true);
  });

  it('the redacting logger redacts only lines that are written', () => {
    const lines: string[] = [];
    let redactions = 0;
    const logger = redactingLogger(
      createLogger({ level: 'info', write: (line) => lines.push(line) }),
      (v) => {
        redactions += 1;
        return { ...(v as Record<string, unknown>), email: '[masked]' };
      },
    );
    logger.debug('dropped', { email: 'ana@example.com' });
    expect(redactions).toBe(0);
    logger.info('kept', { email: 'ana@example.com' });
    expect(redactions).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('[masked]');
    expect(lines[0]).not.toContain('ana@example.com');
    const child = logger.child({ component: 'outbox' });
    child.debug('dropped too', { email: 'ana@example.com' });
    expect(lines).toHaveLength(1);
  });
});
