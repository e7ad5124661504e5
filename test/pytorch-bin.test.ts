import { makeZip } from '../bench/zip.js';
import t, { type Test } from 'tap';
import { sameTensor } from './helpers/fixtures.js';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as zlib from 'node:zlib';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parsePytorchCheckpoint, readPytorchCheckpoint } from '../lib/io/pytorch.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { InvalidArgumentError, UnsafePickleError, WeightsFormatError } from '../lib/errors.js';
import type { Tensor } from '../lib/tensor.js';

const BIN = 'test/fixtures-bin';
const FIXTURES = 'test/fixtures';
const NAMES = ['text-mlm', 'text-classification', 'image-learned', 'image-fourier', 'image-conv', 'optical-flow', 'multimodal-autoencoding'];
const TC = join(BIN, 'text-classification');

/** A file that the hostile pickles below would create if anything in them were executed. */
const TRIPWIRE = join(tmpdir(), `perceiver-pwned-${process.pid}`);
rmSync(TRIPWIRE, { force: true });
const PAYLOAD = `touch ${TRIPWIRE}`;


async function twin(name: string): Promise<Map<string, Tensor>> {
  return (await readSafetensors(join(FIXTURES, name, 'model.safetensors'))).tensors;
}

// ---------------------------------------------------------------------------------------------
// A tiny pickle assembler: numbers are opcode/raw bytes, strings are raw latin1 text.
// ---------------------------------------------------------------------------------------------

