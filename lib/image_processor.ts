/**
 * PerceiverImageProcessor: turns images into the `pixel_values` that Hugging Face's
 * PerceiverImageProcessor (transformers 5, whose default backend is torchvision) makes of them:
 *
 *   1. decode (encoded files only, with sharp): EXIF orientation applied, converted to 8-bit RGB
 *      with any alpha channel dropped (PIL's `convert('RGB')`), embedded ICC profiles ignored as
 *      PIL ignores them;
 *   2. Perceiver's own centre crop: a `floor(size / crop_size * min(height, width))` box, placed
 *      at `trunc((H - h) / 2)`, `trunc((W - w) / 2)` (zero padding first where the box is larger
 *      than the image: `floor(excess / 2)` before, the rest after);
 *   3. resize to `size` with antialiased bicubic (PIL's `a = -0.5` kernel), as torch's uint8 CPU
 *      kernel does it: weights in double, rounded to int16 at the largest precision at which the
 *      axis's biggest weight still fits, a width pass and then a height pass, each rounded and
 *      clamped to uint8;
 *   4. rescale by 1/255 and normalize, fused in float32 as transformers does it:
 *      `(x - float32(mean) * 255) / (float32(std) * 255)`.
 *
 * Steps 2-4 are a port of that behaviour and reproduce the reference bit for bit: on the fixture
 * (a 300x280 image to [1, 3, 224, 224]) every one of the 150528 float32 values is identical.
 * sharp's own resize was measured against the same fixture and is not used: its closest kernel,
 * 'cubic' (Catmull-Rom, PIL's kernel too), is off by up to 13 grey levels at hard edges (mean
 * absolute error 0.054 levels, relative L2 error 7.7e-3); 'lanczos2' 0.098 / 16 / 9.5e-3,
 * 'mks2021' 0.15 / 18 / 1.1e-2, 'mitchell' 0.17 / 26 / 1.7e-2, 'lanczos3' (sharp's default)
 * 0.19 / 19 / 1.4e-2. PIL's fixed-point resize (transformers' 'pil' backend; measured with a port
 * of Pillow's Resample.c, not Pillow itself) differs from torch's by one level in 25 of the 150528.
 *
 * sharp is imported lazily, only when an encoded image has to be decoded: raw pixel input never
 * loads it.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BackendUnavailableError, InvalidArgumentError, describeValue } from './errors.js';
import { MAX_CROP_ZOOM, MAX_IMAGE_SIDE, readPreprocessorConfig } from './preprocessor_config.js';
import { Tensor } from './tensor.js';
import { isMainThread } from 'node:worker_threads';
import { WorkerPool, siblingModule } from './worker_pool.js';

/** Raw 8-bit pixels, rows top to bottom, channels interleaved (HWC): grey, RGB or RGBA. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
}

/** A file path, the bytes of an encoded image file (JPEG, PNG, WebP, GIF, TIFF, AVIF, ...), or raw pixels. */
export type ImageInput = string | Buffer | Uint8Array | RawImage;

/** A square size (a number) or height and width. */
export type ImageSize = number | { height: number; width: number };

/** PIL resampling codes as `preprocessor_config.json` stores them: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC. */
export type Resample = 1 | 2 | 3;

export interface ImageProcessorOptions {
  /** Crop the centre first (default true). */
  doCenterCrop?: boolean;
  /** The crop is `size / cropSize * min(height, width)` (default 256). */
  cropSize?: ImageSize;
  /** Resize to `size` after the crop (default true). */
  doResize?: boolean;
  /** The output size (default 224). */
  size?: ImageSize;
  /** 3 (bicubic, the default) or 2 (bilinear); 1 (Lanczos) runs bicubic, as transformers' torchvision backend does. */
  resample?: Resample;
  /** Multiply by `rescaleFactor` (default true). */
  doRescale?: boolean;
  /** Default 1/255. */
  rescaleFactor?: number;
  /** Subtract `imageMean` and divide by `imageStd` (default true). */
  doNormalize?: boolean;
  /** Default ImageNet [0.485, 0.456, 0.406]. */
  imageMean?: [number, number, number] | number;
  /** Default ImageNet [0.229, 0.224, 0.225]. */
  imageStd?: [number, number, number] | number;
}

