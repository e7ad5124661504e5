/**
 * The CPU engine's own kernels (native/src/backend/cpu/kernels): packed-weight products with
 * fused epilogues, the plain product attention uses, and the row kernels (LayerNorm, GELU, exp,
 * softmax, add). Each kernel set this CPU can run is checked (AVX-512 with and without bf16 dot
 * products, AVX2, scalar), chosen per call through the native check entry point, so the fallbacks
 * are tested on an AVX-512 machine. The native side compares with a double-precision reference,
 * reruns products on 1 and 2 threads (results must be bitwise identical), and watches C's padding
 * for stray writes.
 */
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { capabilities } from '../lib/index.js';
import { loadAddon, type CpuIsa, type CpuKernelRequest, type CpuKernelResult } from '../lib/native/binding.js';

const addon = loadAddon();

/** What /proc/cpuinfo says this CPU runs, independently of the engine's own CPUID dispatch. */
function expectedIsas(): CpuIsa[] {
  let flags = new Set<string>();
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    flags = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    // not Linux: only the scalar set is certain
  }
  const isas: CpuIsa[] = ['scalar'];
  if (flags.has('avx2') && flags.has('fma')) isas.push('avx2');
  const avx512 = ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq'].every((f) => flags.has(f)) && flags.has('fma');
  if (avx512) isas.push('avx512');
  if (avx512 && flags.has('avx512_bf16')) isas.push('avx512-bf16');
  return isas;
}

const ISAS = expectedIsas();
const ALL_ISAS: CpuIsa[] = ['scalar', 'avx2', 'avx512', 'avx512-bf16'];

function describe(r: CpuKernelRequest): string {
  const { op, isa, ...rest } = r;
  return `${op} ${isa} ${JSON.stringify(rest)}`;
}

async function check(t: Test, request: CpuKernelRequest, tolerance: number): Promise<CpuKernelResult> {
  const r = await addon.cpuKernelCheck(request);
  const what = describe(request);
  t.equal(r.isa, request.isa ?? r.isa, `${what}: ran on the requested kernels`);
  t.ok(r.checked > 0, `${what}: compared ${r.checked} outputs`);
  t.ok(r.relativeError <= tolerance, `${what}: relative error ${r.relativeError.toExponential(2)} <= ${tolerance}`);
  t.equal(r.outsideWrites, 0, `${what}: nothing written outside the output`);
  t.ok(r.threadsAgree, `${what}: 1 and 2 threads agree bit for bit`);
  return r;
}

t.test('the kernel sets this CPU runs are the ones its flags allow', async (t) => {
  for (const isa of ALL_ISAS) {
    if (ISAS.includes(isa)) {
      const r = await addon.cpuKernelCheck({ op: 'add', isa, m: 1, n: 5 });
      t.equal(r.isa, isa, `${isa} runs`);
    } else {
      await t.rejects(async () => addon.cpuKernelCheck({ op: 'add', isa, m: 1, n: 5 }), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, `${isa} is refused on this CPU`);
    }
  }
  // The best set the CPU runs; with AVX512_BF16, the plain AVX-512 set where vdpbf16ps measured
  // slower than widening bf16 (the two give the same bits, checked below).
  const best = ISAS[ISAS.length - 1]!;
  const r = await addon.cpuKernelCheck({ op: 'add', m: 1, n: 5 });
  t.ok(r.isa === best || (best === 'avx512-bf16' && r.isa === 'avx512'), `by default the best set the CPU runs (${r.isa})`);
});

t.test('vdpbf16ps and widened bf16 products give the same bits', { skip: !ISAS.includes('avx512-bf16') && 'no AVX512_BF16 here' }, async (t) => {
  for (const [m, n, k] of [[37, 70, 101], [137, 136, 701], [29, 261, 322]] as const) {
    const request = { op: 'gemm_packed', m, n, k, dtype: 'bfloat16', bias: true, seed: 11 } as const;
    const dot = await addon.cpuKernelCheck({ ...request, isa: 'avx512-bf16' });
    const widened = await addon.cpuKernelCheck({ ...request, isa: 'avx512' });
    t.equal(dot.outputHash, widened.outputHash, `${m}x${n}x${k}: identical outputs`);
  }
});

// Odd widths, m off the 14-row tile, k off every vector width, strides wider than rows.
const SHAPES: { m: number; n: number; k: number; lda?: number; ldc?: number }[] = [
  { m: 1, n: 1, k: 1 },
  { m: 3, n: 17, k: 3 },
  { m: 15, n: 3, k: 17 },
  { m: 29, n: 261, k: 322, lda: 330, ldc: 263 },
  { m: 43, n: 322, k: 261 },
  { m: 2, n: 64, k: 1031, ldc: 70 },
];

