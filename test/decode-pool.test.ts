/**
 * Media decoding in worker threads (lib/media/decode_pool.ts) and the batch job's read-ahead
 * (lib/batch/job.ts): the items equal the calling thread's bit for bit, errors keep their class and
 * message, a worker that dies is replaced (its item retried once, then failed alone), and the job
 * reads ahead no more than its bound.
 */
import t, { type Test } from 'tap';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AutoModel, InvalidArgumentError, MediaDecodeError, readEmbeddings, runEmbedJob, type PerceiverModel } from '../lib/index.js';
import { DecodePool } from '../lib/media/decode_pool.js';
import { createMediaInputBuilder, mediaInputSpec, type PreparedItem } from '../lib/media/model_inputs.js';
import { PerceiverImageProcessor } from '../lib/image_processor.js';
import { Tensor } from '../lib/tensor.js';
import { runCliCommand } from './helpers/child.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { writeGradientImage, writeSolidImage, writeTone, writeVideo } from './helpers/media.js';

/** Every tensor of an item: its name, dtype, shape and bytes. */
function tensorsOf(item: PreparedItem): [string, Tensor][] {
  const named: [string, Tensor][] = item.inputs instanceof Tensor ? [['inputs', item.inputs]] : Object.entries(item.inputs).map(([k, v]) => [`inputs.${k}`, v]);
  if (item.attentionMask) named.push(['attentionMask', item.attentionMask]);
  return named;
}

function bytesOf(tensor: Tensor): Buffer {
  return Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
}

/** Asserts two items are the same: kind, path, and every tensor's dtype, shape and bytes. */
function sameItem(t: Test, actual: PreparedItem, expected: PreparedItem, what: string): void {
  t.equal(actual.kind, expected.kind, `${what}: kind`);
  t.equal(actual.path, expected.path, `${what}: path`);
  const a = tensorsOf(actual);
  const e = tensorsOf(expected);
  t.same(a.map(([n]) => n), e.map(([n]) => n), `${what}: the same tensors`);
  for (const [i, [name, tensor]] of e.entries()) {
    const other = a[i]![1];
    t.ok(other instanceof Tensor, `${what}: ${name} is a Tensor`);
    t.equal(other.dtype, tensor.dtype, `${what}: ${name} dtype`);
    t.same(other.shape, tensor.shape, `${what}: ${name} shape`);
    t.ok(bytesOf(other).equals(bytesOf(tensor)), `${what}: ${name} bit for bit (${tensor.size} values)`);
  }
}

/** The error a promise rejects with (fails the test if it resolves). */
async function errorOf(t: Test, promise: Promise<unknown>, what: string): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  t.fail(`${what}: expected a rejection`);
  return new Error('resolved');
}

async function loadModel(t: Test, name: string): Promise<PerceiverModel<any>> {
  const model = await AutoModel.fromPretrained(fixtureDir(name));
  t.teardown(() => model.dispose());
  return model;
}

t.test('a pool decodes every kind as the calling thread does, bit for bit, from files and from bytes', async (t) => {
  const dir = await tempDir(t);
  const files = {
    png: join(dir, 'gradient.png'),
    jpeg: join(dir, 'solid.jpg'),
    // Its crop is larger than 256x256: on the main thread it is resized in the image worker, in a decoding thread inline.
    large: join(dir, 'large.png'),
    wav: join(dir, 'tone.wav'),
    mp4: join(dir, 'clip.mp4'),
    text: join(dir, 'note.txt'),
  };
  await writeGradientImage(files.png, 40, 30);
  await writeSolidImage(files.jpeg, 17, 23, [200, 40, 90]);
  await writeGradientImage(files.large, 600, 500);
  await writeTone(files.wav, { channels: ['0.5*sin(2*PI*440*t)', '0.3*sin(2*PI*660*t)'], sampleRate: 8000, seconds: 0.5 });
  await writeVideo(files.mp4, { colours: ['red', 'blue'], secondsEach: 0.2, width: 32, height: 24, fps: 25, audio: { expression: '0.4*sin(2*PI*300*t)', sampleRate: 8000 } });
  await writeFile(files.text, 'Perceiver IO reads bytes: é, 漢字, and emoji 🙂.\n'.repeat(3));

  const pool = new DecodePool(2);
  t.teardown(() => pool.close());
  const cases: [string, string[]][] = [
    ['image-learned', [files.png, files.jpeg, files.large, files.mp4]],
    ['multimodal-autoencoding', [files.png, files.wav, files.mp4]],
    ['text-mlm', [files.text]],
  ];
  for (const [name, paths] of cases) {
    const model = await loadModel(t, name);
    const local = createMediaInputBuilder(model);
    const pooled = pool.builder(mediaInputSpec(model));
    t.same(pooled.accepts, local.accepts, `${name}: the same kinds accepted`);
    for (const path of paths) {
      const expected = await local.load(path);
      sameItem(t, await pooled.load(path), expected, `${name} ${path}`);
      // Bytes in memory (a remote object): named by its URL, decoded as the file is.
      const bytes = await readFile(path);
      const url = `s3://bucket/${path.split('/').pop()}`;
      const fromBytes = await pooled.loadBytes(bytes, url);
      sameItem(t, fromBytes, { ...expected, path: url }, `${name} ${path} from bytes in a worker`);
      sameItem(t, await local.loadBytes(bytes, url), { ...expected, path: url }, `${name} ${path} from bytes on this thread`);
      t.equal(bytes.byteLength > 0 && bytes.buffer.byteLength > 0, true, 'the caller\'s bytes are not detached');
    }
  }
});

