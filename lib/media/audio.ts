/**
 * Audio files to samples: decoded with the `audio-decode` package (pure JS and WASM: WAV, FLAC,
 * MP3, Ogg Vorbis, Opus, M4A/AAC, AIFF, CAF, ...; no system tools), downmixed to the channels and
 * resampled to the rate a model needs.
 *
 * `maxSamples` is enforced before and while decoding, never only after (a 72 KB FLAC of silence
 * decodes to 288 million samples): the length a WAV, FLAC or MP3 header declares is checked first
 * (lib/media/audio_length.ts), WAV and native FLAC, whose headers bound what decoding can produce,
 * are then decoded whole, and every other file is fed to the format's streaming decoder in chunks
 * sized to the samples still allowed, stopping as soon as the count passes the limit and yielding
 * to the event loop between chunks. A decoder that must buffer up to an index before it produces
 * anything (an MP4 whose index is at its end) gets ever larger chunks, so such a file is in effect
 * decoded whole before the first count.
 *
 * `audio-decode` (and `audio-type`, its format sniffer) are imported lazily, on the first decode,
 * so that loading the library does not need them.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BackendUnavailableError, InvalidArgumentError, MediaDecodeError, MissingDependencyError } from '../errors.js';
import { CorruptAudioHeader, declaredAudioLength } from './audio_length.js';
import { checkPath, positiveInteger, readMediaFile } from './files.js';
import { requireOptional } from '../optional.js';

export interface DecodeAudioOptions {
  /** Output sample rate in Hz (default: the file's own). */
  sampleRate?: number;
  /**
   * Output channels (default 1). 1 is the mean of all the file's channels. More than 1: the file's
   * channels as they are when it has that many, a mono file copied to each, otherwise its first
   * `channels` channels (for surround files, in WAV order, the front left and right first).
   */
  channels?: number;
  /** Largest file accepted, in bytes (default 64 MiB); larger files are refused before reading. */
  maxBytes?: number;
  /** Largest decoded or output length accepted, in samples over all channels (default 2^26, 256 MiB of float32). */
  maxSamples?: number;
}

export interface DecodedAudio {
  /** The samples, in [-1, 1] for PCM sources: mono, or interleaved frame by frame when `channels` > 1. */
  samples: Float32Array;
  sampleRate: number;
  channels: number;
  /** Samples per channel divided by the sample rate. */
  durationSeconds: number;
}

export const DEFAULT_AUDIO_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_SAMPLES = 2 ** 26;
/** Sample rates accepted, in Hz: wide enough for any real file and for the small test models (800 Hz). */
const MIN_RATE = 1;
const MAX_RATE = 768_000;

interface AudioData {
  channelData: Float32Array[];
  sampleRate: number;
}
/** audio-decode's streaming decoder: `dec(chunk)` decodes a chunk, `dec()` flushes and frees. */
interface StreamDecoder {
  (chunk?: Uint8Array): Promise<AudioData>;
  free(): void;
}
/** audio-decode's default export: a whole-file decoder, with a streaming decoder factory per format as properties. */
type AudioDecoder = ((bytes: Uint8Array) => Promise<AudioData>) & Record<string, unknown>;
interface AudioDecoding {
  decode: AudioDecoder;
  /** The format name audio-decode uses for these bytes (audio-type), when that package could be loaded. */
  formatOf?: (bytes: Uint8Array) => string | undefined;
}

/** Streaming: a chunk's bytes are at most the samples still allowed over this (FLAC and Opus reach ~5000 samples a byte). */
const MAX_SAMPLES_PER_BYTE = 8192;
const MIN_CHUNK_BYTES = 4096;
const MAX_CHUNK_BYTES = 1 << 20;

/** A specifier in a variable: audio-type ships no type declarations, and only its default export is used. */
const AUDIO_TYPE = 'audio-type';

let decoderPromise: Promise<AudioDecoding> | undefined;

