/**
 * Builds the MCP server for one connection. The only place that installs tool handlers: every
 * `tools/list` and `tools/call` goes through the governance pipeline (src/governance/pipeline.ts),
 * so no tool can skip policy, approvals or audit.
 *
 * Tool handlers are installed at the protocol level rather than with `registerTool`: the SDK's
 * own argument validation would answer bad input before the pipeline could audit it, and the
 * list must be filtered per principal.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import {
  CallToolRequestSchema,
  ElicitResultSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  type CallToolResult,
  type Tool,
} from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';
import type { FraudgateError } from './errors.ts';
import type { CallChannel, ElicitAnswer, Pipeline } from './governance/pipeline.ts';
import type { Logger } from './logger.ts';
import type { ToolCallObserver } from './metrics.ts';
import { annotationsFor, dryRunResultSchema, inputSchemaOf, type AnyTool, type Principal } from './tool.ts';
import { VERSION } from './version.ts';

export interface CreateServerOptions {
  pipeline: Pipeline;
  /** Who this connection acts as (stdio: the configured analyst; HTTP: the token's subject). */
  principal: Principal;
  logger: Logger;
  /** Told about every finished tools/call (tool, outcome, latency); feeds /metrics. */
  metrics?: ToolCallObserver;
}

const INSTRUCTIONS =
  'fraudgate gives governed access to fraud operations in Sift, Segment and Salesforce. Reads are free. ' +
  'Writes are audited under your identity; destructive ones (labels, suppressions) wait for a human ' +
  'approval: when a call returns APPROVAL_PENDING, tell the user the approval id and check it later with ' +
  'get_approval_status instead of calling the tool again. Errors carry a code and say what to do.';

/** The wire description of a tool: JSON Schemas from its zod schemas, annotations from its risk. */
export function toWireTool(tool: AnyTool): Tool {
  return {
    name: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: z.toJSONSchema(inputSchemaOf(tool), { io: 'input' }) as Tool['inputSchema'],
    outputSchema: outputSchemaOf(tool),
    annotations: annotationsFor(tool),
  };
}

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io: 'output' }) as Record<string, unknown>;
  return rest;
}

/** Write tools answer either their result or, for `dry_run: true`, the plan: both are objects. */
function outputSchemaOf(tool: AnyTool): Tool['outputSchema'] {
  if (tool.risk === 'read') return z.toJSONSchema(tool.output, { io: 'output' }) as Tool['outputSchema'];
  return { type: 'object', anyOf: [jsonSchema(tool.output), jsonSchema(dryRunResultSchema)] } as Tool['outputSchema'];
}

/** Expected failures are `isError` results with an actionable message; never JSON-RPC errors or stack traces. */
export function errorResult(error: FraudgateError): CallToolResult {
  const body = {
    error: { code: error.code, message: error.message, retryable: error.retryable, ...error.data },
  };
  return { isError: true, content: [{ type: 'text', text: JSON.stringify(body) }] };
}

export function createMcpServer(options: CreateServerOptions): McpServer {
  const { pipeline, principal, logger } = options;
  const mcp = new McpServer(
    { name: 'fraudgate', title: 'fraudgate', version: VERSION },
    {
      // Empty resources and prompts are declared so generic clients (and the conformance suite)
      // get an empty list rather than "method not found".
      capabilities: { tools: { listChanged: false }, logging: {}, resources: {}, prompts: {} },
      instructions: INSTRUCTIONS,
    },
  );
  const server = mcp.server;
  server.setRequestHandler(ListResourcesRequestSchema, () => ({ resources: [] }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, () => ({ resourceTemplates: [] }));
  server.setRequestHandler(ListPromptsRequestSchema, () => ({ prompts: [] }));

  server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: pipeline.visibleTools(principal).map(toWireTool),
  }));

  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const progressToken = request.params._meta?.progressToken;
    let lastProgress = -1;
    const channel: CallChannel = {
      principal,
      signal: extra.signal,
      async progress(progress, total, message) {
        // The spec requires progress to increase; drop repeats instead of failing the call.
        if (progressToken === undefined || progress <= lastProgress) return;
        lastProgress = progress;
        await extra.sendNotification({
          method: 'notifications/progress',
          params: {
            progressToken,
            progress,
            ...(total === undefined ? {} : { total }),
            ...(message ? { message } : {}),
          },
        });
      },
    };
    if (server.getClientCapabilities()?.elicitation) {
      channel.elicit = async (message): Promise<ElicitAnswer> => {
        const answer = await extra.sendRequest(
          {
            method: 'elicitation/create',
            params: {
              mode: 'form',
              message,
              requestedSchema: {
                type: 'object',
                properties: { confirm: { type: 'boolean', title: 'Confirm this action', default: false } },
                required: ['confirm'],
              },
            },
          },
          ElicitResultSchema,
        );
        if (answer.action !== 'accept') return answer.action;
        return answer.content?.confirm === true ? 'accept' : 'decline';
      };
    }
    const started = performance.now();
    const outcome = await pipeline.call(request.params.name, request.params.arguments ?? {}, channel);
    options.metrics?.({
      tool: request.params.name,
      outcome: outcome.ok ? 'ok' : outcome.error.code,
      durationMs: performance.now() - started,
      ...(outcome.ok ? {} : { error: outcome.error }),
    });
    logger.info('tool call', {
      tool: request.params.name,
      call_id: outcome.callId,
      principal: principal.id,
      outcome: outcome.ok ? 'ok' : outcome.error.code,
    });
    if (!outcome.ok) return errorResult(outcome.error);
    return {
      content: [{ type: 'text', text: JSON.stringify(outcome.output) }],
      structuredContent: outcome.output,
    };
  });

  return mcp;
}