interface Size2 {
  height: number;
  width: number;
}

/** 8-bit RGB pixels, HWC. */
interface Rgb {
  data: Uint8Array;
  width: number;
  height: number;
}

const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];

const EXPECTED_INPUT = 'a file path, the bytes of an encoded image (Buffer or Uint8Array), or raw pixels {data, width, height, channels}';
const EXPECTED_DECODABLE = 'a decodable image file (JPEG, PNG, WebP, ...)';

// ---------------------------------------------------------------------------------------------
// sharp, loaded on first use

type SharpFactory = typeof import('sharp').default;
let sharpPromise: Promise<SharpFactory> | undefined;

async function loadSharp(): Promise<SharpFactory> {
  sharpPromise ??= (async () => {
    let mod: { default?: unknown };
    try {
      mod = (await import('sharp')) as { default?: unknown };
    } catch (error) {
      sharpPromise = undefined; // let a later call retry, e.g. after the package was installed
      throw new BackendUnavailableError(
        `Decoding image files needs the "sharp" package, which could not be loaded (${(error as Error).message}). ` +
          'Run `npm install sharp`, or pass raw pixels {data, width, height, channels} instead.',
      );
    }
    if (typeof mod.default !== 'function') {
      sharpPromise = undefined;
      throw new BackendUnavailableError(
        'Decoding image files needs the "sharp" package, but the module that loaded under that name is not sharp. ' +
          'Run `npm install sharp`, or pass raw pixels {data, width, height, channels} instead.',
      );
    }
    return mod.default as SharpFactory;
  })();
  return sharpPromise;
}

// ---------------------------------------------------------------------------------------------
// Option checking

// Sides are bounded as preprocessor_config.json's are: an unbounded size or crop would let one
// image allocate gigabytes (a size of 30000 is 10.8 GB of float32 per image).
function checkSize(value: unknown, argument: string): Size2 {
  const ok = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) > 0 && (n as number) <= MAX_IMAGE_SIDE;
  if (ok(value)) return { height: value, width: value };
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { height, width } = value as Record<string, unknown>;
    if (ok(height) && ok(width)) return { height, width };
  }
  throw new InvalidArgumentError(argument, `a positive integer up to ${MAX_IMAGE_SIDE} or {height, width} of such integers`, value);
}

function checkTriple(value: unknown, argument: string, nonZero: boolean): [number, number, number] {
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && (!nonZero || n !== 0);
  const what = nonZero ? 'non-zero finite numbers' : 'finite numbers';
  if (ok(value)) return [value, value, value];
  if (Array.isArray(value) && value.length === 3 && value.every(ok)) return [value[0], value[1], value[2]];
  throw new InvalidArgumentError(argument, `a number or an array of 3 ${what}`, value);
}

function checkBool(value: unknown, argument: string): boolean {
  if (typeof value !== 'boolean') throw new InvalidArgumentError(argument, 'a boolean', value);
  return value;
}

function checkResample(value: unknown, argument: string): Resample {
  if (value === 1 || value === 2 || value === 3) return value;
  throw new InvalidArgumentError(argument, '3 (bicubic), 2 (bilinear) or 1 (Lanczos, run as bicubic)', value);
}

// ---------------------------------------------------------------------------------------------
// Input to 8-bit RGB

function isRawImage(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && 'data' in value;
}

