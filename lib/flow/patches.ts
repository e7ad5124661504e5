/**
 * The input PerceiverForOpticalFlow takes, prepared as DeepMind's colab and transformers' example
 * for the published checkpoint (deepmind/optical-flow-perceiver) prepare it:
 *
 * - pixels scaled from 8-bit to [-1, 1]: `x / 255 * 2 - 1`;
 * - every pixel replaced by its 3x3 neighbourhood ("SAME" padding: the border is padded with zeros,
 *   after the scaling), 27 channels per frame. Channel `(ky * 3 + kx) * 3 + c` holds colour c of
 *   the neighbour at row offset ky - 1 and column offset kx - 1: the order of torch's
 *   `unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 4, 5, 1, 2, 3)` in that example, which is what
 *   the checkpoint's first linear layer was trained on.
 *
 * The result for a pair of frames is [2, 27, height, width]; a batch of pairs stacks these.
 */
import { describeValue, InvalidArgumentError } from '../errors.js';

/** 8-bit RGB pixels, row by row with channels interleaved (HWC). */
export interface RgbFrame {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Channels per frame of the flow model's input: a 3x3 neighbourhood of RGB. */
export const FLOW_PATCH_CHANNELS = 27;

export function checkRgbFrame(frame: unknown, argument: string): RgbFrame {
  const f = frame as Partial<RgbFrame> | null;
  if (typeof f !== 'object' || f === null || !(f.data instanceof Uint8Array)) throw new InvalidArgumentError(argument, 'an RGB frame {data: Uint8Array, width, height}', frame);
  if (!Number.isSafeInteger(f.width) || f.width! < 1 || !Number.isSafeInteger(f.height) || f.height! < 1) {
    throw new InvalidArgumentError(`${argument}.width`, 'positive integer width and height', `${describeValue(f.width)} x ${describeValue(f.height)}`);
  }
  if (f.data.length !== f.width! * f.height! * 3) throw new InvalidArgumentError(`${argument}.data`, `${f.width! * f.height! * 3} bytes (${f.height} x ${f.width} x 3)`, `${f.data.length} bytes`);
  return f as RgbFrame;
}

/**
 * Writes the 27-channel patch planes of the window (top, left, height x width) of one frame into
 * `out` at `offset` ([27, height, width], channel planes first). Neighbours outside the window are
 * zero, as the example pads each tile it cuts (not the whole image).
 */
export function writeFramePatches(frame: RgbFrame, top: number, left: number, height: number, width: number, out: Float32Array, offset: number): void {
  const plane = height * width;
  const stride = frame.width * 3;
  for (let ky = 0; ky < 3; ky++) {
    for (let kx = 0; kx < 3; kx++) {
      for (let c = 0; c < 3; c++) {
        const base = offset + ((ky * 3 + kx) * 3 + c) * plane;
        for (let y = 0; y < height; y++) {
          const sy = y + ky - 1;
          const row = base + y * width;
          if (sy < 0 || sy >= height) {
            out.fill(0, row, row + width);
            continue;
          }
          const src = (top + sy) * stride + left * 3 + c;
          for (let x = 0; x < width; x++) {
            const sx = x + kx - 1;
            out[row + x] = sx < 0 || sx >= width ? 0 : (frame.data[src + sx * 3]! / 255) * 2 - 1;
          }
        }
      }
    }
  }
}

/** The model input for one pair of frames of equal size, whole: float32 [2, 27, height, width]. */
export function flowPatchInput(first: RgbFrame, second: RgbFrame): Float32Array {
  checkRgbFrame(first, 'first');
  checkRgbFrame(second, 'second');
  if (first.width !== second.width || first.height !== second.height) {
    throw new InvalidArgumentError('second', `a frame of the first frame's size (${first.width}x${first.height})`, `${second.width}x${second.height}`);
  }
  const { width, height } = first;
  const out = new Float32Array(2 * FLOW_PATCH_CHANNELS * height * width);
  writeFramePatches(first, 0, 0, height, width, out, 0);
  writeFramePatches(second, 0, 0, height, width, out, FLOW_PATCH_CHANNELS * height * width);
  return out;
}
