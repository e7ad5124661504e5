/**
 * Input preprocessors, named and configured as in transformers. Each checks what only JavaScript
 * can see of what a caller passes (its type, dtype, the batch it declares), turns it into the
 * engine's request, and describes its weights; the engine's preprocessor of the same name checks
 * the input's shape and values (once, for both) and runs the computation.
 */
import type { PerceiverConfig } from '../config.js';
import { DeviceTensor } from '../device_tensor.js';
import { ConfigError, DisposedError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { NativeInput } from '../native/binding.js';
import { linear } from './layers.js';
import { checkConfig, checkModuleOptions, finite, flag, moduleRecord, oneOf, positiveSize } from './options.js';
import {
  BuiltPositionEncoding,
  PerceiverFourierPositionEncoding,
  type FourierPositionEncodingOptions,
  type TrainablePositionEncodingOptions,
} from './position_encodings.js';
import type { PreprocessorSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PreparedInputs {
  batch: number;
  inputs: NativeInput[];
  attentionMask?: Uint8Array;
}

/**
 * What a caller passes a preprocessor: token ids (text), images or video, audio samples, a label
 * vector, the encoder's input sequence itself, or a record of modalities. Generic code (the
 * pipelines, the media input builder, the server) asks this rather than the class.
 */
export type PreprocessorInputKind = 'text' | 'image' | 'audio' | 'labels' | 'sequence' | 'multimodal';

export interface PerceiverPreprocessor {
  readonly inputKind: PreprocessorInputKind;
  /** Width of what the encoder cross-attends to (transformers' `num_channels`). */
  readonly numChannels: number;
  spec(weights: WeightStore, prefix: string): PreprocessorSpec;
  /** Checks the caller's inputs as far as JavaScript must (named `argument` in errors) and builds the engine's request. */
  prepare(inputs: unknown, argument: string): { batch: number; inputs: NativeInput[] };
  /**
   * The length of a row of the attention mask for these prepared inputs: the positions the
   * encoder attends to, when this preprocessor knows it before running; undefined when only the
   * engine knows it (after patching, pooling or joining modalities), which then checks the mask.
   */
  maskLength(prepared: NativeInput[]): number | undefined;
}

const MASK_DTYPES = ['int64', 'int32', 'int8', 'uint8', 'bool', 'float32', 'float64'];
const FLOAT_DTYPES = ['float32', 'float64', 'float16', 'bfloat16'];

/**
 * A float input: a host Tensor of any floating dtype, or a DeviceTensor (float32 in the model's
 * backend memory, which the engine checks belongs to this model).
 */
function floatInput(value: unknown, argument: string, expected: string): Tensor | DeviceTensor {
  if (value instanceof DeviceTensor) {
    if (value.disposed) throw new DisposedError(`the DeviceTensor passed as ${argument}`);
  } else if (!(value instanceof Tensor)) {
    throw new InvalidArgumentError(argument, `a Tensor or DeviceTensor ${expected}`, value);
  } else if (!FLOAT_DTYPES.includes(value.dtype)) {
    throw new InvalidArgumentError(argument, `a floating-point Tensor ${expected}`, `dtype ${value.dtype}`);
  } else {
    value.checkIntact(argument);
  }
  batchOf(value, argument, expected);
  return value;
}

/**
 * The batch (the leading dimension) the request declares. The rest of the shape is checked once,
 * by the engine's preprocessor, which must (it sizes what it reads and allocates from it):
 * native/src/model/preprocessors.cc.
 */
function batchOf(value: Tensor | DeviceTensor, argument: string, expected: string): number {
  if (value.rank < 1 || value.shape[0]! < 1) throw new InvalidArgumentError(argument, `a Tensor ${expected} with a batch of at least 1`, `shape [${value.shape.join(', ')}]`);
  return value.shape[0]!;
}

/** The engine's input: host values as a Float32Array (a view when already float32), or the device tensor's handle. */
function nativeFloat(name: string, t: Tensor | DeviceTensor): NativeInput {
  if (t instanceof DeviceTensor) return { name, shape: [...t.shape], device: t.handle };
  return { name, shape: [...t.shape], data: t.toFloat32() };
}

/** transformers' PerceiverTextPreprocessor: byte embeddings plus learned absolute positions. */
export class PerceiverTextPreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'text' as const;
  readonly vocabSize: number;
  readonly maxPositionEmbeddings: number;
  readonly numChannels: number;

  constructor(config: PerceiverConfig) {
    this.vocabSize = checkConfig(config).vocab_size;
    this.maxPositionEmbeddings = config.max_position_embeddings;
    this.numChannels = config.d_model;
  }

  spec(weights: WeightStore, prefix: string): PreprocessorSpec {
    return {
      type: 'text',
      embeddings: weights.take(`${prefix}.embeddings.weight`, [this.vocabSize, this.numChannels]),
      positionEmbeddings: weights.take(`${prefix}.position_embeddings.weight`, [this.maxPositionEmbeddings, this.numChannels]),
      vocabSize: this.vocabSize,
      maxPositionEmbeddings: this.maxPositionEmbeddings,
      dModel: this.numChannels,
    };
  }

  prepare(ids: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    if (ids instanceof DeviceTensor) {
      // The ids are validated and looked up on the host, and a DeviceTensor holds float32 only.
      throw new InvalidArgumentError(argument, 'a host Tensor of token ids', 'a DeviceTensor', `${argument}: token ids must be a host Tensor (int64 or int32), not a DeviceTensor`);
    }
    if (!(ids instanceof Tensor)) throw new InvalidArgumentError(argument, 'a Tensor of token ids with shape [batch, sequence]', ids);
    if (ids.dtype !== 'int64' && ids.dtype !== 'int32') {
      throw new InvalidArgumentError(argument, 'token ids of dtype int64 or int32', `dtype ${ids.dtype}`);
    }
    ids.checkIntact(argument);
    batchOf(ids, argument, 'of token ids [batch, sequence]');
    // The shape [batch, sequence], the sequence's length and each id's range are checked once, by
    // the engine, which must (they index its tables): native/src/model/preprocessors.cc.
    return { batch: ids.shape[0]!, inputs: [{ name: '', shape: [...ids.shape], data: ids.data as BigInt64Array | Int32Array }] };
  }

  /** One position per token (undefined for a shape the engine refuses). */
  maskLength(prepared: NativeInput[]): number | undefined {
    const shape = prepared[0]!.shape;
    return shape.length === 2 ? shape[1] : undefined;
  }
}

export interface ImagePreprocessorOptions {
  prepType?: 'conv' | 'conv1x1' | 'patches' | 'pixels';
  spatialDownsample?: number;
  temporalDownsample?: number;
  positionEncodingType?: 'trainable' | 'fourier';
  inChannels?: number;
  outChannels?: number;
  convAfterPatching?: boolean;
  convAfterPatchingInChannels?: number;
  conv2dUseBatchnorm?: boolean;
  concatOrAdd?: 'concat' | 'add';
  projectPosDim?: number;
  trainablePositionEncodingKwargs?: TrainablePositionEncodingOptions;
  fourierPositionEncodingKwargs?: FourierPositionEncodingOptions;
}

/** transformers' PerceiverImagePreprocessor: conv1x1, conv (7x7 stem), raw pixels or space-to-depth patches, plus positions. */
export class PerceiverImagePreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'image' as const;
  readonly prepType: 'conv' | 'conv1x1' | 'patches' | 'pixels';
  readonly spatialDownsample: number;
  readonly temporalDownsample: number;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly convAfterPatching: boolean;
  readonly convAfterPatchingInChannels: number;
  readonly concatOrAdd: 'concat' | 'add';
  readonly positionEmbeddings: BuiltPositionEncoding;

  // config is taken, as transformers' signature takes it, though no image setting is read from it.
  constructor(config: PerceiverConfig, options: ImagePreprocessorOptions = {}) {
    checkConfig(config);
    options = checkModuleOptions<ImagePreprocessorOptions>(options);
    this.prepType = options.prepType ?? 'conv';
    if (!['conv', 'conv1x1', 'patches', 'pixels'].includes(this.prepType)) throw new ConfigError(`prep_type ${JSON.stringify(this.prepType)} is invalid`);
    this.spatialDownsample = positiveSize(options.spatialDownsample, 'options.spatialDownsample', 4);
    this.temporalDownsample = positiveSize(options.temporalDownsample, 'options.temporalDownsample', 1);
    this.inChannels = positiveSize(options.inChannels, 'options.inChannels', 3);
    this.outChannels = positiveSize(options.outChannels, 'options.outChannels', 64);
    this.convAfterPatching = flag(options.convAfterPatching, 'options.convAfterPatching', false);
    this.convAfterPatchingInChannels = positiveSize(options.convAfterPatchingInChannels, 'options.convAfterPatchingInChannels', 54);
    this.concatOrAdd = options.concatOrAdd ?? 'concat';
    if (this.concatOrAdd !== 'concat' && this.concatOrAdd !== 'add') throw new ConfigError(`concat_or_add_pos ${JSON.stringify(this.concatOrAdd)} is invalid`);
    if (this.prepType === 'conv') {
      const layers = Math.log(this.spatialDownsample) / Math.log(4);
      if (Math.round(layers) !== layers || this.temporalDownsample !== 1) {
        throw new ConfigError('only powers of 4 are supported for spatial and 1 for temporal downsampling with conv');
      }
      if (options.conv2dUseBatchnorm === false) throw new ConfigError('the conv stem without BatchNorm is not supported');
    }
    if (this.prepType === 'conv1x1' && this.temporalDownsample !== 1) throw new ConfigError('conv1x1 does not downsample in time');
    this.positionEmbeddings = new BuiltPositionEncoding({
      positionEncodingType: options.positionEncodingType ?? 'fourier',
      outChannels: this.outChannels,
      projectPosDim: options.projectPosDim,
      trainablePositionEncodingKwargs: options.trainablePositionEncodingKwargs,
      fourierPositionEncodingKwargs: options.fourierPositionEncodingKwargs,
    });
  }

  /** The channels per position before the positions join them (for the prep type), as transformers counts them. */
  get featureChannels(): number {
    const isTemporal = this.positionEmbeddings.encoding.numDimensions > 2;
    if (this.convAfterPatching || this.prepType === 'conv1x1' || this.prepType === 'conv') return this.outChannels;
    if (this.prepType === 'pixels') return isTemporal ? this.inChannels : Math.ceil(this.inChannels / this.spatialDownsample);
    return this.inChannels * this.spatialDownsample ** 2 * (isTemporal ? this.temporalDownsample : 1);
  }

  /** transformers' num_channels: feature channels plus the position encoding's, or the position encoding's when added. */
  get numChannels(): number {
    const pos = this.positionEmbeddings.outputSize();
    return this.concatOrAdd === 'add' ? pos : this.featureChannels + pos;
  }

  spec(weights: WeightStore, prefix: string): PreprocessorSpec {
    const c = this.inChannels;
    let conv = null;
    let batchnorm = null;
    if (this.prepType === 'conv') {
      conv = { weight: weights.take(`${prefix}.convnet.conv.weight`, [this.outChannels, c, 7, 7]), bias: null, in: c * 49, out: this.outChannels };
      const bn = `${prefix}.convnet.batchnorm`;
      batchnorm = {
        weight: weights.take(`${bn}.weight`, [this.outChannels]),
        bias: weights.take(`${bn}.bias`, [this.outChannels]),
        runningMean: weights.take(`${bn}.running_mean`, [this.outChannels]),
        runningVar: weights.take(`${bn}.running_var`, [this.outChannels]),
        eps: 1e-5,
      };
      if (weights.has(`${bn}.num_batches_tracked`)) weights.ignore(`${bn}.num_batches_tracked`);
    } else if (this.prepType === 'conv1x1') {
      conv = {
        weight: weights.take(`${prefix}.convnet_1x1.weight`, [this.outChannels, c, 1, 1]),
        bias: weights.take(`${prefix}.convnet_1x1.bias`, [this.outChannels]),
        in: c,
        out: this.outChannels,
      };
    }
    return {
      type: 'image',
      prepType: this.prepType,
      inChannels: c,
      outChannels: this.outChannels,
      spatialDownsample: this.spatialDownsample,
      temporalDownsample: this.temporalDownsample,
      conv,
      batchnorm,
      convAfterPatching:
        this.prepType === 'patches' && this.convAfterPatching
          ? linear(weights, `${prefix}.conv_after_patches`, this.convAfterPatchingInChannels, this.outChannels)
          : null,
      position: this.positionEmbeddings.spec(weights, prefix),
      concatOrAdd: this.concatOrAdd,
      featureChannels: this.featureChannels,
      numChannels: this.numChannels,
    };
  }

  prepare(value: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    const expected = `of images [batch, channels, height, width]${this.prepType === 'patches' || this.prepType === 'pixels' ? ' or video [batch, frames, channels, height, width]' : ''}`;
    const t = floatInput(value, argument, expected);
    return { batch: t.shape[0]!, inputs: [nativeFloat('', t)] };
  }

  /** Known after the convolution, patching or pooling only. */
  maskLength(): undefined {
    return undefined;
  }
}

