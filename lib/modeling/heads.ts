/** The Perceiver heads of transformers, each a PerceiverModel with its modules wired as there. */
import type { PerceiverConfig } from '../config.js';
import { PerceiverBasicDecoder, PerceiverClassificationDecoder } from './decoders.js';
import { PerceiverModel } from './perceiver_model.js';
import { PerceiverEmbeddingDecoder } from './postprocessors.js';
import { PerceiverTextPreprocessor } from './preprocessors.js';

/**
 * PerceiverForMaskedLM (deepmind/language-perceiver): byte inputs, a decoder with one learned
 * query per position (max_position_embeddings of them, whatever the input length), and logits over
 * the bytes through the input embeddings (tied weights).
 */
export class PerceiverForMaskedLM extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    const text = new PerceiverTextPreprocessor(config);
    super(
      config,
      {
        inputPreprocessor: text,
        decoder: new PerceiverBasicDecoder(config, {
          outputNumChannels: config.d_latents,
          outputIndexDims: config.max_position_embeddings,
          numChannels: text.numChannels,
          qkChannels: 8 * 32,
          vChannels: text.numChannels,
          numHeads: 8,
          useQueryResidual: false,
          finalProject: false,
          trainablePositionEncodingKwargs: { numChannels: text.numChannels, indexDims: config.max_position_embeddings },
        }),
        outputPostprocessor: new PerceiverEmbeddingDecoder(config, 'perceiver.input_preprocessor.embeddings.weight', 'embedding_decoder.bias'),
      },
      'perceiver',
    );
  }
}

/** PerceiverForSequenceClassification: byte inputs, one learned query, logits over config.id2label. */
export class PerceiverForSequenceClassification extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    super(
      config,
      {
        inputPreprocessor: new PerceiverTextPreprocessor(config),
        decoder: new PerceiverClassificationDecoder(config, {
          numChannels: config.d_latents,
          trainablePositionEncodingKwargs: { numChannels: config.d_latents, indexDims: 1 },
          useQueryResidual: true,
        }),
      },
      'perceiver',
    );
  }
}
