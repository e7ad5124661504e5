/**
 * Device-resident tensors on the CPU backend (the same code paths run on CUDA: bench/gpu-check.ts
 * part 'device-tensor'): outputs left in backend memory equal the host outputs to the bit, device
 * inputs equal host inputs to the bit, typed errors for what cannot be a device input, and the
 * lifetime rules: dispose, use after dispose, the finaliser safety net, copies in flight across
 * dispose, and no growth over a thousand cycles.
 */
import t, { type Test } from 'tap';
import {
  AutoModel,
  DeviceTensor,
  DisposedError,
  InvalidArgumentError,
  PerceiverAudioPreprocessor,
  PerceiverConfig,
  PerceiverForMultimodalAutoencoding,
  PerceiverModel,
  RandomWeightStore,
  Tensor,
} from '../lib/index.js';
import { loadAddon } from '../lib/native/binding.js';
import { fixtureDir, fixtureInputs, fixtureIo, fixturePoints } from './helpers/fixtures.js';

const gc = (globalThis as { gc?: () => void }).gc;
const stats = () => loadAddon().deviceTensorStats();

/** Lets finalisers run: a few GC passes, each followed by a turn of the event loop. */
async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc?.();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function sameBits(t: Test, actual: Tensor | undefined, expected: Tensor | undefined, what: string): void {
  t.ok(actual && expected, `${what}: present`);
  if (!actual || !expected) return;
  t.equal(actual.dtype, 'float32', `${what}: float32`);
  t.same(actual.shape, expected.shape, `${what}: shape`);
  t.ok(Buffer.from(actual.bytes()).equals(Buffer.from(expected.bytes())), `${what}: the same bits`);
}

/** Copies a device output (a tensor or a record by modality) to the host, disposing it. */
async function toHostRecord(value: DeviceTensor | Record<string, DeviceTensor>): Promise<Record<string, Tensor<'float32'>>> {
  const entries = value instanceof DeviceTensor ? [['', value] as const] : Object.entries(value);
  const out: Record<string, Tensor<'float32'>> = {};
  for (const [name, tensor] of entries) {
    out[name] = await tensor.toHost();
    tensor.dispose();
  }
  return out;
}

const byName = (logits: Tensor | Record<string, Tensor>): Record<string, Tensor> => (logits instanceof Tensor ? { '': logits } : logits);

t.test("forward with outputs: 'device' equals the host forward bit for bit", async (t) => {
  await collect();
  const before = stats();
  for (const name of ['text-mlm', 'image-learned', 'multimodal-autoencoding']) {
    const io = await fixtureIo(name);
    const model = await AutoModel.fromPretrained(fixtureDir(name));
    const call = { inputs: fixtureInputs(io), attentionMask: io.get('call.attention_mask'), subsampledOutputPoints: fixturePoints(io) };
    const host = await model.forward(call);
    const device = await model.forward({ ...call, outputs: 'device' });
    const last = device.lastHiddenState;
    t.type(last, DeviceTensor, `${name}: lastHiddenState is a DeviceTensor`);
    t.equal(last.dtype, 'float32');
    t.equal(last.device, 'cpu', `${name}: on the model's device`);
    t.same(last.shape, host.lastHiddenState.shape, `${name}: lastHiddenState shape`);
    t.equal(last.byteLength, host.lastHiddenState.byteLength, `${name}: byteLength`);
    t.equal(last.disposed, false);
    const logits = await toHostRecord(device.logits!);
    const expected = byName(host.logits!);
    t.same(Object.keys(logits).sort(), Object.keys(expected).sort(), `${name}: the same logits (${Object.keys(expected).join(', ') || 'one tensor'})`);
    for (const key of Object.keys(expected)) sameBits(t, logits[key], expected[key], `${name} logits${key ? '.' + key : ''}`);
    sameBits(t, await last.toHost(), host.lastHiddenState, `${name} lastHiddenState`);
    last.dispose();
    t.equal(last.disposed, true);
    await model.dispose();
  }

  // Every output tensor stays on the device, the per-layer hidden states included (copies: the
  // layers update the latents in place).
  const io = await fixtureIo('image-learned');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const call = { inputs: io.get('input')!, outputHiddenStates: true, outputAttentions: true };
  const host = await model.forward(call);
  const device = await model.forward({ ...call, outputs: 'device' });
  for (const key of ['hiddenStates', 'attentions', 'crossAttentions'] as const) {
    const list = device[key]!;
    t.equal(list.length, host[key]!.length, `${key}: ${list.length} tensors`);
    for (let i = 0; i < list.length; i++) {
      t.type(list[i], DeviceTensor);
      sameBits(t, await list[i]!.toHost(), host[key]![i], `${key}[${i}]`);
      list[i]!.dispose();
    }
  }
  device.lastHiddenState.dispose();
  (device.logits as DeviceTensor).dispose();
  await collect();
  t.equal(stats().live, before.live, 'every device tensor freed');
});

