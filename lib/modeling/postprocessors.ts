/** Output postprocessors applied to the decoder's output. */
import type { PerceiverConfig } from '../config.js';
import type { EmbeddingPostprocessorSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PerceiverPostprocessor {
  spec(weights: WeightStore, decodedChannels: number): EmbeddingPostprocessorSpec;
}

/**
 * transformers' PerceiverEmbeddingDecoder: logits = hidden @ embeddings^T + bias, with the weight
 * tied to the input preprocessor's byte embeddings (no separate matrix in the checkpoint).
 */
export class PerceiverEmbeddingDecoder implements PerceiverPostprocessor {
  readonly vocabSize: number;

  constructor(
    config: PerceiverConfig,
    /** Checkpoint name of the tied embedding matrix. */
    readonly tiedEmbeddings: string,
    /** Checkpoint name of the bias. */
    readonly biasName: string,
  ) {
    this.vocabSize = config.vocab_size;
  }

  spec(weights: WeightStore, decodedChannels: number): EmbeddingPostprocessorSpec {
    return {
      type: 'embedding',
      projection: {
        weight: weights.take(this.tiedEmbeddings, [this.vocabSize, decodedChannels]),
        bias: weights.take(this.biasName, [this.vocabSize]),
        in: decodedChannels,
        out: this.vocabSize,
      },
    };
  }
}
