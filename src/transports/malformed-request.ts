/**
 * The answer to a request that is JSON but not a valid JSON-RPC request (MCP's schema): a
 * `tools/call` whose `_meta` is null, or whose progress token is 1.5. The SDK's transports drop such a
 * line (stdio) or answer the whole body -32700 without its id (HTTP), so the client waits for an
 * answer that never comes, or cannot tell which request failed. Both transports answer with this
 * instead: a JSON-RPC error carrying the request's id and naming the field.
 */
import {
  ErrorCode,
  JSONRPCMessageSchema,
  JSONRPCRequestSchema,
  type JSONRPCErrorResponse,
} from '@modelcontextprotocol/sdk/types.js';
import { isObject } from '../is-object.ts';

/** A JSON-RPC id MCP accepts: a string or an integer. */
const isRequestId = (id: unknown): id is string | number =>
  typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id));

/** `params._meta.progressToken` for a zod path. */
const dotted = (path: readonly PropertyKey[]) =>
  path.map((key, i) => (typeof key === 'number' ? `[${key}]` : `${i ? '.' : ''}${String(key)}`)).join('');

/**
 * The error answer for `value` (one parsed JSON-RPC message), or undefined when there is nothing to
 * answer: the message is valid, is a response or a notification (no id to answer), or its id is
 * not one a client could match. -32600 when it is not a request at all, -32602 when only its
 * params are wrong.
 */
export function malformedRequestAnswer(value: unknown): JSONRPCErrorResponse | undefined {
  if (!isObject(value) || !isRequestId(value.id)) return undefined;
  if (!('method' in value) && ('result' in value || 'error' in value)) return undefined;
  if (JSONRPCMessageSchema.safeParse(value).success) return undefined;
  const answer = (code: number, message: string): JSONRPCErrorResponse => ({
    jsonrpc: '2.0',
    id: value.id as string | number,
    error: { code, message },
  });
  const issue = JSONRPCRequestSchema.safeParse(value).error?.issues[0];
  if (value.jsonrpc !== '2.0' || typeof value.method !== 'string' || !issue || issue.path[0] !== 'params') {
    return answer(
      ErrorCode.InvalidRequest,
      'Invalid request: a JSON-RPC 2.0 request has jsonrpc "2.0", an id, a string method and ' +
        'optional object params, and nothing else',
    );
  }
  const field = dotted(issue.path);
  const rule =
    issue.path.at(-1) === 'progressToken'
      ? 'must be a string or an integer'
      : issue.code === 'invalid_type'
        ? `must be ${/^[aeiou]/.test(issue.expected) ? 'an' : 'a'} ${issue.expected}`
        : issue.message;
  return answer(ErrorCode.InvalidParams, `Invalid params: ${field} ${rule}`);
}
