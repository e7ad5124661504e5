/**
 * The runtime model: a Perceiver module tree (mirroring transformers') bound to a checkpoint's
 * weights and compiled into one native engine. A forward is one native call on a worker thread.
 */
import { PerceiverConfig } from '../config.js';
import { DeviceTensor } from '../device_tensor.js';
import { BackendUnavailableError, ConfigError, DisposedError, InvalidArgumentError } from '../errors.js';
import { isHubId, snapshotDownload, type HubOptions } from '../hub/download.js';
import { openCheckpointWeights } from '../io/checkpoint.js';
import {
  fromNativeError,
  loadAddon,
  type NativeDecodeOutputs,
  type NativeDecodeRequest,
  type NativeEncodeOutputs,
  type NativeEncodeRequest,
  type NativeEncodingHandle,
  type NativeModelHandle,
  type NativeTensor,
} from '../native/binding.js';
import { Tensor } from '../tensor.js';
import { PerceiverEncoder } from './layers.js';
import type { PerceiverDecoder } from './decoders.js';
import type { PerceiverPostprocessor } from './postprocessors.js';
import { keyMask, PerceiverIdentityPreprocessor, PerceiverTextPreprocessor, type PerceiverPreprocessor } from './preprocessors.js';
import type { ModelSpec } from './spec.js';
import { checkEngineBuffer, checkWeightBuffers, WeightStore } from './weights.js';

export const DEVICE_DTYPES = ['float32', 'tfloat32', 'float16', 'bfloat16'] as const;
export type ComputeDType = (typeof DEVICE_DTYPES)[number];

export interface LoadOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** Compute precision; the CPU backend runs float32. */
  dtype?: ComputeDType;
  /** How a Hugging Face Hub id is fetched (revision, cache folder, endpoint, token, offline, progress). */
  hub?: HubOptions;
}

/** A local checkpoint folder as is; a Hub id (`org/name[@revision]`) downloaded into the Hugging Face cache first. */
export async function checkpointFolder(model: string, hub: HubOptions = {}): Promise<string> {
  if (typeof model !== 'string' || model === '') throw new InvalidArgumentError('model', 'a checkpoint folder or a Hugging Face Hub id', model);
  if (hub === null || typeof hub !== 'object') throw new InvalidArgumentError('hub', 'an object of Hub options', hub);
  return isHubId(model) ? snapshotDownload(model, hub) : model;
}

/** The options of fromPretrained and loadWeights: an object (or undefined). */
export function checkLoadOptions(options: unknown): LoadOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new InvalidArgumentError('options', 'an object such as { device, dtype, hub }', options);
  return options as LoadOptions;
}

export interface EncodeCall {
  /**
   * What the preprocessor takes: token ids [batch, sequence] (int64 or int32) for text, float
   * pixels [batch, channels, height, width] for images, [batch, frames, channels, height, width]
   * for video and flow, or an object of such tensors keyed by modality for multimodal models.
   * A float input may be a DeviceTensor of this model (model.upload(), or an output with
   * outputs: 'device'), read in place without a copy through the host; token ids stay host Tensors.
   */
  inputs: Tensor | DeviceTensor | Record<string, Tensor | DeviceTensor>;
  /** [batch, sequence], 1 = attend, 0 = padding. */
  attentionMask?: Tensor;
  /** Resize a learned position table to another image size (bicubic), as transformers' option. */
  interpolatePosEncoding?: boolean;
  /** Seed for multimodal mask probabilities strictly between 0 and 1 (0 and 1 are deterministic). */
  seed?: number;
  /** Also return the latents around every self-attention layer, as transformers' output_hidden_states. */
  outputHiddenStates?: boolean;
  /** Also return attention weights, as transformers' output_attentions. */
  outputAttentions?: boolean;
}

/**
 * Where a call's outputs go: 'host' (default) copies every output tensor into host memory as a
 * Tensor; 'device' leaves every one (logits, lastHiddenState, hiddenStates, attentions,
 * crossAttentions) in the model's backend memory as a DeviceTensor.
 */
export type OutputPlacement = 'host' | 'device';

export interface OutputOptions {
  outputs?: OutputPlacement;
}

/** Flat indices of output points to decode: one list, or one per modality (null = every point). */
export type SubsampledOutputPoints = PointList | Record<string, PointList | null>;
export type PointList = Tensor | ArrayLike<number> | BigInt64Array;

