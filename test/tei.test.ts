/**
 * text-embeddings-inference (TEI) compatible routes, batch inputs, dynamic padding, API keys,
 * readiness, several models: real servers on 127.0.0.1.
 */
import t from 'tap';
import sharp from 'sharp';
import { AutoModel, PerceiverImageProcessor, PerceiverTokenizer, Tensor } from '../lib/index.js';
import { NativeError } from '../lib/errors.js';
import { paddedLength, serve } from '../lib/serving/server.js';
import { fixtureDir } from './helpers/fixtures.js';
import { metricSum, softmax } from './helpers/serving.js';

type Json = any;

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Json }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

function normalized(values: ArrayLike<number>): number[] {
  const norm = Math.sqrt(Array.from(values).reduce((sum, v) => sum + v * v, 0));
  return Array.from(values, (v) => v / norm);
}


t.test('paddedLength: powers of two from 16, capped', async (t) => {
  t.same([1, 16, 17, 33, 100, 2048, 3000].map((n) => paddedLength(n, 2048)), [16, 16, 32, 64, 128, 2048, 2048]);
  t.equal(paddedLength(40, 48), 48);
});

t.test('text model: TEI routes', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const server = await serve(model, { modelName: 'clf', maxDelayMs: 20, maxClientBatchSize: 8 });
  t.teardown(() => server.close());
  const tokenizer = new PerceiverTokenizer();
  const length = model.config.max_position_embeddings;
  const embedOf = async (text: string, truncate?: 'left'): Promise<Float32Array> => {
    let ids = tokenizer.encode(text, { addSpecialTokens: false });
    if (ids.length > length - 2) ids = truncate === 'left' ? ids.slice(ids.length - (length - 2)) : ids.slice(0, length - 2);
    const seq = [4, ...ids, 5];
    const data = new BigInt64Array(length);
    const mask = new BigInt64Array(length);
    seq.forEach((id, i) => ((data[i] = BigInt(id)), (mask[i] = 1n)));
    return (await model.embed(new Tensor('int64', [1, length], data), { attentionMask: new Tensor('int64', [1, length], mask) })).data;
  };

  t.test('/embed {"inputs": string} answers [[...]], normalized by default', async (t) => {
    const { status, json } = await post(`${server.url}/embed`, { inputs: 'hello' });
    t.equal(status, 200);
    t.equal(json.length, 1);
    t.ok(maxDiff(json[0], normalized(await embedOf('hello'))) < 1e-5, 'the unit-length embedding');
    const raw = await post(`${server.url}/embed`, { inputs: 'hello', normalize: false });
    t.ok(maxDiff(raw.json[0], await embedOf('hello')) < 1e-5, 'normalize: false gives the mean-pooled latents');
  });

  t.test('a batch is answered in order, each as if alone (dynamic padding)', async (t) => {
    // Lengths from 2 to 48 tokens: padded to 16, 32 and 48 in different forwards.
    const texts = ['a', 'x'.repeat(40), 'medium length text', '', 'b'.repeat(20), 'é'.repeat(10)];
    const { status, json } = await post(`${server.url}/embed`, { inputs: texts, normalize: false });
    t.equal(status, 200);
    t.equal(json.length, texts.length);
    for (const [i, text] of texts.entries()) {
      const diff = maxDiff(json[i], await embedOf(text));
      t.ok(diff < 1e-5, `item ${i} (${Buffer.byteLength(text) + 2} tokens) equals its full-length-padded embedding (max difference ${diff})`);
    }
    const again = await Promise.all(texts.map((text) => post(`${server.url}/embed`, { inputs: text, normalize: false })));
    texts.forEach((_, i) => t.ok(maxDiff(again[i]!.json[0], json[i]) < 1e-5, `item ${i} alone = item ${i} in the batch`));
  });

  t.test('over-long inputs: 413 naming the limit unless truncate', async (t) => {
    const long = `${'a'.repeat(30)}${'z'.repeat(30)}`;
    const refused = await post(`${server.url}/embed`, { inputs: ['ok', long] });
    t.equal(refused.status, 413);
    t.match(refused.json, { code: 'ERR_PERCEIVER_INPUT_TOO_LONG', error_type: 'Validation', error: /"inputs"\[1\] is 62 tokens long; clf takes at most 48/ });
    // Longer than the part of a text the body keeps (6 x 49 code units): still told apart.
    const huge = await post(`${server.url}/embed`, { inputs: 'q'.repeat(10_000) });
    t.equal(huge.status, 413);
    t.match(huge.json.error, /more than 48 tokens/);
    const right = await post(`${server.url}/embed`, { inputs: long, truncate: true, normalize: false });
    t.equal(right.status, 200);
    t.ok(maxDiff(right.json[0], await embedOf(long)) < 1e-5, 'truncate keeps the start');
    const left = await post(`${server.url}/embed`, { inputs: long, truncate: true, truncation_direction: 'Left', normalize: false });
    t.ok(maxDiff(left.json[0], await embedOf(long, 'left')) < 1e-5, 'truncation_direction "Left" keeps the end');
    t.ok(maxDiff(left.json[0], right.json[0]) > 1e-4, 'and they differ');
    const hugeLeft = await post(`${server.url}/embed`, { inputs: `${'q'.repeat(10_000)}${'w'.repeat(46)}`, truncate: true, truncation_direction: 'left', normalize: false });
    t.ok(maxDiff(hugeLeft.json[0], await embedOf('w'.repeat(46))) < 1e-5, 'left truncation of a huge text keeps its last tokens');
    const legacy = await post(`${server.url}/embed`, { text: long });
    t.equal(legacy.status, 200, '{"text"} bodies keep truncating by default');
  });

  t.test('limits and bad options', async (t) => {
    const many = await post(`${server.url}/embed`, { inputs: Array.from({ length: 9 }, () => 'x') });
    t.equal(many.status, 413, 'more inputs than maxClientBatchSize: 413');
    t.match(many.json, { code: 'ERR_PERCEIVER_BATCH_TOO_LARGE', error: /at most 8/ });
    for (const [body, pattern] of [
      [{ inputs: [] }, /empty array/],
      [{ inputs: ['a', 3] }, /"inputs"\[1\] must be a string/],
      [{ inputs: 'a', normalize: 'yes' }, /"normalize" must be true or false/],
      [{ inputs: 'a', truncation_direction: 'up' }, /"truncation_direction"/],
      [{ inputs: 'a', text: 'b' }, /one input key/],
    ] as const) {
      const res = await post(`${server.url}/embed`, body);
      t.equal(res.status, 400, JSON.stringify(body));
      t.match(res.json.error, pattern);
    }
  });

  t.test('/predict: every label, best first; raw_scores, top_k, batches', async (t) => {
    const enc = tokenizer.call('hello', { padding: 'max_length', maxLength: length, truncation: true });
    const logits = Array.from(((await model.forward({ inputs: enc.inputIds, attentionMask: enc.attentionMask })).logits as Tensor<'float32'>).data);
    const probs = softmax(logits);
    const { status, json } = await post(`${server.url}/predict`, { inputs: 'hello' });
    t.equal(status, 200);
    t.equal(json.length, 3);
    for (const { label, score } of json) t.ok(Math.abs(score - probs[Number(label.replace('LABEL_', ''))]!) < 1e-5, `${label} ${score}`);
    t.same(json.map((s: Json) => s.score), [...json.map((s: Json) => s.score)].sort((a: number, b: number) => b - a), 'best first');
    const raw = await post(`${server.url}/predict`, { inputs: 'hello', raw_scores: true, top_k: 1 });
    t.equal(raw.json.length, 1);
    t.ok(Math.abs(raw.json[0].score - Math.max(...logits)) < 1e-4, 'raw_scores: the logit');
    const batch = await post(`${server.url}/predict`, { inputs: ['hello', 'other'] });
    t.equal(batch.json.length, 2);
    t.ok(maxDiff(batch.json[0].map((s: Json) => s.score), json.map((s: Json) => s.score)) < 1e-5, 'a batch answers per input');
    const legacy = await post(`${server.url}/classify`, { text: ['hello', 'other'] });
    t.equal(legacy.json.results.length, 2, '/classify takes arrays too');
  });

  t.test('/info', async (t) => {
    const res = await fetch(`${server.url}/info`);
    t.equal(res.status, 200);
    t.match(await res.json(), {
      model_id: 'clf',
      model_dtype: 'float32',
      model_device: 'cpu',
      model_type: { classifier: { id2label: { 0: String } } },
      max_input_length: 48,
      max_client_batch_size: 8,
      max_batch_tokens: 16384,
      max_batch_requests: 16,
      version: /^\d+\.\d+\.\d+/,
    });
  });
});

