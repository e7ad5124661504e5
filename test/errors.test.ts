/**
 * Bad input: every case is a typed error naming what was wrong, and the process carries on.
 */
import t, { type Test } from 'tap';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AutoModel,
  BackendUnavailableError,
  ConfigError,
  InvalidArgumentError,
  PerceiverAudioPreprocessor,
  PerceiverConfig,
  PerceiverForMaskedLM,
  PerceiverLayer,
  PerceiverModel,
  RandomWeightStore,
  Tensor,
  WeightMismatchError,
  WeightsFormatError,
  serializeSafetensors,
  readSafetensors,
  WeightStore,
} from '../lib/index.js';
import { fromNativeError, loadAddon } from '../lib/native/binding.js';
import { fixtureDir, fixtureIo, tempDir } from './helpers/fixtures.js';

const MLM = fixtureDir('text-mlm');

t.test('inputs of the wrong shape, dtype or range', async (t) => {
  const model = await AutoModel.fromPretrained(MLM);
  t.teardown(() => model.dispose());
  const ids = (shape: number[], fill = 10) => new Tensor('int64', shape, new BigInt64Array(shape.reduce((a, b) => a * b, 1)).fill(BigInt(fill)));
  const cases: [string, Parameters<typeof model.forward>[0], RegExp][] = [
    ['rank 1', { inputs: ids([48]) }, /shape \[batch, sequence\]/],
    ['rank 3', { inputs: ids([1, 2, 3]) }, /shape \[batch, sequence\]/],
    ['empty batch', { inputs: ids([0, 5]) }, /at least 1/],
    ['too long', { inputs: ids([1, 49]) }, /max_position_embeddings = 48/],
    ['float ids', { inputs: new Tensor('float32', [1, 4], new Float32Array(4)) }, /int64 or int32/],
    ['id past the vocabulary', { inputs: ids([1, 4], 262) }, /^Expected token ids in \[0, 262\) for inputs but received 262 at \[0, 0\]$/],
    ['negative id', { inputs: ids([1, 4], -1) }, /^Expected token ids in \[0, 262\) for inputs but received -1 at \[0, 0\]$/],
    ['plain array', { inputs: [[1, 2, 3]] as unknown as Tensor }, /Tensor of token ids/],
    ['mask of the wrong length', { inputs: ids([2, 8]), attentionMask: ids([2, 7], 1) }, /attentionMask.*\[2, 8\]|\[2, 8\].*attentionMask/],
    ['mask of another dtype', { inputs: ids([1, 4]), attentionMask: new Tensor('float16', [1, 4], new Uint16Array(4)) }, /dtype float16/],
    ['mask with a 2', { inputs: ids([1, 4]), attentionMask: ids([1, 4], 2) }, /values 0 or 1/],
    ['all-padding row', { inputs: ids([2, 4]), attentionMask: Tensor.from('int64', [1, 1, 1, 1, 0, 0, 0, 0], [2, 4]) }, /row 1 with every position masked/],
  ];
  for (const [what, call, message] of cases) {
    const error = await model.forward(call).then(() => null, (e: unknown) => e);
    t.type(error, InvalidArgumentError, `${what}: InvalidArgumentError`);
    t.match((error as Error).message, message, `${what}: says what was expected`);
  }
  // The engine's one check of the ids names the item and position of the first bad one.
  const oneBad = ids([2, 4]);
  (oneBad.data as BigInt64Array)[6] = 300n;
  await t.rejects(model.forward({ inputs: oneBad }), { name: 'InvalidArgumentError', argument: 'inputs', expected: 'token ids in [0, 262)', actual: '300 at [1, 2]' });
  // The model is still usable afterwards.
  const ok = await model.forward({ inputs: ids([1, 4]) });
  t.same((ok.logits as Tensor).shape, [1, 48, 262], 'still runs after every rejection');
});

