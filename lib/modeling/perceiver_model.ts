/**
 * The runtime model: a Perceiver module tree (mirroring transformers') bound to a checkpoint's
 * weights and compiled into one native engine. A forward is one native call on a worker thread.
 */
import { PerceiverConfig } from '../config.js';
import { BackendUnavailableError, ConfigError, DisposedError, InvalidArgumentError } from '../errors.js';
import { loadCheckpointWeights } from '../io/checkpoint.js';
import { fromNativeError, loadAddon, type NativeModelHandle, type NativeTensor } from '../native/binding.js';
import { Tensor } from '../tensor.js';
import { PerceiverEncoder } from './layers.js';
import type { PerceiverDecoder } from './decoders.js';
import type { PerceiverPostprocessor } from './postprocessors.js';
import type { PerceiverPreprocessor } from './preprocessors.js';
import type { ModelSpec } from './spec.js';
import { WeightStore } from './weights.js';

export const DEVICE_DTYPES = ['float32', 'tfloat32', 'float16', 'bfloat16'] as const;
export type ComputeDType = (typeof DEVICE_DTYPES)[number];

export interface LoadOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** Compute precision; the CPU backend runs float32. */
  dtype?: ComputeDType;
}

export interface ForwardCall {
  /** Token ids [batch, sequence] (int64 or int32) for text models. */
  inputs: Tensor;
  /** [batch, sequence], 1 = attend, 0 = padding. */
  attentionMask?: Tensor;
  /** Also return the latents around every self-attention layer, as transformers' output_hidden_states. */
  outputHiddenStates?: boolean;
  /** Also return attention weights, as transformers' output_attentions. */
  outputAttentions?: boolean;
}

export interface PerceiverModelOutput {
  /** The head's output (absent for a model without decoder). */
  logits?: Tensor<'float32'>;
  /** The latents after the encoder, [batch, num_latents, d_latents]. */
  lastHiddenState: Tensor<'float32'>;
  hiddenStates?: Tensor<'float32'>[];
  /** Latent self-attention weights, [batch, heads, num_latents, num_latents] per layer applied. */
  attentions?: Tensor<'float32'>[];
  /** The encoder's cross-attention weights, then the decoder's. */
  crossAttentions?: Tensor<'float32'>[];
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

function toTensor(t: NativeTensor): Tensor<'float32'> {
  return new Tensor('float32', t.shape, t.data);
}

const join = (prefix: string, name: string) => (prefix ? `${prefix}.${name}` : name);

export class PerceiverModel {
  readonly config: PerceiverConfig;
  readonly inputPreprocessor?: PerceiverPreprocessor;
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
  #native: NativeModelHandle | undefined;
  #inFlight = new Set<Promise<unknown>>();
  #disposed = false;

  constructor(config: PerceiverConfig, modules: PerceiverModules = {}, weightPrefix = '') {
    if (!(config instanceof PerceiverConfig)) throw new InvalidArgumentError('config', 'a PerceiverConfig', config);
    this.config = config;
    this.inputPreprocessor = modules.inputPreprocessor;
    this.decoder = modules.decoder;
    this.outputPostprocessor = modules.outputPostprocessor;
    this.weightPrefix = weightPrefix;
    this.encoder = new PerceiverEncoder(config, this.inputPreprocessor?.numChannels ?? config.d_model);
  }

  /** Loads `config.json` and the weights of a Hugging Face checkpoint folder into this class. */
  static async fromPretrained<T extends PerceiverModel>(
    this: new (config: PerceiverConfig) => T,
    dir: string,
    options: LoadOptions = {},
  ): Promise<T> {
    const config = await PerceiverConfig.fromPretrained(dir);
    const model = new this(config);
    const { tensors } = await loadCheckpointWeights(dir);
    return model.loadWeights(tensors, options);
  }

