/**
 * The OpenAI-compatible route, through the official `openai` client against a real server on
 * 127.0.0.1: one string, an array, base64, models.list, and its error types (400, 401, 413).
 */
import t from 'tap';
import OpenAI from 'openai';
import { AutoModel, PerceiverTokenizer } from '../lib/index.js';
import { serve } from '../lib/serving/server.js';
import { fixtureDir } from './helpers/fixtures.js';

const API_KEY = 'sk-test-0123456789';

function normalized(values: ArrayLike<number>): number[] {
  const norm = Math.sqrt(Array.from(values).reduce((sum, v) => sum + v * v, 0));
  return Array.from(values, (v) => v / norm);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

t.test('openai client against /v1/embeddings', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const server = await serve(model, { modelName: 'perceiver-text', apiKeys: [API_KEY], maxDelayMs: 2 });
  t.teardown(() => server.close());
  const client = new OpenAI({ apiKey: API_KEY, baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 20_000 });
  const tokenizer = new PerceiverTokenizer();
  const length = model.config.max_position_embeddings;

  /** The unit-length mean-pooled embedding of one text, padded to the model's full length. */
  const expected = async (text: string): Promise<number[]> => {
    const enc = tokenizer.call(text, { padding: 'max_length', maxLength: length, truncation: true });
    return normalized((await model.embed(enc.inputIds, { attentionMask: enc.attentionMask })).data);
  };

  t.test('one string (the client asks for base64 and decodes it)', async (t) => {
    const res = await client.embeddings.create({ model: 'perceiver-text', input: 'hello world' });
    t.equal(res.object, 'list');
    t.equal(res.model, 'perceiver-text');
    t.equal(res.data.length, 1);
    t.equal(res.data[0]!.object, 'embedding');
    t.equal(res.data[0]!.index, 0);
    t.equal(res.data[0]!.embedding.length, model.config.d_latents);
    const diff = maxDiff(res.data[0]!.embedding, await expected('hello world'));
    t.ok(diff < 1e-5, `equals the model's normalized embedding (max difference ${diff})`);
    t.same(res.usage, { prompt_tokens: 'hello world'.length + 2, total_tokens: 'hello world'.length + 2 }, 'usage counts real tokens, [CLS] and [SEP] included');
  });

  t.test('an array, answered in order, floats', async (t) => {
    const texts = ['first', 'a somewhat longer second text', '', 'é😀 fourth'];
    const res = await client.embeddings.create({ model: 'perceiver-text', input: texts, encoding_format: 'float' });
    t.same(res.data.map((d) => d.index), [0, 1, 2, 3]);
    for (const [i, text] of texts.entries()) {
      const diff = maxDiff(res.data[i]!.embedding, await expected(text));
      t.ok(diff < 1e-5, `item ${i} is its own text's embedding (max difference ${diff})`);
    }
    const tokens = texts.reduce((sum, text) => sum + Buffer.byteLength(text) + 2, 0);
    t.equal(res.usage.prompt_tokens, tokens);
  });

  t.test('base64: little-endian float32', async (t) => {
    const res = await client.embeddings.create({ model: 'perceiver-text', input: ['hello world'], encoding_format: 'base64' });
    const b64 = res.data[0]!.embedding as unknown as string;
    t.type(b64, 'string');
    const bytes = Buffer.from(b64, 'base64');
    t.equal(bytes.length, 4 * model.config.d_latents);
    const values = Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(4 * i));
    t.ok(maxDiff(values, await expected('hello world')) < 1e-5, 'decodes to the embedding');
  });

  t.test('models.list', async (t) => {
    const list = await client.models.list();
    t.same(
      list.data.map((m) => [m.id, m.object, m.owned_by]),
      [['perceiver-text', 'model', 'perceiver-io']],
    );
  });

  t.test('errors in OpenAI shape, as the client types them', async (t) => {
    const dims = await client.embeddings.create({ model: 'perceiver-text', input: 'x', dimensions: 8 }).catch((e: unknown) => e);
    t.ok(dims instanceof OpenAI.BadRequestError, 'dimensions other than the model\'s: 400');
    t.equal((dims as InstanceType<typeof OpenAI.BadRequestError>).code, 'ERR_PERCEIVER_DIMENSIONS_UNSUPPORTED');
    t.match((dims as Error).message, /64 dimensions/);
    const same = await client.embeddings.create({ model: 'perceiver-text', input: 'x', dimensions: 64 });
    t.equal(same.data[0]!.embedding.length, 64, 'dimensions equal to the model\'s are taken');

    const long = await client.embeddings.create({ model: 'perceiver-text', input: 'y'.repeat(200) }).catch((e: unknown) => e);
    t.ok(long instanceof OpenAI.APIError && long.status === 413, 'an over-long input: 413');
    t.match((long as Error).message, /at most 48/, 'naming the limit');

    const tokens = await client.embeddings.create({ model: 'perceiver-text', input: [[1, 2, 3]] as unknown as string[] }).catch((e: unknown) => e);
    t.ok(tokens instanceof OpenAI.BadRequestError, 'token arrays: 400');

    const anonymous = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${server.url}/v1`, maxRetries: 0 });
    const denied = await anonymous.embeddings.create({ model: 'perceiver-text', input: 'x' }).catch((e: unknown) => e);
    t.ok(denied instanceof OpenAI.AuthenticationError, 'a wrong key: 401');
    const raw = await fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input":"x"}' });
    t.equal(raw.status, 401, 'no key: 401');
    const body = (await raw.json()) as { error: { message: string; type: string; code: string } };
    t.match(body, { error: { message: /Bearer/, type: 'authentication_error', code: 'ERR_PERCEIVER_UNAUTHORIZED' } });
    t.equal((await fetch(`${server.url}/health`)).status, 200, '/health stays open');
  });
});