t.test("an input's shape is checked once, by the engine, in one wording", async (t) => {
  // No preprocessor: the caller passes the encoder's input sequence, [batch, sequence, d_model].
  const config = new PerceiverConfig({ num_latents: 4, d_latents: 16, d_model: 8, num_self_attends_per_block: 1, num_self_attention_heads: 2, num_cross_attention_heads: 1 });
  const model = await new PerceiverModel(config).loadWeights(new RandomWeightStore(1));
  t.teardown(() => model.dispose());
  const expected = "shape [batch, sequence, 8] (the encoder's input channels)";
  const ones = (n: number) => Tensor.from('int64', Array.from({ length: n }, () => 1), [1, n]);
  const cases: [string, Parameters<typeof model.forward>[0], string][] = [
    ['7 channels', { inputs: Tensor.zeros('float32', [1, 3, 7]) }, 'shape [1, 3, 7]'],
    ['rank 2', { inputs: Tensor.zeros('float32', [1, 8]) }, 'shape [1, 8]'],
    // The preprocessor cannot tell the mask's length from a shape the engine refuses: the input's error comes first.
    ['rank 2 with a mask', { inputs: Tensor.zeros('float32', [1, 8]), attentionMask: ones(8) }, 'shape [1, 8]'],
    ['an empty sequence', { inputs: Tensor.zeros('float32', [1, 0, 8]) }, 'shape [1, 0, 8]'],
  ];
  for (const [what, call, actual] of cases) {
    await t.rejects(model.forward(call), { name: 'InvalidArgumentError', argument: 'inputs', expected, actual, message: `Expected ${expected} for inputs but received ${actual}` }, what);
  }
  const ok = await model.forward({ inputs: Tensor.zeros('float32', [2, 3, 8]), attentionMask: Tensor.from('int64', [1, 1, 0, 1, 0, 0], [2, 3]) });
  t.same(ok.lastHiddenState.shape, [2, 4, 16], 'a right shape runs, its mask checked against the sequence');
});

t.test('a call that is not an object', async (t) => {
  const model = await AutoModel.fromPretrained(MLM);
  t.teardown(() => model.dispose());
  await t.rejects(model.forward(null as never), InvalidArgumentError);
  await t.rejects(model.forward(undefined as never), InvalidArgumentError);
});

/** The engine's error for an invalid argument: its code, its fields, and the one sentence lib/errors.ts makes of them. */
function engineInvalid(argument: string | RegExp, expected: string | RegExp, actual: string | RegExp) {
  return {
    code: 'ERR_PERCEIVER_INVALID_ARGUMENT',
    argument,
    expected,
    actual,
    message: /^Expected .+ for .+ but received .+$/,
  };
}

