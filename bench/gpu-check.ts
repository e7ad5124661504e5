/**
 * The GPU half of bench/gpu-check.sh, in plain JavaScript once compiled (the GPU machine has no
 * npm registry, so no tap there): kernel checks against the CPU reference, parity of every fixture
 * in every precision, CUDA float32 against the CPU backend, and the typed errors for a bad device
 * index and out-of-memory, and the runtime's counters (a steady-state forward allocates nothing,
 * waits once and copies nothing from pageable memory; cuBLASLt against cuBLAS; a device fault marks
 * the model unusable). Prints one line per check and exits non-zero when any fails.
 *   node dist/bench/gpu-check.js [--device cuda:0] [--part <part>]
 *   node dist/bench/gpu-check.js --list      the parts (bench/gpu-check.sh --dry-run checks its own against them)
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AutoModel, DeviceTensor, InvalidArgumentError, OutOfMemoryError, readSafetensors, Tensor, type ComputeDType } from '../lib/index.js';
import { loadAddon, packageRoot } from '../lib/native/binding.js';
import { runGpuKernelCases } from './gpu-kernel-cases.js';

// --part kernels | attention | errors | device-tensor | <fixture name>: bench/gpu-check.sh runs each part in its own process,
// so a GPU fault in one (a sticky CUDA error poisons its process) cannot hide the others' results.
const { values } = parseArgs({ options: { device: { type: 'string', default: 'cuda:0' }, part: { type: 'string' }, list: { type: 'boolean', default: false } } });
const device = values.device!;
const part = values.part;
const FIXTURES = ['text-mlm', 'text-classification', 'image-learned', 'image-fourier', 'image-conv', 'optical-flow', 'multimodal-autoencoding', 'multimodal-autoencoding-chunk'];
const PARTS = ['kernels', 'attention', ...FIXTURES, 'device-tensor', 'errors', 'runtime'];
if (values.list) {
  console.log(PARTS.join(' '));
  process.exit(0);
}
if (part !== undefined && !PARTS.includes(part)) {
  console.error(`--part ${part}: expected one of ${PARTS.join(', ')}`);
  process.exit(2);
}
const runs = (what: string) => part === undefined || part === what;
let failures = 0;
const report = (ok: boolean, what: string) => {
  if (!ok) failures++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
};

function relativeError(a: Tensor, b: Tensor): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.size; i++) {
    const d = a.get(i) - b.get(i);
    num += d * d;
    den += b.get(i) ** 2;
  }
  return Math.sqrt(num / den);
}

function argmaxRows(x: Tensor): number[] {
  const [rows, cols] = x.shape as [number, number];
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let c = 1; c < cols; c++) if (x.get(r * cols + c) > x.get(r * cols + best)) best = c;
    return best;
  });
}

const caps = loadAddon().capabilities().cuda;
// --device cpu rehearses the device-independent parts here (bench/gpu-check.sh --dry-run runs
// --part runtime so); everything else needs CUDA.
if (device !== 'cpu') {
  report(caps.available, `CUDA available: ${JSON.stringify(caps)}`);
  if (!caps.available) process.exit(1);
}

// Kernels against their CPU reference (sizes off the tile multiples, masked keys). Attention runs
// in both older implementations (the GEMM attention, float32's default, selected here in every
// precision with PERCEIVER_CUDA_ATTENTION=gemm, and the fused kernel; the half-precision default,
// the flash kernel, is in bench/gpu-kernel-cases.ts below), in float32
// against 1e-5 and in the other precisions against their parity tolerances; a small score budget
// forces the chunked paths (several key chunks with rescaling, several query chunks).
type KernelCase = { op: string; sizes: number[]; dtype?: ComputeDType; fused?: boolean; budgetMb?: number };
const KERNELS: KernelCase[] = [
  { op: 'layer_norm', sizes: [333, 1280] }, { op: 'layer_norm', sizes: [7, 261] }, { op: 'gelu', sizes: [257, 768, 1283] },
  { op: 'linear', sizes: [257, 768, 1280] }, { op: 'linear', sizes: [3, 322, 2] }, { op: 'linear', sizes: [257, 768, 1280], dtype: 'bfloat16' },
  { op: 'conv2d', sizes: [2, 3, 37, 64, 7, 2] }, { op: 'strided_copy', sizes: [2, 27, 48, 4] },
];
const ATTENTION_SHAPES = [[2, 8, 257, 2051, 32, 160], [2, 1, 70, 300, 261, 261], [1, 1, 33, 129, 1024, 1024], [1, 1, 1024, 2048, 512, 512], [3, 1, 70, 20000, 64, 96], [2, 8, 100, 9000, 32, 160]];
for (const sizes of ATTENTION_SHAPES) {
  for (const dtype of ['float32', 'tfloat32', 'float16', 'bfloat16'] as ComputeDType[]) KERNELS.push({ op: 'attention', sizes, dtype });
  KERNELS.push({ op: 'attention', sizes, fused: true });
}
KERNELS.push(
  { op: 'attention', sizes: [3, 1, 70, 20000, 64, 96], budgetMb: 1 }, // key chunks, entries = batch, masked
  { op: 'attention', sizes: [2, 8, 100, 9000, 32, 160], budgetMb: 1 }, // key and query chunks, entries = heads, masked
  { op: 'attention', sizes: [2, 8, 100, 9000, 32, 160], dtype: 'bfloat16', budgetMb: 1 },
  { op: 'attention', sizes: [3, 1, 300, 5000, 64, 96], budgetMb: 1 }, // query chunks
);
const KERNEL_TOLERANCE: Record<ComputeDType, number> = { float32: 1e-5, tfloat32: 5e-3, float16: 5e-3, bfloat16: 2e-2 };
for (const k of KERNELS.filter((c) => runs(c.op === 'attention' && !c.fused ? 'attention' : 'kernels'))) {
  const what = `kernel ${k.op} [${k.sizes.join(', ')}] ${k.dtype ?? 'float32'}${k.fused ? ' fused' : ''}${k.budgetMb ? ` budget ${k.budgetMb} MB` : ''}`;
  process.env.PERCEIVER_CUDA_ATTENTION = k.fused ? 'fused' : 'gemm';
  if (k.budgetMb) process.env.PERCEIVER_CUDA_SCORE_BUDGET_MB = String(k.budgetMb);
  else delete process.env.PERCEIVER_CUDA_SCORE_BUDGET_MB;
  try {
    const r = await loadAddon().kernelCheck({ op: k.op, sizes: k.sizes, iterations: 10, dtype: k.dtype });
    const tolerance = KERNEL_TOLERANCE[k.dtype ?? 'float32'];
    report(r.relativeError < tolerance, `${what}: rel ${r.relativeError.toExponential(2)} (< ${tolerance}), cpu ${r.cpuMs.toFixed(3)} ms, gpu ${r.gpuMs.toFixed(3)} ms`);
  } catch (error) {
    report(false, `${what}: ${(error as Error).message}`);
  }
}
delete process.env.PERCEIVER_CUDA_ATTENTION;
delete process.env.PERCEIVER_CUDA_SCORE_BUDGET_MB;
// The tensor-core attention, one-pass LayerNorm, epilogue and Fourier features (bench/gpu-kernel-cases.ts).
if (runs('kernels')) await runGpuKernelCases(report, 3);

// Parity of every fixture, every precision; CUDA bfloat16 also against the CPU backend's bfloat16
// (the oracle: the same rounding points, backend.h RoundsProductInputs) at 5e-3.
const BF16_ORACLE = 5e-3;
const TOLERANCE: Record<ComputeDType, number> = { float32: 1e-5, tfloat32: 1e-2, float16: 5e-2, bfloat16: 5e-2 };
for (const name of FIXTURES.filter(runs)) {
  const dir = join(packageRoot(), 'test', 'fixtures', name);
  const io = (await readSafetensors(join(dir, 'io.safetensors'))).tensors;
  const modalities = [...io.keys()].filter((k) => k.startsWith('input.')).map((k) => k.slice(6));
  const inputs = modalities.length ? Object.fromEntries(modalities.map((m) => [m, io.get(`input.${m}`)!])) : io.get('input')!;
  const pointKeys = [...io.keys()].filter((k) => k.startsWith('call.subsampled_output_points.'));
  const call = {
    inputs,
    attentionMask: io.get('call.attention_mask'),
    subsampledOutputPoints: pointKeys.length ? Object.fromEntries(pointKeys.map((k) => [k.split('.').pop()!, io.get(k)!])) : undefined,
  };
  const byName = (logits: unknown): Record<string, Tensor> => (logits instanceof Tensor ? { '': logits } : (logits as Record<string, Tensor>));
  const cpu = await AutoModel.fromPretrained(dir);
  const cpuLogits = byName((await cpu.forward(call)).logits);
  await cpu.dispose();
  const cpuBf16 = await AutoModel.fromPretrained(dir, { dtype: 'bfloat16' });
  const cpuBf16Logits = byName((await cpuBf16.forward(call)).logits);
  await cpuBf16.dispose();
  for (const dtype of ['float32', 'tfloat32', 'float16', 'bfloat16'] as ComputeDType[]) {
    try {
      const model = await AutoModel.fromPretrained(dir, { device, dtype });
      const ours = byName((await model.forward(call)).logits);
      await model.dispose();
      for (const key of Object.keys(cpuLogits)) {
        const expected = io.get(key ? `expected.logits.${key}` : 'expected.logits')!;
        const err = relativeError(ours[key]!, expected);
        report(err <= TOLERANCE[dtype], `parity ${name}${key ? '.' + key : ''} ${dtype}: ${err.toExponential(2)} <= ${TOLERANCE[dtype]}`);
        if (dtype === 'float32') {
          const vsCpu = relativeError(ours[key]!, cpuLogits[key]!);
          report(vsCpu <= 1e-5, `cuda float32 vs cpu ${name}${key ? '.' + key : ''}: ${vsCpu.toExponential(2)}`);
        } else if (expected.rank === 2) {
          report(argmaxRows(ours[key]!).join() === argmaxRows(expected).join(), `argmax ${name}${key ? '.' + key : ''} ${dtype}`);
        }
        if (dtype === 'bfloat16') {
          const vsOracle = relativeError(ours[key]!, cpuBf16Logits[key]!);
          report(vsOracle <= BF16_ORACLE, `cuda bfloat16 vs cpu bfloat16 ${name}${key ? '.' + key : ''}: ${vsOracle.toExponential(2)} <= ${BF16_ORACLE}`);
        }
      }
    } catch (error) {
      report(false, `parity ${name} ${dtype}: ${(error as Error).message}`);
    }
  }
}

// Device-resident tensors (float32): outputs left on the GPU equal the host outputs, an uploaded
// input gives the host input's result, a tensor outlives its model, and device memory comes back:
// after a warm-up cycle the backend's pool holds every block a cycle needs, so 100 more
// forward(outputs: 'device') / dispose cycles must take no more (a leak of text-mlm's outputs
// would take 16 MB), and disposing everything returns what the model took.
if (runs('device-tensor')) {
  const addon = loadAddon();
  const index = Number(/^cuda:(\d+)$/.exec(device)?.[1] ?? 0);
  const MiB = 2 ** 20;
  const freeBefore = addon.cudaMemoryInfo(index).free;
  for (const name of ['text-mlm', 'image-learned']) {
    try {
      const dir = join(packageRoot(), 'test', 'fixtures', name);
      const io = (await readSafetensors(join(dir, 'io.safetensors'))).tensors;
      const call = { inputs: io.get('input')!, attentionMask: io.get('call.attention_mask') };
      const model = await AutoModel.fromPretrained(dir, { device, dtype: 'float32' });
      const host = await model.forward(call);
      const same = (what: string, actual: Tensor, expected: Tensor) => {
        const err = relativeError(actual, expected);
        const bitwise = Buffer.from(actual.bytes()).equals(Buffer.from(expected.bytes()));
        report(err <= 1e-6, `device-tensor ${name}: ${what} (${bitwise ? 'bitwise' : `relative ${err.toExponential(2)}`})`);
      };
      const out = await model.forward({ ...call, outputs: 'device' });
      const logits = out.logits as DeviceTensor;
      report(logits instanceof DeviceTensor && logits.device === device, `device-tensor ${name}: logits are a DeviceTensor on ${logits.device}`);
      same('device logits = host logits', await logits.toHost(), host.logits as Tensor);
      same('device lastHiddenState = host lastHiddenState', await out.lastHiddenState.toHost(), host.lastHiddenState);
      logits.dispose();
      out.lastHiddenState.dispose();
      if (name === 'image-learned') {
        const uploaded = await model.upload(call.inputs);
        same('upload then toHost = the host tensor', await uploaded.toHost(), call.inputs);
        same('upload + forward = host forward', (await model.forward({ inputs: uploaded })).logits as Tensor, host.logits as Tensor);
        uploaded.dispose();
      }
      const cycle = async () => {
        const o = await model.forward({ ...call, outputs: 'device' });
        (o.logits as DeviceTensor).dispose();
        o.lastHiddenState.dispose();
      };
      await cycle();
      const start = addon.cudaMemoryInfo(index).free;
      for (let i = 0; i < 100; i++) await cycle();
      const end = addon.cudaMemoryInfo(index).free;
      const live = addon.deviceTensorStats().live;
      report(start - end < MiB && live === 0, `device-tensor ${name}: 100 cycles, free ${(start / MiB).toFixed(1)} -> ${(end / MiB).toFixed(1)} MiB, ${live} live tensors`);
      const kept = await model.forward({ ...call, outputs: 'device' });
      kept.lastHiddenState.dispose();
      await model.dispose();
      same('a tensor stays readable after model.dispose()', await (kept.logits as DeviceTensor).toHost(), host.logits as Tensor);
      (kept.logits as DeviceTensor).dispose();
    } catch (error) {
      report(false, `device-tensor ${name}: ${(error as Error).message}`);
    }
  }
  const freeAfter = addon.cudaMemoryInfo(index).free;
  report(
    freeBefore - freeAfter < 64 * MiB && addon.deviceTensorStats().live === 0,
    `device-tensor: every model and tensor disposed, free ${(freeBefore / MiB).toFixed(1)} -> ${(freeAfter / MiB).toFixed(1)} MiB`,
  );
}

// Typed errors: a bad device index, and out of memory with the model usable afterwards.
if (runs('errors')) {
const bad = await AutoModel.fromPretrained(join(packageRoot(), 'test', 'fixtures', 'text-mlm'), { device: `cuda:${caps.deviceCount}` }).catch((e: unknown) => e);
report(bad instanceof InvalidArgumentError, `cuda:${caps.deviceCount} is an InvalidArgumentError (${(bad as Error).message})`);
const fourier = await AutoModel.fromPretrained(join(packageRoot(), 'test', 'fixtures', 'image-fourier'), { device });
const oom = await fourier.forward({ inputs: new Tensor('float32', [64, 3, 2048, 2048], new Float32Array(64 * 3 * 2048 * 2048)) }).catch((e: unknown) => e);
report(oom instanceof OutOfMemoryError, `an oversized batch is an OutOfMemoryError (${(oom as Error)?.message?.slice(0, 120)})`);
const after = await fourier.forward({ inputs: new Tensor('float32', [2, 3, 8, 10], new Float32Array(480).fill(0.5)) }).catch((e: unknown) => e);
report(!(after instanceof Error), 'the model still runs after the out-of-memory error');
await fourier.dispose();
}

// The runtime on CUDA (test/runtime.test.ts runs the same on the CPU): after warm-up a forward
// allocates nothing (device, pinned or pool miss), waits for the device once, and copies nothing
// from or to pageable memory; cuBLASLt's products equal cuBLAS's; the tanh-GELU epilogue's
// parity is measured (it stays off unless PERCEIVER_CUBLASLT_GELU=tanh); an injected device
// fault marks the model unusable.
if (runs('runtime')) {
  const addon = loadAddon();
  process.env.PERCEIVER_COUNT_RUNTIME = '1'; // read when a model loads
  const dir = join(packageRoot(), 'test', 'fixtures', 'text-mlm');
  const io = (await readSafetensors(join(dir, 'io.safetensors'))).tensors;
  const call = { inputs: io.get('input')!, attentionMask: io.get('call.attention_mask') };
  for (const dtype of ['bfloat16', 'float32'] as ComputeDType[]) {
    try {
      const model = await AutoModel.fromPretrained(dir, { device, dtype });
      for (let i = 0; i < 3; i++) await model.forward(call);
      const before = addon.runtimeCounters();
      const calls = 4;
      let logits: Tensor | undefined;
      for (let i = 0; i < calls; i++) logits = (await model.forward(call)).logits as Tensor;
      const after = addon.runtimeCounters();
      const d = (f: (c: typeof after) => number) => f(after) - f(before);
      report(d((c) => c.allocations) === 0 && d((c) => c.internal.allocations) === 0, `runtime ${dtype}: no allocation in ${calls} warm forwards (interface ${d((c) => c.allocations)}, inside ${d((c) => c.internal.allocations)})`);
      const waits = device === 'cpu' ? 0 : calls; // the CPU backend never waits
      report(d((c) => c.internal.syncs) === waits && d((c) => c.syncs) === calls, `runtime ${dtype}: one device wait per forward (${d((c) => c.internal.syncs)} in ${calls}; ${d((c) => c.syncs)} Synchronize calls)`);
      report(d((c) => c.internal.pageableCopies) === 0, `runtime ${dtype}: no pageable copy (${d((c) => c.internal.pageableCopies)})`);
      report(d((c) => c.arena.replayedCalls) === calls, `runtime ${dtype}: every forward replayed its arena plan (peak ${after.arena.lastPeakBytes} B, bound ${after.arena.lastLiveBoundBytes} B)`);
      await model.dispose();
      process.env.PERCEIVER_NO_CUBLASLT = '1';
      const legacy = await AutoModel.fromPretrained(dir, { device, dtype });
      delete process.env.PERCEIVER_NO_CUBLASLT;
      const legacyLogits = (await legacy.forward(call)).logits as Tensor;
      await legacy.dispose();
      const err = relativeError(logits!, legacyLogits);
      const bar = dtype === 'float32' ? 1e-6 : 1e-3;
      report(err <= bar, `runtime ${dtype}: cuBLASLt products vs cuBLAS GemmEx: ${err.toExponential(2)} <= ${bar}`);
    } catch (error) {
      report(false, `runtime ${dtype}: ${(error as Error).message}`);
    }
  }
  // CUDA graphs (PERCEIVER_CUDA_GRAPHS=1): the third call of a shape is captured, later ones
  // replay it; the outputs must be the eager path's, bit for bit (the same kernels, addresses).
  try {
    const eager = await AutoModel.fromPretrained(dir, { device, dtype: 'bfloat16' });
    process.env.PERCEIVER_CUDA_GRAPHS = '1';
    const graphed = await AutoModel.fromPretrained(dir, { device, dtype: 'bfloat16' });
    delete process.env.PERCEIVER_CUDA_GRAPHS;
    const expected = (await eager.forward(call)).logits as Tensor;
    let same = 0;
    const rounds = 6;
    for (let i = 0; i < rounds; i++) {
      const got = (await graphed.forward(call)).logits as Tensor;
      if (Buffer.from(got.bytes()).equals(Buffer.from(expected.bytes()))) same++;
    }
    report(same === rounds, `runtime: CUDA graphs (captured at call 3, replayed after): ${same}/${rounds} calls equal the eager path bit for bit`);
    const time = async (model: typeof eager) => {
      const t0 = performance.now();
      for (let i = 0; i < 20; i++) await model.forward(call);
      return (performance.now() - t0) / 20;
    };
    console.log(`info runtime: text-mlm bf16 per forward, eager ${(await time(eager)).toFixed(3)} ms, CUDA graph ${(await time(graphed)).toFixed(3)} ms`);
    await eager.dispose();
    await graphed.dispose();
  } catch (error) {
    report(false, `runtime graphs: ${(error as Error).message}`);
  }
  try {
    process.env.PERCEIVER_CUBLASLT_GELU = 'tanh';
    const tanh = await AutoModel.fromPretrained(dir, { device, dtype: 'bfloat16' });
    delete process.env.PERCEIVER_CUBLASLT_GELU;
    const err = relativeError((await tanh.forward(call)).logits as Tensor, io.get('expected.logits')!);
    console.log(`info runtime: cuBLASLt tanh-GELU epilogue, bfloat16 parity ${err.toExponential(2)} (erf GELU kernel: see the text-mlm parity line)`);
    addon.injectDeviceFault();
    const first = await tanh.forward(call).then(() => undefined, (e: unknown) => e as Error);
    const later = await tanh.forward(call).then(() => undefined, (e: unknown) => e as Error);
    report(/unusable from now on/.test(first?.message ?? '') && /earlier call failed with a device fault/.test(later?.message ?? ''), `runtime: a device fault marks the model unusable (${later?.message.slice(0, 100)})`);
    await tanh.dispose();
  } catch (error) {
    report(false, `runtime gelu/fault: ${(error as Error).message}`);
  }
}

console.log(failures === 0 ? 'gpu-check: every check passed' : `gpu-check: ${failures} check(s) failed`);
process.exitCode = failures === 0 ? 0 : 1;
