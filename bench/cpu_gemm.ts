/**
 * CPU product micro-benchmark: the engine's own packed-weight products (native/src/backend/cpu/
 * kernels) against the OpenBLAS it links (sgemm, as Debian ships it: the core OpenBLAS picks on
 * this CPU) and the same OpenBLAS told to use its AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX, set
 * only in a child process of this benchmark, for comparison), on 1 and 2 threads, at the matrix
 * shapes of language-perceiver and vision-perceiver-learned (batch 1 and 8), with the machine's
 * FMA peak from a register-only loop. Each of our products is validated against a float64
 * reference first (sampled rows; relative error must stay under 1e-5).
 *
 * The machine may be shared: every configuration is timed in each of several interleaved rounds;
 * the table gives the best round (max GFLOP/s) and the median of rounds. On 1 thread the time is
 * the calling thread's CPU time (what the code takes, leaving out waits for a core, which on a
 * machine shared by several jobs are most of the wall clock); on 2 threads it is wall-clock time.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/cpu_gemm.js [--rounds 3] [--quick]
 */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { capabilities } from '../lib/index.js';
import { loadAddon, type CpuKernelResult } from '../lib/native/binding.js';

interface Shape {
  model: string;
  what: string;
  m: number;
  k: number;
  n: number;
}

const BASE: Shape[] = [
  { model: 'language', what: 'latent self-attention q/k/v/o, MLP (d_latents 1280)', m: 256, k: 1280, n: 1280 },
  { model: 'language', what: 'latent query or key (qk 256)', m: 256, k: 1280, n: 256 },
  { model: 'language', what: 'fused latent q+k+v (256+256+1280)', m: 256, k: 1280, n: 1792 },
  { model: 'language', what: 'encoder cross-attention k (2048 inputs, d_model 768)', m: 2048, k: 768, n: 256 },
  { model: 'language', what: 'encoder cross-attention v (to 1280)', m: 2048, k: 768, n: 1280 },
  { model: 'language', what: 'encoder cross-attention fused k+v', m: 2048, k: 768, n: 1536 },
  { model: 'language', what: 'decoder cross-attention output (1280 to 768)', m: 2048, k: 1280, n: 768 },
  { model: 'language', what: 'decoder to vocabulary (262)', m: 2048, k: 768, n: 262 },
  { model: 'vision', what: 'latent attention, MLP (512 latents, d_latents 1024)', m: 512, k: 1024, n: 1024 },
  { model: 'vision', what: 'fused latent q+k+v (3 x 1024)', m: 512, k: 1024, n: 3072 },
  { model: 'vision', what: 'cross-attention k/v over 50176 inputs (512)', m: 50176, k: 512, n: 512 },
];

// Batch 8 multiplies m; the 50176-row product at batch 8 (1.6 GB of operands) is left out: at
// batch 1 it is already 100 MB per operand, far past every cache, so it is the steady state.
const SHAPES: (Shape & { batch: number })[] = [
  ...BASE.map((s) => ({ ...s, batch: 1 })),
  ...BASE.filter((s) => s.m < 50176).map((s) => ({ ...s, m: s.m * 8, batch: 8 })),
];

type Engine = 'ours' | 'openblas' | 'openblas-skylakex';
const THREADS = [1, 2] as const;

function key(s: Shape, threads: number, engine: Engine): string {
  return `${s.m}x${s.k}x${s.n}/${threads}/${engine}`;
}

function iterationsFor(s: Shape): number {
  const gflop = (2 * s.m * s.k * s.n) / 1e9;
  return Math.max(2, Math.min(10, Math.ceil(1.5 / gflop)));
}

async function timeOpenBlas(shapes: Shape[]): Promise<Record<string, number>> {
  const addon = loadAddon();
  const out: Record<string, number> = {};
  for (const s of shapes) {
    for (const threads of THREADS) {
      const r = await addon.cpuKernelCheck({ op: 'openblas', m: s.m, k: s.k, n: s.n, threads, iterations: iterationsFor(s) });
      out[key(s, threads, 'openblas')] = threads === 1 ? r.gflopsThreadCpu : r.gflops;
    }
  }
  return out;
}

