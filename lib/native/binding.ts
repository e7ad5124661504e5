/**
 * Loads the native addon and gives it a typed face. The addon is found by node-gyp-build:
 * `PERCEIVER_IO_PREBUILD` (a path to a .node file) if set, else build/Release, else
 * prebuilds/<platform>-<arch>/. When nothing loads, the error says what was tried and what to do.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EngineWeight } from '../modeling/weights.js';
import {
  BackendUnavailableError,
  DisposedError,
  InvalidArgumentError,
  NativeError,
  NativeLoadError,
  OutOfMemoryError,
  PerceiverError,
  WeightMismatchError,
} from '../errors.js';

/** An output: its values on the host (`data`), or left in backend memory (`device`) when the call asked for `outputs: 'device'`. */
export interface NativeTensor {
  /** "" for a single output, else the modality. */
  name: string;
  shape: number[];
  data?: Float32Array;
  device?: NativeDeviceTensorHandle;
}

/** An input: host values (`data`), or a tensor already in this model's backend memory (`device`). */
export type NativeInput =
  | {
      /** "" for a single-modality model, else the modality. */
      name: string;
      shape: number[];
      data: Float32Array | BigInt64Array | Int32Array;
    }
  | { name: string; shape: number[]; device: NativeDeviceTensorHandle };

/** A float32 tensor in a model's backend memory (see native/src/napi/device_tensor.h). */
export interface NativeDeviceTensorHandle {
  /** The backend-to-host copy, on libuv's pool. */
  toHost(): Promise<Float32Array>;
  dispose(): void;
  readonly disposed: boolean;
  readonly shape: number[];
  /** 'cpu' or 'cuda:N'. */
  readonly device: string;
}

export interface NativeEncodeRequest {
  batch: number;
  inputs: NativeInput[];
  attentionMask?: Uint8Array;
  interpolatePosEncoding?: boolean;
  seed?: number;
  outputHiddenStates?: boolean;
  outputAttentions?: boolean;
  outputs?: 'host' | 'device';
}

export interface NativeDecodeRequest {
  subsampledOutputPoints?: { name: string; indices: BigInt64Array | Int32Array }[];
  outputAttentions?: boolean;
  outputs?: 'host' | 'device';
}

export interface NativeEncodeOutputs {
  lastHiddenState: NativeTensor;
  hiddenStates?: NativeTensor[];
  attentions?: NativeTensor[];
  crossAttentions?: NativeTensor[];
}

export interface NativeDecodeOutputs {
  logits: NativeTensor[];
  crossAttentions?: NativeTensor[];
}

