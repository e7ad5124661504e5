/**
 * decodeAudio against files that decode to far more than they weigh: the length a header
 * declares is checked before decoding, and decoding is bounded as it runs. Each hostile file is
 * made here (FLAC and WAV by hand, MP3 with ffmpeg) and refused with a MediaDecodeError, fast and
 * with bounded memory.
 */
import t, { type Test } from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MediaDecodeError } from '../lib/errors.js';
import { decodeAudio } from '../lib/media/audio.js';
import { tempDir } from './helpers/fixtures.js';
import { ffmpeg, writeTone } from './helpers/media.js';

const MiB = 2 ** 20;

// ---------------------------------------------------------------------------------------------
// A FLAC writer for constant signals (RFC 9639): STREAMINFO, then frames of one CONSTANT subframe
// per channel, each with its header CRC-8 and frame CRC-16.

function crc8(bytes: number[]): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
}

function crc16(bytes: number[]): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let k = 0; k < 8; k++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x8005) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The frame number as FLAC codes it (UTF-8-like). */
function codedNumber(n: number): number[] {
  if (n < 0x80) return [n];
  if (n < 0x800) return [0xc0 | (n >> 6), 0x80 | (n & 0x3f)];
  return [0xe0 | (n >> 12), 0x80 | ((n >> 6) & 0x3f), 0x80 | (n & 0x3f)];
}

interface FlacSpec {
  sampleRate: number;
  channels: number;
  blockSize: number;
  frames: number;
  /** STREAMINFO's total samples (0: unknown). */
  declared: number;
  /** The constant 16-bit sample value. */
  value?: number;
}

const RATE_CODES: Record<number, number> = { 8000: 4, 16_000: 5, 44_100: 9, 48_000: 10, 96_000: 11 };