t.test('packed float32 products with every epilogue agree with float64', async (t) => {
  for (const isa of ISAS) {
    for (const shape of SHAPES) await check(t, { op: 'gemm_packed', isa, ...shape, bias: true, gelu: true, residual: 'separate', threads: 2 }, 1e-5);
    for (const bias of [false, true]) {
      for (const gelu of [false, true]) {
        for (const residual of ['none', 'separate', 'alias'] as const) {
          await check(t, { op: 'gemm_packed', isa, m: 31, n: 97, k: 70, ldc: 101, bias, gelu, residual, seed: 3 }, 1e-5);
        }
      }
    }
  }
});

t.test('packed bf16 products agree with float64 on bf16-rounded operands', async (t) => {
  for (const isa of ISAS) {
    for (const shape of SHAPES) {
      for (const dtype of ['bfloat16', 'bfloat16-bits'] as const) {
        await check(t, { op: 'gemm_packed', isa, ...shape, dtype, bias: true, gelu: true, residual: 'alias', threads: 2, seed: 5 }, 1e-5);
      }
    }
  }
});

t.test('plain products (attention blocks): both layouts of B, alpha, beta', async (t) => {
  for (const isa of ISAS) {
    for (const transposed of [true, false]) {
      for (const beta of [0, 1] as const) {
        await check(t, { op: 'gemm', isa, m: 37, n: 45, k: 33, transposed, alpha: 0.125, beta, ldc: 50, lda: 40, ldb: 60 }, 1e-5);
        await check(t, { op: 'gemm', isa, m: 1, n: 3, k: 1, transposed, alpha: -2, beta }, 1e-6);
      }
    }
  }
});

// The attention blocks' products at the language model's shapes (8 heads of q/k width 32 and v
// width 160 strided out of a fused [q k v] row of 1792; 256 latents; 2048-key blocks of the
// encoder's cross-attention), and shapes that cross the packed B's k blocks and column chunks.
t.test('plain products at the attention shapes: small k, long keys, k blocks and B chunks', async (t) => {
  const shapes: [string, Omit<CpuKernelRequest, 'op' | 'isa'>][] = [
    ['self-attention Q.K^T', { m: 256, n: 256, k: 32, transposed: true, alpha: 0.17677669, lda: 1792, ldb: 1792, ldc: 256 }],
    ['self-attention P.V', { m: 256, n: 160, k: 256, transposed: false, beta: 1, lda: 256, ldb: 1792, ldc: 160 }],
    ['cross-attention Q.K^T, 2048 keys', { m: 256, n: 2048, k: 32, transposed: true, alpha: 0.17677669, lda: 256, ldb: 256 }],
    ['cross-attention P.V, 2048 keys', { m: 256, n: 160, k: 2048, transposed: false, beta: 1, ldb: 1280 }],
    ['k blocks with a remainder, a partial row tile', { m: 30, n: 70, k: 700, transposed: true, alpha: -0.5, beta: 1, lda: 701, ldb: 703, ldc: 75 }],
    ['one-panel chunks of B (long k), a partial panel', { m: 3, n: 45, k: 9000, transposed: false, ldb: 47 }],
  ];
  for (const isa of ISAS) {
    for (const [what, shape] of shapes) {
      t.comment(what);
      await check(t, { op: 'gemm', isa, ...shape }, 1e-5);
    }
  }
});

t.test('row kernels: LayerNorm (fused residual), GELU, exp, softmax, add', async (t) => {
  for (const isa of ISAS) {
    for (const n of [1, 3, 17, 261, 322, 1280]) {
      for (const residual of ['none', 'separate'] as const) {
        for (const sumOut of residual === 'none' ? [false] : [false, true]) {
          for (const inPlace of [false, true]) {
            const r = await check(t, { op: 'layer_norm', isa, m: 5, n, residual, sumOut, inPlace, seed: n }, 1e-5);
            t.ok(r.maxAbsError <= 2e-5 * Math.max(1, r.referenceMax), `layer_norm ${isa} n=${n}: max error ${r.maxAbsError.toExponential(2)}`);
          }
        }
      }
      const softmax = await check(t, { op: 'softmax', isa, m: 4, n, seed: n }, 1e-5);
      t.ok(softmax.maxRelativeError <= 1e-5, `softmax ${isa} n=${n}: elementwise ${softmax.maxRelativeError.toExponential(2)}`);
      await check(t, { op: 'add', isa, m: 1, n, seed: n }, 0);
    }
    // Element-wise relative error, the far tails included. GELU's condition number grows as x^2 in
    // the negative tail (x = -13: ~170 float32 roundings of x / sqrt 2), hence 3e-5 there.
    const gelu = await check(t, { op: 'gelu', isa, m: 1, n: 20011, seed: 9 }, 1e-6);
    t.ok(gelu.maxRelativeError <= 3e-5, `gelu ${isa}: elementwise ${gelu.maxRelativeError.toExponential(2)}`);
    const exp = await check(t, { op: 'exp', isa, m: 1, n: 20011, seed: 9 }, 1e-6);
    t.ok(exp.maxRelativeError <= 1e-6, `exp ${isa}: elementwise ${exp.maxRelativeError.toExponential(2)}`);
  }
});

