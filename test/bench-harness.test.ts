/**
 * The benchmark harness itself (bench/harness.ts): ABBA order, medians and spread, ratios and the
 * README table rendered from results. The benchmarks are not part of `npm test`; this is.
 */
import { describe, expect, it } from 'vitest';
import { median, quantile, runFigure, type Figure } from '../bench/harness.ts';
import { renderTable } from '../bench/readme.ts';

function recordingFigure(order: string[], values: { a: number[]; b: number[] }): Figure {
  return {
    id: 'demo_ms',
    title: 'demo',
    unit: 'ms',
    better: 'lower',
    baseline: 'bare',
    target: '≤ 1.10× baseline',
    met: (r) => r.ratio !== null && r.ratio <= 1.1,
    async open() {
      let a = 0;
      let b = 0;
      return {
        fraudgate: async () => {
          order.push('A');
          return { value: values.a[a++] ?? 0, extra: { p99_ms: 10 } };
        },
        baseline: async () => {
          order.push('B');
          return { value: values.b[b++] ?? 0 };
        },
        close: async () => {
          order.push('closed');
        },
      };
    },
  };
}

describe('bench harness', () => {
  it('runs a warm-up of each side, then ABBA rounds, and summarizes each side by its median', async () => {
    const order: string[] = [];
    // The first value of each side is the warm-up and must not count.
    const figure = recordingFigure(order, { a: [100, 2, 3, 4, 5], b: [100, 2, 2, 2, 2] });
    const result = await runFigure(figure, { quick: false });
    expect(order).toEqual(['A', 'B', 'A', 'B', 'B', 'A', 'A', 'B', 'B', 'A', 'closed']);
    expect(result.fraudgate).toMatchObject({ median: 3.5, min: 2, max: 5, runs: [2, 3, 4, 5] });
    expect(result.fraudgate.extra).toEqual({ p99_ms: 10 });
    expect(result.baseline).toMatchObject({ median: 2, min: 2, max: 2 });
    expect(result.ratio).toBe(1.75);
    expect(result.met).toBe(false);
  });

  it('quick mode runs one round; a figure without a baseline has no ratio', async () => {
    const order: string[] = [];
    const figure = recordingFigure(order, { a: [0, 1, 1], b: [] });
    const session = await figure.open({ quick: true });
    const noBaseline: Figure = {
      ...figure,
      baseline: undefined,
      met: (r) => r.fraudgate.median <= 1,
      open: async () => ({ fraudgate: session.fraudgate, close: session.close }),
    };
    const result = await runFigure(noBaseline, { quick: true });
    expect(order).toEqual(['A', 'A', 'A', 'closed']);
    expect(result.baseline).toBeNull();
    expect(result.ratio).toBeNull();
    expect(result.met).toBe(true);
  });

  it('median and nearest-rank quantiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(xs, 0.5)).toBe(50);
    expect(quantile(xs, 0.99)).toBe(99);
  });

  it('renders the README table with medians, spread, ratio and whether the target is met', async () => {
    const figure = recordingFigure([], { a: [9, 2, 2, 2, 2], b: [9, 2, 2, 2, 2] });
    const result = await runFigure(figure, { quick: false });
    const table = renderTable({
      date: '2026-11-30T08:00:00.000Z',
      machine: { cpus: 2, cpu: 'test', node: 'v24' },
      quick: false,
      figures: [result],
    });
    expect(table).toContain('| demo | 2 ms (2–2) | bare: 2 ms (2–2) | ×1 | ≤ 1.10× baseline ✓ |');
  });
});
