/**
 * Parity with Hugging Face transformers on the text heads: the fixtures' float64 reference
 * (same float32 weights) must be matched within 1e-5 relative error, for the logits and for
 * every hidden state transformers returns.
 */
import t from 'tap';
import { AutoModel, PerceiverForMaskedLM, PerceiverForSequenceClassification, Tensor } from '../lib/index.js';

/** The single logits tensor of a text head. */
const logitsOf = (out: { logits?: unknown }) => out.logits as Tensor<'float32'>;
import { assertClose, fixtureDir, fixtureIo, LOAD_OPTIONS, PARITY_TOLERANCE, relativeError, TEST_DTYPE } from './helpers/fixtures.js';

for (const [name, Head] of [
  ['text-mlm', PerceiverForMaskedLM],
  ['text-classification', PerceiverForSequenceClassification],
] as const) {
  t.test(`${name}: logits and hidden states match transformers`, async (t) => {
    const io = await fixtureIo(name);
    const model = await AutoModel.fromPretrained(fixtureDir(name), LOAD_OPTIONS);
    t.teardown(() => model.dispose());
    t.type(model, Head, 'AutoModel picks the head from config.architectures');
    t.same(model.unusedWeights, [], 'every checkpoint tensor is used');
    const out = await model.forward({ inputs: io.get('input')!, attentionMask: io.get('call.attention_mask'), outputHiddenStates: true });
    assertClose(t, logitsOf(out), io.get('expected.logits'), 'logits');
    const hiddenNames = [...io.keys()].filter((k) => k.startsWith('hidden.'));
    t.equal(out.hiddenStates?.length, hiddenNames.length, 'as many hidden states as transformers returns');
    for (let i = 0; i < hiddenNames.length; i++) assertClose(t, out.hiddenStates![i], io.get(`hidden.${i}`), `hidden.${i}`);
    assertClose(t, out.lastHiddenState, io.get(`hidden.${hiddenNames.length - 1}`), 'lastHiddenState');
    // Honest float32: about as far from float64 as transformers' own float32 run.
    if (TEST_DTYPE === 'float32') {
      const ours = relativeError(logitsOf(out), io.get('expected.logits')!);
      const theirs = relativeError(io.get('fp32.logits')!, io.get('expected.logits')!);
      t.ok(ours < 10 * theirs, `float32 error ${ours.toExponential(2)} is of the order of transformers' ${theirs.toExponential(2)}`);
    }
  });
}

t.test('the masked-LM decoder emits max_position_embeddings positions, whatever the input length', async (t) => {
  const model = await PerceiverForMaskedLM.fromPretrained(fixtureDir('text-mlm'), LOAD_OPTIONS);
  t.teardown(() => model.dispose());
  const ids = Tensor.from('int64', [4, 10, 20, 30, 5], [1, 5]);
  const out = await model.forward({ inputs: ids });
  t.same(logitsOf(out).shape, [1, model.config.max_position_embeddings, model.config.vocab_size]);
  t.same(out.lastHiddenState.shape, [1, model.config.num_latents, model.config.d_latents]);
});

t.test('a batch gives each item what it gets alone, and int32 ids equal int64 ids', async (t) => {
  const io = await fixtureIo('text-classification');
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'), LOAD_OPTIONS);
  t.teardown(() => model.dispose());
  const ids = io.get('input')!;
  const mask = io.get('call.attention_mask')!;
  const batch = await model.forward({ inputs: ids, attentionMask: mask });
  const seq = ids.shape[1]!;
  for (let b = 0; b < ids.shape[0]!; b++) {
    const one = new Tensor('int64', [1, seq], (ids.data as BigInt64Array).slice(b * seq, (b + 1) * seq));
    const oneMask = new Tensor('int64', [1, seq], (mask.data as BigInt64Array).slice(b * seq, (b + 1) * seq));
    const alone = await model.forward({ inputs: one, attentionMask: oneMask });
    const labels = model.config.num_labels;
    const fromBatch = new Tensor('float32', [1, labels], logitsOf(batch).data.slice(b * labels, (b + 1) * labels));
    t.ok(relativeError(logitsOf(alone), fromBatch) < Math.max(1e-6, PARITY_TOLERANCE / 10), `item ${b}`);
  }
  const int32 = new Tensor('int32', ids.shape, Int32Array.from(ids.data as BigInt64Array, Number));
  const viaInt32 = await model.forward({ inputs: int32, attentionMask: mask });
  t.same(Array.from(logitsOf(viaInt32).data), Array.from(logitsOf(batch).data), 'int32 ids give identical logits');
});

t.test('attention weights on request: shapes, rows summing to one, padding never attended', async (t) => {
  const io = await fixtureIo('text-mlm');
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'), LOAD_OPTIONS);
  t.teardown(() => model.dispose());
  const ids = io.get('input')!;
  const mask = io.get('call.attention_mask')!;
  const out = await model.forward({ inputs: ids, attentionMask: mask, outputAttentions: true });
  const c = model.config;
  const [batch, seq] = ids.shape as [number, number];
  t.equal(out.attentions!.length, c.num_blocks * c.num_self_attends_per_block, 'one per self-attention applied');
  for (const a of out.attentions!) t.same(a.shape, [batch, c.num_self_attention_heads, c.num_latents, c.num_latents]);
  t.equal(out.crossAttentions!.length, 2, 'encoder and decoder cross-attention');
  const enc = out.crossAttentions![0]!;
  t.same(enc.shape, [batch, c.num_cross_attention_heads, c.num_latents, seq]);
  t.same(out.crossAttentions![1]!.shape, [batch, 8, c.max_position_embeddings, c.num_latents]);
  let worstRow = 0;
  let paddedMass = 0;
  const [, heads, rows] = enc.shape as [number, number, number, number];
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < heads * rows; r++) {
      let sum = 0;
      for (let j = 0; j < seq; j++) {
        const p = enc.data[(b * heads * rows + r) * seq + j]!;
        sum += p;
        if (Number(mask.data[b * seq + j]) === 0) paddedMass += p;
      }
      worstRow = Math.max(worstRow, Math.abs(sum - 1));
    }
  }
  t.ok(worstRow < 1e-5, `rows sum to 1 (worst ${worstRow.toExponential(2)})`);
  t.equal(paddedMass, 0, 'padded positions get exactly zero weight');
});