export interface AudioPreprocessorOptions {
  prepType?: 'patches';
  samplesPerPatch?: number;
  positionEncodingType?: 'trainable' | 'fourier';
  concatOrAdd?: 'concat' | 'add';
  outChannels?: number;
  projectPosDim?: number;
  trainablePositionEncodingKwargs?: TrainablePositionEncodingOptions;
  fourierPositionEncodingKwargs?: FourierPositionEncodingOptions;
}

/** transformers' PerceiverAudioPreprocessor: samples grouped into patches, plus positions. */
export class PerceiverAudioPreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'audio' as const;
  readonly samplesPerPatch: number;
  readonly concatOrAdd: 'concat' | 'add';
  readonly positionEmbeddings: BuiltPositionEncoding;

  constructor(config: PerceiverConfig, options: AudioPreprocessorOptions = {}) {
    checkConfig(config);
    options = checkModuleOptions<AudioPreprocessorOptions>(options);
    if ((options.prepType ?? 'patches') !== 'patches') throw new ConfigError(`prep_type ${JSON.stringify(options.prepType)} is invalid, can only be 'patches'`);
    this.samplesPerPatch = positiveSize(options.samplesPerPatch, 'options.samplesPerPatch', 96);
    this.concatOrAdd = oneOf(options.concatOrAdd, 'options.concatOrAdd', ['concat', 'add'], 'concat');
    this.positionEmbeddings = new BuiltPositionEncoding({
      positionEncodingType: options.positionEncodingType ?? 'fourier',
      outChannels: positiveSize(options.outChannels, 'options.outChannels', 64),
      projectPosDim: options.projectPosDim,
      trainablePositionEncodingKwargs: options.trainablePositionEncodingKwargs,
      fourierPositionEncodingKwargs: options.fourierPositionEncodingKwargs,
    });
    // Audio patches lie on a line: Fourier features over another grid would never match one.
    if (this.positionEmbeddings.encoding instanceof PerceiverFourierPositionEncoding && this.positionEmbeddings.encoding.numDimensions !== 1) {
      throw new ConfigError(`audio Fourier positions must be 1-D (max_resolution of one entry), got ${this.positionEmbeddings.encoding.numDimensions}-D`);
    }
  }

  get numChannels(): number {
    const pos = this.positionEmbeddings.outputSize();
    return this.concatOrAdd === 'add' ? pos : this.samplesPerPatch + pos;
  }

  spec(weights: WeightStore, prefix: string): PreprocessorSpec {
    return {
      type: 'audio',
      samplesPerPatch: this.samplesPerPatch,
      position: this.positionEmbeddings.spec(weights, prefix),
      concatOrAdd: this.concatOrAdd,
      numChannels: this.numChannels,
    };
  }

  prepare(value: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    const t = floatInput(value, argument, '[batch, samples, 1]');
    return { batch: t.shape[0]!, inputs: [nativeFloat('', t)] };
  }

  /** One position per patch of samples_per_patch samples (undefined for a shape the engine refuses). */
  maskLength(prepared: NativeInput[]): number | undefined {
    const shape = prepared[0]!.shape;
    const patches = shape.slice(1).reduce((a, b) => a * b, 1) / this.samplesPerPatch;
    return shape.length >= 2 && Number.isSafeInteger(patches) && patches >= 1 ? patches : undefined;
  }
}

