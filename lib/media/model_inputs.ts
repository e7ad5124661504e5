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
import { InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { PerceiverImageProcessor } from '../image_processor.js';
import type { PerceiverModel } from '../modeling/perceiver_model.js';
import {
  type PerceiverImagePreprocessor,
  type PerceiverMultimodalPreprocessor,
  type PerceiverPreprocessor,
} from '../modeling/preprocessors.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { decodeAudio } from './audio.js';
import { checkPath, readHead, readMediaFile, regularFileSize } from './files.js';
import { mediaKindOf, MEDIA_EXTENSIONS, type MediaKind } from './kinds.js';
import { decodeVideoAudio, decodeVideoFrames, probeMedia, rgbToPlanes, videoDuration, type MediaToolOptions } from './video.js';
import { loadSharp as loadSharpPackage, type SharpFactory } from '../sharp.js';

export type { MediaKind } from './kinds.js';

/** One file, decoded into one model's inputs for a batch of one. */
export interface PreparedItem {
  kind: MediaKind;
  /** The file it came from. */
  path: string;
  /** Batch-of-one inputs: int64 token ids [1, length] (text), pixels [1, 3, H, W] (images) or { audio, image, label } (multimodal). */
  inputs: Tensor | Record<string, Tensor>;
  /** Text only: [1, length] of ones. */
  attentionMask?: Tensor;
}

export interface MediaInputBuilder {
  readonly accepts: readonly MediaKind[];
  /** Reads and decodes one file into this model's per-item inputs. Throws MediaDecodeError when the file cannot be read or decoded, InvalidArgumentError when its kind is not accepted by this model. */
  load(path: string): Promise<PreparedItem>;
  /** Stacks prepared items into one call: pass the result straight to model.embed(call.inputs, {attentionMask: call.attentionMask}) or model.forward(call). Items must be collatable together (the builder pads text to a common length with an attention mask). */
  collate(items: PreparedItem[]): { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor };
}

export interface MediaInputBuilderOptions extends MediaToolOptions {
  /** Image models: how images become pixels (default: transformers' defaults at config.image_size). */
  imageProcessor?: PerceiverImageProcessor;
  /** Largest image or audio file read, in bytes (default 64 MiB). */
  maxFileBytes?: number;
}

/** The frame rate of Kinetics-700, which the multimodal checkpoint was trained on (1920 samples per frame at 48 kHz). */
export const MULTIMODAL_FRAMES_PER_SECOND = 25;

const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Bytes of text read per token allowed: a token is one byte, or a 5-6 byte literal such as "[MASK]". */
const TEXT_BYTES_PER_TOKEN = 6;

type ModelFamily = 'text' | 'image' | 'multimodal';

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

function describeKinds(kinds: readonly MediaKind[]): string {
  return kinds.map((k) => `${k} (${MEDIA_EXTENSIONS[k].join(' ')})`).join(', ');
}

/** Gives the builder for a model's inputs (see the module comment for what each model takes). */
export function createMediaInputBuilder(model: PerceiverModel<any>, options: MediaInputBuilderOptions = {}): MediaInputBuilder {
  if (typeof model !== 'object' || model === null || !model.config || !model.inputPreprocessor) throw new InvalidArgumentError('model', 'a PerceiverModel', model);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  if (options.imageProcessor !== undefined && !(options.imageProcessor instanceof PerceiverImageProcessor)) {
    throw new InvalidArgumentError('options.imageProcessor', 'a PerceiverImageProcessor', options.imageProcessor);
  }
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (!Number.isSafeInteger(maxFileBytes) || maxFileBytes < 1) throw new InvalidArgumentError('options.maxFileBytes', 'a positive integer', maxFileBytes);
  const family = familyOf(model);
  const tools: MediaToolOptions = { ffmpegPath: options.ffmpegPath, ffprobePath: options.ffprobePath, timeoutMs: options.timeoutMs };
  const loaders = family === 'text' ? textLoaders(model) : family === 'image' ? imageLoaders(model, options.imageProcessor, tools, maxFileBytes) : multimodalLoaders(model, tools, maxFileBytes);
  const accepts = Object.freeze(Object.keys(loaders) as MediaKind[]);
  const modelName = model.constructor?.name ?? 'the model';

  return {
    accepts,
    async load(path: string): Promise<PreparedItem> {
      checkPath(path);
      const kind = mediaKindOf(path);
      if (kind === undefined || !accepts.includes(kind)) {
        throw new InvalidArgumentError(
          'path',
          `a file of a kind ${modelName} accepts: ${describeKinds(accepts)}`,
          path,
          `${modelName} accepts ${describeKinds(accepts)}; ${JSON.stringify(path)} is ${kind ? `${kind === 'image' ? 'an' : 'a'} ${kind} file` : 'of no known media kind (by its extension)'}`,
        );
      }
      const loaded = await loaders[kind]!(path);
      return { kind, path, ...loaded };
    },
    collate(items: PreparedItem[]) {
      if (!Array.isArray(items) || items.length === 0) throw new InvalidArgumentError('items', 'a non-empty array of prepared items', items);
      items.forEach((item, i) => {
        if (typeof item !== 'object' || item === null || !item.inputs) throw new InvalidArgumentError(`items[${i}]`, 'an item from this builder\'s load()', item);
      });
      return family === 'text' ? collateText(items) : collateTensors(items);
    },
  };
}

type Loaded = Pick<PreparedItem, 'inputs' | 'attentionMask'>;
type Loaders = Partial<Record<MediaKind, (path: string) => Promise<Loaded>>>;

// ---------------------------------------------------------------------------------------------
// Text

function textLoaders(model: PerceiverModel<any>): Loaders {
  const maxLength = model.config.max_position_embeddings;
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: maxLength });
  return {
    text: async (path) => {
      await regularFileSize(path);
      // Only the head can reach the model: read no more than maxLength tokens can take.
      const { bytes, complete } = await readHead(path, maxLength * TEXT_BYTES_PER_TOKEN + 8);
      let text: string;
      try {
        // `stream` when the file was cut: a character split at the cut is left out rather than an error.
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: !complete });
      } catch (error) {
        throw new MediaDecodeError(path, 'it is not UTF-8 text', { cause: error });
      }
      const ids = tokenizer.encode(text, { maxLength, truncation: true });
      const shape = [1, ids.length];
      return {
        inputs: new Tensor('int64', shape, BigInt64Array.from(ids, BigInt)),
        attentionMask: new Tensor('int64', shape, new BigInt64Array(ids.length).fill(1n)),
      };
    },
  };
}