async function loadAudioDecode(): Promise<AudioDecoding> {
  decoderPromise ??= (async () => {
    let mod: { default?: unknown };
    try {
      mod = await requireOptional<{ default?: unknown }>('audio-decode');
    } catch (error) {
      decoderPromise = undefined; // a later call may find it installed
      if (error instanceof MissingDependencyError) throw error;
      throw new BackendUnavailableError(`Decoding audio files needs the "audio-decode" package, which could not be loaded (${(error as Error).message}). Run \`npm install audio-decode\`.`);
    }
    if (typeof mod.default !== 'function') {
      decoderPromise = undefined;
      throw new BackendUnavailableError('Decoding audio files needs the "audio-decode" package, but the module loaded under that name is not it. Run `npm install audio-decode`.');
    }
    // audio-type is audio-decode's own format sniffer (a dependency of it); without it every file is decoded whole.
    const sniffer = (await import(AUDIO_TYPE).catch(() => undefined)) as { default?: unknown } | undefined;
    const formatOf = typeof sniffer?.default === 'function' ? (sniffer.default as (bytes: Uint8Array) => string | undefined) : undefined;
    return { decode: mod.default as AudioDecoder, formatOf };
  })();
  return decoderPromise;
}

/** Why a decoder failed, from its message. */
function decodeFailure(name: string, error: unknown): MediaDecodeError {
  if (error instanceof MediaDecodeError) return error;
  const message = (error as Error)?.message ?? String(error);
  const reason = /unknown audio format/i.test(message)
    ? 'not a recognised audio format (WAV, FLAC, MP3, Ogg, Opus, M4A/AAC, AIFF, CAF, ...)'
    : /no decoder for/i.test(message)
      ? `its format is not supported (${message})`
      : `the audio data is corrupt (${message})`;
  return new MediaDecodeError(name, reason, { cause: error });
}

/** Planes of equal length from decoded data (none when it holds no samples). */
function planesOf(data: AudioData): Float32Array[] {
  const planes = (data.channelData ?? []).filter((c) => c instanceof Float32Array);
  const frames = planes.length ? Math.min(...planes.map((c) => c.length)) : 0;
  return frames === 0 ? [] : planes.map((p) => (p.length === frames ? p : p.subarray(0, frames)));
}

/**
 * Decodes with `format`'s streaming decoder in chunks, refusing as soon as the samples decoded
 * pass `maxSamples`: a chunk is at most the samples still allowed / MAX_SAMPLES_PER_BYTE bytes,
 * doubling while the decoder only buffers.
 */
async function decodeStreaming(decoding: AudioDecoding, format: string, bytes: Uint8Array, name: string, maxSamples: number): Promise<AudioData> {
  const open = decoding.decode[format];
  if (typeof open !== 'function') throw new Error(`No decoder for ${format}`);
  const decoder = (await (open as () => Promise<StreamDecoder>)()) as StreamDecoder;
  const parts: Float32Array[][] = [];
  let frames = 0;
  let channels = 0;
  let sampleRate = 0;
  const take = (data: AudioData): boolean => {
    const planes = planesOf(data);
    if (planes.length === 0) return false;
    if (!sampleRate) sampleRate = data.sampleRate;
    frames += planes[0]!.length;
    channels = Math.max(channels, planes.length);
    if (frames * channels > maxSamples) {
      throw new MediaDecodeError(name, `it decodes to more than ${maxSamples} samples, the limit (options.maxSamples): decoding stopped at ${frames * channels}`);
    }
    parts.push(planes);
    return true;
  };
  try {
    let chunkBytes = MIN_CHUNK_BYTES;
    for (let offset = 0; offset < bytes.length; ) {
      const chunk = bytes.subarray(offset, offset + chunkBytes);
      offset += chunk.length;
      const allowed = Math.floor((maxSamples - frames * Math.max(channels, 1)) / MAX_SAMPLES_PER_BYTE);
      chunkBytes = take(await decoder(chunk)) ? Math.min(MAX_CHUNK_BYTES, Math.max(MIN_CHUNK_BYTES, allowed)) : chunkBytes * 2;
      await nextTurn(); // a turn of the event loop between chunks
    }
    take(await decoder());
  } catch (error) {
    decoder.free();
    throw error;
  }
  // The channels of every part, concatenated (a part with fewer channels repeats its own, as audio-decode's merge does).
  const channelData = Array.from({ length: channels }, (_, c) => {
    const out = new Float32Array(frames);
    let at = 0;
    for (const part of parts) {
      const plane = part[c % part.length]!;
      out.set(plane, at);
      at += plane.length;
    }
    return out;
  });
  return { channelData, sampleRate };
}

