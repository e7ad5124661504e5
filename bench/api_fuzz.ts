/**
 * Fuzz of the public API: every entry point exported from lib/index.ts is called with random
 * arguments (wrong types, null/undefined, NaN, huge and negative numbers, wrong typed-array kinds,
 * wrong shapes, detached, resizable and SharedArrayBuffer-backed arrays, objects whose getters
 * throw, proxies, very long arrays and strings) and with valid calls carrying one such mutation,
 * on small fixture models. The only acceptable outcomes are a result or a PerceiverError (thrown
 * or as a rejection). Anything else (a TypeError, a RangeError, a hang, a crash) is a finding.
 *
 * A user's own exception: a getter or proxy trap of the caller's that throws may let that very
 * value through unchanged, as Node's own APIs do (wrapping it would hide the caller's stack and
 * class). The harness accepts exactly the value its own getters throw (an identity check), and
 * only in a case whose arguments hold such a getter; every other error must be a PerceiverError.
 *
 *   node dist/bench/api_fuzz.js [--iterations 10000] [--seed 1]      (npm run bench:api-fuzz)
 *
 * test/api-fuzz.test.ts runs a short pass of the same generator in CI. Nothing here leaves the
 * machine: the Hub is set offline with a loopback endpoint, Redis URLs point at a closed loopback
 * port, and every file written goes to a temporary folder removed at the end.
 */
import { mkdtemp, rm, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as api from '../lib/index.js';
import { packageRoot } from '../lib/native/binding.js';
import { Random } from './fuzz.js';

/** A case slower than this counts as a hang. */
export const API_HANG_MS = 10_000;

/** What the harness's own throwing getters and proxy traps throw: the one non-PerceiverError accepted. */
export class UserThrown extends Error {
  constructor() {
    super('thrown by a getter of the caller');
  }
}
const USER_THROWN = new UserThrown();

/** Resizable ArrayBuffers are ES2024; the project's lib setting is ES2022, so they are typed here. */
type ResizableBuffer = ArrayBuffer & { resize(byteLength: number): void };
const ResizableArrayBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => ResizableBuffer;
type ViewConstructor = { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): ArrayBufferView; BYTES_PER_ELEMENT: number };

/** Detaches a buffer (its views get length 0), as transferring it to a worker does. */
function detach(buffer: ArrayBufferLike): void {
  structuredClone(buffer, { transfer: [buffer as ArrayBuffer] });
}

export interface ApiFuzzReport {
  runs: number;
  /** Calls that returned (or resolved). */
  returned: number;
  /** Calls that threw or rejected a PerceiverError. */
  rejected: number;
  /** Calls that let the caller's own getter exception through. */
  userThrown: number;
  /** Calls per entry point. */
  byEntry: Record<string, number>;
  findings: { entry: string; args: string; error: string }[];
  slowestMs: number;
  slowestEntry: string;
}

type Api = typeof api;
type Model = api.PerceiverModel<api.Logits>;

interface Context {
  dir: string;
  /** The working folder before setup(), restored by teardown(). */
  cwd: string;
  text: Model;
  image: Model;
  multimodal: Model;
  tokenizer: api.PerceiverTokenizer;
  imageProcessor: api.PerceiverImageProcessor;
  files: { png: string; wav: string; txt: string; safetensors: string; checkpoint: string; out: string };
  /** Pipelines on the fixtures: text-classification, fill-mask, feature-extraction (text), image-classification. */
  pipelines: api.PipelineHandle[];
  /** DeviceTensors and encodings of the three models, a third of them disposed. */
  deviceTensors: api.DeviceTensor[];
  encodings: api.PerceiverEncoding[];
}

/** The random values, and whether the current case holds a getter or trap that throws. */
class Gen {
  throwing = false;
  constructor(readonly rng: Random, readonly ctx: Context) {}

  chance(p: number): boolean {
    return this.rng.next() < p;
  }

  int(n: number): number {
    return this.rng.int(n);
  }

  pick<T>(list: readonly T[]): T {
    return this.rng.pick(list);
  }

  number(): number {
    return this.pick([0, -0, 1, -1, 2, 3, 7, 8, 16, 48, 1.5, -2.5, 0.1, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 2 ** 53 + 2, 1e308, -1e308, Number.MIN_VALUE, Number.EPSILON, 1e-300, 255, 256, 262, 65536, 1e9]);
  }

  string(): string {
    const d = this.ctx.dir;
    return this.pick([
      '', 'a', ' ', 'x'.repeat(this.pick([100, 5000, 1_000_000])), '\ud800', '\u0000', '[MASK]', 'héllo 😀',
      'cpu', 'cuda', 'cuda:0', 'cuda:99', 'gpu', 'float32', 'float16', 'bfloat16', 'tfloat32', 'int64', 'bool', 'complex64',
      'mean', 'none', 'host', 'device', 'max_length', 'longest', 'embed', 'classify', 'text', 'image', 'audio', 'label', 'video',
      '__proto__', 'constructor', 'toString', 'org/name', 'deepmind/language-perceiver', 'a/b/c', 'x@main', 'x@..',
      join(d, 'missing'), join(d, 'missing', 'deeper', 'file.safetensors'), join(d, 'out', 'x.safetensors'), d,
      '/nonexistent/perceiver-fuzz', '/dev/null', 'redis://127.0.0.1:1', 'redis://', 'http://127.0.0.1:1/', 'file.wav', 'a.png',
      '*.png', join(d, '*'), 'C:\\x', '%s%n', '${x}',
    ]);
  }

  /** A typed array of a random kind, length and backing (detached, resizable, shared, offset). */
  typedArray(length = this.pick([0, 1, 3, 4, 8, 64, 192, 1000])): ArrayBufferView {
    const kinds = [Float32Array, Float64Array, Int32Array, Int16Array, Int8Array, Uint8Array, Uint8ClampedArray, Uint16Array, Uint32Array, BigInt64Array, BigUint64Array] as const;
    return this.backed(this.pick(kinds) as ViewConstructor, length);
  }