export interface NativeEncodingHandle {
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeModelHandle {
  /** Builds the backend and copies (CPU: packs) every weight into engine-owned memory, off the main thread; once. */
  load(): Promise<void>;
  forward(request: NativeEncodeRequest & NativeDecodeRequest): Promise<NativeEncodeOutputs & NativeDecodeOutputs>;
  encode(request: NativeEncodeRequest): Promise<NativeEncodeOutputs & { encoding: NativeEncodingHandle }>;
  decode(encoding: NativeEncodingHandle, request: NativeDecodeRequest): Promise<NativeDecodeOutputs>;
  /** Copies float32 host values into this model's backend memory. */
  upload(tensor: { shape: number[]; data: Float32Array }): Promise<NativeDeviceTensorHandle>;
  dispose(): void;
  readonly inFlight: number;
  readonly disposed: boolean;
}

export interface BackendCapability {
  compiled: boolean;
  available: boolean;
  reason?: string;
  [key: string]: unknown;
}

export interface NativeCapabilities {
  cpu: BackendCapability & {
    /** The micro-kernels the products run, chosen once from CPUID: "avx512", "avx512-bf16", "avx2" or "scalar". */
    gemm: CpuIsa;
    threads: number;
    dtypes: string[];
  };
  cuda: BackendCapability & {
    deviceCount: number;
    devices: string[];
    dtypes: string[];
    cublas?: string;
    /** The cuBLASLt library loaded for the products, or why it was not (products then run through cuBLAS). */
    cublasLt?: string;
    /** The CUDA runtime linked in, e.g. "13.0" (CUDA builds). */
    runtimeVersion?: string;
    /** The newest CUDA version the installed driver supports, e.g. "12.4" (when a driver is found). */
    driverVersion?: string;
  };
}

export type CpuIsa = 'scalar' | 'avx2' | 'avx512' | 'avx512-bf16';

export interface CpuKernelRequest {
  op: 'gemm_packed' | 'gemm' | 'layer_norm' | 'gelu' | 'exp' | 'softmax' | 'add' | 'fma_peak' | 'flash_attention';
  /** Kernel set (default: the one this CPU runs); one the CPU lacks is rejected. */
  isa?: CpuIsa;
  m?: number;
  n?: number;
  k?: number;
  /** Row strides (0 or absent: tight). */
  lda?: number;
  ldb?: number;
  ldc?: number;
  /** gemm_packed: epilogue and weight type. */
  bias?: boolean;
  gelu?: boolean;
  residual?: 'none' | 'separate' | 'alias';
  dtype?: 'float32' | 'bfloat16' | 'bfloat16-bits';
  /** gemm: B is [n, k] (true, the default) or [k, n]; C = alpha A op(B) + beta C. */
  transposed?: boolean;
  alpha?: number;
  beta?: 0 | 1;
  /** layer_norm: also write x + residual. */
  sumOut?: boolean;
  /** layer_norm: the output overwrites x, and x + residual (sumOut) overwrites the residual. */
  inPlace?: boolean;
  /** 1 or 2; fma_peak also takes up to the engine's pool size (capabilities().cpu.threads). */
  threads?: number;
  /** Products: also run on the other thread count and compare bits (default true; false saves a copy of C). */
  compareThreads?: boolean;
  seed?: number;
  /** Timed runs after the check (0: none). */
  iterations?: number;
  /**
   * flash_attention: the CUDA tensor-core attention's blocked algorithm emulated with its own plan
   * (m queries, n keys, query/key width k, value width dv), against softmax attention in double.
   */
  dv?: number;
  batch?: number;
  heads?: number;
  /** Key-range splits (0 or absent: the plan's choice for a GPU of `multiprocessors` SMs, default 132). */
  splits?: number;
  multiprocessors?: number;
  /** Key padding: none, every 5th key of item 1 masked, or per-item lengths. */
  keys?: 'none' | 'mask' | 'lengths';
  /** What operands and probabilities are rounded to, as the tensor cores take them. */
  rounding?: 'none' | 'bfloat16' | 'float16';
}

export interface CpuKernelResult {
  op: string;
  isa: CpuIsa;
  outputs: number;
  /** Outputs compared with the reference (products of many rows check a sample of rows). */
  checked: number;
  maxAbsError: number;
  /** Normwise: ||got - want|| / ||want||. */
  relativeError: number;
  /** Largest |got - want| / |want| over the compared outputs. */
  maxRelativeError: number;
  referenceMax: number;
  /** Writes outside C's window (products), exp overflows that did not saturate, inexact softmax maxima. */
  outsideWrites: number;
  /** Products: 1 and 2 threads gave bitwise identical results. */
  threadsAgree: boolean;
  /** Products: a hash of the output's bits (FNV-1a, hex), to compare kernel sets. */
  outputHash: string;
  /** Timing (iterations > 0), wall clock: best and median run, and the rate of the best. */
  bestMs: number;
  medianMs: number;
  gflops: number;
  /**
   * The best run in CPU time of the calling thread, and its rate: on a shared machine this leaves
   * out waiting for a core, but it counts only the calling thread (right for threads: 1).
   */
  bestThreadCpuMs: number;
  gflopsThreadCpu: number;
  /** flash_attention: the key-range splits the plan made. */
  splits?: number;
}

/**
 * One CUDA kernel against its CPU reference (kernelCheck). sizes by op: layer_norm [rows, dim];
 * bias_gelu [rows, cols]; gelu / linear [rows, in, out]; attention / flash_attention [batch, heads,
 * nq, nk, dqk, dv]; fourier_features [h, w, bands(, every nth point)]; conv2d, strided_copy as
 * src/napi/kernel_check.cc says.
 */
export interface GpuKernelRequest {
  op: string;
  sizes: number[];
  iterations?: number;
  /** The CUDA backend's precision (ops that go through the backend). */
  dtype?: 'float32' | 'tfloat32' | 'float16' | 'bfloat16';
  /** flash_attention: the tensor cores' operand type (default bfloat16). */
  operands?: 'float16' | 'bfloat16';
  /** flash_attention: key-range splits (0 or absent: the plan's choice). */
  splits?: number;
  /** attention, flash_attention: key padding (default mask: every 5th key of item 1). */
  keys?: 'none' | 'mask' | 'lengths';
  /** layer_norm, bias_gelu: the GPU side's output type (default float32). */
  output?: 'float32' | 'float16' | 'bfloat16';
  /** layer_norm, bias_gelu: a residual joins. */
  residual?: boolean;
}

interface RuntimeCounts {
  allocations: number;
  syncs: number;
  pageableCopies: number;
}

export interface RuntimeCounters {
  allocations: number;
  syncs: number;
  hostCopies: number;
  runs: number;
  internal: RuntimeCounts;
  arena: {
    recordedCalls: number;
    replayedCalls: number;
    blocks: number;
    blockBytes: number;
    lastPeakBytes: number;
    lastLiveBoundBytes: number;
  };
}

interface NativeAddon {
  NativeModel: new (spec: object, weights: Record<string, EngineWeight>, options: { device: string; deviceIndex?: number; dtype?: string }) => NativeModelHandle;
  NativeDeviceTensor: abstract new () => NativeDeviceTensorHandle;
  /** Device-tensor buffers alive in this process (held by undisposed tensors or copies in flight). */
  deviceTensorStats(): { live: number; bytes: number };
  capabilities(): NativeCapabilities;
  /**
   * The runtime's counters since the process started (native/src/napi/runtime_check.cc): what
   * backends counted by PERCEIVER_COUNT_RUNTIME=1 (set when the model loads) did through the
   * interface and inside, and every arena's plans. For test/runtime.test.ts and the GPU check.
   */
  runtimeCounters(): RuntimeCounters;
  /** The next op of a counted backend throws a device fault, as a sticky CUDA error would (tests). */
  injectDeviceFault(): void;
  /** The arena planner on given tensor sizes and lifetimes [first, last] (events, inclusive). */
  planArena(request: { bytes: number[]; first: number[]; last: number[]; alignment?: number }): {
    offsets: number[];
    peakBytes: number;
    liveBoundBytes: number;
  };
  /**
   * One fused op of the CPU backend (linear: sizes [rows, in, out, period]; layer_norm: [rows, dim];
   * attention: [batch, heads, nq, nk, dqk, dv]) on random inputs in the graph's layouts, against a
   * double-precision reference. For test/engine-ops.test.ts.
   */
  engineOpCheck(request: {
    op: 'linear' | 'layer_norm' | 'attention';
    sizes: number[];
    gelu?: boolean;
    residual?: boolean;
    shared?: boolean;
    fused?: boolean;
    probs?: boolean;
    padding?: 'none' | 'lengths' | 'mask';
    seed?: number;
    dtype?: 'float32' | 'bfloat16';
  }): Promise<{ relativeError: number; maxAbsError: number; outputs: number }>;
  /**
   * Checks (and optionally times) one CPU kernel of native/src/backend/cpu/kernels on a chosen
   * instruction set against a double-precision reference, with random inputs from `seed`. For
   * tests and bench/cpu_gemm.ts; op "fma_peak" only times (threads: 1 up to the engine's pool size).
   */
  cpuKernelCheck(request: CpuKernelRequest): Promise<CpuKernelResult>;
  /** Free and total bytes of a CUDA device (zeros without CUDA). */
  cudaMemoryInfo(device: number): { free: number; total: number };
  /** Runs one op on the CPU (reference) and CUDA backends with the same random inputs (needs a GPU). */
  kernelCheck(request: GpuKernelRequest): Promise<{
    op: string;
    outputs: number;
    maxAbsError: number;
    relativeError: number;
    cpuMs: number;
    gpuMs: number;
  }>;
}

/** The package root: the nearest folder above this file whose package.json is perceiver-io's. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if (JSON.parse(readFileSync(manifest, 'utf8')).name === 'perceiver-io') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new NativeLoadError('cannot find the perceiver-io package root above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

let cached: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const tried: string[] = [];
  const override = process.env.PERCEIVER_IO_PREBUILD;
  try {
    if (override) {
      tried.push(override);
      cached = require(override) as NativeAddon;
    } else {
      tried.push(join(root, 'build', 'Release'), join(root, 'prebuilds', `${process.platform}-${process.arch}`));
      const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeAddon;
      cached = nodeGypBuild(root);
    }
    return cached;
  } catch (error) {
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new NativeLoadError(
      `perceiver-io could not load its native addon for ${process.platform}-${process.arch} (Node ${process.version}, N-API ${process.versions.napi}).\n` +
        `  Looked in: ${tried.join(', ')}\n` +
        `  Reason: ${reason}\n` +
        `  Prebuilt binaries ship for the platforms the README lists under "Platforms"; elsewhere the addon is built on install.\n` +
        `  To build it from source: install a C++17 compiler, make and python3, then run \`npm rebuild perceiver-io\` (it says what else is missing).\n` +
        `  To use a specific binary: set PERCEIVER_IO_PREBUILD=/path/to/perceiver_io.node. \`npx perceiver-io doctor\` reports what this machine has.`,
      { cause: error },
    );
  }
}

/**
 * What the addon sets on the errors it throws (native/src/napi/js_errors.cc): a `code`, and for the
 * caller's mistakes what was wrong as data. `argument` names the weight of a weight mismatch and
 * the disposed object of a use after dispose; `expected` and `actual` are absent on those codes
 * that are not about an argument.
 */
export interface NativeErrorFields {
  code?: string;
  argument?: string;
  expected?: string;
  actual?: string;
  message: string;
}

/** The typed error of each native code, built from the error's fields. */
const typedErrorOf: Record<string, (e: NativeErrorFields) => PerceiverError> = {
  ERR_PERCEIVER_INVALID_ARGUMENT: (e) => new InvalidArgumentError(e.argument ?? '', e.expected ?? '', e.actual ?? ''),
  ERR_PERCEIVER_WEIGHT_MISMATCH: (e) => WeightMismatchError.expected(e.argument ?? '', e.expected ?? '', e.actual ?? ''),
  ERR_PERCEIVER_OUT_OF_MEMORY: (e) => new OutOfMemoryError(e.message),
  ERR_PERCEIVER_BACKEND_UNAVAILABLE: (e) => new BackendUnavailableError(e.message),
  ERR_PERCEIVER_DISPOSED: (e) => new DisposedError(e.argument ?? ''),
};

/** Turns an error thrown by the addon (which carries a `code`) into the matching typed error. */
export function fromNativeError(error: unknown): Error {
  if (!(error instanceof Error) || error instanceof PerceiverError) return error as Error;
  const fields = error as Error & NativeErrorFields;
  const typed = typeof fields.code === 'string' && Object.hasOwn(typedErrorOf, fields.code) ? typedErrorOf[fields.code]! : undefined;
  return typed ? typed(fields) : new NativeError(error.message, { cause: error });
}
