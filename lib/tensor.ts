/**
 * A small typed host tensor: dtype, shape and a typed array of its elements in row-major order.
 * Tensors are views: constructing one never copies `data`.
 */
import { InvalidArgumentError, describeValue } from './errors.js';

export type DType = 'float64' | 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export type TypedArrayFor<D extends DType> = D extends 'float64'
  ? Float64Array
  : D extends 'float32'
    ? Float32Array
    : D extends 'float16' | 'bfloat16'
      ? Uint16Array
      : D extends 'int64'
        ? BigInt64Array
        : D extends 'int32'
          ? Int32Array
          : D extends 'int16'
            ? Int16Array
            : D extends 'int8'
              ? Int8Array
              : Uint8Array;

export type AnyTypedArray = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** Bytes per element and the typed-array class that holds each dtype (float16/bfloat16 as raw 16-bit words). */
export const DTYPE_INFO: Record<DType, { bytes: number; array: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): AnyTypedArray; new (length: number): AnyTypedArray; BYTES_PER_ELEMENT: number } }> = {
  float64: { bytes: 8, array: Float64Array },
  float32: { bytes: 4, array: Float32Array },
  float16: { bytes: 2, array: Uint16Array },
  bfloat16: { bytes: 2, array: Uint16Array },
  int64: { bytes: 8, array: BigInt64Array },
  int32: { bytes: 4, array: Int32Array },
  int16: { bytes: 2, array: Int16Array },
  int8: { bytes: 1, array: Int8Array },
  uint8: { bytes: 1, array: Uint8Array },
  bool: { bytes: 1, array: Uint8Array },
};

export const DTYPES = Object.keys(DTYPE_INFO) as DType[];

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_INFO, value);
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Ranks above this are refused: no Perceiver input has more than 6 dimensions. */
const MAX_RANK = 32;

/** Checks a shape (read once, element by element) and returns a plain copy of it. */
function checkShape(shape: unknown, argument: string): number[] {
  if (!Array.isArray(shape) || shape.length > MAX_RANK) throw new InvalidArgumentError(argument, `an array of at most ${MAX_RANK} non-negative integers`, shape);
  const out: number[] = [];
  let size = 1;
  for (let i = 0; i < shape.length; i++) {
    const d: unknown = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new InvalidArgumentError(argument, 'an array of non-negative integers', `${describeValue(d)} at position ${i}`);
    }
    size *= d;
    if (!Number.isSafeInteger(size)) throw new InvalidArgumentError(argument, 'a shape with a representable number of elements', `[${shape.join(', ')}]`);
    out.push(d);
  }
  return out;
}

function checkDType(dtype: unknown): DType {
  if (!isDType(dtype)) throw new InvalidArgumentError('dtype', `one of ${DTYPES.join(', ')}`, dtype);
  return dtype;
}

/**
 * A zeroed typed array of `length` elements for `dtype`; a length the engine cannot hold or the
 * heap cannot allocate is an InvalidArgumentError naming `argument` rather than a RangeError.
 */
export function allocate<D extends DType>(dtype: D, length: number, argument: string): TypedArrayFor<D> {
  const Ctor = DTYPE_INFO[dtype].array;
  try {
    return new Ctor(length) as TypedArrayFor<D>;
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new InvalidArgumentError(argument, `a size that fits in memory as ${dtype}`, `${length} elements (${error.message})`);
  }
}