function parseArgs(): { rounds: number; quick: boolean; child: boolean } {
  const args = process.argv.slice(2);
  const at = args.indexOf('--rounds');
  return {
    rounds: at >= 0 ? Math.max(1, Number(args[at + 1]) || 3) : 3,
    quick: args.includes('--quick'),
    child: args.includes('--openblas-child'),
  };
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

async function main(): Promise<void> {
  const { rounds, quick, child } = parseArgs();
  const shapes = quick ? SHAPES.filter((s) => s.batch === 1 && s.m < 50176) : SHAPES;
  if (child) {
    // The SkylakeX run: this process was started with OPENBLAS_CORETYPE set.
    const result = await timeOpenBlas(shapes);
    process.stdout.write(JSON.stringify({ core: capabilities().cpu.blas, result }));
    return;
  }
  const addon = loadAddon();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const samples = new Map<string, number[]>();
  const add = (k: string, v: number) => samples.set(k, [...(samples.get(k) ?? []), v]);
  const peaks: Record<number, number[]> = { 1: [], 2: [] };
  let skylakeCore = '';
  const started = new Date();
  const loads: number[] = [];

  for (let round = 0; round < rounds; round++) {
    loads.push(loadavg()[0]!);
    for (const threads of THREADS) {
      const p = await addon.cpuKernelCheck({ op: 'fma_peak', threads, iterations: 20 });
      peaks[threads]!.push(threads === 1 ? p.gflopsThreadCpu : p.gflops);
    }
    for (const s of shapes) {
      for (const threads of THREADS) {
        const r: CpuKernelResult = await addon.cpuKernelCheck({
          op: 'gemm_packed', m: s.m, k: s.k, n: s.n, threads, iterations: iterationsFor(s), compareThreads: false, seed: round + 1,
        });
        if (!(r.relativeError < 1e-5) || r.outsideWrites !== 0) {
          throw new Error(`${key(s, threads, 'ours')}: validation failed (relative error ${r.relativeError}, outside writes ${r.outsideWrites})`);
        }
        add(key(s, threads, 'ours'), threads === 1 ? r.gflopsThreadCpu : r.gflops);
      }
    }
    for (const [k, v] of Object.entries(await timeOpenBlas(shapes))) add(k, v);
    const script = fileURLToPath(import.meta.url);
    const sky = spawnSync(process.execPath, [script, '--openblas-child', ...(quick ? ['--quick'] : [])], {
      env: { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX' },
      encoding: 'utf8',
      maxBuffer: 1 << 24,
      timeout: 30 * 60 * 1000,
    });
    if (sky.status !== 0) throw new Error(`the SkylakeX OpenBLAS child failed: ${sky.stderr}`);
    const parsed = JSON.parse(sky.stdout) as { core: string; result: Record<string, number> };
    skylakeCore = parsed.core;
    for (const [k, v] of Object.entries(parsed.result)) add(k.replace(/\/openblas$/, '/openblas-skylakex'), v);
    log(`round ${round + 1} of ${rounds} done (load average ${loadavg()[0]!.toFixed(1)})`);
  }

  const fmt = (x: number) => x.toFixed(1);
  const best = (k: string) => Math.max(...(samples.get(k) ?? [Number.NaN]));
  const med = (k: string) => median(samples.get(k) ?? [Number.NaN]);
  const peak = { 1: Math.max(...peaks[1]!), 2: Math.max(...peaks[2]!) };
  const lines: string[] = [];
  lines.push(`CPU: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} logical cores; kernels: ${(await addon.cpuKernelCheck({ op: 'add' })).isa}`);
  lines.push(`OpenBLAS as shipped: ${capabilities().cpu.blas}`);
  lines.push(`OpenBLAS with OPENBLAS_CORETYPE=SkylakeX: ${skylakeCore}`);
  lines.push(`FMA peak (register-only loop, best of ${rounds} rounds): ${fmt(peak[1])} GFLOP/s on 1 thread (thread CPU time), ${fmt(peak[2])} on 2 (wall clock)`);
  lines.push(`Started ${started.toISOString()}, ${rounds} interleaved rounds, load average at round starts: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
  lines.push('');
  lines.push('GFLOP/s, best round (median of rounds in parentheses); 1 thread: thread CPU time, 2 threads: wall clock:');
  lines.push('');
  lines.push('| model | product | batch | m x k x n | threads | ours | OpenBLAS (shipped) | OpenBLAS SkylakeX | ours / best OpenBLAS | ours / FMA peak |');
  lines.push('| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of shapes) {
    for (const threads of THREADS) {
      const ours = best(key(s, threads, 'ours'));
      const blas = Math.max(best(key(s, threads, 'openblas')), best(key(s, threads, 'openblas-skylakex')));
      lines.push(
        `| ${s.model} | ${s.what} | ${s.batch} | ${s.m} x ${s.k} x ${s.n} | ${threads} | ${fmt(ours)} (${fmt(med(key(s, threads, 'ours')))}) | ` +
          `${fmt(best(key(s, threads, 'openblas')))} (${fmt(med(key(s, threads, 'openblas')))}) | ` +
          `${fmt(best(key(s, threads, 'openblas-skylakex')))} (${fmt(med(key(s, threads, 'openblas-skylakex')))}) | ` +
          `${(ours / blas).toFixed(2)}x | ${((100 * ours) / peak[threads]).toFixed(0)} % |`,
      );
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exitCode = 1;
});