export function checkSampleRate(value: unknown, argument: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < MIN_RATE || value > MAX_RATE) {
    throw new InvalidArgumentError(argument, `an integer sample rate in Hz from ${MIN_RATE} to ${MAX_RATE}`, value);
  }
  return value;
}

export function checkChannels(value: unknown, argument: string): number {
  if (value === undefined) return 1;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > 64) throw new InvalidArgumentError(argument, 'an integer number of channels from 1 to 64', value);
  return value;
}

/**
 * Decodes an audio file (a path, or the file's bytes) into samples at `sampleRate` with
 * `channels` channels. Throws MediaDecodeError when the file is missing, unreadable, too large,
 * not audio, corrupt or holds no samples.
 */
export async function decodeAudio(source: string | Uint8Array, options: DecodeAudioOptions = {}): Promise<DecodedAudio> {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { sampleRate, channels }', options);
  const targetRate = options.sampleRate === undefined ? undefined : checkSampleRate(options.sampleRate, 'options.sampleRate');
  const channels = checkChannels(options.channels, 'options.channels');
  const maxBytes = positiveInteger(options.maxBytes, 'options.maxBytes', DEFAULT_AUDIO_MAX_BYTES);
  const maxSamples = positiveInteger(options.maxSamples, 'options.maxSamples', DEFAULT_MAX_SAMPLES);

  let bytes: Uint8Array;
  let name: string;
  if (typeof source === 'string') {
    name = checkPath(source, 'source');
    bytes = await readMediaFile(name, maxBytes, 'options.maxBytes');
  } else if (source instanceof Uint8Array) {
    name = `audio bytes (${source.byteLength} bytes)`;
    if (source.byteLength === 0) throw new MediaDecodeError(name, 'no bytes');
    if (source.byteLength > maxBytes) throw new MediaDecodeError(name, `more than the limit of ${maxBytes} bytes (options.maxBytes)`);
    bytes = source;
  } else {
    throw new InvalidArgumentError('source', 'an audio file path or the bytes of an audio file (Uint8Array)', source);
  }

  // What the header declares, checked before any decoding.
  let declared;
  try {
    declared = declaredAudioLength(bytes);
  } catch (error) {
    if (error instanceof CorruptAudioHeader) throw new MediaDecodeError(name, `the audio data is corrupt (${error.message})`);
    throw error;
  }
  if (declared) {
    const seconds = declared.sampleRate > 0 ? ` (${+(declared.frames / declared.sampleRate).toFixed(1)} s at ${declared.sampleRate} Hz)` : '';
    const samples = declared.frames * declared.channels;
    if (samples > maxSamples) {
      throw new MediaDecodeError(name, `its ${declared.format} header declares ${samples} samples${seconds}, more than the limit of ${maxSamples} (options.maxSamples)`);
    }
    if (declared.bound !== undefined && declared.bound > maxSamples) {
      throw new MediaDecodeError(name, `its ${declared.format} frames hold up to ${declared.bound} samples, more than the limit of ${maxSamples} (options.maxSamples)`);
    }
    if (targetRate !== undefined && declared.sampleRate > 0 && resampledLength(declared.frames, declared.sampleRate, targetRate) * channels > maxSamples) {
      throw new MediaDecodeError(name, `it resamples to ${resampledLength(declared.frames, declared.sampleRate, targetRate) * channels} samples by its header, more than the limit of ${maxSamples} (options.maxSamples)`);
    }
  }

  const decoding = await loadAudioDecode();
  let data: AudioData;
  try {
    // audio-type reads `bytes.buffer` from its start: a view into a larger buffer (Node's pool) must be copied first.
    const format = decoding.formatOf?.(bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes));
    if (format === undefined && decoding.formatOf) throw new Error('Unknown audio format');
    // A header that bounds decoding (WAV, native FLAC) makes the whole-file decoder safe; anything else streams.
    data = declared?.bound !== undefined || format === undefined ? await decoding.decode(bytes) : await decodeStreaming(decoding, format, bytes, name, maxSamples);
  } catch (error) {
    throw decodeFailure(name, error);
  }
  const planes = planesOf(data);
  const frames = planes.length ? planes[0]!.length : 0;
  if (planes.length === 0 || !(data.sampleRate > 0)) throw new MediaDecodeError(name, 'it holds no audio samples (empty or truncated)');
  if (frames * planes.length > maxSamples) {
    throw new MediaDecodeError(name, `it decodes to ${frames * planes.length} samples, more than the limit of ${maxSamples} (options.maxSamples)`);
  }
  const sourceRate = data.sampleRate;
  const sampleRate = targetRate ?? sourceRate;
  const outFrames = resampledLength(frames, sourceRate, sampleRate);
  if (outFrames * channels > maxSamples) {
    throw new MediaDecodeError(name, `it resamples to ${outFrames * channels} samples, more than the limit of ${maxSamples} (options.maxSamples)`);
  }

  const mixed = mixChannels(planes, channels);
  const resampled = mixed.map((plane) => resampleAudio(plane, sourceRate, sampleRate));
  return { samples: interleave(resampled), sampleRate, channels, durationSeconds: outFrames / sampleRate };
}

