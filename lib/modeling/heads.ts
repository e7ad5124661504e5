/** The Perceiver heads of transformers, each a PerceiverModel with its modules wired as there. */
import type { PerceiverConfig } from '../config.js';
import type { Tensor } from '../tensor.js';
import {
  PerceiverBasicDecoder,
  PerceiverBasicVideoAutoencodingDecoder,
  PerceiverClassificationDecoder,
  PerceiverMultimodalDecoder,
  PerceiverOpticalFlowDecoder,
} from './decoders.js';
import { checkConfig } from './options.js';
import { PerceiverModel } from './perceiver_model.js';
import {
  PerceiverAudioPostprocessor,
  PerceiverClassificationPostprocessor,
  PerceiverEmbeddingDecoder,
  PerceiverMultimodalPostprocessor,
  PerceiverProjectionPostprocessor,
} from './postprocessors.js';
import {
  PerceiverAudioPreprocessor,
  PerceiverImagePreprocessor,
  PerceiverMultimodalPreprocessor,
  PerceiverOneHotPreprocessor,
  PerceiverTextPreprocessor,
} from './preprocessors.js';

/** The decoder every classification head uses: one learned query of d_latents channels. */
function classificationDecoder(config: PerceiverConfig): PerceiverClassificationDecoder {
  return new PerceiverClassificationDecoder(config, {
    numChannels: config.d_latents,
    trainablePositionEncodingKwargs: { numChannels: config.d_latents, indexDims: 1 },
    useQueryResidual: true,
  });
}

/**
 * PerceiverForMaskedLM (deepmind/language-perceiver): byte inputs, a decoder with one learned
 * query per position (max_position_embeddings of them, whatever the input length), and logits over
 * the bytes through the input embeddings (tied weights).
 */
export class PerceiverForMaskedLM extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
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
        outputPostprocessor: new PerceiverEmbeddingDecoder(config, 'perceiver.input_preprocessor.embeddings.weight'),
      },
      'perceiver',
    );
    this.postprocessorPrefix = 'embedding_decoder';
  }
}

/** PerceiverForSequenceClassification: byte inputs, one learned query, logits over config.id2label. */
export class PerceiverForSequenceClassification extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    super(config, { inputPreprocessor: new PerceiverTextPreprocessor(config), decoder: classificationDecoder(config) }, 'perceiver');
  }
}

/** PerceiverForImageClassificationLearned (deepmind/vision-perceiver-learned): 1x1 conv features and learned positions. */
export class PerceiverForImageClassificationLearned extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    super(
      config,
      {
        inputPreprocessor: new PerceiverImagePreprocessor(config, {
          prepType: 'conv1x1',
          spatialDownsample: 1,
          outChannels: 256,
          positionEncodingType: 'trainable',
          concatOrAdd: 'concat',
          projectPosDim: 256,
          trainablePositionEncodingKwargs: { numChannels: 256, indexDims: config.image_size ** 2 },
        }),
        decoder: classificationDecoder(config),
      },
      'perceiver',
    );
  }
}

/** PerceiverForImageClassificationFourier (deepmind/vision-perceiver-fourier): raw pixels and 2-D Fourier features. */
export class PerceiverForImageClassificationFourier extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    super(
      config,
      {
        inputPreprocessor: new PerceiverImagePreprocessor(config, {
          prepType: 'pixels',
          spatialDownsample: 1,
          fourierPositionEncodingKwargs: { concatPos: true, maxResolution: [224, 224], numBands: 64, sineOnly: false },
        }),
        decoder: classificationDecoder(config),
      },
      'perceiver',
    );
  }
}

/** PerceiverForImageClassificationConvProcessing (deepmind/vision-perceiver-conv): conv stem and Fourier features. */
export class PerceiverForImageClassificationConvProcessing extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    super(
      config,
      {
        inputPreprocessor: new PerceiverImagePreprocessor(config, {
          prepType: 'conv',
          spatialDownsample: 1,
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: { concatPos: true, maxResolution: [56, 56], numBands: 64, sineOnly: false },
        }),
        decoder: classificationDecoder(config),
      },
      'perceiver',
    );
  }
}