t.test('a corrupt or hostile file fails alone, with the same error class and message as on the calling thread', async (t) => {
  const dir = await tempDir(t);
  const model = await loadModel(t, 'image-learned');
  const text = await loadModel(t, 'text-mlm');
  const good = join(dir, 'good.png');
  await writeGradientImage(good, 20, 20);
  const truncated = join(dir, 'truncated.png');
  const whole = await readFile(good);
  await writeFile(truncated, whole.subarray(0, whole.length >> 1));
  const garbage = join(dir, 'garbage.png');
  await writeFile(garbage, Buffer.from('this is not a PNG at all, only text pretending'));
  const empty = join(dir, 'empty.jpg');
  await writeFile(empty, '');
  const folder = join(dir, 'folder.png');
  await mkdir(folder);
  const huge = join(dir, 'huge.png');
  // A header declaring 100000 x 100000 pixels: refused before decoding.
  const header = Buffer.from(whole);
  header.writeUInt32BE(100_000, 16);
  header.writeUInt32BE(100_000, 20);
  await writeFile(huge, header);
  const notUtf8 = join(dir, 'latin1.txt');
  await writeFile(notUtf8, Buffer.from([0x66, 0xff, 0xfe, 0x80, 0x41]));
  const wrongKind = join(dir, 'note.txt');
  await writeFile(wrongKind, 'text for an image model');

  const pool = new DecodePool(1);
  t.teardown(() => pool.close());
  const cases: [PerceiverModel<any>, string][] = [
    [model, truncated],
    [model, garbage],
    [model, empty],
    [model, folder],
    [model, huge],
    [model, join(dir, 'missing.png')],
    [model, wrongKind],
    [text, notUtf8],
  ];
  for (const [m, path] of cases) {
    const local = await errorOf(t, createMediaInputBuilder(m).load(path), path);
    const pooled = await errorOf(t, pool.builder(mediaInputSpec(m)).load(path), path);
    t.ok(local instanceof MediaDecodeError || local instanceof InvalidArgumentError, `${path}: an item error on the calling thread (${local.message})`);
    t.equal(pooled.constructor, local.constructor, `${path}: the same class from a worker (${pooled.name})`);
    t.equal(pooled.message, local.message, `${path}: the same message`);
    if (local instanceof MediaDecodeError) t.equal((pooled as MediaDecodeError).file, local.file, `${path}: the same file`);
  }
  // The pool still decodes after all of them.
  sameItem(t, await pool.builder(mediaInputSpec(model)).load(good), await createMediaInputBuilder(model).load(good), 'a good file after the bad ones');
});

t.test('a worker that dies mid-item is replaced: the item is retried once, then fails alone; nothing hangs', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir(t);
  const model = await loadModel(t, 'image-learned');
  const paths = ['a.png', 'die-once.png', 'die-always.png', 'b.png'].map((name) => join(dir, name));
  for (const [i, path] of paths.entries()) await writeGradientImage(path, 12 + i, 10 + i);
  const pool = new DecodePool(1, new URL('./helpers/dying_decode_worker.ts', import.meta.url));
  t.teardown(() => pool.close());
  const builder = pool.builder(mediaInputSpec(model));
  const local = createMediaInputBuilder(model);
  // All at once on one thread, so the deaths fall between the other items. die-once goes as bytes:
  // its retry must send a fresh copy (the first went to the dead thread).
  const bytes = await readFile(paths[1]!);
  const settled = await Promise.allSettled(paths.map((path, i) => (i === 1 ? builder.loadBytes(bytes, path) : builder.load(path))));
  for (const i of [0, 1, 3]) {
    const s = settled[i]!;
    t.equal(s.status, 'fulfilled', `${paths[i]} decoded`);
    if (s.status === 'fulfilled') sameItem(t, s.value, await local.load(paths[i]!), `${paths[i]} beside the deaths`);
  }
  t.equal(bytes.byteLength > 0 && bytes.buffer.byteLength > 0, true, "the caller's bytes are not detached");
  const dead = settled[2]!;
  t.equal(dead.status, 'rejected', 'the item that kills its worker every time fails');
  if (dead.status === 'rejected') {
    t.ok(dead.reason instanceof MediaDecodeError, 'as a MediaDecodeError: a failure of that item alone');
    t.match(dead.reason.message, /die-always\.png: the decoding worker thread died on it twice \(a worker thread failed: exited with code 7\)/);
  }
  await pool.close();
  await t.rejects(builder.load(paths[0]!), { code: 'ERR_PERCEIVER_POOL_CLOSED' }, 'a closed pool refuses at once');
});

