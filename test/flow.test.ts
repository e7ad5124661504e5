/** lib/flow: the colour coding, .flo files, the patch input and tiling with blending, checked against their definitions. */
import t from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  COLOR_WHEEL,
  decodeFlo,
  encodeFlo,
  FlowBlender,
  flowPatchInput,
  flowToColor,
  flowToColorAsync,
  InvalidArgumentError,
  MediaDecodeError,
  readFlo,
  tileGrid,
  tileWeights,
  writeFlo,
  type RgbFrame,
} from '../lib/index.js';
import { tempDir } from './helpers/fixtures.js';

t.test('the colour coding gives the Middlebury reference colours for the eight compass directions, and white at zero', async (t) => {
  // Reference: flow_vis.flow_to_color (Baker et al.'s wheel, max-normalised), run in Python/NumPy on
  // the same nine vectors; image coordinates, so "south" is v = +1 (down).
  const s = Math.SQRT1_2;
  const cases: [string, number, number, [number, number, number]][] = [
    ['east', 1, 0, [255, 0, 0]],
    ['south-east', s, s, [255, 114, 0]],
    ['south', 0, 1, [255, 229, 0]],
    ['south-west', -s, s, [32, 255, 0]],
    ['west', -1, 0, [0, 209, 255]],
    ['north-west', -s, -s, [0, 52, 255]],
    ['north', 0, -1, [88, 0, 255]],
    ['north-east', s, -s, [220, 0, 255]],
    ['zero', 0, 0, [255, 255, 255]],
  ];
  const flow = Float32Array.from(cases.flatMap(([, u, v]) => [u, v]));
  const rgb = flowToColor({ flow, width: cases.length, height: 1 });
  cases.forEach(([name, , , expected], i) => t.same([...rgb.subarray(i * 3, i * 3 + 3)], expected, name));
  t.equal(COLOR_WHEEL.length, 55, 'the wheel has 55 colours');
  // The sliced version gives the same bytes (a field larger than one slice).
  const big = Float32Array.from({ length: 300 * 200 * 2 }, (_, i) => Math.sin(i * 0.01) * (i % 7));
  t.ok(Buffer.from(await flowToColorAsync({ flow: big, width: 300, height: 200 })).equals(Buffer.from(flowToColor({ flow: big, width: 300, height: 200 }))), 'flowToColorAsync = flowToColor');
  // All-zero flow is all white (the normalising epsilon keeps it finite).
  t.ok(flowToColor({ flow: new Float32Array(8), width: 2, height: 2 }).every((v) => v === 255), 'zero field is white');
  // Scale does not change colours: only direction and relative magnitude do.
  const scaled = flowToColor({ flow: flow.map((v) => v * 37.5), width: cases.length, height: 1 });
  t.same([...scaled], [...rgb], 'normalised by the largest vector');
  // Half the largest magnitude is halfway to white: 1 - 0.5 * (1 - c).
  const half = flowToColor({ flow: Float32Array.from([1, 0, 0.5, 0]), width: 2, height: 1 });
  t.same([...half.subarray(3)], [255, 127, 127], 'saturation is the magnitude over the largest');
  t.throws(() => flowToColor({ flow: new Float32Array(3), width: 1, height: 1 }), InvalidArgumentError);
  t.throws(() => flowToColor({ flow: new Float32Array(2), width: 1, height: 1 }, { maxRadius: -1 }), InvalidArgumentError);
});

t.test('.flo files round trip bit for bit, and bad ones are MediaDecodeErrors', async (t) => {
  const dir = await tempDir(t);
  const width = 5;
  const height = 3;
  const flow = Float32Array.from({ length: width * height * 2 }, (_, i) => (i % 2 ? -1 : 1) * i * 0.37 + 1e-7);
  const bytes = encodeFlo({ flow, width, height });
  t.equal(bytes.length, 12 + width * height * 8);
  t.equal(bytes.toString('latin1', 0, 4), 'PIEH', 'the tag reads PIEH');
  t.equal(bytes.readInt32LE(4), width);
  t.equal(bytes.readInt32LE(8), height);
  const file = join(dir, 'f.flo');
  await writeFlo(file, { flow, width, height });
  const back = await readFlo(file);
  t.same([back.width, back.height], [width, height]);
  t.same([...back.flow], [...flow], 'values');
  t.throws(() => decodeFlo(Buffer.from('not a flo file at all')), MediaDecodeError);
  t.throws(() => decodeFlo(bytes.subarray(0, bytes.length - 4)), MediaDecodeError, 'truncated');
  const huge = Buffer.from(bytes);
  huge.writeInt32LE(1 << 20, 4);
  t.throws(() => decodeFlo(huge), MediaDecodeError, 'absurd size');
  await writeFile(join(dir, 'empty.flo'), '');
  await t.rejects(readFlo(join(dir, 'empty.flo')), MediaDecodeError);
  await t.rejects(readFlo(join(dir, 'missing.flo')), MediaDecodeError);
  t.equal((await readFile(file)).length, bytes.length);
});

/** The patch input by its definition (the example's unfold): channel (ky*3+kx)*3+c of pixel (y, x) is colour c at (y+ky-1, x+kx-1) scaled to [-1, 1], 0 outside. */
function referencePatches(frame: RgbFrame): number[] {
  const { width, height, data } = frame;
  const out: number[] = [];
  for (let ky = 0; ky < 3; ky++)
    for (let kx = 0; kx < 3; kx++)
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < height; y++)
          for (let x = 0; x < width; x++) {
            const sy = y + ky - 1;
            const sx = x + kx - 1;
            out.push(sy < 0 || sx < 0 || sy >= height || sx >= width ? 0 : (data[(sy * width + sx) * 3 + c]! / 255) * 2 - 1);
          }
  return out;
}

