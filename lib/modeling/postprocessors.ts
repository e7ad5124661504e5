/** transformers' Perceiver output postprocessors, applied natively to the decoder's output. */
import type { PerceiverConfig } from '../config.js';
import { InvalidArgumentError } from '../errors.js';
import { checkConfig, moduleRecord, positiveSize } from './options.js';
import { ConfigError } from '../errors.js';
import { linear } from './layers.js';
import type { PostprocessorSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PerceiverPostprocessor {
  /** The engine's description; `prefix` is where its weights live, `inChannels` what the decoder produces. */
  spec(weights: WeightStore, prefix: string, inChannels: number): PostprocessorSpec;
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
  ) {
    this.vocabSize = checkConfig(config).vocab_size;
    if (typeof tiedEmbeddings !== 'string' || tiedEmbeddings === '') throw new InvalidArgumentError('tiedEmbeddings', 'the checkpoint name of the tied embedding matrix', tiedEmbeddings);
  }

  spec(weights: WeightStore, prefix: string, inChannels: number): PostprocessorSpec {
    return {
      type: 'embeddingDecoder',
      projection: {
        weight: weights.take(this.tiedEmbeddings, [this.vocabSize, inChannels]),
        bias: weights.take(`${prefix}.bias`, [this.vocabSize]),
        in: inChannels,
        out: this.vocabSize,
      },
    };
  }
}

/** Linear to num_labels, keeping the first position: [batch, num_labels]. */
export class PerceiverClassificationPostprocessor implements PerceiverPostprocessor {
  constructor(
    readonly config: PerceiverConfig,
    readonly inChannels: number,
  ) {
    checkConfig(config);
    positiveSize(inChannels, 'inChannels');
  }

  spec(weights: WeightStore, prefix: string): PostprocessorSpec {
    return { type: 'classification', projection: linear(weights, `${prefix}.classifier`, this.inChannels, this.config.num_labels) };
  }
}

/** Linear to samples_per_patch, patches joined into one waveform: [batch, samples]. */
export class PerceiverAudioPostprocessor implements PerceiverPostprocessor {
  constructor(
    readonly config: PerceiverConfig,
    readonly inChannels: number,
    postprocType: 'patches' = 'patches',
  ) {
    checkConfig(config);
    positiveSize(inChannels, 'inChannels');
    if (postprocType !== 'patches') throw new ConfigError('invalid postproc_type: only "patches" is supported');
  }

  spec(weights: WeightStore, prefix: string): PostprocessorSpec {
    return { type: 'audio', projection: linear(weights, `${prefix}.classifier`, this.inChannels, this.config.samples_per_patch) };
  }
}

/** Linear projection of every position's channels. */
export class PerceiverProjectionPostprocessor implements PerceiverPostprocessor {
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
  ) {
    positiveSize(inChannels, 'inChannels');
    positiveSize(outChannels, 'outChannels');
  }

  spec(weights: WeightStore, prefix: string): PostprocessorSpec {
    return { type: 'projection', projection: linear(weights, `${prefix}.classifier`, this.inChannels, this.outChannels) };
  }
}

/** Splits the decoded positions by modality and applies each modality's postprocessor. */
export class PerceiverMultimodalPostprocessor implements PerceiverPostprocessor {
  readonly modalities: Record<string, PerceiverPostprocessor>;

  constructor(modalities: Record<string, PerceiverPostprocessor>) {
    this.modalities = moduleRecord<PerceiverPostprocessor>(
      modalities,
      'modalities',
      (m) => typeof m === 'object' && m !== null && typeof (m as PerceiverPostprocessor).spec === 'function',
      'a postprocessor',
    );
  }

  spec(weights: WeightStore, prefix: string, inChannels: number): PostprocessorSpec {
    return {
      type: 'multimodal',
      modalities: Object.keys(this.modalities)
        .sort()
        .map((name) => ({ name, postprocessor: this.modalities[name]!.spec(weights, `${prefix}.modalities.${name}`, inChannels) })),
    };
  }
}