t.test('batches are budgeted by tokens', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  // 16-token texts, at most 32 tokens a forward: 2 per forward.
  const server = await serve(model, { maxDelayMs: 50, maxBatchTokens: 32 });
  t.teardown(() => server.close());
  const texts = Array.from({ length: 6 }, (_, i) => `text ${i}`);
  const { status, json } = await post(`${server.url}/embed`, { inputs: texts });
  t.equal(status, 200);
  t.equal(json.length, 6);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  t.equal(metricSum(metrics, 'perceiver_batch_tokens_sum', 'route="/embed"'), 7 * 16, 'tokens: the warm-up and six texts, 16 each');
  t.ok(metricSum(metrics, 'perceiver_batch_size_count', 'route="/embed"') >= 4, 'three forwards (or more) for the six texts, plus the warm-up');
  t.equal(metricSum(metrics, 'perceiver_batch_tokens_bucket', 'le="16"'), 1, 'only the warm-up forward has 16 tokens');
  t.match(metrics, /perceiver_queue_depth\{model="PerceiverForSequenceClassification",route="\/embed"\} 0/);
  t.match(metrics, /process_cpu_user_seconds_total/, 'the process\'s default metrics');
  t.match(metrics, /perceiver_requests_total\{route="\/embed",status="200",model="PerceiverForSequenceClassification"\} 1/);
});