t.test('the native engine re-checks what reaches it', async (t) => {
  const { NativeModel } = loadAddon();
  t.throws(() => new NativeModel({} as object, {}, { device: 'cpu' }), engineInvalid('spec.layerNormEps', 'a number in [1e-30, 1]', 'undefined'));
  t.throws(() => new NativeModel({ layerNormEps: 1e-5, preprocessor: { type: 'text' } }, {}, { device: 'cpu' }), engineInvalid('spec.preprocessor.embeddings', 'a string', 'undefined'));
  t.throws(() => new (NativeModel as unknown as new () => unknown)(), engineInvalid('NativeModel(spec, weights, options)', 'three objects', '0 arguments, not all objects'));
  t.throws(() => new NativeModel({}, {}, { device: 'tpu' }), { code: 'ERR_PERCEIVER_BACKEND_UNAVAILABLE' });

  // A real spec, then requests that bypass the TypeScript validation entirely.
  const { tensors } = await readSafetensors(join(MLM, 'model.safetensors'));
  const head = new PerceiverForMaskedLM(await PerceiverConfig.fromPretrained(MLM));
  const store = new WeightStore(tensors);
  const spec = (head as unknown as { buildSpec(s: WeightStore): object }).buildSpec(store);
  const weights = store.claimed();
  const short = { ...weights, 'perceiver.embeddings.latents': new Float32Array(10) };
  t.throws(
    () => new NativeModel(spec, short, { device: 'cpu' }),
    {
      code: 'ERR_PERCEIVER_WEIGHT_MISMATCH',
      argument: 'perceiver.embeddings.latents',
      expected: '1024 values',
      actual: '10',
      message: 'weight "perceiver.embeddings.latents": expected 1024 values but received 10',
    },
    'a weight of the wrong size',
  );
  const { 'embedding_decoder.bias': _dropped, ...missing } = weights;
  t.throws(
    () => new NativeModel(spec, missing, { device: 'cpu' }),
    { code: 'ERR_PERCEIVER_WEIGHT_MISMATCH', argument: 'embedding_decoder.bias', expected: 'a Float32Array or a checkpoint file range (for spec.postprocessor.projection.bias)', actual: 'undefined' },
    'a missing weight',
  );
  // The typed errors built from those fields, without parsing the text.
  const typed = (() => {
    try {
      new NativeModel(spec, short, { device: 'cpu' });
    } catch (error) {
      return fromNativeError(error);
    }
  })();
  t.type(typed, WeightMismatchError);
  t.match(typed, { weight: 'perceiver.embeddings.latents', expected: '1024 values', actual: '10', message: 'weight "perceiver.embeddings.latents": expected 1024 values but received 10' });
  // Fields the declaration (native/spec/model_spec.json) types, and rules only the builder knows.
  type Spec = Record<string, any>;
  const edited = (edit: (s: Spec) => void) => {
    const copy = structuredClone(spec) as Spec;
    edit(copy);
    return copy;
  };
  const layer = (spec as Spec).encoder.selfAttends[0];
  t.equal(layer.numHeads * layer.qkChannelsPerHead, layer.query.out, 'the spec declares channels per head: heads x channels per head is the query width');
  const specCases: [string, Spec, ReturnType<typeof engineInvalid>][] = [
    ['an unknown preprocessor', edited((s) => (s.preprocessor.type = 'video')), engineInvalid('spec.preprocessor.type', 'one of text, image, audio, onehot, none, multimodal', '"video"')],
    ['an unknown decoder', edited((s) => (s.decoder.type = 'pixels')), engineInvalid('spec.decoder.type', 'one of basic, classification, opticalFlow, basicVideoAutoencoding, multimodal, projection', '"pixels"')],
    ['an unknown query kind', edited((s) => (s.decoder.queries.type = 'learned')), engineInvalid('spec.decoder.queries.type', 'one of trainable, fourier, inputs', '"learned"')],
    ['layerNormEps out of range', edited((s) => (s.layerNormEps = 2)), engineInvalid('spec.layerNormEps', 'a number in [1e-30, 1]', 'number 2')],
    ['a fractional width', edited((s) => (s.encoder.dLatents = 64.5)), engineInvalid('spec.encoder.dLatents', 'an integer in [1, 2^24]', 'number 64.5')],
    ['a boolean as a string', edited((s) => (s.encoder.crossAttention.useQueryResidual = 'yes')), engineInvalid('spec.encoder.crossAttention.useQueryResidual', 'a boolean', 'string "yes"')],
    ['a list that is not one', edited((s) => (s.encoder.selfAttends = {})), engineInvalid('spec.encoder.selfAttends', 'an array', 'object')],
    // Channels are declared per head (TypeScript holds the divisibility rule): heads times channels
    // per head must be the projections' widths, which the engine sizes its reads from.
    ['heads times channels per head not the projection', edited((s) => (s.encoder.selfAttends[0].qkChannelsPerHead += 1)), engineInvalid('spec.encoder.selfAttends[0].query', /^a \d+ -> \d+ projection$/, /^\d+ -> \d+$/)],
    ['added positions narrower than the features', edited((s) => (s.preprocessor = { type: 'audio', samplesPerPatch: 4, position: { type: 'fourier', numBands: 2, maxResolution: [8], concatPos: true, sineOnly: false, projection: null }, concatOrAdd: 'add', numChannels: 5 })), engineInvalid('spec.preprocessor.numChannels', 'features == position channels (4 and 5)', '5')],
    ['Fourier positions over 5 dimensions', edited((s) => (s.preprocessor = { type: 'audio', samplesPerPatch: 4, position: { type: 'fourier', numBands: 2, maxResolution: [2, 2, 2, 2, 2], concatPos: true, sineOnly: false, projection: null }, concatOrAdd: 'concat', numChannels: 29 })), engineInvalid('spec.preprocessor.position.maxResolution', '1 to 4 dimensions', '5')],
    ['joined channels not the declared width', edited((s) => (s.preprocessor = { type: 'audio', samplesPerPatch: 4, position: { type: 'fourier', numBands: 2, maxResolution: [8], concatPos: true, sineOnly: false, projection: null }, concatOrAdd: 'concat', numChannels: 10 })), engineInvalid('spec.preprocessor.numChannels', 'features + position channels (4 and 5)', '10')],
    ['a projection of the wrong width', edited((s) => (s.encoder.selfAttends[0].mlpDense1.in = 32)), engineInvalid('spec.encoder.selfAttends[0].mlpDense1', /^a 64 -> \d+ projection$/, /^32 -> /)],
    ['a postprocessor without a decoder', edited((s) => (s.decoder = null)), engineInvalid('spec.postprocessor', 'none without a decoder', 'a postprocessor')],
  ];
  for (const [what, edit, fields] of specCases) t.throws(() => new NativeModel(edit, weights, { device: 'cpu' }), fields, what);
  // Nodes nest (a multimodal preprocessor holds preprocessors): a hostile depth is refused, not a stack overflow.
  let nested: Spec = { type: 'text' };
  for (let i = 0; i < 100_000; i++) nested = { type: 'multimodal', numChannels: 4, modalities: [{ name: 'a', preprocessor: nested, padding: null, mask: null, maskProbability: 0 }] };
  t.throws(
    () => new NativeModel(edited((s) => (s.preprocessor = nested)), weights, { device: 'cpu' }),
    engineInvalid(/^spec\.preprocessor\.modalities\[0\]\.preprocessor.*\.\.\.$/, 'a spec nested at most a few levels deep', /^a path of \d+ characters$/),
    'a spec nested 100,000 deep',
  );
  const native = new NativeModel(spec, weights, { device: 'cpu' });
  t.teardown(() => native.dispose());
  await t.rejects(async () => native.forward({ batch: 1, inputs: [] } as never), engineInvalid('the model', 'its weights loaded (await load())', 'a call before load() finished'), 'not loaded yet');
  await native.load();
  await t.rejects(async () => native.load(), engineInvalid('load()', 'one call', /second call/), 'loaded once');
  const ids = (n: number, v: bigint) => new BigInt64Array(n).fill(v);
  const text = (shape: number[], data: unknown) => [{ name: '', shape, data }];
  const bad: [string, object, ReturnType<typeof engineInvalid>][] = [
    ['id out of range', { batch: 1, inputs: text([1, 4], ids(4, 300n)) }, engineInvalid('inputs', 'token ids in [0, 262)', '300 at [0, 0]')],
    ['id beyond int32', { batch: 1, inputs: text([1, 4], ids(4, 1n << 40n)) }, engineInvalid('inputs', 'token ids in [0, 262)', 'an id beyond int32 at [0, 0]')],
    ['too few ids', { batch: 2, inputs: text([2, 4], ids(4, 7n)) }, engineInvalid('inputs.data', '8 values (its shape)', '4')],
    ['batch disagreeing with the ids', { batch: 2, inputs: text([1, 4], ids(4, 7n)) }, engineInvalid('inputs', 'a leading batch dimension of 2', 'shape [1, 4]')],
    ['ids as floats', { batch: 1, inputs: text([1, 4], new Float32Array(4)) }, engineInvalid('inputs', 'integer token ids', 'float32 values')],
    ['ids of another integer type', { batch: 1, inputs: text([1, 4], new Uint16Array(4)) }, engineInvalid('inputs.data', 'a BigInt64Array or Int32Array', 'Uint16Array of length 4')],
    ['sequence too long', { batch: 1, inputs: text([1, 49], ids(49, 7n)) }, engineInvalid('inputs', 'a sequence of 1 to max_position_embeddings = 48 tokens', '49 tokens')],
    ['named modality for a text model', { batch: 1, inputs: [{ name: 'image', shape: [1, 4], data: ids(4, 7n) }] }, engineInvalid('inputs', 'a single input tensor (this model has no modalities)', 'inputs named "image"')],
    ['no inputs', { batch: 1, inputs: [] }, engineInvalid('inputs', 'at least one input', 'none')],
    ['mask of the wrong type', { batch: 1, inputs: text([1, 4], ids(4, 7n)), attentionMask: new Int32Array(4) }, engineInvalid('attentionMask', 'a Uint8Array', 'Int32Array of length 4')],
    ['mask of the wrong length', { batch: 1, inputs: text([1, 4], ids(4, 7n)), attentionMask: new Uint8Array(3).fill(1) }, engineInvalid('attentionMask', '4 values ([1, 4])', '3')],
    ['all-padding mask', { batch: 1, inputs: text([1, 4], ids(4, 7n)), attentionMask: new Uint8Array(4) }, engineInvalid('attentionMask', 'at least one unmasked position per row', 'row 0 with every position masked')],
    ['fractional batch', { batch: 1.5, inputs: text([1, 4], ids(4, 7n)) }, engineInvalid('request.batch', 'an integer in [1, 2^40]', 'number 1.5')],
    ['points for a single output out of range', { batch: 1, inputs: text([1, 4], ids(4, 7n)), subsampledOutputPoints: [{ name: '', indices: new Int32Array([48]) }] }, engineInvalid('subsampledOutputPoints', 'indices in [0, 48)', '48 at position 0')],
    ['points named for a single output', { batch: 1, inputs: text([1, 4], ids(4, 7n)), subsampledOutputPoints: [{ name: 'text', indices: new Int32Array([0]) }] }, engineInvalid('subsampledOutputPoints.text', 'no modality name (this model decodes a single output)', '"text"')],
    ['no points', { batch: 1, inputs: text([1, 4], ids(4, 7n)), subsampledOutputPoints: [{ name: '', indices: new Int32Array(0) }] }, engineInvalid('subsampledOutputPoints', 'at least one point', 'none')],
    ['outputs elsewhere', { batch: 1, inputs: text([1, 4], ids(4, 7n)), outputs: 'gpu' }, engineInvalid('outputs', "'host' or 'device'", 'string "gpu"')],
  ];
  for (const [what, request, fields] of bad) {
    const error = await Promise.resolve()
      .then(() => native.forward(request as never))
      .then(() => null, (e: unknown) => e);
    t.match(error, fields, what);
    // fromNativeError fills the typed error from the same fields.
    t.match(fromNativeError(error), { ...fields, name: 'InvalidArgumentError', message: (error as Error).message }, `${what}: the typed error`);
  }
  const ok = await native.forward({ batch: 1, inputs: text([1, 4], ids(4, 7n)) as never });
  t.same(ok.logits[0]!.shape, [1, 48, 262], 'the engine still runs');
  const encoded = await native.encode({ batch: 1, inputs: text([1, 4], ids(4, 7n)) as never });
  encoded.encoding.dispose();
  const disposed = await Promise.resolve()
    .then(() => native.decode(encoded.encoding, {}))
    .then(() => null, (e: unknown) => e);
  t.match(disposed, { code: 'ERR_PERCEIVER_DISPOSED', argument: 'the encoding', message: 'the encoding has been disposed and cannot be used any more' }, 'a disposed encoding');
  t.match(fromNativeError(disposed), { name: 'DisposedError', message: 'the encoding has been disposed and cannot be used any more' });
  native.dispose();
  const gone = await Promise.resolve()
    .then(() => native.forward({ batch: 1, inputs: text([1, 4], ids(4, 7n)) as never }))
    .then(() => null, (e: unknown) => e);
  t.match(gone, { code: 'ERR_PERCEIVER_DISPOSED', argument: 'the model' }, 'a disposed model');
  t.notOk('expected' in (gone as object), 'a use after dispose carries no expected/actual');
});

