import t from 'tap';
import { readFileSync } from 'node:fs';
import { MAX_BATCH_TEXTS, MAX_BATCH_TOKENS, PerceiverTokenizer } from '../lib/tokenizer.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { Tensor } from '../lib/tensor.js';

interface Fixture {
  special_tokens: Record<'pad' | 'bos' | 'eos' | 'mask' | 'cls' | 'sep', number>;
  cases: { text: string; input_ids: number[]; attention_mask: number[]; decoded: string }[];
  padded: { max_length: number; input_ids: number[][]; attention_mask: number[][] };
}
const fixture = JSON.parse(readFileSync(new URL('./fixtures/tokenizer.json', import.meta.url), 'utf8')) as Fixture;
const tok = new PerceiverTokenizer();
const rows = (x: Tensor<'int64'>): number[][] => {
  const [b, l] = x.shape as [number, number];
  return Array.from({ length: b }, (_, i) => Array.from({ length: l }, (_, j) => x.get(i * l + j)));
};

t.test('special token ids and vocabulary match transformers', async (t) => {
  const s = fixture.special_tokens;
  t.same(
    [tok.padTokenId, tok.bosTokenId, tok.eosTokenId, tok.maskTokenId, tok.clsTokenId, tok.sepTokenId],
    [s.pad, s.bos, s.eos, s.mask, s.cls, s.sep],
  );
  t.equal(tok.vocabSize, 262);
  t.equal(tok.modelMaxLength, 2048);
  t.same([...tok.specialTokens], [['[PAD]', 0], ['[BOS]', 1], ['[EOS]', 2], ['[MASK]', 3], ['[CLS]', 4], ['[SEP]', 5]]);
});

for (const [i, c] of fixture.cases.entries()) {
  t.test(`fixture case ${i}: ${JSON.stringify(c.text).slice(0, 30)}`, async (t) => {
    t.same(tok.encode(c.text), c.input_ids);
    const out = tok.call(c.text);
    t.same(out.inputIds.shape, [1, c.input_ids.length]);
    t.equal(out.inputIds.dtype, 'int64');
    t.same(rows(out.inputIds), [c.input_ids]);
    t.same(rows(out.attentionMask), [c.attention_mask]);
    t.equal(tok.decode(c.input_ids, { skipSpecialTokens: true }), c.decoded);
    t.equal(tok.decode(out.inputIds, { skipSpecialTokens: true }), c.decoded);
  });
}

t.test('padded batch with truncation matches transformers', async (t) => {
  const { max_length, input_ids, attention_mask } = fixture.padded;
  const out = tok.call(fixture.cases.map((c) => c.text), { padding: 'max_length', maxLength: max_length, truncation: true });
  t.same(out.inputIds.shape, [fixture.cases.length, max_length]);
  t.same(rows(out.inputIds), input_ids);
  t.same(rows(out.attentionMask), attention_mask);
  t.same(tok.batchDecode(out.inputIds, { skipSpecialTokens: true }), tok.batchDecode(input_ids, { skipSpecialTokens: true }));
});

t.test('decode renders special tokens unless skipped', async (t) => {
  const ids = tok.encode('hi');
  t.same(ids, [4, 110, 111, 5]);
  t.equal(tok.decode(ids), '[CLS]hi[SEP]');
  t.equal(tok.decode(ids, { skipSpecialTokens: true }), 'hi');
  t.equal(tok.decode([0, 1, 2, 3]), '[PAD][BOS][EOS][MASK]');
  t.equal(tok.decode(new BigInt64Array([4n, 110n, 5n])), '[CLS]h[SEP]');
  t.same(tok.batchDecode([[4, 110, 5, 0], [4, 5]]), ['[CLS]h[SEP][PAD]', '[CLS][SEP]']);
});

t.test('special token strings inside text encode to their ids', async (t) => {
  t.same(tok.encode('a[MASK]b', { addSpecialTokens: false }), [103, 3, 104]);
  t.same(tok.encode('[MASK', { addSpecialTokens: false }), [97, 83, 71, 89, 81]);
});

t.test('invalid UTF-8 decodes to U+FFFD', async (t) => {
  t.equal(tok.decode([0xff + 6, 104 + 6]), '\uFFFDh');
  // a truncated 3-byte sequence (first two bytes of U+2603) then a full one
  t.equal(tok.decode([0xe2 + 6, 0x98 + 6, 0xe2 + 6, 0x98 + 6, 0x83 + 6]), '\uFFFD\u2603');
  // a byte-order mark is kept, as Python's decoder keeps it
  t.equal(tok.decode([0xef + 6, 0xbb + 6, 0xbf + 6, 104 + 6]), '\uFEFFh');
});

