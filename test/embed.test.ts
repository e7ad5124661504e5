/** model.embed(): latent embeddings without the decoder, mean-pooled or whole. */
import t from 'tap';
import { AutoModel, InvalidArgumentError, Tensor } from '../lib/index.js';
import { fixtureDir, fixtureIo, relativeError } from './helpers/fixtures.js';

t.test('embed returns the mean latent, or the latents, equal to the encoder output of forward', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const io = await fixtureIo('text-classification');
  const inputs = io.get('input')!;
  const attentionMask = io.get('call.attention_mask');
  const full = await model.forward({ inputs, attentionMask });
  const latents = await model.embed(inputs, { pooling: 'none', attentionMask });
  t.same(latents.shape, [3, 16, 64]);
  t.equal(relativeError(latents, full.lastHiddenState), 0, 'the latents are forward lastHiddenState exactly');
  const pooled = await model.embed(inputs, { attentionMask });
  t.same(pooled.shape, [3, 64]);
  // Mean over the 16 latents, computed here independently in float64.
  const expected = new Float64Array(3 * 64);
  for (let b = 0; b < 3; b++) for (let i = 0; i < 16; i++) for (let c = 0; c < 64; c++) expected[b * 64 + c]! += full.lastHiddenState.get((b * 16 + i) * 64 + c) / 16;
  t.ok(relativeError(pooled, new Tensor('float64', [3, 64], expected)) < 1e-6, 'mean pooling');
  await t.rejects(model.embed(inputs, { pooling: 'max' as never }), InvalidArgumentError);
});
