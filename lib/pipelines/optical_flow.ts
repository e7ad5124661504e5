/**
 * 'optical-flow': PerceiverForOpticalFlow (deepmind/optical-flow-perceiver) on two images or a
 * video. Each pair of frames becomes the checkpoint's 27-channel patch input (lib/flow/patches.ts),
 * cut into tiles of config.train_size (368x496 for the published checkpoint) overlapping by at
 * least `minOverlap` pixels, run `batchSize` tiles per forward, and blended back
 * (lib/flow/tiling.ts). An image smaller than a tile is padded by repeating its edge pixels and the
 * flow cropped back. The model's output is multiplied by `flowScaleFactor` (20: DeepMind's
 * FLOW_SCALE_FACTOR, which transformers' example applies too) to give pixels.
 *
 * Output: a flow field {flow, width, height}, flow being [height, width, 2] float32, (u, v) =
 * (right, down) in pixels of the first image. A video `{ video: path }` gives one field per pair of
 * consecutive frames (decoded with the system ffmpeg at the video's frame rate), and that rate.
 */
import { InvalidArgumentError } from '../errors.js';
import { checkFlowField, type FlowField } from '../flow/flo.js';
import { FLOW_PATCH_CHANNELS, writeFramePatches, type RgbFrame } from '../flow/patches.js';
import { defaultMinOverlap, FlowBlender, tileGrid, type TileShape } from '../flow/tiling.js';
import { readRgbImage, type ImageInput } from '../image_processor.js';
import { decodeVideoFrames, probeMedia, type MediaToolOptions } from '../media/video.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import { Tensor } from '../tensor.js';
import type { CallOptions, StepCheck } from './common.js';

export interface OpticalFlowOptions extends CallOptions, MediaToolOptions {
  /** Tiles per forward (default 4). */
  batchSize?: number;
  /** Least overlap between tiles, in pixels (default 20, less for tiles under 60 px). */
  minOverlap?: number;
  /** Model output to pixels (default 20). */
  flowScaleFactor?: number;
  /** Video: most frames read (default 250). */
  maxFrames?: number;
  /** Video: largest decoded RGB total in bytes (default 256 MiB). */
  maxBytes?: number;
  /** Largest image accepted, width x height (default 50 million pixels, above 8K video). */
  maxPixels?: number;
}

export type OpticalFlowInput = [ImageInput, ImageInput] | { video: string };

export interface VideoFlow {
  /** One field per pair of consecutive frames. */
  fields: FlowField[];
  /** The frames' rate, frames per second. */
  fps: number;
}

export const OPTICAL_FLOW_HEADS = ['PerceiverForOpticalFlow'] as const;
export const FLOW_SCALE_FACTOR = 20;

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function positive(value: unknown, argument: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw new InvalidArgumentError(argument, 'a positive integer', value);
  return value as number;
}

/** The frame padded to at least `tile` by repeating its last row and column. */
function padToTile(frame: RgbFrame, tile: TileShape): RgbFrame {
  if (frame.width >= tile.width && frame.height >= tile.height) return frame;
  const width = Math.max(frame.width, tile.width);
  const height = Math.max(frame.height, tile.height);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(y, frame.height - 1);
    for (let x = 0; x < width; x++) {
      const s = (sy * frame.width + Math.min(x, frame.width - 1)) * 3;
      data.set(frame.data.subarray(s, s + 3), (y * width + x) * 3);
    }
  }
  return { data, width, height };
}

function cropFlow(flow: Float32Array, fromWidth: number, width: number, height: number): Float32Array {
  if (fromWidth === width && flow.length === width * height * 2) return flow;
  const out = new Float32Array(width * height * 2);
  for (let y = 0; y < height; y++) out.set(flow.subarray(y * fromWidth * 2, (y * fromWidth + width) * 2), y * width * 2);
  return out;
}