function collateText(items: PreparedItem[]): { inputs: Tensor; attentionMask: Tensor } {
  const rows = items.map((item, i) => {
    const ids = item.inputs;
    if (!(ids instanceof Tensor) || (ids.dtype !== 'int64' && ids.dtype !== 'int32') || ids.rank !== 2 || ids.shape[0] !== 1) {
      throw new InvalidArgumentError(`items[${i}].inputs`, 'token ids [1, length] from this builder', ids);
    }
    const mask = item.attentionMask;
    return { ids, mask: mask instanceof Tensor && mask.size === ids.size ? mask : undefined };
  });
  const length = Math.max(...rows.map((r) => r.ids.shape[1]!));
  const ids = new BigInt64Array(items.length * length); // [PAD] is id 0
  const mask = new BigInt64Array(items.length * length);
  rows.forEach((row, b) => {
    const n = row.ids.shape[1]!;
    for (let j = 0; j < n; j++) {
      ids[b * length + j] = BigInt(row.ids.data[j]!);
      mask[b * length + j] = row.mask ? BigInt(row.mask.data[j]!) : 1n;
    }
  });
  const shape = [items.length, length];
  return { inputs: new Tensor('int64', shape, ids), attentionMask: new Tensor('int64', shape, mask) };
}

// ---------------------------------------------------------------------------------------------
// Images

/** transformers' defaults (crop 256, size 224) scaled to the model's image size, keeping the 224/256 ratio. */
export function defaultImageProcessor(imageSize: number): PerceiverImageProcessor {
  return new PerceiverImageProcessor({ size: imageSize, cropSize: Math.max(imageSize, Math.round((imageSize * 256) / 224)) });
}

function imageLoaders(model: PerceiverModel<any>, given: PerceiverImageProcessor | undefined, tools: MediaToolOptions, maxFileBytes: number): Loaders {
  const processor = given ?? defaultImageProcessor(model.config.image_size);
  const preprocess = async (input: Parameters<PerceiverImageProcessor['preprocess']>[0], path: string): Promise<Tensor> => {
    try {
      return await processor.preprocess(input);
    } catch (error) {
      // The processor names bad images as an argument; here they are a file that did not decode.
      if (error instanceof InvalidArgumentError) throw new MediaDecodeError(path, error.message.replace(/^Expected .*? but /, ''), { cause: error });
      throw error;
    }
  };
  return {
    image: async (path) => ({ inputs: await preprocess(await readMediaFile(path, maxFileBytes, 'options.maxFileBytes'), path) }),
    video: async (path) => {
      const middle = await decodeVideoFrames(path, { ...tools, frames: 1 });
      return { inputs: await preprocess({ data: middle.rgb, width: middle.width, height: middle.height, channels: 3 }, path) };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Multimodal autoencoding

function loadSharp(): Promise<SharpFactory> {
  return loadSharpPackage('Decoding image files');
}

/** An image file as 8-bit RGB, centre-cropped to a square and resized to size x size (bicubic). */
async function squareImage(path: string, size: number, maxFileBytes: number): Promise<Uint8Array> {
  const bytes = await readMediaFile(path, maxFileBytes, 'options.maxFileBytes');
  const sharp = await loadSharp();
  try {
    const { data, info } = await sharp(bytes, { autoOrient: true, failOn: 'truncated', pages: 1 })
      .removeAlpha()
      .toColourspace('srgb')
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'cubic' })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.length !== size * size * 3) throw new Error(`decoded to ${info.width}x${info.height} with ${info.channels} channels`);
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  } catch (error) {
    throw new MediaDecodeError(path, `it is not a readable image (${(error as Error).message})`, { cause: error });
  }
}