function rawToRgb(raw: Record<string, unknown>, name: string): Rgb {
  const { data, width, height, channels } = raw;
  if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(`${name}.data`, 'a Uint8Array of 8-bit pixels', data);
  if (!Number.isSafeInteger(width) || (width as number) < 1) throw new InvalidArgumentError(`${name}.width`, 'a positive integer', width);
  if (!Number.isSafeInteger(height) || (height as number) < 1) throw new InvalidArgumentError(`${name}.height`, 'a positive integer', height);
  if (channels !== 1 && channels !== 3 && channels !== 4) throw new InvalidArgumentError(`${name}.channels`, '1 (grey), 3 (RGB) or 4 (RGBA)', channels);
  const w = width as number;
  const h = height as number;
  const n = w * h;
  if (data.length !== n * channels) {
    throw new InvalidArgumentError(`${name}.data`, `${n * channels} bytes (${h} x ${w} x ${channels})`, `${data.length} bytes`);
  }
  if (channels === 3) return { data, width: w, height: h };
  const out = new Uint8Array(n * 3);
  if (channels === 1) {
    for (let i = 0, o = 0; i < n; i++, o += 3) out[o] = out[o + 1] = out[o + 2] = data[i]!;
  } else {
    // PIL's convert('RGB') of RGBA drops alpha (no compositing), as transformers' convert_to_rgb does.
    for (let i = 0, s = 0, o = 0; i < n; i++, s += 4, o += 3) {
      out[o] = data[s]!;
      out[o + 1] = data[s + 1]!;
      out[o + 2] = data[s + 2]!;
    }
  }
  return { data: out, width: w, height: h };
}

/** Where the centre crop of an `n`-pixel axis to `c` pixels reads the image, and the zeros it adds around. */
interface AxisCrop {
  /** First image pixel read and how many (the part of the box inside the image). */
  offset: number;
  length: number;
  /** Zero pixels before and after, where the box is larger than the image. */
  before: number;
  after: number;
}

function axisCrop(n: number, c: number): AxisCrop {
  // Centred with trunc((n - c) / 2) when the box fits; otherwise the image is padded by
  // floor((c - n) / 2) before and the rest after (transformers pads before cropping).
  if (c <= n) return { offset: Math.trunc((n - c) / 2), length: c, before: 0, after: 0 };
  const before = Math.floor((c - n) / 2);
  return { offset: 0, length: n, before, after: c - n - before };
}

/** Orientations 5 to 8 of EXIF swap width and height when applied. */
function orientedSize(meta: { width: number; height: number; orientation?: number }): Size2 {
  const swap = meta.orientation !== undefined && meta.orientation >= 5 && meta.orientation <= 8;
  return swap ? { height: meta.width, width: meta.height } : { height: meta.height, width: meta.width };
}

function undecodable(name: string, source: string, error: unknown): InvalidArgumentError {
  return new InvalidArgumentError(name, EXPECTED_DECODABLE, source, `Expected ${EXPECTED_DECODABLE} for ${name} but ${source} could not be decoded: ${(error as Error).message}`);
}

/**
 * The displayed size of an encoded image (EXIF orientation applied), from its header alone:
 * nothing is decoded. An image declaring more than `maxPixels` pixels is refused here.
 */
async function readHeader(bytes: Uint8Array, name: string, source: string, maxPixels: number): Promise<Size2> {
  if (bytes.byteLength === 0) throw new InvalidArgumentError(name, EXPECTED_DECODABLE, `${source}: 0 bytes`);
  const sharp = await loadSharp();
  let meta: { width?: number; height?: number; orientation?: number };
  try {
    meta = await sharp(bytes, { pages: 1, limitInputPixels: false }).metadata();
  } catch (error) {
    throw undecodable(name, source, error);
  }
  const { width, height } = meta;
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width! < 1 || height! < 1) {
    throw undecodable(name, source, new Error(`its header gives no size (${width}x${height})`));
  }
  if (width! * height! > maxPixels) throw new ImageTooLargeError(name, `${source}: ${width}x${height}`, width! * height!, maxPixels);
  return orientedSize(meta as { width: number; height: number; orientation?: number });
}

/**
 * Decodes an encoded image of displayed size `size` (readHeader) to 8-bit RGB, cropped to `box`
 * when given. Decoding and cropping run in sharp (libvips, off the JavaScript thread), so only the
 * crop is ever held in JavaScript memory. Runs on the main thread and in the image worker.
 */