t.test('the job: equal rows decoded in threads or on the main thread, every item once in order, failures counted, read-ahead bounded', async (t) => {
  const dir = await tempDir(t);
  const model = await loadModel(t, 'image-learned');
  const items: { id: string; path: string }[] = [];
  for (let i = 0; i < 22; i++) {
    const path = join(dir, `img${String(i).padStart(2, '0')}.png`);
    if (i === 9) await writeFile(path, 'corrupt');
    else await writeGradientImage(path, 10 + i, 9 + ((i * 7) % 13));
    items.push({ id: `id-${i}`, path });
  }
  const run = async (decodeWorkers: number, readAhead?: number) => {
    const outDir = join(dir, `out-${decodeWorkers}-${readAhead ?? 'default'}`);
    const result = await runEmbedJob({ models: [model], task: 'embed', items, outDir, batchSize: 4, partSize: 0, decodeWorkers, readAhead });
    return { result, rows: await readEmbeddings(outDir) };
  };
  const inThread = await run(0);
  const pooled = await run(2);
  t.equal(inThread.result.decodeWorkers, 0);
  t.equal(pooled.result.decodeWorkers, 2);
  for (const { result, rows } of [inThread, pooled]) {
    t.equal(result.written, 21);
    t.same(result.failed.map((f) => f.id), ['id-9'], 'the corrupt file fails alone');
    t.match(result.failed[0]!.reason, /img09\.png/);
    t.equal(rows.length, 21, 'every other item written');
    t.equal(new Set(rows.map((r) => r.id)).size, 21, 'once each');
  }
  t.same(pooled.result.failed.map((f) => f.reason), inThread.result.failed.map((f) => f.reason), 'the same failure message');
  const byId = (rows: typeof pooled.rows) => new Map(rows.map((r) => [r.id, r]));
  const expected = byId(inThread.rows);
  for (const row of pooled.rows) {
    const other = expected.get(row.id)!;
    t.equal(row.path, other.path, `${row.id}: path`);
    t.ok(Buffer.from(row.embedding.buffer, row.embedding.byteOffset, row.embedding.byteLength).equals(Buffer.from(other.embedding.buffer, other.embedding.byteOffset, other.embedding.byteLength)), `${row.id}: embedding bit for bit`);
  }
  // Read-ahead: two batches of 4 are read while one computes, never more.
  t.ok(pooled.result.peakDecoding > 4 && pooled.result.peakDecoding <= 8, `at most readAhead x batchSize items decoding at once (${pooled.result.peakDecoding})`);
  const one = await run(1, 1);
  t.ok(one.result.peakDecoding >= 1 && one.result.peakDecoding <= 4, `readAhead 1: at most one batch decoding (${one.result.peakDecoding})`);
  t.equal(one.rows.length, 21);
});

t.test("an image processor's options() make an equal processor, as a worker builds it", async (t) => {
  const given = new PerceiverImageProcessor({ size: { height: 12, width: 10 }, cropSize: 14, resample: 2, rescaleFactor: 1 / 128, imageMean: [0.1, 0.2, 0.3], imageStd: 0.5, doCenterCrop: true });
  const copy = new PerceiverImageProcessor(given.options());
  t.same({ ...copy }, { ...given }, 'every field');
  const model = await loadModel(t, 'image-learned');
  const dir = await tempDir(t);
  const path = join(dir, 'g.png');
  await writeGradientImage(path, 33, 21);
  const pool = new DecodePool(1);
  t.teardown(() => pool.close());
  const spec = mediaInputSpec(model, { imageProcessor: given });
  sameItem(t, await pool.builder(spec).load(path), await createMediaInputBuilder(model, { imageProcessor: given }).load(path), "a checkpoint's own processor in a worker");
});

t.test('bad decodeWorkers and readAhead are InvalidArgumentErrors naming them; --decode-workers is checked by the CLI', async (t) => {
  const dir = await tempDir(t);
  const model = await loadModel(t, 'image-learned');
  const items = [{ id: 'a', path: join(dir, 'a.png') }];
  for (const decodeWorkers of [-1, 1.5, '2', 100_000]) {
    await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: join(dir, 'out'), decodeWorkers: decodeWorkers as number }), { name: 'InvalidArgumentError', argument: 'decodeWorkers' }, `decodeWorkers ${String(decodeWorkers)}`);
  }
  for (const readAhead of [0, -2, 2.5, 65]) {
    await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: join(dir, 'out'), readAhead }), { name: 'InvalidArgumentError', argument: 'readAhead' }, `readAhead ${readAhead}`);
  }
  t.throws(() => new DecodePool(0), { name: 'InvalidArgumentError', argument: 'workers' });
  const cli = await runCliCommand(['embed', '--model', fixtureDir('image-learned'), '--out', join(dir, 'cli'), '--decode-workers=-1', join(dir, 'a.png')]);
  t.equal(cli.code, 2, 'a usage error');
  t.match(cli.stderr, /--decode-workers wants an integer of at least 0, got -1/);
});
