/** image-classification, feature-extraction of media files, and video-autoencoding, against the manual calls; outputs read back. */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { AutoModel, createMediaInputBuilder, decodeAudio, DisposedError, InvalidArgumentError, PerceiverImageProcessor, pipeline, writeAutoencoding, type PerceiverEncoding, type Tensor } from '../lib/index.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { writeGradientImage, writeVideo as makeVideo } from './helpers/media.js';

const run = promisify(execFile);

t.test('image-classification from a path, bytes or raw pixels equals the processor and forward by hand', async (t) => {
  const dir = await tempDir(t);
  const folder = fixtureDir('image-learned');
  const classify = await pipeline('image-classification', folder);
  t.teardown(() => classify.dispose());
  const model = await AutoModel.fromPretrained(folder);
  t.teardown(() => model.dispose());
  const file = join(dir, 'g.png');
  await writeGradientImage(file, 30, 20);
  // The fixture has no preprocessor_config.json: the batch job's processor at config.image_size (8).
  const processor = new PerceiverImageProcessor({ size: 8, cropSize: Math.round((8 * 256) / 224) });
  const logits = (await model.forward({ inputs: await processor.preprocess(file) })).logits as Tensor<'float32'>;
  const max = Math.max(...logits.data);
  const e = Array.from(logits.data, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  const order = e.map((v, i) => [v / sum, i] as const).sort((a, b) => b[0] - a[0]);
  const fromPath = await classify(file, { top_k: 6 });
  t.same(fromPath.map((r) => (r as { label: string }).label), order.map(([, i]) => `LABEL_${i}`), 'all six labels in order');
  t.ok(Math.abs((fromPath[0] as { score: number }).score - order[0]![0]) < 1e-12, 'top score');
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  const fromRaw = await classify({ data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 }, { top_k: 6 });
  const fromBytes = await classify(await readFile(file), { top_k: 6 });
  t.same(fromRaw, fromPath, 'raw pixels give the same');
  t.same(fromBytes, fromPath, 'encoded bytes give the same');
  const both = await classify([file, file]);
  t.equal(both.length, 2, 'a list gives one result per image');
  for (const row of both as { label: string; score: number }[][]) {
    t.equal(row[0]!.label, (fromPath[0] as { label: string }).label, 'batched: same top label');
    t.ok(Math.abs(row[0]!.score - (fromPath[0] as { score: number }).score) < 1e-5, 'batched: same score to float rounding');
  }
  await t.rejects(classify(join(dir, 'missing.png')), InvalidArgumentError);
  await t.rejects(classify([]), InvalidArgumentError);
});

t.test('image-classification follows the checkpoint\'s preprocessor_config.json', async (t) => {
  const dir = await tempDir(t);
  const folder = join(dir, 'ckpt');
  const { mkdir, symlink, writeFile } = await import('node:fs/promises');
  await mkdir(folder);
  for (const f of ['config.json', 'model.safetensors']) await symlink(join(fixtureDir('image-learned'), f), join(folder, f));
  await writeFile(join(folder, 'preprocessor_config.json'), JSON.stringify({ do_center_crop: false, size: 8, do_resize: true, resample: 2, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] }));
  const file = join(dir, 'g.png');
  await writeGradientImage(file, 30, 20);
  await using classify = await pipeline('image-classification', folder);
  const model = await AutoModel.fromPretrained(folder);
  t.teardown(() => model.dispose());
  const own = await PerceiverImageProcessor.fromPretrained(folder);
  const logits = (await model.forward({ inputs: await own.preprocess(file) })).logits as Tensor<'float32'>;
  const best = logits.data.indexOf(Math.max(...logits.data));
  const got = (await classify(file, { top_k: 6 })) as { label: string; score: number }[];
  t.equal(got[0]!.label, `LABEL_${best}`, 'top label from the checkpoint\'s own preprocessing');
  const max = Math.max(...logits.data);
  const sum = Array.from(logits.data, (v) => Math.exp(v - max)).reduce((a, b) => a + b, 0);
  t.ok(Math.abs(got[0]!.score - Math.exp(logits.data[best]! - max) / sum) < 1e-12, 'its score');
  // The default processor (crop, bicubic, ImageNet statistics) gives other scores for the same file.
  await using withDefaults = await pipeline('image-classification', fixtureDir('image-learned'));
  const defaults = (await withDefaults(file, { top_k: 6 })) as { label: string; score: number }[];
  t.not(defaults.find((r) => r.label === got[0]!.label)!.score, got[0]!.score, 'preprocessing differs from the default');
});