export interface EmbedOptions {
  pooling?: 'mean' | 'none';
  attentionMask?: Tensor;
  interpolatePosEncoding?: boolean;
}

export interface DecodeCall {
  subsampledOutputPoints?: SubsampledOutputPoints;
  outputAttentions?: boolean;
}

export interface ForwardCall extends EncodeCall, DecodeCall {}

/** One tensor, or one per output modality (multimodal autoencoding). */
export type Logits = Tensor<'float32'> | Record<string, Tensor<'float32'>>;
/** Logits of type L kept in backend memory (outputs: 'device'). */
export type DeviceLogits<L extends Logits = Tensor<'float32'>> = L extends Tensor<'float32'> ? DeviceTensor : Record<string, DeviceTensor>;
/** An output tensor: on the host, or in backend memory. */
export type OutputTensor = Tensor<'float32'> | DeviceTensor;

/** L: the logits' type; T: every other output tensor's (DeviceTensor with outputs: 'device'). */
export interface PerceiverModelOutput<L extends Logits | DeviceLogits<Logits> = Tensor<'float32'>, T extends OutputTensor = Tensor<'float32'>> {
  /** The head's output (absent for a model without decoder). */
  logits?: L;
  /** The latents after the encoder, [batch, num_latents, d_latents]. */
  lastHiddenState: T;
  hiddenStates?: T[];
  /** Latent self-attention weights, [batch, heads, num_latents, num_latents] per layer applied. */
  attentions?: T[];
  /** The encoder's cross-attention weights, then the decoder's. */
  crossAttentions?: T[];
}

export interface PerceiverDecodeOutput<L extends Logits | DeviceLogits<Logits> = Tensor<'float32'>, T extends OutputTensor = Tensor<'float32'>> {
  logits: L;
  /** The decoder's cross-attention weights, when asked for. */
  crossAttentions?: T[];
}

/**
 * The encoder's result for one batch, kept in the engine's memory so that any number of decode()
 * calls (chunks of output points) reuse it. Dispose it when done; it also goes with the GC.
 * T is the type of its output tensors (DeviceTensor when encoded with outputs: 'device'; those
 * are disposed on their own, not with the encoding).
 */
export class PerceiverEncoding<T extends OutputTensor = Tensor<'float32'>> {
  readonly lastHiddenState: T;
  readonly hiddenStates?: T[];
  readonly attentions?: T[];
  readonly crossAttentions?: T[];
  /** @internal */
  readonly handle: NativeEncodingHandle;

  /** @internal */
  constructor(handle: NativeEncodingHandle, outputs: NativeEncodeOutputs) {
    // Made by encode(); a hand-made one is refused here, and a forged handle by the engine's decode.
    const expected = "the engine's encoding (PerceiverEncodings come from model.encode())";
    if (typeof handle !== 'object' || handle === null || typeof handle.dispose !== 'function') throw new InvalidArgumentError('handle', expected, handle);
    if (typeof outputs !== 'object' || outputs === null || typeof outputs.lastHiddenState !== 'object' || outputs.lastHiddenState === null) {
      throw new InvalidArgumentError('outputs', expected, outputs);
    }
    for (const key of ['hiddenStates', 'attentions', 'crossAttentions'] as const) {
      if (outputs[key] !== undefined && !Array.isArray(outputs[key])) throw new InvalidArgumentError(`outputs.${key}`, expected, outputs[key]);
    }
    this.handle = handle;
    this.lastHiddenState = toOutput(outputs.lastHiddenState) as T;
    if (outputs.hiddenStates) this.hiddenStates = outputs.hiddenStates.map(toOutput) as T[];
    if (outputs.attentions) this.attentions = outputs.attentions.map(toOutput) as T[];
    if (outputs.crossAttentions) this.crossAttentions = outputs.crossAttentions.map(toOutput) as T[];
  }

  get disposed(): boolean {
    return this.handle.disposed;
  }

