/**
 * How long an audio file says it is, read from its container before anything is decoded, so that
 * a small file that would decode to hours of samples (FLAC of silence compresses 4000:1, an IMA
 * ADPCM WAV may declare 65535 samples per 36-byte block) is refused in microseconds instead of
 * after seconds of decoding and gigabytes of samples.
 *
 * - WAV: the fmt and data chunks, exactly as @audio/decode-wav reads them (PCM: data bytes / block
 *   align; ADPCM: blocks x samples per block), over the data bytes the file really holds.
 * - FLAC: STREAMINFO's total sample count, and an upper bound that does not trust it: the sum of
 *   the block sizes of every position that holds a valid frame header (sync code and CRC-8), since
 *   the decoder decodes exactly a header's block size at each frame it finds.
 * - MP3: the Xing/Info or VBRI header of the first frame, when there is one (frame count x samples
 *   per frame). It is what the file declares, not a bound: decoding is bounded as it runs.
 *
 * Written here rather than taken from a package: audio-decode's metadata parsers return tags and
 * the sample rate but not the length, and the packages that do read lengths (music-metadata) parse
 * far more than this needs, as another dependency. Every read is bounds-checked; a header too
 * short or inconsistent to read is left to the decoder (undefined) unless it would make the
 * decoder misbehave (a zero block align), which is reported as corrupt.
 */

export interface DeclaredLength {
  format: 'WAV' | 'FLAC' | 'MP3';
  /** Samples per channel. */
  frames: number;
  channels: number;
  sampleRate: number;
  /**
   * Samples over all channels that decoding can produce at most, when the header bounds it (WAV,
   * FLAC); undefined when it is only what the file declares (MP3).
   */
  bound?: number;
}

/** A header the decoder would choke on; the message says why. */
export class CorruptAudioHeader extends Error {}

function ascii(b: Uint8Array, at: number, n: number): string {
  return at + n <= b.length ? String.fromCharCode(...b.subarray(at, at + n)) : '';
}

function u16le(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

function u32le(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
}

function u32be(b: Uint8Array, at: number): number {
  return b[at]! * 0x1000000 + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!);
}

// ---------------------------------------------------------------------------------------------
// WAV

const WAV_PCM = new Set([0x0001, 0x0003, 0x0006, 0x0007]); // integer PCM, float, A-law, mu-law
const WAV_IMA_ADPCM = 0x0011;
const WAV_MS_ADPCM = 0x0002;
const WAV_EXTENSIBLE = 0xfffe;