t.test('the patch input is the 3x3 neighbourhood of pixels in [-1, 1], 27 channels per frame', async (t) => {
  const frame = (w: number, h: number, seed: number): RgbFrame => ({ data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * seed + 13) % 256), width: w, height: h });
  const a = frame(7, 5, 31);
  const b = frame(7, 5, 17);
  const input = flowPatchInput(a, b);
  t.equal(input.length, 2 * 27 * 5 * 7);
  t.same([...input.subarray(0, 27 * 35)], referencePatches(a).map(Math.fround), 'first frame');
  t.same([...input.subarray(27 * 35)], referencePatches(b).map(Math.fround), 'second frame');
  // The centre tap (ky = kx = 1) of colour 0 is the pixel itself.
  t.equal(input[(4 * 3 + 0) * 35 + 2 * 7 + 3], Math.fround((a.data[(2 * 7 + 3) * 3]! / 255) * 2 - 1));
  t.throws(() => flowPatchInput(a, frame(6, 5, 1)), InvalidArgumentError, 'sizes must match');
  t.throws(() => flowPatchInput({ data: new Uint8Array(5), width: 2, height: 2 }, b), InvalidArgumentError);
});

t.test('tiles cover the image with at least the overlap, the last flush with the edge, and blend weights sum to one', async (t) => {
  const tile = { height: 368, width: 496 };
  const tiles = tileGrid(436, 1024, tile, 20);
  const ys = [...new Set(tiles.map((x) => x.top))];
  const xs = [...new Set(tiles.map((x) => x.left))];
  t.same(ys, [0, 436 - 368], 'rows: from 0 to flush with the bottom');
  t.equal(xs[0], 0);
  t.equal(xs[xs.length - 1], 1024 - 496, 'last column flush with the right edge');
  for (let i = 1; i < xs.length; i++) t.ok(xs[i - 1]! + 496 - xs[i]! >= 20, `columns ${i - 1} and ${i} overlap by at least 20 px`);
  t.same(tileGrid(368, 496, tile, 20), [{ top: 0, left: 0 }], 'an image of the tile size is one tile');
  t.throws(() => tileGrid(400, 500, tile, 368), InvalidArgumentError, 'overlap must be smaller than the tile');

  // Normalised weights: for every pixel, the weights of the tiles covering it sum to one.
  const small = { height: 12, width: 16 };
  const [H, W] = [31, 45];
  const grid = tileGrid(H, W, small, 4);
  const w = tileWeights(small);
  const total = new Float64Array(H * W);
  const covered = new Uint8Array(H * W);
  for (const at of grid)
    for (let y = 0; y < small.height; y++)
      for (let x = 0; x < small.width; x++) {
        total[(at.top + y) * W + at.left + x] += w[y * small.width + x]!;
        covered[(at.top + y) * W + at.left + x] = 1;
      }
  t.ok(covered.every((c) => c === 1), 'every pixel is covered');
  let worst = 0;
  for (const at of grid)
    for (let y = 0; y < small.height; y++)
      for (let x = 0; x < small.width; x++) {
        const p = (at.top + y) * W + at.left + x;
        worst = Math.max(worst, Math.abs(grid.reduce((sum, other) => {
          const oy = at.top + y - other.top;
          const ox = at.left + x - other.left;
          return oy >= 0 && ox >= 0 && oy < small.height && ox < small.width ? sum + w[oy * small.width + ox]! / total[p]! : sum;
        }, 0) - 1));
      }
  t.ok(worst < 1e-12, `normalised weights sum to one (worst error ${worst})`);
  // Weights fall off towards the edges: 1 at the border, largest in the middle.
  t.equal(w[0], 1);
  t.equal(w[6 * 16 + 8], 6);

  // Blending a constant flow gives that flow everywhere; one tile comes back bit for bit.
  const blender = new FlowBlender(H, W, small);
  for (const at of grid) blender.add(at, new Float32Array(12 * 16 * 2).fill(0.3), 20);
  t.ok(blender.result().every((v) => v === Math.fround(6)), 'constant flow blends to itself (scaled)');
  t.same([...(await blender.resultAsync())], [...blender.result()], 'resultAsync = result');
  const one = new FlowBlender(12, 16, small);
  const piece = Float32Array.from({ length: 12 * 16 * 2 }, (_, i) => Math.sin(i) * 3.3);
  one.add({ top: 0, left: 0 }, piece);
  t.same([...one.result()], [...piece], 'a single tile is returned exactly');
});

t.test('docs/flow-rotation.png is the library\'s rendering of the rotation field it documents', async (t) => {
  const sharp = (await import('sharp')).default;
  const { REPO } = await import('./helpers/fixtures.js');
  const { data, info } = await sharp(join(REPO, 'docs', 'flow-rotation.png')).raw().toBuffer({ resolveWithObject: true });
  const size = 160;
  t.same([info.width, info.height, info.channels], [size, size, 3]);
  const c = (size - 1) / 2;
  const flow = new Float32Array(size * size * 2);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      flow[(y * size + x) * 2] = -(y - c);
      flow[(y * size + x) * 2 + 1] = x - c;
    }
  t.ok(Buffer.from(flowToColor({ flow, width: size, height: size })).equals(data), 'every pixel as flowToColor renders the field');
  // Above the centre the flow points right (red), below it left (cyan).
  const px = (x: number, y: number) => [...data.subarray((y * size + x) * 3, (y * size + x) * 3 + 3)];
  t.ok(px(80, 2)[0]! > 200 && px(80, 2)[2]! < 80, 'top: red');
  t.ok(px(80, 157)[0]! < 80 && px(80, 157)[2]! > 200, 'bottom: cyan');
});