  dispose(): void {
    this.handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface PerceiverModules {
  inputPreprocessor?: PerceiverPreprocessor;
  decoder?: PerceiverDecoder;
  outputPostprocessor?: PerceiverPostprocessor;
}

interface ParsedDevice {
  kind: 'cpu' | 'cuda';
  index: number;
}

function parseDevice(device: unknown): ParsedDevice {
  if (device === undefined || device === 'cpu') return { kind: 'cpu', index: 0 };
  if (typeof device === 'string') {
    const m = /^cuda(?::(\d+))?$/.exec(device);
    if (m) return { kind: 'cuda', index: m[1] ? Number(m[1]) : 0 };
  }
  throw new InvalidArgumentError('device', "'cpu', 'cuda' or 'cuda:N'", device);
}

/**
 * Mean over the latents, [batch, n, d] -> [batch, d], summed in latent order in float32: the one
 * definition of a mean-pooled embedding (model.embed, the batch CLI), so both give the same bits.
 */
export function meanPoolLatents(latents: Tensor<'float32'>): Tensor<'float32'> {
  const [batch, n, d] = latents.shape as [number, number, number];
  const out = new Float32Array(batch * d);
  for (let b = 0; b < batch; b++) {
    const row = out.subarray(b * d, (b + 1) * d);
    for (let i = 0; i < n; i++) {
      const latent = latents.data.subarray((b * n + i) * d, (b * n + i + 1) * d);
      for (let c = 0; c < d; c++) row[c]! += latent[c]!;
    }
    for (let c = 0; c < d; c++) row[c]! /= n;
  }
  return new Tensor('float32', [batch, d], out);
}

/** A host Tensor, or a DeviceTensor for an output left in backend memory. */
function toOutput(t: NativeTensor): OutputTensor {
  return t.device ? new DeviceTensor(t.device) : new Tensor('float32', t.shape, t.data!);
}

function toLogits(list: NativeTensor[]): Logits | DeviceLogits<Logits> {
  if (list.length === 1 && list[0]!.name === '') return toOutput(list[0]!);
  // Every output of one call is on the host, or every one on the device.
  return Object.fromEntries(list.map((t) => [t.name, toOutput(t)])) as Record<string, Tensor<'float32'>> | Record<string, DeviceTensor>;
}

function outputPlacement(call: OutputOptions): OutputPlacement {
  const outputs = call.outputs ?? 'host';
  if (outputs !== 'host' && outputs !== 'device') throw new InvalidArgumentError('outputs', "'host' or 'device'", outputs);
  return outputs;
}

function pointIndices(value: unknown, argument: string): BigInt64Array {
  let values: ArrayLike<number | bigint>;
  if (value instanceof Tensor) {
    if (!['int64', 'int32', 'int16', 'int8', 'uint8'].includes(value.dtype) || value.rank !== 1) {
      throw new InvalidArgumentError(argument, 'a 1-D integer Tensor of flat point indices', `${value.dtype} Tensor of shape [${value.shape.join(', ')}]`);
    }
    value.checkIntact(argument);
    values = value.data as ArrayLike<number | bigint>;
  } else if (value instanceof BigInt64Array || value instanceof Int32Array || Array.isArray(value)) {
    values = value as ArrayLike<number | bigint>;
  } else {
    throw new InvalidArgumentError(argument, 'a 1-D integer Tensor, array or Int32Array of flat point indices', value);
  }
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (typeof v === 'bigint' ? v < 0n : !(Number.isSafeInteger(v) && v >= 0)) {
      throw new InvalidArgumentError(argument, 'non-negative integer indices', `${String(v)} at position ${i}`);
    }
    out[i] = BigInt(v);
  }
  if (out.length === 0) throw new InvalidArgumentError(argument, 'at least one point index', 'an empty list');
  return out;
}

const join = (prefix: string, name: string) => (prefix ? `${prefix}.${name}` : name);

/** L is the logits' type: one tensor, or a record per modality for multimodal autoencoding. */
export class PerceiverModel<L extends Logits = Tensor<'float32'>> {
  readonly config: PerceiverConfig;
  /** Without one (transformers' bare PerceiverModel), inputs are the encoder's sequence [batch, sequence, d_model]. */
  readonly inputPreprocessor: PerceiverPreprocessor;
  readonly encoder: PerceiverEncoder;
  readonly decoder?: PerceiverDecoder;
  readonly outputPostprocessor?: PerceiverPostprocessor;
  /** Checkpoint names of the weights the checkpoint holds but no module uses. */
  unusedWeights: string[] = [];
  /** Where the model runs, once loaded. */
  device = 'cpu';
  dtype: ComputeDType = 'float32';

