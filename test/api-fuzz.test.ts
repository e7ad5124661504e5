/**
 * A short pass of the public-API fuzz (bench/api_fuzz.ts; the long run is `npm run bench:api-fuzz`):
 * every entry point exported from lib/index.ts, called with random arguments on the fixture
 * models, returns or fails with a PerceiverError (thrown or as a rejection), never anything else,
 * and never hangs. Nothing is tolerated: any other error is a finding and fails the test.
 */
import { mkdtemp, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { API_HANG_MS, apiFuzz, setup, teardown } from '../bench/api_fuzz.js';

const CASES = 500;
const SEED = 20261202;

t.test(`${CASES} random calls of the public API`, async (t) => {
  const ctx = await setup();
  t.teardown(() => teardown(ctx));
  const r = await apiFuzz(ctx, CASES, SEED);
  t.equal(r.runs, CASES);
  t.ok(Object.keys(r.byEntry).length >= 50, `${Object.keys(r.byEntry).length} entry points reached`);
  t.ok(r.returned > 0, `${r.returned} calls returned a result`);
  t.ok(r.rejected > 0, `${r.rejected} calls failed with a PerceiverError`);
  t.ok(r.userThrown > 0, `${r.userThrown} calls let the caller's own getter exception through unchanged`);
  t.same(r.findings, [], 'no untyped error, no hang');
  t.ok(r.slowestMs < API_HANG_MS, `slowest call ${r.slowestMs.toFixed(0)} ms (${r.slowestEntry})`);
});

t.test('what the fuzz found, one call each: typed errors now', async (t) => {
  const api = await import('../lib/index.js');
  const { fixtureDir } = await import('./helpers/fixtures.js');
  const invalid = (argument: string) => ({ name: 'InvalidArgumentError', argument });
  t.throws(() => api.Tensor.zeros('nope' as never, [1]), invalid('dtype'));
  t.throws(() => api.Tensor.from('int64', [1.5]), invalid('values[0]'), 'BigInt(1.5) was a RangeError');
  t.throws(() => api.Tensor.from('float32', [Symbol('x')] as never), invalid('values[0]'));
  t.throws(() => api.Tensor.zeros('float32', [2 ** 26, 2 ** 26]), invalid('shape'), 'an allocation too large was a RangeError');
  t.throws(() => new api.Tensor('float32', [1, NaN] as never, new Float32Array(1)), invalid('shape'));
  t.throws(() => api.Tensor.zeros('float32', [2]).get(2), invalid('i'));
  const detached = api.Tensor.zeros('float32', [1, 3, 8, 8]);
  structuredClone(detached.data.buffer, { transfer: [detached.data.buffer as ArrayBuffer] });
  t.throws(() => detached.bytes(), invalid('tensor'), 'a view of a detached buffer was a TypeError');
  t.throws(() => new api.WeightStore(null as never), invalid('tensors'));
  t.throws(() => new api.PerceiverForImageClassificationLearned(undefined as never), invalid('config'));
  t.throws(() => new api.PerceiverBasicDecoder(new api.PerceiverConfig(), { outputNumChannels: 4, outputIndexDims: 'x' as never }), invalid('options.outputIndexDims'));
  t.throws(() => new api.PerceiverConfig({ num_latents: 10n as never }), { name: 'ConfigError', message: /num_latents must be a positive integer, got bigint 10/ });
  t.throws(() => new api.PerceiverEncoding({} as never, {} as never), invalid('handle'));
  await t.rejects(api.PerceiverConfig.fromPretrained(42 as never), invalid('dir'));
  await t.rejects(api.AutoModel.fromPretrained(fixtureDir('text-mlm'), null as never), invalid('options'));

  const model = await api.AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  // Resizable buffer shrunk after the Tensor was made: the engine would read 192 floats from an empty view.
  const buffer = new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer & { resize(n: number): void })(192 * 4, { maxByteLength: 1024 });
  const shrunk = new api.Tensor('float32', [1, 3, 8, 8], new Float32Array(buffer));
  buffer.resize(0);
  await t.rejects(model.forward({ inputs: shrunk }), { ...invalid('inputs'), message: /detached or resized/ });
  await t.rejects(model.upload(shrunk), invalid('tensor'));
  const shared = new Float32Array(new SharedArrayBuffer(192 * 4));
  // Another thread may write a SharedArrayBuffer while the engine reads it: refused, as the issue asks.
  await t.rejects(model.forward({ inputs: new api.Tensor('float32', [1, 3, 8, 8], shared) }), { ...invalid('inputs'), message: /SharedArrayBuffer/ }, 'SharedArrayBuffer-backed inputs are refused');
  // This one aborted the whole process (a fatal out-of-memory filling a 1e9-slot histogram).
  t.throws(() => api.createBatcher(model, { maxBatchSize: 1e9 }), invalid('options.maxBatchSize'));
  // And this one (V8's fatal "invalid size" growing the list of tile starts).
  t.throws(() => api.tileGrid(2 ** 53, 16, { height: 8, width: 8 }, 2), invalid('height'));
});

