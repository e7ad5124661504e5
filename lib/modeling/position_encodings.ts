/**
 * transformers' position encodings: PerceiverTrainablePositionEncoding (a learned table) and
 * PerceiverFourierPositionEncoding (sin/cos features of the index grid, computed natively once per
 * shape and cached, not rebuilt every call), plus build_position_encoding's optional projection.
 */
import { ConfigError } from '../errors.js';
import { linear } from './layers.js';
import { checkModuleOptions, flag, positiveSize, sizes } from './options.js';
import type { FourierSpec, LinearSpec, PositionEncodingSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface TrainablePositionEncodingOptions {
  /** Number of positions, or the index grid it flattens (transformers' index_dims). */
  indexDims: number | number[];
  numChannels?: number;
}

export class PerceiverTrainablePositionEncoding {
  readonly indexDims: number[];
  readonly numPositions: number;
  readonly numChannels: number;

  constructor(options: TrainablePositionEncodingOptions) {
    const o = checkModuleOptions<TrainablePositionEncodingOptions>(options, 'options', true);
    this.indexDims = sizes(o.indexDims, 'options.indexDims');
    this.numPositions = this.indexDims.reduce((a, b) => a * b, 1);
    this.numChannels = positiveSize(o.numChannels, 'options.numChannels', 128);
  }

  get numDimensions(): number {
    return this.indexDims.length;
  }

  outputSize(): number {
    return this.numChannels;
  }

  /** Claims `<prefix>.position_embeddings` and returns its name. */
  weightName(weights: WeightStore, prefix: string): string {
    return weights.take(`${prefix}.position_embeddings`, [this.numPositions, this.numChannels]);
  }
}

export interface FourierPositionEncodingOptions {
  numBands: number;
  maxResolution: number[];
  concatPos?: boolean;
  sineOnly?: boolean;
}

export class PerceiverFourierPositionEncoding {
  readonly numBands: number;
  readonly maxResolution: number[];
  readonly concatPos: boolean;
  readonly sineOnly: boolean;

  constructor(options: FourierPositionEncodingOptions) {
    const o = checkModuleOptions<FourierPositionEncodingOptions>(options, 'options', true);
    const numBands = o.numBands;
    const maxResolution: unknown = o.maxResolution;
    if (!Number.isSafeInteger(numBands) || numBands! < 1) throw new ConfigError('fourier numBands must be a positive integer');
    // How many dimensions the engine takes is the declaration's rule (native/spec/model_spec.json,
    // a "dims" field), checked once when the model is built from the spec.
    if (!Array.isArray(maxResolution) || maxResolution.length < 1 || !maxResolution.every((r) => Number.isSafeInteger(r) && r > 0)) {
      throw new ConfigError('fourier maxResolution must be a non-empty list of positive integers');
    }
    this.numBands = positiveSize(numBands, 'options.numBands');
    this.maxResolution = maxResolution.map((r, i) => positiveSize(r, `options.maxResolution[${i}]`));
    this.concatPos = flag(o.concatPos, 'options.concatPos', true);
    this.sineOnly = flag(o.sineOnly, 'options.sineOnly', false);
  }

  get numDimensions(): number {
    return this.maxResolution.length;
  }

  outputSize(): number {
    const d = this.maxResolution.length;
    return d * this.numBands * (this.sineOnly ? 1 : 2) + (this.concatPos ? d : 0);
  }

  fourierSpec(): FourierSpec {
    return { numBands: this.numBands, maxResolution: this.maxResolution, concatPos: this.concatPos, sineOnly: this.sineOnly };
  }
}

export type PositionEncoding = PerceiverTrainablePositionEncoding | PerceiverFourierPositionEncoding;

export interface PositionEncodingOptions {
  positionEncodingType: 'trainable' | 'fourier';
  /** Channels of the features the encoding is projected from (build_position_encoding's out_channels). */
  outChannels?: number;
  /** Project the encoding to this many channels (transformers' project_pos_dim; -1 = none). */
  projectPosDim?: number;
  trainablePositionEncodingKwargs?: TrainablePositionEncodingOptions;
  fourierPositionEncodingKwargs?: FourierPositionEncodingOptions;
}

/** transformers' build_position_encoding: the encoding and whether it is projected. */
export class BuiltPositionEncoding {
  readonly encoding: PositionEncoding;
  readonly projectPosDim: number;

  constructor(options: PositionEncodingOptions) {
    if (options.positionEncodingType === 'trainable') {
      if (!options.trainablePositionEncodingKwargs) throw new ConfigError('a trainable position encoding needs trainablePositionEncodingKwargs');
      this.encoding = new PerceiverTrainablePositionEncoding(options.trainablePositionEncodingKwargs);
    } else if (options.positionEncodingType === 'fourier') {
      if (!options.fourierPositionEncodingKwargs) throw new ConfigError('a Fourier position encoding needs fourierPositionEncodingKwargs');
      this.encoding = new PerceiverFourierPositionEncoding(options.fourierPositionEncodingKwargs);
    } else {
      throw new ConfigError(`unknown position encoding type ${JSON.stringify(options.positionEncodingType)}`);
    }
    const project = options.projectPosDim;
    this.projectPosDim = project === undefined || project === -1 ? -1 : positiveSize(project, 'options.projectPosDim');
  }

  /** Channels after the optional projection. */
  outputSize(): number {
    return this.projectPosDim > 0 ? this.projectPosDim : this.encoding.outputSize();
  }

  /** The engine's description; weights under `<prefix>.position_embeddings` and `<prefix>.positions_projection`. */
  spec(weights: WeightStore, prefix: string): PositionEncodingSpec {
    const projection: LinearSpec | null =
      this.projectPosDim > 0 ? linear(weights, `${prefix}.positions_projection`, this.encoding.outputSize(), this.projectPosDim) : null;
    if (this.encoding instanceof PerceiverTrainablePositionEncoding) {
      return {
        type: 'trainable',
        weight: this.encoding.weightName(weights, `${prefix}.position_embeddings`),
        numPositions: this.encoding.numPositions,
        numChannels: this.encoding.numChannels,
        projection,
      };
    }
    return { type: 'fourier', ...this.encoding.fourierSpec(), projection };
  }
}