export async function decodeCrop(bytes: Uint8Array, name: string, source: string, maxPixels: number, size: Size2, box: Size2 | undefined): Promise<Rgb> {
  const sharp = await loadSharp();
  // sharp's own limit too: it reads the same header.
  let pipeline = sharp(bytes, { autoOrient: true, ignoreIcc: true, failOn: 'truncated', pages: 1, limitInputPixels: maxPixels }).removeAlpha().toColourspace('srgb');
  let expected = size;
  if (box) {
    const y = axisCrop(size.height, box.height);
    const x = axisCrop(size.width, box.width);
    // One extract (before any resize, so sharp applies it after the EXIF rotation), then zeros around.
    pipeline = pipeline.extract({ left: x.offset, top: y.offset, width: x.length, height: y.length });
    if (x.before + x.after + y.before + y.after > 0) {
      pipeline = pipeline.extend({ top: y.before, bottom: y.after, left: x.before, right: x.after, background: { r: 0, g: 0, b: 0, alpha: 1 } });
    }
    expected = box;
  }
  let result: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    result = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw undecodable(name, source, error);
  }
  const { data, info } = result;
  if (info.channels !== 3 || info.width !== expected.width || info.height !== expected.height || data.length !== info.width * info.height * 3) {
    throw new InvalidArgumentError(name, `an image that decodes to 8-bit RGB, ${expected.width}x${expected.height}`, `${source}: ${info.width}x${info.height}, ${info.channels} channels, ${data.length} bytes`);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}

/** A file's bytes, the bytes given, or undefined for raw pixels; `source` names it in errors. */
async function encodedBytes(image: unknown, name: string): Promise<{ bytes: Uint8Array; source: string } | undefined> {
  if (typeof image === 'string') {
    if (image.length === 0) throw new InvalidArgumentError(name, 'a non-empty file path', image);
    try {
      return { bytes: await readFile(image), source: `file ${JSON.stringify(image)}` };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new InvalidArgumentError(name, 'a readable image file', image, `Expected a readable image file for ${name} but cannot read ${JSON.stringify(image)}${code ? ` (${code})` : ''}: ${(error as Error).message}`);
    }
  }
  if (image instanceof Uint8Array) return { bytes: image, source: describeValue(image) };
  if (isRawImage(image)) return undefined;
  throw new InvalidArgumentError(name, EXPECTED_INPUT, image);
}

/**
 * Any ImageInput as 8-bit RGB (HWC), decoded as preprocess() decodes it (EXIF orientation, alpha
 * dropped), with no crop or resize. An encoded image declaring more than `maxPixels` pixels is
 * refused from its header, before anything is decoded.
 */
export async function readRgbImage(image: ImageInput, name = 'image', maxPixels = DEFAULT_MAX_INPUT_PIXELS): Promise<Rgb> {
  const encoded = await encodedBytes(image, name);
  if (!encoded) return rawToRgb(image as unknown as Record<string, unknown>, name);
  const size = await readHeader(encoded.bytes, name, encoded.source, maxPixels);
  return decodeCrop(encoded.bytes, name, encoded.source, maxPixels, size, undefined);
}

// ---------------------------------------------------------------------------------------------
// Centre crop

/** The output box, a copy; pixels outside the image are zero (transformers pads before cropping). */
function centerCrop(img: Rgb, crop: Size2): Rgb {
  // Offset of the box in image coordinates (negative where zeros come before the image).
  const offset = (n: number, c: number): number => {
    const axis = axisCrop(n, c);
    return axis.offset - axis.before;
  };
  const top = offset(img.height, crop.height);
  const left = offset(img.width, crop.width);
  const out = new Uint8Array(crop.height * crop.width * 3);
  const x0 = Math.max(0, -left);
  const x1 = Math.min(crop.width, img.width - left);
  for (let y = 0; y < crop.height; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height || x1 <= x0) continue;
    const src = (sy * img.width + left + x0) * 3;
    out.set(img.data.subarray(src, src + (x1 - x0) * 3), (y * crop.width + x0) * 3);
  }
  return { data: out, width: crop.width, height: crop.height };
}

// ---------------------------------------------------------------------------------------------
// Resize: torch's uint8 antialiased separable kernels (aten/src/ATen/native/cpu/UpSampleKernel.cpp)

