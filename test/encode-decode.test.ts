/**
 * encode() once, decode() many times: decoding chunks of output points from one encoding gives
 * what one forward per chunk gives, the chunks put together give the full forward, and an encoding
 * is tied to its model and its own lifetime.
 */
import t, { type Test } from 'tap';
import {
  DisposedError,
  InvalidArgumentError,
  PerceiverEncoding,
  PerceiverForMultimodalAutoencoding,
  PerceiverForOpticalFlow,
  Tensor,
  type DecodeCall,
} from '../lib/index.js';
import {
  assertClose,
  fixtureDir,
  fixtureHidden,
  fixtureInputs,
  fixtureIo,
  fixtureLogits,
  fixturePoints,
  relativeError,
} from './helpers/fixtures.js';

/** Chunks of one computation: the same numbers up to float32 summation order. */
const SAME = 1e-6;

type Record3 = Record<string, Tensor<'float32'>>;

function sameValues(t: Test, actual: Tensor | undefined, expected: Tensor | undefined, what: string, tolerance = SAME): void {
  t.ok(actual && expected, `${what}: present`);
  if (!actual || !expected) return;
  t.same(actual.shape, expected.shape, `${what}: shape`);
  const err = relativeError(actual, expected);
  t.ok(err <= tolerance, `${what}: relative difference ${err === 0 ? '0 (bitwise)' : err.toExponential(2)} <= ${tolerance}`);
}

/** Concatenates float32 tensors along axis 1 (every other axis must agree). */
function concatAxis1(parts: Tensor<'float32'>[]): Tensor<'float32'> {
  const [batch, , ...rest] = parts[0]!.shape as number[];
  const inner = rest.reduce((a, b) => a * b, 1);
  const rows = parts.reduce((n, p) => n + p.shape[1]!, 0);
  const data = new Float32Array(batch! * rows * inner);
  let offset = 0;
  for (let b = 0; b < batch!; b++) {
    for (const p of parts) {
      const n = p.shape[1]! * inner;
      data.set(p.data.subarray(b * n, (b + 1) * n), offset);
      offset += n;
    }
  }
  return new Tensor('float32', [batch!, rows, ...rest], data);
}

/** Rows `indices` of a [rows, width] view of `t`'s data, as [1, indices.length, width]. */
function gatherRows(t: Tensor<'float32'>, indices: number[], width: number): Tensor<'float32'> {
  const data = new Float32Array(indices.length * width);
  indices.forEach((row, i) => data.set(t.data.subarray(row * width, (row + 1) * width), i * width));
  return new Tensor('float32', [1, indices.length, width], data);
}

const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

t.test('multimodal: one encoding decoded chunk by chunk equals a forward per chunk and, put together, the full forward', async (t) => {
  const io = await fixtureIo('multimodal-autoencoding');
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  t.type(model, PerceiverForMultimodalAutoencoding);
  const inputs = fixtureInputs(io);
  const full = (await model.forward({ inputs })).logits as Record3;
  // The fixture decodes every point, so the full forward is its reference.
  const expected = fixtureLogits(io);
  for (const m of ['audio', 'image', 'label']) assertClose(t, full[m], expected[m], `full forward: logits.${m}`);

  const encoding = await model.encode({ inputs });
  t.teardown(() => encoding.dispose());
  t.type(encoding, PerceiverEncoding, 'encode() returns a PerceiverEncoding');
  const imageChunks: Tensor<'float32'>[] = [];
  const audioChunks: Tensor<'float32'>[] = [];
  for (let c = 0; c < 4; c++) {
    const image = range(32 * c, 32);
    const audio = range(4 * c, 4);
    // Every way of passing indices: Tensor, number[], Int32Array, BigInt64Array.
    const asList = [
      (v: number[]) => Tensor.from('int64', v),
      (v: number[]) => v,
      (v: number[]) => Int32Array.from(v),
      (v: number[]) => BigInt64Array.from(v, BigInt),
    ][c]!;
    const subsampledOutputPoints = { image: asList(image), audio: asList(audio) };
    const decoded = (await model.decode(encoding, { subsampledOutputPoints })).logits;
    const perChunk = (await model.forward({ inputs, subsampledOutputPoints })).logits as Record3;
    t.same(Object.keys(decoded).sort(), ['audio', 'image', 'label'], `chunk ${c}: every modality`);
    t.same(decoded.image!.shape, [1, 32, 3], `chunk ${c}: image [1, 32, 3]`);
    t.same(decoded.audio!.shape, [1, 4 * model.config.samples_per_patch], `chunk ${c}: audio [1, 4 points x samples_per_patch]`);
    t.same(decoded.label!.shape, [1, model.config.num_labels], `chunk ${c}: label [1, num_labels]`);
    for (const m of ['audio', 'image', 'label']) sameValues(t, decoded[m], perChunk[m], `chunk ${c}: decode = forward, ${m}`);
    sameValues(t, decoded.label, full.label, `chunk ${c}: label = full forward's label`);
    imageChunks.push(decoded.image!);
    audioChunks.push(decoded.audio!);
  }
  sameValues(t, concatAxis1(imageChunks), full.image, 'the image chunks together = the full forward');
  sameValues(t, concatAxis1(audioChunks), full.audio, 'the audio chunks together = the full forward');

  // A modality left out (or null) is decoded at every point.
  const imageOnly = (await model.decode(encoding, { subsampledOutputPoints: { image: [127, 0, 64], audio: null } })).logits;
  sameValues(t, imageOnly.audio, full.audio, 'audio: null decodes every audio point');
  sameValues(t, imageOnly.label, full.label, 'label left out decodes its point');
  sameValues(t, imageOnly.image, gatherRows(full.image!, [127, 0, 64], 3), 'points in any order give those rows, in that order');
});

