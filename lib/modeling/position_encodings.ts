/** transformers' PerceiverTrainablePositionEncoding: a learned [index_dim, num_channels] table. */
import type { WeightStore } from './weights.js';

export interface TrainablePositionEncodingOptions {
  /** Number of positions (transformers' index_dims, flattened). */
  indexDims: number | number[];
  numChannels?: number;
}

export class PerceiverTrainablePositionEncoding {
  readonly numPositions: number;
  readonly numChannels: number;

  constructor(options: TrainablePositionEncodingOptions) {
    const dims = Array.isArray(options.indexDims) ? options.indexDims : [options.indexDims];
    this.numPositions = dims.reduce((a, b) => a * b, 1);
    this.numChannels = options.numChannels ?? 128;
  }

  /** Claims `<prefix>.position_embeddings` and returns its name. */
  spec(weights: WeightStore, prefix: string): string {
    return weights.take(`${prefix}.position_embeddings`, [this.numPositions, this.numChannels]);
  }
}
