/** Generators of real media files for the media tests: audio and video with ffmpeg, images with sharp. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Runs ffmpeg (no shell) with the given arguments, overwriting outputs, quietly. */
export async function ffmpeg(...args: string[]): Promise<void> {
  await run('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args]);
}

export interface ToneOptions {
  /** One expression per channel in t (seconds), e.g. '0.5*sin(2*PI*440*t)'. */
  channels: string[];
  sampleRate: number;
  seconds: number;
}

/** An audio file of the given per-channel expressions; the codec follows the extension (.wav: 16-bit PCM). */
export async function writeTone(path: string, { channels, sampleRate, seconds }: ToneOptions, codecArgs: string[] = []): Promise<void> {
  const wav = path.endsWith('.wav') ? ['-c:a', 'pcm_s16le'] : [];
  await ffmpeg('-f', 'lavfi', '-i', `aevalsrc=${channels.join('|')}:s=${sampleRate}:d=${seconds}`, ...wav, ...codecArgs, path);
}

export interface VideoOptions {
  /** Solid colours (ffmpeg names or 0xRRGGBB) shown one after another, each `secondsEach` long. */
  colours: string[];
  secondsEach: number;
  width: number;
  height: number;
  fps: number;
  /** An audio track: the expression in t, at this rate (none when absent). */
  audio?: { expression: string; sampleRate: number };
  /** Extra video filters after the colours are joined (e.g. drawbox). */
  filters?: string[];
}

/** An H.264 MP4 of solid-colour segments, with an AAC audio track when asked. */
export async function writeVideo(path: string, o: VideoOptions): Promise<void> {
  const inputs: string[] = [];
  o.colours.forEach((c) => inputs.push('-f', 'lavfi', '-i', `color=c=${c}:s=${o.width}x${o.height}:r=${o.fps}:d=${o.secondsEach}`));
  const joined = `${o.colours.map((_, i) => `[${i}:v]`).join('')}concat=n=${o.colours.length}:v=1:a=0${(o.filters ?? []).map((f) => `,${f}`).join('')},format=yuv420p[v]`;
  const audio = o.audio ? ['-f', 'lavfi', '-i', `aevalsrc=${o.audio.expression}:s=${o.audio.sampleRate}:d=${o.colours.length * o.secondsEach}`] : [];
  const maps = ['-map', '[v]', ...(o.audio ? ['-map', `${o.colours.length}:a`, '-c:a', 'aac'] : [])];
  await ffmpeg(...inputs, ...audio, '-filter_complex', joined, ...maps, '-c:v', 'libx264', '-preset', 'ultrafast', '-qp', '0', path);
}

/** A solid-colour image (PNG or JPEG by extension) made with sharp. */
export async function writeSolidImage(path: string, width: number, height: number, rgb: [number, number, number]): Promise<void> {
  const sharp = (await import('sharp')).default;
  await sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).toFile(path);
}

/** A horizontal-gradient image (PNG or JPEG by extension) made with sharp from raw pixels. */
export async function writeGradientImage(path: string, width: number, height: number): Promise<void> {
  const sharp = (await import('sharp')).default;
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      data[o] = Math.round((255 * x) / (width - 1));
      data[o + 1] = Math.round((255 * y) / (height - 1));
      data[o + 2] = 128;
    }
  }
  await sharp(data, { raw: { width, height, channels: 3 } }).toFile(path);
}

/** Sign changes over samples [from, to) of channel `channel` of `channels` interleaved. */
export function zeroCrossings(samples: Float32Array, from = 0, to = samples.length, channel = 0, channels = 1): number {
  let count = 0;
  let prev = samples[from * channels + channel]!;
  for (let i = from + 1; i < to; i++) {
    const v = samples[i * channels + channel]!;
    if ((prev < 0 && v >= 0) || (prev >= 0 && v < 0)) count++;
    prev = v;
  }
  return count;
}

/** The frequency of a sine from its zero crossings over samples [from, to). */
export function sineFrequency(samples: Float32Array, sampleRate: number, from = 0, to = samples.length, channel = 0, channels = 1): number {
  return zeroCrossings(samples, from, to, channel, channels) / 2 / ((to - from) / sampleRate);
}

/** Largest absolute value over [from, to). */
export function peak(samples: Float32Array, from = 0, to = samples.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(samples[i]!));
  return m;
}

/** Root mean square over [from, to): a sine of amplitude a gives a / sqrt(2). */
export function rms(samples: Float32Array, from = 0, to = samples.length): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += samples[i]! * samples[i]!;
  return Math.sqrt(sum / (to - from));
}