  /** Prefix of the PerceiverModel's weights in the checkpoint ('perceiver' inside a head). */
  protected readonly weightPrefix: string;
  /** Where a head keeps its postprocessor's weights when not inside PerceiverModel (the MLM head's embedding_decoder). */
  protected postprocessorPrefix?: string;
  #native: NativeModelHandle | undefined;
  #inFlight = new Set<Promise<unknown>>();
  #disposed = false;

  constructor(config: PerceiverConfig, modules: PerceiverModules = {}, weightPrefix = '') {
    if (!(config instanceof PerceiverConfig)) throw new InvalidArgumentError('config', 'a PerceiverConfig', config);
    if (typeof modules !== 'object' || modules === null) throw new InvalidArgumentError('modules', 'an object of { inputPreprocessor, decoder, outputPostprocessor }', modules);
    if (typeof weightPrefix !== 'string') throw new InvalidArgumentError('weightPrefix', 'a string', weightPrefix);
    const { inputPreprocessor, decoder, outputPostprocessor } = modules;
    const isModule = (m: unknown, method: string) => m === undefined || (typeof m === 'object' && m !== null && typeof (m as Record<string, unknown>)[method] === 'function');
    if (!isModule(inputPreprocessor, 'prepare')) throw new InvalidArgumentError('modules.inputPreprocessor', 'a preprocessor', inputPreprocessor);
    if (!isModule(decoder, 'spec')) throw new InvalidArgumentError('modules.decoder', 'a decoder', decoder);
    if (!isModule(outputPostprocessor, 'spec')) throw new InvalidArgumentError('modules.outputPostprocessor', 'a postprocessor', outputPostprocessor);
    this.config = config;
    this.inputPreprocessor = inputPreprocessor ?? new PerceiverIdentityPreprocessor(config.d_model);
    this.decoder = decoder;
    this.outputPostprocessor = outputPostprocessor;
    this.weightPrefix = weightPrefix;
    this.encoder = new PerceiverEncoder(config, this.inputPreprocessor.numChannels);
  }

  /** Loads `config.json` and the weights of a checkpoint folder (or a Hugging Face Hub id) into this class. */
  static async fromPretrained<T extends PerceiverModel<Logits>>(
    this: new (config: PerceiverConfig) => T,
    dir: string,
    options: LoadOptions = {},
  ): Promise<T> {
    options = checkLoadOptions(options);
    const folder = await checkpointFolder(dir, options.hub);
    const config = await PerceiverConfig.fromPretrained(folder);
    const model = new this(config);
    // The engine reads each weight from the open files while it loads (no second copy in memory).
    const checkpoint = await openCheckpointWeights(folder);
    try {
      return await model.loadWeights(new WeightStore(checkpoint.tensors), options);
    } finally {
      await checkpoint.close();
    }
  }

