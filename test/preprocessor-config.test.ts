/**
 * preprocessor_config.json is validated and bounded like config.json: hostile sizes, crop sizes,
 * means, stds, resample codes and types are a ConfigError naming the file and the field, raised
 * fast and before any image is touched.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../lib/errors.js';
import { PerceiverImageProcessor } from '../lib/image_processor.js';
import { MAX_CROP_ZOOM, MAX_IMAGE_SIDE, parsePreprocessorConfig } from '../lib/preprocessor_config.js';
import { MAX_JSON_FILE_BYTES } from '../lib/io/read_json.js';
import { tempDir } from './helpers/fixtures.js';

const image = { data: new Uint8Array(300 * 280 * 3).fill(100), width: 300, height: 280, channels: 3 as const };

t.test('hostile fields are a ConfigError naming the file and the field, fast and without large allocations', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'preprocessor_config.json');
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['crop_size 1 (a crop box 224 times the image)', { crop_size: 1 }, /crop_size\.height must be at least size\.height \/ 2 \(112\), got 1/],
    ['crop_size 1 as {height, width}', { crop_size: { height: 256, width: 1 } }, /crop_size\.width must be at least size\.width \/ 2/],
    ['size 30000 (10.8 GB per image)', { size: 30000 }, /size must be a positive integer up to 4096 .*got number 30000/],
    ['size {height: 30000}', { size: { height: 30000, width: 224 } }, /size must be a positive integer up to 4096 .*got size\.height = number 30000/],
    ['crop_size 30000', { crop_size: 30000 }, /crop_size must be a positive integer up to 4096/],
    ['negative size', { size: -224 }, /size must be .*got number -224/],
    ['zero size', { size: 0 }, /size must be .*got number 0/],
    ['fractional size', { size: 224.5 }, /size must be .*got number 224\.5/],
    ['size as a string', { size: '224' }, /size must be .*got "224"/],
    ['size {shortest_edge} (another processor\'s format)', { size: { shortest_edge: 224 } }, /size must be .*keys \["shortest_edge"\]/],
    ['size with an extra key', { size: { height: 224, width: 224, depth: 3 } }, /size must be .*keys \["height","width","depth"\]/],
    ['NaN-like mean (JSON has no NaN: a string)', { image_mean: ['NaN', 0.5, 0.5] }, /image_mean\[0\] must be a finite float32 number, got "NaN"/],
    ['mean beyond float32', { image_mean: [1e39, 0.5, 0.5] }, /image_mean\[0\] must be a finite float32 number, got number 1e\+39/],
    ['mean of 4 channels', { image_mean: [0.5, 0.5, 0.5, 0.5] }, /image_mean must be a number or an array of 3 numbers.*array of length 4/],
    ['std of 0', { image_std: [0.5, 0, 0.5] }, /image_std\[1\] must be a finite, non-zero float32 number, got number 0/],
    ['std that is 0 in float32', { image_std: 1e-50 }, /image_std must be a finite, non-zero float32 number/],
    ['std as an object', { image_std: { r: 1 } }, /image_std must be a number or an array of 3 numbers/],
    ['resample 0 (nearest, not supported)', { resample: 0 }, /resample must be 3 \(bicubic\), 2 \(bilinear\) or 1/],
    ['resample as a string', { resample: 'bicubic' }, /resample must be .*got "bicubic"/],
    ['rescale_factor 0', { rescale_factor: 0 }, /rescale_factor must be a number in \(0, 1\]/],
    ['rescale_factor negative', { rescale_factor: -1 / 255 }, /rescale_factor must be a number in \(0, 1\]/],
    ['rescale_factor huge', { rescale_factor: 1e300 }, /rescale_factor must be a number in \(0, 1\]/],
    ['do_resize as a string', { do_resize: 'yes' }, /do_resize must be true or false, got "yes"/],
    ['do_center_crop as 1', { do_center_crop: 1 }, /do_center_crop must be true or false, got number 1/],
  ];
  for (const [what, json, message] of cases) {
    await writeFile(file, JSON.stringify(json));
    const before = process.memoryUsage();
    const start = performance.now();
    let error: unknown;
    try {
      await PerceiverImageProcessor.fromPretrained(dir);
    } catch (err) {
      error = err;
    }
    const ms = performance.now() - start;
    const grown = process.memoryUsage().arrayBuffers - before.arrayBuffers;
    t.ok(error instanceof ConfigError, `${what}: ConfigError (got ${(error as Error)?.name}: ${(error as Error)?.message})`);
    t.match((error as Error)?.message, message, `${what}: names the field`);
    t.ok((error as Error)?.message.startsWith(`${file}: `), `${what}: names the file`);
    t.ok(ms < 200, `${what}: ${ms.toFixed(1)} ms`);
    t.ok(grown < 16 * 2 ** 20, `${what}: ${(grown / 2 ** 20).toFixed(1)} MB of buffers`);
  }
});

t.test('the bounds themselves are accepted, and what a config does not use may exceed the zoom', async (t) => {
  const max = parsePreprocessorConfig({ size: MAX_IMAGE_SIDE, crop_size: MAX_IMAGE_SIDE / MAX_CROP_ZOOM });
  t.same(max.size, { height: MAX_IMAGE_SIDE, width: MAX_IMAGE_SIDE });
  t.same(max.cropSize, { height: MAX_IMAGE_SIDE / MAX_CROP_ZOOM, width: MAX_IMAGE_SIDE / MAX_CROP_ZOOM });
  // Without the centre crop, crop_size is never used: its type is checked, the zoom is not.
  t.same(parsePreprocessorConfig({ do_center_crop: false, crop_size: 1 }).cropSize, { height: 1, width: 1 });
  // nulls and unknown keys mean defaults, as transformers reads them.
  t.same(parsePreprocessorConfig({ size: null, image_processor_type: 'PerceiverImageProcessor', processor_class: 'x' }), {});
  // A checkpoint's real config (deepmind/vision-perceiver-*).
  const real = parsePreprocessorConfig({
    crop_size: 256, do_center_crop: true, do_normalize: true, do_resize: true, feature_extractor_type: 'PerceiverFeatureExtractor',
    image_mean: [0.485, 0.456, 0.406], image_std: [0.229, 0.224, 0.225], resample: 3, size: 224,
  });
  const processor = new PerceiverImageProcessor(real);
  t.same((await processor.preprocess(image)).shape, [1, 3, 224, 224]);
});

t.test('settings files that are huge or not regular files are refused unread', async (t) => {
  const dir = await tempDir(t);
  const huge = join(dir, 'huge');
  await mkdir(huge);
  // A sparse file: its size is what is checked, nothing is read.
  const file = join(huge, 'preprocessor_config.json');
  await writeFile(file, '{}');
  execFileSync('truncate', ['-s', String(MAX_JSON_FILE_BYTES + 1), file]);
  const start = performance.now();
  await t.rejects(PerceiverImageProcessor.fromPretrained(huge), { name: 'ConfigError', message: /is 67108865 bytes, more than the 67108864/ });
  t.ok(performance.now() - start < 500, 'refused at once');

  const fifoDir = join(dir, 'fifo');
  await mkdir(fifoDir);
  execFileSync('mkfifo', [join(fifoDir, 'preprocessor_config.json')]);
  // Without O_NONBLOCK, opening a FIFO waits for a writer forever.
  await t.rejects(PerceiverImageProcessor.fromPretrained(fifoDir), { name: 'ConfigError', message: /not a regular file/ });

  const folderDir = join(dir, 'folder');
  await mkdir(join(folderDir, 'preprocessor_config.json'), { recursive: true });
  await t.rejects(PerceiverImageProcessor.fromPretrained(folderDir), { name: 'ConfigError', message: /not a regular file/ });
});
