/**
 * Whole-process robustness: the one policy for NaN and Inf inputs (rejected before any compute),
 * and no growth in memory across a thousand create / forward / dispose cycles.
 */
import t from 'tap';
import { AutoModel, InvalidArgumentError, PerceiverConfig, PerceiverForSequenceClassification, Tensor } from '../lib/index.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { fixtureDir, fixtureIo } from './helpers/fixtures.js';
import { join } from 'node:path';

t.test('NaN and Inf inputs are rejected with a typed error naming the input; the model carries on', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('image-fourier'));
  t.teardown(() => model.dispose());
  const io = await fixtureIo('image-fourier');
  const clean = io.get('input')!;
  for (const [what, value] of [['NaN', NaN], ['Inf', Infinity], ['-Inf', -Infinity]] as const) {
    const data = Float32Array.from(clean.toFloat32());
    data[17] = value;
    const error = await model.forward({ inputs: new Tensor('float32', clean.shape, data) }).catch((e: unknown) => e);
    t.type(error, InvalidArgumentError, `${what}: InvalidArgumentError`);
    t.match(error, { argument: 'inputs', expected: 'finite values', actual: /^(NaN|Inf) at flat index 17$/ }, `${what}: names the input and the position`);
  }
  const mm = await AutoModel.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => mm.dispose());
  const mmio = await fixtureIo('multimodal-autoencoding');
  const audio = Float32Array.from(mmio.get('input.audio')!.toFloat32());
  audio[3] = Infinity;
  const error = await mm
    .forward({ inputs: { image: mmio.get('input.image')!, audio: new Tensor('float32', [1, 64, 1], audio), label: mmio.get('input.label')! } })
    .catch((e: unknown) => e);
  t.match(error, { argument: 'inputs.audio', expected: 'finite values', actual: 'Inf at flat index 3' }, 'a multimodal input names its modality');
  const ok = await model.forward({ inputs: clean });
  t.same((ok.logits as Tensor).shape, [2, 6], 'the model still runs');
});

t.test('a thousand create / forward / dispose cycles do not grow memory', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc;
  t.ok(gc, 'the test runs with --expose-gc (package.json tap node-arg)');
  const dir = fixtureDir('text-classification');
  const config = await PerceiverConfig.fromPretrained(dir);
  const { tensors } = await readSafetensors(join(dir, 'model.safetensors'));
  const inputs = new Tensor('int64', [2, 16], new BigInt64Array(32).fill(70n));
  const cycle = async () => {
    const model = await new PerceiverForSequenceClassification(config).loadWeights(tensors);
    await model.forward({ inputs });
    await model.dispose();
  };
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    return process.memoryUsage().rss / 2 ** 20;
  };
  for (let i = 0; i < 200; i++) await cycle(); // warm-up: allocator pools and code reach their steady state
  const before = await settle();
  for (let i = 0; i < 1000; i++) await cycle();
  const after = await settle();
  t.ok(after - before < 24, `RSS ${before.toFixed(1)} MiB -> ${after.toFixed(1)} MiB after 1,000 cycles (growth ${(after - before).toFixed(1)} MiB < 24)`);
});
