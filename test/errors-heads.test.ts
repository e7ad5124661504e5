/**
 * Bad input to the image, optical-flow and multimodal heads: every case is an InvalidArgumentError
 * saying what was wrong, and the model runs as before afterwards. Also the size-dependent paths
 * that must not fail: learned positions resized on request, Fourier features at any size.
 */
import t, { type Test } from 'tap';
import { AutoModel, InvalidArgumentError, Tensor, type ForwardCall, type PerceiverModel, type Logits } from '../lib/index.js';
import { assertClose, fixtureDir, fixtureInputs, fixtureIo, fixtureLogits, fixturePoints } from './helpers/fixtures.js';

type Model = PerceiverModel<Logits>;
type Case = [what: string, call: ForwardCall, message: RegExp | RegExp[]];

/** A float32 tensor of the given shape with deterministic, varied values. */
function floats(shape: number[], phase = 0): Tensor<'float32'> {
  const size = shape.reduce((a, b) => a * b, 1);
  return new Tensor('float32', shape, Float32Array.from({ length: size }, (_, i) => Math.sin(0.37 * i + phase)));
}

/** Every logits tensor of an output, flattened in key order, for exact comparison. */
function flatLogits(logits: Logits | undefined): number[] {
  if (!logits) return [];
  if (logits instanceof Tensor) return Array.from(logits.data);
  return Object.keys(logits)
    .sort()
    .flatMap((k) => Array.from(logits[k]!.data));
}

function shapes(logits: Logits | undefined): unknown {
  if (!logits || logits instanceof Tensor) return logits?.shape;
  return Object.fromEntries(Object.entries(logits).map(([k, v]) => [k, v.shape]));
}

/** Each case is rejected with an InvalidArgumentError matching its message(s); after each, `baseline` runs unchanged. */
async function expectRejections(t: Test, model: Model, cases: Case[], baseline: ForwardCall): Promise<void> {
  const before = flatLogits((await model.forward(baseline)).logits);
  t.ok(before.length > 0, 'the baseline produces logits');
  for (const [what, call, message] of cases) {
    const error = await model.forward(call).then(
      (out) => new Error(`resolved with logits ${JSON.stringify(shapes(out.logits))}`),
      (e: unknown) => e,
    );
    t.type(error, InvalidArgumentError, `${what}: InvalidArgumentError (${(error as Error).message})`);
    // Whichever layer refused it (TypeScript, or the engine's own check), the fields say what was wrong.
    t.match(error, { argument: /^inputs|^subsampledOutputPoints/, expected: /./, actual: /./ }, `${what}: names the argument, what was expected and what came`);
    for (const m of Array.isArray(message) ? message : [message]) t.match((error as Error).message, m, `${what}: message matches ${m}`);
    const after = flatLogits((await model.forward(baseline)).logits);
    t.same(after, before, `${what}: the model still runs, with the same result`);
  }
}

async function load(t: Test, name: string): Promise<{ model: Model; io: Map<string, Tensor> }> {
  const model = await AutoModel.fromPretrained(fixtureDir(name));
  t.teardown(() => model.dispose());
  return { model, io: await fixtureIo(name) };
}

t.test('image (learned positions): wrong channels, rank, dtype, size', async (t) => {
  const { model, io } = await load(t, 'image-learned');
  const input = io.get('input')!; // [2, 3, 8, 8]
  await expectRejections(
    t,
    model,
    [
      ['4 channels', { inputs: floats([2, 4, 8, 8]) }, [/3 channels/, /4 channels/]],
      ['a 3-D tensor', { inputs: floats([3, 8, 8]) }, [/\[batch, channels, height, width\]/, /\[3, 8, 8\]/]],
      ['video for a conv1x1 model', { inputs: floats([2, 2, 3, 8, 8]) }, /\[batch, channels, height, width\]/],
      ['int64 pixels', { inputs: new Tensor('int64', input.shape, new BigInt64Array(input.size)) }, [/floating-point/, /int64/]],
      ['an empty batch', { inputs: floats([0, 3, 8, 8]) }, /batch of at least 1/],
      ['a plain array', { inputs: [[[1, 2, 3]]] as unknown as Tensor }, /Tensor/],
      ['10x10 without interpolatePosEncoding', { inputs: floats([2, 3, 10, 10]) }, [/interpolatePosEncoding/, /100/, /64/]],
      ['a record of points for a single-output model', { inputs: input, subsampledOutputPoints: { image: [0] } }, /single output/],
      ['a point past the single query', { inputs: input, subsampledOutputPoints: [1] }, /indices in \[0, 1\)/],
    ],
    { inputs: input },
  );
});

