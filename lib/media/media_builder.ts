/**
 * The media input builders themselves (see lib/media/model_inputs.ts for what each model takes):
 * `mediaInputBuilderOf(spec)` makes one from plain data (MediaInputSpec), without the model, so a
 * decoding worker thread (lib/media/decode_pool.ts) builds the same one as the calling thread
 * without loading the modeling code or the native engine.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { PerceiverImageProcessor, type ImageProcessorOptions } from '../image_processor.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { decodeAudio } from './audio.js';
import { checkMediaSize, checkPath, readHead, readMediaFile, regularFileSize } from './files.js';
import { mediaKindOf, MEDIA_EXTENSIONS, type MediaKind } from './kinds.js';
import { decodeVideoAudio, decodeVideoFrames, probeMedia, rgbToPlanes, videoDuration, type MediaToolOptions } from './video.js';
import { loadSharp as loadSharpPackage, type SharpFactory } from '../sharp.js';

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
  /**
   * The same for a file's bytes already in memory (a remote object, a tar member): `path` names it
   * (errors, the result's path) and `name` (default `path`) gives its kind by its extension. A
   * video is written to a private temporary file for ffmpeg and removed at once.
   */
  loadBytes(bytes: Uint8Array, path: string, name?: string): Promise<PreparedItem>;
  /** Stacks prepared items into one call: pass the result straight to model.embed(call.inputs, {attentionMask: call.attentionMask}) or model.forward(call). Items must be collatable together (the builder pads text to a common length with an attention mask). */
  collate(items: PreparedItem[]): { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor };
}

/** The frame rate of Kinetics-700, which the multimodal checkpoint was trained on (1920 samples per frame at 48 kHz). */
export const MULTIMODAL_FRAMES_PER_SECOND = 25;

/** Largest image or audio file read, by default (MediaInputBuilderOptions.maxFileBytes). */
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Bytes of text read per token allowed: a token is one byte, or a 5-6 byte literal such as "[MASK]". */
const TEXT_BYTES_PER_TOKEN = 6;

export type ModelFamily = 'text' | 'image' | 'multimodal';

/**
 * The media kinds each family reads, in the order messages list them; each has its loader below.
 * The one place that says what a head reads: builders take `accepts` from here, and so does an
 * enqueuer that filters a collection from the checkpoint's config alone (acceptedMediaKinds in
 * model_inputs.ts).
 */
export const FAMILY_KINDS: Readonly<Record<ModelFamily, readonly MediaKind[]>> = Object.freeze({
  text: Object.freeze(['text'] as const),
  image: Object.freeze(['image', 'video'] as const),
  multimodal: Object.freeze(['video', 'audio', 'image'] as const),
});

/**
 * All a builder needs of its model and options, as plain data: a worker thread makes the same
 * builder of it (lib/media/decode_pool.ts), so its items equal the calling thread's bit for bit.
 */
export interface MediaInputSpec {
  family: ModelFamily;
  /** The model's class name, for messages. */
  modelName: string;
  config: { max_position_embeddings: number; image_size: number; num_frames: number; audio_samples_per_frame: number; num_labels: number };
  /** Image models: the processor's options (PerceiverImageProcessor.options()). */
  imageProcessor?: ImageProcessorOptions;
  tools: MediaToolOptions;
  maxFileBytes: number;
}

function describeKinds(kinds: readonly MediaKind[]): string {
  return kinds.map((k) => `${k} (${MEDIA_EXTENSIONS[k].join(' ')})`).join(', ');
}

