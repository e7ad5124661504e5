/**
 * The GPU kernel checks of the tensor-core attention, the one-pass LayerNorm, the product epilogue
 * and the Fourier features, each against its CPU reference (kernelCheck): one list, run by
 * bench/gpu-check.ts (--part kernels) on the GPU machine and by test/cuda.test.ts wherever a GPU
 * is usable. Shapes: the models' head widths (32 / 160, 32 / 96, 64, 128, and single heads of 261,
 * 322, 512, 1024, padded to the tensor-core tiles), sizes off every tile multiple, masked keys and
 * per-item key lengths, forced key-range splits on short ranges, and the 50,176-pixel and
 * 182,528-pixel (flow) key ranges whose few query tiles make the plan split them.
 *
 * Tolerances are normwise relative errors against the float32 CPU reference. Half-precision
 * attention rounds q, k, v and the probabilities: the CPU emulation of the same algorithm
 * (cpuKernelCheck op flash_attention, rounding bfloat16 / float16, test/cpu-kernels.test.ts) puts
 * that rounding alone at 3.4e-3 (bfloat16) and 4.2e-4 (float16) on the language shape, so the bars
 * are 1e-2 and 2e-3. A 16-bit output is one rounding of a float32 value: 4e-3 (bfloat16), 1e-3
 * (float16).
 */
import type { GpuKernelRequest } from '../lib/native/binding.js';
import { loadAddon } from '../lib/native/binding.js';

export interface GpuKernelCase {
  request: GpuKernelRequest;
  tolerance: number;
}

const FLASH_TOLERANCE = { bfloat16: 1e-2, float16: 2e-3 } as const;
const OUTPUT_TOLERANCE = { float32: 1e-5, bfloat16: 4e-3, float16: 1e-3 } as const;

// [batch, heads, nq, nk, dqk, dv], key padding, forced splits.
const FLASH_SHAPES: [number[], GpuKernelRequest['keys'], number?][] = [
  [[2, 8, 257, 2051, 32, 160], 'mask'], // language: 8 heads of 32 / 160
  [[2, 8, 257, 2051, 32, 160], 'lengths'],
  [[2, 8, 515, 256, 32, 96], 'none'], // language decoder: 32 / 96
  [[2, 4, 100, 1000, 64, 64], 'lengths'],
  [[2, 8, 513, 512, 128, 128], 'none'], // vision-learned self-attention
  [[2, 1, 70, 300, 261, 261], 'mask'], // single wide heads, odd widths
  [[2, 1, 70, 300, 261, 261], 'lengths', 3],
  [[1, 1, 100, 5000, 322, 322], 'none'],
  [[2, 1, 37, 5000, 322, 322], 'lengths', 5],
  [[1, 1, 1024, 2048, 512, 512], 'none'],
  [[2, 1, 33, 129, 1024, 1024], 'mask'],
  [[2, 8, 100, 9000, 32, 160], 'lengths', 7], // forced splits with empty splits for the shorter item
  [[1, 1, 100, 50176, 261, 261], 'none'], // 224 x 224 pixels: split by the plan
  [[1, 1, 64, 50176, 1024, 1024], 'none'],
  [[1, 1, 64, 182528, 322, 322], 'none'], // 368 x 496 flow pixels
  [[2, 1, 16, 50176, 322, 322], 'lengths'], // long ranges, one item's cut short
];

export const GPU_KERNEL_CASES: GpuKernelCase[] = [
  ...FLASH_SHAPES.map(([sizes, keys, splits]): GpuKernelCase => ({
    request: { op: 'flash_attention', sizes, keys, splits, operands: 'bfloat16' },
    tolerance: FLASH_TOLERANCE.bfloat16,
  })),
  ...FLASH_SHAPES.filter((_, i) => i % 3 === 0).map(([sizes, keys, splits]): GpuKernelCase => ({
    request: { op: 'flash_attention', sizes, keys, splits, operands: 'float16' },
    tolerance: FLASH_TOLERANCE.float16,
  })),
  // Through the backend's own dispatch (a half-precision model picks the tensor-core kernel).
  { request: { op: 'attention', sizes: [2, 8, 257, 2051, 32, 160], dtype: 'bfloat16', keys: 'lengths' }, tolerance: FLASH_TOLERANCE.bfloat16 },
  { request: { op: 'attention', sizes: [1, 1, 64, 182528, 322, 322], dtype: 'float16', keys: 'none' }, tolerance: FLASH_TOLERANCE.float16 },
  // One-pass LayerNorm: 16-byte and scalar rows, fused residual, 16-bit outputs, the wide-row kernel.
  { request: { op: 'layer_norm', sizes: [333, 1280], residual: true }, tolerance: OUTPUT_TOLERANCE.float32 },
  { request: { op: 'layer_norm', sizes: [1000, 768] }, tolerance: OUTPUT_TOLERANCE.float32 },
  { request: { op: 'layer_norm', sizes: [7, 261], residual: true, output: 'bfloat16' }, tolerance: OUTPUT_TOLERANCE.bfloat16 },
  { request: { op: 'layer_norm', sizes: [64, 322], output: 'float16' }, tolerance: OUTPUT_TOLERANCE.float16 },
  { request: { op: 'layer_norm', sizes: [5, 4100], residual: true, output: 'bfloat16' }, tolerance: OUTPUT_TOLERANCE.bfloat16 },
  // The erf-GELU epilogue.
  { request: { op: 'bias_gelu', sizes: [257, 1283] }, tolerance: OUTPUT_TOLERANCE.float32 },
  { request: { op: 'bias_gelu', sizes: [257, 1283], residual: true, output: 'bfloat16' }, tolerance: OUTPUT_TOLERANCE.bfloat16 },
  { request: { op: 'bias_gelu', sizes: [31, 322], residual: true, output: 'float16' }, tolerance: OUTPUT_TOLERANCE.float16 },
  // Fourier features: the 224 x 224 image grid, the 368 x 496 flow grid, and decoder points.
  { request: { op: 'fourier_features', sizes: [224, 224, 64] }, tolerance: 1e-6 },
  { request: { op: 'fourier_features', sizes: [368, 496, 64] }, tolerance: 1e-6 },
  { request: { op: 'fourier_features', sizes: [368, 496, 64, 7] }, tolerance: 1e-6 },
];

export function describeCase(c: GpuKernelCase): string {
  const { op, sizes, ...options } = c.request;
  return `kernel ${op} [${sizes.join(', ')}] ${JSON.stringify(options)}`;
}

/** Runs every case; report(ok, line) is called once per case (a failure to run is a failed case). */
export async function runGpuKernelCases(report: (ok: boolean, what: string) => void, iterations = 10): Promise<void> {
  for (const c of GPU_KERNEL_CASES) {
    const what = describeCase(c);
    try {
      const r = await loadAddon().kernelCheck({ ...c.request, iterations });
      report(r.relativeError < c.tolerance, `${what}: rel ${r.relativeError.toExponential(2)} (< ${c.tolerance}), max abs ${r.maxAbsError.toExponential(2)}, cpu ${r.cpuMs.toFixed(3)} ms, gpu ${r.gpuMs.toFixed(3)} ms`);
    } catch (error) {
      report(false, `${what}: ${(error as Error).message}`);
    }
  }
}
