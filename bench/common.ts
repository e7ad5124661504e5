/**
 * Shared pieces of the benchmark suite: the case interface that `run.ts` drives, machine facts
 * for the report header, timing statistics, the FMA-peak reference rate and plain-text tables.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { capabilities } from '../lib/index.js';
import { createRequire } from 'node:module';
import { relative } from 'node:path';
import { loadAddon, packageRoot } from '../lib/native/binding.js';

/** What the command line passes to every case. */
export interface BenchOptions {
  /** Timed forwards per configuration; the median is reported. */
  iterations: number;
  /** Batch sizes to time; undefined means the case's own default. */
  batches?: number[];
  /** Progress lines (to stderr, so stdout stays the report). */
  log: (line: string) => void;
}

/** A table of the report: header cells and rows of preformatted cells. */
export interface Table {
  title: string;
  headers: string[];
  rows: string[][];
}

/** What one case hands back: tables to print, notes under them and raw figures for --json. */
export interface CaseReport {
  name: string;
  description: string;
  tables: Table[];
  notes: string[];
  metrics: Record<string, unknown>;
}

/**
 * One benchmark case. Later cases (vision, optical flow, GPU backends) are more entries of this
 * shape in the `CASES` table of run.ts.
 */
export interface BenchCase {
  name: string;
  description: string;
  defaultBatches: number[];
  /** Why this case cannot run here (e.g. no GPU), or undefined when it can. */
  unavailable(): string | undefined;
  /** Validates, then times. Throws on any failure (a wrong shape, a non-finite output, an engine error). */
  run(options: BenchOptions): Promise<CaseReport>;
}

export interface MachineInfo {
  date: string;
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** The micro-kernels the engine's products run (capabilities().cpu.gemm, e.g. "avx512"). */
  gemm: string;
  engineThreads: number;
  cuda: string;
  /** The .node file node-gyp-build picks (relative to the package root). */
  addon: string;
  loadAverage: number[];
}

function cpuModelName(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux: fall back to what Node reports
  }
  return cpus()[0]?.model.trim() ?? 'unknown';
}

/** Which addon binary loads: PERCEIVER_IO_PREBUILD, else node-gyp-build's choice (build/Release, then prebuilds/). */
function addonPath(): string {
  const override = process.env.PERCEIVER_IO_PREBUILD;
  if (override) return override;
  try {
    const root = packageRoot();
    const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build') as { resolve(dir: string): string };
    return relative(root, nodeGypBuild.resolve(root));
  } catch {
    return 'unknown';
  }
}

export function machineInfo(): MachineInfo {
  const caps = capabilities();
  return {
    date: new Date().toISOString(),
    cpuModel: cpuModelName(),
    cores: availableParallelism(),
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    gemm: caps.cpu.gemm,
    engineThreads: caps.cpu.threads,
    cuda: caps.cuda.available ? 'available' : `unavailable (${caps.cuda.reason ?? 'no reason given'})`,
    addon: addonPath(),
    loadAverage: loadavg(),
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Seconds since `start` (a performance.now() reading). */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}

/** CPU seconds (user + system, all threads) this process used since `start` (a process.cpuUsage() reading). */
export function cpuSecondsSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1e6;
}

/** The process's peak resident set so far, in MiB (getrusage's ru_maxrss). */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

export interface FmaPeak {
  /** Best-of-`repeats` rate of a register-only FMA loop, GFLOP/s (2 FLOPs per multiply-add). */
  gflops: number;
  /** The engine's pool size, over which the loop ran (one copy per thread). */
  threads: number;
  /** The kernel set whose FMA loop ran (the one the products use). */
  isa: string;
}

/**
 * The machine's float32 FMA peak on the engine's threads (cpuKernelCheck op "fma_peak"), the
 * reference the benchmarks report the model's rate against. Until 2026-12-02 that reference was
 * OpenBLAS's best sgemm rate; OpenBLAS is no longer linked, and the FMA peak is the ceiling any
 * product (ours or a BLAS's) can reach, so "% of FMA peak" reads lower than "% of sgemm" did.
 */
export async function measureFmaPeak(repeats: number): Promise<FmaPeak> {
  const threads = capabilities().cpu.threads;
  const r = await loadAddon().cpuKernelCheck({ op: 'fma_peak', threads, iterations: repeats });
  return { gflops: r.gflops, threads, isa: r.isa };
}

/** Fixed-point formatting with thousands separators. */
export function fmt(value: number, digits = 1): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatTable(table: Table): string {
  const widths = table.headers.map((h, i) => Math.max(h.length, ...table.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    '| ' + widths.map((w, i) => {
      const cell = cells[i] ?? '';
      // Numbers right-aligned, text left-aligned.
      return /^[-+]?[\d,.]+( ?%)?$/.test(cell) ? cell.padStart(w) : cell.padEnd(w);
    }).join(' | ') + ' |';
  const rule = '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|';
  return [table.title, line(table.headers), rule, ...table.rows.map(line)].join('\n');
}

/** Reproducible values in [-1, 1) (xorshift32), for benchmark inputs. */
export function randomValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x / 2147483648 - 1;
  }
  return out;
}
