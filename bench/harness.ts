/**
 * The benchmark harness behind `npm run bench`: every figure runs fraudgate and its baseline side
 * by side in one process run, in ABBA order (fraudgate, baseline, baseline, fraudgate per round),
 * so drift in machine load and warm-up lands on both sides equally; each side's figure is the
 * median of its repetitions, with the spread (min–max) beside it. On a shared 2-core machine
 * absolute figures move 2–3× with load; the ratio is the figure to read.
 *
 * A figure is a module in bench/figures/ exporting a `Figure`; bench/run.ts lists them.
 */

/** One repetition's result: the headline value plus named secondary values (p99, bytes…). */
export interface Measurement {
  value: number;
  extra?: Record<string, number>;
}

/** An opened figure: state shared by its repetitions (sandbox, servers), closed at the end. */
export interface FigureSession {
  fraudgate(): Promise<Measurement>;
  /** Absent for figures measured against a fixed target only (catalogue size, API calls). */
  baseline?(): Promise<Measurement>;
  close(): Promise<void>;
}

export interface BenchOptions {
  /** BENCH_QUICK=1: fewer rounds and smaller loads, for CI-like runs; same code paths. */
  quick: boolean;
}

export interface Figure {
  /** Stable key in bench/results.json, e.g. `read_p50`. */
  id: string;
  /** The README row, e.g. "governed read `get_sift_score`, in-process MCP, p50". */
  title: string;
  unit: string;
  /** Whether a smaller value is better (latency, bytes) or a larger one (throughput). */
  better: 'lower' | 'higher';
  /** What the baseline is, e.g. "bare McpServer tool, same undici call". */
  baseline?: string;
  /** The target in words, e.g. "≤ 1.10× baseline". */
  target: string;
  /** Whether the medians meet the target. */
  met(result: FigureResult): boolean;
  /** ABBA rounds (default 2 full, 1 quick); slow figures ask for fewer. */
  rounds?(options: BenchOptions): number;
  /** Default true: one unmeasured repetition per side first. Slow figures warm up in `open`. */
  warmup?: boolean;
  open(options: BenchOptions): Promise<FigureSession>;
}

export interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
  /** Medians of the secondary values. */
  extra: Record<string, number>;
}

export interface FigureResult {
  id: string;
  title: string;
  unit: string;
  better: 'lower' | 'higher';
  target: string;
  baseline_name: string | null;
  fraudgate: Summary;
  baseline: Summary | null;
  /** fraudgate median / baseline median (null without a baseline). */
  ratio: number | null;
  met: boolean;
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};

/** The q-quantile (0–1) of samples, nearest rank. */
export const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
};

export const round = (x: number, digits = 3): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

function summarize(measurements: Measurement[]): Summary {
  const runs = measurements.map((m) => m.value);
  const keys = new Set(measurements.flatMap((m) => Object.keys(m.extra ?? {})));
  const extra: Record<string, number> = {};
  for (const key of keys) {
    extra[key] = round(
      median(measurements.flatMap((m) => (m.extra?.[key] === undefined ? [] : [m.extra[key]]))),
    );
  }
  return {
    median: round(median(runs)),
    min: round(Math.min(...runs)),
    max: round(Math.max(...runs)),
    runs: runs.map((r) => round(r)),
    extra,
  };
}

/** Runs one figure: a warm-up of each side, then its ABBA rounds. */
export async function runFigure(figure: Figure, options: BenchOptions): Promise<FigureResult> {
  const session = await figure.open(options);
  try {
    const a: Measurement[] = [];
    const b: Measurement[] = [];
    const baseline = session.baseline?.bind(session);
    if (figure.warmup !== false) {
      // Warm-up (JIT, connections, page cache), counted for neither side.
      await session.fraudgate();
      if (baseline) await baseline();
    }
    const rounds = figure.rounds?.(options) ?? (options.quick ? 1 : 2);
    for (let r = 0; r < rounds; r += 1) {
      a.push(await session.fraudgate());
      if (baseline) {
        b.push(await baseline());
        b.push(await baseline());
      }
      a.push(await session.fraudgate());
    }
    const fraudgate = summarize(a);
    const base = baseline ? summarize(b) : null;
    const partial = {
      id: figure.id,
      title: figure.title,
      unit: figure.unit,
      better: figure.better,
      target: figure.target,
      baseline_name: figure.baseline ?? null,
      fraudgate,
      baseline: base,
      ratio: base && base.median !== 0 ? round(fraudgate.median / base.median, 2) : null,
      met: false,
    };
    return { ...partial, met: figure.met(partial) };
  } finally {
    await session.close();
  }
}