function wavLength(b: Uint8Array): DeclaredLength | undefined {
  if (ascii(b, 0, 4) !== 'RIFF' || ascii(b, 8, 4) !== 'WAVE') return undefined;
  let fmt: { tag: number; channels: number; sampleRate: number; blockAlign: number; samplesPerBlock: number } | undefined;
  // Each chunk is at least 8 bytes, so this walk is linear in the file.
  for (let pos = 12; pos + 8 <= b.length; ) {
    const id = ascii(b, pos, 4);
    const size = u32le(b, pos + 4);
    if (id === 'fmt ') {
      if (pos + 24 > b.length) return undefined;
      let tag = u16le(b, pos + 8);
      if (tag === WAV_EXTENSIBLE) {
        if (pos + 34 > b.length) return undefined;
        tag = u16le(b, pos + 32);
      }
      const channels = u16le(b, pos + 10);
      const blockAlign = u16le(b, pos + 20);
      if (channels === 0) throw new CorruptAudioHeader('its WAV header declares 0 channels');
      if (blockAlign === 0) throw new CorruptAudioHeader('its WAV header declares a block align of 0 bytes');
      let samplesPerBlock = 1;
      if (tag === WAV_IMA_ADPCM || tag === WAV_MS_ADPCM) {
        // As @audio/decode-wav computes it: the fmt extension's value when present, else from the block size.
        const cbSize = pos + 26 <= b.length ? u16le(b, pos + 24) : 0;
        samplesPerBlock = cbSize >= 2 && pos + 28 <= b.length ? u16le(b, pos + 26) : 0;
        if (!samplesPerBlock) samplesPerBlock = tag === WAV_IMA_ADPCM ? 1 + (blockAlign / channels - 4) * 2 : 2 + ((blockAlign - 7 * channels) * 2) / channels;
        samplesPerBlock = Math.max(0, Math.ceil(samplesPerBlock));
      } else if (!WAV_PCM.has(tag)) {
        return undefined; // a codec the decoder refuses anyway
      }
      fmt = { tag, channels, sampleRate: u32le(b, pos + 12), blockAlign, samplesPerBlock };
    } else if (id === 'data') {
      if (!fmt) return undefined;
      const start = pos + 8;
      // 0 and 0xFFFFFFFF mean "to the end" (a stream); the decoder never reads past what the file holds.
      const declared = size === 0 || size === 0xffffffff ? Infinity : size;
      const bytes = Math.min(declared, Math.max(0, b.length - start));
      const blocks = fmt.samplesPerBlock === 1 ? Math.floor(bytes / fmt.blockAlign) : Math.ceil(bytes / fmt.blockAlign);
      const frames = blocks * fmt.samplesPerBlock;
      return { format: 'WAV', frames, channels: fmt.channels, sampleRate: fmt.sampleRate, bound: frames * fmt.channels };
    }
    pos += 8 + size + (size & 1);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// FLAC

const CRC8 = (() => {
  const table = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
    table[i] = c;
  }
  return table;
})();

/** Block size x channels of a valid frame header at `p`, or 0 when there is none (RFC 9639, section 9.1). */
function flacFrameSamples(b: Uint8Array, p: number): number {
  if (b[p] !== 0xff || (b[p + 1]! & 0xfe) !== 0xf8 || p + 6 > b.length) return 0;
  const blockCode = b[p + 2]! >> 4;
  const rateCode = b[p + 2]! & 0x0f;
  const channelCode = b[p + 3]! >> 4;
  if (blockCode === 0 || rateCode === 0x0f || channelCode > 10 || b[p + 3]! & 1 || ((b[p + 3]! >> 1) & 7) === 3) return 0;
  // The coded frame or sample number: UTF-8-like, 1 to 7 bytes.
  const lead = b[p + 4]!;
  if ((lead >= 0x80 && lead < 0xc0) || lead === 0xff) return 0;
  const extra = lead < 0x80 ? 0 : lead < 0xe0 ? 1 : lead < 0xf0 ? 2 : lead < 0xf8 ? 3 : lead < 0xfc ? 4 : lead < 0xfe ? 5 : 6;
  let q = p + 5 + extra;
  let blockSize: number;
  if (blockCode === 1) blockSize = 192;
  else if (blockCode <= 5) blockSize = 576 << (blockCode - 2);
  else if (blockCode === 6) blockSize = (q < b.length ? b[q]! : 0) + 1;
  else if (blockCode === 7) blockSize = (q + 1 < b.length ? (b[q]! << 8) | b[q + 1]! : 0) + 1;
  else blockSize = 256 << (blockCode - 8);
  q += blockCode === 6 ? 1 : blockCode === 7 ? 2 : 0;
  q += rateCode === 12 ? 1 : rateCode === 13 || rateCode === 14 ? 2 : 0;
  if (q >= b.length) return 0;
  let crc = 0;
  for (let i = p; i < q; i++) crc = CRC8[crc ^ b[i]!]!;
  if (crc !== b[q]) return 0;
  return blockSize * (channelCode < 8 ? channelCode + 1 : 2);
}

function flacLength(b: Uint8Array): DeclaredLength | undefined {
  if (ascii(b, 0, 4) !== 'fLaC' || b.length < 42 || (b[4]! & 0x7f) !== 0) return undefined;
  const info = 8; // STREAMINFO's body
  const sampleRate = (b[info + 10]! << 12) | (b[info + 11]! << 4) | (b[info + 12]! >> 4);
  const channels = ((b[info + 12]! >> 1) & 7) + 1;
  const frames = (b[info + 13]! & 0x0f) * 2 ** 32 + u32be(b, info + 14);
  let pos = 4;
  for (;;) {
    if (pos + 4 > b.length) return { format: 'FLAC', frames, channels, sampleRate, bound: 0 };
    const last = b[pos]! & 0x80;
    pos += 4 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
    if (last) break;
  }
  let bound = 0;
  for (let p = pos; p + 1 < b.length; p++) if (b[p] === 0xff) bound += flacFrameSamples(b, p);
  return { format: 'FLAC', frames, channels, sampleRate, bound };
}

// ---------------------------------------------------------------------------------------------
// MP3

const MP3_RATES = [44100, 48000, 32000];

function mp3Length(b: Uint8Array): DeclaredLength | undefined {
  let p = 0;
  if (ascii(b, 0, 3) === 'ID3' && b.length >= 10) {
    // A synchsafe size (7 bits a byte) after the 10-byte header, plus a 10-byte footer when flagged.
    p = 10 + ((b[6]! & 0x7f) << 21) + ((b[7]! & 0x7f) << 14) + ((b[8]! & 0x7f) << 7) + (b[9]! & 0x7f) + (b[5]! & 0x10 ? 10 : 0);
  }
  if (p + 4 > b.length || b[p] !== 0xff || (b[p + 1]! & 0xe0) !== 0xe0) return undefined;
  const versionBits = (b[p + 1]! >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
  const layerBits = (b[p + 1]! >> 1) & 3; // 1: III, 2: II, 3: I
  const rateIndex = (b[p + 2]! >> 2) & 3;
  if (versionBits === 1 || layerBits === 0 || rateIndex === 3) return undefined;
  const mpeg1 = versionBits === 3;
  const layer = 4 - layerBits;
  const sampleRate = MP3_RATES[rateIndex]! / (mpeg1 ? 1 : versionBits === 2 ? 2 : 4);
  const channels = b[p + 3]! >> 6 === 3 ? 1 : 2;
  const samplesPerFrame = layer === 1 ? 384 : layer === 2 || mpeg1 ? 1152 : 576;
  if (b[p + 2]! >> 4 === 0x0f) return undefined; // a bad bitrate index
  // Xing/Info sits after the side information of the first (layer III) frame; VBRI 32 bytes in.
  const side = mpeg1 ? (channels === 1 ? 17 : 32) : channels === 1 ? 9 : 17;
  const xing = p + 4 + side;
  let count: number | undefined;
  if ((ascii(b, xing, 4) === 'Xing' || ascii(b, xing, 4) === 'Info') && xing + 12 <= b.length && b[xing + 7]! & 1) count = u32be(b, xing + 8);
  else if (ascii(b, p + 36, 4) === 'VBRI' && p + 54 <= b.length) count = u32be(b, p + 50);
  if (count === undefined) return undefined;
  return { format: 'MP3', frames: count * samplesPerFrame, channels, sampleRate };
}

/**
 * The length the file's header declares (and, for WAV and FLAC, bounds), or undefined when it is
 * none of these formats or its header does not say. Throws CorruptAudioHeader for a header the
 * decoder would misbehave on.
 */
export function declaredAudioLength(bytes: Uint8Array): DeclaredLength | undefined {
  return wavLength(bytes) ?? flacLength(bytes) ?? mp3Length(bytes);
}