export function opticalFlowRunner(model: PerceiverModel<Logits>) {
  const [tileHeight, tileWidth] = model.config.train_size as [number, number];
  const tile: TileShape = { height: tileHeight, width: tileWidth };

  /** The flow from `first` to `second`, tiled and blended. */
  const pairFlow = async (first: RgbFrame, second: RgbFrame, options: OpticalFlowOptions, check: StepCheck): Promise<FlowField> => {
    if (first.width !== second.width || first.height !== second.height) {
      throw new InvalidArgumentError('input[1]', `an image of the first image's size (${first.width}x${first.height})`, `${second.width}x${second.height}`);
    }
    const batchSize = positive(options.batchSize, 'options.batchSize', 4);
    const maxPixels = positive(options.maxPixels, 'options.maxPixels', 50_000_000);
    if (first.width * first.height > maxPixels) {
      throw new InvalidArgumentError('input', `images of at most ${maxPixels} pixels (options.maxPixels)`, `${first.width}x${first.height}`);
    }
    const minOverlap = options.minOverlap ?? defaultMinOverlap(tile);
    const scale = options.flowScaleFactor ?? FLOW_SCALE_FACTOR;
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new InvalidArgumentError('options.flowScaleFactor', 'a finite number', scale);
    const a = padToTile(first, tile);
    const b = padToTile(second, tile);
    const tiles = tileGrid(a.height, a.width, tile, minOverlap);
    const blender = new FlowBlender(a.height, a.width, tile);
    const frameSize = FLOW_PATCH_CHANNELS * tileHeight * tileWidth;
    for (let i = 0; i < tiles.length; i += batchSize) {
      check();
      const batch = tiles.slice(i, i + batchSize);
      const input = new Float32Array(batch.length * 2 * frameSize);
      for (const [k, t] of batch.entries()) {
        // One frame of one tile at a time (5M values at 368x496), letting other work run in between.
        await yieldToEventLoop();
        writeFramePatches(a, t.top, t.left, tileHeight, tileWidth, input, 2 * k * frameSize);
        await yieldToEventLoop();
        writeFramePatches(b, t.top, t.left, tileHeight, tileWidth, input, (2 * k + 1) * frameSize);
      }
      const out = await model.forward({ inputs: new Tensor('float32', [batch.length, 2, FLOW_PATCH_CHANNELS, tileHeight, tileWidth], input) });
      const logits = out.logits as Tensor<'float32'>;
      const per = tileHeight * tileWidth * 2;
      for (const [k, t] of batch.entries()) {
        await yieldToEventLoop();
        blender.add(t, logits.data.subarray(k * per, (k + 1) * per), scale);
      }
    }
    check();
    return { flow: cropFlow(await blender.resultAsync(), a.width, first.width, first.height), width: first.width, height: first.height };
  };

  return async (input: OpticalFlowInput, options: OpticalFlowOptions, check: StepCheck): Promise<FlowField | VideoFlow> => {
    if (Array.isArray(input)) {
      if (input.length !== 2) throw new InvalidArgumentError('input', 'two images [first, second] or { video: path }', input);
      const [first, second] = await Promise.all([readRgbImage(input[0], 'input[0]'), readRgbImage(input[1], 'input[1]')]);
      check();
      return pairFlow(first, second, options, check);
    }
    if (typeof input !== 'object' || input === null || typeof (input as { video?: unknown }).video !== 'string') {
      throw new InvalidArgumentError('input', 'two images [first, second] or { video: path }', input);
    }
    const path = input.video;
    const tools: MediaToolOptions = { ffmpegPath: options.ffmpegPath, ffprobePath: options.ffprobePath, timeoutMs: options.timeoutMs };
    const probe = await probeMedia(path, tools);
    if (!probe.video) throw new InvalidArgumentError('input.video', 'a video file with a video stream', path);
    const fps = probe.video.frameRate ?? 25;
    const maxFrames = positive(options.maxFrames, 'options.maxFrames', 250);
    const estimated = probe.video.frameCount ?? Math.round((probe.video.durationSeconds ?? probe.durationSeconds) * fps);
    const count = Math.max(2, Math.min(maxFrames, estimated || 2));
    const video = await decodeVideoFrames(path, { ...tools, probe, frames: count, fps, maxBytes: positive(options.maxBytes, 'options.maxBytes', 256 * 1024 * 1024) });
    check();
    const frameBytes = video.width * video.height * 3;
    // A video shorter than estimated comes back with its last frame repeated (equal timestamps): those are dropped.
    const distinct = video.timestamps.findIndex((t, i) => i > 0 && t <= video.timestamps[i - 1]!);
    const frames: RgbFrame[] = Array.from({ length: distinct === -1 ? video.frames : distinct }, (_, i) => ({ data: video.rgb.subarray(i * frameBytes, (i + 1) * frameBytes), width: video.width, height: video.height }));
    const fields: FlowField[] = [];
    for (let i = 0; i + 1 < frames.length; i++) fields.push(checkFlowField(await pairFlow(frames[i]!, frames[i + 1]!, options, check), 'flow'));
    return { fields, fps };
  };
}
