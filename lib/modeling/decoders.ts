/**
 * transformers' Perceiver decoders: output queries cross-attend to the latents. Queries come from a
 * learned table, from Fourier features of the output grid (computed natively, at any subset of its
 * points), or from the preprocessed inputs (optical flow).
 */
import type { PerceiverConfig } from '../config.js';
import { checkConfig, checkModuleOptions, finite, flag, moduleRecord, oneOf, optionalSize, positiveSize, sizes } from './options.js';
import { ConfigError, InvalidArgumentError } from '../errors.js';
import { linear, PerceiverLayer } from './layers.js';
import {
  PerceiverFourierPositionEncoding,
  PerceiverTrainablePositionEncoding,
  type FourierPositionEncodingOptions,
  type TrainablePositionEncodingOptions,
} from './position_encodings.js';
import type { BasicDecoderSpec, DecoderSpec, LinearSpec, QuerySpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PerceiverDecoder {
  /** Channels of each decoded position (before any postprocessor). */
  readonly outputChannels: number;
  /** Output modalities a caller may subsample (empty for single-output decoders). */
  readonly outputModalities: string[];
  spec(weights: WeightStore, prefix: string): DecoderSpec;
}

export interface BasicDecoderOptions {
  outputNumChannels: number;
  positionEncodingType?: 'trainable' | 'fourier' | 'none';
  outputIndexDims?: number | number[];
  numChannels?: number;
  subsampledIndexDims?: number | number[];
  qkChannels?: number | null;
  vChannels?: number | null;
  numHeads?: number;
  wideningFactor?: number;
  useQueryResidual?: boolean;
  concatPreprocessedInput?: boolean;
  finalProject?: boolean;
  positionEncodingOnly?: boolean;
  trainablePositionEncodingKwargs?: TrainablePositionEncodingOptions;
  fourierPositionEncodingKwargs?: FourierPositionEncodingOptions;
}

export class PerceiverBasicDecoder implements PerceiverDecoder {
  readonly outputNumChannels: number;
  readonly positionEncodingType: 'trainable' | 'fourier' | 'none';
  readonly outputIndexDims: number[];
  readonly numChannels: number;
  readonly finalProject: boolean;
  readonly positionEncodingOnly: boolean;
  readonly outputPositionEncodings: PerceiverTrainablePositionEncoding | PerceiverFourierPositionEncoding | null;
  readonly decodingCrossAttention: PerceiverLayer | null;
  readonly outputModalities: string[] = [];

  constructor(config: PerceiverConfig, options: BasicDecoderOptions) {
    checkConfig(config);
    options = checkModuleOptions<BasicDecoderOptions>(options, 'options', true) as BasicDecoderOptions;
    this.outputNumChannels = positiveSize(options.outputNumChannels, 'options.outputNumChannels');
    this.positionEncodingType = oneOf(options.positionEncodingType, 'options.positionEncodingType', ['trainable', 'fourier', 'none'], 'trainable');
    this.outputIndexDims = sizes(options.outputIndexDims ?? 1, 'options.outputIndexDims');
    this.numChannels = positiveSize(options.numChannels, 'options.numChannels', 128);
    this.finalProject = flag(options.finalProject, 'options.finalProject', true);
    this.positionEncodingOnly = flag(options.positionEncodingOnly, 'options.positionEncodingOnly', false);
    if (options.concatPreprocessedInput) throw new ConfigError('decoders with concat_preprocessed_input are not supported');
    if (this.positionEncodingType === 'trainable') {
      if (!options.trainablePositionEncodingKwargs) throw new ConfigError('a trainable decoder query needs trainablePositionEncodingKwargs');
      this.outputPositionEncodings = new PerceiverTrainablePositionEncoding(options.trainablePositionEncodingKwargs);
    } else if (this.positionEncodingType === 'fourier') {
      if (!options.fourierPositionEncodingKwargs) throw new ConfigError('a Fourier decoder query needs fourierPositionEncodingKwargs');
      this.outputPositionEncodings = new PerceiverFourierPositionEncoding(options.fourierPositionEncodingKwargs);
    } else {
      this.outputPositionEncodings = null;
    }
    this.decodingCrossAttention = this.positionEncodingOnly
      ? null
      : new PerceiverLayer(config, {
          isCrossAttention: true,
          qkChannels: optionalSize(options.qkChannels, 'options.qkChannels'),
          vChannels: optionalSize(options.vChannels, 'options.vChannels'),
          numHeads: positiveSize(options.numHeads, 'options.numHeads', 1),
          qDim: this.numChannels,
          kvDim: config.d_latents,
          wideningFactor: positiveSize(options.wideningFactor, 'options.wideningFactor', 1),
          useQueryResidual: flag(options.useQueryResidual, 'options.useQueryResidual', false),
        });
  }

  /** Channels of the queries this decoder builds (transformers' num_query_channels). */
  get numQueryChannels(): number {
    if (!this.outputPositionEncodings) throw new ConfigError('a decoder with position_encoding_type "none" takes its queries from elsewhere');
    if (this.positionEncodingOnly) return this.outputPositionEncodings.outputSize();
    return this.finalProject ? this.outputNumChannels : this.numChannels;
  }

  get outputChannels(): number {
    return this.finalProject ? this.outputNumChannels : this.numChannels;
  }

  /** This decoder's queries, for the engine. */
  querySpec(weights: WeightStore, prefix: string): QuerySpec {
    const enc = this.outputPositionEncodings;
    if (enc instanceof PerceiverTrainablePositionEncoding) {
      return { type: 'trainable', weight: enc.weightName(weights, `${prefix}.output_position_encodings`), numPositions: enc.numPositions, numChannels: enc.numChannels };
    }
    if (enc instanceof PerceiverFourierPositionEncoding) return { type: 'fourier', ...enc.fourierSpec(), outputIndexDims: this.outputIndexDims };
    throw new ConfigError('a decoder with position_encoding_type "none" takes its queries from elsewhere');
  }

  /** The cross-attention and final projection, for the engine. */
  layerSpecs(weights: WeightStore, prefix: string): { crossAttention: ReturnType<PerceiverLayer['spec']>; finalLayer: LinearSpec | null } {
    if (!this.decodingCrossAttention) throw new ConfigError('a position-encoding-only decoder has no cross-attention');
    return {
      crossAttention: this.decodingCrossAttention.spec(weights, `${prefix}.decoding_cross_attention`),
      finalLayer: this.finalProject ? linear(weights, `${prefix}.final_layer`, this.numChannels, this.outputNumChannels) : null,
    };
  }

  /** This decoder for the engine, as held by the decoders built on it. */
  basicSpec(weights: WeightStore, prefix: string): BasicDecoderSpec {
    return { queries: this.querySpec(weights, prefix), ...this.layerSpecs(weights, prefix) };
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    return { type: 'basic', ...this.basicSpec(weights, prefix) };
  }
}

/** A basic decoder with one learned query whose output is the class scores. */
export class PerceiverClassificationDecoder implements PerceiverDecoder {
  readonly numLabels: number;
  readonly decoder: PerceiverBasicDecoder;
  readonly outputModalities: string[] = [];

  constructor(config: PerceiverConfig, options: Omit<BasicDecoderOptions, 'outputNumChannels' | 'outputIndexDims'>) {
    this.numLabels = checkConfig(config).num_labels;
    this.decoder = new PerceiverBasicDecoder(config, { ...checkModuleOptions(options, 'options', true), outputNumChannels: this.numLabels, outputIndexDims: 1 });
  }

  get numQueryChannels(): number {
    return this.decoder.numQueryChannels;
  }

  get outputChannels(): number {
    return this.numLabels;
  }

  querySpec(weights: WeightStore, prefix: string): QuerySpec {
    return this.decoder.querySpec(weights, `${prefix}.decoder`);
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    return { type: 'classification', decoder: this.decoder.basicSpec(weights, `${prefix}.decoder`) };
  }
}

export interface OpticalFlowDecoderOptions extends Omit<BasicDecoderOptions, 'outputNumChannels'> {
  outputImageShape: number[];
  outputNumChannels?: number;
  rescaleFactor?: number;
}

/** transformers' PerceiverOpticalFlowDecoder: the preprocessed frames query the latents; flow = output / rescale_factor. */
export class PerceiverOpticalFlowDecoder implements PerceiverDecoder {
  readonly outputImageShape: number[];
  readonly outputNumChannels: number;
  readonly rescaleFactor: number;
  readonly decoder: PerceiverBasicDecoder;
  readonly outputModalities: string[] = [];

  constructor(config: PerceiverConfig, options: OpticalFlowDecoderOptions) {
    checkConfig(config);
    options = checkModuleOptions<OpticalFlowDecoderOptions>(options, 'options', true) as OpticalFlowDecoderOptions;
    const shape: unknown = options.outputImageShape;
    if (!Array.isArray(shape)) throw new InvalidArgumentError('options.outputImageShape', '[height, width]', shape);
    this.outputImageShape = sizes(shape, 'options.outputImageShape');
    this.outputNumChannels = positiveSize(options.outputNumChannels, 'options.outputNumChannels', 2);
    this.rescaleFactor = finite(options.rescaleFactor, 'options.rescaleFactor', 100);
    this.decoder = new PerceiverBasicDecoder(config, { ...options, outputNumChannels: this.outputNumChannels });
  }

  get outputChannels(): number {
    return this.outputNumChannels;
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    // transformers' optical-flow decoder queries with the preprocessed frames themselves.
    return {
      type: 'opticalFlow',
      decoder: { queries: { type: 'inputs' }, ...this.decoder.layerSpecs(weights, `${prefix}.decoder`) },
      rescaleFactor: this.rescaleFactor,
      outputImageShape: this.outputImageShape,
    };
  }
}

export interface VideoAutoencodingDecoderOptions extends Omit<BasicDecoderOptions, 'outputIndexDims'> {
  /** [batch, frames, height, width] of the output, excluding channels. */
  outputShape: number[];
  positionEncodingType: 'trainable' | 'fourier' | 'none';
}

/** transformers' PerceiverBasicVideoAutoencodingDecoder: a basic decoder over (frames, height, width). */
export class PerceiverBasicVideoAutoencodingDecoder implements PerceiverDecoder {
  readonly outputShape: number[];
  readonly decoder: PerceiverBasicDecoder;
  readonly outputModalities: string[] = [];

  constructor(config: PerceiverConfig, options: VideoAutoencodingDecoderOptions) {
    checkConfig(config);
    options = checkModuleOptions<VideoAutoencodingDecoderOptions>(options, 'options', true) as VideoAutoencodingDecoderOptions;
    const shape: unknown = options.outputShape;
    if (!Array.isArray(shape)) throw new InvalidArgumentError('options.outputShape', '[batch, frames, height, width]', shape);
    if (shape.length !== 4) throw new ConfigError(`expected a rank 4 output_shape, got [${shape.join(', ')}]`);
    this.outputShape = sizes(shape, 'options.outputShape');
    this.decoder = new PerceiverBasicDecoder(config, { ...options, outputIndexDims: this.outputShape.slice(1, 4) });
  }

  get numQueryChannels(): number {
    return this.decoder.numQueryChannels;
  }

  get outputChannels(): number {
    return this.decoder.outputChannels;
  }

  querySpec(weights: WeightStore, prefix: string): QuerySpec {
    return this.decoder.querySpec(weights, `${prefix}.decoder`);
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    return { type: 'basicVideoAutoencoding', decoder: this.decoder.basicSpec(weights, `${prefix}.decoder`), outputShape: this.outputShape };
  }
}

/** A decoder that can build queries for the multimodal decoder. */
export interface QueryDecoder {
  readonly numQueryChannels: number;
  querySpec(weights: WeightStore, prefix: string): QuerySpec;
}

export interface MultimodalDecoderOptions extends Omit<BasicDecoderOptions, 'outputNumChannels' | 'positionEncodingType' | 'numChannels'> {
  modalities: Record<string, QueryDecoder>;
  numOutputs?: number | null;
  outputNumChannels: number;
  minPaddingSize?: number;
}

/**
 * transformers' PerceiverMultimodalDecoder: each modality's decoder only builds queries; they are
 * padded with learned channels to a common width, concatenated in sorted order, and decoded by
 * one shared cross-attention.
 */
export class PerceiverMultimodalDecoder implements PerceiverDecoder {
  readonly modalities: Record<string, QueryDecoder>;
  readonly minPaddingSize: number;
  readonly outputNumChannels: number;
  readonly decoder: PerceiverBasicDecoder;

  constructor(config: PerceiverConfig, options: MultimodalDecoderOptions) {
    checkConfig(config);
    options = checkModuleOptions<MultimodalDecoderOptions>(options, 'options', true) as MultimodalDecoderOptions;
    this.modalities = moduleRecord<QueryDecoder>(
      options.modalities,
      'options.modalities',
      (m) => typeof m === 'object' && m !== null && typeof (m as QueryDecoder).querySpec === 'function',
      'a decoder that builds queries (basic, classification or video autoencoding decoder)',
    );
    this.minPaddingSize = options.minPaddingSize === undefined ? 2 : positiveSize(options.minPaddingSize, 'options.minPaddingSize');
    this.outputNumChannels = positiveSize(options.outputNumChannels, 'options.outputNumChannels');
    const { modalities: _m, numOutputs, minPaddingSize: _p, ...rest } = options;
    this.decoder = new PerceiverBasicDecoder(config, {
      ...rest,
      outputIndexDims: numOutputs === undefined || numOutputs === null ? 1 : positiveSize(numOutputs, 'options.numOutputs'),
      outputNumChannels: options.outputNumChannels,
      positionEncodingType: 'none',
      numChannels: this.numQueryChannels,
    });
  }

  get outputModalities(): string[] {
    return Object.keys(this.modalities).sort();
  }

  get numQueryChannels(): number {
    let widest = 0;
    for (const d of Object.values(this.modalities)) widest = Math.max(widest, d.numQueryChannels);
    return widest + this.minPaddingSize;
  }

  get outputChannels(): number {
    return this.decoder.outputChannels;
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    const c = this.numQueryChannels;
    return {
      type: 'multimodal',
      queryChannels: c,
      ...this.decoder.layerSpecs(weights, `${prefix}.decoder`),
      modalities: this.outputModalities.map((name) => {
        const d = this.modalities[name]!;
        const padding = weights.take(`${prefix}.padding.${name}`, [1, c - d.numQueryChannels]);
        return { name, queries: d.querySpec(weights, `${prefix}.modalities.${name}`), padding: c > d.numQueryChannels ? padding : null };
      }),
    };
  }
}

/** transformers' PerceiverProjectionDecoder: the mean latent through a linear classifier (no cross-attention). */
export class PerceiverProjectionDecoder implements PerceiverDecoder {
  readonly numLabels: number;
  readonly dLatents: number;
  readonly outputModalities: string[] = [];

  constructor(config: PerceiverConfig) {
    this.numLabels = checkConfig(config).num_labels;
    this.dLatents = config.d_latents;
  }

  get outputChannels(): number {
    return this.numLabels;
  }

  spec(weights: WeightStore, prefix: string): DecoderSpec {
    return { type: 'projection', classifier: linear(weights, `${prefix}.classifier`, this.dLatents, this.numLabels) };
  }
}