t.test('native errors that are not about an argument carry a message only', async (t) => {
  const { NativeModel } = loadAddon();
  const error = (() => {
    try {
      new NativeModel({}, {}, { device: 'tpu' });
    } catch (e) {
      return e;
    }
  })();
  t.match(error, { code: 'ERR_PERCEIVER_BACKEND_UNAVAILABLE', message: 'device "tpu" is unknown (expected cpu or cuda)' });
  t.notOk('argument' in (error as object), 'no argument field');
  t.type(fromNativeError(error), BackendUnavailableError);
  const unknown = Object.assign(new Error('something odd'), { code: 'ERR_SOMETHING_ELSE' });
  t.match(fromNativeError(unknown), { name: 'NativeError', message: 'something odd', cause: unknown }, 'an unknown code: NativeError, with the original as cause');
  const prototypeName = Object.assign(new Error('x'), { code: 'toString' });
  t.match(fromNativeError(prototypeName), { name: 'NativeError' }, 'a code that is a prototype name is not a lookup hit');
});

t.test('device and dtype options', async (t) => {
  await t.rejects(AutoModel.fromPretrained(MLM, { device: 'cuda' }), BackendUnavailableError, 'no CUDA backend here');
  await t.rejects(AutoModel.fromPretrained(MLM, { device: 'cuda:1' }), BackendUnavailableError);
  await t.rejects(AutoModel.fromPretrained(MLM, { device: 'tpu' }), InvalidArgumentError);
  await t.rejects(AutoModel.fromPretrained(MLM, { dtype: 'float16' }), BackendUnavailableError, 'the CPU computes in float32 or bfloat16');
  await t.rejects(AutoModel.fromPretrained(MLM, { dtype: 'float8' as never }), InvalidArgumentError);
});

