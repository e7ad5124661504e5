/**
 * The checkpoint's tensors as the modules consume them. Each module asks for its weights by the
 * name transformers gives them and the shape it expects; a missing or misshapen weight is a
 * WeightMismatchError naming it. What the engine receives is name -> Float32Array.
 */
import { InvalidArgumentError, WeightMismatchError } from '../errors.js';
import { SafetensorsRange } from '../io/safetensors.js';
import { allocate, Tensor } from '../tensor.js';

/** A weight the engine reads from an open checkpoint file itself (native/src/napi/spec_reader.cc reads this shape). */
export interface EngineFileRange {
  fd: number;
  /** Byte offset of the first value in the file. */
  offset: number;
  dtype: 'float32' | 'float16' | 'bfloat16' | 'float64';
  /** Number of values. */
  length: number;
}

/** What the engine receives for one weight: float32 values in memory, or where to read them. */
export type EngineWeight = Float32Array | EngineFileRange;

export class WeightStore {
  protected readonly tensors: Map<string, Tensor | SafetensorsRange>;
  private readonly used = new Map<string, EngineWeight>();
  private readonly ignored = new Set<string>();

  /**
   * Tensors in memory, or SafetensorsRanges of an open file (openCheckpointWeights): those are
   * read by the engine while it loads, one at a time, so the file must stay open until the load settles.
   */
  constructor(tensors: Map<string, Tensor | SafetensorsRange>) {
    if (!(tensors instanceof Map)) throw new InvalidArgumentError('tensors', 'a Map of checkpoint names to Tensors', tensors);
    for (const [name, tensor] of tensors) {
      if (typeof name !== 'string') throw new InvalidArgumentError('tensors', 'a Map keyed by checkpoint names (strings)', `a key ${typeof name}`);
      if (!(tensor instanceof Tensor) && !(tensor instanceof SafetensorsRange)) {
        throw new InvalidArgumentError(`tensors.get(${JSON.stringify(name)})`, 'a Tensor', tensor);
      }
    }
    this.tensors = tensors;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Claims `name`, checking it has exactly `shape`; returns the name for the engine's spec. */
  take(name: string, shape: readonly number[]): string {
    checkTake(name, shape);
    const tensor = this.tensors.get(name);
    if (!tensor) throw new WeightMismatchError(name, `missing from the checkpoint (expected shape [${shape.join(', ')}])`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new WeightMismatchError(name, `has shape [${tensor.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    if (!['float32', 'float16', 'bfloat16', 'float64'].includes(tensor.dtype)) {
      throw new WeightMismatchError(name, `has dtype ${tensor.dtype}, expected a floating-point dtype`);
    }
    if (this.used.has(name)) return name;
    if (tensor instanceof SafetensorsRange) {
      // Read, widened to float32 and packed by the engine, one weight at a time.
      this.used.set(name, { fd: tensor.fd, offset: tensor.offset, dtype: tensor.dtype as EngineFileRange['dtype'], length: tensor.length });
      return name;
    }
    if (tensor.data.length !== tensor.shape.reduce((a, b) => a * b, 1)) {
      throw new WeightMismatchError(name, 'its data was detached or shrunk after it was read (it no longer holds every element of its shape)');
    }
    // float32 weights go to the engine as the very views the file was read into; other float
    // dtypes are widened once here.
    this.used.set(name, tensor.toFloat32());
    return name;
  }

  /** Marks a checkpoint tensor as consumed without handing it to the engine (e.g. BatchNorm's step counter). */
  ignore(name: string): void {
    this.ignored.add(name);
  }

  /** The claimed weights, for the native engine. */
  claimed(): Record<string, EngineWeight> {
    return Object.fromEntries(this.used);
  }

  /** Names in the checkpoint that no module used (transformers warns about these). */
  unused(): string[] {
    return [...this.tensors.keys()].filter((name) => !this.used.has(name) && !this.ignored.has(name));
  }
}

/** The arguments of take(): a name and a shape of non-negative integers. */
function checkTake(name: unknown, shape: unknown): void {
  if (typeof name !== 'string') throw new InvalidArgumentError('name', 'a checkpoint tensor name', name);
  if (!Array.isArray(shape) || shape.length > 32 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0) || !Number.isSafeInteger(shape.reduce((a: number, b: number) => a * b, 1))) {
    throw new InvalidArgumentError('shape', 'an array of non-negative integers', shape);
  }
}

/**
 * Deterministic random weights for any module tree, made on demand as modules claim them: for
 * benchmarks at published shapes and for tests that need a model of a given size. Matrices get
 * a 1/sqrt(fan_in) scale, LayerNorm scales are 1 and biases 0, so activations stay well-conditioned.
 */
export class RandomWeightStore extends WeightStore {
  #state: number;

  constructor(seed = 1) {
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new InvalidArgumentError('seed', 'an integer', seed);
    super(new Map());
    this.#state = seed >>> 0 || 1;
  }

  override has(): boolean {
    return true;
  }

  override take(name: string, shape: readonly number[]): string {
    checkTake(name, shape);
    if (!this.tensors.has(name)) {
      const size = shape.reduce((a, b) => a * b, 1);
      const data = allocate('float32', size, 'shape');
      const isNormScale = /layernorm\d?\.weight$/.test(name);
      const isNormShift = /layernorm\d?\.bias$/.test(name);
      if (isNormScale) data.fill(1);
      else if (!isNormShift) {
        const scale = shape.length >= 2 ? 1 / Math.sqrt(shape[shape.length - 1]!) : 0.02;
        for (let i = 0; i < size; i++) data[i] = (this.#next() * 2 - 1) * Math.sqrt(3) * scale;
      }
      this.tensors.set(name, new Tensor('float32', shape, data));
    }
    return super.take(name, shape);
  }

  /** xorshift32: fast and reproducible across runs and platforms. */
  #next(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state / 4294967296;
  }
}

/**
 * Rejects memory the engine must not read from: a SharedArrayBuffer (another thread may write it
 * while the engine copies it), a resizable ArrayBuffer (it may shrink under the copy) or a
 * detached one. Weights are copied into engine-owned memory off the main thread and inputs at
 * each call, so anything else may be detached or reused by the caller afterwards.
 */
export function checkEngineBuffer(argument: string, view: ArrayBufferView): void {
  const buffer = view.buffer as ArrayBufferLike & { resizable?: boolean; growable?: boolean; detached?: boolean };
  if (typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer) {
    throw new InvalidArgumentError(argument, 'values in an ArrayBuffer (not a SharedArrayBuffer)', 'a SharedArrayBuffer');
  }
  if (buffer.resizable === true || buffer.growable === true) {
    throw new InvalidArgumentError(argument, 'values in a fixed-length ArrayBuffer', 'a resizable ArrayBuffer');
  }
  if (buffer.detached === true) throw new InvalidArgumentError(argument, 'values in an attached ArrayBuffer', 'a detached ArrayBuffer');
}

/** checkEngineBuffer over every weight the engine is about to read. */
export function checkWeightBuffers(weights: Record<string, EngineWeight>): void {
  for (const [name, values] of Object.entries(weights)) if (ArrayBuffer.isView(values)) checkEngineBuffer(`weights.${name}`, values);
}