t.test('feature-extraction of image and video files as the batch job reads them', async (t) => {
  const dir = await tempDir(t);
  const folder = fixtureDir('image-fourier');
  const extract = await pipeline('feature-extraction', folder);
  t.teardown(() => extract.dispose());
  const model = await AutoModel.fromPretrained(folder);
  t.teardown(() => model.dispose());
  const image = join(dir, 'g.png');
  await writeGradientImage(image, 40, 30);
  const video = join(dir, 'v.mp4');
  await makeVideo(video, { colours: ['red', 'blue'], secondsEach: 0.4, width: 32, height: 24, fps: 10 });
  const builder = createMediaInputBuilder(model);
  for (const path of [image, video]) {
    const manual = await model.embed(builder.collate([await builder.load(path)]).inputs);
    const got = await extract(path);
    t.same([...got.data], [...manual.data], `${path.slice(-5)}: the batch job's embedding exactly`);
  }
  const two = await extract([image, video]);
  t.same(two.shape, [2, model.config.d_latents]);
});

t.test('video-autoencoding: encode once, decode in chunks, equal to the manual calls; files read back', async (t) => {
  const dir = await tempDir(t);
  const folder = fixtureDir('multimodal-autoencoding');
  const video = join(dir, 'clip.mp4');
  await makeVideo(video, { colours: ['red', 'green', 'blue'], secondsEach: 0.2, width: 32, height: 32, fps: 25, audio: { expression: '0.5*sin(2*PI*440*t)', sampleRate: 8000 } });
  const autoencode = await pipeline('video-autoencoding', folder);
  t.teardown(() => autoencode.dispose());
  const model = await AutoModel.fromPretrained(folder);
  t.teardown(() => model.dispose());
  const c = model.config; // 2 frames of 8x8, 32 audio samples per frame, 4 per patch, 9 labels
  // Count the model's calls: one encode, one decode per chunk.
  const calls = { encode: 0, decode: 0 };
  const m = autoencode.model;
  const [encode, decode] = [m.encode.bind(m), m.decode.bind(m)];
  (m as { encode: unknown }).encode = (...args: Parameters<typeof m.encode>) => (calls.encode++, encode(...args));
  (m as { decode: unknown }).decode = (...args: Parameters<typeof m.decode>) => (calls.decode++, decode(...args));
  const result = await autoencode(video, { chunks: 3, top_k: 9 });
  t.same(calls, { encode: 1, decode: 3 }, 'encoded once, decoded per chunk');
  t.equal(result.frames.length, 2);
  t.ok(result.frames.every((f) => f.width === 8 && f.height === 8 && f.data.length === 8 * 8 * 3), 'frames at output_shape');
  t.equal(result.audio.samples.length, c.num_frames * c.audio_samples_per_frame);
  t.equal(result.audio.sampleRate, 25 * c.audio_samples_per_frame);
  t.equal(result.labels.length, 9);
  t.ok(result.labels.every((l, i) => i === 0 || l.score <= result.labels[i - 1]!.score), 'labels by score');
  t.ok(Math.abs(result.labels.reduce((s, l) => s + l.score, 0) - 1) < 1e-9, 'label probabilities sum to one');

  // By hand: the batch job's inputs, one encode, the same three chunks of points.
  const item = await createMediaInputBuilder(model).load(video);
  const inputs = item.inputs as Record<string, Tensor<'float32'>>;
  const encoding: PerceiverEncoding = await model.encode({ inputs });
  t.teardown(() => encoding.dispose());
  const imagePoints = 2 * 8 * 8;
  const audioPoints = 16;
  const image: number[] = [];
  const audio: number[] = [];
  for (const [i0, i1, a0, a1] of [[0, 42, 0, 5], [42, 85, 5, 10], [85, 128, 10, 16]]) {
    const out = await model.decode(encoding, {
      subsampledOutputPoints: { image: Array.from({ length: i1! - i0! }, (_, k) => i0! + k), audio: Array.from({ length: a1! - a0! }, (_, k) => a0! + k), label: null },
    });
    const l = out.logits as Record<string, Tensor<'float32'>>;
    image.push(...l.image!.data);
    audio.push(...l.audio!.data);
  }
  t.equal(image.length, imagePoints * 3);
  t.equal(audio.length, audioPoints * 4);
  const toByte = (v: number) => Math.min(255, Math.max(0, Math.round(v * 255)));
  t.same([...result.frames[0]!.data, ...result.frames[1]!.data], image.map(toByte), 'frames: the decoded points as 8-bit RGB');
  t.same([...result.audio.samples], audio.map(Math.fround), 'audio: the decoded patches in order');
  // One full forward gives the same reconstruction (to float rounding).
  const full = (await model.forward({ inputs })).logits as Record<string, Tensor<'float32'>>;
  let worst = 0;
  full.image!.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - image[i]!))));
  t.ok(worst < 1e-4, `chunked decoding matches a full forward (worst ${worst.toExponential(1)})`);
  // The original frames: the clip is taken from the middle of the video, which is green.
  const o = result.original.frames[0]!.data;
  t.ok(o[0]! < 60 && o[1]! > 100 && o[2]! < 60, 'original first frame is the middle (green) segment');

  const files = await writeAutoencoding(join(dir, 'out'), result);
  t.equal(files.frames.length, 2);
  const meta = await sharp(files.frames[1]!).raw().toBuffer({ resolveWithObject: true });
  t.same([meta.info.width, meta.info.height], [8, 8]);
  t.same([...meta.data.subarray(0, 3)], [...result.frames[1]!.data.subarray(0, 3)], 'frame PNG pixel (0, 0)');
  // comparison.png: 2 frames side by side, enlarged 16x (to 128 px), original row over reconstruction.
  const cmp = await sharp(files.comparison).raw().toBuffer({ resolveWithObject: true });
  t.same([cmp.info.width, cmp.info.height], [2 * 128, 2 * 128]);
  const at = (x: number, y: number) => [...cmp.data.subarray((y * 256 + x) * 3, (y * 256 + x) * 3 + 3)];
  t.same(at(5, 5), [...o.subarray(0, 3)], 'top-left: original frame 0, pixel (0, 0)');
  const r1 = result.frames[1]!.data;
  t.same(at(128 + 16 * 7 + 3, 128 + 16 * 7 + 3), [...r1.subarray((7 * 8 + 7) * 3, (7 * 8 + 7) * 3 + 3)], 'bottom-right: reconstruction frame 1, pixel (7, 7)');
  const wav = await decodeAudio(files.audio);
  t.equal(wav.sampleRate, result.audio.sampleRate);
  t.equal(wav.samples.length, result.audio.samples.length, 'WAV holds every sample');
  const clip = (v: number) => Math.max(-1, Math.min(1, v));
  t.ok(Array.from(wav.samples).every((v, i) => Math.abs(v - clip(result.audio.samples[i]!)) < 1e-4), 'WAV samples (16-bit)');
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-count_frames', '-show_entries', 'stream=width,height,nb_read_frames', '-of', 'json', files.video!]);
  const stream = JSON.parse(stdout).streams[0];
  t.same([stream.width, stream.height, Number(stream.nb_read_frames)], [8, 8, 2], 'ffprobe: 8x8, 2 frames');
  t.same(JSON.parse(await readFile(files.labels, 'utf8')), result.labels);

  await t.rejects(autoencode(video, { chunks: 0 }), InvalidArgumentError);
  const controller = new AbortController();
  const running = autoencode(video, { chunks: 8, signal: controller.signal });
  setImmediate(() => controller.abort());
  await t.rejects(running, { name: 'AbortError' }, 'abort between chunks');
  const inFlight = autoencode(video);
  await autoencode.dispose();
  await t.rejects(inFlight, DisposedError);
});