t.test("encode and decode with outputs: 'device'", async (t) => {
  const io = await fixtureIo('multimodal-autoencoding');
  const model = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  const inputs = fixtureInputs(io);
  const points = { image: [5, 0, 17], audio: [1, 2] };
  const hostEncoding = await model.encode({ inputs });
  const deviceEncoding = await model.encode({ inputs, outputs: 'device' });
  t.type(deviceEncoding.lastHiddenState, DeviceTensor, 'the encoding keeps its latents output on the device');
  sameBits(t, await deviceEncoding.lastHiddenState.toHost(), hostEncoding.lastHiddenState, 'encode lastHiddenState');
  const host = await model.decode(hostEncoding, { subsampledOutputPoints: points });
  const device = await model.decode(deviceEncoding, { subsampledOutputPoints: points, outputs: 'device' });
  const fromDevice = await toHostRecord(device.logits);
  for (const m of ['audio', 'image', 'label']) sameBits(t, fromDevice[m], host.logits[m], `decode logits.${m}`);
  // Disposing the encoding's latents output does not touch the encoding, and the reverse.
  deviceEncoding.lastHiddenState.dispose();
  const again = await model.decode(deviceEncoding, { subsampledOutputPoints: points });
  sameBits(t, again.logits.image, host.logits.image, 'the encoding decodes after its DeviceTensor output is disposed');
  deviceEncoding.dispose();
  hostEncoding.dispose();
});