type Part = number | string | Uint8Array;
function pk(...parts: Part[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.of(p) : typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
}
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const PROTO2 = pk(0x80, 2);
const STOP = '.';
const MARK = '(';
const str = (s: string): Buffer => pk('X', u32(Buffer.byteLength(s)), Buffer.from(s, 'utf8'));
const int = (n: number): Buffer => (n < 256 ? pk('K', n) : n < 65536 ? pk('M', n & 0xff, n >> 8) : pk('J', u32(n)));
const global = (module: string, name: string): Buffer => pk('c', `${module}\n${name}\n`);
const tupleOf = (items: Buffer[]): Buffer => pk(MARK, ...items, 't');

interface TensorSpec {
  name: string;
  key: string;
  storage?: string;
  numel: number;
  offset?: number;
  size: number[];
  stride?: number[];
  /** Legacy only: (view_key, offset, size) of a storage view. */
  view?: [string, number, number];
}

function contiguousStride(size: number[]): number[] {
  const stride = size.map(() => 1);
  for (let i = size.length - 2; i >= 0; i--) stride[i] = stride[i + 1]! * size[i + 1]!;
  return stride;
}

/**
 * The pickle torch.save writes for a state dict of these tensors (6-element persistent ids when
 * legacy). `ordered` makes it what `model.state_dict()` gives: an OrderedDict whose `_metadata`
 * attribute (an OrderedDict of dicts) arrives through BUILD, as Python pickles it.
 */
function statePickle(specs: TensorSpec[], legacy = false, ordered = false): Buffer {
  const items = specs.map((s) => {
    const view = s.view ? tupleOf([str(s.view[0]), int(s.view[1]), int(s.view[2])]) : pk('N');
    const pid = tupleOf([str('storage'), global('torch', s.storage ?? 'FloatStorage'), str(s.key), str('cpu'), int(s.numel), ...(legacy ? [view] : [])]);
    const args = tupleOf([
      pk(pid, 'Q'),
      int(s.offset ?? 0),
      tupleOf(s.size.map(int)),
      tupleOf((s.stride ?? contiguousStride(s.size)).map(int)),
      pk(0x89),
      pk(global('collections', 'OrderedDict'), ')R'),
    ]);
    return pk(str(s.name), global('torch._utils', '_rebuild_tensor_v2'), args, 'R');
  });
  if (!ordered) return pk(PROTO2, '}', MARK, ...items, 'u', STOP);
  const orderedDict = pk(global('collections', 'OrderedDict'), 'q', 200, ')R');
  const version = pk('}', str('version'), int(1), 's');
  const metadata = pk('}', str('_metadata'), 'h', 200, ')R', MARK, str(''), version, str('perceiver'), version, 'u', 's');
  return pk(PROTO2, orderedDict, MARK, ...items, 'u', metadata, 'b', STOP);
}

/** A torch-like zip checkpoint: archive/data.pkl, archive/byteorder, archive/data/<key>. */
function checkpointZip(pickle: Uint8Array, storages: Record<string, Uint8Array> = {}, method = 0): Buffer {
  return makeZip([
    { name: 'archive/data.pkl', data: pickle, method },
    { name: 'archive/byteorder', data: Buffer.from('little'), method },
    ...Object.entries(storages).map(([key, data]) => ({ name: `archive/data/${key}`, data, method })),
  ]);
}

/** A legacy (non-zip) checkpoint: magic, protocol, sys_info, state dict, keys, then each storage. */
function legacyFile(specs: TensorSpec[], storages: [string, bigint, Uint8Array][], magic = 0x1950a86a20f9469cfc6cn): Buffer {
  const magicBytes = Buffer.alloc(10);
  for (let i = 0, v = magic; i < 10; i++, v >>= 8n) magicBytes[i] = Number(v & 0xffn);
  const keys = pk(PROTO2, ']', MARK, ...storages.map(([k]) => str(k)), 'e', STOP);
  return pk(
    PROTO2, 0x8a, 10, magicBytes, STOP,
    PROTO2, int(1001), STOP,
    PROTO2, '}', str('little_endian'), 0x88, 's', STOP,
    statePickle(specs, true),
    keys,
    ...storages.flatMap(([, count, data]) => [u64(BigInt.asUintN(64, count)), data]),
  );
}

function floats(...values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** Where a local header's data starts, found by the entry name (for corrupting real fixtures). */
function localDataOffset(file: Buffer, name: string): number {
  const at = file.indexOf(Buffer.concat([Buffer.from(name)]));
  const header = at - 30;
  if (header < 0 || file.readUInt32LE(header) !== 0x04034b50) throw new Error(`no local header for ${name}`);
  return at + file.readUInt16LE(header + 26) + file.readUInt16LE(header + 28);
}

// ---------------------------------------------------------------------------------------------
// Real checkpoints
// ---------------------------------------------------------------------------------------------

t.test('every fixture .bin holds exactly the tensors of its safetensors twin', async (t) => {
  for (const name of NAMES) {
    const bin = await readPytorchCheckpoint(join(BIN, name, 'pytorch_model.bin'));
    const expected = await twin(name);
    t.same([...bin.keys()].sort(), [...expected.keys()].sort(), `${name}: same tensor names`);
    for (const [key, tensor] of expected) sameTensor(t, bin.get(key), tensor, `${name} ${key}`);
  }
});

t.test('image-conv keeps its int64 0-d num_batches_tracked', async (t) => {
  const bin = await readPytorchCheckpoint(join(BIN, 'image-conv', 'pytorch_model.bin'));
  const expected = await twin('image-conv');
  const names = [...expected.keys()].filter((k) => k.endsWith('num_batches_tracked'));
  t.ok(names.length > 0, 'the twin has num_batches_tracked');
  for (const name of names) {
    const tensor = bin.get(name)!;
    t.equal(tensor.dtype, 'int64');
    t.same(tensor.shape, expected.get(name)!.shape);
    t.ok(tensor.data instanceof BigInt64Array);
    t.equal(tensor.data[0], expected.get(name)!.data[0]);
  }
});

t.test('zip storages are zero-copy views on the file buffer', async (t) => {
  const path = join(BIN, 'text-mlm', 'pytorch_model.bin');
  const bytes = readFileSync(path);
  const tensors = parsePytorchCheckpoint(bytes, path);
  for (const [name, tensor] of tensors) {
    if (tensor.size > 0) t.equal(tensor.data.buffer, bytes.buffer, `${name} is a view`);
  }
  // Shifted by one byte, the storages are misaligned: copies with the same values.
  const shifted = new Uint8Array(bytes.byteLength + 1);
  shifted.set(bytes, 1);
  const moved = parsePytorchCheckpoint(shifted.subarray(1), path);
  for (const [name, tensor] of tensors) {
    t.not(moved.get(name)!.data.buffer, shifted.buffer, `${name} copied when misaligned`);
    sameTensor(t, moved.get(name), tensor, name);
  }
});

t.test('the legacy (non-zip) file holds the same tensors as the zip file', async (t) => {
  const legacy = await readPytorchCheckpoint(join(TC, 'pytorch_model.legacy.bin'));
  const zip = await readPytorchCheckpoint(join(TC, 'pytorch_model.bin'));
  t.same([...legacy.keys()], [...zip.keys()], 'same names in the same order');
  for (const [name, tensor] of zip) sameTensor(t, legacy.get(name), tensor, name);
});

/** float32 -> bfloat16 bits, rounding to nearest even (as torch's .to(torch.bfloat16) does). */
function toBfloat16(x: number): number {
  const bits = new Uint32Array(Float32Array.of(x).buffer)[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff; // NaN stays (quiet) NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

t.test('the bfloat16 file holds the float32 values rounded to bfloat16', async (t) => {
  t.equal(toBfloat16(1 + 2 ** -8), 0x3f80, 'tie rounds to even (down)');
  t.equal(toBfloat16(1 + 3 * 2 ** -8), 0x3f82, 'tie rounds to even (up)');
  const bf16 = await readPytorchCheckpoint(join(TC, 'pytorch_model.bf16.bin'));
  const f32 = await twin('text-classification');
  t.same([...bf16.keys()].sort(), [...f32.keys()].sort());
  for (const [name, tensor] of f32) {
    const actual = bf16.get(name)!;
    t.equal(actual.dtype, 'bfloat16', `${name} dtype`);
    t.ok(actual.data instanceof Uint16Array);
    t.same(actual.shape, tensor.shape);
    const expected = Uint16Array.from(tensor.data as Float32Array, toBfloat16);
    t.ok(Buffer.from(actual.bytes()).equals(Buffer.from(expected.buffer)), `${name} values`);
  }
});

t.test('views of one storage: offsets and non-contiguous strides', async (t) => {
  const bytes = readFileSync(join(TC, 'views.bin'));
  const views = parsePytorchCheckpoint(bytes, 'views.bin');
  const expected = (await readSafetensors(join(TC, 'views.expected.safetensors'))).tensors;
  t.same([...views.keys()], ['view', 'full', 't']);
  for (const [name, tensor] of expected) sameTensor(t, views.get(name), tensor, name);
  t.same(views.get('view')!.shape, [3, 6]);
  t.same(views.get('t')!.shape, [8, 10]);
  t.equal(views.get('full')!.data.buffer, bytes.buffer, 'contiguous full is a view');
  t.not(views.get('view')!.data.buffer, bytes.buffer, 'strided view is a copy');
  t.not(views.get('t')!.data.buffer, bytes.buffer, 'transpose is a copy');
});

t.test('hand-made checkpoints: DEFLATE entries, every storage type, legacy storage views', async (t) => {
  const specs: TensorSpec[] = [
    { name: 'w', key: '0', numel: 6, size: [2, 3] },
    { name: 'col', key: '0', numel: 6, offset: 1, size: [2], stride: [3] },
    { name: 'scalar', key: '0', numel: 6, offset: 5, size: [] },
    { name: 'empty', key: '0', numel: 6, size: [0, 4] },
    { name: 'i64', key: '1', storage: 'LongStorage', numel: 2, size: [2] },
    { name: 'bool', key: '2', storage: 'BoolStorage', numel: 3, size: [3] },
    { name: 'f16', key: '3', storage: 'HalfStorage', numel: 1, size: [1] },
    { name: 'f64', key: '4', storage: 'DoubleStorage', numel: 1, size: [1] },
    { name: 'i8', key: '5', storage: 'CharStorage', numel: 2, size: [2] },
  ];
  const storages = {
    '0': floats(0, 1, 2, 3, 4, 5),
    '1': new Uint8Array(BigInt64Array.of(-1n, 2n ** 40n).buffer),
    '2': Uint8Array.of(1, 0, 1),
    '3': Uint8Array.of(0x00, 0x3c),
    '4': new Uint8Array(Float64Array.of(Math.PI).buffer),
    '5': Uint8Array.of(0xff, 0x7f),
  };
  for (const method of [0, 8]) {
    const m = parsePytorchCheckpoint(checkpointZip(statePickle(specs), storages, method), `method ${method}`);
    t.same([...m.keys()], specs.map((s) => s.name));
    t.same([...m.get('w')!.data], [0, 1, 2, 3, 4, 5]);
    t.same([...m.get('col')!.data], [1, 4]);
    t.same(m.get('scalar')!.shape, []);
    t.same([...m.get('scalar')!.data], [5]);
    t.same(m.get('empty')!.shape, [0, 4]);
    t.same([...m.get('i64')!.data], [-1n, 2n ** 40n]);
    t.equal(m.get('bool')!.dtype, 'bool');
    t.same([...m.get('bool')!.data], [1, 0, 1]);
    t.equal(m.get('f16')!.get(0), 1);
    t.equal(m.get('f64')!.data[0], Math.PI);
    t.same([...m.get('i8')!.data], [-1, 127]);
  }

  // model.state_dict(): an OrderedDict with `_metadata` set through BUILD (ignored, not a tensor).
  const ordered = parsePytorchCheckpoint(checkpointZip(statePickle(specs.slice(0, 2), false, true), { '0': storages['0'] }), 'ordered');
  t.same([...ordered.keys()], ['w', 'col']);
  t.same([...ordered.get('col')!.data], [1, 4]);

  // Legacy storage views: (view_key, offset, size) slices of a root storage.
  const legacy = legacyFile(
    [
      { name: 'a', key: 'root', numel: 6, size: [2], view: ['v', 2, 3] },
      { name: 'b', key: 'root', numel: 6, offset: 1, size: [2], view: ['v', 2, 3] },
      { name: 'whole', key: 'root', numel: 6, size: [6] },
    ],
    [['root', 6n, floats(0, 1, 2, 3, 4, 5)]],
  );
  const m = parsePytorchCheckpoint(legacy, 'legacy views');
  t.same([...m.get('a')!.data], [2, 3]);
  t.same([...m.get('b')!.data], [3, 4]);
  t.same([...m.get('whole')!.data], [0, 1, 2, 3, 4, 5]);
});

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

type ErrorClass = typeof WeightsFormatError | typeof UnsafePickleError;

/** Parses `bytes` expecting `cls` with `message`, quickly and without a large allocation. */
function expectRefused(t: Test, what: string, bytes: Uint8Array, cls: ErrorClass, message: RegExp, exact = true): void {
  const before = process.memoryUsage().arrayBuffers;
  const start = performance.now();
  let error: unknown;
  try {
    parsePytorchCheckpoint(bytes, 'hostile.bin');
  } catch (err) {
    error = err;
  }
  const ms = performance.now() - start;
  t.ok(error instanceof cls, `${what}: throws ${cls.name} (got ${(error as Error)?.constructor?.name}: ${(error as Error)?.message})`);
  if (cls === WeightsFormatError && exact) t.notOk(error instanceof UnsafePickleError, `${what}: a format error, not a refusal`);
  t.match((error as Error)?.message ?? '', message, `${what}: message`);
  t.match((error as Error)?.message ?? '', /^hostile\.bin: /, `${what}: names the file`);
  t.ok(ms < 500, `${what}: took ${ms.toFixed(1)} ms`);
  t.ok(process.memoryUsage().arrayBuffers - before < 128 * 2 ** 20, `${what}: no large allocation`);
}

/** Runs a hostile pickle both as a whole file (legacy path) and as the data.pkl of a valid zip. */
function expectPickleRefused(t: Test, what: string, pickle: Buffer, cls: ErrorClass, message: RegExp): void {
  expectRefused(t, `${what} (bare)`, pickle, cls, message);
  expectRefused(t, `${what} (in a zip)`, checkpointZip(pickle), cls, message);
}

t.test('globals outside the allow-list are refused before anything runs', async (t) => {
  const cases: [string, Buffer][] = [
    ['os.system', pk(PROTO2, global('os', 'system'), str(PAYLOAD), 0x85, 'R', STOP)],
    ['posix.system', pk(PROTO2, global('posix', 'system'), str(PAYLOAD), 0x85, 'R', STOP)],
    // builtins.eval through STACK_GLOBAL (protocol 4, with FRAME and MEMOIZE as Python writes it).
    [
      'builtins.eval',
      pk(0x80, 4, 0x8c, 8, 'builtins', 0x94, 0x8c, 4, 'eval', 0x94, 0x93, 0x94, str(`__import__('os').system('${PAYLOAD}')`), 0x85, 'R', STOP),
    ],
    ['subprocess.Popen', pk(PROTO2, global('subprocess', 'Popen'), MARK, str('touch'), str(TRIPWIRE), 'l', 0x85, 'R', STOP)],
    ['__builtin__.getattr', pk(PROTO2, global('__builtin__', 'getattr'), STOP)],
    ['torch._utils._rebuild_qtensor', pk(PROTO2, global('torch._utils', '_rebuild_qtensor'), STOP)],
    ['numpy.core.multiarray._reconstruct', pk(PROTO2, global('numpy.core.multiarray', '_reconstruct'), STOP)],
    ['torch.load', pk(PROTO2, global('torch', 'load'), STOP)],
    ['collections.__proto__', pk(PROTO2, global('collections', '__proto__'), STOP)],
  ];
  for (const [refused, pickle] of cases) {
    expectPickleRefused(t, refused, pickle, UnsafePickleError, new RegExp(`asks for ${refused.replace(/\./g, '\\.')}`));
    try {
      parsePytorchCheckpoint(pickle, 'x');
    } catch (err) {
      t.equal((err as UnsafePickleError).refused, refused);
    }
  }
  // A refused global in a real state dict, after valid tensors: still refused.
  const sd = statePickle([{ name: 'w', key: '0', numel: 1, size: [1] }]);
  const evil = Buffer.concat([sd.subarray(0, sd.length - 2), str('x'), global('os', 'system'), str(PAYLOAD), pk(0x85, 'R', 'u', STOP)]);
  expectRefused(t, 'os.system inside a state dict', checkpointZip(evil, { '0': floats(1) }), UnsafePickleError, /os\.system/);
});

t.test('opcodes outside the supported set are refused', async (t) => {
  const cases: [string, Buffer][] = [
    ['INST', pk(PROTO2, MARK, str(PAYLOAD), 'i', 'os\nsystem\n', STOP)],
    ['OBJ', pk(PROTO2, MARK, global('collections', 'OrderedDict'), 'o', STOP)],
    ['PERSID', pk(PROTO2, 'P', '0\n', STOP)],
    ['EXT1', pk(PROTO2, 0x82, 1, STOP)],
    ['NEWOBJ_EX', pk(PROTO2, 0x92, STOP)],
    ['DUP', pk(PROTO2, 'N', '2', STOP)],
    ['STRING', pk(PROTO2, "S'x'\n", STOP)],
    ['READONLY_BUFFER', pk(PROTO2, 0x98, STOP)],
  ];
  for (const [name, pickle] of cases) expectPickleRefused(t, name, pickle, UnsafePickleError, new RegExp(`opcode ${name}\\b`));
  expectPickleRefused(t, 'unknown opcode', pk(PROTO2, 0xff, STOP), WeightsFormatError, /invalid opcode 0xff/);
  expectPickleRefused(t, 'protocol 0', pk('(lp0\n.'), WeightsFormatError, /not a|protocol/);
  expectPickleRefused(t, 'protocol 6', pk(0x80, 6, 'N', STOP), WeightsFormatError, /protocol 6/);
  expectPickleRefused(t, 'calling a storage type', pk(PROTO2, global('torch', 'FloatStorage'), ')R', STOP), WeightsFormatError, /cannot be called/);
  expectPickleRefused(t, 'BUILD on a list', pk(PROTO2, ']', '}', 'b', STOP), WeightsFormatError, /BUILD on list/);
});

t.test('hostile structure: loops, nesting, floods, lengths, truncation', async (t) => {
  // These two are well-formed pickles, so bare (as the first pickle of a legacy file) they fail the magic-number check.
  const loop = pk(PROTO2, ']', 'q', 0, 'h', 0, 'a', STOP);
  expectRefused(t, 'list appended to itself', checkpointZip(loop), WeightsFormatError, /holds list, not a state dict/);
  expectRefused(t, 'list appended to itself (bare)', loop, WeightsFormatError, /magic number/);
  const selfDict = pk(PROTO2, '}', 'q', 0, str('x'), 'h', 0, 's', STOP);
  expectRefused(t, 'dict containing itself', checkpointZip(selfDict), WeightsFormatError, /entry "x" is dict, not a tensor/);
  expectRefused(t, 'dict containing itself (bare)', selfDict, WeightsFormatError, /magic number/);
  expectPickleRefused(t, '100k nested MARK/EMPTY_LIST', pk(PROTO2, '(]'.repeat(100_000), STOP), WeightsFormatError, /nested deeper than 1000/);
  expectPickleRefused(t, '200k items on the stack', pk(PROTO2, ']'.repeat(200_000), STOP), WeightsFormatError, /more than 100000 items/);
  const flood = Buffer.concat([PROTO2, pk('N'), ...Array.from({ length: 100_001 }, (_, i) => pk('r', u32(i * 7))), pk(STOP)]);
  expectPickleRefused(t, 'memo flood', flood, WeightsFormatError, /more than 100000 memo entries/);
  expectPickleRefused(t, 'BINGET of a missing memo entry', pk(PROTO2, 'j', u32(0xffffffff), STOP), WeightsFormatError, /never stored/);
  expectPickleRefused(t, 'never reaches STOP', pk(PROTO2, '}', 'N'), WeightsFormatError, /ends before its STOP/);
  expectPickleRefused(t, 'STOP with extra items', pk(PROTO2, 'NN', STOP), WeightsFormatError, /STOP with 2 items/);
  expectPickleRefused(t, 'stack underflow', pk(PROTO2, 'a', STOP), WeightsFormatError, /underflow/);
  expectPickleRefused(t, 'absurd LONG1 width', pk(PROTO2, 0x8a, 200, Buffer.alloc(200, 0xff), STOP), WeightsFormatError, /200-byte integer/);
  expectPickleRefused(t, 'BINUNICODE past the end', pk(PROTO2, 'X', u32(0xfffffff0), 'abc', STOP), WeightsFormatError, /needs 4294967280 bytes/);
  expectPickleRefused(t, 'BINUNICODE8 past the end', pk(0x80, 4, 0x8d, u64(2n ** 60n), 'abc', STOP), WeightsFormatError, /runs past the end/);
  expectPickleRefused(t, 'BINBYTES past the end', pk(PROTO2, 'B', u32(1 << 30), STOP), WeightsFormatError, /needs 1073741824 bytes/);
  expectPickleRefused(t, 'FRAME past the end', pk(0x80, 4, 0x95, u64(2n ** 40n), 'N', STOP), WeightsFormatError, /frame of/);
  expectPickleRefused(t, 'invalid UTF-8', pk(PROTO2, 'X', u32(2), 0xc3, 0x28, STOP), WeightsFormatError, /not valid UTF-8/);
  expectPickleRefused(t, 'overlong GLOBAL', pk(PROTO2, 'c', 'x'.repeat(5000)), WeightsFormatError, /global name longer than 1000 bytes/);
  expectPickleRefused(t, 'GLOBAL cut short', pk(PROTO2, 'c', 'os\nsys'), WeightsFormatError, /ends inside a global name/);
  expectRefused(t, 'not a state dict', checkpointZip(pk(PROTO2, '}', str('epoch'), int(3), 's', STOP)), WeightsFormatError, /"epoch" is int, not a tensor/);

  const sd = statePickle([{ name: 'w', key: '0', numel: 2, size: [2] }]);
  for (const cut of [1, 10, sd.length >> 1, sd.length - 1]) {
    expectRefused(t, `data.pkl truncated to ${cut} bytes`, checkpointZip(sd.subarray(0, cut), { '0': floats(1, 2) }), WeightsFormatError, /truncated/);
  }
  expectRefused(t, 'trailing bytes after STOP', checkpointZip(pk(sd, 'garbage'), { '0': floats(1, 2) }), WeightsFormatError, /7 bytes after STOP/);
});

t.test('storages and tensor geometry are checked', async (t) => {
  const zip = (specs: TensorSpec[], storages: Record<string, Uint8Array>) => checkpointZip(statePickle(specs), storages);
  expectRefused(t, 'tensor larger than its storage', zip([{ name: 'w', key: '0', numel: 10, size: [100] }], { '0': new Uint8Array(40) }), WeightsFormatError, /reaches past the 10 elements/);
  expectRefused(t, 'offset past the storage', zip([{ name: 'w', key: '0', numel: 10, offset: 8, size: [3] }], { '0': new Uint8Array(40) }), WeightsFormatError, /reaches past/);
  expectRefused(t, 'stride past the storage', zip([{ name: 'w', key: '0', numel: 10, size: [2, 2], stride: [9, 1] }], { '0': new Uint8Array(40) }), WeightsFormatError, /reaches past/);
  expectRefused(t, 'storage entry smaller than declared', zip([{ name: 'w', key: '0', numel: 10, size: [10] }], { '0': new Uint8Array(32) }), WeightsFormatError, /holds 32 bytes but 10 float32 elements need 40/);
  expectRefused(t, 'storage key absent from the archive', zip([{ name: 'w', key: '7', numel: 1, size: [1] }], { '0': new Uint8Array(4) }), WeightsFormatError, /storage "7" is referenced but archive\/data\/7 is not in the archive/);
  expectRefused(
    t,
    'storage referenced with two dtypes',
    zip([{ name: 'a', key: '0', numel: 2, size: [2] }, { name: 'b', key: '0', storage: 'LongStorage', numel: 2, size: [2] }], { '0': new Uint8Array(16) }),
    WeightsFormatError,
    /referenced as both float32 and int64/,
  );
  expectRefused(
    t,
    'storage referenced with two sizes',
    zip([{ name: 'a', key: '0', numel: 2, size: [2] }, { name: 'b', key: '0', numel: 4, size: [2] }], { '0': new Uint8Array(16) }),
    WeightsFormatError,
    /with 2 and with 4 elements/,
  );
  expectRefused(t, 'absurd shape', zip([{ name: 'w', key: '0', numel: 1, size: [2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1], stride: [0, 0, 0] }], { '0': new Uint8Array(4) }), WeightsFormatError, /too many elements/);
  // A stride-0 (expanded) view of one element: legal, but its copy would be 256 MiB.
  expectRefused(t, 'expanded view beyond the copy budget', zip([{ name: 'w', key: '0', numel: 1, size: [2 ** 26], stride: [0] }], { '0': new Uint8Array(4) }), WeightsFormatError, /memory budget/);
  const small = parsePytorchCheckpoint(zip([{ name: 'w', key: '0', numel: 1, size: [4, 2], stride: [0, 0] }], { '0': floats(7) }), 'expanded');
  t.same([...small.get('w')!.data], [7, 7, 7, 7, 7, 7, 7, 7], 'a small expanded view is copied');
  const badPid = pk(PROTO2, '}', str('w'), global('torch._utils', '_rebuild_tensor_v2'), tupleOf([pk(tupleOf([str('module'), str('x')]), 'Q')]), 'R', 's', STOP);
  expectRefused(t, 'persistent id that is not a storage', checkpointZip(badPid), WeightsFormatError, /persistent id must be/);
});

t.test('hostile zip archives', async (t) => {
  const sd = statePickle([{ name: 'w', key: '0', numel: 2, size: [2] }]);
  const good = checkpointZip(sd, { '0': floats(1, 2) });
  t.same([...parsePytorchCheckpoint(good, 'good')!.get('w')!.data], [1, 2], 'the unmodified archive reads');

  // A flipped byte inside the STORED storage of a real torch file.
  const views = readFileSync(join(TC, 'views.bin'));
  const flipped = Buffer.from(views);
  flipped[localDataOffset(flipped, 'views/data/0') + 5]! ^= 0x10;
  expectRefused(t, 'flipped storage byte', flipped, WeightsFormatError, /"views\/data\/0" fails its CRC-32 check/);
  const pkl = Buffer.from(views);
  pkl[localDataOffset(pkl, 'views/data.pkl') + 10]! ^= 0x01;
  expectRefused(t, 'flipped data.pkl byte', pkl, WeightsFormatError, /data\.pkl" fails its CRC-32/);
  expectRefused(t, 'wrong CRC in the directory', makeZip([{ name: 'a/data.pkl', data: sd, crc: 1234 }]), WeightsFormatError, /CRC-32/);

  for (const cut of [4, 100, views.length >> 1, views.length - 1]) {
    expectRefused(t, `real zip truncated to ${cut} bytes`, views.subarray(0, cut), WeightsFormatError, /end-of-central-directory|runs past/);
  }
  const appended = Buffer.concat([views, Buffer.from('junk')]);
  expectRefused(t, 'bytes after the end record', appended, WeightsFormatError, /end-of-central-directory/);

  // Central directory offset (in the plain end record) moved past the end of the file.
  const pastEnd = Buffer.from(good);
  pastEnd.writeUInt32LE(good.length + 100, good.length - 22 + 16);
  expectRefused(t, 'central directory past the end', pastEnd, WeightsFormatError, /central directory .* runs past/);
  const hugeCount = Buffer.from(good);
  hugeCount.writeUInt16LE(0xfff0, good.length - 22 + 8);
  hugeCount.writeUInt16LE(0xfff0, good.length - 22 + 10);
  expectRefused(t, 'absurd entry count', hugeCount, WeightsFormatError, /claims 65520 entries/);
  // The same in the zip64 end record of a real torch file.
  const z64 = Buffer.from(views);
  const rec = z64.lastIndexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06]));
  z64.writeBigUInt64LE(2n ** 40n, rec + 48);
  expectRefused(t, 'zip64 end records that disagree', z64, WeightsFormatError, /the zip and zip64 end records disagree/);
  z64.writeUInt32LE(0xffffffff, z64.length - 22 + 16);
  expectRefused(t, 'zip64 central directory past the end', z64, WeightsFormatError, /central directory \[1099511627776, \d+\) runs past its end record/);
  const z64count = Buffer.from(views);
  z64count.writeBigUInt64LE(2n ** 50n, rec + 24);
  z64count.writeBigUInt64LE(2n ** 50n, rec + 32);
  z64count.writeUInt16LE(0xffff, z64count.length - 22 + 8);
  z64count.writeUInt16LE(0xffff, z64count.length - 22 + 10);
  expectRefused(t, 'zip64 absurd entry count', z64count, WeightsFormatError, /claims 1125899906842624 entries/);

  const entries = [
    { name: 'archive/data.pkl', data: sd },
    { name: 'archive/data/0', data: floats(1, 2) },
  ];
  const huge = 2n ** 40n;
  expectRefused(t, 'STORED entry of 2^40 bytes', makeZip([entries[0]!, { ...entries[1]!, forgedSize: huge, forgedCompressedSize: huge }]), WeightsFormatError, /1099511627776 bytes at offset \d+ run past the start of the central directory/);
  expectRefused(t, 'STORED entry claiming 2^40 bytes uncompressed', makeZip([entries[0]!, { ...entries[1]!, forgedSize: huge }]), WeightsFormatError, /STORED but declares 8 stored and 1099511627776 uncompressed/);
  expectRefused(t, 'DEFLATE entry of 2^40 bytes', makeZip([entries[0]!, { ...entries[1]!, method: 8, forgedSize: huge }]), WeightsFormatError, /declares 1099511627776 bytes from \d+ compressed ones, beyond what DEFLATE can produce/);
  expectRefused(t, 'encrypted entry', makeZip([entries[0]!, { ...entries[1]!, flags: 0x801 }]), WeightsFormatError, /encrypted/);
  expectRefused(t, 'unknown compression method', makeZip([entries[0]!, { ...entries[1]!, method: 12 }]), WeightsFormatError, /compression method 12/);
  expectRefused(t, 'duplicate names', makeZip([entries[0]!, entries[1]!, entries[1]!]), WeightsFormatError, /"archive\/data\/0" twice/);
  expectRefused(t, 'no data.pkl', makeZip([entries[1]!]), WeightsFormatError, /no <archive>\/data\.pkl/);
  expectRefused(t, 'two data.pkl', makeZip([entries[0]!, { name: 'b/data.pkl', data: sd }, entries[1]!]), WeightsFormatError, /2 data\.pkl records/);
  expectRefused(t, 'big-endian byteorder', makeZip([...entries, { name: 'archive/byteorder', data: Buffer.from('big') }]), WeightsFormatError, /only little-endian/);
  // DEFLATE data that inflates to more than the declared size.
  const bomb = makeZip([entries[0]!, { name: 'archive/data/0', data: new Uint8Array(1 << 20), method: 8 }]);
  const bombCentral = bomb.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  bomb.writeUInt32LE(8, bombCentral + 24);
  expectRefused(t, 'DEFLATE beyond its declared size', bomb, WeightsFormatError, /does not inflate to its declared 8 bytes/);
  // Two entries whose data overlap: data.pkl's sizes grown over the next entry.
  const overlap = Buffer.from(good);
  const first = overlap.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  overlap.writeUInt32LE(sd.length + 40, first + 20);
  overlap.writeUInt32LE(sd.length + 40, first + 24);
  expectRefused(t, 'overlapping entries', overlap, WeightsFormatError, /zip entries "archive\/data\.pkl" and "archive\/byteorder" overlap/);
  // A central entry pointing at another entry's local header.
  const misdirected = Buffer.from(good);
  misdirected.writeUInt32LE(0, misdirected.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), first + 4) + 42);
  expectRefused(t, 'central entry pointing at another local header', misdirected, WeightsFormatError, /"archive\/byteorder": local header names another file/);
});