/** Keys cubic convolution with a = -0.5 (PIL's bicubic), in torch's order of operations. */
function bicubicFilter(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

function bilinearFilter(x: number): number {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

interface AxisWeights {
  /** First source index of each output index. */
  start: Int32Array;
  /** Number of taps of each output index. */
  count: Int32Array;
  /** `taps` integer weights per output index. */
  weights: Int32Array;
  taps: number;
  /** The weights are fixed point with this many fraction bits. */
  precision: number;
}

function axisWeights(inSize: number, outSize: number, filter: (x: number) => number, interpSize: number): AxisWeights {
  const scale = inSize / outSize;
  const support = scale >= 1 ? interpSize * 0.5 * scale : interpSize * 0.5;
  const taps = Math.ceil(support) * 2 + 1;
  const invScale = scale >= 1 ? 1 / scale : 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const real = new Float64Array(outSize * taps);
  let wtMax = 0;
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - xmin, 0), taps);
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      const w = filter((j + xmin - center + 0.5) * invScale);
      real[i * taps + j] = w;
      total += w;
    }
    if (total !== 0) {
      for (let j = 0; j < xsize; j++) {
        const w = real[i * taps + j]! / total;
        real[i * taps + j] = w;
        wtMax = Math.max(wtMax, w);
      }
    }
    start[i] = xmin;
    count[i] = xsize;
  }
  // The largest precision (at most 22 bits) at which the largest weight still fits int16.
  let precision = 0;
  for (; precision < 22; precision++) {
    if (Math.trunc(0.5 + wtMax * 2 ** (precision + 1)) >= 1 << 15) break;
  }
  const weights = new Int32Array(outSize * taps);
  const one = 2 ** precision;
  for (let k = 0; k < real.length; k++) {
    const v = real[k]! * one;
    weights[k] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { start, count, weights, taps, precision };
}

/**
 * Resizes 8-bit RGB (exported for the worker thread; not part of the package's API). Sums stay within int32 (at most 255 times the absolute weight sum, under 2^31
 * at every precision), so `>>` rounds them down exactly as the C++ does.
 */
export function resizeRgb(img: Rgb, out: Size2, resample: Resample): Rgb {
  const [filter, interp] = resample === 2 ? [bilinearFilter, 2] : [bicubicFilter, 4];
  let { data, width, height } = img;
  if (out.width !== width) {
    const ax = axisWeights(width, out.width, filter, interp);
    const next = new Uint8Array(height * out.width * 3);
    const half = ax.precision > 0 ? 1 << (ax.precision - 1) : 0;
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let x = 0; x < out.width; x++) {
        let r = half;
        let g = half;
        let b = half;
        const n = ax.count[x]!;
        const wBase = x * ax.taps;
        let s = row + ax.start[x]! * 3;
        for (let j = 0; j < n; j++, s += 3) {
          const w = ax.weights[wBase + j]!;
          r += w * data[s]!;
          g += w * data[s + 1]!;
          b += w * data[s + 2]!;
        }
        const o = (y * out.width + x) * 3;
        next[o] = clampByte(r >> ax.precision);
        next[o + 1] = clampByte(g >> ax.precision);
        next[o + 2] = clampByte(b >> ax.precision);
      }
    }
    data = next;
    width = out.width;
  }
  if (out.height !== height) {
    const ay = axisWeights(height, out.height, filter, interp);
    const rowLen = width * 3;
    const next = new Uint8Array(out.height * rowLen);
    const acc = new Int32Array(rowLen);
    const half = ay.precision > 0 ? 1 << (ay.precision - 1) : 0;
    for (let y = 0; y < out.height; y++) {
      acc.fill(half);
      const n = ay.count[y]!;
      for (let j = 0; j < n; j++) {
        const w = ay.weights[y * ay.taps + j]!;
        if (w === 0) continue;
        const src = (ay.start[y]! + j) * rowLen;
        for (let k = 0; k < rowLen; k++) acc[k]! += w * data[src + k]!;
      }
      const o = y * rowLen;
      for (let k = 0; k < rowLen; k++) next[o + k] = clampByte(acc[k]! >> ay.precision);
    }
    data = next;
    height = out.height;
  }
  return { data, width, height };
}