  /**
   * Binds checkpoint tensors (transformers' names) and builds the native engine. A WeightStore may
   * be passed instead of tensors (RandomWeightStore gives random weights at any shape).
   */
  async loadWeights(tensors: Map<string, Tensor> | WeightStore, options: LoadOptions = {}): Promise<this> {
    if (this.#disposed) throw new DisposedError(this.constructor.name);
    if (this.#native) throw new InvalidArgumentError('this', 'a model whose weights are not loaded yet', 'a loaded model');
    options = checkLoadOptions(options);
    if (!(tensors instanceof Map) && !(tensors instanceof WeightStore)) {
      throw new InvalidArgumentError('tensors', 'a Map of checkpoint names to Tensors, or a WeightStore', tensors);
    }
    const deviceOption = options.device;
    const device = parseDevice(deviceOption);
    const dtype = options.dtype ?? 'float32';
    if (!DEVICE_DTYPES.includes(dtype)) throw new InvalidArgumentError('dtype', DEVICE_DTYPES.map((d) => `'${d}'`).join(', '), dtype);
    const addon = loadAddon();
    if (device.kind === 'cuda') {
      const cuda = addon.capabilities().cuda;
      if (!cuda.available) throw new BackendUnavailableError(`device '${deviceOption}' is not available: ${cuda.reason ?? 'unknown reason'}`);
      const count = cuda.deviceCount;
      if (device.index >= count) throw new InvalidArgumentError('device', `one of cuda:0 to cuda:${count - 1} (this machine has ${count} CUDA device(s))`, deviceOption);
    } else if (dtype !== 'float32' && dtype !== 'bfloat16') {
      throw new BackendUnavailableError(`dtype '${dtype}' is not supported on the cpu backend (it computes in float32 or bfloat16); use dtype 'float32', 'bfloat16' or a CUDA device`);
    }
    if (this.config.hidden_act !== 'gelu') {
      throw new ConfigError(`hidden_act "${this.config.hidden_act}" is not supported (supported: "gelu", the exact erf GELU)`);
    }
    const store = tensors instanceof WeightStore ? tensors : new WeightStore(tensors);
    const spec = this.buildSpec(store);
    checkWeightBuffers(store.claimed());
    let native: NativeModelHandle;
    try {
      // The spec is read here; the weights are copied, packed and checked off the main thread.
      native = new addon.NativeModel(spec, store.claimed(), { device: device.kind, deviceIndex: device.index, dtype });
    } catch (error) {
      throw fromNativeError(error);
    }
    try {
      await native.load();
    } catch (error) {
      native.dispose();
      throw fromNativeError(error);
    }
    if (this.#disposed) {
      native.dispose();
      throw new DisposedError(this.constructor.name);
    }
    if (this.#native) {
      native.dispose();
      throw new InvalidArgumentError('this', 'a model whose weights are not loaded yet', 'a loaded model');
    }
    this.#native = native;
    this.unusedWeights = store.unused();
    this.device = device.kind === 'cpu' ? 'cpu' : `cuda:${device.index}`;
    this.dtype = dtype;
    return this;
  }

  /** The engine's description of this module tree with its weights claimed from `store`. */
  protected buildSpec(store: WeightStore): ModelSpec {
    const p = this.weightPrefix;
    const c = this.config;
    const decoder = this.decoder?.spec(store, join(p, 'decoder')) ?? null;
    return {
      layerNormEps: 1e-5, // what transformers' LayerNorms use, whatever config.layer_norm_eps says
      preprocessor: this.inputPreprocessor.spec(store, join(p, 'input_preprocessor')),
      encoder: this.encoder.spec(store, join(p, 'encoder'), store.take(join(p, 'embeddings.latents'), [c.num_latents, c.d_latents])),
      decoder,
      postprocessor:
        this.outputPostprocessor && this.decoder
          ? this.outputPostprocessor.spec(store, this.postprocessorPrefix ?? join(p, 'output_postprocessor'), this.decoder.outputChannels)
          : null,
    };
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Runs the model: preprocessor, encoder, decoder and postprocessor in one native call. With
   * `outputs: 'device'` every output tensor stays in the model's backend memory as a DeviceTensor
   * (dispose each when done).
   */
  forward(call: ForwardCall & { outputs: 'device' }): Promise<PerceiverModelOutput<DeviceLogits<L>, DeviceTensor>>;
  forward(call: ForwardCall & { outputs?: 'host' }): Promise<PerceiverModelOutput<L>>;
  forward(call: ForwardCall & OutputOptions): Promise<PerceiverModelOutput<L> | PerceiverModelOutput<DeviceLogits<L>, DeviceTensor>>;
  async forward(call: ForwardCall & OutputOptions): Promise<PerceiverModelOutput<L> | PerceiverModelOutput<DeviceLogits<L>, DeviceTensor>> {
    const native = this.#usable();
    const request = { ...this.#encodeRequest(call), ...this.#decodeRequest(call) };
    const r = await this.#track(() => native.forward(request));
    const out: PerceiverModelOutput<L | DeviceLogits<L>, OutputTensor> = { lastHiddenState: toOutput(r.lastHiddenState) };
    if (this.decoder) out.logits = toLogits(r.logits) as L | DeviceLogits<L>;
    if (r.hiddenStates) out.hiddenStates = r.hiddenStates.map(toOutput);
    if (r.attentions) out.attentions = r.attentions.map(toOutput);
    if (r.crossAttentions) out.crossAttentions = r.crossAttentions.map(toOutput);
    return out as PerceiverModelOutput<L> | PerceiverModelOutput<DeviceLogits<L>, DeviceTensor>;
  }

  /**
   * Runs the preprocessor and encoder once. The returned encoding serves any number of decode()
   * calls, e.g. one per chunk of a video's output points (transformers re-runs the encoder for each).
   */
  encode(call: EncodeCall & { outputs: 'device' }): Promise<PerceiverEncoding<DeviceTensor>>;
  encode(call: EncodeCall & { outputs?: 'host' }): Promise<PerceiverEncoding>;
  encode(call: EncodeCall & OutputOptions): Promise<PerceiverEncoding | PerceiverEncoding<DeviceTensor>>;
  async encode(call: EncodeCall & OutputOptions): Promise<PerceiverEncoding | PerceiverEncoding<DeviceTensor>> {
    const native = this.#usable();
    const request = this.#encodeRequest(call);
    const r = await this.#track(() => native.encode(request));
    return new PerceiverEncoding<OutputTensor>(r.encoding, r) as PerceiverEncoding | PerceiverEncoding<DeviceTensor>;
  }

  /**
   * Copies a float host tensor (any floating dtype, converted to float32) into this model's
   * backend memory, off the main thread. The result can be passed as `inputs` (or a multimodal
   * float modality) to this model's forward() and encode(), which read it in place. Values must
   * be finite, as for any input.
   */
  async upload(tensor: Tensor): Promise<DeviceTensor> {
    const native = this.#usable();
    if (!(tensor instanceof Tensor)) throw new InvalidArgumentError('tensor', 'a host Tensor', tensor);
    if (!['float32', 'float64', 'float16', 'bfloat16'].includes(tensor.dtype)) {
      throw new InvalidArgumentError('tensor', 'a floating-point Tensor (token ids stay on the host)', `dtype ${tensor.dtype}`);
    }
    tensor.checkIntact('tensor');
    const handle = await this.#track(() => native.upload({ shape: [...tensor.shape], data: tensor.toFloat32() }));
    return new DeviceTensor(handle);
  }

  /**
   * Embeddings from the latents, without running the decoder: `pooling: 'mean'` (default) averages
   * the latents into [batch, d_latents]; `'none'` returns them whole, [batch, num_latents, d_latents].
   */
  async embed(inputs: EncodeCall['inputs'], options: EmbedOptions = {}): Promise<Tensor<'float32'>> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { pooling }', options);
    const pooling = options.pooling ?? 'mean';
    if (pooling !== 'mean' && pooling !== 'none') throw new InvalidArgumentError('pooling', "'mean' or 'none'", pooling);
    const encoding = await this.encode({ inputs, attentionMask: options.attentionMask, interpolatePosEncoding: options.interpolatePosEncoding, outputs: 'host' });
    encoding.dispose();
    const latents = encoding.lastHiddenState;
    if (pooling === 'none') return latents;
    return meanPoolLatents(latents);
  }

  /** Decodes an encoding of this model at the requested output points (every point by default). */
  decode(encoding: PerceiverEncoding<OutputTensor>, call: DecodeCall & { outputs: 'device' }): Promise<PerceiverDecodeOutput<DeviceLogits<L>, DeviceTensor>>;
  decode(encoding: PerceiverEncoding<OutputTensor>, call?: DecodeCall & { outputs?: 'host' }): Promise<PerceiverDecodeOutput<L>>;
  decode(encoding: PerceiverEncoding<OutputTensor>, call?: DecodeCall & OutputOptions): Promise<PerceiverDecodeOutput<L> | PerceiverDecodeOutput<DeviceLogits<L>, DeviceTensor>>;
  async decode(
    encoding: PerceiverEncoding<OutputTensor>,
    call: DecodeCall & OutputOptions = {},
  ): Promise<PerceiverDecodeOutput<L> | PerceiverDecodeOutput<DeviceLogits<L>, DeviceTensor>> {
    const native = this.#usable();
    if (!(encoding instanceof PerceiverEncoding)) throw new InvalidArgumentError('encoding', "a PerceiverEncoding from this model's encode()", encoding);
    if (encoding.disposed) throw new DisposedError('the encoding');
    if (!this.decoder) throw new InvalidArgumentError('this', 'a model with a decoder', `${this.constructor.name} without decoder`);
    const request = this.#decodeRequest(call);
    const r: NativeDecodeOutputs = await this.#track(() => native.decode(encoding.handle, request));
    const out: PerceiverDecodeOutput<L | DeviceLogits<L>, OutputTensor> = { logits: toLogits(r.logits) as L | DeviceLogits<L> };
    if (r.crossAttentions) out.crossAttentions = r.crossAttentions.map(toOutput);
    return out as PerceiverDecodeOutput<L> | PerceiverDecodeOutput<DeviceLogits<L>, DeviceTensor>;
  }

  #usable(): NativeModelHandle {
    if (this.#disposed) throw new DisposedError(this.constructor.name);
    if (!this.#native) throw new InvalidArgumentError('this', 'a model with loaded weights (use fromPretrained or loadWeights)', 'a model without weights');
    return this.#native;
  }

  /** Runs a native call, mapping its errors (thrown at once or rejected later) to typed ones, and tracks it for dispose(). */
  async #track<T>(call: () => Promise<T>): Promise<T> {
    let promise: Promise<T>;
    try {
      promise = call();
    } catch (error) {
      throw fromNativeError(error);
    }
    const run = promise.catch((error: unknown) => {
      throw fromNativeError(error);
    });
    this.#inFlight.add(run);
    try {
      return await run;
    } finally {
      this.#inFlight.delete(run);
    }
  }

  #encodeRequest(call: EncodeCall & OutputOptions): NativeEncodeRequest {
    if (typeof call !== 'object' || call === null) throw new InvalidArgumentError('call', 'an object such as { inputs, attentionMask }', call);
    const { batch, inputs } = this.inputPreprocessor.prepare(call.inputs, 'inputs');
    for (const input of inputs) {
      if ('data' in input) checkEngineBuffer(input.name ? `inputs.${input.name}` : 'inputs', input.data);
    }
    let attentionMask: Uint8Array | undefined;
    if (call.attentionMask !== undefined && call.attentionMask !== null) {
      // The preprocessor says how long a mask row must be when it knows; otherwise the mask is
      // checked natively against the preprocessed sequence's length.
      const seq = this.inputPreprocessor.maskLength(inputs) ?? (call.attentionMask as Tensor).shape?.[1] ?? -1;
      attentionMask = keyMask(call.attentionMask, batch, seq);
      if (attentionMask) checkEngineBuffer('attentionMask', attentionMask);
    }
    if (call.seed !== undefined && !Number.isSafeInteger(call.seed)) throw new InvalidArgumentError('seed', 'an integer', call.seed);
    return {
      batch,
      inputs,
      attentionMask,
      interpolatePosEncoding: call.interpolatePosEncoding === true,
      seed: call.seed ?? 0,
      outputHiddenStates: call.outputHiddenStates === true,
      outputAttentions: call.outputAttentions === true,
      outputs: outputPlacement(call),
    };
  }

  #decodeRequest(call: DecodeCall & OutputOptions): NativeDecodeRequest {
    if (typeof call !== 'object' || call === null) throw new InvalidArgumentError('call', 'an object', call);
    const request: NativeDecodeRequest = { outputAttentions: call.outputAttentions === true, outputs: outputPlacement(call) };
    const points = call.subsampledOutputPoints;
    if (points === undefined || points === null) return request;
    const modalities = this.decoder?.outputModalities ?? [];
    const isList = points instanceof Tensor || ArrayBuffer.isView(points) || Array.isArray(points);
    if (modalities.length === 0) {
      if (!isList) throw new InvalidArgumentError('subsampledOutputPoints', 'one list of flat output indices (this model has a single output)', points);
      request.subsampledOutputPoints = [{ name: '', indices: pointIndices(points, 'subsampledOutputPoints') }];
      return request;
    }
    if (isList || typeof points !== 'object') {
      throw new InvalidArgumentError('subsampledOutputPoints', `an object of index lists keyed by modality (${modalities.join(', ')})`, points);
    }
    request.subsampledOutputPoints = [];
    for (const [name, list] of Object.entries(points)) {
      if (!modalities.includes(name)) {
        throw new InvalidArgumentError(`subsampledOutputPoints.${name}`, `one of the output modalities (${modalities.join(', ')})`, `an unknown modality "${name}"`);
      }
      if (list !== null && list !== undefined) request.subsampledOutputPoints.push({ name, indices: pointIndices(list, `subsampledOutputPoints.${name}`) });
    }
    return request;
  }

  /**
   * Releases the engine. Idempotent; resolves once calls already running have settled. Every
   * later call fails with DisposedError. Encodings and DeviceTensors still alive keep their own
   * memory (and the backend it lives in) until they are disposed, and stay usable on their own.
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await Promise.allSettled([...this.#inFlight]);
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
