/**
 * Structured logs: one JSON object per line on stderr (stdout is the MCP protocol on stdio).
 * Callers pass already-safe fields; free text that may carry personal data goes through the
 * audit redactor first.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  /** Whether a line at this level is written; below it a call does nothing, not even redaction. */
  enabled(level: LogLevel): boolean;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** The levels FRAUDGATE_LOG_LEVEL may name (any case), least severe first. */
export const LOG_LEVELS = Object.keys(ORDER) as LogLevel[];

/**
 * FRAUDGATE_LOG_LEVEL as a level: unset (or blank) is undefined, a known level in any case is that
 * level, anything else is null. The configuration refuses null before any command runs (a typo such
 * as `warning` must not quietly log at info).
 */
export function logLevelOf(value: string | undefined): LogLevel | null | undefined {
  const normalized = value?.trim().toLowerCase();
  if (!normalized) return undefined;
  return (LOG_LEVELS as string[]).includes(normalized) ? (normalized as LogLevel) : null;
}

export function createLogger(
  options: { level?: LogLevel; write?: (line: string) => void; base?: Record<string, unknown> } = {},
): Logger {
  const min = ORDER[options.level ?? logLevelOf(process.env.FRAUDGATE_LOG_LEVEL) ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const base = options.base ?? {};
  const enabled = (level: LogLevel) => ORDER[level] >= min;
  // Levels below the minimum get a no-op, decided once: a filtered call costs a function call only.
  const at =
    (level: LogLevel) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...base, ...fields }));
    };
  const noop = () => {};
  return {
    enabled,
    debug: enabled('debug') ? at('debug') : noop,
    info: enabled('info') ? at('info') : noop,
    warn: enabled('warn') ? at('warn') : noop,
    error: enabled('error') ? at('error') : noop,
    child: (fields) => createLogger({ ...options, base: { ...base, ...fields } }),
  };
}

/** A logger that drops everything (tests and benchmarks that assert on other output). */
export const silentLogger: Logger = {
  enabled: () => false,
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

/**
 * A logger whose fields pass through `redact` first (the audit log's redactor: emails, phones and IPs
 * keyed-hashed, secrets replaced), so free text such as error messages cannot leak personal data.
 */
export function redactingLogger(logger: Logger, redact: (value: unknown) => unknown): Logger {
  const clean = (fields?: Record<string, unknown>) =>
    fields === undefined ? undefined : (redact(fields) as Record<string, unknown>);
  // Redaction walks every field: skip it (and the call) for levels the logger would drop anyway.
  const at = (level: LogLevel) =>
    logger.enabled(level) ? (m: string, f?: Record<string, unknown>) => logger[level](m, clean(f)) : () => {};
  return {
    enabled: (level) => logger.enabled(level),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (fields) => redactingLogger(logger.child(clean(fields) ?? {}), redact),
  };
}
