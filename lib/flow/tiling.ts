/**
 * Optical flow at any image size with a model trained at one size (config.train_size: 368x496 for
 * the published checkpoint): the image is cut into tiles of the training size that overlap by at
 * least `minOverlap` pixels, each tile's flow is computed, and the tiles are blended with weights
 * that fall off linearly towards each tile's border. This is the scheme of DeepMind's colab (and
 * krasserm/perceiver-io's optical-flow processor): tile starts every `tile - minOverlap` pixels,
 * the last tile flush with the image's far edge, and the weight of a tile pixel the smaller of its
 * 1-based distances to the tile's four edges. Blended flow = sum(w_i * f_i) / sum(w_i), so the
 * normalised weights of the tiles covering a pixel sum to one.
 */
import { InvalidArgumentError } from '../errors.js';

export interface TileShape {
  height: number;
  width: number;
}

/** One tile: its top-left corner in the image. */
export interface Tile {
  top: number;
  left: number;
}

/** The overlap DeepMind's colab uses between tiles at the 368x496 training size. */
export const DEFAULT_MIN_OVERLAP = 20;

/** The largest image side tileGrid and FlowBlender take. */
const MAX_IMAGE_SIDE = 1 << 16;
/**
 * The most pixels of an image FlowBlender takes (and of a tile): 2^26, 8192 x 8192, whose
 * float64 sums take 1.5 GiB. A larger allocation failed with a RangeError, found by bench/api_fuzz.ts.
 */
const MAX_IMAGE_PIXELS = 1 << 26;

function checkSize(name: string, height: unknown, width: unknown): void {
  for (const [side, v] of [['height', height], ['width', width]] as const) {
    if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > MAX_IMAGE_SIDE) throw new InvalidArgumentError(name ? `${name}.${side}` : side, `a positive integer up to ${MAX_IMAGE_SIDE}`, v);
  }
  if ((height as number) * (width as number) > MAX_IMAGE_PIXELS) {
    throw new InvalidArgumentError(name || 'height', `at most ${MAX_IMAGE_PIXELS} pixels (height x width)`, `${height as number} x ${width as number}`);
  }
}

/** Throws InvalidArgumentError unless `tile` is { height, width } of positive integers, at most MAX_IMAGE_PIXELS in all. */
function checkTile(tile: unknown, argument = 'tile'): TileShape {
  if (typeof tile !== 'object' || tile === null) throw new InvalidArgumentError(argument, 'a tile size { height, width }', tile);
  const { height, width } = tile as Partial<TileShape>;
  checkSize(argument, height, width);
  return tile as TileShape;
}

/**
 * The overlap used for a tile size: `DEFAULT_MIN_OVERLAP`, or less for tiles too small to hold it
 * (a third of the smaller side), so that small test models can be tiled too.
 */
export function defaultMinOverlap(tile: TileShape): number {
  checkTile(tile);
  return Math.min(DEFAULT_MIN_OVERLAP, Math.floor(Math.min(tile.height, tile.width) / 3));
}

function starts(size: number, tile: number, step: number): number[] {
  if (size <= tile) return [0];
  const out: number[] = [];
  for (let s = 0; s < size; s += step) out.push(s);
  out[out.length - 1] = size - tile; // the last tile flush with the far edge
  // The flush tile can coincide with (or come before) the one before it for sizes just over a step.
  return [...new Set(out.map((s) => Math.min(s, size - tile)))];
}

/**
 * The tiles covering an image of `height` x `width` (at least the tile size: smaller images are
 * padded first, see padFrame), in row-major order.
 */
export function tileGrid(height: number, width: number, tile: TileShape, minOverlap: number): Tile[] {
  // Bounded: the list of tile starts grows with the image side, and a side of 2^53 made V8 abort
  // the process (a fatal "invalid size" growing the array), found by bench/api_fuzz.ts.
  for (const [name, v] of [['height', height], ['width', width]] as const) {
    if (!Number.isSafeInteger(v) || v < 1 || v > MAX_IMAGE_SIDE) throw new InvalidArgumentError(name, `a positive integer up to ${MAX_IMAGE_SIDE}`, v);
  }
  checkTile(tile);
  if (!Number.isSafeInteger(minOverlap) || minOverlap < 0 || minOverlap >= tile.height || minOverlap >= tile.width) {
    throw new InvalidArgumentError('minOverlap', `an integer from 0 to less than the tile size (${tile.height}x${tile.width})`, minOverlap);
  }
  const ys = starts(height, tile.height, tile.height - minOverlap);
  const xs = starts(width, tile.width, tile.width - minOverlap);
  return ys.flatMap((top) => xs.map((left) => ({ top, left })));
}