/** The planes of `channels` output channels (see DecodeAudioOptions.channels). */
function mixChannels(planes: Float32Array[], channels: number): Float32Array[] {
  if (channels === 1) {
    if (planes.length === 1) return [planes[0]!];
    const out = new Float32Array(planes[0]!.length);
    for (const plane of planes) for (let i = 0; i < out.length; i++) out[i]! += plane[i]!;
    const scale = 1 / planes.length;
    for (let i = 0; i < out.length; i++) out[i]! *= scale;
    return [out];
  }
  if (planes.length === 1) return Array.from({ length: channels }, () => planes[0]!);
  if (planes.length >= channels) return planes.slice(0, channels);
  // Fewer channels than asked (e.g. stereo to 4): the missing ones silent.
  return Array.from({ length: channels }, (_, c) => planes[c] ?? new Float32Array(planes[0]!.length));
}

function interleave(planes: Float32Array[]): Float32Array {
  if (planes.length === 1) return planes[0]!;
  const n = planes[0]!.length;
  const c = planes.length;
  const out = new Float32Array(n * c);
  for (let ch = 0; ch < c; ch++) {
    const plane = planes[ch]!;
    for (let i = 0, o = ch; i < n; i++, o += c) out[o] = plane[i]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Resampling
//
// Written here rather than taken from a package: of the npm resamplers, the maintained
// high-quality ones are WebAssembly builds of C libraries (@alexanderolsen/libsamplerate-js,
// @echogarden/speex-resampler-wasm), another dependency with a WASM instance to manage, and the
// pure-JS ones are unmaintained or do only linear or s16 resampling (wave-resampler 1.0.0,
// @purinton/resampler). Band-limited resampling is short to write: the windowed-sinc
// interpolation of Smith's "Digital Audio Resampling" (the method of libsamplerate's sinc
// converters and of resampy), with a Kaiser window and the kernel tabulated finely and
// interpolated linearly.

/** Zero crossings of the sinc on each side of the kernel centre. */
const ZERO_CROSSINGS = 32;
/** Kaiser window beta: about 90 dB of stopband attenuation. */
const KAISER_BETA = 9;
/** Cut-off as a fraction of the lower Nyquist frequency, leaving room for the transition band. */
const ROLLOFF = 0.92;
/** Kernel table entries per zero crossing. */
const TABLE_RESOLUTION = 512;

let kernelTable: Float64Array | undefined;

/** I0, the modified Bessel function of the first kind of order 0 (its power series). */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 200; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

/** sinc(u) * kaiser(u / ZERO_CROSSINGS) at u = j / TABLE_RESOLUTION, for j = 0 .. ZERO_CROSSINGS * TABLE_RESOLUTION + 1 (the last is 0). */
function kernel(): Float64Array {
  if (kernelTable) return kernelTable;
  const n = ZERO_CROSSINGS * TABLE_RESOLUTION;
  const table = new Float64Array(n + 2);
  const norm = besselI0(KAISER_BETA);
  for (let j = 0; j <= n; j++) {
    const u = j / TABLE_RESOLUTION;
    const sinc = j === 0 ? 1 : Math.sin(Math.PI * u) / (Math.PI * u);
    const x = u / ZERO_CROSSINGS;
    table[j] = sinc * (besselI0(KAISER_BETA * Math.sqrt(Math.max(0, 1 - x * x))) / norm);
  }
  kernelTable = table;
  return table;
}

/** The number of samples `length` samples at `fromRate` become at `toRate` (at least 1 of a non-empty signal). */
export function resampledLength(length: number, fromRate: number, toRate: number): number {
  if (length === 0) return 0;
  return fromRate === toRate ? length : Math.max(1, Math.round((length * toRate) / fromRate));
}

/**
 * Resamples one channel from `fromRate` to `toRate` (Hz) with a band-limited (windowed-sinc)
 * interpolator: frequencies below 0.92 of the lower Nyquist frequency pass unchanged, those above
 * the higher one are removed (about 90 dB down), so downsampling does not alias. The signal is
 * taken as zero outside its ends. Returns a copy when the rates are equal.
 */
export function resampleAudio(samples: Float32Array, fromRate: number, toRate: number): Float32Array {
  if (!(samples instanceof Float32Array)) throw new InvalidArgumentError('samples', 'a Float32Array of samples', samples);
  checkSampleRate(fromRate, 'fromRate');
  checkSampleRate(toRate, 'toRate');
  if (fromRate === toRate) return samples.slice();
  const table = kernel();
  const n = samples.length;
  const outLength = resampledLength(n, fromRate, toRate);
  const out = new Float32Array(outLength);
  // The kernel in input samples is scale * k(scale * t): a low-pass at `scale` times the input's
  // Nyquist frequency, spanning ZERO_CROSSINGS / scale input samples on each side.
  const scale = Math.min(1, toRate / fromRate) * ROLLOFF;
  const halfWidth = ZERO_CROSSINGS / scale;
  const step = scale * TABLE_RESOLUTION;
  for (let i = 0; i < outLength; i++) {
    const t = (i * fromRate) / toRate; // the output sample's position in input samples, exact for integer rates
    const first = Math.max(0, Math.ceil(t - halfWidth));
    const last = Math.min(n - 1, Math.floor(t + halfWidth));
    let acc = 0;
    for (let k = first; k <= last; k++) {
      const pos = Math.abs(t - k) * step;
      const j = pos | 0;
      const w0 = table[j]!;
      acc += (w0 + (pos - j) * (table[j + 1]! - w0)) * samples[k]!;
    }
    out[i] = acc * scale;
  }
  return out;
}