/** transformers' PerceiverOneHotPreprocessor: a [batch, num_labels] vector as one position. */
export class PerceiverOneHotPreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'labels' as const;
  readonly numChannels: number;

  constructor(config: PerceiverConfig) {
    this.numChannels = checkConfig(config).num_labels;
  }

  spec(): PreprocessorSpec {
    return { type: 'onehot', numLabels: this.numChannels };
  }

  prepare(value: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    const t = floatInput(value, argument, `[batch, ${this.numChannels}]`);
    return { batch: t.shape[0]!, inputs: [nativeFloat('', t)] };
  }

  /** The label vector is one position. */
  maskLength(): number {
    return 1;
  }
}

export interface MultimodalPreprocessorOptions {
  modalities: Record<string, PerceiverPreprocessor>;
  /** Probability that each position of a modality is replaced by its learned mask token. */
  maskProbs?: Record<string, number>;
  minPaddingSize?: number;
}

/**
 * transformers' PerceiverMultimodalPreprocessor: each modality preprocessed, padded with learned
 * channels to a common width, optionally masked, and concatenated in sorted modality order.
 */
export class PerceiverMultimodalPreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'multimodal' as const;
  readonly modalities: Record<string, PerceiverPreprocessor>;
  readonly maskProbs: Record<string, number>;
  readonly minPaddingSize: number;

  constructor(options: MultimodalPreprocessorOptions) {
    options = checkModuleOptions<MultimodalPreprocessorOptions>(options, 'options', true) as MultimodalPreprocessorOptions;
    this.modalities = moduleRecord<PerceiverPreprocessor>(
      options.modalities,
      'options.modalities',
      (m) => typeof m === 'object' && m !== null && typeof (m as PerceiverPreprocessor).prepare === 'function' && typeof (m as PerceiverPreprocessor).spec === 'function',
      'a preprocessor',
    );
    const maskProbs: unknown = options.maskProbs ?? {};
    if (typeof maskProbs !== 'object' || maskProbs === null || Array.isArray(maskProbs)) throw new InvalidArgumentError('options.maskProbs', 'an object of probabilities keyed by modality', maskProbs);
    this.maskProbs = Object.fromEntries(Object.entries(maskProbs).map(([name, p]) => [name, finite(p, `options.maskProbs.${name}`, 0)]));
    this.minPaddingSize = options.minPaddingSize === undefined ? 2 : positiveSize(options.minPaddingSize, 'options.minPaddingSize');
    for (const [name, p] of Object.entries(this.maskProbs)) {
      if (!Object.hasOwn(this.modalities, name)) throw new ConfigError(`mask_probs names modality ${JSON.stringify(name)}, which the preprocessor does not have`);
      if (!(p >= 0 && p <= 1)) throw new ConfigError(`mask_probs.${name} must be in [0, 1]`);
    }
  }

  /** The modality names in transformers' (sorted) order. */
  get names(): string[] {
    return Object.keys(this.modalities).sort();
  }

  get numChannels(): number {
    let widest = 0;
    for (const p of Object.values(this.modalities)) widest = Math.max(widest, p.numChannels);
    return widest + this.minPaddingSize;
  }

  spec(weights: WeightStore, prefix: string): PreprocessorSpec {
    const c = this.numChannels;
    return {
      type: 'multimodal',
      numChannels: c,
      modalities: this.names.map((name) => {
        const p = this.modalities[name]!;
        const padding = weights.take(`${prefix}.padding.${name}`, [1, c - p.numChannels]);
        return {
          name,
          preprocessor: p.spec(weights, `${prefix}.modalities.${name}`),
          padding: c > p.numChannels ? padding : null,
          mask: name in this.maskProbs ? weights.take(`${prefix}.mask.${name}`, [1, c]) : null,
          maskProbability: this.maskProbs[name] ?? 0,
        };
      }),
    };
  }

  prepare(value: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    const names = this.names;
    if (typeof value !== 'object' || value === null || value instanceof Tensor || Array.isArray(value)) {
      throw new InvalidArgumentError(argument, `an object of Tensors keyed by modality (${names.join(', ')})`, value);
    }
    const given = value as Record<string, unknown>;
    for (const key of Object.keys(given)) {
      if (!names.includes(key)) throw new InvalidArgumentError(`${argument}.${key}`, `one of the model's modalities (${names.join(', ')})`, `an unknown modality "${key}"`);
    }
    let batch = -1;
    const inputs: NativeInput[] = [];
    for (const name of names) {
      if (given[name] === undefined) throw new InvalidArgumentError(`${argument}.${name}`, `a Tensor for modality "${name}" (this model needs ${names.join(', ')})`, undefined);
      const part = this.modalities[name]!.prepare(given[name], `${argument}.${name}`);
      if (batch >= 0 && part.batch !== batch) throw new InvalidArgumentError(`${argument}.${name}`, `a batch of ${batch}, as the other modalities`, `a batch of ${part.batch}`);
      batch = part.batch;
      inputs.push(...part.inputs.map((input) => ({ ...input, name })));
    }
    return { batch, inputs };
  }

  /** The modalities' positions joined, when each one knows its own. */
  maskLength(prepared: NativeInput[]): number | undefined {
    let total = 0;
    for (const name of this.names) {
      const length = this.modalities[name]!.maskLength(prepared.filter((input) => input.name === name));
      if (length === undefined) return undefined;
      total += length;
    }
    return total;
  }
}

