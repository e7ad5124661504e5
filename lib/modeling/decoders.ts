/** transformers' Perceiver decoders: cross-attention from output queries to the latents. */
import type { PerceiverConfig } from '../config.js';
import { PerceiverLayer } from './layers.js';
import { linear } from './layers.js';
import { PerceiverTrainablePositionEncoding, type TrainablePositionEncodingOptions } from './position_encodings.js';
import type { BasicDecoderSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PerceiverDecoder {
  /** Channels of each decoded position (before any postprocessor). */
  readonly outputChannels: number;
  spec(weights: WeightStore, prefix: string): BasicDecoderSpec;
}

export interface BasicDecoderOptions {
  outputNumChannels: number;
  /** Only 'trainable' queries so far; 'fourier' comes with the image heads. */
  positionEncodingType?: 'trainable';
  outputIndexDims?: number | number[];
  numChannels?: number;
  qkChannels?: number | null;
  vChannels?: number | null;
  numHeads?: number;
  wideningFactor?: number;
  useQueryResidual?: boolean;
  finalProject?: boolean;
  trainablePositionEncodingKwargs?: TrainablePositionEncodingOptions;
}

export class PerceiverBasicDecoder implements PerceiverDecoder {
  readonly outputNumChannels: number;
  readonly numChannels: number;
  readonly finalProject: boolean;
  readonly outputPositionEncodings: PerceiverTrainablePositionEncoding;
  readonly decodingCrossAttention: PerceiverLayer;

  constructor(config: PerceiverConfig, options: BasicDecoderOptions) {
    this.outputNumChannels = options.outputNumChannels;
    this.numChannels = options.numChannels ?? 128;
    this.finalProject = options.finalProject ?? true;
    this.outputPositionEncodings = new PerceiverTrainablePositionEncoding(
      options.trainablePositionEncodingKwargs ?? { indexDims: options.outputIndexDims ?? 1, numChannels: this.numChannels },
    );
    this.decodingCrossAttention = new PerceiverLayer(config, {
      isCrossAttention: true,
      qkChannels: options.qkChannels ?? null,
      vChannels: options.vChannels ?? null,
      numHeads: options.numHeads ?? 1,
      qDim: this.numChannels,
      kvDim: config.d_latents,
      wideningFactor: options.wideningFactor ?? 1,
      useQueryResidual: options.useQueryResidual ?? false,
    });
  }

  get numQueries(): number {
    return this.outputPositionEncodings.numPositions;
  }

  get outputChannels(): number {
    return this.finalProject ? this.outputNumChannels : this.numChannels;
  }

  spec(weights: WeightStore, prefix: string): BasicDecoderSpec {
    return {
      type: 'basic',
      queryPositions: this.outputPositionEncodings.spec(weights, `${prefix}.output_position_encodings`),
      numQueries: this.numQueries,
      queryChannels: this.numChannels,
      crossAttention: this.decodingCrossAttention.spec(weights, `${prefix}.decoding_cross_attention`),
      finalLayer: this.finalProject ? linear(weights, `${prefix}.final_layer`, this.numChannels, this.outputNumChannels) : null,
      keepFirstPositionOnly: false,
    };
  }
}

/** A basic decoder with one output position whose logits are the class scores. */
export class PerceiverClassificationDecoder implements PerceiverDecoder {
  readonly numLabels: number;
  readonly decoder: PerceiverBasicDecoder;

  constructor(config: PerceiverConfig, options: Omit<BasicDecoderOptions, 'outputNumChannels' | 'outputIndexDims'>) {
    this.numLabels = config.num_labels;
    this.decoder = new PerceiverBasicDecoder(config, { ...options, outputNumChannels: this.numLabels, outputIndexDims: 1 });
  }

  get outputChannels(): number {
    return this.numLabels;
  }

  spec(weights: WeightStore, prefix: string): BasicDecoderSpec {
    return { ...this.decoder.spec(weights, `${prefix}.decoder`), keepFirstPositionOnly: true };
  }
}
