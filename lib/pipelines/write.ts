/** Files from pipeline results: flow pictures and videos, and the autoencoder's reconstructions. */
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { flowToColorAsync, maxFlowRadius } from '../flow/color.js';
import { checkFlowField, writeFlo, type FlowField } from '../flow/flo.js';
import type { RgbFrame } from '../flow/patches.js';
import { ensureDir, enlarge, joinColumns, stackRows, VIDEO_OUTPUT_EXTENSIONS, writePng, writeVideo, writeWav, type WriteVideoOptions } from './outputs.js';
import type { VideoAutoencodingOutput } from './video_autoencoding.js';
import { extname } from 'node:path';

/** A flow field as a PNG in the Middlebury colour coding, and optionally as a .flo file. */
export async function writeFlowPicture(path: string, field: FlowField, flo?: string): Promise<void> {
  checkFlowField(field, 'field');
  await writePng(path, { data: await flowToColorAsync(field), width: field.width, height: field.height });
  if (flo !== undefined) await writeFlo(flo, field);
}

/**
 * Flow fields of a video as a colour-coded video (a path ending in .mp4, .mov or .mkv) or a
 * folder of PNGs (flow_00000.png, ...). Every frame is normalised by the largest vector of the
 * whole video, so colours compare across frames.
 */
export async function writeFlowVideo(out: string, fields: FlowField[], options: WriteVideoOptions = {}): Promise<string[]> {
  if (!Array.isArray(fields) || fields.length === 0) throw new InvalidArgumentError('fields', 'a non-empty array of flow fields', fields);
  fields.forEach((f, i) => checkFlowField(f, `fields[${i}]`));
  const maxRadius = Math.max(...fields.map(maxFlowRadius));
  const frames: RgbFrame[] = [];
  for (const f of fields) frames.push({ data: await flowToColorAsync(f, { maxRadius }), width: f.width, height: f.height });
  if (VIDEO_OUTPUT_EXTENSIONS.includes(extname(out).toLowerCase())) {
    await writeVideo(out, frames, options);
    return [out];
  }
  await ensureDir(out);
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
  const { writeFile } = await import('node:fs/promises');
  await writeFile(files.labels, JSON.stringify(result.labels, null, 2) + '\n');
  const n = Math.min(8, result.frames.length, result.original.frames.length);
  const pick = (list: RgbFrame[]) => Array.from({ length: n }, (_, i) => list[Math.floor(((i + 0.5) * list.length) / n)]!);
  const factor = Math.max(1, Math.ceil(128 / result.frames[0]!.height));
  const row = (list: RgbFrame[]) => enlarge(joinColumns(pick(list)), factor);
  await writePng(files.comparison, stackRows([row(result.original.frames), row(result.frames)]));
  return files;
}