t.test('image (learned positions): interpolatePosEncoding', async (t) => {
  const { model, io } = await load(t, 'image-learned');
  const input = io.get('input')!;
  const plain = await model.forward({ inputs: input });
  const sameSize = await model.forward({ inputs: input, interpolatePosEncoding: true });
  t.same(Array.from((sameSize.logits as Tensor<'float32'>).data), Array.from((plain.logits as Tensor<'float32'>).data), 'bicubic at the same size is the identity: equal to the plain forward');

  const big = floats([2, 3, 10, 10]);
  const resized = await model.forward({ inputs: big, interpolatePosEncoding: true });
  const logits = resized.logits as Tensor<'float32'>;
  t.same(logits.shape, [2, 6], '10x10 with interpolatePosEncoding: [2, 6] logits');
  t.ok(logits.data.every(Number.isFinite), 'finite logits');
  t.notSame(Array.from(logits.data.subarray(0, 6)), Array.from(logits.data.subarray(6)), 'the two images give different logits');
  const between = await model.forward({ inputs: floats([2, 3, 12, 12]), interpolatePosEncoding: true });
  t.same((between.logits as Tensor).shape, [2, 6], '12x12 with interpolatePosEncoding: [2, 6] logits');
  const again = await model.forward({ inputs: big, interpolatePosEncoding: true });
  t.same(Array.from((again.logits as Tensor<'float32'>).data), Array.from(logits.data), '10x10 again, after 12x12: the same result');

  // Resizing for one call leaves the model's own table alone.
  const after = await model.forward({ inputs: input });
  t.same(Array.from((after.logits as Tensor<'float32'>).data), Array.from((plain.logits as Tensor<'float32'>).data), 'the plain forward is unchanged afterwards');
  assertClose(t, after.logits as Tensor, io.get('expected.logits'), 'and still matches transformers');
});

t.test('image (Fourier): any size runs, and alternating sizes give the same results each time', async (t) => {
  const { model, io } = await load(t, 'image-fourier');
  const input = io.get('input')!; // [2, 3, 8, 10]
  const other = floats([2, 3, 12, 14]);
  const first = await model.forward({ inputs: input });
  assertClose(t, first.logits as Tensor, io.get('expected.logits'), 'fixture size matches transformers');
  const second = await model.forward({ inputs: other });
  t.same((second.logits as Tensor).shape, [2, 6], '[2, 3, 12, 14] runs: [2, 6] logits');
  t.ok((second.logits as Tensor<'float32'>).data.every(Number.isFinite), 'finite logits');
  for (let round = 0; round < 2; round++) {
    const a = await model.forward({ inputs: input });
    t.same(Array.from((a.logits as Tensor<'float32'>).data), Array.from((first.logits as Tensor<'float32'>).data), `round ${round}: fixture size unchanged`);
    const b = await model.forward({ inputs: other });
    t.same(Array.from((b.logits as Tensor<'float32'>).data), Array.from((second.logits as Tensor<'float32'>).data), `round ${round}: 12x14 unchanged`);
  }
  // A fresh model that sees the sizes in the other order gives the same numbers: what is cached
  // per grid size does not depend on which size came first.
  const fresh = await AutoModel.fromPretrained(fixtureDir('image-fourier'));
  t.teardown(() => fresh.dispose());
  const otherFirst = await fresh.forward({ inputs: other });
  const inputSecond = await fresh.forward({ inputs: input });
  t.same(Array.from((otherFirst.logits as Tensor<'float32'>).data), Array.from((second.logits as Tensor<'float32'>).data), 'another model, 12x14 first: same logits');
  t.same(Array.from((inputSecond.logits as Tensor<'float32'>).data), Array.from((first.logits as Tensor<'float32'>).data), 'another model, fixture size second: same logits');
  await expectRejections(
    t,
    model,
    [
      ['4 channels', { inputs: floats([2, 4, 8, 10]) }, [/3 channels/, /4 channels/]],
      ['video on 2-D Fourier features', { inputs: floats([1, 2, 3, 8, 10]) }, /Fourier/],
    ],
    { inputs: input },
  );
});

t.test('image (conv stem): too small an image', async (t) => {
  const { model, io } = await load(t, 'image-conv');
  const input = io.get('input')!; // [2, 3, 32, 32]
  await expectRejections(
    t,
    model,
    [
      // 7x7/2 "same" conv then a 3x3/2 max-pool without padding (as transformers): 4x4 pools a 2x2 map.
      ['a 4x4 image', { inputs: floats([1, 3, 4, 4]) }, [/an image large enough/, /\[1, 3, 4, 4\]/]],
      ['a 1x1 image', { inputs: floats([1, 3, 1, 1]) }, /an image large enough/],
      ['a 32x2 image', { inputs: floats([1, 3, 32, 2]) }, /an image large enough/],
      ['video', { inputs: floats([1, 2, 3, 32, 32]) }, /\[batch, channels, height, width\]/],
      ['4 channels', { inputs: floats([1, 4, 32, 32]) }, /3 channels/],
    ],
    { inputs: input },
  );
  const smallest = await model.forward({ inputs: floats([1, 3, 5, 5]) });
  t.same((smallest.logits as Tensor).shape, [1, 6], 'a 5x5 image (a 3x3 map before pooling) still runs');
});

