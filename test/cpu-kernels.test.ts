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

t.test('malformed requests are typed errors', async (t) => {
  const bad: [string, unknown][] = [
    ['lda narrower than k', { op: 'gemm_packed', m: 2, n: 2, k: 8, lda: 4 }],
    ['ldc narrower than n', { op: 'gemm', m: 2, n: 9, k: 8, ldc: 4 }],
    ['unknown op', { op: 'matmul' }],
    ['unknown isa', { op: 'add', isa: 'sse9' }],
    ['zero rows', { op: 'gemm_packed', m: 0, n: 2, k: 2 }],
    ['fractional size', { op: 'gemm', m: 2.5 }],
    ['operands over 2^26 elements', { op: 'gemm_packed', m: 1 << 20, n: 1 << 20, k: 1 << 20 }],
    ['hours of work', { op: 'gemm_packed', m: 1 << 13, n: 1 << 13, k: 1 << 13, iterations: 1000 }],
    ['beta other than 0 or 1', { op: 'gemm', beta: 2 }],
    ['non-finite alpha', { op: 'gemm', alpha: Number.NaN }],
  ];
  for (const [what, request] of bad) {
    await t.rejects(async () => addon.cpuKernelCheck(request as CpuKernelRequest), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, what);
  }
  t.throws(() => addon.cpuKernelCheck(undefined as unknown as CpuKernelRequest), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, 'no request');
});