t.test('device inputs: upload() and forward give what host inputs give, bit for bit', async (t) => {
  await collect();
  const before = stats();
  const io = await fixtureIo('image-learned');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const pixels = io.get('input')!;
  const host = await model.forward({ inputs: pixels });
  const uploaded = await model.upload(pixels);
  t.type(uploaded, DeviceTensor);
  t.same(uploaded.shape, pixels.shape, 'the shape of the host tensor');
  t.equal(uploaded.byteLength, pixels.byteLength);
  sameBits(t, await uploaded.toHost(), pixels, 'upload then toHost gives the values back');
  const fromDevice = await model.forward({ inputs: uploaded });
  sameBits(t, fromDevice.logits as Tensor, host.logits as Tensor, 'image-learned logits from a device input');
  const bothOnDevice = await model.forward({ inputs: uploaded, outputs: 'device' });
  sameBits(t, await (bothOnDevice.logits as DeviceTensor).toHost(), host.logits as Tensor, 'device in, device out');
  (bothOnDevice.logits as DeviceTensor).dispose();
  bothOnDevice.lastHiddenState.dispose();
  // float64 host values are converted to float32 on upload, as forward converts them.
  const wide = new Tensor('float64', pixels.shape, Float64Array.from(pixels.toFloat32()));
  using wideOnDevice = await model.upload(wide);
  sameBits(t, (await model.forward({ inputs: wideOnDevice })).logits as Tensor, host.logits as Tensor, 'a float64 upload');
  sameBits(t, await uploaded.toHost(), pixels, 'the forward left the device input unchanged');
  uploaded.dispose();

  // Multimodal: every float modality on the device, or some of them.
  const mmio = await fixtureIo('multimodal-autoencoding');
  const mm = await PerceiverForMultimodalAutoencoding.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => mm.dispose());
  const mmInputs = fixtureInputs(mmio) as Record<string, Tensor>;
  const subsampledOutputPoints = fixturePoints(mmio);
  const mmHost = (await mm.forward({ inputs: mmInputs, subsampledOutputPoints })).logits!;
  const onDevice: Record<string, DeviceTensor> = {};
  for (const [name, tensor] of Object.entries(mmInputs)) onDevice[name] = await mm.upload(tensor);
  const allDevice = (await mm.forward({ inputs: onDevice, subsampledOutputPoints, outputs: 'device' })).logits!;
  const allDeviceHost = await toHostRecord(allDevice);
  for (const m of ['audio', 'image', 'label']) sameBits(t, allDeviceHost[m], mmHost[m], `multimodal, every modality on the device: logits.${m}`);
  const mixed = (await mm.forward({ inputs: { image: onDevice.image!, audio: mmInputs.audio!, label: onDevice.label! }, subsampledOutputPoints })).logits!;
  for (const m of ['audio', 'image', 'label']) sameBits(t, mixed[m], mmHost[m], `multimodal, host and device mixed: logits.${m}`);
  for (const tensor of Object.values(onDevice)) tensor.dispose();

  // An audio preprocessor that adds its positions writes into its input: a device input is copied
  // within the backend first, so the caller's tensor stays as it was.
  const config = new PerceiverConfig({ num_latents: 8, d_latents: 32, d_model: 16, num_self_attends_per_block: 1, num_cross_attention_heads: 1, num_self_attention_heads: 2 });
  const audioPreprocessor = new PerceiverAudioPreprocessor(config, {
    samplesPerPatch: 16,
    concatOrAdd: 'add',
    positionEncodingType: 'trainable',
    trainablePositionEncodingKwargs: { indexDims: 4, numChannels: 16 },
  });
  const audioModel = await new PerceiverModel(config, { inputPreprocessor: audioPreprocessor }).loadWeights(new RandomWeightStore(3));
  t.teardown(() => audioModel.dispose());
  const samples = new Tensor('float32', [2, 64, 1], Float32Array.from({ length: 128 }, (_, i) => Math.sin(i / 5)));
  const audioHost = await audioModel.forward({ inputs: samples });
  using samplesOnDevice = await audioModel.upload(samples);
  for (let i = 0; i < 2; i++) {
    sameBits(t, (await audioModel.forward({ inputs: samplesOnDevice })).lastHiddenState, audioHost.lastHiddenState, `audio (positions added) from a device input, call ${i + 1}`);
  }
  sameBits(t, await samplesOnDevice.toHost(), samples, 'the audio device input is unchanged');

  // No preprocessor (the encoder's sequence itself), and optical flow, whose decoder queries with
  // the preprocessed inputs.
  const bare = await new PerceiverModel(config).loadWeights(new RandomWeightStore(5));
  t.teardown(() => bare.dispose());
  const sequence = new Tensor('float32', [2, 5, 16], Float32Array.from({ length: 160 }, (_, i) => Math.cos(i / 7)));
  const sequenceOnDevice = await bare.upload(sequence);
  sameBits(t, (await bare.forward({ inputs: sequenceOnDevice })).lastHiddenState, (await bare.forward({ inputs: sequence })).lastHiddenState, 'no preprocessor: a device input');
  sequenceOnDevice.dispose();
  const flowio = await fixtureIo('optical-flow');
  const flow = await AutoModel.fromPretrained(fixtureDir('optical-flow'));
  t.teardown(() => flow.dispose());
  const frames = flowio.get('input')!;
  const flowOnDevice = await flow.upload(frames);
  sameBits(t, (await flow.forward({ inputs: flowOnDevice })).logits as Tensor, (await flow.forward({ inputs: frames })).logits as Tensor, 'optical flow: a device input');
  flowOnDevice.dispose();
  await collect();
  t.equal(stats().live, before.live + 2, 'only the two tensors still in scope (using) are alive');
});

