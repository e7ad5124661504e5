/**
 * The checkpoint's tensors as the modules consume them. Each module asks for its weights by the
 * name transformers gives them and the shape it expects; a missing or misshapen weight is a
 * WeightMismatchError naming it. What the engine receives is name -> Float32Array.
 */
import { WeightMismatchError } from '../errors.js';
import { Tensor } from '../tensor.js';

export class WeightStore {
  private readonly tensors: Map<string, Tensor>;
  private readonly used = new Map<string, Float32Array>();

  constructor(tensors: Map<string, Tensor>) {
    this.tensors = tensors;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Claims `name`, checking it has exactly `shape`; returns the name for the engine's spec. */
  take(name: string, shape: readonly number[]): string {
    const tensor = this.tensors.get(name);
    if (!tensor) throw new WeightMismatchError(name, `missing from the checkpoint (expected shape [${shape.join(', ')}])`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new WeightMismatchError(name, `has shape [${tensor.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    if (!['float32', 'float16', 'bfloat16', 'float64'].includes(tensor.dtype)) {
      throw new WeightMismatchError(name, `has dtype ${tensor.dtype}, expected a floating-point dtype`);
    }
    // float32 weights go to the engine as the very views the file was read into; other float
    // dtypes are widened once here.
    if (!this.used.has(name)) this.used.set(name, tensor.toFloat32());
    return name;
  }

  /** The claimed weights, for the native engine. */
  claimed(): Record<string, Float32Array> {
    return Object.fromEntries(this.used);
  }

  /** Names in the checkpoint that no module used (transformers warns about these). */
  unused(): string[] {
    return [...this.tensors.keys()].filter((name) => !this.used.has(name));
  }
}