  /**
   * Binds checkpoint tensors (transformers' names) and builds the native engine. A WeightStore may
   * be passed instead of tensors (RandomWeightStore gives random weights at any shape).
   */
  async loadWeights(tensors: Map<string, Tensor> | WeightStore, options: LoadOptions = {}): Promise<this> {
    if (this.#disposed) throw new DisposedError(this.constructor.name);
    if (this.#native) throw new InvalidArgumentError('this', 'a model whose weights are not loaded yet', 'a loaded model');
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
    const device = parseDevice(options.device);
    const dtype = options.dtype ?? 'float32';
    if (!DEVICE_DTYPES.includes(dtype)) throw new InvalidArgumentError('dtype', DEVICE_DTYPES.map((d) => `'${d}'`).join(', '), dtype);
    const addon = loadAddon();
    if (device.kind === 'cuda') {
      const cuda = addon.capabilities().cuda;
      throw new BackendUnavailableError(`device '${options.device}' is not available: ${cuda.reason ?? 'unknown reason'}`);
    }
    if (dtype !== 'float32') {
      throw new BackendUnavailableError(`dtype '${dtype}' is not supported on the cpu backend (it computes in float32); use dtype 'float32'`);
    }
    if (this.config.hidden_act !== 'gelu') {
      throw new ConfigError(`hidden_act "${this.config.hidden_act}" is not supported (supported: "gelu", the exact erf GELU)`);
    }
    const store = tensors instanceof WeightStore ? tensors : new WeightStore(tensors);
    const spec = this.buildSpec(store);
    try {
      this.#native = new addon.NativeModel(spec, store.claimed(), { device: device.kind });
    } catch (error) {
      throw fromNativeError(error);
    }
    this.unusedWeights = store.unused();
    this.device = device.kind === 'cpu' ? 'cpu' : `cuda:${device.index}`;
    this.dtype = dtype;
    return this;
  }

  /** The engine's description of this module tree with its weights claimed from `store`. */
  protected buildSpec(store: WeightStore): ModelSpec {
    if (!this.inputPreprocessor) {
      throw new ConfigError(`${this.constructor.name} needs an input preprocessor to run (use a head class such as PerceiverForMaskedLM)`);
    }
    const p = this.weightPrefix;
    const c = this.config;
    const decoder = this.decoder?.spec(store, join(p, 'decoder')) ?? null;
    return {
      layerNormEps: 1e-5, // what transformers' LayerNorms use, whatever config.layer_norm_eps says
      preprocessor: this.inputPreprocessor.spec(store, join(p, 'input_preprocessor')),
      encoder: this.encoder.spec(store, join(p, 'encoder'), store.take(join(p, 'embeddings.latents'), [c.num_latents, c.d_latents])),
      decoder,
      postprocessor: this.outputPostprocessor && this.decoder ? this.outputPostprocessor.spec(store, this.decoder.outputChannels) : null,
    };
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Runs the model. Resolves with transformers' outputs in camelCase, all float32 host tensors. */
  async forward(call: ForwardCall): Promise<PerceiverModelOutput> {
    if (this.#disposed) throw new DisposedError(this.constructor.name);
    if (!this.#native) throw new InvalidArgumentError('this', 'a model with loaded weights (use fromPretrained or loadWeights)', 'a model without weights');
    if (typeof call !== 'object' || call === null) throw new InvalidArgumentError('call', 'an object such as { inputs, attentionMask }', call);
    const request = this.inputPreprocessor!.request(call);
    const run = this.#native
      .forward({ ...request, outputHiddenStates: call.outputHiddenStates === true, outputAttentions: call.outputAttentions === true })
      .catch((error: unknown) => {
        throw fromNativeError(error);
      });
    this.#inFlight.add(run);
    try {
      const r = await run;
      const out: PerceiverModelOutput = { lastHiddenState: toTensor(r.lastHiddenState) };
      if (r.logits) out.logits = toTensor(r.logits);
      if (r.hiddenStates) out.hiddenStates = r.hiddenStates.map(toTensor);
      if (r.attentions) out.attentions = r.attentions.map(toTensor);
      if (r.crossAttentions) out.crossAttentions = r.crossAttentions.map(toTensor);
      return out;
    } finally {
      this.#inFlight.delete(run);
    }
  }

  /**
   * Releases the engine. Idempotent; resolves once forwards already running have settled. Every
   * later call fails with DisposedError.
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