/** The centred `length` samples of a signal, zero-padded at the end when it is shorter. */
function centredSpan(samples: Float32Array, length: number): Float32Array {
  const out = new Float32Array(length);
  const start = Math.max(0, Math.floor((samples.length - length) / 2));
  out.set(samples.subarray(start, start + length));
  return out;
}

function multimodalLoaders(model: PerceiverModel<any>, tools: MediaToolOptions, maxFileBytes: number): Loaders {
  const c = model.config;
  const frames = c.num_frames;
  const size = c.image_size;
  const audioLength = c.num_frames * c.audio_samples_per_frame;
  const sampleRate = MULTIMODAL_FRAMES_PER_SECOND * c.audio_samples_per_frame;
  const clipSeconds = frames / MULTIMODAL_FRAMES_PER_SECOND;
  const item = (image: Tensor<'float32'>, audio: Float32Array): Loaded => ({
    inputs: {
      audio: new Tensor('float32', [1, audioLength, 1], audio),
      image: new Tensor('float32', [1, frames, 3, size, size], image.data),
      label: Tensor.zeros('float32', [1, c.num_labels]),
    },
  });
  const blackFrames = () => Tensor.zeros('float32', [frames, 3, size, size]);
  return {
    video: async (path) => {
      const probe = await probeMedia(path, tools);
      const start = Math.max(0, videoDuration(probe) / 2 - clipSeconds / 2);
      const [video, track] = await Promise.all([
        decodeVideoFrames(path, { ...tools, probe, frames, width: size, height: size, fps: MULTIMODAL_FRAMES_PER_SECOND, start }),
        probe.audio ? decodeVideoAudio(path, { ...tools, probe, sampleRate, start, durationSeconds: clipSeconds, maxSamples: audioLength + sampleRate }) : undefined,
      ]);
      const audio = new Float32Array(audioLength);
      if (track) audio.set(track.samples.subarray(0, audioLength));
      return item(video.pixels, audio);
    },
    audio: async (path) => {
      const decoded = await decodeAudio(path, { sampleRate, channels: 1, maxBytes: maxFileBytes });
      return item(blackFrames(), centredSpan(decoded.samples, audioLength));
    },
    image: async (path) => {
      const still = rgbToPlanes(await squareImage(path, size, maxFileBytes), 1, size, size).data;
      const pixels = new Float32Array(frames * still.length);
      for (let f = 0; f < frames; f++) pixels.set(still, f * still.length);
      return item(new Tensor('float32', [frames, 3, size, size], pixels), new Float32Array(audioLength));
    },
  };
}

/** Concatenates batch-of-one float tensors (or records of them) along the batch axis. */
function collateTensors(items: PreparedItem[]): { inputs: Tensor | Record<string, Tensor> } {
  const first = items[0]!.inputs;
  const stack = (tensors: unknown[], argument: (i: number) => string): Tensor => {
    const t0 = tensors[0];
    if (!(t0 instanceof Tensor) || t0.rank < 1 || t0.shape[0] !== 1) throw new InvalidArgumentError(argument(0), 'a batch-of-one Tensor from this builder', t0);
    const per = t0.size;
    const out = new Float32Array(per * tensors.length);
    tensors.forEach((t, i) => {
      if (!(t instanceof Tensor) || t.shape.length !== t0.shape.length || t.shape.some((d, k) => d !== t0.shape[k])) {
        throw new InvalidArgumentError(argument(i), `a Tensor of shape [${t0.shape.join(', ')}] like the first item's`, t instanceof Tensor ? `shape [${t.shape.join(', ')}]` : t);
      }
      out.set(t.toFloat32(), i * per);
    });
    return new Tensor('float32', [tensors.length, ...t0.shape.slice(1)], out);
  };
  if (first instanceof Tensor) return { inputs: stack(items.map((it) => it.inputs), (i) => `items[${i}].inputs`) };
  const names = Object.keys(first);
  const inputs: Record<string, Tensor> = {};
  for (const name of names) {
    inputs[name] = stack(
      items.map((it) => (it.inputs instanceof Tensor ? undefined : it.inputs[name])),
      (i) => `items[${i}].inputs.${name}`,
    );
  }
  return { inputs };
}
