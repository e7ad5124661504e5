/** The 'optical-flow' pipeline on the random-weight fixture (train_size 12x16): manual parity, tiling, writers, video in and out. */
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { AutoModel, flowToColor, pipeline, readFlo, Tensor, writeFlowPicture, writeFlowVideo, InvalidArgumentError, type FlowField, type RgbFrame } from '../lib/index.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { ffmpeg } from './helpers/media.js';

const run = promisify(execFile);
const FLOW = fixtureDir('optical-flow');
const [TH, TW] = [12, 16];

const frame = (w: number, h: number, seed: number): RgbFrame & { channels: 3 } => ({
  data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * seed + 7 * Math.floor(i / (w * 3))) % 256),
  width: w,
  height: h,
  channels: 3,
});

/** The model input for a pair, written here from the definition (not with lib/flow). */
function manualInput(a: RgbFrame, b: RgbFrame): Tensor<'float32'> {
  const { width: w, height: h } = a;
  const out = new Float32Array(2 * 27 * h * w);
  [a, b].forEach((f, n) => {
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let ky = -1; ky <= 1; ky++)
          for (let kx = -1; kx <= 1; kx++)
            for (let c = 0; c < 3; c++) {
              const [sy, sx] = [y + ky, x + kx];
              const value = sy < 0 || sx < 0 || sy >= h || sx >= w ? 0 : (f.data[(sy * w + sx) * 3 + c]! / 255) * 2 - 1;
              out[((n * 27 + ((ky + 1) * 3 + (kx + 1)) * 3 + c) * h + y) * w + x] = value;
            }
  });
  return new Tensor('float32', [1, 2, 27, h, w], out);
}

t.test('one tile: the pipeline equals the manual forward times 20, exactly; larger images are tiled and blended', async (t) => {
  const pipe = await pipeline('optical-flow', FLOW);
  t.teardown(() => pipe.dispose());
  const model = await AutoModel.fromPretrained(FLOW);
  t.teardown(() => model.dispose());
  const a = frame(TW, TH, 31);
  const b = frame(TW, TH, 29);
  const field = (await pipe([a, b])) as FlowField;
  t.same([field.width, field.height, field.flow.length], [TW, TH, TH * TW * 2]);
  const manual = (await model.forward({ inputs: manualInput(a, b) })).logits as Tensor<'float32'>;
  t.same(manual.shape, [1, TH, TW, 2]);
  t.same([...field.flow], [...manual.data].map((v) => Math.fround(v * 20)), 'pixels = logits x FLOW_SCALE_FACTOR, bit for bit');

  // A larger image: every tile's flow blended; where only one tile covers a pixel, that tile's flow.
  const A = frame(40, 30, 31);
  const B = frame(40, 30, 29);
  const big = (await pipe([A, B], { batchSize: 3 })) as FlowField;
  t.same([big.width, big.height], [40, 30]);
  t.ok(big.flow.every(Number.isFinite), 'finite everywhere');
  const crop = (f: RgbFrame, top: number, left: number): RgbFrame => {
    const data = new Uint8Array(TH * TW * 3);
    for (let y = 0; y < TH; y++) data.set(f.data.subarray(((top + y) * f.width + left) * 3, ((top + y) * f.width + left + TW) * 3), y * TW * 3);
    return { data, width: TW, height: TH };
  };
  const corner = (await model.forward({ inputs: manualInput(crop(A, 0, 0), crop(B, 0, 0)) })).logits as Tensor<'float32'>;
  // Pixel (0, 0) lies only in the top-left tile (tiles start every 16 - 4 = 12 columns, 12 - 4 = 8 rows).
  t.equal(big.flow[0], Math.fround(corner.data[0]! * 20), 'top-left pixel is the top-left tile');
  t.not(big.flow[0], field.flow[0], 'and differs from another image');
  // Batching changes the result only by the engine's float rounding (batch 1 and 3 happen to agree
  // bit for bit on this input; batch 4 differs by about 1e-6 px).
  const batched = (await pipe([A, B], { batchSize: 1 })) as FlowField;
  t.same([...batched.flow], [...big.flow], 'batchSize 1 and 3 agree');
  const four = (await pipe([A, B], { batchSize: 4 })) as FlowField;
  t.ok(four.flow.every((v, i) => Math.abs(v - big.flow[i]!) < 1e-4), 'batchSize 4 agrees to float rounding');
  // Smaller than a tile: padded, and cropped back.
  const tiny = (await pipe([frame(9, 7, 3), frame(9, 7, 5)])) as FlowField;
  t.same([tiny.width, tiny.height, tiny.flow.length], [9, 7, 9 * 7 * 2]);
  await t.rejects(pipe([A, frame(41, 30, 1)]), InvalidArgumentError, 'sizes must match');
  await t.rejects(pipe([A] as never), InvalidArgumentError);
  await t.rejects(pipe([A, B], { minOverlap: 12 }), InvalidArgumentError, 'overlap must fit in a tile');
  await t.rejects(pipe([A, B], { maxPixels: 1000 }), InvalidArgumentError, 'images above maxPixels are refused');
  // Aborted between tiles (one tile per forward): rejects with the reason, and the pipeline goes on working.
  const controller = new AbortController();
  const running = pipe([A, B], { batchSize: 1, signal: controller.signal });
  setImmediate(() => controller.abort(new Error('stop')));
  await t.rejects(running, { message: 'stop' }, 'the signal\'s reason');
  t.same([...((await pipe([A, B], { batchSize: 3 })) as FlowField).flow], [...big.flow], 'still usable, same result');
});

