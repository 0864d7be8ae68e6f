/**
 * `tools/list` size: the whole catalogue as a client receives it (every tool visible to an admin),
 * in bytes of compact JSON and in tokens (o200k, a real BPE tokenizer; Claude's differs by a few
 * percent). Deterministic, so one repetition per side is enough; there is no baseline, only the
 * target: every client pastes this into its model's context.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { Figure } from '../harness.ts';
import { openBenchRuntime } from './bench-runtime.ts';
import { createMcpServer } from '../../src/server.ts';
import { silentLogger } from '../../src/logger.ts';

export const catalogue: Figure = {
  id: 'tools_list_kb',
  title: '`tools/list`, all tools',
  unit: 'KB',
  better: 'lower',
  target: '≤ 40 KB, no validation lost',
  met: (r) => r.fraudgate.median <= 40,
  rounds: () => 1,
  async open() {
    // Loaded here, not at the top: the tokenizer's tables cost a few hundred ms the other figures need not pay.
    const { countTokens } = await import('gpt-tokenizer/encoding/o200k_base');
    const bench = await openBenchRuntime();
    return {
      async fraudgate() {
        const server = createMcpServer({
          pipeline: bench.runtime.pipeline,
          principal: { id: 'bench-admin@example.com', kind: 'user', role: 'admin' },
          logger: silentLogger,
        });
        const client = new Client({ name: 'bench', version: '0' });
        const [a, b] = InMemoryTransport.createLinkedPair();
        await server.connect(b);
        await client.connect(a);
        const { tools } = await client.listTools();
        await client.close();
        const json = JSON.stringify({ tools });
        return {
          value: Buffer.byteLength(json) / 1000,
          extra: {
            tools: tools.length,
            tokens: countTokens(json),
            bytes_over_4: Math.round(json.length / 4),
          },
        };
      },
      close: () => bench.close(),
    };
  },
};