t.test("rows.h's threaded functions split rows and elements over 2 threads", async (t) => {
  // Without an isa the check runs the process's kernel set through rows.h's public functions.
  for (const n of [3, 261, 1280]) {
    await check(t, { op: 'layer_norm', m: 67, n, residual: 'separate', sumOut: true, inPlace: true, threads: 2, seed: n }, 1e-5);
    await check(t, { op: 'softmax', m: 67, n, threads: 2, seed: n }, 1e-5);
  }
  await check(t, { op: 'gelu', m: 1, n: 100003, threads: 2 }, 1e-6);
  await check(t, { op: 'add', m: 1, n: 100003, threads: 2 }, 0);
});

// The benchmarks' reference rate (bench/common.ts measureFmaPeak): on every thread of the engine's pool.
t.test("fma_peak times a register-only FMA loop on 1 thread and on the engine's pool", async (t) => {
  const threads = capabilities().cpu.threads;
  const one = await addon.cpuKernelCheck({ op: 'fma_peak', threads: 1, iterations: 2 });
  const all = await addon.cpuKernelCheck({ op: 'fma_peak', threads, iterations: 2 });
  for (const [what, r] of [['1 thread', one], [`${threads} threads`, all]] as const) {
    t.ok(r.gflops > 1 && Number.isFinite(r.gflops), `${what}: ${r.gflops.toFixed(1)} GFLOP/s`);
    t.ok(r.bestMs > 0 && r.bestMs <= r.medianMs, `${what}: best ${r.bestMs.toFixed(2)} ms <= median ${r.medianMs.toFixed(2)} ms`);
  }
});

