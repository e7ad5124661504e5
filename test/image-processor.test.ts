import t, { type Test } from 'tap';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { PerceiverImageProcessor, type ImageInput, type RawImage } from '../lib/image_processor.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { BackendUnavailableError, ConfigError, InvalidArgumentError } from '../lib/errors.js';
import type { Tensor } from '../lib/tensor.js';

const FIXTURE = 'test/fixtures/image_processor.safetensors';
const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

const fixture = await readSafetensors(FIXTURE);
const expected = fixture.tensors.get('pixel_values') as Tensor<'float32'>;
const hwc = fixture.tensors.get('image_hwc_uint8') as Tensor<'uint8'>;
const [H, W] = hwc.shape as [number, number, number];
const rawFixture: RawImage = { data: hwc.data, width: W, height: H, channels: 3 };

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-image-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function sameBytes(a: Tensor, b: Tensor): boolean {
  return a.shape.join() === b.shape.join() && Buffer.from(a.bytes()).equals(Buffer.from(b.bytes()));
}

/** Error statistics of `actual` against `expected`, in normalized units. */
function errors(actual: Float32Array, reference: Float32Array): { maxAbs: number; meanAbs: number; relL2: number; identical: number } {
  let maxAbs = 0;
  let sumAbs = 0;
  let num = 0;
  let den = 0;
  let identical = 0;
  for (let i = 0; i < reference.length; i++) {
    const d = actual[i]! - reference[i]!;
    if (d === 0) identical++;
    maxAbs = Math.max(maxAbs, Math.abs(d));
    sumAbs += Math.abs(d);
    num += d * d;
    den += reference[i]! * reference[i]!;
  }
  return { maxAbs, meanAbs: sumAbs / reference.length, relL2: Math.sqrt(num / den), identical };
}

/** The 8-bit level a normalized value came from (channel c, default settings). */
function level(value: number, c: number): number {
  return Math.round((value * STD[c]! + MEAN[c]!) * 255);
}

/** A lossless PNG of raw pixels, with as many channels as the input (grey stays 1-channel). */
function pngOf(raw: RawImage): Promise<Buffer> {
  const image = sharp(Buffer.from(raw.data), { raw: { width: raw.width, height: raw.height, channels: raw.channels } });
  return (raw.channels === 1 ? image.toColourspace('b-w') : image).png().toBuffer();
}

t.test('the raw fixture image reproduces transformers pixel_values bit for bit', async (t) => {
  const out = await new PerceiverImageProcessor().preprocess(rawFixture);
  t.equal(out.dtype, 'float32');
  t.same(out.shape, [1, 3, 224, 224]);
  const e = errors(out.data, expected.data);
  // The tolerance is zero: the crop, torch's int16 fixed-point bicubic and the float32 fused
  // normalization are ported operation for operation, so every float32 value must be identical.
  // (sharp's closest kernel, 'cubic', measured max 0.23 / mean 9e-4 / rel L2 7.7e-3 here.)
  const stats = `identical ${e.identical}/${expected.size}, max abs ${e.maxAbs}, mean abs ${e.meanAbs}, rel L2 ${e.relL2}`;
  t.equal(e.identical, expected.size, `every value identical (${stats})`);
  t.equal(e.maxAbs, 0, `max abs error 0 in normalized units (${stats})`);
});

t.test('PNG file path and PNG bytes give the same tensor as raw pixels', async (t) => {
  const processor = new PerceiverImageProcessor();
  const fromRaw = await processor.preprocess(rawFixture);
  const png = await pngOf(rawFixture);
  const dir = await tempDir(t);
  const path = join(dir, 'image.png');
  await writeFile(path, png);

  const fromPath = await processor.preprocess(path);
  const fromBuffer = await processor.preprocess(png);
  const fromUint8 = await processor.preprocess(new Uint8Array(png));
  t.ok(sameBytes(fromPath, fromRaw), 'file path = raw');
  t.ok(sameBytes(fromBuffer, fromRaw), 'Buffer = raw');
  t.ok(sameBytes(fromUint8, fromRaw), 'plain Uint8Array = raw');
});