t.test('image model: images in the TEI and OpenAI routes', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('image-fourier'));
  t.teardown(() => model.dispose());
  const imageProcessor = new PerceiverImageProcessor({ size: { height: 8, width: 10 }, doCenterCrop: false });
  const server = await serve(model, { imageProcessor, maxDelayMs: 5 });
  t.teardown(() => server.close());
  const raw = Buffer.alloc(16 * 20 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) % 256;
  const png = await sharp(raw, { raw: { width: 20, height: 16, channels: 3 } }).png().toBuffer();
  const other = await sharp(Buffer.alloc(16 * 20 * 3, 200), { raw: { width: 20, height: 16, channels: 3 } }).png().toBuffer();
  const pixels = await imageProcessor.preprocess(png);
  const expected = (await model.embed(pixels)).data;

  const { status, json } = await post(`${server.url}/embed`, { inputs: [`data:image/png;base64,${png.toString('base64')}`, other.toString('base64')], normalize: false });
  t.equal(status, 200);
  t.equal(json.length, 2);
  t.ok(maxDiff(json[0], expected) < 1e-5, 'a data URL');
  t.ok(maxDiff(json[1], (await model.embed(await imageProcessor.preprocess(other))).data) < 1e-5, 'plain base64, in order');
  const openai = await post(`${server.url}/v1/embeddings`, { input: png.toString('base64'), model: 'anything' });
  t.equal(openai.status, 200);
  t.ok(maxDiff(openai.json.data[0].embedding, normalized(expected)) < 1e-5, '/v1/embeddings takes images');
  const predict = await post(`${server.url}/predict`, { inputs: png.toString('base64') });
  t.equal(predict.status, 200);
  t.equal(predict.json.length, model.config.num_labels);
  const text = await post(`${server.url}/embed`, { text: 'hello' });
  t.equal(text.status, 400);
  t.equal(text.json.code, 'ERR_PERCEIVER_WRONG_MODALITY');
  const bad = await post(`${server.url}/embed`, { inputs: ['***'] });
  t.equal(bad.status, 400);
  t.match(bad.json.error, /"inputs"\[0\] is not valid base64/);
});

t.test('API keys', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const server = await serve(model, { apiKeys: ['key-one', 'key-two'], publicRoutes: ['/health'] });
  t.teardown(() => server.close());
  for (const [path, method] of [
    ['/embed', 'POST'],
    ['/predict', 'POST'],
    ['/classify', 'POST'],
    ['/v1/embeddings', 'POST'],
    ['/info', 'GET'],
    ['/v1/models', 'GET'],
    ['/metrics', 'GET'],
    ['/models/PerceiverForSequenceClassification/embed', 'POST'],
  ] as const) {
    const body = method === 'POST' ? JSON.stringify({ inputs: 'x', input: undefined }) : undefined;
    for (const auth of [undefined, 'Bearer wrong', 'Basic key-one', 'Bearer key-one2']) {
      const res = await fetch(`${server.url}${path}`, { method, headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) }, body });
      t.equal(res.status, 401, `${method} ${path} with ${auth ?? 'no key'}: 401`);
      t.equal(res.headers.get('www-authenticate'), 'Bearer');
      await res.arrayBuffer();
    }
  }
  for (const key of ['key-one', 'key-two']) {
    const ok = await post(`${server.url}/embed`, { inputs: 'x' }, { authorization: `Bearer ${key}` });
    t.equal(ok.status, 200, `${key} is taken`);
  }
  t.equal((await fetch(`${server.url}/health`)).status, 200, '/health is public');
});