t.test('malformed requests are typed errors', async (t) => {
  // [what, request, the argument named, what came]
  const bad: [string, unknown, string, string | RegExp][] = [
    ['lda narrower than k', { op: 'gemm_packed', m: 2, n: 2, k: 8, lda: 4 }, 'lda, ldb, ldc', '4, 0, 0'],
    ['ldc narrower than n', { op: 'gemm', m: 2, n: 9, k: 8, ldc: 4 }, 'lda, ldb, ldc', '0, 0, 4'],
    ['unknown op', { op: 'matmul' }, 'op', 'string "matmul"'],
    ['unknown isa', { op: 'add', isa: 'sse9' }, 'isa', 'string "sse9"'],
    ['zero rows', { op: 'gemm_packed', m: 0, n: 2, k: 2 }, 'm', 'number 0'],
    ['fractional size', { op: 'gemm', m: 2.5 }, 'm', 'number 2.5'],
    ['operands over 2^26 elements', { op: 'gemm_packed', m: 1 << 20, n: 1 << 20, k: 1 << 20 }, 'm, n, k', /^one of \d+$/],
    ['hours of work', { op: 'gemm_packed', m: 1 << 13, n: 1 << 13, k: 1 << 13, iterations: 1000 }, 'm, n, k, iterations', 'more'],
    ['beta other than 0 or 1', { op: 'gemm', beta: 2 }, 'beta', 'number 2'],
    ['non-finite alpha', { op: 'gemm', alpha: Number.NaN }, 'alpha', 'number nan'],
    ['products on more than 2 threads', { op: 'gemm', threads: 3 }, 'threads', 'number 3'],
    ['fma_peak on more threads than the engine has', { op: 'fma_peak', threads: 1 << 20 }, 'threads', 'number 1.04858e+06'],
  ];
  for (const [what, request, argument, actual] of bad) {
    await t.rejects(async () => addon.cpuKernelCheck(request as CpuKernelRequest), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT', argument, expected: /./, actual }, what);
  }
  t.throws(() => addon.cpuKernelCheck(undefined as unknown as CpuKernelRequest), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT', argument: 'cpuKernelCheck({ op, ... })', expected: 'an object', actual: 'undefined' }, 'no request');
});

// The CUDA tensor-core attention's algorithm (backend/cuda/kernels/flash_attention.cuh) emulated
// on the CPU with the kernel's own plan (flash_attention_plan.h: tiles, zero padding of odd widths,
// online softmax, key-range splits, the combine step), against softmax attention in double. Without
// rounding the emulation runs in double and only its float32 output is rounded (about 2.5e-8), so
// anything beyond 1e-7 would be a tile, a split or a combine done wrong; with bf16 / fp16 rounding
// it runs in float, as the kernel does.
t.test('the flash attention algorithm, emulated with the GPU plan, equals softmax attention', async (t) => {
  type Shape = { batch: number; heads: number; m: number; n: number; k: number; dv: number; keys: 'none' | 'mask' | 'lengths'; splits?: number; what: string };
  const shapes: Shape[] = [
    { batch: 2, heads: 8, m: 70, n: 300, k: 32, dv: 160, keys: 'mask', what: 'language heads 32 / 160, masked keys' },
    { batch: 3, heads: 8, m: 65, n: 257, k: 32, dv: 96, keys: 'lengths', what: 'decoder heads 32 / 96, key lengths' },
    { batch: 2, heads: 2, m: 17, n: 200, k: 128, dv: 128, keys: 'lengths', splits: 4, what: '128-wide heads, 4 forced splits' },
    { batch: 2, heads: 1, m: 40, n: 300, k: 261, dv: 261, keys: 'lengths', splits: 3, what: 'odd width 261 padded to 272 / 288, 3 splits' },
    { batch: 2, heads: 1, m: 33, n: 129, k: 322, dv: 322, keys: 'mask', what: 'odd width 322' },
    { batch: 1, heads: 1, m: 20, n: 100, k: 1024, dv: 1024, keys: 'none', splits: 2, what: 'width 1024 (16-key tiles)' },
    { batch: 2, heads: 1, m: 5, n: 3000, k: 512, dv: 512, keys: 'lengths', splits: 9, what: 'a split left empty by a short item' },
    { batch: 1, heads: 1, m: 3, n: 50_176, k: 261, dv: 261, keys: 'none', what: '50,176 keys: split by the plan' },
    { batch: 1, heads: 1, m: 2, n: 182_528, k: 322, dv: 322, keys: 'none', what: '182,528 keys (flow): split by the plan' },
  ];
  for (const { what, ...shape } of shapes) {
    const r = await addon.cpuKernelCheck({ op: 'flash_attention', ...shape, seed: 3 });
    t.ok(r.checked === shape.batch * shape.heads * shape.m * shape.dv, `${what}: compared every output`);
    t.ok(r.relativeError <= 1e-7, `${what}: relative error ${r.relativeError.toExponential(2)} <= 1e-7 (${r.splits} splits)`);
    if (shape.splits) t.equal(r.splits, Math.min(shape.splits, Math.ceil(shape.n / (shape.k >= 1024 ? 16 : shape.k >= 512 ? 32 : 64))), `${what}: ran the forced splits`);
    if (shape.n >= 50_000) t.ok(r.splits! > 16, `${what}: one query tile, so the plan split the keys ${r.splits} ways`);
  }
  // The half-precision kernels' own rounding (operands and probabilities), the GPU checks' bars'
  // basis (bench/gpu-kernel-cases.ts).
  for (const rounding of ['bfloat16', 'float16'] as const) {
    const r = await addon.cpuKernelCheck({ op: 'flash_attention', batch: 2, heads: 2, m: 70, n: 1031, k: 32, dv: 160, keys: 'mask', rounding, seed: 3 });
    const bar = rounding === 'bfloat16' ? 5e-3 : 1e-3;
    t.ok(r.relativeError <= bar && r.relativeError > 0, `${rounding} operands: relative error ${r.relativeError.toExponential(2)} <= ${bar}`);
  }
});

t.test('flash_attention requests the plan cannot hold are typed errors', async (t) => {
  const bad: [string, CpuKernelRequest][] = [
    ['a width no tile shape holds', { op: 'flash_attention', m: 4, n: 4, k: 16, dv: 1000 }],
    ['an unknown key padding', { op: 'flash_attention', m: 4, n: 4, k: 32, dv: 96, keys: 'causal' as 'none' }],
    ['minutes of emulation', { op: 'flash_attention', m: 4096, n: 182_528, k: 322, dv: 322 }],
  ];
  for (const [what, request] of bad) {
    await t.rejects(async () => addon.cpuKernelCheck(request), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, what);
  }
});
