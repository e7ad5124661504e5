/**
 * Parity with Hugging Face transformers on the image, optical-flow and multimodal heads: the
 * fixtures' float64 reference (same float32 weights) must be matched within 1e-5 relative error,
 * for the logits (each modality's for multimodal autoencoding) and for every hidden state, through
 * the API and through `perceiver-io infer`.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AutoModel,
  PerceiverForImageClassificationConvProcessing,
  PerceiverForImageClassificationFourier,
  PerceiverForImageClassificationLearned,
  PerceiverForMultimodalAutoencoding,
  PerceiverForOpticalFlow,
  readSafetensors,
  Tensor,
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
  REPO,
  tempDir,
  LOAD_OPTIONS,
  TEST_DEVICE,
  TEST_DTYPE,
} from './helpers/fixtures.js';

const HEADS = [
  ['image-learned', PerceiverForImageClassificationLearned],
  ['image-fourier', PerceiverForImageClassificationFourier],
  ['image-conv', PerceiverForImageClassificationConvProcessing],
  ['optical-flow', PerceiverForOpticalFlow],
  ['multimodal-autoencoding', PerceiverForMultimodalAutoencoding],
  ['multimodal-autoencoding-chunk', PerceiverForMultimodalAutoencoding],
] as const;

/** The model's logits keyed as fixtureLogits keys its references: '' for one tensor, else by modality. */
function logitsByName(logits: unknown): Record<string, Tensor> {
  if (logits instanceof Tensor) return { '': logits };
  return (logits ?? {}) as Record<string, Tensor>;
}

const label = (name: string) => (name ? `logits.${name}` : 'logits');

/** Index of the largest value in each row of a [rows, cols] tensor. */
function argmaxRows(x: Tensor): number[] {
  const [rows, cols] = x.shape as [number, number];
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let c = 1; c < cols; c++) if (x.get(r * cols + c) > x.get(r * cols + best)) best = c;
    return best;
  });
}

for (const [name, Head] of HEADS) {
  t.test(`${name}: logits and hidden states match transformers`, async (t) => {
    const io = await fixtureIo(name);
    const model = await AutoModel.fromPretrained(fixtureDir(name), LOAD_OPTIONS);
    t.teardown(() => model.dispose());
    t.type(model, Head, 'AutoModel picks the head from config.architectures');
    t.equal(model.constructor, Head, `the head class itself (${Head.name})`);
    t.same(model.unusedWeights, [], 'every checkpoint tensor is used');

    const out = await model.forward({ inputs: fixtureInputs(io), subsampledOutputPoints: fixturePoints(io), outputHiddenStates: true });
    const expected = fixtureLogits(io);
    const fp32 = fixtureLogits(io, 'fp32.logits');
    const ours = logitsByName(out.logits);
    t.ok(Object.keys(expected).length > 0, 'the fixture has references');
    t.same(Object.keys(ours).sort(), Object.keys(expected).sort(), 'one logits tensor per reference (single, or one per modality)');
    for (const [key, reference] of Object.entries(expected)) {
      t.equal(ours[key]?.dtype, 'float32', `${label(key)}: float32`);
      assertClose(t, ours[key], reference, label(key));
      if (!ours[key]) continue;
      if (TEST_DTYPE === 'float32') {
        // Honest float32: about as far from float64 as transformers' own float32 run.
        const ourError = relativeError(ours[key]!, reference);
        const theirError = relativeError(fp32[key]!, reference);
        t.ok(ourError < 10 * theirError, `${label(key)}: float32 error ${ourError.toExponential(2)} is of the order of transformers' ${theirError.toExponential(2)}`);
      } else if (reference.rank === 2) {
        // Reduced precision: class scores must still pick the same class.
        t.same(argmaxRows(ours[key]!), argmaxRows(reference), `${label(key)}: same argmax in ${TEST_DTYPE}`);
      }
    }
    if (TEST_DEVICE !== 'cpu' && TEST_DTYPE === 'float32') {
      // The GPU's float32 agrees with the CPU backend.
      const cpu = await AutoModel.fromPretrained(fixtureDir(name), { device: 'cpu' });
      const reference = logitsByName((await cpu.forward({ inputs: fixtureInputs(io), subsampledOutputPoints: fixturePoints(io) })).logits);
      await cpu.dispose();
      for (const key of Object.keys(expected)) assertClose(t, ours[key], reference[key], `${label(key)}: ${TEST_DEVICE} vs cpu`);
    }

    const hidden = fixtureHidden(io);
    t.ok(hidden.length > 0, 'the fixture has hidden states');
    t.equal(out.hiddenStates?.length, hidden.length, 'as many hidden states as transformers returns');
    for (let i = 0; i < hidden.length; i++) assertClose(t, out.hiddenStates?.[i], hidden[i], `hidden.${i}`);
    assertClose(t, out.lastHiddenState, hidden[hidden.length - 1], 'lastHiddenState');
  });
}

const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
const BIN = join(REPO, manifest.bin['perceiver-io']);

for (const [name, Head] of HEADS) {
  t.test(`infer round trip on ${name}`, async (t) => {
    const dir = await tempDir(t);
    const output = join(dir, 'out.safetensors');
    const args = ['infer', '--model', fixtureDir(name), '--inputs', join(fixtureDir(name), 'io.safetensors'), '--output', output, '--device', TEST_DEVICE, '--dtype', TEST_DTYPE];
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
    t.equal(r.signal, null, 'no signal');
    t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    t.match(r.stderr, Head.name, 'the summary names the head');
    const { tensors: out, metadata } = await readSafetensors(output);
    t.equal(metadata?.model_class, Head.name, 'metadata names the head');
    const io = await fixtureIo(name);
    const expected = fixtureLogits(io);
    const written = [...out.keys()].sort();
    t.same(written, ['last_hidden_state', ...Object.keys(expected).map(label)].sort(), 'writes logits (per modality) and last_hidden_state');
    for (const [key, reference] of Object.entries(expected)) {
      t.equal(out.get(label(key))?.dtype, 'float32', `${label(key)}: float32`);
      assertClose(t, out.get(label(key)), reference, label(key));
    }
    const hidden = fixtureHidden(io);
    t.equal(out.get('last_hidden_state')?.dtype, 'float32');
    assertClose(t, out.get('last_hidden_state'), hidden[hidden.length - 1], 'last_hidden_state');
  });
}