t.test('what the fuzz found in the batch, flow, pipeline-output, safetensors and media helpers: typed errors now', async (t) => {
  const api = await import('../lib/index.js');
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-api-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const aFile = join(dir, 'a-file');
  await writeFile(aFile, 'x');
  const invalid = (argument: string) => ({ name: 'InvalidArgumentError', argument });
  const writeFailed = (path: string) => ({ name: 'FileWriteError', code: 'ERR_PERCEIVER_FILE_WRITE', path });
  // An object that String() and template literals cannot convert: messages are built without them.
  const noToString = Object.create(null) as never;
  const field = { flow: new Float32Array(2 * 2 * 2).fill(1), width: 2, height: 2 };
  const frame = { data: new Uint8Array(2 * 2 * 3), width: 2, height: 2 };

  // lib/batch: argument guards (were TypeErrors from path.resolve, id.slice, listParts' message).
  t.throws(() => api.itemId(3 as never), invalid('path'));
  t.throws(() => api.inShard(null as never, 0, 2), invalid('id'));
  t.throws(() => api.inShard('0123abcd', 0, 0), invalid('count'));
  t.throws(() => api.inShard('0123abcd', 2, 2), invalid('index'));
  t.equal(api.inShard(api.itemId('/x'), 0, 1), true, 'a valid call still answers');
  await t.rejects(api.discoverItems([3] as never), invalid('inputs'));
  // eslint-disable-next-line no-sparse-arrays
  await t.rejects(api.discoverItems([, dir] as never), invalid('inputs'), 'a sparse array: its hole reached picomatch as undefined');
  await t.rejects(api.readEmbeddings(noToString), invalid('outDir'));
  await t.rejects(api.readDoneIds(noToString), invalid('outDir'));
  await t.rejects(api.readEmbeddings(aFile), invalid('outDir'), 'an outDir that is a file');
  // An outDir that is a file: was a plain fs Error (mkdir EEXIST, readdir ENOTDIR).
  const { fixtureDir } = await import('./helpers/fixtures.js');
  const textModel = await api.AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => textModel.dispose());
  const items = [{ id: 'a', path: aFile }];
  await t.rejects(api.embedItemsToPart({ model: textModel, task: 'embed', items, outDir: aFile, partName: 'p0' }), invalid('outDir'));
  await t.rejects(api.runEmbedJob({ models: [textModel], task: 'embed', items, outDir: aFile }), invalid('outDir'));
  await t.rejects(api.runEmbedJob({ models: [textModel], task: 'embed', items, outDir: join(aFile, 'below') }), invalid('outDir'), 'a file as the parent');

  // lib/media: videoDuration on a non-object (was a TypeError reading probe.video), and odd durations.
  t.throws(() => api.videoDuration(null as never), invalid('probe'));
  t.throws(() => api.videoDuration({ durationSeconds: 1n } as never), invalid('probe.durationSeconds'));
  t.throws(() => api.videoDuration({ durationSeconds: 2, video: { durationSeconds: Symbol('s') } } as never), invalid('probe.video.durationSeconds'));
  t.equal(api.videoDuration({ durationSeconds: 2, video: { durationSeconds: 1.5 } } as never), 1.5);

  // lib/io/safetensors: metadata null and tensors null (were Object.entries(null)), a non-string name, a path message built from an object.
  const tensors = new Map([['w', api.Tensor.zeros('float32', [2])]]);
  t.throws(() => api.serializeSafetensors(tensors, null as never), invalid('metadata'));
  t.throws(() => api.serializeSafetensors(null as never), invalid('tensors'));
  t.throws(() => api.serializeSafetensors(new Map([[1n, api.Tensor.zeros('float32', [1])]]) as never), invalid('tensors'));
  await t.rejects(api.writeSafetensors(join(dir, 'w.safetensors'), tensors, null as never), invalid('metadata'));
  await t.rejects(api.writeSafetensors(noToString, tensors), invalid('path'));
  await t.rejects(api.readSafetensors(noToString), invalid('path'));
  await t.rejects(api.readSafetensors('a\0b'), invalid('path'));
  await t.rejects(api.writeSafetensors(dir, tensors), { name: 'WeightsFormatError' }, 'a folder at the path');

  // lib/flow: unchecked fields and tiles (TypeErrors, RangeErrors allocating), messages with String(), writes of a folder.
  t.throws(() => api.maxFlowRadius(null as never), invalid('field'));
  t.throws(() => api.maxFlowRadius({ width: 2, height: 2 } as never), invalid('field'));
  t.throws(() => api.flowToColor({ flow: new Float32Array(8), width: noToString, height: 2 } as never), invalid('field.width'));
  const detachedFlow = new Float32Array(8);
  structuredClone(detachedFlow.buffer, { transfer: [detachedFlow.buffer] });
  t.throws(() => api.flowToColor({ flow: detachedFlow, width: 2, height: 2 }), invalid('field.flow'));
  await t.rejects(api.flowToColorAsync({ flow: detachedFlow, width: noToString, height: 2 } as never), invalid('field.width'));
  t.throws(() => new api.FlowBlender(2 ** 53, 4, { height: 2, width: 2 }), invalid('height'));
  t.throws(() => new api.FlowBlender(8192, 16384, { height: 2, width: 2 }), invalid('height'), 'too many pixels in all');
  t.throws(() => new api.FlowBlender(4, 4, null as never), invalid('tile'));
  t.throws(() => new api.FlowBlender(4, 4, { height: 1.5, width: 2 }), invalid('tile.height'));
  const blender = new api.FlowBlender(4, 4, { height: 2, width: 2 });
  t.throws(() => blender.add(null as never, new Float32Array(8)), invalid('at'));
  t.throws(() => blender.add({ top: -1, left: 0 }, new Float32Array(8)), invalid('at.top'));
  t.throws(() => blender.add({ top: 0, left: 0 }, null as never), invalid('flow'));
  t.throws(() => blender.add({ top: 0, left: 0 }, new Float32Array(8), NaN), invalid('scale'));
  t.throws(() => api.tileWeights(null as never), invalid('tile'));
  t.throws(() => api.tileWeights({ height: 2 ** 20, width: 2 ** 20 }), invalid('tile.height'), 'was a RangeError allocating');
  t.throws(() => api.defaultMinOverlap(undefined as never), invalid('tile'));
  t.throws(() => api.tileGrid(8, 8, null as never, 1), invalid('tile'));
  t.throws(() => api.decodeFlo(undefined as never), invalid('bytes'), 'was a TypeError from Buffer.from');
  const detachedBytes = new Uint8Array(16);
  structuredClone(detachedBytes.buffer, { transfer: [detachedBytes.buffer] });
  t.throws(() => api.decodeFlo(detachedBytes), { name: 'MediaDecodeError' });
  await t.rejects(api.writeFlo(dir, field), writeFailed(dir), 'a folder at the path');
  await t.rejects(api.writeFlo(join(aFile, 'x.flo'), field), writeFailed(join(aFile, 'x.flo')), 'a file as the parent');
  await t.rejects(api.writeFlo('x\0.flo', field), invalid('path'));
  await t.rejects(api.readFlo(noToString), invalid('path'));

  // lib/pipelines: output writers on folders, files, NUL paths and unchecked results.
  await t.rejects(api.writeWav(dir, new Float32Array(4), 16000), writeFailed(dir));
  await t.rejects(api.writeWav('a\0.wav', new Float32Array(4), 16000), invalid('path'));
  t.throws(() => api.encodeWav(new Float32Array(4), 2 ** 32), invalid('sampleRate'), 'was a RangeError from writeUInt32LE');
  t.throws(() => api.encodeWav(new Float32Array(4), 2 ** 31), invalid('sampleRate'), 'bytes per second (rate x 2) past 32 bits');
  t.throws(() => api.encodeWav(new Float32Array(65536 * 2), 8000, 65536), invalid('channels'));
  await t.rejects(api.writePng(dir, frame), writeFailed(dir), "was sharp's plain Error");
  await t.rejects(api.writePng(join(dir, `${'x'.repeat(300)}.png`), frame), { name: 'FileWriteError' }, 'a name too long');
  await t.rejects(api.writeFlowPicture(dir, field), writeFailed(dir));
  await t.rejects(api.writeFlowPicture(join(dir, 'f.png'), field, noToString), invalid('flo'));
  await t.rejects(api.writeFlowVideo(noToString, [field]), invalid('out'));
  await t.rejects(api.writeFlowVideo(aFile, [field]), invalid('out'), 'a folder of PNGs where a file is');
  await t.rejects(api.writeVideo('a\0.mp4', [frame]), invalid('path'));
  await t.rejects(api.writeVideo(join(dir, 'v.mp4'), [frame], { ffmpegPath: 42 as never }), invalid('options.ffmpegPath'));
  await t.rejects(api.writeAutoencoding(join(dir, 'ae'), null as never), invalid('result'));
  await t.rejects(api.writeAutoencoding(join(dir, 'ae'), { frames: [frame] } as never), invalid('result.audio'));
  await t.rejects(api.writeAutoencoding(aFile, null as never), invalid('result'));
  const clip = { samples: new Float32Array(4), sampleRate: 16000 };
  const result = { frames: [frame], audio: clip, labels: [{ label: 'a', score: 1 }], original: { frames: [frame], audio: clip }, fps: 25 };
  await t.rejects(api.writeAutoencoding(aFile, result, { video: false }), invalid('dir'), 'a dir that is a file');
  await t.rejects(api.writeAutoencoding('a\0b', result, { video: false }), invalid('dir'));
  await t.rejects(api.writeAutoencoding(join(dir, 'ae'), { ...result, labels: [{ label: 1n, score: 1 }] } as never), invalid('result.labels[0]'), 'a bigint JSON.stringify would throw on');
  t.same(await readdir(dir).then((names) => names.includes('ae')), false, 'a bad result leaves no folder behind');
  const files = await api.writeAutoencoding(join(dir, 'ok'), result, { video: false });
  t.same((await readdir(join(dir, 'ok'))).sort(), ['comparison.png', 'frame_000.png', 'labels.json', 'original.wav', 'reconstruction.wav'], `a valid result is written (${files.frames.length} frame)`);
});