t.test('a batch of two stacks to [2, 3, 224, 224]', async (t) => {
  const processor = new PerceiverImageProcessor();
  const flipped = await sharp(Buffer.from(hwc.data), { raw: { width: W, height: H, channels: 3 } }).flop().png().toBuffer();
  const batch = await processor.preprocess([rawFixture, flipped]);
  t.same(batch.shape, [2, 3, 224, 224]);
  const one = await processor.preprocess(rawFixture);
  const two = await processor.preprocess(flipped);
  const n = one.size;
  t.ok(Buffer.from(new Float32Array(batch.data.subarray(0, n)).buffer).equals(Buffer.from(one.bytes())), 'first item = alone');
  t.ok(Buffer.from(new Float32Array(batch.data.subarray(n)).buffer).equals(Buffer.from(two.bytes())), 'second item = alone');
  t.notOk(sameBytes(one, two), 'the two items differ');
});

t.test('RGBA drops alpha and grey is replicated to 3 channels', async (t) => {
  const processor = new PerceiverImageProcessor();
  const n = W * H;
  const rgba = new Uint8Array(n * 4);
  const grey = new Uint8Array(n);
  const greyRgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgba.set(hwc.data.subarray(i * 3, i * 3 + 3), i * 4);
    rgba[i * 4 + 3] = (i * 7) & 255; // alpha must be ignored, not composited
    grey[i] = hwc.data[i * 3]!;
    greyRgb.fill(grey[i]!, i * 3, i * 3 + 3);
  }
  const fromRgb = await processor.preprocess(rawFixture);
  const fromRgba = await processor.preprocess({ data: rgba, width: W, height: H, channels: 4 });
  t.same(fromRgba.shape, [1, 3, 224, 224]);
  t.ok(sameBytes(fromRgba, fromRgb), 'raw RGBA = its RGB channels');

  const greyRaw: RawImage = { data: grey, width: W, height: H, channels: 1 };
  const fromGrey = await processor.preprocess(greyRaw);
  t.same(fromGrey.shape, [1, 3, 224, 224]);
  t.ok(sameBytes(fromGrey, await processor.preprocess({ data: greyRgb, width: W, height: H, channels: 3 })), 'raw grey = grey replicated to RGB');
  const plane = 224 * 224;
  let sameLevels = 0;
  for (let p = 0; p < plane; p++) {
    const l = level(fromGrey.data[p]!, 0);
    if (level(fromGrey.data[plane + p]!, 1) === l && level(fromGrey.data[2 * plane + p]!, 2) === l) sameLevels++;
  }
  t.equal(sameLevels, plane, 'the three channels hold the same grey levels');

  // The same through encoded files: a 4-channel PNG and a 1-channel PNG.
  const rgbaPng = await pngOf({ data: rgba, width: W, height: H, channels: 4 });
  const greyPng = await pngOf(greyRaw);
  t.equal((await sharp(rgbaPng).metadata()).channels, 4, 'the RGBA PNG has 4 channels');
  t.equal((await sharp(greyPng).metadata()).channels, 1, 'the grey PNG has 1 channel');
  t.ok(sameBytes(await processor.preprocess(rgbaPng), fromRgb), 'RGBA PNG = RGB');
  t.ok(sameBytes(await processor.preprocess(greyPng), fromGrey), 'grey PNG = raw grey');
});

t.test('EXIF orientation is applied', async (t) => {
  // 40 wide, 20 high; Orientation 6 means "rotate 90 degrees clockwise to display": 20 wide, 40 high.
  const w = 40;
  const h = 20;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.fill(x < 4 && y < 4 ? 255 : 0, (y * w + x) * 3, (y * w + x) * 3 + 3);
  const jpeg = await sharp(Buffer.from(data), { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 100 })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  t.equal((await sharp(jpeg).metadata()).orientation, 6, 'the JPEG carries Orientation 6');
  const out = await new PerceiverImageProcessor({ doCenterCrop: false, doResize: false, doNormalize: false, doRescale: false }).preprocess(jpeg);
  t.same(out.shape, [1, 3, 40, 20], 'displayed size: 40 high, 20 wide');
  // The white top-left corner of the stored image is the top-right corner once rotated clockwise.
  t.ok(out.data[0 * 20 + 18]! > 200, `top-right is white (${out.data[18]})`);
  t.ok(out.data[0]! < 50, `top-left is black (${out.data[0]})`);
});