t.test('flow pictures and .flo files are written and read back; encoded images work as input', async (t) => {
  const dir = await tempDir(t);
  const pipe = await pipeline('optical-flow', FLOW);
  t.teardown(() => pipe.dispose());
  const a = frame(40, 30, 31);
  const b = frame(40, 30, 29);
  const pa = join(dir, 'a.png');
  const pb = join(dir, 'b.png');
  await sharp(a.data, { raw: { width: 40, height: 30, channels: 3 } }).png().toFile(pa);
  await sharp(b.data, { raw: { width: 40, height: 30, channels: 3 } }).png().toFile(pb);
  const fromFiles = (await pipe([pa, pb])) as FlowField;
  const fromRaw = (await pipe([a, b])) as FlowField;
  t.same([...fromFiles.flow], [...fromRaw.flow], 'PNG files give what raw pixels give');
  const fromBytes = (await pipe([await sharp(pa).toBuffer(), await sharp(pb).toBuffer()])) as FlowField;
  t.same([...fromBytes.flow], [...fromRaw.flow], 'and so do encoded bytes');

  const png = join(dir, 'flow.png');
  const flo = join(dir, 'flow.flo');
  await writeFlowPicture(png, fromRaw, flo);
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  t.same([info.width, info.height, info.channels], [40, 30, 3]);
  const colours = flowToColor(fromRaw);
  for (const [x, y] of [[0, 0], [39, 29], [17, 11]] as const) {
    const p = (y * 40 + x) * 3;
    t.same([...data.subarray(p, p + 3)], [...colours.subarray(p, p + 3)], `pixel (${x}, ${y}) has its flow's colour`);
  }
  const back = await readFlo(flo);
  t.same([...back.flow], [...fromRaw.flow], '.flo holds the field');
});

t.test('a video in gives a flow video (and a PNG sequence) out, read back with ffprobe', async (t) => {
  const dir = await tempDir(t);
  const video = join(dir, 'moving.mp4');
  // A white square moving 2 px right per frame over a grey background: 6 frames at 10 fps.
  await ffmpeg('-f', 'lavfi', '-i', 'color=c=gray:s=32x24:r=10:d=0.6', '-vf', "drawbox=x='4+20*t':y=8:w=8:h=8:color=white:t=fill", '-c:v', 'libx264', '-preset', 'ultrafast', '-qp', '0', '-pix_fmt', 'yuv444p', video);
  const pipe = await pipeline('optical-flow', FLOW);
  t.teardown(() => pipe.dispose());
  const result = await pipe({ video });
  if (!('fields' in result)) throw new Error('expected fields');
  t.equal(result.fps, 10);
  t.equal(result.fields.length, 5, 'six frames give five pairs');
  t.ok(result.fields.every((f) => f.width === 32 && f.height === 24), 'fields at the video size');
  t.not(result.fields[0]!.flow[0], result.fields[1]!.flow[300], 'pairs differ');

  const out = join(dir, 'flow.mp4');
  await writeFlowVideo(out, result.fields, { fps: result.fps });
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-count_frames', '-show_entries', 'stream=width,height,nb_read_frames,codec_name', '-of', 'json', out]);
  const stream = JSON.parse(stdout).streams[0];
  t.same([stream.codec_name, stream.width, stream.height, Number(stream.nb_read_frames)], ['h264', 32, 24, 5], 'ffprobe: h264, 32x24, 5 frames');

  const seq = join(dir, 'seq');
  const files = await writeFlowVideo(seq, result.fields);
  t.equal(files.length, 5);
  const meta = await sharp(files[4]!).metadata();
  t.same([meta.width, meta.height], [32, 24]);
  await t.rejects(pipe({ video: join(dir, 'missing.mp4') }));
});
