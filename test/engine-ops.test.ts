/**
 * The CPU backend's fused ops against a double-precision reference written from their definitions
 * (native/src/napi/engine_op_check.cc): products with every epilogue (bias, exact GELU, residual,
 * a residual shared across the batch), LayerNorm with and without a residual input, attention over
 * strided views of one fused QKV buffer or of a KV buffer with queries shared across the batch,
 * with per-item key lengths, a general mask and the returned weights. Random shapes include odd
 * widths (261, 322) and sizes off every tile multiple; every row stride is padded.
 */
import t from 'tap';
import { loadAddon } from '../lib/native/binding.js';

const addon = loadAddon();
const FLOAT32 = 2e-6;

t.test('linear: x W^T with bias, GELU and residual epilogues', async (t) => {
  const shapes = [[1, 261, 322], [7, 322, 261], [37, 768, 1283], [130, 65, 17], [3, 1, 5]];
  for (const [rows, inp, out] of shapes) {
    for (const [gelu, residual] of [[false, false], [true, false], [false, true], [true, true]]) {
      const r = await addon.engineOpCheck({ op: 'linear', sizes: [rows!, inp!, out!], gelu, residual, seed: rows! + out! });
      t.ok(r.relativeError < FLOAT32, `${rows}x${inp}->${out} gelu=${gelu} residual=${residual}: ${r.relativeError.toExponential(2)}`);
    }
  }
  const shared = await addon.engineOpCheck({ op: 'linear', sizes: [4 * 33, 261, 322, 33], residual: true, shared: true });
  t.ok(shared.relativeError < FLOAT32, `a residual shared by 4 items of 33 rows: ${shared.relativeError.toExponential(2)}`);
  const bf16 = await addon.engineOpCheck({ op: 'linear', sizes: [37, 261, 322], gelu: true, residual: true, dtype: 'bfloat16' });
  t.ok(bf16.relativeError > 1e-5 && bf16.relativeError < 2e-2, `bfloat16 products round (error ${bf16.relativeError.toExponential(2)})`);
  t.equal((await addon.engineOpCheck({ op: 'linear', sizes: [0, 8, 8] })).outputs, 0, 'no rows: no outputs');
});

t.test('layer_norm, optionally of x + residual', async (t) => {
  for (const [rows, dim] of [[1, 261], [33, 322], [257, 1280], [5, 7]]) {
    for (const residual of [false, true]) {
      const r = await addon.engineOpCheck({ op: 'layer_norm', sizes: [rows!, dim!], residual });
      t.ok(r.relativeError < FLOAT32, `${rows}x${dim} residual=${residual}: ${r.relativeError.toExponential(2)}`);
    }
  }
});

t.test('attention over strided views, with key lengths, masks and weights', async (t) => {
  const cases: [string, number[], object][] = [
    ['fused QKV, 8 heads', [2, 8, 67, 67, 32, 160], { fused: true }],
    ['fused QKV, odd widths', [3, 1, 70, 70, 261, 322], { fused: true, padding: 'mask' }],
    ['KV + shared queries, lengths', [3, 8, 37, 300, 32, 160], { shared: true, padding: 'lengths' }],
    ['KV + per-item queries, mask', [2, 2, 19, 2100, 16, 24], { padding: 'mask' }],
    ['KV, more keys than a block, lengths', [2, 1, 5, 4500, 64, 96], { padding: 'lengths' }],
    ['weights returned, lengths', [2, 8, 33, 129, 32, 160], { shared: true, padding: 'lengths', probs: true }],
    ['weights returned, mask, fused', [2, 4, 65, 65, 16, 16], { fused: true, padding: 'mask', probs: true }],
  ];
  for (const [what, sizes, options] of cases) {
    const r = await addon.engineOpCheck({ op: 'attention', sizes, ...options });
    t.ok(r.relativeError < FLOAT32, `${what} ${JSON.stringify(sizes)}: ${r.relativeError.toExponential(2)}`);
  }
});

t.test('bad requests are typed errors', async (t) => {
  const invalid = (argument: string, expected: string, actual: string) => ({
    code: 'ERR_PERCEIVER_INVALID_ARGUMENT',
    argument,
    expected,
    actual,
    message: `Expected ${expected} for ${argument} but received ${actual}`,
  });
  await t.rejects(async () => addon.engineOpCheck({ op: 'softmax' as never, sizes: [1] }), invalid('op', 'linear, layer_norm or attention', '"softmax"'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'attention', sizes: [1, 1, 2, 3, 4, 4], fused: true }), invalid('sizes', 'nq == nk for a fused QKV buffer', 'nq 2, nk 3'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'layer_norm', sizes: [1] }), invalid('sizes', 'at least 2 sizes for op layer_norm', '1'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'linear', sizes: [4, 2, 2, 3], shared: true }), invalid('sizes', 'rows a multiple of the period 3', '4 rows'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'linear', sizes: [1.5] }), invalid('sizes[0]', 'an integer in [0, 16384]', 'number 1.5'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'attention', sizes: [1, 0, 1, 1, 1, 1] }), invalid('sizes', 'positive integers for op attention', '0'));
  await t.rejects(async () => addon.engineOpCheck({ op: 'attention', sizes: [1, 1, 2, 2, 2, 2], padding: 'some' as never }), invalid('padding', 'none, lengths or mask', 'string "some"'));
  t.throws(() => addon.engineOpCheck(undefined as never), invalid('engineOpCheck({ op, sizes, ... })', 'an object', 'undefined'));
});
