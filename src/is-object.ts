/**
 * The guard every hand-written check of JSON starts with (Sift answers and webhooks, tool results,
 * the emulators' request bodies, JSON Schemas): a plain JSON object, not null, not an array. One
 * module of no imports, so the lightest paths (the Sift client at start-up) can use it too.
 */
export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
