/**
 * 'video-autoencoding': PerceiverForMultimodalAutoencoding (deepmind/multimodal-perceiver) on a
 * video file. The clip is read as the batch job reads it (lib/media: config.num_frames frames at 25
 * fps from the middle of the video and the audio of the same span, via the system ffmpeg); it is
 * encoded once, then decoded in `chunks` slices of the image and audio output points
 * (subsampled_output_points, as transformers' example for this model does, which re-runs the
 * encoder for every chunk). The label is decoded with every chunk and is the same in each (its
 * query does not depend on the other points): the first chunk's is kept.
 *
 * Output: the reconstructed frames (8-bit RGB at config.output_shape's size), the reconstructed
 * audio (mono, 25 * audio_samples_per_frame Hz), the top_k labels by config.id2label, and the
 * frames and audio that went in, for comparison.
 */
import { InvalidArgumentError } from '../errors.js';
import type { RgbFrame } from '../flow/patches.js';
import { createMediaInputBuilder, MULTIMODAL_FRAMES_PER_SECOND } from '../media/model_inputs.js';
import type { MediaToolOptions } from '../media/video.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import type { Tensor } from '../tensor.js';
import { checkTopK, topLabels, type CallOptions, type LabelScore, type StepCheck } from './common.js';

export interface VideoAutoencodingOptions extends CallOptions {
  /** How many decode calls the output points are split into (default 16; fewer is faster, more holds less memory). */
  chunks?: number;
  /** Labels returned (default 5). */
  top_k?: number;
}

export interface AudioClip {
  samples: Float32Array;
  sampleRate: number;
}

export interface VideoAutoencodingOutput {
  frames: RgbFrame[];
  audio: AudioClip;
  labels: LabelScore[];
  /** What went in: the clip's frames and audio as the model saw them. */
  original: { frames: RgbFrame[]; audio: AudioClip };
  /** Frames per second of both. */
  fps: number;
}

export const VIDEO_AUTOENCODING_HEADS = ['PerceiverForMultimodalAutoencoding'] as const;

const toByte = (v: number) => Math.max(0, Math.min(255, Math.round(v * 255)));

/** [points, 3] in [0, 1] (frame after frame, row after row) to 8-bit frames. */
function pointsToFrames(values: Float32Array, frames: number, height: number, width: number): RgbFrame[] {
  return Array.from({ length: frames }, (_, f) => {
    const data = new Uint8Array(height * width * 3);
    const base = f * height * width * 3;
    for (let i = 0; i < data.length; i++) data[i] = toByte(values[base + i]!);
    return { data, width, height };
  });
}

/** [frames, 3, H, W] planes in [0, 1] to 8-bit HWC frames. */
function planesToFrames(planes: Float32Array, frames: number, height: number, width: number): RgbFrame[] {
  const plane = height * width;
  return Array.from({ length: frames }, (_, f) => {
    const data = new Uint8Array(plane * 3);
    for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = toByte(planes[(f * 3 + c) * plane + p]!);
    return { data, width, height };
  });
}

function range(from: number, to: number): Int32Array {
  return Int32Array.from({ length: to - from }, (_, i) => from + i);
}

export function videoAutoencodingRunner(model: PerceiverModel<Logits>, tools: MediaToolOptions = {}) {
  const c = model.config;
  const builder = createMediaInputBuilder(model, tools);
  const [, frames, height, width] = c.output_shape as [number, number, number, number];
  const imagePoints = frames * height * width;
  const audioPoints = Math.floor((c.num_frames * c.audio_samples_per_frame) / c.samples_per_patch);
  const sampleRate = MULTIMODAL_FRAMES_PER_SECOND * c.audio_samples_per_frame;

  return async (path: string, options: VideoAutoencodingOptions, check: StepCheck): Promise<VideoAutoencodingOutput> => {
    if (typeof path !== 'string' || path === '') throw new InvalidArgumentError('input', 'the path of a video (or audio, or image) file', path);
    const chunks = options.chunks ?? 16;
    if (!Number.isSafeInteger(chunks) || chunks < 1 || chunks > imagePoints) throw new InvalidArgumentError('options.chunks', `an integer from 1 to ${imagePoints}`, chunks);
    const topK = checkTopK(options.top_k, 5, c.num_labels);
    const item = await builder.load(path);
    check();
    const inputs = item.inputs as Record<string, Tensor<'float32'>>;
    const encoding = await model.encode({ inputs });
    try {
      const image = new Float32Array(imagePoints * 3);
      const audio = new Float32Array(audioPoints * c.samples_per_patch);
      let labelLogits: Float32Array | undefined;
      for (let k = 0; k < chunks; k++) {
        check();
        const [i0, i1] = [Math.floor((k * imagePoints) / chunks), Math.floor(((k + 1) * imagePoints) / chunks)];
        const [a0, a1] = [Math.floor((k * audioPoints) / chunks), Math.floor(((k + 1) * audioPoints) / chunks)];
        const points: Record<string, Int32Array | null> = { image: range(i0, i1), label: null };
        // A chunk with no audio points leaves audio out (an empty list is not a list of points).
        if (a1 > a0) points.audio = range(a0, a1);
        const out = await model.decode(encoding, { subsampledOutputPoints: points });
        const logits = out.logits as Record<string, Tensor<'float32'>>;
        image.set(logits.image!.data, i0 * 3);
        if (a1 > a0) audio.set(logits.audio!.data, a0 * c.samples_per_patch);
        labelLogits ??= logits.label!.data;
      }
      check();
      const originalImage = inputs.image!;
      const [, inFrames, , inHeight, inWidth] = originalImage.shape as number[];
      return {
        frames: pointsToFrames(image, frames, height, width),
        audio: { samples: audio, sampleRate },
        labels: topLabels(c, labelLogits!, topK),
        original: {
          frames: planesToFrames(originalImage.data, inFrames!, inHeight!, inWidth!),
          audio: { samples: inputs.audio!.data, sampleRate },
        },
        fps: MULTIMODAL_FRAMES_PER_SECOND,
      };
    } finally {
      encoding.dispose();
    }
  };
}