t.test('empty string', async (t) => {
  t.same(tok.encode(''), [4, 5]);
  t.same(tok.encode('', { addSpecialTokens: false }), []);
  t.equal(tok.decode([]), '');
  const out = tok.call('', { addSpecialTokens: false });
  t.same(out.inputIds.shape, [1, 0]);
});

t.test('padding to the longest and to a multiple', async (t) => {
  const out = tok.call(['a', 'abc'], { padding: true });
  t.same(rows(out.inputIds), [[4, 103, 5, 0, 0], [4, 103, 104, 105, 5]]);
  t.same(rows(out.attentionMask), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]);
  t.same(rows(tok.call(['a', 'abc'], { padding: 'longest' }).inputIds), rows(out.inputIds));
  const multiple = tok.call(['a', 'abc'], { padding: true, padToMultipleOf: 4 });
  t.same(rows(multiple.inputIds), [[4, 103, 5, 0, 0, 0, 0, 0], [4, 103, 104, 105, 5, 0, 0, 0]]);
  t.same(rows(multiple.attentionMask), [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]);
  t.same(tok.call('ab', { padding: 'max_length', maxLength: 6 }).inputIds.shape, [1, 6]);
  t.same(tok.call('ab', { padding: 'max_length' }).inputIds.shape, [1, 2048]);
});

t.test('truncation keeps [SEP] last', async (t) => {
  t.same(tok.encode('abcdef', { maxLength: 4, truncation: true }), [4, 103, 104, 5]);
  t.same(tok.encode('abcdef', { maxLength: 4 }), [4, 103, 104, 5]);
  t.same(tok.encode('abcdef', { maxLength: 3, addSpecialTokens: false }), [103, 104, 105]);
  t.same(tok.encode('ab', { maxLength: 2 }), [4, 5]);
  t.same(tok.encode('abcdef', { maxLength: 4, truncation: false }), [4, 103, 104, 105, 106, 107, 108, 5]);
  const out = tok.call(['abcdef', 'a'], { padding: 'max_length', maxLength: 4, truncation: true });
  t.same(rows(out.inputIds), [[4, 103, 104, 5], [4, 103, 5, 0]]);
  t.same(tok.encode('x'.repeat(3000)).length, 3002);
  t.same(tok.encode('x'.repeat(3000), { truncation: true }).length, 2048);
});

t.test('invalid arguments throw InvalidArgumentError naming the argument', async (t) => {
  // An Error instance as pattern makes tap check the class too; the other fields must match `argument`.
  const invalid = (argument: string) => Object.assign(new InvalidArgumentError(argument, '', ''), { message: /./, expected: String, actual: String });
  const bad = (fn: () => unknown, argument: string) => t.throws(fn, invalid(argument), argument);
  bad(() => tok.encode(42 as never), 'text');
  bad(() => tok.call(['ok', 7 as never]), 'texts[1]');
  bad(() => tok.call([]), 'texts');
  bad(() => tok.encode('a', { maxLength: 0 }), 'maxLength');
  bad(() => tok.encode('a', { maxLength: 2.5 }), 'maxLength');
  bad(() => tok.call('a', { maxLength: -1 }), 'maxLength');
  bad(() => tok.encode('abc', { maxLength: 1 }), 'maxLength');
  bad(() => tok.call('a', { padding: 'yes' as never }), 'padding');
  bad(() => tok.call('a', { padding: true, padToMultipleOf: 0 }), 'padToMultipleOf');
  bad(() => new PerceiverTokenizer({ modelMaxLength: 0 }), 'modelMaxLength');
  bad(() => tok.decode([4, 262]), 'ids[1]');
  bad(() => tok.decode([-1]), 'ids[0]');
  bad(() => tok.decode([1.5]), 'ids[0]');
  bad(() => tok.decode('abc' as never), 'ids');
  bad(() => tok.batchDecode([[4], [999]]), 'ids[1][0]');
  bad(() => tok.decode(Tensor.from('int64', [4, 5, 4, 5], [2, 2])), 'ids');
  bad(() => tok.call(['a', 'abc']), 'texts');
  bad(() => tok.call(['abcdef', 'a'], { padding: 'max_length', maxLength: 4 }), 'texts');
  t.throws(() => tok.call(['a', 'abc']), { message: /padding/ });
});