t.test('DEFLATE bombs: an entry is inflated only to the size the pickle declares for its storage', async (t) => {
  // A real bomb: 16 MiB of zeros deflated with a sync flush (so copies can follow one another),
  // 64 copies and a final empty block: 1 GiB from about 1 MiB, within DEFLATE's 1032:1 ratio.
  const segment = zlib.deflateRawSync(Buffer.alloc(16 << 20), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const bombData = Buffer.concat([...Array<Buffer>(64).fill(segment), zlib.deflateRawSync(Buffer.alloc(0))]);
  const GiB = 2n ** 30n;
  t.ok(bombData.length < 1.2 * 2 ** 20, `the bomb is ${bombData.length} bytes`);
  const sd = statePickle([{ name: 'w', key: '0', numel: 2, size: [2] }]);
  const pickleEntry = { name: 'archive/data.pkl', data: sd };
  // The pickle declares 2 float32 (8 bytes); the zip entry declares 1 GiB and its data holds it.
  const storageBomb = makeZip([pickleEntry, { name: 'archive/data/0', data: floats(1, 2), method: 8, deflated: bombData, forgedSize: GiB }]);
  expectRefused(t, 'storage entry declaring 1 GiB for an 8-byte storage', storageBomb, WeightsFormatError, /storage "0" holds 1073741824 bytes but 2 float32 elements need 8/);
  // Checked for every storage before the first is inflated: a bomb behind a good storage is refused as fast.
  const two = statePickle([{ name: 'a', key: '0', numel: 2, size: [2] }, { name: 'b', key: '1', numel: 2, size: [2] }]);
  const second = makeZip([{ name: 'archive/data.pkl', data: two }, { name: 'archive/data/0', data: floats(1, 2), method: 8 }, { name: 'archive/data/1', data: floats(1, 2), method: 8, deflated: bombData, forgedSize: GiB }]);
  expectRefused(t, 'a bomb as the second storage', second, WeightsFormatError, /storage "1" holds 1073741824 bytes but 2 float32 elements need 8/);
  // data.pkl and byteorder have their own caps.
  const pickleBomb = makeZip([{ name: 'archive/data.pkl', data: sd, method: 8, deflated: bombData, forgedSize: GiB }]);
  expectRefused(t, 'data.pkl declaring 1 GiB', pickleBomb, WeightsFormatError, /archive\/data\.pkl declares 1073741824 bytes, more than the 67108864/);
  const orderBomb = makeZip([pickleEntry, { name: 'archive/byteorder', data: Buffer.from('little'), method: 8, deflated: bombData, forgedSize: GiB }]);
  expectRefused(t, 'byteorder declaring 1 GiB', orderBomb, WeightsFormatError, /archive\/byteorder declares 1073741824 bytes/);
  // A storage whose declared size agrees with the pickle still reads, DEFLATE or not.
  const honest = makeZip([pickleEntry, { name: 'archive/data/0', data: floats(3, 4), method: 8 }]);
  t.same([...parsePytorchCheckpoint(honest, 'honest.bin').get('w')!.data], [3, 4]);
});

t.test('hostile legacy files', async (t) => {
  const specs: TensorSpec[] = [{ name: 'w', key: 'k', numel: 2, size: [2] }];
  t.same([...parsePytorchCheckpoint(legacyFile(specs, [['k', 2n, floats(1, 2)]]), 'ok').get('w')!.data], [1, 2], 'a valid hand-made legacy file reads');
  expectRefused(t, 'wrong magic', legacyFile(specs, [['k', 2n, floats(1, 2)]], 0x1234n), WeightsFormatError, /magic number/);
  expectRefused(t, 'count mismatch', legacyFile(specs, [['k', 3n, floats(1, 2, 3)]]), WeightsFormatError, /stored with 3 elements but referenced with 2/);
  expectRefused(t, 'negative count', legacyFile(specs, [['k', -1n, floats(1, 2)]]), WeightsFormatError, /stored with -1 elements/);
  expectRefused(t, 'unreferenced key', legacyFile(specs, [['k', 2n, floats(1, 2)], ['x', 1n, floats(1)]]), WeightsFormatError, /"x" is listed but never referenced/);
  expectRefused(t, 'missing key', legacyFile(specs, []), WeightsFormatError, /"k" is referenced but its data is not in the file/);
  expectRefused(t, 'trailing bytes', Buffer.concat([legacyFile(specs, [['k', 2n, floats(1, 2)]]), Buffer.from('x')]), WeightsFormatError, /1 unexpected bytes/);
  expectRefused(t, 'view past its root', legacyFile([{ ...specs[0]!, view: ['v', 1, 5] }], [['k', 2n, floats(1, 2)]]), WeightsFormatError, /storage view \[1, 6\) runs past/);

  const real = readFileSync(join(TC, 'pytorch_model.legacy.bin'));
  for (const cut of [1, 14, 200, 11_000, real.length >> 1, real.length - 1]) {
    expectRefused(t, `real legacy file truncated to ${cut} bytes`, real.subarray(0, cut), WeightsFormatError, /truncated/);
  }
});

t.test('empty, random and non-checkpoint input', async (t) => {
  expectRefused(t, 'empty file', new Uint8Array(0), WeightsFormatError, /file is empty/);
  let seed = 12345;
  const random = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    return b;
  };
  // Random opcodes may hit a refused one (UnsafePickleError, a WeightsFormatError subclass): either is right.
  for (let i = 0; i < 20; i++) expectRefused(t, `random bytes ${i}`, random(1 + i * 997), WeightsFormatError, /./, false);
  for (let i = 0; i < 20; i++) expectRefused(t, `random bytes behind a zip magic ${i}`, pk('PK', 3, 4, random(i * 499)), WeightsFormatError, /./, false);
  for (let i = 0; i < 20; i++) expectRefused(t, `random pickle opcodes ${i}`, pk(PROTO2, random(i * 331)), WeightsFormatError, /./, false);
  expectRefused(t, 'a safetensors file', readFileSync(join(FIXTURES, 'text-mlm', 'model.safetensors')), WeightsFormatError, /not a PyTorch checkpoint/);
  t.throws(() => parsePytorchCheckpoint('nope' as never, 'x'), InvalidArgumentError);
  await t.rejects(readPytorchCheckpoint(join(BIN, 'no-such-file.bin')), { name: 'WeightsFormatError', message: /no-such-file\.bin.*ENOENT/ });
  await t.rejects(readPytorchCheckpoint(BIN), { name: 'WeightsFormatError', message: /EISDIR/ });
});

t.test('the tripwire was never touched', async (t) => {
  t.notOk(existsSync(TRIPWIRE), `${TRIPWIRE} does not exist`);
});
