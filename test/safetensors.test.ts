import t, { type Test } from 'tap';
import { sameTensor } from './helpers/fixtures.js';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { loadCheckpointWeights } from '../lib/io/checkpoint.js';
import { InvalidArgumentError, WeightsFormatError } from '../lib/errors.js';
import { DTYPE_INFO, Tensor, type DType } from '../lib/tensor.js';

const MLM_DIR = 'test/fixtures/text-mlm';
const MLM_MODEL = join(MLM_DIR, 'model.safetensors');
const MLM_IO = join(MLM_DIR, 'io.safetensors');

/** Header length and parsed header of a file, read independently of the library. */
function rawHeader(bytes: Uint8Array): { length: number; header: Record<string, { data_offsets: [number, number] }> } {
  const length = Number(Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, length).toString('utf8'));
  return { length, header };
}

/** A file image with the given header (object or raw text), `dataBytes` zero bytes of data, and optionally a forged length. */
function file(header: unknown, dataBytes = 0, headerLength?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + json.byteLength + dataBytes);
  out.writeBigUInt64LE(headerLength ?? BigInt(json.byteLength), 0);
  out.set(json, 8);
  return out;
}


async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-safetensors-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('reads the text-mlm checkpoint', async (t) => {
  const { metadata, tensors } = await readSafetensors(MLM_MODEL);
  t.equal(tensors.size, 73);
  t.same(metadata, { format: 'pt' });
  const latents = tensors.get('perceiver.embeddings.latents')!;
  t.equal(latents.dtype, 'float32');
  t.same(latents.shape, [16, 64]);
  t.equal(latents.data[0], Math.fround(-1.7686445713043213));
  t.equal(latents.data[2], Math.fround(-0.8386292457580566));
  const embeddings = tensors.get('perceiver.input_preprocessor.embeddings.weight')!;
  t.equal(embeddings.dtype, 'float32');
  t.same(embeddings.shape, [262, 48]);
});

t.test('reads the text-mlm io file with int64, float64 and metadata', async (t) => {
  const { metadata, tensors } = await readSafetensors(MLM_IO);
  t.equal(metadata.model_class, 'PerceiverForMaskedLM');
  const input = tensors.get('input')!;
  t.equal(input.dtype, 'int64');
  t.same(input.shape, [3, 48]);
  t.same([...input.data.subarray(0, 3)], [43n, 241n, 146n]);
  const logits = tensors.get('expected.logits')!;
  t.equal(logits.dtype, 'float64');
  t.same(logits.shape, [3, 48, 262]);
  t.equal(logits.data[0], -38.38915897328089);
  t.equal(logits.data[1], 9.758393408816469);
});

t.test('aligned tensors are views on the file buffer, misaligned ones are copies', async (t) => {
  for (const path of [MLM_MODEL, MLM_IO]) {
    const bytes = readFileSync(path);
    const { length, header } = rawHeader(bytes);
    const { tensors } = parseSafetensors(bytes, path);
    let views = 0;
    for (const [name, tensor] of tensors) {
      const absolute = bytes.byteOffset + 8 + length + header[name]!.data_offsets[0];
      const aligned = absolute % DTYPE_INFO[tensor.dtype].bytes === 0;
      if (aligned) views++;
      t.equal(tensor.data.buffer === bytes.buffer, aligned, `${path} ${name} is a view iff aligned`);
    }
    t.ok(views > 0, `${path} has zero-copy tensors`);

    // The same file one byte into a larger buffer: every multi-byte tensor must be copied.
    const shifted = new Uint8Array(bytes.byteLength + 1);
    shifted.set(bytes, 1);
    const moved = parseSafetensors(shifted.subarray(1), path).tensors;
    for (const [name, tensor] of tensors) {
      const copy = moved.get(name)!;
      t.not(copy.data.buffer, shifted.buffer, `${path} ${name} copied`);
      t.equal(copy.data.byteOffset % DTYPE_INFO[copy.dtype].bytes, 0);
      sameTensor(t, copy, tensor, name);
    }
  }
});