/** The blend weight of each pixel of a tile, [height * width]: the smaller 1-based distance to the tile's edges. */
export function tileWeights(tile: TileShape): Float64Array {
  checkTile(tile);
  const w = new Float64Array(tile.height * tile.width);
  for (let y = 0; y < tile.height; y++) {
    const wy = Math.min(y + 1, tile.height - y);
    for (let x = 0; x < tile.width; x++) w[y * tile.width + x] = Math.min(wy, x + 1, tile.width - x);
  }
  return w;
}

/**
 * Accumulates tile flows into one field: add() each tile's flow ([tileH, tileW, 2], pixels), then
 * result() divides by the summed weights. Sums are float64, so a single tile comes back bit for bit.
 */
export class FlowBlender {
  readonly height: number;
  readonly width: number;
  readonly tile: TileShape;
  #sum: Float64Array;
  #weight: Float64Array;
  #tileWeights: Float64Array;

  constructor(height: number, width: number, tile: TileShape) {
    checkSize('', height, width);
    checkTile(tile);
    this.height = height;
    this.width = width;
    // A copy: the caller changing its object later must not desynchronise the weights from the size.
    this.tile = { height: tile.height, width: tile.width };
    this.#sum = new Float64Array(height * width * 2);
    this.#weight = new Float64Array(height * width);
    this.#tileWeights = tileWeights(this.tile);
  }

  add(at: Tile, flow: Float32Array, scale = 1): void {
    if (typeof at !== 'object' || at === null) throw new InvalidArgumentError('at', 'a tile position { top, left }', at);
    const { top, left } = at;
    for (const [name, v] of [['at.top', top], ['at.left', left]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(name, 'an integer of at least 0', v);
    }
    if (!(flow instanceof Float32Array)) throw new InvalidArgumentError('flow', 'a Float32Array [tileH, tileW, 2]', flow);
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new InvalidArgumentError('scale', 'a finite number', scale);
    const { height: th, width: tw } = this.tile;
    if (flow.length !== th * tw * 2) throw new InvalidArgumentError('flow', `${th * tw * 2} values (${th} x ${tw} x 2)`, `${flow.length}`);
    for (let y = 0; y < th; y++) {
      const iy = top + y;
      if (iy >= this.height) break;
      for (let x = 0; x < tw; x++) {
        const ix = left + x;
        if (ix >= this.width) break;
        const w = this.#tileWeights[y * tw + x]!;
        const p = iy * this.width + ix;
        const f = (y * tw + x) * 2;
        this.#sum[p * 2] += w * (flow[f]! * scale);
        this.#sum[p * 2 + 1] += w * (flow[f + 1]! * scale);
        this.#weight[p] += w;
      }
    }
  }

  /** The blended flow, [height, width, 2] float32. */
  result(): Float32Array {
    const out = new Float32Array(this.height * this.width * 2);
    this.#divide(out, 0, this.#weight.length);
    return out;
  }

  /** result(), in slices separated by turns of the event loop. */
  async resultAsync(): Promise<Float32Array> {
    const out = new Float32Array(this.height * this.width * 2);
    const slice = 65_536;
    for (let p = 0; p < this.#weight.length; p += slice) {
      if (p > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      this.#divide(out, p, Math.min(this.#weight.length, p + slice));
    }
    return out;
  }

  #divide(out: Float32Array, from: number, to: number): void {
    for (let p = from; p < to; p++) {
      const w = this.#weight[p]!;
      out[p * 2] = this.#sum[p * 2]! / w;
      out[p * 2 + 1] = this.#sum[p * 2 + 1]! / w;
    }
  }
}