  backed(Kind: ViewConstructor, length: number): ArrayBufferView {
    const bytes = length * Kind.BYTES_PER_ELEMENT;
    switch (this.int(7)) {
      case 0: { // detached: its buffer transferred away, length 0
        const a = new Kind(new ArrayBuffer(bytes), 0, length);
        detach(a.buffer);
        return a;
      }
      case 1: { // resizable, length-tracking, later shrunk or grown
        const buffer = new ResizableArrayBuffer(bytes, { maxByteLength: bytes * 2 + 64 });
        const a = new Kind(buffer);
        if (this.chance(0.5)) buffer.resize(this.int(bytes + 1));
        return a;
      }
      case 2: // SharedArrayBuffer-backed
        return new Kind(new SharedArrayBuffer(bytes), 0, length);
      case 3: { // a view at an offset into a larger buffer
        const pad = 2 * Kind.BYTES_PER_ELEMENT;
        return new Kind(new ArrayBuffer(bytes + 2 * pad), pad, length);
      }
      default:
        return this.fill(new Kind(new ArrayBuffer(bytes), 0, length));
    }
  }

  fill<T extends ArrayBufferView>(a: T): T {
    const values = a as unknown as { length: number; [i: number]: number | bigint };
    const big = a instanceof BigInt64Array || a instanceof BigUint64Array;
    const v = this.pick([0, 1, 3, 7, 100, 261, 262, -1, 0.5, NaN, Infinity, -Infinity, 1e30, 0x7e00]);
    for (let i = 0; i < values.length; i++) values[i] = big ? BigInt(Number.isFinite(v) ? Math.trunc(Math.abs(v)) : 0) : v;
    return a;
  }

  shape(): number[] {
    return this.pick([[], [0], [1], [4], [1, 4], [2, 3], [1, 0], [0, 4], [1, 48], [1, 49], [2, 8], [1, 3, 8, 8], [2, 3, 8, 8], [1, 3, 9, 7], [1, 1, 8, 8], [1, 2, 3, 8, 8], [1, 64, 1], [1, 3], [1, 2, 27, 8, 8], [1, 1, 1, 1, 1, 1], [2 ** 20, 2 ** 20], [-1, 4], [1.5, 2], [NaN]]);
  }

  /** A valid Tensor of a random dtype and shape (its data may be later detached or shrunk). */
  tensor(shape = this.shape().filter((d) => Number.isSafeInteger(d) && d >= 0 && d < 4096)): api.Tensor {
    const dtype = this.pick(api.DTYPES);
    const size = shape.reduce((a, b) => a * b, 1);
    if (size > 1 << 16) return api.Tensor.zeros(dtype, [1, 4]);
    const info = { float64: Float64Array, float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, int64: BigInt64Array, int32: Int32Array, int16: Int16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array }[dtype];
    const resizable = this.chance(0.15);
    const Kind = info as unknown as ViewConstructor & (new (length: number) => ArrayBufferView);
    const buffer = resizable ? new ResizableArrayBuffer(size * info.BYTES_PER_ELEMENT, { maxByteLength: size * info.BYTES_PER_ELEMENT + 8 }) : undefined;
    const data = buffer ? new Kind(buffer) : this.fill(new Kind(size));
    const t = new api.Tensor(dtype, shape, data as never);
    if (resizable || this.chance(0.05)) {
      // Changed under the tensor after construction: shrunk, or detached.
      if (buffer) buffer.resize(0);
      else detach(data.buffer);
    }
    return t;
  }