/**
 * PerceiverForOpticalFlow (deepmind/optical-flow-perceiver): two frames of 3x3 patches per pixel
 * ([batch, 2, 27, height, width]) in, flow [batch, height, width, 2] out; the decoder queries the
 * latents with the preprocessed frames themselves.
 */
export class PerceiverForOpticalFlow extends PerceiverModel {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    const fourier = { numBands: 64, maxResolution: config.train_size, sineOnly: false, concatPos: true };
    const image = new PerceiverImagePreprocessor(config, {
      prepType: 'patches',
      spatialDownsample: 1,
      convAfterPatching: true,
      convAfterPatchingInChannels: 54,
      temporalDownsample: 2,
      positionEncodingType: 'fourier',
      fourierPositionEncodingKwargs: fourier,
    });
    super(
      config,
      {
        inputPreprocessor: image,
        decoder: new PerceiverOpticalFlowDecoder(config, {
          numChannels: image.numChannels,
          outputImageShape: config.train_size,
          rescaleFactor: 100.0,
          useQueryResidual: false,
          outputNumChannels: 2,
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: fourier,
        }),
      },
      'perceiver',
    );
  }
}

/**
 * PerceiverForMultimodalAutoencoding (deepmind/multimodal-perceiver): video, audio and a label in
 * (`inputs: { image, audio, label }`), their reconstructions out (`logits: { image, audio, label }`),
 * decoded at any subset of output points.
 */
export class PerceiverForMultimodalAutoencoding extends PerceiverModel<Record<string, Tensor<'float32'>>> {
  constructor(config: PerceiverConfig) {
    checkConfig(config);
    const audioSamples = config.num_frames * config.audio_samples_per_frame;
    const audioFourier = { numBands: 192, maxResolution: [audioSamples], sineOnly: false, concatPos: true };
    const videoFourier = { numBands: 32, maxResolution: [config.num_frames, config.image_size, config.image_size], sineOnly: false, concatPos: true };
    const inputPreprocessor = new PerceiverMultimodalPreprocessor({
      minPaddingSize: 4,
      modalities: {
        audio: new PerceiverAudioPreprocessor(config, {
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: audioFourier,
          prepType: 'patches',
          samplesPerPatch: config.samples_per_patch,
        }),
        image: new PerceiverImagePreprocessor(config, {
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: videoFourier,
          prepType: 'patches',
          spatialDownsample: 4,
          temporalDownsample: 1,
        }),
        label: new PerceiverOneHotPreprocessor(config),
      },
      maskProbs: { image: 0.0, audio: 0.0, label: 1.0 },
    });
    const decoder = new PerceiverMultimodalDecoder(config, {
      modalities: {
        audio: new PerceiverBasicDecoder(config, {
          outputIndexDims: [Math.floor(audioSamples / config.samples_per_patch)],
          outputNumChannels: config.output_num_channels,
          useQueryResidual: false,
          positionEncodingOnly: true,
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: audioFourier,
        }),
        image: new PerceiverBasicVideoAutoencodingDecoder(config, {
          outputShape: config.output_shape,
          outputNumChannels: config.output_num_channels,
          useQueryResidual: false,
          positionEncodingOnly: true,
          positionEncodingType: 'fourier',
          fourierPositionEncodingKwargs: videoFourier,
        }),
        label: new PerceiverClassificationDecoder(config, {
          useQueryResidual: false,
          positionEncodingOnly: true,
          positionEncodingType: 'trainable',
          trainablePositionEncodingKwargs: { numChannels: config._label_trainable_num_channels, indexDims: 1 },
        }),
      },
      numOutputs: null,
      outputNumChannels: config.output_num_channels,
      useQueryResidual: false,
    });
    super(
      config,
      {
        inputPreprocessor,
        decoder,
        outputPostprocessor: new PerceiverMultimodalPostprocessor({
          audio: new PerceiverAudioPostprocessor(config, config.output_num_channels),
          image: new PerceiverProjectionPostprocessor(config.output_num_channels, 3),
          label: new PerceiverClassificationPostprocessor(config, config.output_num_channels),
        }),
      },
      'perceiver',
    );
  }
}