async function checkpointWith(t: Test, mutate: (dir: string) => Promise<void>): Promise<string> {
  const dir = await tempDir(t);
  await copyFile(join(MLM, 'config.json'), join(dir, 'config.json'));
  await copyFile(join(MLM, 'model.safetensors'), join(dir, 'model.safetensors'));
  await mutate(dir);
  return dir;
}

t.test('missing or misshapen weights', async (t) => {
  const { tensors } = await readSafetensors(join(MLM, 'model.safetensors'));
  const without = new Map(tensors);
  without.delete('perceiver.encoder.self_attends.1.mlp.dense2.weight');
  const dir = await checkpointWith(t, (d) => writeFile(join(d, 'model.safetensors'), serializeSafetensors(without)));
  const error = await AutoModel.fromPretrained(dir).catch((e: unknown) => e);
  t.type(error, WeightMismatchError);
  t.match((error as Error).message, /perceiver\.encoder\.self_attends\.1\.mlp\.dense2\.weight.*missing/);

  const reshaped = new Map(tensors);
  reshaped.set('perceiver.embeddings.latents', Tensor.zeros('float32', [15, 64]));
  const dir2 = await checkpointWith(t, (d) => writeFile(join(d, 'model.safetensors'), serializeSafetensors(reshaped)));
  const error2 = await AutoModel.fromPretrained(dir2).catch((e: unknown) => e);
  t.type(error2, WeightMismatchError);
  t.match((error2 as Error).message, /latents.*\[15, 64\].*\[16, 64\]/);

  const integer = new Map(tensors);
  integer.set('embedding_decoder.bias', Tensor.zeros('int32', [262]));
  const dir3 = await checkpointWith(t, (d) => writeFile(join(d, 'model.safetensors'), serializeSafetensors(integer)));
  await t.rejects(AutoModel.fromPretrained(dir3), WeightMismatchError, 'an integer weight');
});

