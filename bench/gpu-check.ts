/**
 * The GPU half of bench/gpu-check.sh, in plain JavaScript once compiled (the GPU machine has no
 * npm registry, so no tap there): kernel checks against the CPU reference, parity of every fixture
 * in every precision, CUDA float32 against the CPU backend, and the typed errors for a bad device
 * index and out-of-memory. Prints one line per check and exits non-zero when any fails.
 *   node dist/bench/gpu-check.js [--device cuda:0]
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AutoModel, InvalidArgumentError, OutOfMemoryError, readSafetensors, Tensor, type ComputeDType } from '../lib/index.js';
import { loadAddon, packageRoot } from '../lib/native/binding.js';

const { values } = parseArgs({ options: { device: { type: 'string', default: 'cuda:0' } } });
const device = values.device!;
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
report(caps.available, `CUDA available: ${JSON.stringify(caps)}`);
if (!caps.available) process.exit(1);

// Kernels against their CPU reference (sizes off the tile multiples, masked keys).
const KERNELS: [string, number[]][] = [
  ['layer_norm', [333, 1280]], ['layer_norm', [7, 261]], ['gelu', [100_003]], ['linear', [257, 768, 1280]], ['linear', [3, 322, 2]],
  ['attention', [2, 8, 257, 2051, 32, 160]], ['attention', [2, 1, 70, 300, 261, 261]], ['attention', [1, 1, 33, 129, 1024, 1024]],
  ['attention', [1, 1, 4096, 2048, 512, 512]], ['conv2d', [2, 3, 37, 64, 7, 2]], ['strided_copy', [2, 27, 48, 4]],
];
for (const [op, sizes] of KERNELS) {
  try {
    const r = await loadAddon().kernelCheck({ op, sizes, iterations: 10 });
    report(r.relativeError < 1e-5, `kernel ${op} [${sizes.join(', ')}]: rel ${r.relativeError.toExponential(2)}, cpu ${r.cpuMs.toFixed(3)} ms, gpu ${r.gpuMs.toFixed(3)} ms`);
  } catch (error) {
    report(false, `kernel ${op} [${sizes.join(', ')}]: ${(error as Error).message}`);
  }
}

// Parity of every fixture, every precision.
const FIXTURES = ['text-mlm', 'text-classification', 'image-learned', 'image-fourier', 'image-conv', 'optical-flow', 'multimodal-autoencoding', 'multimodal-autoencoding-chunk'];
const TOLERANCE: Record<ComputeDType, number> = { float32: 1e-5, tfloat32: 1e-2, float16: 5e-2, bfloat16: 5e-2 };
for (const name of FIXTURES) {
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
      }
    } catch (error) {
      report(false, `parity ${name} ${dtype}: ${(error as Error).message}`);
    }
  }
}

// Typed errors: a bad device index, and out of memory with the model usable afterwards.
const bad = await AutoModel.fromPretrained(join(packageRoot(), 'test', 'fixtures', 'text-mlm'), { device: `cuda:${caps.deviceCount}` }).catch((e: unknown) => e);
report(bad instanceof InvalidArgumentError, `cuda:${caps.deviceCount} is an InvalidArgumentError (${(bad as Error).message})`);
const fourier = await AutoModel.fromPretrained(join(packageRoot(), 'test', 'fixtures', 'image-fourier'), { device });
const oom = await fourier.forward({ inputs: new Tensor('float32', [64, 3, 2048, 2048], new Float32Array(64 * 3 * 2048 * 2048)) }).catch((e: unknown) => e);
report(oom instanceof OutOfMemoryError, `an oversized batch is an OutOfMemoryError (${(oom as Error)?.message?.slice(0, 120)})`);
const after = await fourier.forward({ inputs: new Tensor('float32', [2, 3, 8, 10], new Float32Array(160).fill(0.5)) }).catch((e: unknown) => e);
report(!(after instanceof Error), 'the model still runs after the out-of-memory error');
await fourier.dispose();

console.log(failures === 0 ? 'gpu-check: every check passed' : `gpu-check: ${failures} check(s) failed`);
process.exitCode = failures === 0 ? 0 : 1;