t.test('round trip of every dtype, empty and scalar tensors', async (t) => {
  const tensors: Record<string, Tensor> = {
    f64: Tensor.from('float64', [1.5, -2.25, 1e300, -0], [2, 2]),
    f32: Tensor.from('float32', [0.1, 2, -3], [3]),
    f16: new Tensor('float16', [2], Uint16Array.of(0x3c00, 0xc000)),
    bf16: new Tensor('bfloat16', [1, 2], Uint16Array.of(0x3f80, 0xbf80)),
    i64: new Tensor('int64', [3], BigInt64Array.of(-(2n ** 63n), 0n, 2n ** 63n - 1n)),
    i32: Tensor.from('int32', [-(2 ** 31), 7], [2]),
    i16: Tensor.from('int16', [-32768, 32767, 1], [3]),
    i8: Tensor.from('int8', [-128, 127], [2]),
    u8: Tensor.from('uint8', [0, 255, 9], [3]),
    bool: Tensor.from('bool', [1, 0, 1, 1], [2, 2]),
    empty: Tensor.zeros('float32', [0]),
    empty2d: Tensor.zeros('int64', [3, 0]),
    scalar: Tensor.from('float64', [42], []),
  };
  const metadata = { format: 'pt', note: 'ünïcödé' };
  const bytes = serializeSafetensors(tensors, metadata);
  const { length, header } = rawHeader(bytes);
  t.equal((8 + length) % 8, 0, 'data region is 8-byte aligned');
  const bySizeThenName = Object.keys(tensors).sort((a, b) => {
    const d = DTYPE_INFO[tensors[b]!.dtype].bytes - DTYPE_INFO[tensors[a]!.dtype].bytes;
    return d !== 0 ? d : a < b ? -1 : 1;
  });
  t.same(Object.keys(header), ['__metadata__', ...bySizeThenName], 'header keys ordered by element size, then name');
  const parsed = parseSafetensors(bytes, 'roundtrip');
  for (const [name, tensor] of parsed.tensors) {
    if (tensor.size > 0) t.equal(tensor.data.buffer, bytes.buffer, `${name} reads back as a zero-copy view`);
  }
  t.same(parsed.metadata, metadata);
  t.equal(parsed.tensors.size, Object.keys(tensors).length);
  for (const [name, tensor] of Object.entries(tensors)) sameTensor(t, parsed.tensors.get(name), tensor, name);
  t.equal(parsed.tensors.get('scalar')!.get(0), 42);

  // A Map works too, and no metadata means no __metadata__ entry.
  const fromMap = serializeSafetensors(new Map([['x', tensors.f32!]]));
  t.notOk('__metadata__' in rawHeader(fromMap).header);
  t.same(parseSafetensors(fromMap, 'map').metadata, {});

  const all: DType[] = Object.keys(DTYPE_INFO) as DType[];
  t.same(new Set(Object.values(tensors).map((x) => x.dtype)), new Set(all), 'every dtype covered');
});

t.test('serializing bad input throws InvalidArgumentError', async (t) => {
  t.throws(() => serializeSafetensors({ __metadata__: Tensor.zeros('float32', [1]) }), InvalidArgumentError);
  t.throws(() => serializeSafetensors({ x: new Float32Array(1) as never }), InvalidArgumentError);
  t.throws(() => serializeSafetensors({}, { format: 1 as never }), InvalidArgumentError);
});

t.test('writeSafetensors writes atomically and readSafetensors reads it back', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'out.safetensors');
  const x = Tensor.from('float32', [1, 2, 3], [3]);
  await writeSafetensors(path, { x }, { format: 'pt' });
  t.same(await readdir(dir), ['out.safetensors'], 'no temporary file left behind');
  const back = await readSafetensors(path);
  sameTensor(t, back.tensors.get('x'), x, 'x');
  await t.rejects(writeSafetensors(join(dir, 'missing', 'out.safetensors'), { x }), WeightsFormatError);
  await t.rejects(readSafetensors(join(dir, 'nope.safetensors')), WeightsFormatError);
  await t.rejects(readSafetensors(dir), WeightsFormatError, 'a directory is not a file');
});

