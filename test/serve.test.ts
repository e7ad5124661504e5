/** serve(): the HTTP API (fastify) over real sockets on 127.0.0.1, port 0. */
import t from 'tap';
import sharp from 'sharp';
import { AutoModel, PerceiverImageProcessor, PerceiverTokenizer, Tensor } from '../lib/index.js';
import { serve } from '../lib/serving/server.js';
import { fixtureDir } from './helpers/fixtures.js';
import { metricSum, softmax } from './helpers/serving.js';

type Json = Record<string, any>;

async function post(url: string, body: unknown, raw = false): Promise<{ status: number; json: Json }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw ? (body as string) : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}


t.test('text classification model', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const numLabels = model.config.num_labels;
  t.equal(numLabels, 3);
  const server = await serve(model, { topK: numLabels, maxDelayMs: 20 });
  t.teardown(() => server.close());
  t.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);

  const tokenizer = new PerceiverTokenizer();
  const encoded = tokenizer.call('hello', { padding: 'max_length', maxLength: model.config.max_position_embeddings, truncation: true });

  t.test('/health', async (t) => {
    const res = await fetch(`${server.url}/health`);
    t.equal(res.status, 200);
    t.same(await res.json(), { status: 'ok', model: 'PerceiverForSequenceClassification', models: { PerceiverForSequenceClassification: 'ready' } });
  });

  t.test('/classify matches softmax of the model forward', async (t) => {
    const { status, json } = await post(`${server.url}/classify`, { text: 'hello' });
    t.equal(status, 200);
    t.equal(json.labels.length, numLabels);
    const expected = softmax(((await model.forward({ inputs: encoded.inputIds, attentionMask: encoded.attentionMask })).logits as Tensor<'float32'>).data);
    const sum = json.labels.reduce((a: number, l: Json) => a + l.score, 0);
    t.ok(Math.abs(sum - 1) < 1e-6, `scores sum to 1 (${sum})`);
    const id2label = model.config.id2label;
    for (const { label, score } of json.labels) {
      const index = Object.keys(id2label).find((k) => id2label[k] === label);
      t.ok(index !== undefined, `${label} is in id2label`);
      t.ok(Math.abs(score - expected[Number(index)]!) < 1e-5, `${label}: ${score} vs ${expected[Number(index)]}`);
    }
    const scores = json.labels.map((l: Json) => l.score);
    t.same(scores, [...scores].sort((a, b) => b - a), 'best first');
  });

  t.test('/embed matches model.embed', async (t) => {
    const { status, json } = await post(`${server.url}/embed`, { text: 'hello' });
    t.equal(status, 200);
    t.equal(json.embedding.length, 64);
    const expected = await model.embed(encoded.inputIds, { attentionMask: encoded.attentionMask });
    let maxDiff = 0;
    json.embedding.forEach((v: number, i: number) => (maxDiff = Math.max(maxDiff, Math.abs(v - expected.data[i]!))));
    t.ok(maxDiff < 1e-5, `max difference ${maxDiff}`);
  });

  t.test('20 concurrent /embed requests are batched; /metrics reports them', async (t) => {
    const texts = Array.from({ length: 20 }, (_, i) => `request number ${i}`);
    const answers = await Promise.all(texts.map((text) => post(`${server.url}/embed`, { text })));
    t.ok(answers.every((a) => a.status === 200 && a.json.embedding.length === 64), 'all 200 with 64 numbers');
    // Each answer is its own item: compare one against the model directly.
    const one = tokenizer.call(texts[7]!, { padding: 'max_length', maxLength: 48, truncation: true });
    const expected = await model.embed(one.inputIds, { attentionMask: one.attentionMask });
    const diff = Math.max(...answers[7]!.json.embedding.map((v: number, i: number) => Math.abs(v - expected.data[i]!)));
    t.ok(diff < 1e-4, `batched item 7 equals its own embed (max difference ${diff})`);

    const res = await fetch(`${server.url}/metrics`);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /text\/plain/);
    const text = await res.text();
    const batches = metricSum(text, 'perceiver_batch_size_count', 'route="/embed"');
    const items = metricSum(text, 'perceiver_batch_size_sum', 'route="/embed"');
    t.equal(items, 22, 'batch sizes add up to the /embed items (the warm-up, 1 + 20)');
    t.ok(batches >= 3 && batches < 22, `fewer forwards (${batches}) than items (22)`);
    t.ok(metricSum(text, 'perceiver_requests_total', 'route="/embed",status="200"') >= 21, 'request counter');
    t.match(text, /perceiver_request_duration_seconds_bucket\{le="[^"]+",route="\/embed",status="200"\}/);
  });

  t.test('bad bodies answer 400 with a code', async (t) => {
    const cases: [string, unknown, boolean][] = [
      ['no field', {}, false],
      ['image for a text model', { image: 'aGVsbG8=' }, false],
      ['invalid JSON', '{"text": ', true],
      ['non-string text', { text: 42 }, false],
      ['array body', ['hello'], false],
      ['both fields', { text: 'a', image: 'aGVsbG8=' }, false],
    ];
    for (const route of ['/embed', '/classify']) {
      for (const [what, body, raw] of cases) {
        const { status, json } = await post(`${server.url}${route}`, body, raw);
        t.equal(status, 400, `${route} ${what}: 400`);
        t.match(json, { error: String, code: /^ERR_/ }, `${route} ${what}: ${json.code}`);
      }
    }
    const notFound = await fetch(`${server.url}/nope`);
    t.equal(notFound.status, 404);
    t.equal(((await notFound.json()) as Json).code, 'ERR_PERCEIVER_NOT_FOUND');
    const health = await fetch(`${server.url}/health`);
    t.equal(health.status, 200, 'still serving');
  });

  t.test('a queue limit of 1 answers 429s, never 500s', async (t) => {
    const small = await serve(model, { maxQueue: 1, maxDelayMs: 20 });
    t.teardown(() => small.close());
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => post(`${small.url}/classify`, { text: `x${i}` })));
    const statuses = answers.map((a) => a.status);
    t.ok(statuses.includes(429), `some 429 (${statuses.join(' ')})`);
    t.ok(statuses.includes(200), 'some 200');
    t.ok(statuses.every((s) => s === 200 || s === 429), 'only 200 and 429');
    t.ok(answers.filter((a) => a.status === 429).every((a) => a.json.code === 'ERR_PERCEIVER_QUEUE_FULL'), 'code of queue full');
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    t.ok(metricSum(metrics, 'perceiver_requests_total', 'status="429"') >= 1, '429s are counted');
  });

  t.test('closes cleanly', async (t) => {
    const extra = await serve(model);
    t.equal((await fetch(`${extra.url}/health`)).status, 200);
    await extra.close();
    await extra.close();
    await t.rejects(fetch(`${extra.url}/health`), 'no longer listening');
  });
});

