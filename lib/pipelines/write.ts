/** Files from pipeline results: flow pictures and videos, and the autoencoder's reconstructions. */
import { extname, join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { flowToColorAsync, maxFlowRadius } from '../flow/color.js';
import { checkFlowField, writeFlo, type FlowField } from '../flow/flo.js';
import { checkRgbFrame, type RgbFrame } from '../flow/patches.js';
import { checkPath, writeFileChecked } from '../io/write_file.js';
import { checkSampleRate, ensureDir, enlarge, joinColumns, stackRows, VIDEO_OUTPUT_EXTENSIONS, writePng, writeVideo, writeWav, type WriteVideoOptions } from './outputs.js';
import type { VideoAutoencodingOutput } from './video_autoencoding.js';

/** A flow field as a PNG in the Middlebury colour coding, and optionally as a .flo file. */
export async function writeFlowPicture(path: string, field: FlowField, flo?: string): Promise<void> {
  checkPath(path);
  checkFlowField(field, 'field');
  if (flo !== undefined) checkPath(flo, 'flo', 'a .flo file path');
  await writePng(path, { data: await flowToColorAsync(field), width: field.width, height: field.height });
  if (flo !== undefined) await writeFlo(flo, field);
}

/**
 * Flow fields of a video as a colour-coded video (a path ending in .mp4, .mov or .mkv) or a
 * folder of PNGs (flow_00000.png, ...). Every frame is normalised by the largest vector of the
 * whole video, so colours compare across frames.
 */
export async function writeFlowVideo(out: string, fields: FlowField[], options: WriteVideoOptions = {}): Promise<string[]> {
  checkPath(out, 'out', 'a video file or a folder path');
  if (!Array.isArray(fields) || fields.length === 0) throw new InvalidArgumentError('fields', 'a non-empty array of flow fields', fields);
  fields.forEach((f, i) => checkFlowField(f, `fields[${i}]`));
  const maxRadius = Math.max(...fields.map(maxFlowRadius));
  const frames: RgbFrame[] = [];
  for (const f of fields) frames.push({ data: await flowToColorAsync(f, { maxRadius }), width: f.width, height: f.height });
  if (VIDEO_OUTPUT_EXTENSIONS.includes(extname(out).toLowerCase())) {
    await writeVideo(out, frames, options);
    return [out];
  }
  await ensureDir(out, 'out');
  const written: string[] = [];
  for (const [i, frame] of frames.entries()) {
    const file = join(out, `flow_${String(i).padStart(5, '0')}.png`);
    await writePng(file, frame);
    written.push(file);
  }
  return written;
}

export interface AutoencodingFiles {
  frames: string[];
  video?: string;
  audio: string;
  originalAudio: string;
  comparison: string;
  labels: string;
}

/**
 * Writes an autoencoding result into `dir`: reconstructed frames as PNGs (frame_000.png ...),
 * reconstruction.mp4 (when `video`), reconstruction.wav and original.wav, labels.json, and
 * comparison.png: the original frames in a row over their reconstructions (at most 8 frames,
 * evenly chosen, enlarged to be at least 128 pixels high).
 */
export async function writeAutoencoding(dir: string, result: VideoAutoencodingOutput, options: { video?: boolean } & WriteVideoOptions = {}): Promise<AutoencodingFiles> {
  checkPath(dir, 'dir', 'a folder path');
  checkAutoencoding(result);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { video, fps }', options);
  await ensureDir(dir);
  const frames: string[] = [];
  for (const [i, frame] of result.frames.entries()) {
    const file = join(dir, `frame_${String(i).padStart(3, '0')}.png`);
    await writePng(file, frame);
    frames.push(file);
  }
  const files: AutoencodingFiles = {
    frames,
    audio: join(dir, 'reconstruction.wav'),
    originalAudio: join(dir, 'original.wav'),
    comparison: join(dir, 'comparison.png'),
    labels: join(dir, 'labels.json'),
  };
  if (options.video !== false) {
    files.video = join(dir, 'reconstruction.mp4');
    await writeVideo(files.video, result.frames, { fps: result.fps, ...options });
  }
  await writeWav(files.audio, result.audio.samples, result.audio.sampleRate);
  await writeWav(files.originalAudio, result.original.audio.samples, result.original.audio.sampleRate);
  // Only the two fields: anything else on the caller's objects is not ours to serialize.
  await writeFileChecked(files.labels, JSON.stringify(result.labels.map(({ label, score }) => ({ label, score })), null, 2) + '\n');
  const n = Math.min(8, result.frames.length, result.original.frames.length);
  const pick = (list: RgbFrame[]) => Array.from({ length: n }, (_, i) => list[Math.floor(((i + 0.5) * list.length) / n)]!);
  const rows = [joinColumns(pick(result.original.frames)), joinColumns(pick(result.frames))];
  // Enlarged to be at least 128 pixels high, but never wider than 8192 (a wide row of tiny frames).
  const widest = Math.max(...rows.map((r) => r.width));
  const factor = Math.max(1, Math.min(Math.ceil(128 / result.frames[0]!.height), Math.floor(8192 / widest), 64));
  await writePng(files.comparison, stackRows(rows.map((r) => enlarge(r, factor))));
  return files;
}

/**
 * Throws InvalidArgumentError unless `result` has the shape of a video-autoencoding output, checked
 * whole before anything is written (so a bad result leaves no half-written folder).
 */
function checkAutoencoding(result: unknown): asserts result is VideoAutoencodingOutput {
  const expected = 'a video-autoencoding result { frames, audio, labels, original: { frames, audio }, fps }';
  if (typeof result !== 'object' || result === null) throw new InvalidArgumentError('result', expected, result);
  const r = result as Partial<VideoAutoencodingOutput>;
  const checkFrames = (frames: unknown, argument: string) => {
    if (!Array.isArray(frames) || frames.length === 0) throw new InvalidArgumentError(argument, 'a non-empty array of RGB frames', frames);
    frames.forEach((f, i) => checkRgbFrame(f, `${argument}[${i}]`));
  };
  const checkAudio = (audio: unknown, argument: string) => {
    if (typeof audio !== 'object' || audio === null) throw new InvalidArgumentError(argument, 'an audio clip { samples, sampleRate }', audio);
    const { samples, sampleRate } = audio as { samples?: unknown; sampleRate?: unknown };
    checkSampleRate(sampleRate, 1, `${argument}.sampleRate`);
    if (!(samples instanceof Float32Array)) throw new InvalidArgumentError(`${argument}.samples`, 'a Float32Array', samples);
  };
  checkFrames(r.frames, 'result.frames');
  checkAudio(r.audio, 'result.audio');
  const original = r.original as Partial<VideoAutoencodingOutput['original']> | undefined;
  if (typeof original !== 'object' || original === null) throw new InvalidArgumentError('result.original', 'the input clip { frames, audio }', original);
  checkFrames(original.frames, 'result.original.frames');
  checkAudio(original.audio, 'result.original.audio');
  if (typeof r.fps !== 'number' || !Number.isFinite(r.fps) || r.fps <= 0 || r.fps > 1000) throw new InvalidArgumentError('result.fps', 'a frame rate above 0 and at most 1000', r.fps);
  if (!Array.isArray(r.labels)) throw new InvalidArgumentError('result.labels', 'an array of { label, score }', r.labels);
  r.labels.forEach((l: unknown, i) => {
    const { label, score } = (typeof l === 'object' && l !== null ? l : {}) as { label?: unknown; score?: unknown };
    if (typeof label !== 'string' || typeof score !== 'number') throw new InvalidArgumentError(`result.labels[${i}]`, 'a { label: string, score: number }', l);
  });
}