t.test('hostile files throw WeightsFormatError', async (t) => {
  const f32 = (shape: unknown, offsets: unknown) => ({ dtype: 'F32', shape, data_offsets: offsets });
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['empty file', new Uint8Array(0), /too short/],
    ['shorter than 8 bytes', new Uint8Array(7), /too short/],
    ['header length 0', file('', 16), /header length is 0/],
    ['header length past end', file('{}', 0, 100n), /past the end/],
    ['header length 2^63', file('{}', 0, 2n ** 63n), /exceeds/],
    ['header length 2^64-1', file('{}', 0, 2n ** 64n - 1n), /exceeds/],
    ['header length just over 100 MB', file('{}', 0, 100_000_001n), /exceeds/],
    ['header not JSON', file('{"a": ', 0), /not valid UTF-8 JSON/],
    ['header JSON array', file('[]'), /must be a JSON object/],
    ['header JSON null', file('null'), /must be a JSON object/],
    ['entry not an object', file({ a: 5 }), /"a".*must be an object/],
    ['entry missing data_offsets', file({ a: { dtype: 'F32', shape: [1] } }, 4), /missing "data_offsets"/],
    ['unknown dtype F8_E4M3', file({ a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1), /"a".*F8_E4M3/],
    ['unknown dtype U32', file({ a: { dtype: 'U32', shape: [1], data_offsets: [0, 4] } }, 4), /"a".*U32/],
    ['dtype not a string', file({ a: { dtype: 4, shape: [1], data_offsets: [0, 4] } }, 4), /dtype must be a string/],
    ['shape not an array', file({ a: f32(4, [0, 16]) }, 16), /shape must be an array/],
    ['negative shape', file({ a: f32([-1], [0, 0]) }), /shape\[0\]/],
    ['non-integer shape', file({ a: f32([1.5], [0, 4]) }, 8), /shape\[0\]/],
    ['string shape', file({ a: f32(['2'], [0, 8]) }, 8), /shape\[0\]/],
    ['shape product overflows', file({ a: f32([2 ** 31, 2 ** 31, 2 ** 31], [0, 4]) }, 4), /too many elements/],
    ['byte size overflows', file({ a: f32([2 ** 52], [0, 4]) }, 4), /too many bytes/],
    ['offsets not a pair', file({ a: f32([1], [0, 4, 8]) }, 8), /data_offsets must be an array of two/],
    ['negative offset', file({ a: f32([1], [-4, 0]) }, 8), /non-negative/],
    ['fractional offset', file({ a: f32([1], [0.5, 4.5]) }, 8), /non-negative integers/],
    ['offsets past the end of the data', file({ a: f32([2], [0, 8]) }, 4), /past the end of the data region/],
    ['offsets reversed', file({ a: f32([1], [8, 4]) }, 8), /reversed/],
    ['size mismatch with shape', file({ a: f32([2], [0, 4]) }, 8), /span 4 bytes.*needs 8/],
    ['overlapping tensors', file({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, 12), /"a".*"b".*overlap/],
    ['identical ranges', file({ a: f32([1], [0, 4]), b: f32([1], [0, 4]) }, 4), /overlap/],
    ['metadata with a non-string value', file({ __metadata__: { format: 1 } }), /__metadata__\["format"\] must be a string/],
    ['metadata an array', file({ __metadata__: ['pt'] }), /__metadata__ must be an object/],
  ];
  for (const [name, bytes, message] of cases) {
    const err = t.throws(() => parseSafetensors(bytes, 'hostile.safetensors'), WeightsFormatError, name);
    if (err instanceof Error) t.match(err.message, message, `${name}: message`);
  }

  // Invalid UTF-8 (the helper above only writes valid UTF-8).
  const bad = Buffer.alloc(12);
  bad.writeBigUInt64LE(4n, 0);
  bad.set([0x7b, 0xff, 0xfe, 0x7d], 8);
  t.throws(() => parseSafetensors(bad, 'bad-utf8'), WeightsFormatError, 'invalid UTF-8');
});

t.test('tolerated oddities parse', async (t) => {
  // Unknown extra fields, empty tensors sitting inside another's range, a gap in the data.
  const header = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8], extra: 'ignored' },
    e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
    b: { dtype: 'U8', shape: [1], data_offsets: [12, 13] },
  };
  const { tensors } = parseSafetensors(file(header, 13), 'odd');
  t.same([...tensors.keys()], ['a', 'e', 'b']);
  t.equal(tensors.get('e')!.size, 0);
});

