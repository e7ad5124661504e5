/**
 * `embed --queue` leaves out files of a kind the model does not read before queueing them, with the
 * one summary line of a local run: the enqueuer tells the kinds from the checkpoint's config alone
 * (a local folder, or a Hub id of which only config.json is downloaded), with the same function the
 * workers' input builders use.
 */
import t from 'tap';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, AutoModel } from '../lib/index.js';
import { readEmbeddings } from '../lib/batch/job.js';
import { checkpointMediaKinds } from '../lib/batch/model_kinds.js';
import { createMediaInputBuilder } from '../lib/media/model_inputs.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { HubServer } from './helpers/hub-server.js';
import { MODEL, ROOTS, runCli, startCli } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';

t.test('the enqueuer drops other kinds with one line; the workers see only what the model reads', async (t) => {
  const redis = await startRedis(t);
  const dir = await tempDir(t, 'perceiver-queue-kinds-');
  const input = join(dir, 'in');
  await mkdir(input);
  for (let i = 0; i < 5; i++) await writeFile(join(input, `note-${i}.txt`), `note number ${i}`);
  // Never opened: the extension is enough to leave them out.
  for (let i = 0; i < 12; i++) await writeFile(join(input, `photo-${i}.jpg`), 'not even a JPEG');
  await writeFile(join(input, 'clip.mp4'), 'not a video');
  await writeFile(join(input, 'song.wav'), 'not audio');

  const worker = startCli(t, ['worker', '--queue', redis.url, ...ROOTS]);
  await worker.waitFor(/taking shards from/);
  const out = join(dir, 'out');
  const run = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '2', input]);
  t.equal(run.code, 0, `exit 0 (${run.stderr.trim().split('\n').at(-1)})`);
  const lines = run.stderr.split('\n').filter(Boolean);
  t.same(lines.filter((line) => line.includes('ignored:')), ['perceiver-io embed: 12 images, 1 audio file and 1 video ignored: this model reads text files'], 'one line for the files of other kinds');
  t.notOk(lines.some((line) => /photo-|clip\.mp4|song\.wav/.test(line)), 'no line per ignored file');
  t.match(lines.at(-1)!, /^perceiver-io embed: 5 items: 5 written by 3 shards \(3 queued now\), 0 already done, 0 unreadable, 14 ignored \(kind\) -> /, 'the summary counts them');
  const rows = await readEmbeddings(out);
  t.same(rows.map((r) => r.path.split('/').at(-1)).sort(), Array.from({ length: 5 }, (_, i) => `note-${i}.txt`), 'only the text files were embedded');
  t.notOk(/failed|photo-/.test(worker.stderr().replace(/0 failed/g, '')), 'no worker was sent an image');
  worker.child.kill('SIGTERM');
  t.equal((await worker.exited).code, 0);
});

t.test('kinds from the config alone agree with the loaded model\'s builder', async (t) => {
  for (const name of ['text-mlm', 'text-classification', 'image-fourier', 'image-conv', 'multimodal-autoencoding']) {
    const { accepts } = await checkpointMediaKinds(fixtureDir(name));
    const model = await AutoModel.fromPretrained(fixtureDir(name));
    try {
      t.same(accepts, createMediaInputBuilder(model).accepts, `${name}: ${accepts.join(', ')}`);
    } finally {
      await model.dispose();
    }
  }
  await t.rejects(checkpointMediaKinds(fixtureDir('optical-flow')), InvalidArgumentError, 'optical flow reads no media files: a typed error');
});

t.test('a Hub id: only config.json is downloaded', async (t) => {
  const server = new HubServer();
  await server.start();
  t.teardown(() => server.close());
  const config = await readFile(join(fixtureDir('image-fourier'), 'config.json'));
  server.addRepo('deepmind/vision-kinds', { files: { 'config.json': config, 'model.safetensors': Buffer.alloc(4096, 7) }, lfs: ['model.safetensors'] });
  const cacheDir = await tempDir(t, 'perceiver-hub-kinds-');
  const { accepts, config: parsed } = await checkpointMediaKinds('deepmind/vision-kinds', { endpoint: server.url, cacheDir, token: '' });
  t.same(accepts, ['image', 'video']);
  t.equal(parsed.d_latents, JSON.parse(config.toString()).d_latents, 'the config is the repository\'s');
  t.ok(server.requests.some((r) => r.url.endsWith('/config.json')), 'config.json came from the server');
  t.equal(server.requests.filter((r) => r.url.includes('model.safetensors')).length, 0, 'the weights were never asked for');
});