t.test('readiness: 503 until the warm-up forward, and once the engine fails', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const embed = model.embed.bind(model);
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let failing = false;
  // The warm-up waits on the gate; later, a failing engine.
  model.embed = (async (...args: Parameters<typeof embed>) => {
    await gate;
    if (failing) throw new NativeError('device lost (test)');
    return embed(...args);
  }) as typeof model.embed;
  const server = await serve(model, { awaitReady: false });
  t.teardown(() => server.close());
  const before = await fetch(`${server.url}/health`);
  t.equal(before.status, 503, '503 while warming up');
  t.match(await before.json(), { status: 'loading', models: { PerceiverForSequenceClassification: 'loading' } });
  open();
  await server.ready;
  t.equal((await fetch(`${server.url}/health`)).status, 200, '200 once warm');
  failing = true;
  const failed = await post(`${server.url}/embed`, { inputs: 'x' });
  t.equal(failed.status, 500, 'the failing forward: 500');
  const after = await fetch(`${server.url}/health`);
  t.equal(after.status, 503, 'then unhealthy');
  t.match(await after.json(), { status: 'unavailable', models: { PerceiverForSequenceClassification: 'failed' } });
  const refused = await post(`${server.url}/embed`, { inputs: 'x' });
  t.equal(refused.status, 503, 'and inference answers 503');
  t.match(refused.json.error, /device lost/);
});

t.test('a checkpoint that cannot be served is refused at startup', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  await t.rejects(serve(model), { code: 'ERR_PERCEIVER_INVALID_ARGUMENT', message: /takes text .* or images/ });
});

t.test('several models: by /models/NAME/ and by "model"', async (t) => {
  const text = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => text.dispose());
  const mlm = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => mlm.dispose());
  const server = await serve([
    { name: 'clf', model: text },
    { name: 'org/mlm', model: mlm, maxTextLength: 32 },
  ]);
  t.teardown(() => server.close());
  const direct = async (model: typeof text, s: string, length: number): Promise<Float32Array> => {
    const enc = new PerceiverTokenizer().call(s, { padding: 'max_length', maxLength: length, truncation: true });
    return (await model.embed(enc.inputIds, { attentionMask: enc.attentionMask })).data;
  };
  const viaUrl = await post(`${server.url}/models/org/mlm/embed`, { inputs: 'hi', normalize: false });
  t.equal(viaUrl.status, 404, 'a name with a slash is not a URL segment');
  const viaEncoded = await post(`${server.url}/models/${encodeURIComponent('org/mlm')}/embed`, { inputs: 'hi', normalize: false });
  t.equal(viaEncoded.status, 200, 'it is reached percent-encoded');
  t.ok(maxDiff(viaEncoded.json[0], await direct(mlm, 'hi', 32)) < 1e-5, 'by the mlm');
  const viaBody = await post(`${server.url}/v1/embeddings`, { input: 'hi', model: 'org/mlm', encoding_format: 'float' });
  t.equal(viaBody.json.model, 'org/mlm');
  const first = await post(`${server.url}/embed`, { inputs: 'hi', normalize: false });
  t.ok(maxDiff(first.json[0], await direct(text, 'hi', 48)) < 1e-5, 'no name: the first model');
  const clf = await post(`${server.url}/models/clf/predict`, { inputs: 'hi' });
  t.equal(clf.status, 200);
  const unknown = await post(`${server.url}/v1/embeddings`, { input: 'hi', model: 'nope' });
  t.equal(unknown.status, 404);
  t.match(unknown.json, { error: { type: 'not_found_error', code: 'ERR_PERCEIVER_MODEL_NOT_FOUND', message: /"clf", "org\/mlm"/ } });
  const unknownUrl = await post(`${server.url}/models/nope/embed`, { inputs: 'hi' });
  t.equal(unknownUrl.status, 404);
  const mlmInfo = (await (await fetch(`${server.url}/models/${encodeURIComponent('org/mlm')}/info`)).json()) as Json;
  t.match(mlmInfo, { model_id: 'org/mlm', max_input_length: 32, model_type: { embedding: { pooling: 'mean' } }, models: ['clf', 'org/mlm'] });
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as Json;
  t.same(models.data.map((m: Json) => m.id), ['clf', 'org/mlm']);
  const health = (await (await fetch(`${server.url}/health`)).json()) as Json;
  t.same(health.models, { clf: 'ready', 'org/mlm': 'ready' });
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  t.match(metrics, /perceiver_batch_size_count\{route="\/embed",model="org\/mlm"\}/, 'metrics by model');
});