t.test('a batch of 200,000 texts (no spread of huge arrays into calls)', async (t) => {
  const texts = Array.from({ length: 200_000 }, (_, i) => `text ${i}`);
  const out = tok.call(texts, { padding: true });
  t.same(out.inputIds.shape, [200_000, 13], '"text 199999" is 11 bytes plus [CLS] and [SEP]');
  t.same(rows(new Tensor('int64', [1, 13], out.inputIds.data.subarray(13 * 199_999))), [tok.encode('text 199999')]);
  t.same(rows(new Tensor('int64', [1, 13], out.attentionMask.data.subarray(0, 13))), [[1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]]);
  t.same(tok.batchDecode(new Tensor('int64', [2, 13], out.inputIds.data.subarray(0, 26)), { skipSpecialTokens: true }), ['text 0', 'text 1']);
});

t.test('truncation encodes only the prefix that fits, and cuts bytes as transformers does', async (t) => {
  // Every kind of text piece: ASCII, 2-, 3- and 4-byte characters, lone surrogates, special-token
  // strings and near-misses. Truncating to n ids must equal the first n ids of the full encoding.
  const pieces = ['a', 'é', '€', '😀', '\ud800', '\udc00', '[MASK]', '[SEP]', '[', '[MAS', ']', ' '];
  let seed = 7;
  const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let round = 0; round < 200; round++) {
    let text = '';
    const n = Math.floor(next() * 20);
    for (let i = 0; i < n; i++) text += pieces[Math.floor(next() * pieces.length)];
    const full = tok.encode(text, { addSpecialTokens: false });
    const max = 1 + Math.floor(next() * (full.length + 2));
    const cut = tok.encode(text, { addSpecialTokens: false, maxLength: max });
    if (JSON.stringify(cut) !== JSON.stringify(full.slice(0, max))) {
      t.fail(`text ${JSON.stringify(text)} at maxLength ${max}: ${JSON.stringify(cut)} vs ${JSON.stringify(full.slice(0, max))}`);
      return;
    }
  }
  t.pass('200 random texts truncated at random lengths equal the prefix of their full encoding');
  // A text far beyond the per-call limit is refused whole, yet its truncated prefix is fine: only the prefix was encoded.
  const huge = 'x'.repeat(MAX_BATCH_TOKENS + 10);
  t.throws(() => tok.encode(huge), { name: 'InvalidArgumentError', argument: 'text', message: /at most 16777216 token ids/ });
  const start = performance.now();
  t.same(tok.encode(huge, { maxLength: 8 }), [4, 126, 126, 126, 126, 126, 126, 5]);
  t.same(rows(tok.call([huge, 'ab'], { maxLength: 4, padding: 'max_length', truncation: true }).inputIds), [[4, 126, 126, 5], [4, 103, 104, 5]]);
  t.ok(performance.now() - start < 1000, 'truncating a 16 Mi-character text takes well under a second');
});

t.test('bad texts, options and sizes are typed errors', async (t) => {
  const invalid = (argument: string) => ({ name: 'InvalidArgumentError', argument });
  t.throws(() => tok.call(['a', , 'b'] as never), invalid('texts[1]'), 'a hole in a sparse array');
  t.throws(() => tok.call('a', null as never), invalid('options'));
  t.throws(() => tok.encode('a', 5 as never), invalid('options'));
  t.throws(() => tok.decode([4], 'x' as never), invalid('options'));
  t.throws(() => new PerceiverTokenizer(null as never), invalid('options'));
  t.throws(() => tok.call('a', { maxLength: Infinity }), invalid('maxLength'));
  t.throws(() => tok.call('a', { maxLength: NaN }), invalid('maxLength'));
  t.throws(() => tok.call('a', { maxLength: 2 ** 60 }), invalid('maxLength'));
  t.throws(() => tok.call('a', { truncation: 'yes' as never }), invalid('truncation'));
  t.throws(() => tok.call('a', { padding: 'max_length', maxLength: 2 ** 40 }), invalid('texts'), 'padding past the per-call limit');
  t.throws(() => tok.call(['a', 'b'], { padding: true, padToMultipleOf: 2 ** 50 }), invalid('texts'));
  t.throws(() => tok.call(new Array(MAX_BATCH_TEXTS + 1).fill('')), invalid('texts'));
  t.throws(() => tok.batchDecode([[4], , [5]] as never), invalid('ids[1]'), 'a hole in a sparse array of rows');
  t.throws(() => tok.decode(new DataView(new ArrayBuffer(4)) as never), invalid('ids'));
  t.same(tok.decode(new Uint8Array(0)), '');
  // Long inputs to decode: a loop, not a spread into push().
  t.equal(tok.decode(new Uint16Array(300_000).fill(3)).length, 6 * 300_000);
});