  /**
   * The same tensor on another backing: a SharedArrayBuffer, a resizable buffer (maybe shrunk after
   * the Tensor was made), a buffer detached after, or an offset view.
   */
  reback(t: api.Tensor): api.Tensor {
    const Kind = t.data.constructor as ViewConstructor;
    const bytes = t.data.byteLength;
    const copy = (view: ArrayBufferView) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength).set(new Uint8Array(t.data.buffer, t.data.byteOffset, bytes));
    switch (this.int(4)) {
      case 0: {
        const data = new Kind(new SharedArrayBuffer(bytes), 0, t.size);
        copy(data);
        return new api.Tensor(t.dtype, t.shape, data as never);
      }
      case 1: {
        const buffer = new ResizableArrayBuffer(bytes, { maxByteLength: bytes + 64 });
        const data = new Kind(buffer);
        copy(data);
        const out = new api.Tensor(t.dtype, t.shape, data as never);
        buffer.resize(this.pick([0, Math.floor(bytes / 2), bytes + 8]));
        return out;
      }
      case 2: {
        const data = new Kind(new ArrayBuffer(bytes), 0, t.size);
        const out = new api.Tensor(t.dtype, t.shape, data as never);
        detach(data.buffer);
        return out;
      }
      default: {
        const pad = 16;
        const data = new Kind(new ArrayBuffer(bytes + 2 * pad), pad, t.size);
        copy(data);
        return new api.Tensor(t.dtype, t.shape, data as never);
      }
    }
  }

  /** An object with a getter (or a proxy) that throws the caller's own exception. */
  hostile(base: object = {}): object {
    this.throwing = true;
    if (this.chance(0.5)) {
      return new Proxy(base, {
        get: () => { throw USER_THROWN; },
        has: () => { throw USER_THROWN; },
        ownKeys: () => { throw USER_THROWN; },
        getPrototypeOf: () => { throw USER_THROWN; },
        getOwnPropertyDescriptor: () => { throw USER_THROWN; },
      });
    }
    const out: Record<string, unknown> = { ...base };
    for (const key of [...OPTION_KEYS.slice(0, 8), this.pick(OPTION_KEYS)]) {
      Object.defineProperty(out, key, { enumerable: true, configurable: true, get: () => { throw USER_THROWN; } });
    }
    return out;
  }

  /** Any value at all. */
  value(depth = 0): unknown {
    const c = this.ctx;
    switch (this.int(depth > 2 ? 8 : 20)) {
      case 0: return this.pick([undefined, null, true, false]);
      case 1: case 2: return this.number();
      case 3: case 4: return this.string();
      case 5: return this.pick([10n, -1n, 2n ** 64n, Symbol('fuzz'), () => 1, class {}, new Date(NaN), /x/, new Error('e'), Promise.resolve(1), new Map(), new WeakMap(), Object.create(null)]);
      case 6: return this.typedArray();
      case 7: return this.pick([new ArrayBuffer(8), new DataView(new ArrayBuffer(8)), new SharedArrayBuffer(8), Buffer.from('abc')]);
      case 8: return this.tensor();
      case 9: return this.array(depth);
      case 10: case 11: return this.object(depth);
      case 12: return this.hostile(this.object(depth + 1) as object);
      case 13: return new Proxy(this.object(depth + 1) as object, {}); // a transparent proxy
      case 14: return this.pick([c.tokenizer, c.imageProcessor, c.text, c.image, c.multimodal, c.text.config, api.Tensor, api.PerceiverModel]);
      case 15: return this.deviceTensor();
      case 16: return this.encoding();
      case 17: return this.pick([new Array(this.pick([5, 100_000])), Array.from({ length: this.pick([200_000, 1000]) }, (_, i) => i % 262)]);
      case 18: return this.pick([new String('a'), new Number(1), Object.freeze({ inputs: null })]);
      default: return this.object(depth);
    }
  }

  array(depth: number): unknown[] {
    const n = this.pick([0, 1, 2, 3, 4]);
    return Array.from({ length: n }, () => this.value(depth + 1));
  }

  object(depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const n = this.int(4);
    // Own data properties, "__proto__" included (as JSON.parse makes them), not assignments.
    for (let i = 0; i < n; i++) Object.defineProperty(out, this.pick(OPTION_KEYS), { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
    return out;
  }

  /** One of the pool's DeviceTensors (of each model, some disposed). */
  deviceTensor(): api.DeviceTensor {
    return this.pick(this.ctx.deviceTensors);
  }

  /** One of the pool's encodings (of each model, some disposed). */
  encoding(): api.PerceiverEncoding {
    return this.pick(this.ctx.encodings);
  }

  /** `valid`, or with probability p a random value instead. */
  maybe<T>(valid: T, p = 0.25): T | unknown {
    return this.chance(p) ? this.value(1) : valid;
  }

  /** A valid options object with one key changed, added or made hostile. */
  mutate(valid: Record<string, unknown>): unknown {
    switch (this.int(5)) {
      case 0: return valid;
      case 1: {
        const keys = Object.keys(valid);
        const key = keys.length > 0 && this.chance(0.7) ? this.pick(keys) : this.pick(OPTION_KEYS);
        return { ...valid, [key]: this.value(1) };
      }
      case 2: return this.hostile(valid);
      case 3: return this.value(1);
      default: return { ...valid, [this.pick(OPTION_KEYS)]: this.value(1) };
    }
  }
}

const OPTION_KEYS = [
  'inputs', 'attentionMask', 'outputs', 'pooling', 'subsampledOutputPoints', 'outputAttentions', 'outputHiddenStates', 'interpolatePosEncoding',
  'seed', 'device', 'dtype', 'hub', 'maxLength', 'padding', 'truncation', 'addSpecialTokens', 'padToMultipleOf', 'skipSpecialTokens',
  'modelMaxLength', 'doCenterCrop', 'cropSize', 'size', 'resample', 'doResize', 'doRescale', 'rescaleFactor', 'doNormalize', 'imageMean', 'imageStd',
  'maxBatchSize', 'maxDelayMs', 'maxQueue', 'signal', 'sampleRate', 'channels', 'maxBytes', 'maxSamples', 'frames', 'width', 'height', 'fit', 'fps',
  'start', 'duration', 'ffmpegPath', 'ffprobePath', 'timeoutMs', 'imageProcessor', 'maxFileBytes', 'image', 'audio', 'label', 'manifest', 'model',
  'models', 'task', 'items', 'outDir', 'partName', 'batchSize', 'shard', 'strict', 'queue', 'shardSize', 'attempts', 'backoffMs', 'pollMs',
  'concurrency', 'lockDurationMs', 'revision', 'cacheDir', 'endpoint', 'token', 'offline', 'progress', 'index', 'count', 'id', 'path', 'name',
  'topK', 'top_k', 'pooling', 'normalize', 'fps', 'video', 'flo', 'scale', 'maxRadius', 'chunkSize', 'tile', 'minOverlap',
  'num_latents', 'd_latents', 'd_model', 'architectures', 'id2label', 'hidden_act', 'vocab_size', 'max_position_embeddings', 'image_size', '__proto__',
] as const;

/** A small optical-flow field (sometimes on an odd backing), or one with a wrong size. */
function flowField(g: Gen): unknown {
  const [width, height] = g.pick([[4, 3], [1, 1], [4, 3], [0, 3], [2 ** 20, 2 ** 20], [4.5, 3]]);
  const flow = g.pick([() => new Float32Array(2 * 12).fill(g.pick([0, 1.5, -3, NaN, Infinity])), () => g.backed(Float32Array as never, 24) as Float32Array, () => new Float32Array(5)])();
  return g.mutate({ flow, width, height });
}

/** A small RGB frame, or one with a wrong size. */
function rgbFrame(g: Gen): unknown {
  const [width, height] = g.pick([[4, 3], [4, 3], [1, 1], [0, 0], [2 ** 16, 2 ** 16]]);
  const data = g.pick([() => new Uint8Array(36).fill(200), () => g.backed(Uint8Array as never, 36) as Uint8Array, () => new Uint8Array(7)])();
  return g.mutate({ data, width, height });
}

/** Ids [1, n] for the text models (vocabulary 262, 48 positions). */
function ids(n: number, fill = 10): api.Tensor<'int64'> {
  return new api.Tensor('int64', [1, n], new BigInt64Array(n).fill(BigInt(fill)));
}

/** A valid tensor, sometimes on an odd backing (shared, resizable and shrunk, detached, offset). */
function backed(g: Gen, t: api.Tensor): api.Tensor {
  return g.chance(0.3) ? g.reback(t) : t;
}

function pixels(g: Gen): unknown {
  const t = api.Tensor.zeros(g.pick(['float32', 'float64', 'float16'] as const), [g.pick([1, 2]), 3, 8, 8]);
  if (g.chance(0.1)) g.fill(t.data); // NaN, infinities, huge values, a float16 NaN word
  return g.maybe(backed(g, t));
}

function multimodalInputs(g: Gen): unknown {
  const valid: Record<string, unknown> = {
    image: backed(g, api.Tensor.zeros('float32', [1, 2, 3, 8, 8])),
    audio: backed(g, api.Tensor.zeros('float32', [1, 64, 1])),
    label: backed(g, api.Tensor.zeros('float32', [1, g.ctx.multimodal.config.num_labels])),
  };
  return g.mutate(valid);
}

/** Arguments for a model call: a valid call for `model` with one mutation, or random values. */
function modelCall(g: Gen, model: Model): unknown {
  const c = g.ctx;
  const inputs = model === c.text ? g.maybe(backed(g, ids(g.pick([1, 4, 48]), g.pick([0, 10, 261])))) : model === c.image ? pixels(g) : multimodalInputs(g);
  const call: Record<string, unknown> = { inputs };
  if (g.chance(0.3)) call.attentionMask = g.maybe(model === c.text ? backed(g, api.Tensor.from('int64', [1, 1, 1, 1], [1, 4])) : undefined);
  if (g.chance(0.3)) call.outputs = g.pick(['host', 'device', g.value(2)]);
  if (g.chance(0.2)) call.outputAttentions = g.value(2);
  if (g.chance(0.2)) call.outputHiddenStates = g.value(2);
  if (g.chance(0.2)) call.seed = g.value(2);
  if (g.chance(0.2)) call.interpolatePosEncoding = g.value(2);
  if (g.chance(0.3)) {
    call.subsampledOutputPoints = g.pick([
      [0, 1, 2], [-1], [2 ** 40], [1e6], new Int32Array([0, 47]), g.value(2), { image: [0], audio: null, label: [0] }, { bogus: [1] }, { image: [2 ** 31] },
      backed(g, api.Tensor.from('int64', [0, 1], [2])), Array.from({ length: 100_000 }, (_, i) => i % 48), { label: new Array(3) },
    ]);
  }
  return g.mutate(call);
}

type Entry = { name: string; call: (g: Gen) => unknown };

/** Every public entry point, with a generator of its arguments. */
function entries(ctx: Context): Entry[] {
  const f = ctx.files;
  const model = (g: Gen): Model => g.pick([ctx.text, ctx.image, ctx.multimodal]);
  const list: Entry[] = [
    // Configuration and checkpoints.
    { name: 'new PerceiverConfig', call: (g) => new api.PerceiverConfig(g.pick([g.value(), g.mutate({ d_latents: 64, num_latents: 16 })]) as never) },
    { name: 'PerceiverConfig.fromPretrained', call: (g) => api.PerceiverConfig.fromPretrained(g.pick([g.value(), f.checkpoint]) as never) },
    { name: 'AutoModel.fromPretrained', call: async (g) => (await api.AutoModel.fromPretrained(g.pick([g.value(), f.checkpoint]) as never, g.mutate({ device: 'cpu', hub: { offline: true } }) as never)).dispose() },
    { name: 'PerceiverForSequenceClassification.fromPretrained', call: async (g) => (await api.PerceiverForSequenceClassification.fromPretrained(g.pick([g.value(), f.checkpoint]) as never, g.value() as never)).dispose() },
    { name: 'AutoModel.headFor', call: (g) => api.AutoModel.headFor(g.pick([g.value(), ctx.text.config]) as never) },
    { name: 'new <head class>', call: (g) => new (g.pick(Object.values(api.ARCHITECTURES)))(g.pick([g.value(), ctx.text.config]) as never) },
    { name: 'new PerceiverModel', call: (g) => new api.PerceiverModel(g.pick([g.value(), ctx.text.config]) as never, g.value() as never, g.value() as never) },
    {
      name: 'model.loadWeights',
      call: async (g) => {
        const m = new api.PerceiverForSequenceClassification(ctx.text.config);
        const weights = g.pick([g.value(), new api.RandomWeightStore(g.int(10)), new Map([['x', g.tensor()]])]);
        await m.loadWeights(weights as never, g.mutate({ device: g.pick(['cpu', 'cuda', 'cuda:7']), dtype: g.pick(['float32', 'float16']) }) as never);
        await m.dispose();
      },
    },
    { name: 'checkpointFolder', call: (g) => api.checkpointFolder(g.value() as never, { offline: true, ...(g.chance(0.5) ? {} : (g.object(1) as object)) }) },
    { name: 'loadCheckpointWeights', call: (g) => api.loadCheckpointWeights(g.pick([g.value(), f.checkpoint]) as never) },
    { name: 'new WeightStore', call: (g) => new api.WeightStore(g.value() as never).take(g.value() as never, g.value() as never) },
    { name: 'new RandomWeightStore', call: (g) => new api.RandomWeightStore(g.value() as never).take(g.pick([g.string(), 'x.layernorm.weight']), g.pick([g.shape(), g.value()]) as never) },

    // Safetensors.
    { name: 'parseSafetensors', call: (g) => api.parseSafetensors(g.value() as never, g.value() as never) },
    { name: 'readSafetensors', call: (g) => api.readSafetensors(g.pick([g.value(), f.safetensors]) as never) },
    { name: 'serializeSafetensors', call: (g) => api.serializeSafetensors(g.pick([g.value(), new Map([[g.string(), g.tensor()]])]) as never, g.value() as never) },
    { name: 'writeSafetensors', call: (g) => api.writeSafetensors(g.pick([g.string(), f.out]), g.pick([g.value(), new Map([['t', g.tensor()]])]) as never, g.value() as never) },

    // Tensors.
    { name: 'new Tensor', call: (g) => new api.Tensor(g.pick([...api.DTYPES, g.value()]) as never, g.pick([g.shape(), g.value()]) as never, g.pick([g.typedArray(), g.value()]) as never) },
    { name: 'Tensor.zeros', call: (g) => api.Tensor.zeros(g.pick([...api.DTYPES, g.value()]) as never, g.pick([g.shape(), g.value()]) as never) },
    { name: 'Tensor.from', call: (g) => api.Tensor.from(g.pick([...api.DTYPES, g.value()]) as never, g.pick([[1, 2, 3, 4], [1n, 2n], [1.5, NaN], g.typedArray(), g.value()]) as never, g.pick([undefined, g.shape(), g.value()]) as never) },
    {
      name: 'tensor methods',
      call: (g) => {
        const t = g.tensor();
        switch (g.int(7)) {
          case 0: return t.reshape(g.pick([g.shape(), g.value()]) as never);
          case 1: return t.get(g.value() as never);
          case 2: return t.toFloat32();
          case 3: return t.toFloat64();
          case 4: return t.bytes();
          case 5: return t.toString();
          default: return [t.size, t.rank, t.byteLength];
        }
      },
    },
    { name: 'new PerceiverEncoding', call: (g) => new api.PerceiverEncoding(g.pick([g.value(), g.encoding().handle]) as never, g.pick([g.value(), g.mutate({ lastHiddenState: { shape: [1], data: new Float32Array(1) } })]) as never) },
    { name: 'DeviceTensor.toString / size', call: (g) => { const t = g.deviceTensor(); return [t.toString(), t.size, t.rank, t.byteLength, t.disposed]; } },
    { name: 'new DeviceTensor', call: (g) => new api.DeviceTensor(g.value() as never) },
    { name: 'deviceTensor.toHost', call: (g) => g.deviceTensor().toHost() },
    { name: 'deviceTensor.dispose', call: (g) => g.deviceTensor().dispose() },

    // Tokenizer.
    { name: 'new PerceiverTokenizer', call: (g) => new api.PerceiverTokenizer(g.mutate({ modelMaxLength: 48 }) as never) },
    { name: 'tokenizer.encode', call: (g) => ctx.tokenizer.encode(g.pick([g.value(), g.string()]) as never, g.mutate({ maxLength: 8, truncation: true }) as never) },
    { name: 'tokenizer.call', call: (g) => ctx.tokenizer.call(g.pick([g.value(), g.string(), [g.string(), g.string()], g.array(1)]) as never, g.mutate({ padding: g.pick([true, 'max_length']), maxLength: 48, truncation: true }) as never) },
    { name: 'tokenizer.decode', call: (g) => ctx.tokenizer.decode(g.pick([g.value(), [4, 10, 5], g.typedArray(), g.tensor()]) as never, g.mutate({ skipSpecialTokens: true }) as never) },
    { name: 'tokenizer.batchDecode', call: (g) => ctx.tokenizer.batchDecode(g.pick([g.value(), [[4, 10, 5], g.value()], g.tensor()]) as never, g.mutate({}) as never) },

    // Image processor.
    { name: 'new PerceiverImageProcessor', call: (g) => new api.PerceiverImageProcessor(g.mutate({ size: 8, cropSize: 8 }) as never) },
    { name: 'PerceiverImageProcessor.fromPretrained', call: (g) => api.PerceiverImageProcessor.fromPretrained(g.pick([g.value(), ctx.dir, f.checkpoint]) as never) },
    {
      name: 'imageProcessor.preprocess',
      call: (g) => ctx.imageProcessor.preprocess(g.pick([g.value(), f.png, [f.png, g.value()], g.mutate({ data: new Uint8Array(48), width: 4, height: 4, channels: 3 }), g.typedArray()]) as never),
    },
    { name: 'imageProcessor.cropBox', call: (g) => ctx.imageProcessor.cropBox(g.value() as never, g.value() as never) },

    // Models.
    { name: 'model.forward', call: (g) => { const m = model(g); return m.forward(modelCall(g, m) as never); } },
    { name: 'model.encode', call: (g) => { const m = model(g); return m.encode(modelCall(g, m) as never); } },
    {
      name: 'model.decode',
      call: async (g) => {
        const m = model(g);
        const encoding = g.chance(0.6) ? await m.encode(modelCall(g, m) as never).catch(() => g.encoding()) : g.pick([g.encoding(), g.value()]);
        return m.decode(encoding as never, g.mutate({ subsampledOutputPoints: g.pick([[0], { label: [0] }, g.value(2)]), outputs: 'host' }) as never);
      },
    },
    { name: 'model.embed', call: (g) => { const m = model(g); const call = modelCall(g, m) as { inputs?: unknown }; return m.embed((call && typeof call === 'object' && !g.throwing ? call.inputs : g.value()) as never, g.mutate({ pooling: g.pick(['mean', 'none']) }) as never); } },
    { name: 'model.upload', call: (g) => model(g).upload(g.pick([g.value(), g.tensor(), backed(g, api.Tensor.zeros('float32', [1, 3, 8, 8]))]) as never) },
    {
      name: 'model.dispose',
      call: async (g) => {
        const m = await api.AutoModel.fromPretrained(f.checkpoint);
        const running = m.forward({ inputs: ids(4) });
        await m.dispose();
        await running.catch(() => undefined);
        return m.forward(modelCall(g, ctx.text) as never);
      },
    },

    // Modules, constructed on their own.
    { name: 'new <preprocessor>', call: (g) => new (g.pick([api.PerceiverTextPreprocessor, api.PerceiverImagePreprocessor, api.PerceiverAudioPreprocessor, api.PerceiverOneHotPreprocessor]) as new (...a: unknown[]) => unknown)(g.pick([g.value(), ctx.text.config]), g.value()) },
    { name: 'new PerceiverMultimodalPreprocessor', call: (g) => new api.PerceiverMultimodalPreprocessor(g.value() as never) },
    { name: 'new <decoder>', call: (g) => new (g.pick([api.PerceiverBasicDecoder, api.PerceiverClassificationDecoder, api.PerceiverOpticalFlowDecoder, api.PerceiverBasicVideoAutoencodingDecoder, api.PerceiverMultimodalDecoder, api.PerceiverProjectionDecoder]) as new (...a: unknown[]) => unknown)(g.pick([g.value(), ctx.text.config]), g.value()) },
    { name: 'new <postprocessor>', call: (g) => new (g.pick([api.PerceiverEmbeddingDecoder, api.PerceiverClassificationPostprocessor, api.PerceiverAudioPostprocessor, api.PerceiverProjectionPostprocessor, api.PerceiverMultimodalPostprocessor]) as new (...a: unknown[]) => unknown)(g.pick([g.value(), ctx.text.config]), g.value()) },
    { name: 'new <position encoding>', call: (g) => new (g.pick([api.PerceiverTrainablePositionEncoding, api.PerceiverFourierPositionEncoding]) as new (...a: unknown[]) => unknown)(g.value(), g.value()) },
    { name: 'new PerceiverLayer / PerceiverEncoder', call: (g) => new (g.pick([api.PerceiverLayer, api.PerceiverEncoder]) as new (...a: unknown[]) => unknown)(g.pick([g.value(), ctx.text.config]), g.value(), g.value()) },

    // Pipelines and optical-flow helpers.
    {
      name: 'pipeline',
      call: async (g) => {
        const load = api.pipeline as (task: unknown, model: unknown, options: unknown) => Promise<api.PipelineHandle>;
        await (await load(g.pick([...api.PIPELINE_TASKS, g.value()]), g.pick([g.value(), f.checkpoint, f.png]), g.mutate({ device: 'cpu', hub: { offline: true } }))).dispose();
      },
    },
    {
      name: 'pipeline call',
      call: (g) => {
        const p = g.pick(ctx.pipelines) as unknown as (input: unknown, options?: unknown) => Promise<unknown>;
        const input = g.pick([g.value(), g.string(), 'hello [MASK] world', ['a', 'b'], f.png, [f.png, f.png], { data: new Uint8Array(48), width: 4, height: 4 }]);
        return p(input, g.mutate({ topK: g.pick([1, 3]), pooling: g.pick(['mean', 'none']) }));
      },
    },
    { name: 'flowToColor', call: (g) => api.flowToColor(g.pick([flowField(g), g.value()]) as never, g.mutate({}) as never) },
    { name: 'flowToColorAsync', call: (g) => api.flowToColorAsync(g.pick([flowField(g), g.value()]) as never, g.mutate({}) as never) },
    { name: 'maxFlowRadius', call: (g) => api.maxFlowRadius(g.pick([flowField(g), g.value()]) as never) },
    { name: 'encodeFlo / decodeFlo', call: (g) => api.decodeFlo(g.pick([api.encodeFlo(g.pick([flowField(g), g.value()]) as never), g.typedArray(), g.value()]) as never) },
    { name: 'writeFlo / readFlo', call: async (g) => { const path = g.pick([join(ctx.dir, 'out', 'f.flo'), g.string()]); await api.writeFlo(path, g.pick([flowField(g), g.value()]) as never); return api.readFlo(g.pick([path, g.value()]) as never); } },
    { name: 'flowPatchInput', call: (g) => api.flowPatchInput(g.pick([rgbFrame(g), g.value()]) as never, g.pick([rgbFrame(g), g.value()]) as never) },
    { name: 'tileGrid', call: (g) => api.tileGrid(g.pick([g.number(), 12]) as never, g.pick([g.number(), 16]) as never, g.pick([{ height: 8, width: 8 }, g.value()]) as never, g.pick([g.number(), 2]) as never) },
    { name: 'tileWeights / defaultMinOverlap', call: (g) => { const tile = g.pick([{ height: g.number(), width: 8 }, { height: 8, width: 8 }, g.value()]) as never; return [api.tileWeights(tile), api.defaultMinOverlap(tile)]; } },
    {
      name: 'FlowBlender',
      call: (g) => {
        const b = new api.FlowBlender(g.pick([g.number(), 12]) as never, g.pick([g.number(), 16]) as never, g.pick([{ height: 8, width: 8 }, g.value()]) as never);
        b.add(g.pick([{ top: 0, left: 0 }, { top: 4, left: 8 }, g.value()]) as never, g.pick([new Float32Array(128), g.typedArray(), g.value()]) as never, g.pick([1, g.number()]) as never);
        return b.result();
      },
    },
    { name: 'writePng', call: (g) => api.writePng(g.pick([join(ctx.dir, 'out', 'x.png'), g.string()]) as never, g.pick([rgbFrame(g), g.value()]) as never) },
    { name: 'writeVideo', call: (g) => api.writeVideo(g.pick([join(ctx.dir, 'out', 'x.mp4'), g.string()]) as never, g.pick([[rgbFrame(g), rgbFrame(g)], g.value(), [g.value()]]) as never, g.mutate({ fps: 2 }) as never) },
    { name: 'writeWav / encodeWav', call: (g) => api.writeWav(g.pick([join(ctx.dir, 'out', 'x.wav'), g.string()]) as never, g.pick([new Float32Array(16), g.typedArray(), g.value()]) as never, g.pick([16000, g.number(), g.value()]) as never, g.pick([1, 2, g.value()]) as never) },
    { name: 'writeFlowPicture', call: (g) => api.writeFlowPicture(g.pick([join(ctx.dir, 'out', 'f.png'), g.string()]) as never, g.pick([flowField(g), g.value()]) as never, g.pick([undefined, join(ctx.dir, 'out', 'f.flo'), g.value()]) as never) },
    { name: 'writeFlowVideo', call: (g) => api.writeFlowVideo(g.pick([join(ctx.dir, 'out', 'flow'), g.string()]) as never, g.pick([[flowField(g)], g.value()]) as never, g.mutate({}) as never) },
    { name: 'writeAutoencoding', call: (g) => api.writeAutoencoding(g.pick([join(ctx.dir, 'out', 'ae'), g.string()]) as never, g.value() as never, g.mutate({ video: false }) as never) },

    // Serving, media, batch jobs.
    {
      name: 'createBatcher + submit',
      call: async (g) => {
        const batcher = api.createBatcher(g.pick([ctx.text, g.value()]) as never, g.mutate({ maxBatchSize: 4, maxDelayMs: 1 }) as never);
        try {
          return await batcher.submit(g.pick([g.value(), g.mutate({ inputs: ids(4) })]) as never);
        } finally {
          await batcher.close();
        }
      },
    },
    { name: 'capabilities', call: () => api.capabilities() },
    { name: 'isHubId', call: (g) => api.isHubId(g.value() as never) },
    { name: 'resolveModelPath', call: (g) => api.resolveModelPath(g.pick([g.value(), f.checkpoint]) as never, { offline: true }) },
    { name: 'snapshotDownload', call: (g) => api.snapshotDownload(g.value() as never, { ...(g.chance(0.5) ? {} : (g.object(1) as object)), offline: true, endpoint: 'http://127.0.0.1:1', cacheDir: join(ctx.dir, 'hub') }) },
    { name: 'mediaKindOf', call: (g) => api.mediaKindOf(g.value() as never) },
    { name: 'decodeAudio', call: (g) => api.decodeAudio(g.pick([g.value(), f.wav, g.typedArray()]) as never, g.mutate({ sampleRate: 16000, channels: 1 }) as never) },
    { name: 'resampleAudio', call: (g) => api.resampleAudio(g.pick([g.value(), new Float32Array(g.pick([0, 1, 100])), g.typedArray()]) as never, g.pick([g.number(), 8000]), g.pick([g.number(), 16000])) },
    { name: 'probeMedia', call: (g) => api.probeMedia(g.pick([g.value(), f.wav, f.png]) as never, g.mutate({}) as never) },
    { name: 'decodeVideoFrames', call: (g) => api.decodeVideoFrames(g.pick([g.value(), f.wav]) as never, g.mutate({ frames: 1 }) as never) },
    { name: 'decodeVideoAudio', call: (g) => api.decodeVideoAudio(g.pick([g.value(), f.wav]) as never, g.mutate({ sampleRate: 16000 }) as never) },
    { name: 'videoDuration', call: (g) => api.videoDuration(g.value() as never) },
    {
      name: 'createMediaInputBuilder',
      call: async (g) => {
        const builder = api.createMediaInputBuilder(g.pick([ctx.text, ctx.image, ctx.multimodal, g.value()]) as never, g.mutate({}) as never);
        const item = await builder.load(g.pick([g.value(), f.txt, f.png, f.wav]) as never);
        return builder.collate(g.pick([[item], [item, item], g.value(), [g.value()]]) as never);
      },
    },
    { name: 'discoverItems', call: (g) => api.discoverItems(g.pick([g.value(), [ctx.dir], [join(ctx.dir, '*.png')]]) as never, g.mutate({}) as never) },
    { name: 'readDoneIds', call: (g) => api.readDoneIds(g.pick([g.value(), join(ctx.dir, 'parts')]) as never) },
    { name: 'readEmbeddings', call: (g) => api.readEmbeddings(g.pick([g.value(), join(ctx.dir, 'parts')]) as never) },
    { name: 'itemId', call: (g) => api.itemId(g.value() as never) },
    { name: 'inShard', call: (g) => api.inShard(g.value() as never, g.value() as never, g.value() as never) },
    {
      name: 'embedItemsToPart',
      call: (g) => api.embedItemsToPart(g.mutate({ model: ctx.text, task: g.pick(['embed', 'classify']), items: [{ id: 'a', path: f.txt }], outDir: join(ctx.dir, 'parts'), partName: 'p0' }) as never),
    },
    {
      name: 'runEmbedJob',
      call: (g) => api.runEmbedJob(g.mutate({ models: [ctx.text], task: 'embed', items: [{ id: 'b', path: f.txt }], outDir: join(ctx.dir, 'parts') }) as never),
    },
    {
      name: 'enqueueAndWait',
      call: (g) => api.enqueueAndWait(g.mutate({ queue: g.pick(['redis://127.0.0.1:1', 'http://127.0.0.1:1', '']), model: f.checkpoint, task: 'embed', inputs: [f.txt], outDir: join(ctx.dir, 'q') }) as never),
    },
    { name: 'startShardWorker', call: async (g) => (await api.startShardWorker(g.mutate({ queue: g.pick(['redis://127.0.0.1:1', '']) }) as never)).close() },
  ];
  return list;
}

/** Keeps the Hub and Redis on loopback whatever the generated options say (also read by the CLI helpers). */
function isolateEnvironment(dir: string): void {
  process.env.HF_HUB_OFFLINE = '1';
  process.env.HF_ENDPOINT = 'http://127.0.0.1:1';
  process.env.HF_HOME = join(dir, 'hf-home');
  process.env.HF_HUB_CACHE = join(dir, 'hub');
  process.env.HF_TOKEN = '';
}

export async function setup(): Promise<Context> {
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-api-fuzz-'));
  isolateEnvironment(dir);
  // Relative paths among the generated strings (an outDir of "a", say) land in the temporary folder.
  const cwd = process.cwd();
  process.chdir(dir);
  const fixtures = join(packageRoot(), 'test', 'fixtures');
  const checkpoint = join(dir, 'text-classification');
  await mkdir(checkpoint);
  for (const file of ['config.json', 'model.safetensors']) await copyFile(join(fixtures, 'text-classification', file), join(checkpoint, file));
  await mkdir(join(dir, 'out'));
  const files = {
    png: join(dir, 'red.png'),
    wav: join(dir, 'tone.wav'),
    txt: join(dir, 'hello.txt'),
    safetensors: join(fixtures, 'text-mlm', 'model.safetensors'),
    checkpoint,
    out: join(dir, 'out', 'written.safetensors'),
  };
  const { default: sharp } = await import('sharp');
  await sharp({ create: { width: 12, height: 10, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toFile(files.png);
  await writeFile(files.wav, wav16(new Int16Array(800).map((_, i) => Math.round(8000 * Math.sin(i / 5))), 16000));
  await writeFile(files.txt, 'hello [MASK] world');
  const [text, image, multimodal] = await Promise.all([
    api.AutoModel.fromPretrained(checkpoint),
    api.AutoModel.fromPretrained(join(fixtures, 'image-learned')),
    api.AutoModel.fromPretrained(join(fixtures, 'multimodal-autoencoding')),
  ]);
  const deviceTensors: api.DeviceTensor[] = [];
  const encodings: api.PerceiverEncoding[] = [];
  for (const [i, [model, inputs]] of ([
    [text, ids(4)],
    [image, api.Tensor.zeros('float32', [1, 3, 8, 8])],
    [multimodal, { image: api.Tensor.zeros('float32', [1, 2, 3, 8, 8]), audio: api.Tensor.zeros('float32', [1, 64, 1]), label: api.Tensor.zeros('float32', [1, multimodal.config.num_labels]) }],
  ] as const).entries()) {
    for (let k = 0; k < 3; k++) {
      deviceTensors.push(await image.upload(api.Tensor.zeros('float32', [1, 3, 8, 8])));
      encodings.push(await model.encode({ inputs: inputs as api.Tensor }));
    }
    deviceTensors[3 * i]!.dispose();
    encodings[3 * i]!.dispose();
  }
  const pipelines = [
    await api.pipeline('text-classification', checkpoint),
    await api.pipeline('fill-mask', join(fixtures, 'text-mlm')),
    await api.pipeline('feature-extraction', checkpoint),
    await api.pipeline('image-classification', join(fixtures, 'image-learned')),
  ] as api.PipelineHandle[];
  return { dir, cwd, pipelines, text, image, multimodal, tokenizer: new api.PerceiverTokenizer({ modelMaxLength: 48 }), imageProcessor: new api.PerceiverImageProcessor({ size: 8, cropSize: 8 }), files, deviceTensors, encodings };
}

export async function teardown(ctx: Context): Promise<void> {
  for (const p of ctx.pipelines) await p.dispose();
  for (const t of ctx.deviceTensors) t.dispose();
  for (const e of ctx.encodings) e.dispose();
  await Promise.all([ctx.text.dispose(), ctx.image.dispose(), ctx.multimodal.dispose()]);
  process.chdir(ctx.cwd);
  await rm(ctx.dir, { recursive: true, force: true });
}

/** A mono 16-bit PCM WAV file. */
function wav16(samples: Int16Array, rate: number): Buffer {
  const data = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const frames = (error.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line)).slice(0, 5).join('\n');
    return `${error.name}: ${error.message.split('\n')[0]!.slice(0, 300)}\n${frames}`;
  }
  return `non-Error thrown: ${String(error)}`;
}

/** Runs `iterations` random cases (each picks an entry point) against a set-up context. */
export async function apiFuzz(ctx: Context, iterations: number, seed = 1, only?: RegExp, breadcrumb?: string): Promise<ApiFuzzReport> {
  const rng = new Random(seed);
  const all = entries(ctx).filter((e) => !only || only.test(e.name));
  const report: ApiFuzzReport = { runs: 0, returned: 0, rejected: 0, userThrown: 0, byEntry: {}, findings: [], slowestMs: 0, slowestEntry: '' };
  // Errors that escape every call (a timer's, a stream's) are findings of the case running then.
  let current = '';
  const escaped = (error: unknown) => report.findings.push({ entry: current, args: 'escaped the call (unhandled)', error: describe(error) });
  process.on('unhandledRejection', escaped);
  process.on('uncaughtException', escaped);
  try {
    for (let i = 0; i < iterations; i++) {
      const entry = rng.pick(all);
      const g = new Gen(rng, ctx);
      current = `${entry.name} (case ${i}, seed ${seed})`;
      report.byEntry[entry.name] = (report.byEntry[entry.name] ?? 0) + 1;
      // Should a case kill the process (a native abort, a fatal out-of-memory), this names it.
      if (breadcrumb) writeFileSync(breadcrumb, `${current}\n`);
      // Some dependencies lower the limit; a finding's report shows the frames.
      Error.stackTraceLimit = Math.max(Error.stackTraceLimit, 20);
      const start = performance.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        const result = entry.call(g);
        if (result instanceof Promise) {
          await Promise.race([
            result,
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`hang: no answer in ${API_HANG_MS} ms`)), API_HANG_MS);
            }),
          ]);
        }
        report.returned++;
      } catch (error) {
        if (error instanceof api.PerceiverError) report.rejected++;
        else if (error === USER_THROWN && g.throwing) report.userThrown++;
        else report.findings.push({ entry: current, args: g.throwing ? 'with a throwing getter' : '', error: describe(error) });
      } finally {
        clearTimeout(timer);
      }
      const ms = performance.now() - start;
      if (ms > report.slowestMs) {
        report.slowestMs = ms;
        report.slowestEntry = entry.name;
      }
      report.runs++;
    }
    // Let late rejections of the last cases surface.
    await new Promise((resolve) => setTimeout(resolve, 50));
  } finally {
    process.off('unhandledRejection', escaped);
    process.off('uncaughtException', escaped);
  }
  return report;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { parseArgs } = await import('node:util');
  const { values } = parseArgs({ options: { iterations: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' }, only: { type: 'string' } } });
  const breadcrumb = join(tmpdir(), 'perceiver-api-fuzz.last-case');
  console.log(`the case running is written to ${breadcrumb} (read it if the process dies)`);
  const ctx = await setup();
  const start = performance.now();
  const r = await apiFuzz(ctx, Number(values.iterations), Number(values.seed), values.only ? new RegExp(values.only) : undefined, breadcrumb);
  const seconds = (performance.now() - start) / 1000;
  await teardown(ctx);
  console.log(
    `api fuzz: ${r.runs} cases over ${Object.keys(r.byEntry).length} entry points, seed ${values.seed}: ${r.returned} returned, ${r.rejected} typed errors, ` +
      `${r.userThrown} caller's own getter errors passed through, ${r.findings.length} findings, slowest ${r.slowestMs.toFixed(0)} ms (${r.slowestEntry}), ${seconds.toFixed(1)} s`,
  );
  // One report per place (the entry point and the frame that threw), with how often it came.
  const places = new Map<string, { first: (typeof r.findings)[number]; count: number }>();
  for (const f of r.findings) {
    const key = `${f.entry.replace(/ \(case.*/, '')}: ${f.error.split('\n')[1] ?? f.error}`;
    const place = places.get(key);
    if (place) place.count++;
    else places.set(key, { first: f, count: 1 });
  }
  for (const { first: f, count } of places.values()) console.log(`  finding (${count}x), first in ${f.entry} ${f.args}\n    ${f.error.split('\n').join('\n    ')}`);
  process.exitCode = r.findings.length > 0 ? 1 : 0;
}
