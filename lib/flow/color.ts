/**
 * The standard colour coding of optical flow: the Middlebury colour wheel of Baker et al. (their
 * `flowToColor`, and the `flow_vis` package that ports it). Hue gives the direction, saturation
 * the magnitude normalised by the field's largest: zero flow is white, the largest vector a fully
 * saturated colour. Written from that definition (no npm package renders flow):
 *
 * - the wheel: 55 colours in six ramps, red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
 *   blue-magenta 13, magenta-red 6, each ramp's changing channel floor(255 * i / n);
 * - a vector (u, v), divided by (max radius + 1e-5), sits at angle atan2(-v, -u) / pi in [-1, 1],
 *   mapped to wheel position (a + 1) / 2 * 54 and interpolated linearly between the two wheel
 *   colours around it;
 * - each channel c in [0, 1] becomes 1 - r * (1 - c) for radius r <= 1 (0.75 * c beyond), then
 *   floor(255 * c).
 *
 * In image coordinates (v down): right is red, down yellow, left cyan, up blue-violet.
 */
import { InvalidArgumentError } from '../errors.js';
import { checkFlowField, type FlowField } from './flo.js';

const RAMPS: [number, (i: number, n: number) => [number, number, number]][] = [
  [15, (i, n) => [255, Math.floor((255 * i) / n), 0]], // red -> yellow
  [6, (i, n) => [255 - Math.floor((255 * i) / n), 255, 0]], // yellow -> green
  [4, (i, n) => [0, 255, Math.floor((255 * i) / n)]], // green -> cyan
  [11, (i, n) => [0, 255 - Math.floor((255 * i) / n), 255]], // cyan -> blue
  [13, (i, n) => [Math.floor((255 * i) / n), 0, 255]], // blue -> magenta
  [6, (i, n) => [255, 0, 255 - Math.floor((255 * i) / n)]], // magenta -> red
];

/** The 55 colours of the Middlebury wheel, [r, g, b] in 0..255. */
export const COLOR_WHEEL: readonly (readonly [number, number, number])[] = Object.freeze(
  RAMPS.flatMap(([n, colour]) => Array.from({ length: n }, (_, i) => Object.freeze(colour(i, n)))),
);

const EPSILON = 1e-5;

/** The colour of one flow vector already divided by the normalising radius, into out[at..at+3]. */
function vectorColour(u: number, v: number, out: Uint8Array, at: number): void {
  const ncols = COLOR_WHEEL.length;
  const rad = Math.sqrt(u * u + v * v);
  const a = Math.atan2(-v, -u) / Math.PI;
  const fk = ((a + 1) / 2) * (ncols - 1);
  const k0 = Math.floor(fk);
  const k1 = k0 + 1 === ncols ? 0 : k0 + 1;
  const f = fk - k0;
  for (let c = 0; c < 3; c++) {
    let col = (1 - f) * (COLOR_WHEEL[k0]![c]! / 255) + f * (COLOR_WHEEL[k1]![c]! / 255);
    col = rad <= 1 ? 1 - rad * (1 - col) : col * 0.75;
    out[at + c] = Math.floor(255 * col);
  }
}

export interface FlowToColorOptions {
  /** Normalise by this radius instead of the field's largest (e.g. one scale for every frame of a video). */
  maxRadius?: number;
}

function normaliser(field: FlowField, options: FlowToColorOptions): number {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { maxRadius }', options);
  const maxRadius = options.maxRadius ?? maxFlowRadius(field);
  if (typeof maxRadius !== 'number' || !Number.isFinite(maxRadius) || maxRadius < 0) throw new InvalidArgumentError('options.maxRadius', 'a finite radius of at least 0', maxRadius);
  return maxRadius + EPSILON;
}

/** Colours pixels [from, to) of a flow into out (HWC). Non-finite vectors are black. */
function colourPixels(flow: Float32Array, norm: number, out: Uint8Array, from: number, to: number): void {
  for (let p = from; p < to; p++) {
    const u = flow[p * 2]!;
    const v = flow[p * 2 + 1]!;
    if (!Number.isFinite(u) || !Number.isFinite(v)) continue; // black
    vectorColour(u / norm, v / norm, out, p * 3);
  }
}

/**
 * A flow field as 8-bit RGB (HWC), in the Middlebury colour coding. Non-finite vectors are black.
 * Synchronous: about 0.2 s for a 1920x1080 field on one core; flowToColorAsync() does the same
 * work in slices that let the event loop run in between.
 */
export function flowToColor(field: FlowField, options: FlowToColorOptions = {}): Uint8Array {
  const { flow, width, height } = checkFlowField(field, 'field');
  const out = new Uint8Array(width * height * 3);
  colourPixels(flow, normaliser(field, options), out, 0, width * height);
  return out;
}

/** Pixels coloured per slice before flowToColorAsync lets the event loop run (a few ms of work). */
const PIXELS_PER_SLICE = 32_768;

/** flowToColor, in slices separated by turns of the event loop: the same bytes, never blocking long. */
export async function flowToColorAsync(field: FlowField, options: FlowToColorOptions = {}): Promise<Uint8Array> {
  const { flow, width, height } = checkFlowField(field, 'field');
  const norm = normaliser(field, options);
  const out = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p += PIXELS_PER_SLICE) {
    if (p > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    colourPixels(flow, norm, out, p, Math.min(width * height, p + PIXELS_PER_SLICE));
  }
  return out;
}

/** The largest finite vector length of a field, for a common maxRadius across frames. */
export function maxFlowRadius(field: FlowField): number {
  checkFlowField(field, 'field');
  let max = 0;
  for (let i = 0; i < field.flow.length; i += 2) {
    const r = Math.hypot(field.flow[i]!, field.flow[i + 1]!);
    if (Number.isFinite(r) && r > max) max = r;
  }
  return max;
}