t.test('bad inputs throw InvalidArgumentError naming the argument', async (t) => {
  const processor = new PerceiverImageProcessor();
  const dir = await tempDir(t);
  const missing = join(dir, 'no-such-image.png');
  await t.rejects(processor.preprocess(missing), InvalidArgumentError, 'missing path');
  const err = await processor.preprocess(missing).catch((e: unknown) => e);
  t.match(err, { argument: 'images', message: /no-such-image\.png/ }, 'the message names the path');
  t.match(err, { message: /ENOENT/ });

  const corruptPath = join(dir, 'corrupt.png');
  await writeFile(corruptPath, 'this is not an image');
  const corrupt = await processor.preprocess(corruptPath).catch((e: unknown) => e);
  t.ok(corrupt instanceof InvalidArgumentError, 'corrupt file');
  t.match(corrupt, { argument: 'images', expected: 'a decodable image file (JPEG, PNG, WebP, ...)', message: /corrupt\.png/ });

  const png = await pngOf(rawFixture);
  const truncated = png.subarray(0, Math.floor(png.length / 2));
  const truncatedError = await processor.preprocess([rawFixture, truncated]).catch((e: unknown) => e);
  t.ok(truncatedError instanceof InvalidArgumentError, 'truncated PNG');
  t.match(truncatedError, { argument: 'images[1]' }, 'names the index in a batch');

  await t.rejects(processor.preprocess(Buffer.alloc(0)), { name: 'InvalidArgumentError', message: /0 bytes/ }, 'empty buffer');
  await t.rejects(processor.preprocess(join(dir)), { name: 'InvalidArgumentError', argument: 'images' }, 'a directory');
  await t.rejects(processor.preprocess([]), { name: 'InvalidArgumentError', argument: 'images' }, 'empty batch');
  await t.rejects(processor.preprocess(42 as unknown as ImageInput), { name: 'InvalidArgumentError', argument: 'images' }, 'a number');
  await t.rejects(processor.preprocess([rawFixture, null as unknown as ImageInput]), { name: 'InvalidArgumentError', argument: 'images[1]' }, 'null in a batch');
  await t.rejects(
    processor.preprocess({ data: new Uint8Array(10), width: 2, height: 2, channels: 3 }),
    { name: 'InvalidArgumentError', argument: 'images.data', message: /12 bytes/ },
    'wrong raw length',
  );
  await t.rejects(
    processor.preprocess({ data: new Uint8Array(8), width: 2, height: 2, channels: 2 as 3 }),
    { name: 'InvalidArgumentError', argument: 'images.channels' },
    'unsupported channel count',
  );
  await t.rejects(
    processor.preprocess({ data: new Uint8Array(0), width: 0, height: 2, channels: 3 }),
    { name: 'InvalidArgumentError', argument: 'images.width' },
    'zero width',
  );
  await t.rejects(
    processor.preprocess({ data: [1, 2, 3] as unknown as Uint8Array, width: 1, height: 1, channels: 3 }),
    { name: 'InvalidArgumentError', argument: 'images.data' },
    'data not a Uint8Array',
  );
  await t.rejects(
    processor.preprocess({ data: new Uint8Array(3), width: 1, height: 1, channels: 3 }),
    { name: 'InvalidArgumentError', message: /non-empty centre crop/ },
    'an image too small to crop',
  );
});