function clampByte(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Work on up to this many pixels runs on the calling thread (the resize of a 256x256 crop takes
 * about 2 ms); larger images are decoded, cropped and resized in a worker thread, so that no large
 * pixel buffer ever crosses to the main thread (posting one costs about 1.5 ms per MB there).
 * Called from a worker thread already (the batch job's decoders, lib/media/decode_pool.ts), all
 * work runs there: the pool exists to keep the main thread's event loop free.
 */
const INLINE_PIXELS = isMainThread ? 256 * 256 : Infinity;

/** What the image worker does: decode and crop encoded bytes (`bytes`), or take raw RGB (`rgb`), then resize. @internal */
export type ImageTask = {
  size: Size2;
  resample: Resample;
} & (
  | { bytes: Uint8Array; name: string; source: string; maxPixels: number; displayed: Size2; box: Size2 | undefined }
  | { rgb: Rgb }
);

/** The worker's answer: pixels, or the InvalidArgumentError to rethrow here. @internal */
export type ImageTaskResult = { rgb: Rgb } | { invalid: { argument: string; expected: string; actual: string; message: string } };

let imagePool: WorkerPool<ImageTask, ImageTaskResult> | undefined;

function pool(): WorkerPool<ImageTask, ImageTaskResult> {
  imagePool ??= new WorkerPool<ImageTask, ImageTaskResult>(siblingModule(import.meta.url, 'image_resize_worker'));
  return imagePool;
}

/**
 * Loads sharp and starts the image worker threads now rather than on the first large image (a
 * server calls this before listening: loading sharp's native library takes tens of milliseconds
 * of the calling thread).
 */
export async function prepareImageDecoding(): Promise<void> {
  await loadSharp();
  pool().start();
}

async function inWorker(task: ImageTask, transfer: ArrayBuffer[]): Promise<Rgb> {
  const answer = await pool().run(task, transfer);
  if ('invalid' in answer) {
    const e = answer.invalid;
    throw new InvalidArgumentError(e.argument, e.expected, e.actual, e.message);
  }
  return answer.rgb;
}

/** A copy of `bytes` in an ArrayBuffer of its own, to move to a worker (the caller's memory is never detached). */
function ownCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------------------------
// The processor

/** Default `maxInputPixels`: 50 megapixels (a 48 MP phone photo fits; decoded, 150 MB of RGB). */
export const DEFAULT_MAX_INPUT_PIXELS = 50_000_000;

export interface PreprocessOptions {
  /** Refuse encoded images whose header declares more pixels than this (default 50 000 000). */
  maxInputPixels?: number;
}

/** An encoded image declares more pixels than the limit; refused before decoding. */
export class ImageTooLargeError extends InvalidArgumentError {
  /** Width x height from the file's header, and the limit. */
  readonly pixels: number;
  readonly maxPixels: number;
  constructor(argument: string, actual: string, pixels: number, maxPixels: number) {
    super(argument, `an image of at most ${maxPixels} pixels`, actual, `Expected an image of at most ${maxPixels} pixels for ${argument} but ${actual} declares ${pixels} (not decoded)`);
    (this as { code: string }).code = 'ERR_PERCEIVER_IMAGE_TOO_LARGE';
    this.pixels = pixels;
    this.maxPixels = maxPixels;
  }
}

export class PerceiverImageProcessor {
  readonly doCenterCrop: boolean;
  readonly cropSize: Readonly<Size2>;
  readonly doResize: boolean;
  readonly size: Readonly<Size2>;
  readonly resample: Resample;
  readonly doRescale: boolean;
  readonly rescaleFactor: number;
  readonly doNormalize: boolean;
  readonly imageMean: readonly [number, number, number];
  readonly imageStd: readonly [number, number, number];

  /** Defaults are transformers' PerceiverImageProcessor defaults (crop 256, size 224, bicubic, 1/255, ImageNet mean and std). */
  constructor(options: ImageProcessorOptions = {}) {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new InvalidArgumentError('options', 'an object of image processor options', options);
    }
    const o = options;
    this.doCenterCrop = o.doCenterCrop === undefined ? true : checkBool(o.doCenterCrop, 'options.doCenterCrop');
    this.cropSize = Object.freeze(checkSize(o.cropSize ?? 256, 'options.cropSize'));
    this.doResize = o.doResize === undefined ? true : checkBool(o.doResize, 'options.doResize');
    this.size = Object.freeze(checkSize(o.size ?? 224, 'options.size'));
    if (this.doCenterCrop && this.doResize) {
      for (const axis of ['height', 'width'] as const) {
        if (this.size[axis] > this.cropSize[axis] * MAX_CROP_ZOOM) {
          throw new InvalidArgumentError(`options.size.${axis}`, `at most options.cropSize.${axis} x ${MAX_CROP_ZOOM} (${this.cropSize[axis] * MAX_CROP_ZOOM})`, this.size[axis]);
        }
      }
    }
    this.resample = o.resample === undefined ? 3 : checkResample(o.resample, 'options.resample');
    this.doRescale = o.doRescale === undefined ? true : checkBool(o.doRescale, 'options.doRescale');
    const factor = o.rescaleFactor ?? 1 / 255;
    if (typeof factor !== 'number' || !Number.isFinite(factor) || factor === 0) {
      throw new InvalidArgumentError('options.rescaleFactor', 'a non-zero finite number', factor);
    }
    this.rescaleFactor = factor;
    this.doNormalize = o.doNormalize === undefined ? true : checkBool(o.doNormalize, 'options.doNormalize');
    this.imageMean = Object.freeze(checkTriple(o.imageMean ?? IMAGENET_MEAN, 'options.imageMean', false));
    this.imageStd = Object.freeze(checkTriple(o.imageStd ?? IMAGENET_STD, 'options.imageStd', true));
  }

  /**
   * Reads `dir/preprocessor_config.json` as transformers writes it (`do_center_crop`, `crop_size`,
   * `do_resize`, `size`, `resample`, `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`,
   * `image_std`; sizes as a number or {height, width}); defaults when the folder has no such file.
   * Every field is validated and bounded first (lib/preprocessor_config.ts): a bad one is a
   * ConfigError naming the file and the field.
   */
  static async fromPretrained(dir: string): Promise<PerceiverImageProcessor> {
    if (typeof dir !== 'string' || dir.length === 0) throw new InvalidArgumentError('dir', 'a directory path', dir);
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory()) throw new InvalidArgumentError('dir', 'an existing directory', dir);
    const options = await readPreprocessorConfig(join(dir, 'preprocessor_config.json'));
    return new PerceiverImageProcessor(options);
  }

  /** The options that make an equal processor (`new PerceiverImageProcessor(p.options())`), as plain data a worker thread can take. */
  options(): ImageProcessorOptions {
    return {
      doCenterCrop: this.doCenterCrop,
      cropSize: { ...this.cropSize },
      doResize: this.doResize,
      size: { ...this.size },
      resample: this.resample,
      doRescale: this.doRescale,
      rescaleFactor: this.rescaleFactor,
      doNormalize: this.doNormalize,
      imageMean: [...this.imageMean],
      imageStd: [...this.imageStd],
    };
  }

  /** The size of the centre crop of an image of this size. */
  cropBox(height: number, width: number): Size2 {
    for (const [name, v] of [['height', height], ['width', width]] as const) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(name, 'a positive integer', v);
    }
    const minDim = Math.min(height, width);
    return {
      height: Math.trunc((this.size.height / this.cropSize.height) * minDim),
      width: Math.trunc((this.size.width / this.cropSize.width) * minDim),
    };
  }

  /**
   * Images to float32 `pixel_values` of shape [N, 3, height, width] (channels first).
   *
   * Encoded images larger than `options.maxInputPixels` (width x height from the file's header,
   * read before anything is decoded) are refused with ImageTooLargeError. Decoding and the centre
   * crop run in sharp; images whose crop is larger than 256x256 pixels are decoded, cropped and
   * resized in a worker thread.
   */
  async preprocess(images: ImageInput | ImageInput[], options: PreprocessOptions = {}): Promise<Tensor<'float32'>> {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new InvalidArgumentError('options', 'an object such as { maxInputPixels }', options);
    const maxPixels = options.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
    if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) throw new InvalidArgumentError('options.maxInputPixels', 'a positive integer', maxPixels);
    const list: unknown[] = Array.isArray(images) ? images : [images];
    if (list.length === 0) throw new InvalidArgumentError('images', 'at least one image', 'an empty array');
    const names = list.map((_, i) => (Array.isArray(images) ? `images[${i}]` : 'images'));

    const planes: Rgb[] = [];
    for (let i = 0; i < list.length; i++) {
      const name = names[i]!;
      const cropOf = (size: Size2): Size2 => {
        const box = this.cropBox(size.height, size.width);
        if (box.height < 1 || box.width < 1) {
          throw new InvalidArgumentError(name, 'an image large enough for a non-empty centre crop', `a ${size.width}x${size.height} image (crop ${box.width}x${box.height})`);
        }
        return box;
      };
      const encoded = await encodedBytes(list[i], name);
      let img: Rgb;
      if (encoded) {
        const displayed = await readHeader(encoded.bytes, name, encoded.source, maxPixels);
        const box = this.doCenterCrop ? cropOf(displayed) : undefined;
        const region = box ?? displayed;
        if (this.doResize && region.width * region.height > INLINE_PIXELS) {
          const bytes = ownCopy(encoded.bytes);
          const task: ImageTask = { bytes, name, source: encoded.source, maxPixels, displayed, box, size: this.size, resample: this.resample };
          img = await inWorker(task, [bytes.buffer as ArrayBuffer]);
        } else {
          img = await decodeCrop(encoded.bytes, name, encoded.source, maxPixels, displayed, box);
          if (this.doResize) img = resizeRgb(img, this.size, this.resample);
        }
      } else {
        const raw = list[i] as Record<string, unknown>;
        img = rawToRgb(raw, name);
        if (this.doCenterCrop) img = centerCrop(img, cropOf(img));
        if (this.doResize && img.width * img.height > INLINE_PIXELS) {
          const rgb = { ...img, data: img.data === raw.data ? ownCopy(img.data) : img.data };
          img = await inWorker({ rgb, size: this.size, resample: this.resample }, [rgb.data.buffer as ArrayBuffer]);
        } else if (this.doResize) {
          img = resizeRgb(img, this.size, this.resample);
        }
      }
      planes.push(img);
    }

    const { height, width } = planes[0]!;
    for (let i = 1; i < planes.length; i++) {
      if (planes[i]!.height !== height || planes[i]!.width !== width) {
        throw new InvalidArgumentError(names[i]!, `an image that processes to ${width}x${height} like ${names[0]} (set doResize to stack images of different sizes)`, `${planes[i]!.width}x${planes[i]!.height}`);
      }
    }

    const plane = height * width;
    const out = new Float32Array(planes.length * 3 * plane);
    for (let c = 0; c < 3; c++) {
      const lut = this.channelTable(c);
      for (let n = 0; n < planes.length; n++) {
        const src = planes[n]!.data;
        const base = (n * 3 + c) * plane;
        for (let p = 0, s = c; p < plane; p++, s += 3) out[base + p] = lut[src[s]!]!;
      }
    }
    return new Tensor('float32', [planes.length, 3, height, width], out);
  }

  /**
   * The float32 value of each grey level 0..255 in channel c, computed as transformers' torchvision
   * backend does: rescale and normalize fused into `(x - mean / f) / (std / f)`, every step in float32.
   */
  private channelTable(c: number): Float32Array {
    const f = Math.fround;
    const table = new Float32Array(256);
    for (let x = 0; x < 256; x++) {
      if (this.doNormalize) {
        let mean = f(this.imageMean[c]!);
        let std = f(this.imageStd[c]!);
        if (this.doRescale) {
          const inv = f(1 / this.rescaleFactor);
          mean = f(mean * inv);
          std = f(std * inv);
        }
        table[x] = f(f(x - mean) / std);
      } else if (this.doRescale) {
        table[x] = f(x * f(this.rescaleFactor));
      } else {
        table[x] = x;
      }
    }
    return table;
  }
}