t.test('masked LM: /classify explains there is no classification output', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const server = await serve(model);
  t.teardown(() => server.close());
  const classify = await post(`${server.url}/classify`, { text: 'hello' });
  t.equal(classify.status, 400);
  t.equal(classify.json.code, 'ERR_PERCEIVER_NOT_A_CLASSIFIER');
  const embed = await post(`${server.url}/embed`, { text: 'hello' });
  t.equal(embed.status, 200);
  t.equal(embed.json.embedding.length, model.config.d_latents);
});

t.test('image classification model', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('image-fourier'));
  t.teardown(() => model.dispose());
  const imageProcessor = new PerceiverImageProcessor({ size: { height: 8, width: 10 }, doCenterCrop: false });
  const server = await serve(model, { imageProcessor, topK: 10 });
  t.teardown(() => server.close());

  const raw = Buffer.alloc(16 * 20 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) % 256;
  const png = await sharp(raw, { raw: { width: 20, height: 16, channels: 3 } }).png().toBuffer();

  const { status, json } = await post(`${server.url}/classify`, { image: png.toString('base64') });
  t.equal(status, 200);
  t.equal(json.labels.length, 6, '6 labels (topK clamped to the label count)');
  const pixels = await imageProcessor.preprocess(png);
  const expected = softmax(((await model.forward({ inputs: pixels })).logits as Tensor<'float32'>).data);
  for (const { label, score } of json.labels) {
    const index = Number(label.replace('LABEL_', ''));
    t.ok(Math.abs(score - expected[index]!) < 1e-5, `${label}: ${score} vs ${expected[index]}`);
  }
  const embed = await post(`${server.url}/embed`, { image: `data:image/png;base64,${png.toString('base64')}` });
  t.equal(embed.status, 200);
  t.equal(embed.json.embedding.length, 64);

  const text = await post(`${server.url}/classify`, { text: 'hello' });
  t.equal(text.status, 400, 'text for an image model: 400');
  t.equal(text.json.code, 'ERR_PERCEIVER_WRONG_MODALITY');
  const garbage = await post(`${server.url}/classify`, { image: Buffer.from('not an image').toString('base64') });
  t.equal(garbage.status, 400, 'undecodable image: 400');
  t.match(garbage.json.code, /^ERR_/);
  const bad64 = await post(`${server.url}/classify`, { image: '***' });
  t.equal(bad64.status, 400, 'invalid base64: 400');
  t.equal((await fetch(`${server.url}/health`)).status, 200, 'still serving');
});

