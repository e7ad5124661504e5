/**
 * The CPU attention kernel has two paths: blocks of keys with an online softmax (no weights
 * requested), and whole rows normalised in place (weights requested). Sequences longer than one
 * key block (2048) and masks that blank whole blocks exercise what the small fixtures cannot; the
 * two paths must agree.
 */
import t from 'tap';
import { PerceiverConfig, PerceiverModel, RandomWeightStore, Tensor } from '../lib/index.js';
import { relativeError } from './helpers/fixtures.js';

function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out[i] = (x / 2147483648) * 4 - 2;
  }
  return out;
}

t.test('online-softmax attention over many key blocks equals whole-row attention', async (t) => {
  const config = new PerceiverConfig({
    num_latents: 24, d_latents: 64, d_model: 40, num_self_attends_per_block: 1, num_self_attention_heads: 4,
    num_cross_attention_heads: 2, qk_channels: 32, v_channels: 64,
  });
  const model = await new PerceiverModel(config).loadWeights(new RandomWeightStore(5));
  t.teardown(() => model.dispose());
  const batch = 2;
  const seq = 5000; // three key blocks, the last one partial
  const inputs = new Tensor('float32', [batch, seq, 40], values(batch * seq * 40, 17));
  // Item 0 attends everywhere; item 1 masks all of the second key block and a scattering elsewhere.
  const mask = new Uint8Array(batch * seq).fill(1);
  for (let j = 2048; j < 4096; j++) mask[seq + j] = 0;
  for (let j = 0; j < seq; j += 7) mask[seq + j] = 0;
  const attentionMask = new Tensor('uint8', [batch, seq], mask);

  const online = await model.forward({ inputs, attentionMask });
  const rows = await model.forward({ inputs, attentionMask, outputAttentions: true });
  const err = relativeError(online.lastHiddenState, rows.lastHiddenState);
  t.ok(err < 1e-5, `the two kernels agree (relative error ${err.toExponential(2)})`);

  const weights = rows.crossAttentions![0]!;
  t.same(weights.shape, [batch, 2, 24, seq]);
  let masked = 0;
  for (let h = 0; h < 2; h++) {
    for (let r = 0; r < 24; r++) {
      for (let j = 2048; j < 4096; j++) masked += weights.data[((1 * 2 + h) * 24 + r) * seq + j]!;
    }
  }
  t.equal(masked, 0, 'masked keys get exactly zero weight');

  // Masking a key must change the result only through the keys it removes: an item alone equals
  // the same item in the batch.
  const alone = await model.forward({
    inputs: new Tensor('float32', [1, seq, 40], inputs.toFloat32().slice(seq * 40)),
    attentionMask: new Tensor('uint8', [1, seq], mask.slice(seq)),
  });
  const fromBatch = new Tensor('float32', [1, 24, 64], online.lastHiddenState.data.slice(24 * 64));
  t.ok(relativeError(alone.lastHiddenState, fromBatch) < 1e-6, 'a batch item equals the item alone');
});
