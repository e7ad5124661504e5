/**
 * A float32 tensor in a model's backend memory: device memory on CUDA, host memory on the CPU
 * backend. Made by `model.upload(tensor)` or by a call with `outputs: 'device'`; passed back as
 * `inputs` (images, audio, flow, multimodal float modalities) it is read where it lies, with no
 * copy through the host.
 *
 * Lifetime: `dispose()` frees the memory at once (idempotent; `using t = ...` calls it). A tensor
 * never disposed is freed when it is garbage collected (the native handle's finaliser), but GC
 * does not see device memory: dispose what you no longer need. A tensor keeps its model's
 * backend alive, so disposing the model first is safe: the tensor stays readable until disposed
 * (on CUDA the model's device memory, weights included, is released once the model and all its
 * tensors and encodings are disposed). Any use after dispose throws DisposedError.
 */
import { DisposedError, InvalidArgumentError } from './errors.js';
import { fromNativeError, loadAddon, type NativeDeviceTensorHandle } from './native/binding.js';
import { shapeSize, Tensor } from './tensor.js';

export class DeviceTensor {
  readonly dtype = 'float32' as const;
  readonly shape: readonly number[];
  /** Where the memory is: 'cpu' or 'cuda:N'. */
  readonly device: string;
  /** @internal */
  readonly handle: NativeDeviceTensorHandle;

  /** @internal DeviceTensors come from model.upload() or from outputs: 'device'. */
  constructor(handle: NativeDeviceTensorHandle) {
    if (!(handle instanceof loadAddon().NativeDeviceTensor)) {
      throw new InvalidArgumentError('handle', "a native tensor handle (DeviceTensors come from model.upload() or a call with outputs: 'device')", handle);
    }
    this.handle = handle;
    this.shape = Object.freeze(handle.shape);
    this.device = handle.device;
  }

  get size(): number {
    return shapeSize(this.shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  get byteLength(): number {
    return this.size * 4;
  }

  get disposed(): boolean {
    return this.handle.disposed;
  }

  /**
   * Copies the values into a new host Tensor, off the main thread. Concurrent calls are fine; a
   * dispose() while one runs lets it finish (the memory goes when it has).
   */
  async toHost(): Promise<Tensor<'float32'>> {
    if (this.handle.disposed) throw new DisposedError('the DeviceTensor');
    let data: Float32Array;
    try {
      data = await this.handle.toHost();
    } catch (error) {
      throw fromNativeError(error);
    }
    return new Tensor('float32', this.shape, data);
  }

  /** Frees the memory now. Idempotent. */
  dispose(): void {
    this.handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `DeviceTensor(float32, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}
