/**
 * fromPretrained hands the engine file ranges, not values: the engine reads each safetensors
 * tensor from the open file while it loads (lib/io/checkpoint.ts openCheckpointWeights,
 * native/src/model/deferred_weight.cc). These tests hold that path to the in-memory one: the same
 * float16, bfloat16 and float64 weights in sharded files give bit-identical logits, a non-finite
 * value is refused by name, a file that shrinks under the load is a typed error, and no file stays open.
 */
import t from 'tap';
import { copyFile, readdir, truncate, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AutoModel, PerceiverConfig, PerceiverForMaskedLM, Tensor, WeightMismatchError, writeSafetensors } from '../lib/index.js';
import { openCheckpointWeights } from '../lib/io/checkpoint.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { WeightStore } from '../lib/modeling/weights.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';

const MLM = fixtureDir('text-mlm');
const ids = new Tensor('int64', [2, 11], BigInt64Array.from({ length: 22 }, (_, i) => BigInt((i * 37) % 262)));

/** IEEE half-precision bits of x, truncated toward zero (subnormals included): exact test data, not a rounding study. */
function halfBits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65504) return sign | 0x7bff;
  if (a < 2 ** -14) return sign | Math.floor(a / 2 ** -24);
  let e = Math.floor(Math.log2(a));
  if (a / 2 ** e >= 2) e += 1;
  if (a / 2 ** e < 1) e -= 1;
  return sign | ((e + 15) << 10) | Math.floor((a / 2 ** e - 1) * 1024);
}

/** The fixture's float32 weights in turn as float16, bfloat16, float64 and float32 (by name order). */
function mixedDtypes(tensors: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  [...tensors.keys()].sort().forEach((name, i) => {
    const tensor = tensors.get(name)!;
    const values = tensor.toFloat32();
    const kind = i % 4;
    if (kind === 0) out.set(name, new Tensor('float16', tensor.shape, Uint16Array.from(values, halfBits)));
    else if (kind === 1) out.set(name, new Tensor('bfloat16', tensor.shape, Uint16Array.from(new Uint32Array(Float32Array.from(values).buffer), (u) => u >>> 16)));
    else if (kind === 2) out.set(name, new Tensor('float64', tensor.shape, Float64Array.from(values, (v) => v * (1 + 2 ** -30))));
    else out.set(name, tensor);
  });
  return out;
}

/** Writes `tensors` into `dir` as two safetensors shards with an index, plus the fixture's config. */
async function writeSharded(dir: string, tensors: Map<string, Tensor>): Promise<void> {
  const names = [...tensors.keys()].sort();
  const shards = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const weightMap: Record<string, string> = {};
  for (const [i, list] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(join(dir, file), new Map(list.map((n) => [n, tensors.get(n)!])));
    for (const n of list) weightMap[n] = file;
  }
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await copyFile(join(MLM, 'config.json'), join(dir, 'config.json'));
}

async function logitsOf(model: PerceiverForMaskedLM): Promise<Float32Array> {
  return Float32Array.from(((await model.forward({ inputs: ids })).logits as Tensor).data as Float32Array);
}

/** Open descriptors of this process (Linux), to show that loading closes what it opened. */
async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

t.test('sharded float16 / bfloat16 / float64 files read by the engine match the same tensors in memory, bit for bit', async (t) => {
  const dir = await tempDir(t);
  const tensors = mixedDtypes((await readSafetensors(join(MLM, 'model.safetensors'))).tensors);
  t.same(new Set([...tensors.values()].map((x) => x.dtype)), new Set(['float16', 'bfloat16', 'float64', 'float32']), 'every float dtype is present');
  const halves = [...tensors.values()].filter((x) => x.dtype === 'float16').flatMap((x) => [...(x.data as Uint16Array)]);
  t.ok(halves.some((h) => (h & 0x7c00) === 0 && (h & 0x3ff) !== 0), 'float16 subnormals are among them');
  await writeSharded(dir, tensors);

  const config = await PerceiverConfig.fromPretrained(MLM);
  const inMemory = await new PerceiverForMaskedLM(config).loadWeights(tensors);
  t.teardown(() => inMemory.dispose());
  const hasProc = existsSync('/proc/self/fd');
  const fdsBefore = hasProc ? await openFds() : 0;
  const fromFiles = (await AutoModel.fromPretrained(dir)) as PerceiverForMaskedLM;
  t.teardown(() => fromFiles.dispose());
  if (hasProc) t.equal(await openFds(), fdsBefore, 'the shards are closed once the model is loaded');

  const expected = await logitsOf(inMemory);
  const actual = await logitsOf(fromFiles);
  t.equal(actual.length, expected.length);
  let mismatches = 0;
  for (let i = 0; i < expected.length; i++) if (!Object.is(actual[i], expected[i])) mismatches++;
  t.equal(mismatches, 0, 'identical logits');
});

t.test('a non-finite value in a file-read weight is refused by name, and the files are closed', async (t) => {
  const dir = await tempDir(t);
  const tensors = mixedDtypes((await readSafetensors(join(MLM, 'model.safetensors'))).tensors);
  const half = [...tensors].find(([, x]) => x.dtype === 'float16')!;
  const poisoned = new Uint16Array(half[1].data as Uint16Array);
  poisoned[poisoned.length - 1] = 0x7c00; // +Inf
  tensors.set(half[0], new Tensor('float16', half[1].shape, poisoned));
  await writeSharded(dir, tensors);
  const hasProc = existsSync('/proc/self/fd');
  const fdsBefore = hasProc ? await openFds() : 0;
  await t.rejects(AutoModel.fromPretrained(dir), { message: new RegExp(half[0].replace(/\./g, '\\.')) }, `names ${half[0]}`);
  if (hasProc) t.equal(await openFds(), fdsBefore, 'the shards are closed after the failed load');
});

t.test('a file that shrinks after its header was read is a WeightMismatchError naming a weight, not a crash', async (t) => {
  const dir = await tempDir(t);
  await copyFile(join(MLM, 'model.safetensors'), join(dir, 'model.safetensors'));
  await copyFile(join(MLM, 'config.json'), join(dir, 'config.json'));
  const checkpoint = await openCheckpointWeights(dir);
  t.teardown(() => checkpoint.close());
  await truncate(join(dir, 'model.safetensors'), 4096);
  const model = new PerceiverForMaskedLM(await PerceiverConfig.fromPretrained(MLM));
  await t.rejects(model.loadWeights(new WeightStore(checkpoint.tensors)), WeightMismatchError);
  await t.rejects(model.loadWeights(new WeightStore(checkpoint.tensors)), {
    message: /^weight "[^"]+": expected its values from the checkpoint file but received /,
    weight: /./,
    expected: 'its values from the checkpoint file',
    actual: /end of the file/,
  });
});
