/**
 * A Hugging Face Hub id wherever a checkpoint folder is accepted: AutoModel.fromPretrained and the
 * CLI download into the standard cache (from a local server that answers as the Hub does) and run.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoModel, PerceiverForMaskedLM, readSafetensors, Tensor } from '../lib/index.js';
import { HubServer } from './helpers/hub-server.js';
import { fixtureDir, fixtureIo, REPO, tempDir, assertClose } from './helpers/fixtures.js';

const server = new HubServer();
await server.start();
t.teardown(() => server.close());
const dir = fixtureDir('text-mlm');
server.addRepo('deepmind/tiny-mlm', {
  files: { 'config.json': readFileSync(join(dir, 'config.json')), 'model.safetensors': readFileSync(join(dir, 'model.safetensors')) },
  lfs: ['model.safetensors'],
});

t.test('AutoModel.fromPretrained takes a Hub id', async (t) => {
  const cacheDir = await tempDir(t);
  const model = await AutoModel.fromPretrained('deepmind/tiny-mlm', { hub: { endpoint: server.url, cacheDir } });
  t.teardown(() => model.dispose());
  t.type(model, PerceiverForMaskedLM);
  const io = await fixtureIo('text-mlm');
  const out = await model.forward({ inputs: io.get('input')!, attentionMask: io.get('call.attention_mask') });
  assertClose(t, out.logits as Tensor, io.get('expected.logits'), 'logits from the downloaded checkpoint');
  const offline = await AutoModel.fromPretrained('deepmind/tiny-mlm', { hub: { endpoint: server.url, cacheDir, offline: true } });
  t.type(offline, PerceiverForMaskedLM, 'then offline from the cache');
  await offline.dispose();
});

t.test('perceiver-io infer --model takes a Hub id (HF_ENDPOINT, HF_HOME)', async (t) => {
  const home = await tempDir(t);
  const output = join(home, 'out.safetensors');
  const cli = join(REPO, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).bin['perceiver-io']);
  // Asynchronously: the Hub server lives in this process and must keep answering.
  const r = await promisify(execFile)(process.execPath, [cli, 'infer', '--model', 'deepmind/tiny-mlm', '--inputs', join(dir, 'io.safetensors'), '--output', output], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, HF_ENDPOINT: server.url, HF_HOME: home, HF_HUB_OFFLINE: '', HF_TOKEN: '' },
  });
  t.match(r.stderr, /PerceiverForMaskedLM/, `the CLI ran (${r.stderr.trim().split('\n').pop()})`);
  const written = (await readSafetensors(output)).tensors;
  assertClose(t, written.get('logits'), (await fixtureIo('text-mlm')).get('expected.logits'), 'logits');
});