export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: TypedArrayFor<D>;

  constructor(dtype: D, shape: readonly number[], data: TypedArrayFor<D>) {
    checkDType(dtype);
    const dims = checkShape(shape, 'shape');
    const Ctor = DTYPE_INFO[dtype].array;
    if (!(data instanceof Ctor)) throw new InvalidArgumentError('data', `a ${Ctor.name} for dtype ${dtype}`, data);
    const size = shapeSize(dims);
    if (data.length !== size) {
      throw new InvalidArgumentError('data', `${size} elements for shape [${dims.join(', ')}]`, `${data.length} elements`);
    }
    this.dtype = dtype;
    this.shape = Object.freeze(dims);
    this.data = data;
  }

  /** A zero-filled tensor. */
  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    checkDType(dtype);
    const dims = checkShape(shape, 'shape');
    return new Tensor(dtype, dims, allocate(dtype, shapeSize(dims), 'shape'));
  }

  /**
   * Builds a tensor from a flat array of numbers or bigints (or a typed array) and a shape (default
   * [values.length]). Integer dtypes take integers (bigints or integral numbers), converted as the
   * typed array converts them; float dtypes take any number or bigint; float16 and bfloat16 take
   * their raw 16-bit words.
   */
  static from<D extends DType>(dtype: D, values: ArrayLike<number | bigint>, shape?: readonly number[]): Tensor<D> {
    checkDType(dtype);
    const isList = Array.isArray(values) || (ArrayBuffer.isView(values) && !(values instanceof DataView));
    if (!isList) throw new InvalidArgumentError('values', 'an array or typed array of numbers', values);
    const length = values.length;
    const dims = checkShape(shape ?? [length], 'shape');
    const out = allocate(dtype, length, 'values') as AnyTypedArray;
    const integer = dtype.startsWith('int') || dtype === 'uint8' || dtype === 'bool';
    for (let i = 0; i < length; i++) {
      const v: unknown = values[i];
      const ok = typeof v === 'bigint' || (typeof v === 'number' && (!integer || Number.isInteger(v)));
      if (!ok) throw new InvalidArgumentError(`values[${i}]`, integer ? `an integer for dtype ${dtype}` : 'a number', v);
      if (out instanceof BigInt64Array) out[i] = BigInt.asIntN(64, BigInt(v as number | bigint));
      else (out as Float32Array)[i] = Number(v);
    }
    return new Tensor(dtype, dims, out as TypedArrayFor<D>);
  }

  get size(): number {
    return this.data.length;
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** The same data under another shape with the same number of elements (no copy). */
  reshape(shape: readonly number[]): Tensor<D> {
    const dims = checkShape(shape, 'shape');
    if (shapeSize(dims) !== this.size) {
      throw new InvalidArgumentError('shape', `a shape of ${this.size} elements`, `[${dims.join(', ')}]`);
    }
    return new Tensor(this.dtype, dims, this.data);
  }

  /**
   * Throws unless the data still holds every element of the shape: a typed array's buffer can be
   * detached (transferred) or, if resizable, shrunk after the tensor was made. Checked before any
   * data is handed to the engine, which reads shape-many elements.
   */
  checkIntact(argument: string): void {
    const expected = shapeSize(this.shape);
    if (this.data.length !== expected) {
      throw new InvalidArgumentError(argument, `a Tensor whose data holds its ${expected} elements`, `${this.data.length} elements (its buffer was detached or resized after the Tensor was made)`);
    }
  }

  /** Raw little-endian bytes of the elements (a view, no copy). */
  bytes(): Uint8Array {
    this.checkIntact('tensor');
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  /** Element i (flat index) as a JS number (int64 converted; float16/bfloat16 decoded). */
  get(i: number): number {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.data.length) {
      throw new InvalidArgumentError('i', `an integer index in [0, ${this.data.length})`, i);
    }
    return this.#at(i);
  }

  #at(i: number): number {
    const v = this.data[i];
    if (this.dtype === 'float16') return float16ToNumber(v as number);
    if (this.dtype === 'bfloat16') return bfloat16ToNumber(v as number);
    return Number(v);
  }

  /** A float32 copy of the values, whatever the dtype (a view when already float32). */
  toFloat32(): Float32Array {
    if (this.dtype === 'float32') return this.data as Float32Array;
    const out = new Float32Array(this.size);
    for (let i = 0; i < out.length; i++) out[i] = this.#at(i);
    return out;
  }

  /** Same values as float64. */
  toFloat64(): Float64Array {
    const out = new Float64Array(this.size);
    for (let i = 0; i < out.length; i++) out[i] = this.#at(i);
    return out;
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}

export function float16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function bfloat16ToNumber(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}
