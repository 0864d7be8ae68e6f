/**
 * Structured logs: one JSON object per line on stderr (stdout is the MCP protocol on stdio).
 * Callers pass already-safe fields; free text that may carry personal data goes through the
 * audit redactor first.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(
  options: { level?: LogLevel; write?: (line: string) => void; base?: Record<string, unknown> } = {},
): Logger {
  const min =
    ORDER[options.level ?? (process.env.FRAUDGATE_LOG_LEVEL as LogLevel | undefined) ?? 'info'] ?? ORDER.info;
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const base = options.base ?? {};
  const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...base, ...fields }));
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger({ ...options, base: { ...base, ...fields } }),
  };
}

/** A logger that drops everything (tests that assert on other output). */
export const silentLogger: Logger = createLogger({ write: () => {} });

/**
 * A logger whose fields pass through `redact` first (the audit log's redactor: emails, phones and IPs
 * keyed-hashed, secrets replaced), so free text such as error messages cannot leak personal data.
 */
export function redactingLogger(logger: Logger, redact: (value: unknown) => unknown): Logger {
  const clean = (fields?: Record<string, unknown>) =>
    fields === undefined ? undefined : (redact(fields) as Record<string, unknown>);
  return {
    debug: (m, f) => logger.debug(m, clean(f)),
    info: (m, f) => logger.info(m, clean(f)),
    warn: (m, f) => logger.warn(m, clean(f)),
    error: (m, f) => logger.error(m, clean(f)),
    child: (fields) => redactingLogger(logger.child(clean(fields) ?? {}), redact),
  };
}
