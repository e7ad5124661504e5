/**
 * Media files to a model's inputs. `createMediaInputBuilder(model)` looks at the model's input
 * preprocessor and gives a builder that reads files of the kinds that model takes (`load`) and
 * stacks them into one call (`collate`):
 *
 * - Text models (PerceiverTextPreprocessor: masked LM, sequence classification) accept text
 *   files (.txt, .md): read as UTF-8 (invalid UTF-8 is a MediaDecodeError), tokenized with
 *   PerceiverTokenizer as `[CLS] bytes [SEP]`, truncated to config.max_position_embeddings tokens.
 *   `collate` pads with [PAD] to the longest item and gives the attention mask; the padding is
 *   masked out, so an item's embedding does not depend on what it is batched with.
 * - Image classifiers (PerceiverImagePreprocessor with conv1x1, conv or pixels: the three vision
 *   heads) accept images and videos. Images go through PerceiverImageProcessor (transformers'
 *   centre crop, bicubic resize and ImageNet normalisation) at size config.image_size, with the
 *   crop ratio of the published checkpoints (224 of 256); a video gives its middle frame, at the
 *   video's own size, to the same processor. Pass `options.imageProcessor` to use a checkpoint's
 *   own (PerceiverImageProcessor.fromPretrained(dir)). Inputs: [1, 3, size, size].
 * - Multimodal autoencoding (audio + image + label modalities, deepmind/multimodal-perceiver)
 *   accepts videos, audio files and images, each made into one clip of what the model was trained
 *   on (Kinetics-700 at 25 frames per second, 48 kHz audio for the published checkpoint):
 *     image: [1, config.num_frames, 3, config.image_size, config.image_size], RGB in [0, 1]
 *            (8-bit / 255), centre-cropped to a square and resized (bicubic), as DeepMind's
 *            colab prepares Kinetics frames;
 *     audio: [1, config.num_frames * config.audio_samples_per_frame, 1], mono in [-1, 1], at
 *            25 * audio_samples_per_frame Hz so that audio_samples_per_frame samples span one frame
 *            (48000 Hz for the published 1920);
 *     label: [1, config.num_labels] zeros (the model masks this modality entirely: mask_probs label 1.0).
 *   A video gives num_frames consecutive frames at 25 fps and the audio of the same span, the
 *   clip centred on the middle of the video (a shorter video holds its last frame and pads the
 *   audio with silence; a video without sound has silent audio). An audio file gives the centred
 *   span of its samples (zero-padded when shorter) with all-zero frames. An image gives
 *   num_frames copies of itself as still frames with silent audio.
 * - Other models (optical flow, which takes pairs of frames as 3x3 patches, and a bare
 *   PerceiverModel without a media preprocessor) have no builder: InvalidArgumentError says what
 *   they take.
 */
import { InvalidArgumentError } from '../errors.js';
import { PerceiverImageProcessor } from '../image_processor.js';
import type { PerceiverModel } from '../modeling/perceiver_model.js';
import {
  type PerceiverImagePreprocessor,
  type PerceiverMultimodalPreprocessor,
  type PerceiverPreprocessor,
} from '../modeling/preprocessors.js';
import { DEFAULT_MAX_FILE_BYTES, defaultImageProcessor, FAMILY_KINDS, mediaInputBuilderOf, type MediaInputBuilder, type MediaInputSpec, type ModelFamily } from './media_builder.js';
import type { MediaKind } from './kinds.js';
import type { MediaToolOptions } from './video.js';

export type { MediaKind } from './kinds.js';
export { defaultImageProcessor, mediaInputBuilderOf, MULTIMODAL_FRAMES_PER_SECOND, type MediaInputBuilder, type MediaInputSpec, type PreparedItem } from './media_builder.js';

export interface MediaInputBuilderOptions extends MediaToolOptions {
  /** Image models: how images become pixels (default: transformers' defaults at config.image_size). */
  imageProcessor?: PerceiverImageProcessor;
  /** Largest image or audio file read, in bytes (default 64 MiB). */
  maxFileBytes?: number;
}