function makeFlac({ sampleRate, channels, blockSize, frames, declared, value = 0 }: FlacSpec): Buffer {
  const info = Buffer.alloc(34);
  info.writeUInt16BE(blockSize, 0);
  info.writeUInt16BE(blockSize, 2);
  const packed = (BigInt(sampleRate) << 44n) | (BigInt(channels - 1) << 41n) | (15n << 36n) | BigInt(declared);
  info.writeBigUInt64BE(packed, 10);
  const parts: Buffer[] = [Buffer.from('fLaC'), Buffer.from([0x80, 0, 0, 34]), info];
  for (let i = 0; i < frames; i++) {
    // Block size from the 16 bits after the number (code 7), the rate's own code (the decoder is
    // given frames without STREAMINFO), 16-bit samples.
    const header = [0xff, 0xf8, 0x70 | RATE_CODES[sampleRate]!, ((channels - 1) << 4) | 0x08, ...codedNumber(i), (blockSize - 1) >> 8, (blockSize - 1) & 0xff];
    header.push(crc8(header));
    const frame = [...header];
    for (let c = 0; c < channels; c++) frame.push(0x00, (value >> 8) & 0xff, value & 0xff);
    const crc = crc16(frame);
    frame.push(crc >> 8, crc & 0xff);
    parts.push(Buffer.from(frame));
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// WAV headers.

function wav(fmt: { tag: number; channels: number; rate: number; blockAlign: number; bits: number; extra?: Buffer }, data: Buffer, dataSize = data.length): Buffer {
  const extra = fmt.extra ?? Buffer.alloc(0);
  const f = Buffer.alloc(16);
  f.writeUInt16LE(fmt.tag, 0);
  f.writeUInt16LE(fmt.channels, 2);
  f.writeUInt32LE(fmt.rate, 4);
  f.writeUInt32LE(fmt.rate * fmt.blockAlign, 8);
  f.writeUInt16LE(fmt.blockAlign, 12);
  f.writeUInt16LE(fmt.bits, 14);
  const chunk = (id: string, body: Buffer, size = body.length) => {
    const h = Buffer.alloc(8);
    h.write(id, 0, 'latin1');
    h.writeUInt32LE(size, 4);
    return Buffer.concat([h, body]);
  };
  const body = Buffer.concat([Buffer.from('WAVE'), chunk('fmt ', Buffer.concat([f, extra])), chunk('data', data, dataSize)]);
  const riff = Buffer.alloc(8);
  riff.write('RIFF', 0, 'latin1');
  riff.writeUInt32LE(body.length, 4);
  return Buffer.concat([riff, body]);
}

// ---------------------------------------------------------------------------------------------

interface Outcome {
  error: unknown;
  ms: number;
  peakMiB: number;
  /** The longest the event loop went without running a 1 ms timer, in ms. */
  maxGapMs: number;
  result?: Awaited<ReturnType<typeof decodeAudio>>;
}

async function measure(call: () => ReturnType<typeof decodeAudio>): Promise<Outcome> {
  (globalThis as { gc?: () => void }).gc?.();
  const base = process.memoryUsage().rss;
  let peak = base;
  let last = performance.now();
  let maxGapMs = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 1);
  const start = performance.now();
  let error: unknown;
  let result;
  try {
    result = await call();
  } catch (err) {
    error = err;
  }
  const ms = performance.now() - start;
  clearInterval(ticker);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { error, ms, peakMiB: (peak - base) / MiB, maxGapMs, result };
}

function expectRefused(t: Test, what: string, o: Outcome, message: RegExp, maxMs = 2000): void {
  t.ok(o.error instanceof MediaDecodeError, `${what}: MediaDecodeError (got ${(o.error as Error)?.name}: ${(o.error as Error)?.message})`);
  t.match((o.error as Error)?.message ?? '', message, `${what}: message`);
  t.ok(o.ms < maxMs, `${what}: ${o.ms.toFixed(0)} ms`);
  t.ok(o.peakMiB < 200, `${what}: memory grew by ${o.peakMiB.toFixed(0)} MiB`);
}

// 3000 s at 96 kHz in frames of 65535 samples: about 66 KB.
const SILENCE = { sampleRate: 96_000, channels: 1, blockSize: 65_535, frames: Math.ceil((3000 * 96_000) / 65_535) };
const SILENCE_SAMPLES = SILENCE.frames * SILENCE.blockSize;

t.test('the hand-made FLAC writer makes files the decoder reads', async (t) => {
  const small = makeFlac({ sampleRate: 48_000, channels: 2, blockSize: 4096, frames: 3, declared: 3 * 4096, value: 1000 });
  const decoded = await decodeAudio(small, { channels: 2 });
  t.equal(decoded.sampleRate, 48_000);
  t.equal(decoded.samples.length, 2 * 3 * 4096, '3 frames of 4096, 2 channels');
  t.ok(decoded.samples.every((v) => Math.abs(v - 1000 / 32768) < 1e-4), 'the constant value');
  // Declared length unknown (0): the frames still read, and their count bounds them.
  t.equal((await decodeAudio(makeFlac({ sampleRate: 48_000, channels: 1, blockSize: 4096, frames: 2, declared: 0 }))).samples.length, 8192);
});

t.test('FLAC of silence: 3000 s at 96 kHz in 66 KB is refused before decoding, whatever its header says', async (t) => {
  const honest = makeFlac({ ...SILENCE, declared: 3000 * 96_000 });
  t.ok(honest.length < 72 * 1024, `${honest.length} bytes`);
  const declared = await measure(() => decodeAudio(honest));
  expectRefused(t, 'honest header', declared, new RegExp(`its FLAC header declares ${3000 * 96_000} samples \\(3000 s at 96000 Hz\\), more than the limit of ${2 ** 26}`), 500);

  const unknown = await measure(() => decodeAudio(makeFlac({ ...SILENCE, declared: 0 })));
  expectRefused(t, 'length unknown (0)', unknown, new RegExp(`its FLAC frames hold up to ${SILENCE_SAMPLES} samples, more than the limit`), 500);

  const lying = await measure(() => decodeAudio(makeFlac({ ...SILENCE, declared: 96_000 })));
  expectRefused(t, 'header claiming 1 s', lying, /its FLAC frames hold up to \d+ samples/, 500);

  // With a limit that allows it, the same file decodes: the bound is the limit, not a guess.
  const tenSeconds = makeFlac({ ...SILENCE, frames: 15, declared: 0 });
  t.equal((await decodeAudio(tenSeconds, { maxSamples: 15 * 65_535 })).samples.length, 15 * 65_535);
  await t.rejects(decodeAudio(tenSeconds, { maxSamples: 15 * 65_535 - 1 }), MediaDecodeError);
});

t.test('WAV: an ADPCM header declaring 65535 samples per 36-byte block, a zero block align, a truncated data chunk', async (t) => {
  // IMA ADPCM, mono: 36-byte blocks (4 header + 32 data bytes, 65 samples really), samplesPerBlock forged to 65535.
  const extra = Buffer.alloc(4);
  extra.writeUInt16LE(2, 0);
  extra.writeUInt16LE(65_535, 2);
  const bomb = wav({ tag: 0x11, channels: 1, rate: 8000, blockAlign: 36, bits: 4, extra }, Buffer.alloc(36 * 2000));
  const o = await measure(() => decodeAudio(bomb));
  expectRefused(t, 'ADPCM bomb (72 KB, 131 million samples)', o, /its WAV header declares 131070000 samples \(16383\.8 s at 8000 Hz\), more than the limit/, 500);

  const zeroAlign = wav({ tag: 1, channels: 1, rate: 8000, blockAlign: 0, bits: 16 }, Buffer.alloc(64 * 1024));
  expectRefused(t, 'block align 0', await measure(() => decodeAudio(zeroAlign)), /corrupt \(its WAV header declares a block align of 0 bytes\)/, 500);

  // A data chunk declaring 12 hours that holds 1 s: it decodes to what it holds.
  const second = Buffer.alloc(8000 * 2);
  for (let i = 0; i < 8000; i++) second.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 8000)), 2 * i);
  const truncated = wav({ tag: 1, channels: 1, rate: 8000, blockAlign: 2, bits: 16 }, second, 12 * 3600 * 8000 * 2);
  t.equal((await decodeAudio(truncated)).samples.length, 8000, 'the second it holds');
  // A long honest PCM header is refused against a smaller limit before decoding.
  expectRefused(t, 'PCM beyond maxSamples', await measure(() => decodeAudio(truncated, { maxSamples: 4000 })), /its WAV header declares 8000 samples/, 500);
});