/**
 * No preprocessor (transformers' PerceiverModel without input_preprocessor): the caller passes the
 * encoder's input sequence itself, float [batch, sequence, d_model].
 */
export class PerceiverIdentityPreprocessor implements PerceiverPreprocessor {
  readonly inputKind = 'sequence' as const;
  constructor(readonly numChannels: number) {}

  spec(): PreprocessorSpec {
    return { type: 'none', numChannels: this.numChannels };
  }

  prepare(value: unknown, argument: string): { batch: number; inputs: NativeInput[] } {
    const t = floatInput(value, argument, `[batch, sequence, ${this.numChannels}]`);
    return { batch: t.shape[0]!, inputs: [nativeFloat('', t)] };
  }

  /** The caller's sequence is what the encoder attends to (undefined for a shape the engine refuses). */
  maskLength(prepared: NativeInput[]): number | undefined {
    const shape = prepared[0]!.shape;
    return shape.length === 3 ? shape[1] : undefined;
  }
}

/** Validates an attention mask of shape [batch, seq] (1 = attend, 0 = padding) into bytes. */
export function keyMask(mask: unknown, batch: number, seq: number): Uint8Array | undefined {
  if (mask === undefined || mask === null) return undefined;
  if (!(mask instanceof Tensor)) throw new InvalidArgumentError('attentionMask', `a Tensor of shape [${batch}, ${seq}]`, mask);
  if (!MASK_DTYPES.includes(mask.dtype)) throw new InvalidArgumentError('attentionMask', `one of dtypes ${MASK_DTYPES.join(', ')}`, `dtype ${mask.dtype}`);
  mask.checkIntact('attentionMask');
  if (mask.rank !== 2 || mask.shape[0] !== batch || mask.shape[1] !== seq) {
    throw new InvalidArgumentError('attentionMask', `shape [${batch}, ${seq}] (the shape of inputs)`, `shape [${mask.shape.join(', ')}]`);
  }
  const out = new Uint8Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    let any = false;
    for (let j = 0; j < seq; j++) {
      const v = Number(mask.data[b * seq + j]);
      if (v !== 0 && v !== 1) throw new InvalidArgumentError('attentionMask', 'values 0 or 1', `${v} at [${b}, ${j}]`);
      out[b * seq + j] = v;
      any ||= v === 1;
    }
    if (!any) {
      throw new InvalidArgumentError('attentionMask', 'at least one attended (1) position in every row', `row ${b} with every position masked`);
    }
  }
  return out;
}