t.test('optical flow: wrong channels, frames, size; points', async (t) => {
  const { model, io } = await load(t, 'optical-flow');
  const input = io.get('input')!; // [1, 2, 27, 12, 16]
  await expectRejections(
    t,
    model,
    [
      ['26 channels', { inputs: floats([1, 2, 26, 12, 16]) }, [/54 values/, /26 channels/]],
      ['3 frames', { inputs: floats([1, 3, 27, 12, 16]) }, [/frames a multiple of 2/, /\[1, 3, 27, 12, 16\]/]],
      ['1 frame', { inputs: floats([1, 1, 27, 12, 16]) }, /frames a multiple of 2/],
      ['int64 frames', { inputs: new Tensor('int64', input.shape, new BigInt64Array(input.size)) }, /floating-point/],
      ['another size without points', { inputs: floats([1, 2, 27, 10, 12]) }, [/12x16/, /subsampledOutputPoints/]],
      ['a record of points', { inputs: input, subsampledOutputPoints: { flow: [0] } }, /single output/],
      ['a point past the field', { inputs: input, subsampledOutputPoints: [0, 192] }, /indices in \[0, 192\)/],
      ['a negative point', { inputs: input, subsampledOutputPoints: [-1] }, /non-negative/],
    ],
    { inputs: input },
  );
  const otherSize = await model.forward({ inputs: floats([1, 2, 27, 10, 12]), subsampledOutputPoints: Array.from({ length: 120 }, (_, i) => i) });
  t.same(otherSize.logits?.shape, [1, 120, 2], 'another size decodes with points: [1, 120, 2]');
});

t.test('multimodal autoencoding: modalities, batches, audio length, subsampled points', async (t) => {
  const { model, io } = await load(t, 'multimodal-autoencoding');
  const inputs = fixtureInputs(io) as Record<string, Tensor>;
  const { image, audio, label } = inputs;
  await expectRejections(
    t,
    model,
    [
      ['no label', { inputs: { image: image!, audio: audio! } }, [/inputs\.label/, /audio, image, label/]],
      ['an unknown modality', { inputs: { ...inputs, video: image! } }, [/inputs\.video/, /unknown modality "video"/]],
      ['a Tensor instead of a record', { inputs: image! }, /keyed by modality/],
      ['a batch mismatch', { inputs: { ...inputs, label: floats([2, 9]) } }, [/batch of 1/, /batch of 2/]],
      ['audio not a multiple of samples_per_patch', { inputs: { ...inputs, audio: floats([1, 63, 1]) } }, [/samples_per_patch = 4/, /\[1, 63, 1\]/]],
      ['a label of the wrong width', { inputs: { ...inputs, label: floats([1, 8]) } }, /\[batch, 9\]/],
      ['int64 audio', { inputs: { ...inputs, audio: new Tensor('int64', [1, 64, 1], new BigInt64Array(64)) } }, [/inputs\.audio/, /floating-point/]],
      ['image index 128 of 2x8x8', { inputs, subsampledOutputPoints: { image: [0, 128] } }, [/subsampledOutputPoints\.image/, /128/, /\[0, 128\)/]],
      ['image index -1', { inputs, subsampledOutputPoints: { image: [-1] } }, [/subsampledOutputPoints\.image/, /non-negative/]],
      ['image index -1 (int64)', { inputs, subsampledOutputPoints: { image: Tensor.from('int64', [3, -1]) } }, /non-negative/],
      ['audio index 16 of 16', { inputs, subsampledOutputPoints: { audio: [16] } }, [/subsampledOutputPoints\.audio/, /\[0, 16\)/]],
      ['label index 1 of 1', { inputs, subsampledOutputPoints: { label: [1] } }, /\[0, 1\)/],
      ['an unknown modality in points', { inputs, subsampledOutputPoints: { video: [0] } }, [/subsampledOutputPoints\.video/, /unknown modality "video"/]],
      ['a non-integer index', { inputs, subsampledOutputPoints: { image: [0, 1.5] } }, [/integer/, /1\.5/]],
      ['float indices', { inputs, subsampledOutputPoints: { image: Tensor.from('float32', [0, 1]) } }, /integer Tensor/],
      ['an empty list', { inputs, subsampledOutputPoints: { image: [] } }, /at least one point/],
      ['one list for a multi-output model', { inputs, subsampledOutputPoints: [0, 1] }, /keyed by modality/],
    ],
    { inputs, subsampledOutputPoints: fixturePoints(io) },
  );
  const out = await model.forward({ inputs, subsampledOutputPoints: fixturePoints(io) });
  const expected = fixtureLogits(io);
  for (const m of ['audio', 'image', 'label']) {
    assertClose(t, (out.logits as Record<string, Tensor>)[m], expected[m], `after every rejection: logits.${m} still match transformers`);
  }
});
