/**
 * Writing what the pipelines produce: PNG pictures (sharp), videos (the system ffmpeg, spawned
 * without a shell as lib/media/video.ts does, fed raw RGB frames on stdin with backpressure) and
 * WAV audio (16-bit PCM, written by hand: the header is 44 bytes and the packages that write WAV
 * add nothing over it).
 */
import { spawn } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { BackendUnavailableError, InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { checkRgbFrame, type RgbFrame } from '../flow/patches.js';
import { asFileWrite, checkPath, writeFileChecked } from '../io/write_file.js';
import { loadSharp as loadSharpPackage, type SharpFactory } from '../sharp.js';

function loadSharp(): Promise<SharpFactory> {
  return loadSharpPackage('Writing PNG pictures');
}

/** Writes 8-bit RGB (HWC) as a PNG file. */
export async function writePng(path: string, frame: RgbFrame): Promise<void> {
  checkPath(path);
  const { data, width, height } = checkRgbFrame(frame, 'frame');
  const sharp = await loadSharp();
  // The input is checked above, so what sharp's toFile rejects with here is the write (a folder at the path, a name too long).
  await asFileWrite(path, () => sharp(data, { raw: { width, height, channels: 3 } }).png().toFile(path));
}

/** Frames of one size stacked top to bottom into one picture (e.g. original over reconstruction). */
export function stackRows(rows: RgbFrame[]): RgbFrame {
  if (!Array.isArray(rows) || rows.length === 0) throw new InvalidArgumentError('rows', 'a non-empty array of frames', rows);
  const width = Math.max(...rows.map((r, i) => checkRgbFrame(r, `rows[${i}]`).width));
  const height = rows.reduce((h, r) => h + r.height, 0);
  const data = new Uint8Array(width * height * 3);
  let y0 = 0;
  for (const r of rows) {
    for (let y = 0; y < r.height; y++) data.set(r.data.subarray(y * r.width * 3, (y + 1) * r.width * 3), ((y0 + y) * width) * 3);
    y0 += r.height;
  }
  return { data, width, height };
}

/** Frames of one size side by side, left to right. */
export function joinColumns(frames: RgbFrame[]): RgbFrame {
  if (!Array.isArray(frames) || frames.length === 0) throw new InvalidArgumentError('frames', 'a non-empty array of frames', frames);
  const height = Math.max(...frames.map((f, i) => checkRgbFrame(f, `frames[${i}]`).height));
  const width = frames.reduce((w, f) => w + f.width, 0);
  const data = new Uint8Array(width * height * 3);
  let x0 = 0;
  for (const f of frames) {
    for (let y = 0; y < f.height; y++) data.set(f.data.subarray(y * f.width * 3, (y + 1) * f.width * 3), (y * width + x0) * 3);
    x0 += f.width;
  }
  return { data, width, height };
}

/** The largest picture enlarge() makes: 2^26 pixels (8192 x 8192, 192 MiB of RGB). */
const MAX_ENLARGED_PIXELS = 1 << 26;

/** Nearest-neighbour enlargement by an integer factor (tiny model outputs made visible). */
export function enlarge(frame: RgbFrame, factor: number): RgbFrame {
  if (!Number.isSafeInteger(factor) || factor < 1 || factor > 64) throw new InvalidArgumentError('factor', 'an integer from 1 to 64', factor);
  const { data, width, height } = checkRgbFrame(frame, 'frame');
  if (factor === 1) return frame;
  if (width * height * factor * factor > MAX_ENLARGED_PIXELS) {
    throw new InvalidArgumentError('factor', `a factor keeping the picture at most ${MAX_ENLARGED_PIXELS} pixels (it is ${width}x${height})`, factor);
  }
  const w = width * factor;
  const out = new Uint8Array(w * height * factor * 3);
  for (let y = 0; y < height * factor; y++) {
    const sy = Math.floor(y / factor);
    for (let x = 0; x < w; x++) {
      const s = (sy * width + Math.floor(x / factor)) * 3;
      const o = (y * w + x) * 3;
      out[o] = data[s]!;
      out[o + 1] = data[s + 1]!;
      out[o + 2] = data[s + 2]!;
    }
  }
  return { data: out, width: w, height: height * factor };
}

/** Video containers the writer makes, all H.264 in yuv420p (what players show). */
export const VIDEO_OUTPUT_EXTENSIONS = Object.freeze(['.mp4', '.mov', '.mkv']);

export interface WriteVideoOptions {
  /** Frames per second (default 25). */
  fps?: number;
  /** The ffmpeg executable (default: FFMPEG_PATH, else `ffmpeg` on PATH). */
  ffmpegPath?: string;
  /** Longest the encode may take, in ms (default 120000). */
  timeoutMs?: number;
}

/**
 * Encodes frames of one size as an H.264 video with ffmpeg (odd sizes padded by one pixel, as
 * yuv420p needs even ones). Resolves once ffmpeg has exited cleanly.
 */
export async function writeVideo(path: string, frames: RgbFrame[], options: WriteVideoOptions = {}): Promise<void> {
  checkPath(path);
  if (!VIDEO_OUTPUT_EXTENSIONS.includes(extname(path).toLowerCase())) throw new InvalidArgumentError('path', `a video file name ending in ${VIDEO_OUTPUT_EXTENSIONS.join(', ')}`, path);
  if (!Array.isArray(frames) || frames.length === 0) throw new InvalidArgumentError('frames', 'a non-empty array of RGB frames', frames);
  const { width, height } = checkRgbFrame(frames[0], 'frames[0]');
  frames.forEach((f, i) => {
    checkRgbFrame(f, `frames[${i}]`);
    if (f.width !== width || f.height !== height) throw new InvalidArgumentError(`frames[${i}]`, `a ${width}x${height} frame like the first`, `${f.width}x${f.height}`);
  });
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { fps, ffmpegPath, timeoutMs }', options);
  const fps = options.fps ?? 25;
  if (typeof fps !== 'number' || !Number.isFinite(fps) || fps <= 0 || fps > 1000) throw new InvalidArgumentError('options.fps', 'a frame rate above 0 and at most 1000', fps);
  const timeoutMs = options.timeoutMs ?? 120_000;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new InvalidArgumentError('options.timeoutMs', 'a positive integer', timeoutMs);
  const ffmpegPath = options.ffmpegPath ?? (process.env.FFMPEG_PATH || 'ffmpeg');
  checkPath(ffmpegPath, 'options.ffmpegPath', 'the ffmpeg executable');
  const args = [
    '-v', 'error', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', String(fps), '-i', 'pipe:0',
    '-vf', 'pad=ceil(iw/2)*2:ceil(ih/2)*2', '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '12', '-pix_fmt', 'yuv420p',
    // The output as a file: URL, so that no name is read as another protocol.
    `file:${resolve(path)}`,
  ];
  await new Promise<void>((done, reject) => {
    let child;
    try {
      // The frames come in on stdin (pipe:0), so no -nostdin here.
      child = spawn(ffmpegPath, args, { stdio: ['pipe', 'ignore', 'pipe'], windowsHide: true });
    } catch (error) {
      reject(missingFfmpeg(ffmpegPath, error));
      return;
    }
    let stderr = '';
    let failure: Error | undefined;
    const fail = (error: Error) => {
      failure ??= error;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => fail(new MediaDecodeError(path, `ffmpeg took longer than ${timeoutMs} ms to write it (options.timeoutMs)`)), timeoutMs);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr = (stderr + text).slice(-4096);
    });
    child.stdin.on('error', () => {}); // EPIPE when ffmpeg exits early: its exit code says why
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // Every failure to start ffmpeg (not found, not executable, a folder) is one: ffmpeg cannot be run.
      failure ??= missingFfmpeg(ffmpegPath, error);
      reject(failure);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) return reject(failure);
      if (code !== 0) {
        const last = stderr.trim().split('\n').pop() || (signal ? `killed by ${signal}` : `exit code ${code}`);
        return reject(new MediaDecodeError(path, `ffmpeg could not write it: ${last}`));
      }
      done();
    });
    // Frame by frame, waiting for the pipe to drain so that a long video is not buffered whole.
    (async () => {
      for (const f of frames) {
        if (failure || child.stdin.destroyed) return;
        if (!child.stdin.write(f.data)) await new Promise<void>((r) => child.stdin.once('drain', r).once('close', r));
      }
      child.stdin.end();
    })().catch(fail);
  });
}