t.test('truncated and corrupt safetensors files', async (t) => {
  const original = await readFile(join(MLM, 'model.safetensors'));
  const headerLength = Number(original.readBigUInt64LE(0));
  const header = JSON.parse(original.subarray(8, 8 + headerLength).toString('utf8'));
  const withHeader = (h: unknown) => {
    const json = Buffer.from(JSON.stringify(h));
    const out = Buffer.alloc(8 + json.length + (original.length - 8 - headerLength));
    out.writeBigUInt64LE(BigInt(json.length));
    json.copy(out, 8);
    original.copy(out, 8 + json.length, 8 + headerLength);
    return out;
  };
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const [a, b] = [names[0]!, names[1]!];
  const cases: [string, Buffer, RegExp][] = [
    ['truncated data', original.subarray(0, original.length - 100), /past the end|end/],
    ['truncated header', original.subarray(0, 100), /header/],
    ['header length past the end', Buffer.concat([Buffer.from([0xff, 0xff, 0, 0, 0, 0, 0, 0]), original.subarray(8)]), /header/],
    ['not JSON', Buffer.concat([original.subarray(0, 8), Buffer.from('{"oops'.padEnd(headerLength, ' ')), original.subarray(8 + headerLength)]), /JSON/],
    ['offsets past the end', withHeader({ ...header, [a]: { ...header[a], data_offsets: [original.length, original.length + 4 * 262] } }), /past the end|end/],
    ['overlapping offsets', withHeader({ ...header, [b]: { ...header[b], data_offsets: [header[a].data_offsets[0] + 4, header[a].data_offsets[0] + 4 + header[b].data_offsets[1] - header[b].data_offsets[0]] } }), /overlap/],
    ['empty file', Buffer.alloc(0), /shorter|8 bytes|too short/],
  ];
  for (const [what, bytes, message] of cases) {
    const dir = await checkpointWith(t, (d) => writeFile(join(d, 'model.safetensors'), bytes));
    const error = await AutoModel.fromPretrained(dir).catch((e: unknown) => e);
    t.type(error, WeightsFormatError, `${what}: WeightsFormatError`);
    t.match((error as Error).message, message, `${what}: ${(error as Error).message}`);
  }
});

