/** The text pipelines (fill-mask, text-classification, feature-extraction) against the manual forward; abort and dispose. */
import t from 'tap';
import { AutoModel, DisposedError, InvalidArgumentError, PerceiverTokenizer, pipeline, Tensor, type FillMaskCandidate } from '../lib/index.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { HubServer } from './helpers/hub-server.js';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const MLM = fixtureDir('text-mlm');
const CLS = fixtureDir('text-classification');

function probabilities(row: ArrayLike<number>): number[] {
  const max = Math.max(...Array.from(row));
  const e = Array.from(row, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

t.test('fill-mask equals the manual forward: scores, tokens, sequences, and spans of consecutive masks', async (t) => {
  const fill = await pipeline('fill-mask', MLM);
  t.teardown(() => fill.dispose());
  const model = await AutoModel.fromPretrained(MLM);
  t.teardown(() => model.dispose());
  const text = 'The cat [MASK][MASK] on the [MASK].';
  const result = (await fill(text, { top_k: 3 })) as FillMaskCandidate[][];
  t.equal(result.length, 3, 'one array per mask');
  t.ok(result.every((r) => r.length === 3), 'top_k each');

  const tokenizer = new PerceiverTokenizer();
  const ids = tokenizer.encode(text);
  const masks = ids.flatMap((id, i) => (id === 3 ? [i] : []));
  t.same(masks, [9, 10, 19], 'one position per [MASK] (one byte each)');
  const inputs = new Tensor('int64', [1, ids.length], BigInt64Array.from(ids, BigInt));
  const logits = (await model.forward({ inputs, attentionMask: new Tensor('int64', [1, ids.length], new BigInt64Array(ids.length).fill(1n)) })).logits as Tensor<'float32'>;
  const vocab = logits.shape[2]!;
  masks.forEach((pos, m) => {
    const probs = probabilities(logits.data.subarray(pos * vocab, (pos + 1) * vocab));
    const order = probs.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    result[m]!.forEach((cand, k) => {
      t.equal(cand.token, order[k]![1], `mask ${m} candidate ${k}: token`);
      t.ok(Math.abs(cand.score - order[k]![0]) < 1e-12, `mask ${m} candidate ${k}: score`);
      t.equal(cand.token_str, tokenizer.decode([cand.token]));
      const filled = ids.slice(1, -1).map((id, i) => (i + 1 === pos ? cand.token : id));
      t.equal(cand.sequence, tokenizer.decode(filled), 'sequence: the text with the candidate in this mask');
    });
  });
  const spans = (result as unknown as { spans: { start: number; length: number; text: string; sequence: string }[] }).spans;
  t.same(spans.map((s) => [s.start, s.length]), [[8, 2], [18, 1]], 'two spans: the double mask and the single one');
  t.equal(spans[0]!.text, tokenizer.decode([result[0]![0]!.token, result[1]![0]!.token], { skipSpecialTokens: true }), 'span text: the top bytes together');

  const single = (await fill('a [MASK] b')) as FillMaskCandidate[];
  t.equal(single.length, 5, 'one mask: a flat array, top_k 5 by default');
  t.type(single[0]!.score, 'number');
  await t.rejects(fill('no mask here'), InvalidArgumentError);
  await t.rejects(fill(42 as never), InvalidArgumentError);
  // Masks beyond the model's 48 tokens are cut off with the text.
  await t.rejects(fill('x'.repeat(100) + '[MASK]'), InvalidArgumentError);
  await t.rejects(pipeline('fill-mask', CLS), InvalidArgumentError, 'a classification checkpoint is not a masked LM');
});

t.test('text-classification: tokenized, truncated and masked; a padded batch gives what each text alone gives', async (t) => {
  const classify = await pipeline('text-classification', CLS);
  t.teardown(() => classify.dispose());
  const model = await AutoModel.fromPretrained(CLS);
  t.teardown(() => model.dispose());
  const texts = ['short', 'a much longer text than the first one'];
  const batch = await classify(texts, { top_k: 3 });
  t.equal(batch.length, 2);
  for (const [i, text] of texts.entries()) {
    const ids = new PerceiverTokenizer().encode(text);
    const logits = (await model.forward({ inputs: new Tensor('int64', [1, ids.length], BigInt64Array.from(ids, BigInt)) })).logits as Tensor<'float32'>;
    const probs = probabilities(logits.data);
    const order = probs.map((p, k) => [p, k] as const).sort((a, b) => b[0] - a[0]);
    const got = (batch as { label: string; score: number }[][])[i]!;
    t.same(got.map((r) => r.label), order.map(([, k]) => model.config.id2label[k]), `${text}: labels in order`);
    got.forEach((r, k) => t.ok(Math.abs(r.score - order[k]![0]) < 1e-5, `${text}: score ${k}`));
    const alone = (await classify(text)) as { label: string; score: number }[];
    t.equal(alone.length, 1, 'top_k 1 by default');
    t.equal(alone[0]!.label, got[0]!.label);
    t.ok(Math.abs(alone[0]!.score - got[0]!.score) < 1e-5, 'padding is masked out');
  }
  // Longer than the model's 48 positions: truncated, not an error.
  const long = (await classify('z'.repeat(500))) as { label: string; score: number }[];
  t.equal(long.length, 1);
  await t.rejects(classify([] as never), InvalidArgumentError);
  await t.rejects(classify('x', { top_k: 0 }), InvalidArgumentError);
});

t.test('feature-extraction equals model.embed; normalize and pooling; text files as the batch job reads them', async (t) => {
  const dir = await tempDir(t);
  const extract = await pipeline('feature-extraction', CLS);
  t.teardown(() => extract.dispose());
  const model = await AutoModel.fromPretrained(CLS);
  t.teardown(() => model.dispose());
  // The manual call as a user should make it: ids and their attention mask.
  const { inputIds, attentionMask } = new PerceiverTokenizer().call('hello world');
  const manual = await model.embed(inputIds, { attentionMask });
  const got = await extract('hello world');
  t.same(got.shape, [1, 64]);
  t.same([...got.data], [...manual.data], 'mean pooling: model.embed exactly');
  const none = await extract('hello world', { pooling: 'none' });
  t.same(none.shape, [1, model.config.num_latents, 64]);
  const unit = await extract(['hello world', 'other'], { normalize: true });
  for (let b = 0; b < 2; b++) t.ok(Math.abs(Math.hypot(...unit.data.subarray(b * 64, (b + 1) * 64)) - 1) < 1e-6, `row ${b} has unit norm`);
  const norm = Math.hypot(...manual.data);
  t.ok(Math.abs(unit.data[0]! - manual.data[0]! / norm) < 1e-6, 'normalised direction is the embedding\'s');
  const file = join(dir, 'note.txt');
  await writeFile(file, 'hello world');
  const fromFile = await extract({ path: file });
  t.same([...fromFile.data], [...manual.data], 'a text file embeds as its text');
  await t.rejects(extract('x', { pooling: 'max' as never }), InvalidArgumentError);
  await t.rejects(extract({ path: join(dir, 'a.png') }), InvalidArgumentError, 'a text model takes no images');
});

t.test('abort and dispose in the middle of a call are clean', async (t) => {
  const classify = await pipeline('text-classification', CLS);
  const controller = new AbortController();
  const running = classify('some text', { signal: controller.signal });
  controller.abort();
  await t.rejects(running, { name: 'AbortError' }, 'an aborted call rejects with the signal\'s reason');
  const after = (await classify('some text')) as { label: string }[];
  t.equal(after.length, 1, 'the pipeline is still usable after an aborted call');
  await t.rejects(classify('x', { signal: AbortSignal.abort() }), { name: 'AbortError' }, 'an already aborted signal');
  await t.rejects(classify('x', { signal: 'no' as never }), InvalidArgumentError);

  const inFlight = classify(['one', 'two', 'three']);
  const disposing = classify.dispose();
  await t.rejects(inFlight, DisposedError, 'a call in flight rejects with DisposedError');
  await disposing;
  t.equal(classify.disposed, true);
  t.equal(classify.model.disposed, true, 'the model is released');
  await t.rejects(classify('x'), DisposedError, 'later calls reject');
  await classify.dispose();
  t.pass('dispose is idempotent');

  // await using disposes at the end of the scope.
  let model;
  {
    await using fill = await pipeline('fill-mask', MLM);
    model = fill.model;
    t.equal(model.disposed, false);
  }
  t.equal(model.disposed, true, 'Symbol.asyncDispose releases the model');

  // A signal aborted before the load stops it; the load signal also cancels later calls.
  await t.rejects(pipeline('fill-mask', MLM, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  const loadController = new AbortController();
  const fill = await pipeline('fill-mask', MLM, { signal: loadController.signal });
  t.teardown(() => fill.dispose());
  loadController.abort();
  await t.rejects(fill('a [MASK]'), { name: 'AbortError' });
  await t.rejects(pipeline('no-such-task' as never, MLM), InvalidArgumentError);
});

t.test('a Hub id loads through the standard cache, reporting download progress', async (t) => {
  const server = new HubServer();
  await server.start();
  t.teardown(() => server.close());
  server.addRepo('deepmind/tiny-mlm', {
    files: { 'config.json': readFileSync(join(MLM, 'config.json')), 'model.safetensors': readFileSync(join(MLM, 'model.safetensors')) },
    lfs: ['model.safetensors'],
  });
  const cacheDir = await tempDir(t);
  const events: { file: string; received: number; total: number }[] = [];
  await using fill = await pipeline('fill-mask', 'deepmind/tiny-mlm', { hub: { endpoint: server.url, cacheDir }, progressCallback: (e) => events.push(e) });
  t.ok(fill.folder.startsWith(cacheDir), 'downloaded into the cache folder');
  const last = events.filter((e) => e.file === 'model.safetensors').pop();
  t.ok(last && last.received === last.total && last.total === readFileSync(join(MLM, 'model.safetensors')).length, 'progress reached the whole weights file');
  await using local = await pipeline('fill-mask', MLM);
  t.same(await fill('a [MASK] b'), await local('a [MASK] b'), 'the same results as the local folder');
});