t.test('options are honoured', async (t) => {
  const small = await new PerceiverImageProcessor({ size: 64 }).preprocess(rawFixture);
  t.same(small.shape, [1, 3, 64, 64], 'size 64');

  const rect = await new PerceiverImageProcessor({ size: { height: 32, width: 48 }, cropSize: { height: 64, width: 64 } }).preprocess(rawFixture);
  t.same(rect.shape, [1, 3, 32, 48], 'size {height, width}');

  const asIs = await new PerceiverImageProcessor({ doCenterCrop: false, doResize: false, doRescale: false, doNormalize: false }).preprocess(rawFixture);
  t.same(asIs.shape, [1, 3, H, W], 'no crop, no resize: the image size');
  let exact = 0;
  for (let c = 0; c < 3; c++) for (let p = 0; p < H * W; p++) if (asIs.data[c * H * W + p] === hwc.data[p * 3 + c]) exact++;
  t.equal(exact, H * W * 3, 'no rescale, no normalize: the 8-bit levels, channels first');

  const cropOnly = await new PerceiverImageProcessor({ doResize: false }).preprocess(rawFixture);
  t.same(cropOnly.shape, [1, 3, 245, 245], 'crop only: 224/256 of the shorter side 280');

  const rescaled = await new PerceiverImageProcessor({ doNormalize: false }).preprocess(rawFixture);
  t.ok(rescaled.data.every((v) => v >= 0 && v <= 1), 'rescale only: values in [0, 1]');
  const normalizedOnly = await new PerceiverImageProcessor({ doRescale: false, imageMean: 0, imageStd: 1 }).preprocess(rawFixture);
  t.ok(normalizedOnly.data.every((v) => Number.isInteger(v)), 'normalize with mean 0, std 1 and no rescale: the 8-bit levels');

  const bilinear = await new PerceiverImageProcessor({ resample: 2 }).preprocess(rawFixture);
  t.same(bilinear.shape, [1, 3, 224, 224]);
  const e = errors(bilinear.data, expected.data);
  t.ok(e.maxAbs > 0 && e.relL2 < 0.1, `bilinear is close to but not bicubic (rel L2 ${e.relL2})`);

  t.throws(() => new PerceiverImageProcessor({ size: 0 }), { name: 'InvalidArgumentError', argument: 'options.size' });
  t.throws(() => new PerceiverImageProcessor({ cropSize: { height: 2 } as unknown as number }), { name: 'InvalidArgumentError', argument: 'options.cropSize' });
  t.throws(() => new PerceiverImageProcessor({ imageStd: [1, 0, 1] }), { name: 'InvalidArgumentError', argument: 'options.imageStd' });
  t.throws(() => new PerceiverImageProcessor({ imageMean: [1, 2] as unknown as [number, number, number] }), { name: 'InvalidArgumentError', argument: 'options.imageMean' });
  t.throws(() => new PerceiverImageProcessor({ resample: 0 as 3 }), { name: 'InvalidArgumentError', argument: 'options.resample' });
  t.throws(() => new PerceiverImageProcessor({ doNormalize: 'yes' as unknown as boolean }), { name: 'InvalidArgumentError', argument: 'options.doNormalize' });
});

t.test('a crop larger than the image pads with zeros as transformers does', async (t) => {
  // 10 wide, 6 high, crop = 20/10 * 6 = 12 square: 1 column of padding left, 1 right; 3 rows above, 3 below.
  const w = 10;
  const h = 6;
  const data = new Uint8Array(w * h).fill(200);
  data[0] = 100; // top-left pixel of the image
  const out = await new PerceiverImageProcessor({ cropSize: 10, size: 20, doResize: false, doRescale: false, doNormalize: false }).preprocess({ data, width: w, height: h, channels: 1 });
  t.same(out.shape, [1, 3, 12, 12]);
  const at = (y: number, x: number): number => out.data[y * 12 + x]!;
  t.equal(at(3, 1), 100, 'the image starts at row 3, column 1');
  t.equal(at(2, 1), 0, 'zero above');
  t.equal(at(3, 0), 0, 'zero to the left');
  t.equal(at(8, 10), 200, 'last image pixel at row 8, column 10');
  t.equal(at(9, 10), 0, 'zero below');
  t.equal(at(8, 11), 0, 'zero to the right');

  // 9 wide: an odd excess of 3 columns is 1 before, 2 after.
  const odd = await new PerceiverImageProcessor({ cropSize: 9, size: 18, doResize: false, doRescale: false, doNormalize: false }).preprocess({ data: new Uint8Array(9 * 6).fill(7), width: 9, height: 6, channels: 1 });
  t.same(odd.shape, [1, 3, 12, 12]);
  const row = Array.from(odd.data.subarray(5 * 12, 6 * 12));
  t.same(row, [0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0], 'odd padding: floor before, rest after');
});