t.test('MP3: a Xing header declaring hours is refused before decoding; without one, decoding stops at the limit', async (t) => {
  const dir = await tempDir(t);
  const short = join(dir, 'short.mp3');
  await ffmpeg('-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '1', '-c:a', 'libmp3lame', '-b:a', '8k', short);
  const bytes = Buffer.from(await readFile(short));
  const xing = bytes.indexOf('Xing') >= 0 ? bytes.indexOf('Xing') : bytes.indexOf('Info');
  t.ok(xing > 0, 'ffmpeg wrote a Xing/Info header');
  t.ok(bytes[xing + 7]! & 1, 'with a frame count');
  bytes.writeUInt32BE(50_000_000, xing + 8); // 50 million frames of 576 samples: 1000 hours
  expectRefused(t, 'Xing declaring 1000 hours', await measure(() => decodeAudio(bytes)), /its MP3 header declares 28800000000 samples \(3600000 s at 8000 Hz\)/, 500);

  // 600 s of silence at 8 kHz, 8 kbit/s, no Xing header: 600 KB that decode to 4.8 million samples.
  const long = join(dir, 'long.mp3');
  await ffmpeg('-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '600', '-c:a', 'libmp3lame', '-b:a', '8k', '-write_xing', '0', long);
  const stopped = await measure(() => decodeAudio(long, { maxSamples: 100_000 }));
  expectRefused(t, 'decoding past maxSamples', stopped, /it decodes to more than 100000 samples, the limit \(options\.maxSamples\): decoding stopped at (\d+)/, 1500);
  const at = Number(/stopped at (\d+)/.exec((stopped.error as Error).message)?.[1]);
  t.ok(at < 100_000 + MIN_CHUNK_SAMPLES, `stopped at ${at} samples, within a chunk of the limit`);

  // A whole decode streams too: the event loop keeps running between chunks.
  const whole = await measure(() => decodeAudio(long));
  t.equal(whole.error, undefined, 'the whole file decodes under the default limit');
  t.ok(Math.abs(whole.result!.samples.length - 600 * 8000) < 8000, `${whole.result!.samples.length} samples`);
  // Relative to the decode's own time, so that a slow machine scales both: decoded whole, the gap would be all of it.
  t.ok(whole.maxGapMs < whole.ms / 3, `the event loop never waited more than ${whole.maxGapMs.toFixed(0)} ms (the decode took ${whole.ms.toFixed(0)} ms)`);
});

/** A 4 KiB chunk of 8 kbit/s MP3 holds 4 s at 8 kHz: the most one chunk can overshoot by here. */
const MIN_CHUNK_SAMPLES = 4 * 8000 * 2;

t.test('streamed decoding gives the samples a whole-file decode gives', async (t) => {
  const dir = await tempDir(t);
  const tone = join(dir, 'tone.mp3');
  await writeTone(tone, { channels: ['0.5*sin(2*PI*440*t)', '0.25*sin(2*PI*660*t)'], sampleRate: 44_100, seconds: 2 });
  const ogg = join(dir, 'tone.ogg');
  await writeTone(ogg, { channels: ['0.5*sin(2*PI*440*t)'], sampleRate: 48_000, seconds: 2 }, ['-c:a', 'libopus']);
  const { default: whole } = (await import('audio-decode')) as unknown as { default: (b: Uint8Array) => Promise<{ channelData: Float32Array[]; sampleRate: number }> };
  for (const file of [tone, ogg]) {
    const bytes = new Uint8Array(await readFile(file));
    const reference = await whole(bytes);
    const streamed = await decodeAudio(bytes, { channels: reference.channelData.length });
    t.equal(streamed.sampleRate, reference.sampleRate, `${file}: rate`);
    const frames = reference.channelData[0]!.length;
    t.equal(streamed.samples.length, frames * reference.channelData.length, `${file}: length`);
    let same = true;
    for (let i = 0; i < frames && same; i++) {
      for (let c = 0; c < reference.channelData.length; c++) if (streamed.samples[i * reference.channelData.length + c] !== reference.channelData[c]![i]) same = false;
    }
    t.ok(same, `${file}: identical samples`);
  }
});