t.test('chunk fixture: decoding its points from an encoding matches transformers', async (t) => {
  const name = 'multimodal-autoencoding-chunk';
  const io = await fixtureIo(name);
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir(name));
  t.teardown(() => model.dispose());
  const encoding = await model.encode({ inputs: fixtureInputs(io), outputHiddenStates: true });
  t.teardown(() => encoding.dispose());
  const hidden = fixtureHidden(io);
  t.equal(encoding.hiddenStates?.length, hidden.length, 'the encoding holds every hidden state');
  for (let i = 0; i < hidden.length; i++) assertClose(t, encoding.hiddenStates?.[i], hidden[i], `encoding hidden.${i}`);
  assertClose(t, encoding.lastHiddenState, hidden[hidden.length - 1], 'encoding lastHiddenState');
  const { logits } = await model.decode(encoding, { subsampledOutputPoints: fixturePoints(io) });
  const expected = fixtureLogits(io);
  t.same(Object.keys(logits).sort(), Object.keys(expected).sort(), 'every modality');
  for (const [m, reference] of Object.entries(expected)) assertClose(t, logits[m], reference, `logits.${m}`);
});

t.test('decoding with no points decodes every point', async (t) => {
  const io = await fixtureIo('multimodal-autoencoding');
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  const c = model.config;
  const inputs = fixtureInputs(io);
  const encoding = await model.encode({ inputs });
  t.teardown(() => encoding.dispose());
  const full = (await model.forward({ inputs })).logits as Record3;
  const expected = fixtureLogits(io);
  const calls: (DecodeCall | undefined)[] = [undefined, {}, { subsampledOutputPoints: {} }, { subsampledOutputPoints: { image: null, audio: null } }];
  for (const call of calls) {
    const what = JSON.stringify(call) ?? 'no call';
    const { logits } = await model.decode(encoding, call);
    const [, frames, height, width] = c.output_shape as number[];
    t.same(logits.image?.shape, [1, frames! * height! * width!, 3], `${what}: image [1, 2*8*8, 3]`);
    t.same(logits.audio?.shape, [1, c.num_frames * c.audio_samples_per_frame], `${what}: audio [1, 64]`);
    t.same(logits.label?.shape, [1, c.num_labels], `${what}: label [1, num_labels]`);
    for (const m of ['audio', 'image', 'label']) {
      sameValues(t, logits[m], full[m], `${what}: ${m} = forward`);
      assertClose(t, logits[m], expected[m], `${what}: ${m} = transformers (every point)`);
    }
  }
});

t.test("an encoding reports forward's latents", async (t) => {
  const io = await fixtureIo('multimodal-autoencoding');
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  const inputs = fixtureInputs(io);
  const out = await model.forward({ inputs, outputHiddenStates: true });
  const plain = await model.encode({ inputs });
  t.teardown(() => plain.dispose());
  sameValues(t, plain.lastHiddenState, out.lastHiddenState, 'lastHiddenState');
  t.equal(plain.hiddenStates, undefined, 'no hidden states unless asked for');
  const withHidden = await model.encode({ inputs, outputHiddenStates: true });
  t.teardown(() => withHidden.dispose());
  sameValues(t, withHidden.lastHiddenState, out.lastHiddenState, 'lastHiddenState (with hidden states)');
  t.equal(withHidden.hiddenStates?.length, out.hiddenStates?.length, 'as many hidden states as forward');
  for (let i = 0; i < (out.hiddenStates?.length ?? 0); i++) sameValues(t, withHidden.hiddenStates?.[i], out.hiddenStates?.[i], `hidden.${i}`);
  const hidden = fixtureHidden(io);
  assertClose(t, plain.lastHiddenState, hidden[hidden.length - 1], 'lastHiddenState = transformers');
});