/** The builder a spec describes (mediaInputSpec): what createMediaInputBuilder gives, and what a decoding worker thread runs. */
export function mediaInputBuilderOf(spec: MediaInputSpec): MediaInputBuilder {
  const { family, tools, maxFileBytes, modelName } = spec;
  const loaders =
    family === 'text' ? textLoaders(spec.config) : family === 'image' ? imageLoaders(new PerceiverImageProcessor(spec.imageProcessor), tools, maxFileBytes) : multimodalLoaders(spec.config, tools, maxFileBytes);
  const accepts = FAMILY_KINDS[family];
  const kindOf = (name: string, path: string): MediaKind => {
    const kind = mediaKindOf(name);
    if (kind === undefined || !accepts.includes(kind)) {
      throw new InvalidArgumentError(
        'path',
        `a file of a kind ${modelName} accepts: ${describeKinds(accepts)}`,
        path,
        `${modelName} accepts ${describeKinds(accepts)}; ${JSON.stringify(path)} is ${kind ? `${kind === 'image' ? 'an' : 'a'} ${kind} file` : 'of no known media kind (by its extension)'}`,
      );
    }
    return kind;
  };

  return {
    accepts,
    async load(path: string): Promise<PreparedItem> {
      checkPath(path);
      const kind = kindOf(path, path);
      const loaded = await loaders[kind]!({ path });
      return { kind, path, ...loaded };
    },
    async loadBytes(bytes: Uint8Array, path: string, name = path): Promise<PreparedItem> {
      if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError('bytes', 'a Uint8Array of the file', bytes);
      checkPath(path);
      checkPath(name, 'name');
      const kind = kindOf(name, path);
      try {
        // Text reads only its head, of any file size (as load does).
        if (kind === 'text') return { kind, path, ...(await loaders.text!({ path, bytes })) };
        if (kind !== 'video') return { kind, path, ...(await loaders[kind]!({ path, bytes: checkMediaSize(path, bytes, maxFileBytes, 'options.maxFileBytes') })) };
        // ffmpeg reads files: a folder only this call knows (mkdtemp), removed with the file.
        const folder = await mkdtemp(join(tmpdir(), 'perceiver-io-video-'));
        try {
          const file = join(folder, `item${extname(name).toLowerCase()}`);
          await writeFile(file, bytes, { flag: 'wx', mode: 0o600 });
          return { kind, path, ...(await loaders.video!({ path: file })) };
        } finally {
          await rm(folder, { recursive: true, force: true });
        }
      } catch (error) {
        // The decoders name the bytes or the temporary file: name the object instead.
        if (error instanceof MediaDecodeError && error.file !== path) throw new MediaDecodeError(path, error.reason, { cause: error });
        throw error;
      }
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
/** A file to decode: its path, and its bytes when they are already in memory (checked against maxFileBytes). */
interface Source {
  path: string;
  bytes?: Uint8Array;
}
type Loaders = Partial<Record<MediaKind, (source: Source) => Promise<Loaded>>>;

// ---------------------------------------------------------------------------------------------
// Text

function textLoaders(config: MediaInputSpec['config']): Loaders {
  const maxLength = config.max_position_embeddings;
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: maxLength });
  return {
    text: async ({ path, bytes: given }) => {
      // Only the head can reach the model: read no more than maxLength tokens can take.
      const limit = maxLength * TEXT_BYTES_PER_TOKEN + 8;
      let head: { bytes: Uint8Array; complete: boolean };
      if (given) head = { bytes: given.subarray(0, limit), complete: given.length <= limit };
      else {
        await regularFileSize(path);
        head = await readHead(path, limit);
      }
      const { bytes, complete } = head;
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

function imageLoaders(processor: PerceiverImageProcessor, tools: MediaToolOptions, maxFileBytes: number): Loaders {
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
    image: async ({ path, bytes }) => ({ inputs: await preprocess(bytes ?? (await readMediaFile(path, maxFileBytes, 'options.maxFileBytes')), path) }),
    video: async ({ path }) => {
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
async function squareImage({ path, bytes: given }: Source, size: number, maxFileBytes: number): Promise<Uint8Array> {
  const bytes = given ?? (await readMediaFile(path, maxFileBytes, 'options.maxFileBytes'));
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

function multimodalLoaders(c: MediaInputSpec['config'], tools: MediaToolOptions, maxFileBytes: number): Loaders {
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
    video: async ({ path }) => {
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
    audio: async ({ path, bytes }) => {
      const decoded = await decodeAudio(bytes ?? path, { sampleRate, channels: 1, maxBytes: maxFileBytes });
      return item(blackFrames(), centredSpan(decoded.samples, audioLength));
    },
    image: async (source) => {
      const still = rgbToPlanes(await squareImage(source, size, maxFileBytes), 1, size, size).data;
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