/** Which builder a model gets, or an InvalidArgumentError saying what it takes instead. */
function familyOf(model: PerceiverModel<any>): ModelFamily {
  const name = model.constructor?.name ?? 'the model';
  const pre: PerceiverPreprocessor = model.inputPreprocessor;
  if (pre.inputKind === 'text') return 'text';
  if (pre.inputKind === 'image') {
    if ((pre as PerceiverImagePreprocessor).prepType !== 'patches') return 'image';
    throw new InvalidArgumentError(
      'model',
      'a text, image-classification or multimodal-autoencoding model',
      name,
      `${name} takes pairs of video frames as 3x3 patches ([batch, 2, 27, height, width], optical flow), not media files: no media input builder for it`,
    );
  }
  if (pre.inputKind === 'multimodal') {
    const multimodal = pre as PerceiverMultimodalPreprocessor;
    const m = multimodal.modalities;
    const names = multimodal.names.join(',');
    if (names === 'audio,image,label' && m.audio!.inputKind === 'audio' && m.image!.inputKind === 'image' && m.label!.inputKind === 'labels') return 'multimodal';
    throw new InvalidArgumentError('model', 'a multimodal model with audio, image and label modalities', name, `${name} has modalities ${multimodal.names.join(', ')}; the media input builder knows audio + image (video) + label`);
  }
  throw new InvalidArgumentError(
    'model',
    'a text, image-classification or multimodal-autoencoding model',
    name,
    `${name} has no media preprocessor: it takes the encoder's input sequence itself (float [batch, sequence, ${model.config.d_model}]), not media files`,
  );
}

/**
 * The kinds of media files a model reads. Needs only the head's modules, not its weights: a head
 * made from the checkpoint's config (`new (AutoModel.headFor(config))(config)`) answers the same as
 * the loaded model. InvalidArgumentError for a model that takes no media files (optical flow, a
 * bare PerceiverModel).
 */
export function acceptedMediaKinds(model: PerceiverModel<any>): readonly MediaKind[] {
  if (typeof model !== 'object' || model === null || !model.config || !model.inputPreprocessor) throw new InvalidArgumentError('model', 'a PerceiverModel', model);
  return FAMILY_KINDS[familyOf(model)];
}

/** What createMediaInputBuilder makes a builder of (see MediaInputSpec); the same checks. */
export function mediaInputSpec(model: PerceiverModel<any>, options: MediaInputBuilderOptions = {}): MediaInputSpec {
  if (typeof model !== 'object' || model === null || !model.config || !model.inputPreprocessor) throw new InvalidArgumentError('model', 'a PerceiverModel', model);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  if (options.imageProcessor !== undefined && !(options.imageProcessor instanceof PerceiverImageProcessor)) {
    throw new InvalidArgumentError('options.imageProcessor', 'a PerceiverImageProcessor', options.imageProcessor);
  }
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (!Number.isSafeInteger(maxFileBytes) || maxFileBytes < 1) throw new InvalidArgumentError('options.maxFileBytes', 'a positive integer', maxFileBytes);
  const family = familyOf(model);
  const c = model.config;
  return {
    family,
    modelName: model.constructor?.name ?? 'the model',
    config: { max_position_embeddings: c.max_position_embeddings, image_size: c.image_size, num_frames: c.num_frames, audio_samples_per_frame: c.audio_samples_per_frame, num_labels: c.num_labels },
    imageProcessor: family === 'image' ? (options.imageProcessor ?? defaultImageProcessor(c.image_size)).options() : undefined,
    tools: { ffmpegPath: options.ffmpegPath, ffprobePath: options.ffprobePath, timeoutMs: options.timeoutMs },
    maxFileBytes,
  };
}

/** Gives the builder for a model's inputs (see the module comment for what each model takes). */
export function createMediaInputBuilder(model: PerceiverModel<any>, options: MediaInputBuilderOptions = {}): MediaInputBuilder {
  return mediaInputBuilderOf(mediaInputSpec(model, options));
}