function missingFfmpeg(path: string, error: unknown): BackendUnavailableError {
  return new BackendUnavailableError(
    `ffmpeg was not found (tried ${JSON.stringify(path)}: ${(error as Error).message}). Writing video needs ffmpeg: ` +
      'install it (`apt-get install ffmpeg` on Debian/Ubuntu, `brew install ffmpeg` on macOS), or set FFMPEG_PATH.',
  );
}

const UINT32_MAX = 0xffff_ffff;
/** Block align (channels x 2 bytes) is a 16-bit field. */
const MAX_WAV_CHANNELS = 0x7fff;

/** Throws InvalidArgumentError unless `sampleRate` fits a WAV header with `channels` channels (bytes per second are 32-bit). */
export function checkSampleRate(sampleRate: unknown, channels: number, argument: string): void {
  if (!Number.isSafeInteger(sampleRate) || (sampleRate as number) < 1 || (sampleRate as number) * channels * 2 > UINT32_MAX) {
    throw new InvalidArgumentError(argument, `a positive integer rate in Hz, with rate x channels x 2 at most ${UINT32_MAX}`, sampleRate);
  }
}

/** Mono or interleaved float samples in [-1, 1] as a 16-bit PCM WAV file (values beyond are clipped). */
export function encodeWav(samples: Float32Array, sampleRate: number, channels = 1): Buffer {
  if (!(samples instanceof Float32Array)) throw new InvalidArgumentError('samples', 'a Float32Array', samples);
  // The header's fields are 32-bit (the rate, bytes per second, sizes) and 16-bit (channels, block align).
  if (!Number.isSafeInteger(channels) || channels < 1 || channels > MAX_WAV_CHANNELS || samples.length % channels !== 0) {
    throw new InvalidArgumentError('channels', `a channel count from 1 to ${MAX_WAV_CHANNELS} dividing ${samples.length} samples`, channels);
  }
  checkSampleRate(sampleRate, channels, 'sampleRate');
  const dataBytes = samples.length * 2;
  if (44 + dataBytes > UINT32_MAX) throw new InvalidArgumentError('samples', `at most ${(UINT32_MAX - 44) / 2} samples (a WAV file is under 4 GiB)`, samples);
  const out = Buffer.alloc(44 + dataBytes);
  out.write('RIFF', 0, 'ascii');
  out.writeUInt32LE(36 + dataBytes, 4);
  out.write('WAVE', 8, 'ascii');
  out.write('fmt ', 12, 'ascii');
  out.writeUInt32LE(16, 16); // fmt chunk size
  out.writeUInt16LE(1, 20); // PCM
  out.writeUInt16LE(channels, 22);
  out.writeUInt32LE(sampleRate, 24);
  out.writeUInt32LE(sampleRate * channels * 2, 28); // bytes per second
  out.writeUInt16LE(channels * 2, 32); // block align
  out.writeUInt16LE(16, 34); // bits per sample
  out.write('data', 36, 'ascii');
  out.writeUInt32LE(dataBytes, 40);
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    const clipped = Number.isNaN(s) ? 0 : Math.max(-1, Math.min(1, s));
    out.writeInt16LE(Math.round(clipped * 32767), 44 + i * 2);
  }
  return out;
}

export async function writeWav(path: string, samples: Float32Array, sampleRate: number, channels = 1): Promise<void> {
  checkPath(path);
  await writeFileChecked(path, encodeWav(samples, sampleRate, channels));
}

/** Makes a folder (and its parents) for outputs; a file at `dir` is an InvalidArgumentError naming `argument`. */
export async function ensureDir(dir: string, argument = 'dir'): Promise<void> {
  checkPath(dir, argument, 'a folder path');
  const existing = await stat(dir).catch(() => undefined);
  if (existing && !existing.isDirectory()) throw new InvalidArgumentError(argument, 'a folder path (or a path to create one at)', `${JSON.stringify(dir)}, which is a file`);
  await asFileWrite(dir, () => mkdir(dir, { recursive: true }));
}