t.test('what cannot be a device input gets a typed error', async (t) => {
  const mlmio = await fixtureIo('text-mlm');
  const mlm = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => mlm.dispose());
  const io = await fixtureIo('image-learned');
  const a = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  const b = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => Promise.all([a.dispose(), b.dispose()]));
  const pixels = io.get('input')!;
  using ofA = await a.upload(pixels);

  const ids = mlmio.get('input')!;
  const floatIds = await mlm.upload(new Tensor('float32', ids.shape, Float32Array.from(ids.toFloat64())));
  const tokenError = await mlm.forward({ inputs: floatIds }).catch((e: unknown) => e);
  t.type(tokenError, InvalidArgumentError, 'token ids as a DeviceTensor: InvalidArgumentError');
  t.equal((tokenError as InvalidArgumentError).argument, 'inputs', 'names the argument');
  t.match((tokenError as Error).message, /token ids must be a host Tensor/);
  floatIds.dispose();
  await t.rejects(mlm.upload(ids), InvalidArgumentError, 'uploading integer token ids: InvalidArgumentError');

  const otherModel = await b.forward({ inputs: ofA }).catch((e: unknown) => e);
  t.type(otherModel, InvalidArgumentError, "another model's DeviceTensor: InvalidArgumentError");
  t.match(otherModel, {
    argument: 'inputs',
    expected: "a host Tensor, or a DeviceTensor from this model's upload() or outputs",
    actual: 'a DeviceTensor of another model (cpu)',
  }, 'the engine names the argument, what it takes and what came');

  const wrongShape = await a.upload(new Tensor('float32', [2, 3, 4, 4], new Float32Array(96)));
  await t.rejects(a.forward({ inputs: wrongShape }), InvalidArgumentError, 'a device input of a shape the model cannot take');
  const noBatch = await a.upload(new Tensor('float32', [], new Float32Array(1)));
  await t.rejects(a.forward({ inputs: noBatch }), InvalidArgumentError, 'a scalar device input');
  wrongShape.dispose();
  noBatch.dispose();

  const nan = Float32Array.from(pixels.toFloat32());
  nan[5] = NaN;
  const nanError = await a.upload(new Tensor('float32', pixels.shape, nan)).catch((e: unknown) => e);
  t.type(nanError, InvalidArgumentError, 'NaN is refused at upload, as for any input');
  t.match(nanError, { argument: 'tensor', expected: 'finite values', actual: 'NaN at flat index 5' }, 'names the value and its index');
  await t.rejects(a.upload('pixels' as unknown as Tensor), InvalidArgumentError, 'upload of a non-tensor');
  await t.rejects(a.forward({ inputs: pixels, attentionMask: ofA as unknown as Tensor }), InvalidArgumentError, 'a DeviceTensor attention mask');
  await t.rejects(a.forward({ inputs: pixels, outputs: 'gpu' as 'device' }), InvalidArgumentError, "outputs other than 'host' or 'device'");
  t.throws(() => new DeviceTensor({} as never), InvalidArgumentError, 'DeviceTensors are not made from arbitrary objects');

  const gone = await a.upload(pixels);
  gone.dispose();
  const disposedError = await a.forward({ inputs: gone }).catch((e: unknown) => e);
  t.type(disposedError, DisposedError, 'a disposed DeviceTensor as input: DisposedError');
  t.match((disposedError as Error).message, /DeviceTensor passed as inputs has been disposed/);
  const mm = await AutoModel.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => mm.dispose());
  const mmInputs = fixtureInputs(await fixtureIo('multimodal-autoencoding')) as Record<string, Tensor>;
  const label = await mm.upload(mmInputs.label!);
  label.dispose();
  await t.rejects(mm.forward({ inputs: { ...mmInputs, label } }), { name: 'DisposedError', message: /passed as inputs\.label/ }, 'a multimodal one names its modality');
  const ok = await a.forward({ inputs: ofA });
  t.same((ok.logits as Tensor).shape, [2, 6], 'the model still runs after every refusal');
});