t.test('configs that cannot be built', async (t) => {
  const config = JSON.parse(await readFile(join(MLM, 'config.json'), 'utf8'));
  const cases: [string, string, RegExp][] = [
    ['unknown architecture', JSON.stringify({ ...config, architectures: ['PerceiverForTimeTravel'] }), /unsupported architecture "PerceiverForTimeTravel".*PerceiverForMaskedLM/],
    ['prototype name as architecture', JSON.stringify({ ...config, architectures: ['toString'] }), /unsupported architecture "toString"/],
    ['no architectures', JSON.stringify({ ...config, architectures: undefined }), /architectures is missing/],
    ['not JSON', '{"d_model": ', /not valid JSON/],
    ['an array', '[1, 2]', /JSON object/],
    ['a bad field', JSON.stringify({ ...config, num_latents: -3 }), /num_latents must be a positive integer/],
    ['heads not dividing', JSON.stringify({ ...config, num_self_attention_heads: 5 }), /divisible by num_heads/],
    ['unsupported activation', JSON.stringify({ ...config, hidden_act: 'relu' }), /hidden_act "relu" is not supported/],
  ];
  for (const [what, text, message] of cases) {
    const dir = await checkpointWith(t, (d) => writeFile(join(d, 'config.json'), text));
    const error = await AutoModel.fromPretrained(dir).catch((e: unknown) => e);
    t.type(error, ConfigError, `${what}: ConfigError`);
    t.match((error as Error).message, message, `${what}: ${(error as Error).message}`);
  }
  const noConfig = await checkpointWith(t, async () => {});
  await writeFile(join(noConfig, 'config.json'), '');
  await t.rejects(AutoModel.fromPretrained(join(noConfig, 'nope')), ConfigError, 'a folder without config.json');
  const noWeights = await tempDir(t);
  await mkdir(noWeights, { recursive: true });
  await copyFile(join(MLM, 'config.json'), join(noWeights, 'config.json'));
  await t.rejects(AutoModel.fromPretrained(noWeights), WeightsFormatError, 'a folder without weights');
});

t.test('modules refuse settings transformers cannot run, when built', async (t) => {
  const config = new PerceiverConfig({ d_latents: 64 });
  t.throws(() => new PerceiverLayer(config, { numHeads: 5, qDim: 64, kvDim: 64 }), { name: 'ConfigError', message: 'qk_channels (64) must be divisible by num_heads (5)' }, 'heads not dividing qk_channels');
  t.throws(() => new PerceiverLayer(config, { numHeads: 4, qDim: 64, kvDim: 64, vChannels: 30 }), { name: 'ConfigError', message: 'v_channels (30) must be divisible by num_heads (4)' }, 'heads not dividing v_channels');
  t.throws(
    () => new PerceiverAudioPreprocessor(config, { samplesPerPatch: 4, fourierPositionEncodingKwargs: { numBands: 2, maxResolution: [8, 8] } }),
    { name: 'ConfigError', message: 'audio Fourier positions must be 1-D (max_resolution of one entry), got 2-D' },
    'audio positions over a 2-D grid',
  );
});

t.test('PerceiverConfig validates what it is given', async (t) => {
  t.throws(() => new PerceiverConfig({ d_latents: 'big' as never }), ConfigError);
  t.throws(() => new PerceiverConfig({ cross_attention_shape_for_attention: 'x' as never }), ConfigError);
  t.throws(() => new PerceiverForMaskedLM({} as never), InvalidArgumentError);
  const c = new PerceiverConfig({ num_labels: 4, torch_dtype: 'float32', something_new: 1 });
  t.equal(c.num_labels, 4, 'num_labels builds the label maps');
  t.equal(c.dtype, 'float32', 'torch_dtype is read as dtype');
  t.same(c.extra, { something_new: 1 }, 'unknown keys are kept');
  const io = await fixtureIo('text-mlm');
  t.ok(io.size > 0);
});
