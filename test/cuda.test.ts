/**
 * The CUDA backend. Where the machine has no usable GPU (this machine, CI), the backend must be
 * compiled in whenever nvcc was present at build time and every GPU entry point must fail with a
 * BackendUnavailableError that says what to install. Where it has one (bench/gpu-check.sh runs
 * this file with PERCEIVER_TEST_DEVICE=cuda), each kernel is validated against its CPU reference
 * on random inputs (sizes off the tile multiples, masked keys), and out-of-memory and bad device
 * indices are typed errors that leave the process and the model working.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { AutoModel, BackendUnavailableError, capabilities, InvalidArgumentError, OutOfMemoryError, Tensor } from '../lib/index.js';
import { loadAddon } from '../lib/native/binding.js';
import { fixtureDir, REPO, TEST_DEVICE } from './helpers/fixtures.js';
import { describeCase, GPU_KERNEL_CASES, runGpuKernelCases } from '../bench/gpu-kernel-cases.js';

const cudaBuilt = execFileSync(process.execPath, [join(REPO, 'native', 'scripts', 'build-config.cjs'), 'cuda-enabled'], { encoding: 'utf8' }) === '1';
const caps = capabilities().cuda;

t.test('capabilities().cuda says whether CUDA is compiled in and usable', async (t) => {
  t.equal(caps.compiled, cudaBuilt, `compiled in exactly when nvcc was found at build time (${cudaBuilt})`);
  t.same(caps.dtypes.length > 0 || !caps.compiled, true);
  if (caps.available) {
    t.ok(caps.deviceCount >= 1, 'a usable CUDA backend has a device');
    t.match(caps.cublas, /cublas/, 'and a loaded cuBLAS');
  } else {
    t.match(caps.reason, /driver|device|cuBLAS|nvcc/, `an unavailable backend says why: ${caps.reason}`);
  }
});

if (!caps.available) {
  t.test('without a usable GPU every CUDA entry point is a typed, explained error', async (t) => {
    const error = await AutoModel.fromPretrained(fixtureDir('text-mlm'), { device: 'cuda', dtype: 'bfloat16' }).catch((e: unknown) => e);
    t.type(error, BackendUnavailableError);
    t.match((error as Error).message, caps.reason!, 'the error carries the reason');
    await t.rejects(loadAddon().kernelCheck({ op: 'gelu', sizes: [1000] }), { code: 'ERR_PERCEIVER_BACKEND_UNAVAILABLE' });
    // The GPU run's kernel cases (bench/gpu-kernel-cases.ts) are well-formed requests: each is
    // refused only for want of a GPU, never for its arguments.
    for (const c of GPU_KERNEL_CASES) {
      await t.rejects(async () => loadAddon().kernelCheck({ ...c.request, iterations: 1 }), { code: 'ERR_PERCEIVER_BACKEND_UNAVAILABLE' }, `${describeCase(c)}: parses`);
    }
    await t.rejects(async () => loadAddon().kernelCheck({ op: 'flash_attention', sizes: [1, 1, 4, 4, 32, 96], splits: 1.5 }), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, 'a fractional split count is refused first');
    await t.rejects(async () => loadAddon().kernelCheck({ op: 'layer_norm', sizes: [4, 4], output: 'int8' as 'float32' }), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, 'an unknown output type is refused first');
    // A spec handed straight to the engine meets the same answer natively.
    t.throws(() => new (loadAddon().NativeModel)({}, {}, { device: 'cuda' }), { code: /ERR_PERCEIVER_(BACKEND_UNAVAILABLE|INVALID_ARGUMENT)/ });
  });
} else {
  const CASES: [string, number[]][] = [
    ['layer_norm', [333, 1280]],
    ['layer_norm', [7, 261]],
    ['gelu', [100_003]],
    ['linear', [257, 768, 1280]],
    ['linear', [3, 322, 2]],
    ['attention', [2, 8, 257, 2051, 32, 160]], // the language model's head widths, odd lengths, masked keys
    ['attention', [2, 1, 70, 300, 261, 261]], // a single wide head (vision-fourier)
    ['attention', [1, 1, 33, 129, 1024, 1024]], // the widest head
    ['conv2d', [2, 3, 37, 64, 7, 2]],
    ['strided_copy', [2, 27, 48, 4]],
  ];
  t.test('every kernel matches its CPU reference on random inputs, then is timed', async (t) => {
    for (const [op, sizes] of CASES) {
      const r = await loadAddon().kernelCheck({ op, sizes, iterations: 5 });
      t.ok(r.relativeError < 1e-5, `${op} [${sizes.join(', ')}]: relative error ${r.relativeError.toExponential(2)} (max abs ${r.maxAbsError.toExponential(2)}); cpu ${r.cpuMs.toFixed(3)} ms, gpu ${r.gpuMs.toFixed(3)} ms`);
    }
  });

  t.test('the tensor-core attention, one-pass LayerNorm, epilogue and Fourier features match their CPU references', async (t) => {
    await runGpuKernelCases((ok, what) => t.ok(ok, what), 2);
  });

  t.test('PERCEIVER_CUDA_ATTENTION is read once at load: an unknown choice is a typed error naming it', async (t) => {
    const before = process.env.PERCEIVER_CUDA_ATTENTION;
    process.env.PERCEIVER_CUDA_ATTENTION = 'causal';
    try {
      await t.rejects(AutoModel.fromPretrained(fixtureDir('text-mlm'), { device: 'cuda', dtype: 'bfloat16' }), {
        code: 'ERR_PERCEIVER_INVALID_ARGUMENT',
        argument: 'PERCEIVER_CUDA_ATTENTION',
        actual: '"causal"',
      });
    } finally {
      if (before === undefined) delete process.env.PERCEIVER_CUDA_ATTENTION;
      else process.env.PERCEIVER_CUDA_ATTENTION = before;
    }
  });

  t.test('bad device index and GPU out of memory are typed errors; the model stays usable', async (t) => {
    await t.rejects(AutoModel.fromPretrained(fixtureDir('text-mlm'), { device: `cuda:${caps.deviceCount}` }), InvalidArgumentError);
    const model = await AutoModel.fromPretrained(fixtureDir('image-fourier'), { device: TEST_DEVICE === 'cpu' ? 'cuda' : TEST_DEVICE });
    t.teardown(() => model.dispose());
    const huge = new Tensor('float32', [1, 3, 2048, 2048], new Float32Array(3 * 2048 * 2048)); // 4M positions x 16 latents: fine
    const oom = await model.forward({ inputs: new Tensor('float32', [64, 3, 2048, 2048], new Float32Array(64 * 3 * 2048 * 2048)) }).then(() => null, (e: unknown) => e);
    t.type(oom, OutOfMemoryError, 'a batch too large for the device is an OutOfMemoryError');
    const ok = await model.forward({ inputs: huge });
    t.same((ok.logits as Tensor).shape, [1, 6], 'the model still runs afterwards');
  });
}