t.test('lifetime: dispose, use after dispose, concurrent copies, disposing during a copy', async (t) => {
  await collect();
  const base = stats();
  const io = await fixtureIo('image-learned');
  const pixels = io.get('input')!;
  let model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  const host = await model.forward({ inputs: pixels });

  const out = await model.forward({ inputs: pixels, outputs: 'device' });
  const logits = out.logits as DeviceTensor;
  t.equal(stats().live, base.live + 2, 'two live tensors (logits, lastHiddenState)');
  t.equal(stats().bytes, base.bytes + logits.byteLength + out.lastHiddenState.byteLength, 'their bytes');
  // Concurrent copies of one tensor and of another agree.
  const copies = await Promise.all([...Array.from({ length: 8 }, () => logits.toHost()), out.lastHiddenState.toHost(), out.lastHiddenState.toHost()]);
  for (let i = 0; i < 8; i++) sameBits(t, copies[i], host.logits as Tensor, `concurrent toHost ${i + 1} of 8`);
  sameBits(t, copies[9], copies[8], 'concurrent toHost of another tensor');

  logits.dispose();
  logits.dispose();
  t.equal(logits.disposed, true, 'dispose is idempotent');
  t.equal(stats().live, base.live + 1, 'dispose frees at once');
  await t.rejects(logits.toHost(), DisposedError, 'toHost after dispose: DisposedError');
  t.same(logits.shape, (host.logits as Tensor).shape, 'a disposed tensor still describes itself');
  t.match(String(logits), /disposed/);
  {
    using scoped = out.lastHiddenState;
    t.equal(scoped.disposed, false);
  }
  t.equal(out.lastHiddenState.disposed, true, '`using` disposes at the end of the scope');
  t.equal(stats().live, base.live);

  // Disposing the tensor while its copy runs: the copy completes, then the memory goes.
  const again = await model.forward({ inputs: pixels, outputs: 'device' });
  again.lastHiddenState.dispose();
  const inFlight = (again.logits as DeviceTensor).toHost();
  (again.logits as DeviceTensor).dispose();
  sameBits(t, await inFlight, host.logits as Tensor, 'a copy in flight when its tensor is disposed completes');
  await collect();
  t.equal(stats().live, base.live, 'and the memory is freed after it');

  // Disposing the model while a copy runs: the copy completes and the tensor stays usable (it
  // keeps the backend alive) until it is disposed itself.
  const kept = await model.forward({ inputs: pixels, outputs: 'device' });
  kept.lastHiddenState.dispose();
  const keptLogits = kept.logits as DeviceTensor;
  const copy = keptLogits.toHost();
  const disposing = model.dispose();
  sameBits(t, await copy, host.logits as Tensor, 'a copy in flight when the model is disposed completes');
  await disposing;
  t.equal(keptLogits.disposed, false, 'model.dispose() leaves its device tensors alone');
  sameBits(t, await keptLogits.toHost(), host.logits as Tensor, 'and they stay readable after it');
  await t.rejects(model.upload(pixels), DisposedError, 'upload on a disposed model: DisposedError');
  keptLogits.dispose();
  t.equal(stats().live, base.live, 'the last tensor of a disposed model frees its memory');

  // dispose() waits for an upload in flight, which still delivers its tensor.
  model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  const uploading = model.upload(pixels);
  await model.dispose();
  const late = await uploading;
  sameBits(t, await late.toHost(), pixels, 'an upload in flight when the model is disposed completes');
  late.dispose();
  t.equal(stats().live, base.live);
});

t.test('the finaliser frees tensors that were never disposed', async (t) => {
  t.ok(gc, 'the test runs with --expose-gc (package.json tap node-arg)');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const pixels = (await fixtureIo('image-learned')).get('input')!;
  await collect();
  const base = stats();
  const leak = async () => {
    for (let i = 0; i < 50; i++) await model.forward({ inputs: pixels, outputs: 'device' });
    await model.upload(pixels);
  };
  await leak();
  t.equal(stats().live, base.live + 101, '101 undisposed tensors are alive');
  await collect();
  const after = stats();
  t.equal(after.live, base.live, `garbage collection freed them (${base.live} live before, ${after.live} after)`);
  t.equal(after.bytes, base.bytes, 'and all their bytes');
});

t.test("a thousand forward(outputs: 'device') / dispose cycles keep memory flat", async (t) => {
  // The language model's outputs are 163 kB a cycle: a leak of them would be 160 MB.
  const io = await fixtureIo('text-mlm');
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const call = { inputs: io.get('input')!, attentionMask: io.get('call.attention_mask'), outputs: 'device' as const };
  const expected = (await model.forward({ ...call, outputs: 'host' })).logits as Tensor;
  const base = stats();
  const cycle = async (check: boolean) => {
    const out = await model.forward(call);
    if (check) sameBits(t, await (out.logits as DeviceTensor).toHost(), expected, 'a cycle gives the host logits');
    (out.logits as DeviceTensor).dispose();
    out.lastHiddenState.dispose();
  };
  const settle = async () => {
    await collect();
    return process.memoryUsage().rss / 2 ** 20;
  };
  for (let i = 0; i < 200; i++) await cycle(i === 0); // warm-up: allocator pools reach their steady state
  const before = await settle();
  const start = performance.now();
  for (let i = 0; i < 1000; i++) await cycle(false);
  const elapsed = performance.now() - start;
  const after = await settle();
  t.equal(stats().live, base.live, 'no device tensor left alive');
  t.ok(after - before < 16, `RSS ${before.toFixed(1)} MiB -> ${after.toFixed(1)} MiB after 1,000 cycles (growth ${(after - before).toFixed(1)} MiB < 16; ${(elapsed / 1000).toFixed(2)} ms per cycle)`);
});
