/**
 * A small typed host tensor: dtype, shape and a typed array of its elements in row-major order.
 * Tensors are views: constructing one never copies `data`.
 */
import { InvalidArgumentError } from './errors.js';

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

function checkShape(shape: readonly number[], argument: string): void {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new InvalidArgumentError(argument, 'an array of non-negative integers', shape);
  }
}

export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: TypedArrayFor<D>;

  constructor(dtype: D, shape: readonly number[], data: TypedArrayFor<D>) {
    if (!isDType(dtype)) throw new InvalidArgumentError('dtype', `one of ${DTYPES.join(', ')}`, dtype);
    checkShape(shape, 'shape');
    const Ctor = DTYPE_INFO[dtype].array;
    if (!(data instanceof Ctor)) throw new InvalidArgumentError('data', `a ${Ctor.name} for dtype ${dtype}`, data);
    const size = shapeSize(shape);
    if (data.length !== size) {
      throw new InvalidArgumentError('data', `${size} elements for shape [${shape.join(', ')}]`, `${data.length} elements`);
    }
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.data = data;
  }

  /** A zero-filled tensor. */
  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    checkShape(shape, 'shape');
    return new Tensor(dtype, shape, new DTYPE_INFO[dtype].array(shapeSize(shape)) as TypedArrayFor<D>);
  }

  /** Builds a tensor from nested number arrays (or a flat array plus shape); ints become int64 when dtype says so. */
  static from<D extends DType>(dtype: D, values: ArrayLike<number | bigint>, shape?: readonly number[]): Tensor<D> {
    const s = shape ?? [values.length];
    checkShape(s, 'shape');
    const out = new DTYPE_INFO[dtype].array(values.length) as AnyTypedArray;
    if (out instanceof BigInt64Array) for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i] as number);
    else for (let i = 0; i < values.length; i++) (out as Float32Array)[i] = Number(values[i]);
    return new Tensor(dtype, s, out as TypedArrayFor<D>);
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
    checkShape(shape, 'shape');
    if (shapeSize(shape) !== this.size) {
      throw new InvalidArgumentError('shape', `a shape of ${this.size} elements`, `[${shape.join(', ')}]`);
    }
    return new Tensor(this.dtype, shape, this.data);
  }

  /** Raw little-endian bytes of the elements (a view, no copy). */
  bytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  /** Element i as a JS number (int64 converted; float16/bfloat16 decoded). */
  get(i: number): number {
    const v = this.data[i];
    if (this.dtype === 'float16') return float16ToNumber(v as number);
    if (this.dtype === 'bfloat16') return bfloat16ToNumber(v as number);
    return Number(v);
  }

  /** A float32 copy of the values, whatever the dtype (a view when already float32). */
  toFloat32(): Float32Array {
    if (this.dtype === 'float32') return this.data as Float32Array;
    const out = new Float32Array(this.size);
    for (let i = 0; i < out.length; i++) out[i] = this.get(i);
    return out;
  }

  /** Same values as float64. */
  toFloat64(): Float64Array {
    const out = new Float64Array(this.size);
    for (let i = 0; i < out.length; i++) out[i] = this.get(i);
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