t.test('fuzzed files parse or throw WeightsFormatError, nothing else', async (t) => {
  const base = serializeSafetensors(
    {
      w: Tensor.from('float32', [1, 2, 3, 4, 5, 6], [2, 3]),
      ids: Tensor.from('int64', [7, 8], [2]),
      mask: Tensor.from('bool', [1, 0, 1], [3]),
      h: Tensor.zeros('float16', [0]),
    },
    { format: 'pt' },
  );
  // mulberry32: a small deterministic PRNG so any failure reproduces.
  let seed = 0x5eed1234;
  const random = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(random() * n);
  const u64s = [0n, 1n, 7n, 8n, BigInt(base.length), BigInt(base.length - 8), 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

  const unexpected: string[] = [];
  let parsed = 0;
  let rejected = 0;
  const start = Date.now();
  for (let i = 0; i < 2000; i++) {
    const bytes = Buffer.from(base);
    let input: Uint8Array = bytes;
    const mode = int(4);
    if (mode === 0) bytes[int(bytes.length)] = int(256);
    else if (mode === 1) bytes[int(bytes.length)]! ^= 1 << int(8);
    else if (mode === 2) bytes.writeBigUInt64LE(u64s[int(u64s.length)]!, int(4) === 0 ? 0 : int(bytes.length - 7));
    else input = bytes.subarray(0, int(bytes.length));
    try {
      const { tensors } = parseSafetensors(input, 'fuzz');
      for (const tensor of tensors.values()) if (tensor.data.length !== tensor.size) unexpected.push(`#${i}: bad tensor`);
      parsed++;
    } catch (err) {
      if (err instanceof WeightsFormatError) rejected++;
      else unexpected.push(`#${i} mode ${mode}: ${String(err)}`);
    }
  }
  t.same(unexpected, [], 'only successful parses or WeightsFormatError');
  t.ok(parsed > 0 && rejected > 0, `both outcomes seen (parsed ${parsed}, rejected ${rejected})`);
  t.ok(Date.now() - start < 3000, 'fuzz loop is fast');
});

t.test('sharded checkpoints', async (t) => {
  const single = await loadCheckpointWeights(MLM_DIR);
  t.same(single.files, [MLM_MODEL]);
  t.equal(single.tensors.size, 73);
  const names = [...single.tensors.keys()].sort();
  const half = Math.ceil(names.length / 2);
  const shards: Record<string, string[]> = {
    'model-00001-of-00002.safetensors': names.slice(0, half),
    'model-00002-of-00002.safetensors': names.slice(half),
  };

  /** Writes the two shards and an index with the given weight map (default: the true one). */
  const checkpoint = async (weightMap?: unknown, extra: Record<string, string[]> = {}): Promise<string> => {
    const dir = await tempDir(t);
    const trueMap: Record<string, string> = {};
    for (const [shard, members] of Object.entries(shards)) {
      const all = [...members, ...(extra[shard] ?? [])];
      await writeSafetensors(join(dir, shard), new Map(all.map((n) => [n, single.tensors.get(n)!])), { format: 'pt' });
      for (const n of members) trueMap[n] = shard;
    }
    const index = { metadata: { total_size: 0 }, weight_map: weightMap === undefined ? trueMap : weightMap };
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    return dir;
  };

  const dir = await checkpoint();
  const sharded = await loadCheckpointWeights(dir);
  t.same(sharded.files, Object.keys(shards).map((s) => join(dir, s)));
  t.equal(sharded.tensors.size, single.tensors.size);
  for (const [name, tensor] of single.tensors) sameTensor(t, sharded.tensors.get(name), tensor, name);

  const shard1 = 'model-00001-of-00002.safetensors';
  for (const evil of ['../evil.safetensors', '/etc/passwd', 'sub/model.safetensors', '..\\evil.safetensors', 'C:evil', '..', '']) {
    const bad = await checkpoint({ [names[0]!]: evil });
    await t.rejects(loadCheckpointWeights(bad), WeightsFormatError, `shard name ${JSON.stringify(evil)} rejected`);
  }
  await t.rejects(
    loadCheckpointWeights(await checkpoint({ [names[0]!]: shard1, ghost: shard1 })),
    { name: 'WeightsFormatError', message: /"ghost".*model-00001-of-00002/ },
    'tensor absent from its shard',
  );
  await t.rejects(
    loadCheckpointWeights(await checkpoint({ [names[0]!]: 'model-00002-of-00002.safetensors' })),
    WeightsFormatError,
    'tensor listed under the wrong shard',
  );
  await t.rejects(
    loadCheckpointWeights(await checkpoint(undefined, { 'model-00002-of-00002.safetensors': [names[0]!] })),
    { name: 'WeightsFormatError', message: /also stored in shard/ },
    'tensor stored in two shards',
  );
  for (const weightMap of [[], null, 'x', { a: 1 }, {}]) {
    await t.rejects(loadCheckpointWeights(await checkpoint(weightMap)), WeightsFormatError, `weight_map ${JSON.stringify(weightMap)}`);
  }
  const notJson = await tempDir(t);
  await writeFile(join(notJson, 'model.safetensors.index.json'), '{oops');
  await t.rejects(loadCheckpointWeights(notJson), WeightsFormatError, 'index not JSON');
});

t.test('checkpoint folders without weights, or not folders', async (t) => {
  const empty = await tempDir(t);
  await t.rejects(
    loadCheckpointWeights(empty),
    { name: 'WeightsFormatError', message: /model\.safetensors.*pytorch_model\.bin/ },
    'folder without weights',
  );
  await t.rejects(loadCheckpointWeights(join(empty, 'does-not-exist')), InvalidArgumentError, 'missing folder');
  await t.rejects(loadCheckpointWeights(MLM_MODEL), InvalidArgumentError, 'a file, not a folder');
});