t.test('fromPretrained reads preprocessor_config.json', async (t) => {
  const dir = await tempDir(t);
  const defaults = await PerceiverImageProcessor.fromPretrained(dir);
  t.same(defaults.size, { height: 224, width: 224 }, 'no file: defaults');
  t.same(defaults.cropSize, { height: 256, width: 256 });
  t.same(defaults.imageMean, MEAN);

  const settings = JSON.parse(fixture.metadata.settings!) as Record<string, unknown>;
  const fromFixture = join(dir, 'fixture');
  await mkdir(fromFixture);
  await writeFile(join(fromFixture, 'preprocessor_config.json'), JSON.stringify(settings));
  const p = await PerceiverImageProcessor.fromPretrained(fromFixture);
  t.ok(sameBytes(await p.preprocess(rawFixture), expected), 'the fixture settings reproduce pixel_values');

  const custom = join(dir, 'custom');
  await mkdir(custom);
  // The old feature-extractor format the hub checkpoints use: sizes as plain integers.
  await writeFile(
    join(custom, 'preprocessor_config.json'),
    JSON.stringify({ crop_size: 128, size: 64, do_center_crop: true, do_normalize: true, image_mean: 0.5, image_std: [0.5, 0.25, 0.5], resample: 3, feature_extractor_type: 'PerceiverFeatureExtractor' }),
  );
  const c = await PerceiverImageProcessor.fromPretrained(custom);
  t.same(c.size, { height: 64, width: 64 });
  t.same(c.cropSize, { height: 128, width: 128 });
  t.same(c.imageMean, [0.5, 0.5, 0.5]);
  t.same(c.imageStd, [0.5, 0.25, 0.5]);
  t.same((await c.preprocess(rawFixture)).shape, [1, 3, 64, 64]);

  const bad = join(dir, 'bad');
  await mkdir(bad);
  await writeFile(join(bad, 'preprocessor_config.json'), '{not json');
  await t.rejects(PerceiverImageProcessor.fromPretrained(bad), ConfigError, 'invalid JSON');
  await writeFile(join(bad, 'preprocessor_config.json'), JSON.stringify({ size: { height: -1, width: 3 } }));
  await t.rejects(PerceiverImageProcessor.fromPretrained(bad), { name: 'ConfigError', message: /size must be/ }, 'invalid size');
  await t.rejects(PerceiverImageProcessor.fromPretrained(join(dir, 'missing')), { name: 'InvalidArgumentError', argument: 'dir' }, 'missing folder');
});

t.test('sharp is loaded only to decode files', async (t) => {
  // A stand-in for a missing or broken sharp: not a function.
  const { PerceiverImageProcessor: Mocked } = await t.mockImport<typeof import('../lib/image_processor.js')>('../lib/image_processor.js', {
    sharp: { default: undefined },
  });
  const processor = new Mocked();
  const fromRaw = await processor.preprocess(rawFixture);
  t.ok(sameBytes(fromRaw, expected), 'raw pixels need no sharp');
  // The mocked module graph has its own copy of errors.js, so match by name rather than class.
  await t.rejects(processor.preprocess(await pngOf(rawFixture)), { name: BackendUnavailableError.name }, 'encoded bytes need sharp');
  await t.rejects(processor.preprocess(await pngOf(rawFixture)), { message: /npm install sharp/ }, 'the message says how to fix it');
});

t.test('constructor sizes are bounded as preprocessor_config.json is: no option makes one image allocate gigabytes', async (t) => {
  t.throws(() => new PerceiverImageProcessor({ size: 30000 }), { name: 'InvalidArgumentError', argument: 'options.size' }, 'size 30000');
  t.throws(() => new PerceiverImageProcessor({ cropSize: { height: 5000, width: 8 } }), { name: 'InvalidArgumentError', argument: 'options.cropSize' }, 'crop 5000');
  t.throws(() => new PerceiverImageProcessor({ cropSize: 1, size: 224 }), { name: 'InvalidArgumentError', argument: 'options.size.height' }, 'a 1-pixel crop resized to 224');
  t.doesNotThrow(() => new PerceiverImageProcessor({ cropSize: 1, size: 224, doCenterCrop: false }), 'without a crop, size alone is bounded');
  t.equal(new PerceiverImageProcessor({ size: 4096, cropSize: 4096 }).size.height, 4096, 'the largest side allowed');
});
