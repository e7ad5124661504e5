/**
 * Video files to frames and audio, with the system's ffmpeg and ffprobe.
 *
 * - The tools are spawned directly (never through a shell) with the file passed as a `file:` URL
 *   (so a name such as `http://...` or `concat:...` is never read as another protocol), inputs
 *   restricted to the file protocol and to the usual containers (ALLOWED_DEMUXERS: no playlists).
 * - Every output is bounded: frames are read as PPM images (each says its own size, so rotated
 *   videos need no guessing) up to `maxBytes`, audio up to `maxSamples`, and a tool that writes more,
 *   or runs past `timeoutMs`, is killed.
 * - A missing ffmpeg or ffprobe is a BackendUnavailableError that says how to install it; a file
 *   that is missing, not a video, or corrupt is a MediaDecodeError.
 *
 * The tools are found on PATH, or at `options.ffmpegPath` / `options.ffprobePath`, or at the
 * environment's FFMPEG_PATH / FFPROBE_PATH.
 */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { BackendUnavailableError, InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { checkChannels, checkSampleRate, DEFAULT_MAX_SAMPLES, type DecodedAudio } from './audio.js';
import { checkPath, positiveInteger, regularFileSize } from './files.js';

export interface MediaToolOptions {
  /** The ffmpeg executable (default: FFMPEG_PATH, else `ffmpeg` on PATH). */
  ffmpegPath?: string;
  /** The ffprobe executable (default: FFPROBE_PATH, else `ffprobe` on PATH). */
  ffprobePath?: string;
  /** Longest a single ffmpeg or ffprobe run may take, in ms (default 120000). */
  timeoutMs?: number;
  /** probeMedia's result for this file, when already at hand (saves running ffprobe again). */
  probe?: MediaProbe;
}

export interface VideoStreamInfo {
  /** Displayed size (after the rotation the file asks for). */
  width: number;
  height: number;
  /** Frames per second (the average rate), when the file says. */
  frameRate?: number;
  durationSeconds?: number;
  frameCount?: number;
}

export interface AudioStreamInfo {
  sampleRate: number;
  channels: number;
  durationSeconds?: number;
}

export interface MediaProbe {
  /** The container's duration (or the longest stream's), 0 when unknown. */
  durationSeconds: number;
  /** The first video stream that is not cover art. */
  video?: VideoStreamInfo;
  /** The first audio stream. */
  audio?: AudioStreamInfo;
}

export interface DecodeVideoFramesOptions extends MediaToolOptions {
  /** How many frames (at least 1). */
  frames: number;
  /** Output width and height in pixels; give both or neither (neither: the video's own size). */
  width?: number;
  height?: number;
  /** 'cover' (default): scaled to cover width x height, then the centre cropped; 'stretch': scaled to it, aspect ratio lost. */
  fit?: 'cover' | 'stretch';
  /**
   * Unset (default): the frames spread evenly over the video, frame i being the one at
   * (i + 0.5) / frames of its duration (frames: 1 is the middle frame). Set: `frames` consecutive
   * frames at this rate (frames per second) from `start`, as ffmpeg's fps filter resamples them;
   * when the video ends first, its last frame is repeated.
   */
  fps?: number;
  /** Where consecutive frames start, in seconds (default 0; only with `fps`). */
  start?: number;
  /** Largest total of decoded 8-bit RGB accepted, frames x height x width x 3 bytes (default 64 MiB). */
  maxBytes?: number;
}

export interface DecodedVideoFrames {
  /** [frames, 3, height, width] float32 RGB in [0, 1] (8-bit values / 255), channel planes first as the models take pixels. */
  pixels: Tensor<'float32'>;
  /** The same frames as 8-bit RGB, row by row with channels interleaved (HWC), frame after frame. */
  rgb: Uint8Array;
  frames: number;
  width: number;
  height: number;
  /** Where each frame was taken, in seconds from the start of the video. */
  timestamps: number[];
  /** The video's duration in seconds (0 when the file does not say). */
  durationSeconds: number;
}

export interface DecodeVideoAudioOptions extends MediaToolOptions {
  /** Output sample rate in Hz (ffmpeg's resampler). */
  sampleRate: number;
  /** Output channels (default 1: ffmpeg's downmix); more are interleaved. */
  channels?: number;
  /** Where to start, in seconds (default 0). */
  start?: number;
  /** How many seconds (default: to the end). */
  durationSeconds?: number;
  /** Largest output accepted, in samples over all channels (default 2^26). */
  maxSamples?: number;
}

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_FRAME_BYTES = 64 * 1024 * 1024;
const PROBE_MAX_BYTES = 1024 * 1024;
const STDERR_TAIL = 4096;
/** At most this many seeks (ffmpeg inputs, each with its decoder) in one ffmpeg run. */
const SEEKS_PER_RUN = 16;

interface Frame {
  width: number;
  height: number;
  rgb: Buffer;
}

interface Tool {
  name: 'ffmpeg' | 'ffprobe';
  path: string;
}

function tools(options: MediaToolOptions): { ffmpeg: Tool; ffprobe: Tool; timeoutMs: number } {
  const pick = (value: unknown, argument: string, env: string | undefined, fallback: string): string => {
    if (value === undefined) return env || fallback;
    if (typeof value !== 'string' || value === '') throw new InvalidArgumentError(argument, 'the path of an executable', value);
    return value;
  };
  return {
    ffmpeg: { name: 'ffmpeg', path: pick(options.ffmpegPath, 'options.ffmpegPath', process.env.FFMPEG_PATH, 'ffmpeg') },
    ffprobe: { name: 'ffprobe', path: pick(options.ffprobePath, 'options.ffprobePath', process.env.FFPROBE_PATH, 'ffprobe') },
    timeoutMs: positiveInteger(options.timeoutMs, 'options.timeoutMs', DEFAULT_TIMEOUT_MS),
  };
}

async function probeOf(path: string, options: MediaToolOptions): Promise<MediaProbe> {
  const given = options.probe;
  if (given === undefined) return probeMedia(path, options);
  if (typeof given !== 'object' || given === null || typeof given.durationSeconds !== 'number') throw new InvalidArgumentError('options.probe', "probeMedia's result for this file", given);
  return given;
}

function missingTool(tool: Tool, error: unknown): BackendUnavailableError {
  return new BackendUnavailableError(
    `${tool.name} was not found (tried ${JSON.stringify(tool.path)}: ${(error as Error).message}). Decoding video needs ffmpeg and ffprobe: ` +
      'install ffmpeg (`apt-get install ffmpeg` on Debian/Ubuntu, `brew install ffmpeg` on macOS), or set FFMPEG_PATH and FFPROBE_PATH.',
  );
}

/**
 * The demuxers a file may be opened with: the containers of MEDIA_EXTENSIONS' video and audio
 * lists. Playlists and scripts (hls, dash, concat, ...) are left out: ffmpeg detects them by
 * content, whatever the name, and they would open other files.
 */
export const ALLOWED_DEMUXERS = Object.freeze(['mov', 'matroska', 'avi', 'mpeg', 'mpegts', 'mpegvideo', 'm4v', 'ogg', 'flv', 'asf', 'wav', 'w64', 'mp3', 'flac', 'aac', 'aiff', 'caf']);

/** The input arguments for a file: the file protocol and known containers only, the path as a file: URL. */
function inputArgs(path: string): string[] {
  return ['-protocol_whitelist', 'file', '-format_whitelist', ALLOWED_DEMUXERS.join(','), '-i', `file:${resolve(path)}`];
}

/**
 * Runs a tool and resolves its stdout. More than `maxStdout` bytes, a run past the timeout, or a
 * non-zero exit is a MediaDecodeError for `file` (with the last line ffmpeg wrote on stderr).
 */
function runTool(tool: Tool, args: string[], file: string, maxStdout: number, timeoutMs: number, tooMuch: string): Promise<Buffer> {
  return new Promise<Buffer>((resolvePromise, reject) => {
    let child;
    try {
      child = spawn(tool.path, args, { stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
    } catch (error) {
      reject(missingTool(tool, error));
      return;
    }
    const chunks: Buffer[] = [];
    let total = 0;
    let stderr = '';
    let failure: Error | undefined;
    const fail = (error: Error) => {
      failure ??= error;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => fail(new MediaDecodeError(file, `${tool.name} took longer than ${timeoutMs} ms (options.timeoutMs)`)), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      if (failure) return;
      total += chunk.length;
      if (total > maxStdout) fail(new MediaDecodeError(file, tooMuch));
      else chunks.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr = (stderr + text).slice(-STDERR_TAIL);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      failure ??= error.code === 'ENOENT' || error.code === 'EACCES' ? missingTool(tool, error) : new MediaDecodeError(file, `${tool.name} could not run: ${error.message}`, { cause: error });
      reject(failure);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) {
        reject(failure);
        return;
      }
      if (code !== 0) {
        const lines = stderr.trim().split('\n').map((l) => l.trim()).filter(Boolean);
        const last = lines.length ? lines[lines.length - 1]!.replace(/^file:[^:]*:\s*/, '') : signal ? `killed by ${signal}` : `exit code ${code}`;
        reject(new MediaDecodeError(file, `${tool.name} failed on it: ${last}`));
        return;
      }
      resolvePromise(Buffer.concat(chunks, total));
    });
  });
}

function finitePositive(value: unknown): number | undefined {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : NaN;
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

function frameRate(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const [num, den] = value.split('/').map(Number);
  if (den === undefined) return finitePositive(num);
  return den > 0 ? finitePositive(num! / den) : undefined;
}

interface ProbeStream {
  codec_type?: string;
  width?: number;
  height?: number;
  duration?: string;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  nb_frames?: string;
  sample_rate?: string;
  channels?: number;
  disposition?: { attached_pic?: number };
  tags?: { rotate?: string };
  side_data_list?: { rotation?: number | string }[];
}

/** What ffprobe says of a file: duration, and its first video and audio streams. MediaDecodeError when it cannot read it. */
export async function probeMedia(path: string, options: MediaToolOptions = {}): Promise<MediaProbe> {
  checkPath(path);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  const { ffprobe, timeoutMs } = tools(options);
  await regularFileSize(path);
  const args = [
    '-v', 'error',
    '-print_format', 'json',
    '-show_entries', 'format=duration:stream=codec_type,width,height,duration,avg_frame_rate,r_frame_rate,nb_frames,sample_rate,channels:stream_disposition=attached_pic:stream_tags=rotate:stream_side_data=rotation',
    ...inputArgs(path),
  ];
  const out = await runTool(ffprobe, args, path, PROBE_MAX_BYTES, timeoutMs, 'ffprobe wrote an implausibly large description');
  let parsed: { format?: { duration?: string }; streams?: ProbeStream[] };
  try {
    parsed = JSON.parse(out.toString('utf8'));
  } catch (error) {
    throw new MediaDecodeError(path, 'ffprobe gave no readable description of it', { cause: error });
  }
  const streams = Array.isArray(parsed.streams) ? parsed.streams : [];
  const v = streams.find((s) => s.codec_type === 'video' && !s.disposition?.attached_pic && finitePositive(s.width) && finitePositive(s.height));
  const a = streams.find((s) => s.codec_type === 'audio' && finitePositive(s.sample_rate));
  const probe: MediaProbe = {
    durationSeconds: finitePositive(parsed.format?.duration) ?? Math.max(0, ...streams.map((s) => finitePositive(s.duration) ?? 0)),
  };
  if (v) {
    const rotation = Number(v.side_data_list?.find((d) => d.rotation !== undefined)?.rotation ?? v.tags?.rotate ?? 0);
    const quarter = Math.abs(Math.round(rotation / 90)) % 2 === 1;
    probe.video = {
      width: quarter ? v.height! : v.width!,
      height: quarter ? v.width! : v.height!,
      frameRate: frameRate(v.avg_frame_rate) ?? frameRate(v.r_frame_rate),
      durationSeconds: finitePositive(v.duration),
      frameCount: finitePositive(v.nb_frames),
    };
  }
  if (a) probe.audio = { sampleRate: Number(a.sample_rate), channels: finitePositive(a.channels) ?? 1, durationSeconds: finitePositive(a.duration) };
  return probe;
}

/**
 * How long a file's video lasts, in seconds (0 when unknown): the video stream's own duration,
 * unless that is missing or under half the container's (MPEG program streams report one frame's).
 */
export function videoDuration(probe: MediaProbe): number {
  if (typeof probe !== 'object' || probe === null) throw new InvalidArgumentError('probe', 'a media probe { durationSeconds, video? } from probeMedia()', probe);
  const container = probe.durationSeconds;
  if (typeof container !== 'number' || !(container >= 0)) throw new InvalidArgumentError('probe.durationSeconds', 'a duration in seconds of at least 0', container);
  const video: unknown = probe.video;
  const stream = typeof video === 'object' && video !== null ? (video as VideoStreamInfo).durationSeconds : undefined;
  if (stream !== undefined && (typeof stream !== 'number' || !(stream >= 0))) throw new InvalidArgumentError('probe.video.durationSeconds', 'a duration in seconds of at least 0', stream);
  return stream !== undefined && (container === 0 || stream >= container / 2) ? stream : container;
}

/** Splits ffmpeg's image2pipe PPM output into frames of 8-bit RGB. */
function parsePpmFrames(data: Buffer, file: string): Frame[] {
  const frames: Frame[] = [];
  let at = 0;
  const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
  const token = (): string => {
    while (at < data.length && isSpace(data[at]!)) at++;
    const start = at;
    while (at < data.length && !isSpace(data[at]!)) at++;
    return data.toString('latin1', start, at);
  };
  while (at < data.length) {
    const magic = token();
    if (magic === '') break;
    const width = Number(token());
    const height = Number(token());
    const maxval = Number(token());
    at++; // the single whitespace before the pixels
    const size = width * height * 3;
    if (magic !== 'P6' || !(width > 0) || !(height > 0) || maxval !== 255 || at + size > data.length) {
      throw new MediaDecodeError(file, 'ffmpeg produced frames that could not be read');
    }
    frames.push({ width, height, rgb: data.subarray(at, at + size) });
    at += size;
  }
  return frames;
}

function scaleFilter(width: number | undefined, height: number | undefined, fit: 'cover' | 'stretch'): string[] {
  if (width === undefined || height === undefined) return [];
  if (fit === 'stretch') return [`scale=${width}:${height}:flags=bicubic`];
  return [`scale=${width}:${height}:force_original_aspect_ratio=increase:flags=bicubic`, `crop=${width}:${height}`];
}

function seconds(value: number): string {
  return value.toFixed(6);
}

/**
 * Decodes `frames` RGB frames of a video file with ffmpeg: spread evenly over its duration, or
 * consecutive at `fps` (see DecodeVideoFramesOptions), scaled and centre-cropped to width x height
 * when given. See DecodedVideoFrames for the layout.
 */
export async function decodeVideoFrames(path: string, options: DecodeVideoFramesOptions): Promise<DecodedVideoFrames> {
  checkPath(path);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { frames, width, height }', options);
  const count = options.frames;
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1 || count > 10_000) throw new InvalidArgumentError('options.frames', 'an integer number of frames from 1 to 10000', count);
  if ((options.width === undefined) !== (options.height === undefined)) {
    throw new InvalidArgumentError('options.width', 'width and height given together, or neither (for the video\'s own size)', `width ${String(options.width)}, height ${String(options.height)}`);
  }
  const width = options.width === undefined ? undefined : positiveInteger(options.width, 'options.width', 1);
  const height = options.height === undefined ? undefined : positiveInteger(options.height, 'options.height', 1);
  if ((width !== undefined && width > 16384) || (height !== undefined && height > 16384)) throw new InvalidArgumentError('options.width', 'a size of at most 16384 pixels', `${width}x${height}`);
  const fit = options.fit ?? 'cover';
  if (fit !== 'cover' && fit !== 'stretch') throw new InvalidArgumentError('options.fit', "'cover' or 'stretch'", fit);
  const fps = options.fps;
  if (fps !== undefined && !(typeof fps === 'number' && Number.isFinite(fps) && fps > 0 && fps <= 1000)) throw new InvalidArgumentError('options.fps', 'a frame rate above 0 and at most 1000', fps);
  const start = options.start ?? 0;
  if (typeof start !== 'number' || !Number.isFinite(start) || start < 0) throw new InvalidArgumentError('options.start', 'a non-negative number of seconds', start);
  if (options.start !== undefined && fps === undefined) throw new InvalidArgumentError('options.start', 'start only together with fps (consecutive frames)', start);
  const maxBytes = positiveInteger(options.maxBytes, 'options.maxBytes', DEFAULT_FRAME_BYTES);
  const { ffmpeg, timeoutMs } = tools(options);

  const probe = await probeOf(path, options);
  if (!probe.video) throw new MediaDecodeError(path, 'it has no video stream');
  const outWidth = width ?? probe.video.width;
  const outHeight = height ?? probe.video.height;
  const frameBytes = outWidth * outHeight * 3;
  if (frameBytes * count > maxBytes) {
    throw new MediaDecodeError(path, `${count} frames of ${outWidth}x${outHeight} RGB are ${frameBytes * count} bytes, more than the limit of ${maxBytes} (options.maxBytes; or ask for a smaller width and height)`);
  }
  const duration = videoDuration(probe);
  const filters = [...scaleFilter(width, height, fit), 'format=rgb24'];
  // PPM headers are short; allow for them on top of the pixels.
  const frameLimit = (n: number) => n * (frameBytes + 64);
  const tooMuch = 'ffmpeg produced more frame data than asked for';
  const decodeArgs = (filterChain: string[], n: number) => ['-an', '-sn', '-dn', '-vf', filterChain.join(','), '-frames:v', String(n), '-c:v', 'ppm', '-f', 'image2pipe', 'pipe:1'];

  let decoded: Frame[];
  let timestamps: number[];
  if (fps !== undefined) {
    const args = ['-nostdin', '-v', 'error', ...(start > 0 ? ['-ss', seconds(start)] : []), ...inputArgs(path), ...decodeArgs([`fps=${fps}`, ...filters], count)];
    decoded = parsePpmFrames(await runTool(ffmpeg, args, path, frameLimit(count), timeoutMs, tooMuch), path);
    if (decoded.length === 0) throw new MediaDecodeError(path, start > 0 ? `no video frame could be decoded from ${start} s on` : 'no video frame could be decoded');
    // A video shorter than the clip: its last frame held.
    timestamps = Array.from({ length: count }, (_, i) => start + Math.min(i, decoded.length - 1) / fps);
    while (decoded.length < count) decoded.push(decoded[decoded.length - 1]!);
  } else {
    // An accurate seek per frame (each decodes from the keyframe before its time, so a long video
    // is not decoded whole), up to SEEKS_PER_RUN of them in one ffmpeg run: each seek is an input
    // of its own, trimmed to its first frame, and the frames concatenated in order. ffmpeg starts
    // in about 0.1 s, much longer than a seek in a short video takes.
    timestamps = Array.from({ length: count }, (_, i) => (duration > 0 ? ((i + 0.5) * duration) / count : 0));
    const seekOne = async (time: number): Promise<Frame | undefined> => {
      const args = ['-nostdin', '-v', 'error', ...(time > 0 ? ['-ss', seconds(time)] : []), ...inputArgs(path), ...decodeArgs(filters, 1)];
      return parsePpmFrames(await runTool(ffmpeg, args, path, frameLimit(1), timeoutMs, tooMuch), path)[0];
    };
    const seekMany = async (times: number[]): Promise<(Frame | undefined)[]> => {
      if (times.length === 1) return [await seekOne(times[0]!)];
      const args = ['-nostdin', '-v', 'error'];
      const graph: string[] = [];
      times.forEach((time, i) => {
        args.push(...(time > 0 ? ['-ss', seconds(time)] : []), ...inputArgs(path));
        graph.push(`[${i}:v:0]trim=end_frame=1,setpts=PTS-STARTPTS,${filters.join(',')}[f${i}]`);
      });
      graph.push(`${times.map((_, i) => `[f${i}]`).join('')}concat=n=${times.length}:v=1:a=0[out]`);
      // passthrough: the frames all have timestamp 0 and must not be dropped as duplicates. (An
      // ffmpeg older than 5.1 lacks -fps_mode: the run fails and the seeks go one by one below.)
      args.push('-filter_complex', graph.join(';'), '-map', '[out]', '-fps_mode', 'passthrough', '-c:v', 'ppm', '-f', 'image2pipe', 'pipe:1');
      let frames: Frame[] | undefined;
      try {
        frames = parsePpmFrames(await runTool(ffmpeg, args, path, frameLimit(times.length), timeoutMs, tooMuch), path);
      } catch (error) {
        if (!(error instanceof MediaDecodeError)) throw error;
      }
      // A seek past the last frame gives nothing, and then which frame came from which seek is
      // unknown; a frame size that changes mid-stream fails the concatenation. Seek one by one.
      if (frames?.length === times.length) return frames;
      const one: (Frame | undefined)[] = [];
      for (const time of times) one.push(await seekOne(time));
      return one;
    };
    // Equal times (a video with no duration, or more frames asked than it has) decode once.
    const unique = [...new Set(timestamps)];
    const byTime = new Map<number, Frame | undefined>();
    for (let i = 0; i < unique.length; i += SEEKS_PER_RUN) {
      const times = unique.slice(i, i + SEEKS_PER_RUN);
      (await seekMany(times)).forEach((frame, k) => byTime.set(times[k]!, frame));
    }
    const results = timestamps.map((time) => byTime.get(time));
    // A seek past the last frame (the duration can overstate it) gets nothing: take the nearest earlier frame.
    if (!results.some((r) => r !== undefined)) {
      const first = await seekOne(0);
      if (!first) throw new MediaDecodeError(path, 'no video frame could be decoded');
      results.fill(first);
      timestamps.fill(0);
    }
    for (let i = 0; i < count; i++) {
      if (results[i]) continue;
      let j = i - 1;
      while (j >= 0 && !results[j]) j--;
      if (j < 0) for (j = i + 1; !results[j]; j++);
      results[i] = results[j];
      timestamps[i] = timestamps[j]!;
    }
    decoded = results as Frame[];
  }

  for (const frame of decoded) {
    if (frame.width !== outWidth || frame.height !== outHeight) {
      throw new MediaDecodeError(path, `ffmpeg produced a ${frame.width}x${frame.height} frame where ${outWidth}x${outHeight} was expected`);
    }
  }
  const rgb = new Uint8Array(frameBytes * count);
  decoded.forEach((frame, i) => rgb.set(frame.rgb, i * frameBytes));
  return { pixels: rgbToPlanes(rgb, count, outHeight, outWidth), rgb, frames: count, width: outWidth, height: outHeight, timestamps, durationSeconds: duration };
}

/** 8-bit HWC frames to float32 [frames, 3, height, width] in [0, 1]. */
export function rgbToPlanes(rgb: Uint8Array, frames: number, height: number, width: number): Tensor<'float32'> {
  const plane = height * width;
  const out = new Float32Array(frames * 3 * plane);
  for (let f = 0; f < frames; f++) {
    const src = f * plane * 3;
    const dst = f * 3 * plane;
    for (let p = 0, s = src; p < plane; p++, s += 3) {
      out[dst + p] = rgb[s]! / 255;
      out[dst + plane + p] = rgb[s + 1]! / 255;
      out[dst + 2 * plane + p] = rgb[s + 2]! / 255;
    }
  }
  return new Tensor('float32', [frames, 3, height, width], out);
}

/**
 * Decodes the first audio track of a video (or any file ffmpeg reads) as float samples at
 * `sampleRate` (ffmpeg's resampler), mono by default. MediaDecodeError when the file has no audio
 * track or cannot be read.
 */
export async function decodeVideoAudio(path: string, options: DecodeVideoAudioOptions): Promise<DecodedAudio> {
  checkPath(path);
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { sampleRate }', options);
  const sampleRate = checkSampleRate(options.sampleRate, 'options.sampleRate');
  const channels = checkChannels(options.channels, 'options.channels');
  const start = options.start ?? 0;
  if (typeof start !== 'number' || !Number.isFinite(start) || start < 0) throw new InvalidArgumentError('options.start', 'a non-negative number of seconds', start);
  const length = options.durationSeconds;
  if (length !== undefined && !(typeof length === 'number' && Number.isFinite(length) && length > 0)) {
    throw new InvalidArgumentError('options.durationSeconds', 'a positive number of seconds', length);
  }
  const maxSamples = positiveInteger(options.maxSamples, 'options.maxSamples', DEFAULT_MAX_SAMPLES);
  const { ffmpeg, timeoutMs } = tools(options);
  const probe = await probeOf(path, options);
  if (!probe.audio) throw new MediaDecodeError(path, 'it has no audio track');
  const args = [
    '-nostdin', '-v', 'error',
    ...(start > 0 ? ['-ss', seconds(start)] : []),
    ...inputArgs(path),
    ...(length !== undefined ? ['-t', seconds(length)] : []),
    '-map', '0:a:0', '-vn', '-sn', '-dn',
    '-ac', String(channels), '-ar', String(sampleRate),
    '-f', 'f32le', 'pipe:1',
  ];
  const out = await runTool(ffmpeg, args, path, maxSamples * 4, timeoutMs, `its audio is longer than the limit of ${maxSamples} samples (options.maxSamples; or pass durationSeconds)`);
  const frames = Math.floor(out.length / (4 * channels));
  // Copied into an aligned buffer; f32le is the byte order of every platform Node.js runs on here.
  const samples = new Float32Array(frames * channels);
  new Uint8Array(samples.buffer).set(out.subarray(0, samples.byteLength));
  return { samples, sampleRate, channels, durationSeconds: frames / sampleRate };
}