t.test('encodings: disposal, ownership, and a disposed model', async (t) => {
  const dir = fixtureDir('multimodal-autoencoding');
  const io = await fixtureIo('multimodal-autoencoding');
  const inputs = fixtureInputs(io);
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(dir);
  const other = await PerceiverForMultimodalAutoencoding.fromPretrained(dir);
  t.teardown(() => Promise.all([model.dispose(), other.dispose()]));
  const reference = (await model.forward({ inputs })).logits as Record3;

  const encoding = await model.encode({ inputs });
  t.equal(encoding.disposed, false, 'a fresh encoding is live');
  encoding.dispose();
  t.equal(encoding.disposed, true, 'disposed');
  await t.rejects(model.decode(encoding), DisposedError, 'decode of a disposed encoding: DisposedError');
  t.doesNotThrow(() => encoding.dispose(), 'dispose is idempotent');

  const mine = await model.encode({ inputs });
  t.teardown(() => mine.dispose());
  const foreign = await other.decode(mine).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(foreign instanceof Error, "decode of another model's encoding is rejected");
  t.type(foreign, InvalidArgumentError, "another model's encoding: InvalidArgumentError");
  t.match((foreign as Error).message, /another model/, 'the message says the encoding belongs to another model');
  t.match(foreign, { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' }, "another model's encoding: invalid-argument code");
  t.match((foreign as Error).message, /encoding/, 'the message names the encoding');
  await t.rejects(model.decode({} as PerceiverEncoding), InvalidArgumentError, 'a non-encoding: InvalidArgumentError');
  await t.rejects(model.decode(null as unknown as PerceiverEncoding), InvalidArgumentError, 'null: InvalidArgumentError');

  // Both models still work, and the encoding still decodes on its own model.
  const again = (await model.decode(mine)).logits;
  for (const m of ['audio', 'image', 'label']) sameValues(t, again[m], reference[m], `own model still decodes: ${m}`);
  const otherEncoding = await other.encode({ inputs });
  t.teardown(() => otherEncoding.dispose());
  const otherLogits = (await other.decode(otherEncoding)).logits;
  for (const m of ['audio', 'image', 'label']) sameValues(t, otherLogits[m], reference[m], `other model still works: ${m}`);

  await model.dispose();
  await t.rejects(model.decode(mine), DisposedError, 'decode on a disposed model: DisposedError');
  await t.rejects(model.encode({ inputs }), DisposedError, 'encode on a disposed model: DisposedError');
  await t.rejects(model.forward({ inputs }), DisposedError, 'forward on a disposed model: DisposedError');
  t.same(mine.lastHiddenState.shape, [1, model.config.num_latents, model.config.d_latents], "an encoding's tensors outlive its model");
});

t.test('optical flow: encode then decode equals forward; subsampled points are rows of the flow field', async (t) => {
  const io = await fixtureIo('optical-flow');
  const model = await PerceiverForOpticalFlow.fromPretrained(fixtureDir('optical-flow'));
  t.teardown(() => model.dispose());
  t.type(model, PerceiverForOpticalFlow);
  const inputs = io.get('input')!;
  const forward = await model.forward({ inputs });
  const flow = forward.logits!;
  const [height, width] = model.config.train_size as number[];
  t.same(flow.shape, [1, height, width, 2], 'forward: [1, height, width, 2]');
  assertClose(t, flow, io.get('expected.logits'), 'forward = transformers');

  const encoding = await model.encode({ inputs });
  t.teardown(() => encoding.dispose());
  sameValues(t, encoding.lastHiddenState, forward.lastHiddenState, 'encoding lastHiddenState = forward');
  const decoded = (await model.decode(encoding)).logits;
  sameValues(t, decoded, flow, 'decode every point = forward');

  const points = height! * width!;
  const cases: [string, number[]][] = [
    ['a few points', [0, 1, width! - 1, width!, 100, points - 1, 57]],
    ['a contiguous chunk', range(64, 64)],
    ['every point, shuffled', Array.from({ length: points }, (_, i) => (i * 37) % points)],
  ];
  for (const [what, indices] of cases) {
    const rows = (await model.decode(encoding, { subsampledOutputPoints: indices })).logits;
    t.same(rows.shape, [1, indices.length, 2], `${what}: [1, n, 2]`);
    sameValues(t, rows, gatherRows(flow, indices, 2), `${what}: the flow field's rows`);
    const viaForward = (await model.forward({ inputs, subsampledOutputPoints: Tensor.from('int64', indices) })).logits!;
    sameValues(t, rows, viaForward, `${what}: decode = forward with the same points`);
  }
});