t.test('perceiver-io serve: the CLI serves a checkpoint until SIGTERM, then exits 0', async (t) => {
  const { spawn } = await import('node:child_process');
  const { join } = await import('node:path');
  const { readFileSync } = await import('node:fs');
  const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
  const cli = join(repo, JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).bin['perceiver-io']);
  const child = spawn(process.execPath, [cli, 'serve', '--model', join(repo, 'test', 'fixtures', 'text-classification'), '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const m = /serving \w+ on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`serve exited early (${code}): ${stderr}`)));
  });
  const health = await fetch(`${url}/health`);
  t.equal(health.status, 200, '/health answers');
  const classify = await fetch(`${url}/classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'hello' }) });
  t.equal(classify.status, 200, '/classify answers');
  t.ok(Array.isArray(((await classify.json()) as { labels: unknown[] }).labels), 'with labels');
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.equal(await exit, 0, 'exits 0 on SIGTERM');
});

t.test('perceiver-io serve: several named models, per-model flags, a key from the environment; an unservable checkpoint exits 1', async (t) => {
  const { spawn } = await import('node:child_process');
  const { join } = await import('node:path');
  const { readFileSync } = await import('node:fs');
  const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
  const cli = join(repo, JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).bin['perceiver-io']);
  const fixture = (name: string) => join(repo, 'test', 'fixtures', name);
  const run = (args: string[]) => {
    const child = spawn(process.execPath, [cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PERCEIVER_IO_API_KEY: 'env-key' } });
    let stderr = '';
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const url = new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const m = /serving .* on (http:\/\/\S+)/.exec(stderr);
        if (m) resolve(m[1]!);
      });
      void exit.then((code) => reject(new Error(`serve exited (${code}): ${stderr}`)));
    });
    return { child, url, exit, stderr: () => stderr };
  };

  const two = run(['--model', `clf=${fixture('text-classification')}`, '--model', `mlm=${fixture('text-mlm')}`, '--device', 'cpu', '--dtype', 'mlm=float32', '--max-client-batch-size', '4']);
  const url = await two.url;
  t.match(two.stderr(), /"clf".*"mlm"/, 'both models named');
  const auth = { authorization: 'Bearer env-key', 'content-type': 'application/json' };
  t.equal((await fetch(`${url}/v1/models`)).status, 401, 'a key is required');
  const models = (await (await fetch(`${url}/v1/models`, { headers: auth })).json()) as Json;
  t.same(models.data.map((m: Json) => m.id), ['clf', 'mlm']);
  const embed = await fetch(`${url}/v1/embeddings`, { method: 'POST', headers: auth, body: JSON.stringify({ input: ['a', 'b'], model: 'mlm' }) });
  t.equal(embed.status, 200);
  t.equal(((await embed.json()) as Json).model, 'mlm');
  const tooMany = await fetch(`${url}/embed`, { method: 'POST', headers: auth, body: JSON.stringify({ inputs: ['a', 'b', 'c', 'd', 'e'] }) });
  t.equal(tooMany.status, 413, '--max-client-batch-size 4');
  t.equal((await fetch(`${url}/health`)).status, 200, '/health is public and ready');
  two.child.kill('SIGTERM');
  t.equal(await two.exit, 0);

  const multimodal = run(['--model', fixture('multimodal-autoencoding')]);
  t.equal(await multimodal.exit, 1, 'an unservable checkpoint exits 1');
  await multimodal.url.catch(() => undefined);
  t.match(multimodal.stderr(), /takes text .* or images .*: only those can be served/);
  t.notMatch(multimodal.stderr(), /\n\s+at /, 'one line, no stack');
});
