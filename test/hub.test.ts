/**
 * Hub ids: snapshotDownload / resolveModelPath against a local server that answers as the
 * Hugging Face Hub does (test/helpers/hub-server.ts); there is no network here.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HubError, isHubId, resolveModelPath, snapshotDownload, type HubProgressEvent } from '../lib/hub/download.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { loadCheckpointWeights } from '../lib/io/checkpoint.js';
import { readSafetensors, serializeSafetensors } from '../lib/io/safetensors.js';
import type { Tensor } from '../lib/tensor.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { HubServer, sha256 } from './helpers/hub-server.js';

// Nothing from the environment of whoever runs the tests (a real token, cache or endpoint) may leak in.
const HF_VARS = ['HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME'];
const savedEnv = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
for (const k of HF_VARS) delete process.env[k];
t.teardown(() => {
  for (const k of HF_VARS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
});

/** Sets environment variables for the duration of one test. */
function withEnv(t: Test, vars: Record<string, string | undefined>): void {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  t.teardown(() => {
    for (const [k, v] of Object.entries(before)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

const CONFIG = readFileSync(join(fixtureDir('text-mlm'), 'config.json'));
const WEIGHTS = readFileSync(join(fixtureDir('text-mlm'), 'model.safetensors'));
const PREPROCESSOR = Buffer.from(JSON.stringify({ image_processor_type: 'PerceiverImageProcessor', size: { height: 224, width: 224 } }));

// A sharded copy of the same weights: two shards and an index.
const tensors = [...(await readSafetensors(join(fixtureDir('text-mlm'), 'model.safetensors'))).tensors];
const half = Math.ceil(tensors.length / 2);
const SHARDS: Record<string, Buffer> = {
  'model-00001-of-00002.safetensors': serializeSafetensors(new Map<string, Tensor>(tensors.slice(0, half))),
  'model-00002-of-00002.safetensors': serializeSafetensors(new Map<string, Tensor>(tensors.slice(half))),
};
const INDEX = Buffer.from(
  JSON.stringify({
    metadata: { total_size: Object.values(SHARDS).reduce((n, b) => n + b.length, 0) },
    weight_map: Object.fromEntries(tensors.map(([name], i) => [name, i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'])),
  }),
);

const server = new HubServer();
await server.start();
t.teardown(() => server.close());

const MLM_SHA = server.addRepo('deepmind/text-mlm', {
  files: { 'config.json': CONFIG, 'model.safetensors': WEIGHTS, 'pytorch_model.bin': Buffer.from('not needed'), 'README.md': Buffer.from('# hi') },
  lfs: ['model.safetensors', 'pytorch_model.bin'],
});
const SHARDED_SHA = server.addRepo('org/sharded', {
  files: {
    'config.json': CONFIG,
    'preprocessor_config.json': PREPROCESSOR,
    'model.safetensors.index.json': INDEX,
    ...SHARDS,
    'pytorch_model.bin': Buffer.from('not needed either'),
  },
  lfs: Object.keys(SHARDS),
});
server.addRepo('org/private', { files: { 'config.json': CONFIG, 'model.safetensors': WEIGHTS }, lfs: ['model.safetensors'], private: true });
server.addRepo('solo', { files: { 'config.json': CONFIG, 'pytorch_model.bin': Buffer.from('a pickle, pretend') } });
server.addRepo('org/no-config', { files: { 'model.safetensors': WEIGHTS } });
server.addRepo('org/no-weights', { files: { 'config.json': CONFIG } });
server.addRepo('org/missing-shard', {
  files: { 'config.json': CONFIG, 'model.safetensors.index.json': INDEX, 'model-00001-of-00002.safetensors': SHARDS['model-00001-of-00002.safetensors'] },
});
server.addRepo('org/evil-index', {
  files: {
    'config.json': CONFIG,
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ weight_map: { 'a.weight': '../../../evil.safetensors' } })),
    '../../../evil.safetensors': WEIGHTS,
  },
});
server.addRepo('org/plain', { files: { 'config.json': CONFIG, 'model.safetensors': WEIGHTS } });

async function freshCache(t: Test): Promise<string> {
  server.requests.length = 0;
  return tempDir(t, 'perceiver-hub-');
}

function repoDir(cache: string, id: string): string {
  return join(cache, `models--${id.split('/').join('--')}`);
}

t.test('isHubId', async (t) => {
  for (const id of ['deepmind/vision-perceiver-fourier', 'deepmind/language-perceiver', 'bert-base-uncased', 'org/name@main', 'org/name@v1.0', 'org/name@refs/pr/1', 'a/b', 'org/name@' + 'a'.repeat(40)]) {
    t.ok(isHubId(id), `${id} is a Hub id`);
  }
  for (const id of ['', '../x', './x', '/abs/path', 'a/b/c', 'org/..', '..', 'org/na..me', 'a\\b', 'org/name@', 'org/name@../x', 'org/name@a/../b', 'org--x/y', '-org/name', 'org/name-', 'org/na me', 'C:\\models\\x', 'org/name@.hidden', 'x'.repeat(97)]) {
    t.notOk(isHubId(id), `${JSON.stringify(id)} is not a Hub id`);
  }
  t.notOk(isHubId(fixtureDir('text-mlm')), 'an existing absolute folder is a path');
  const dir = await tempDir(t);
  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  await mkdir(join(dir, 'org', 'model'), { recursive: true });
  t.notOk(isHubId('org/model'), 'an existing relative folder that looks like an id is a path');
  t.ok(isHubId('org/other'), 'while one that does not exist is an id');
});

t.test('downloads what a checkpoint needs into the huggingface_hub cache layout', async (t) => {
  const cache = await freshCache(t);
  const events: HubProgressEvent[] = [];
  const snapshot = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url, progress: (e) => events.push(e) });
  const repo = repoDir(cache, 'deepmind/text-mlm');
  t.equal(snapshot, join(repo, 'snapshots', MLM_SHA), 'returns snapshots/{commit}');
  t.equal(readFileSync(join(repo, 'refs', 'main'), 'utf8'), MLM_SHA, 'refs/main holds the commit');
  t.same(readdirSync(snapshot).sort(), ['config.json', 'model.safetensors'], 'only config.json and the preferred weights');
  t.same(readdirSync(join(repo, 'blobs')).sort(), [sha256(CONFIG), sha256(WEIGHTS)].sort(), 'blobs named by ETag, no leftovers');
  for (const [name, data] of [['config.json', CONFIG], ['model.safetensors', WEIGHTS]] as const) {
    const pointer = join(snapshot, name);
    t.ok(lstatSync(pointer).isSymbolicLink(), `${name} is a symlink`);
    t.equal(readlinkSync(pointer), join('..', '..', 'blobs', sha256(data)), `${name} -> ../../blobs/{etag}`);
    t.ok(readFileSync(pointer).equals(data), `${name} content`);
  }
  t.equal(server.count('/deepmind/text-mlm/resolve/main/'), 0, 'files are asked for by commit, not by branch');
  t.equal(server.count(`/deepmind/text-mlm/resolve/${MLM_SHA}/README.md`), 0, 'README.md is not fetched');
  t.equal(server.count(`/deepmind/text-mlm/resolve/${MLM_SHA}/pytorch_model.bin`), 0, 'pytorch_model.bin is not fetched when safetensors exist');
  t.equal(server.count('/cdn/', 'GET'), 1, 'the weights came from the CDN after the redirect');
  t.equal(server.count('/cdn/', 'HEAD'), 0, 'the LFS redirect is not followed by HEAD');
  const weightEvents = events.filter((e) => e.file === 'model.safetensors');
  t.ok(weightEvents.length >= 2, 'progress events for the weights');
  t.same(weightEvents.at(-1), { file: 'model.safetensors', received: WEIGHTS.length, total: WEIGHTS.length }, 'last event is complete');
  t.ok(weightEvents.every((e, i) => i === 0 || e.received >= weightEvents[i - 1].received), 'received never goes back');
  t.ok(events.some((e) => e.file === 'config.json'), 'progress events for config.json');

  const loaded = await loadCheckpointWeights(snapshot);
  t.equal(loaded.tensors.size, tensors.length, 'the snapshot loads as a checkpoint folder');

  server.requests.length = 0;
  const again = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url });
  t.equal(again, snapshot, 'same snapshot the second time');
  t.same(server.requests.map((r) => r.url), [`/api/models/deepmind/text-mlm/revision/main`], 'the second call only asks for the commit');
});

t.test('sharded safetensors: the index, its shards and preprocessor_config.json', async (t) => {
  const cache = await freshCache(t);
  const snapshot = await snapshotDownload('org/sharded', { cacheDir: cache, endpoint: server.url });
  t.equal(snapshot, join(repoDir(cache, 'org/sharded'), 'snapshots', SHARDED_SHA));
  t.same(readdirSync(snapshot).sort(), ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'preprocessor_config.json']);
  const loaded = await loadCheckpointWeights(snapshot);
  t.equal(loaded.tensors.size, tensors.length, 'all tensors load from the shards');
  t.equal(loaded.files.length, 2);
  t.equal(server.count(`/org/sharded/resolve/${SHARDED_SHA}/pytorch_model.bin`), 0);
});

t.test('a repository without an org, with only pytorch_model.bin', async (t) => {
  const cache = await freshCache(t);
  const snapshot = await snapshotDownload('solo', { cacheDir: cache, endpoint: server.url });
  t.ok(snapshot.startsWith(join(cache, 'models--solo', 'snapshots')));
  t.same(readdirSync(snapshot).sort(), ['config.json', 'pytorch_model.bin']);
  const blobs = readdirSync(join(cache, 'models--solo', 'blobs'));
  t.equal(blobs.length, 2, 'non-LFS files are stored by their etag too');
});

t.test('revisions: @revision in the id, options.revision, a commit sha, unknown ones', async (t) => {
  const cache = await freshCache(t);
  const bySha = await snapshotDownload(`org/plain@${server.repos.get('org/plain')!.sha}`, { cacheDir: cache, endpoint: server.url });
  t.notOk(existsSync(join(repoDir(cache, 'org/plain'), 'refs')), 'no ref is written for a commit sha');
  const byMain = await snapshotDownload('org/plain@main', { cacheDir: cache, endpoint: server.url });
  t.equal(byMain, bySha);
  t.equal(await snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url, revision: 'main' }), bySha);
  await t.rejects(snapshotDownload('org/plain@main', { cacheDir: cache, endpoint: server.url, revision: 'dev' }), InvalidArgumentError, 'conflicting revisions');
  await t.rejects(snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url, revision: 'v9' }), { name: 'HubError', status: 404, message: /no revision "v9"/ });
});

t.test('resume: a cut download keeps .incomplete, the next call resumes with Range', async (t) => {
  const cache = await freshCache(t);
  server.cutOnce.set('model.safetensors', 200_000);
  t.teardown(() => server.cutOnce.clear());
  const err = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url }).catch((e: unknown) => e);
  t.type(err, HubError);
  t.match((err as Error).message, /interrupted after \d+ of \d+ bytes.*run again to resume/);
  t.ok((err as Error).cause, 'the cause is kept');
  const blobs = join(repoDir(cache, 'deepmind/text-mlm'), 'blobs');
  const partial = join(blobs, `${sha256(WEIGHTS)}.incomplete`);
  t.ok(existsSync(partial), '.incomplete is kept');
  const kept = lstatSync(partial).size;
  t.ok(kept > 0 && kept <= 200_000, `part of the file is there (${kept} bytes)`);
  t.notOk(existsSync(join(blobs, `${sha256(WEIGHTS)}.lock`)), 'the lock is released');
  t.notOk(existsSync(join(repoDir(cache, 'deepmind/text-mlm'), 'refs', 'main')), 'no ref for an incomplete snapshot');

  server.requests.length = 0;
  const events: HubProgressEvent[] = [];
  const snapshot = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url, progress: (e) => events.push(e) });
  const gets = server.requests.filter((r) => r.url.startsWith('/cdn/') && r.method === 'GET');
  t.equal(gets.length, 1);
  t.equal(gets[0].range, `bytes=${kept}-`, 'the server saw the Range header');
  t.equal(server.count(`/deepmind/text-mlm/resolve/${MLM_SHA}/config.json`), 0, 'config.json was already there');
  t.equal(events[0].received, kept, 'progress starts at what was already there');
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS), 'the resumed file is whole');
  t.notOk(existsSync(partial), '.incomplete is gone');
});

t.test('a server that ignores Range: the download starts over', async (t) => {
  const cache = await freshCache(t);
  server.cutOnce.set('model.safetensors', 100_000);
  await t.rejects(snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url }), { name: 'HubError', message: /interrupted/ });
  server.ignoreRange = true;
  t.teardown(() => (server.ignoreRange = false));
  server.requests.length = 0;
  const snapshot = await snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url });
  t.ok(server.requests.some((r) => r.range), 'a Range request was made');
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS), 'the 200 answer replaced the partial file');
});

t.test('an oversized partial file is thrown away, not resumed', async (t) => {
  const cache = await freshCache(t);
  const blobs = join(repoDir(cache, 'org/plain'), 'blobs');
  await mkdir(blobs, { recursive: true });
  // A stale partial file larger than the real one is thrown away, not resumed.
  await writeFile(join(blobs, `${sha256(WEIGHTS)}.incomplete`), Buffer.alloc(WEIGHTS.length + 10));
  const snapshot = await snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url });
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS));
  t.notOk(server.requests.some((r) => r.range), 'no Range request for an oversized partial file');
});

t.test('size and checksum checks: a mismatch fails and removes the download', async (t) => {
  const cache = await freshCache(t);
  const blobs = join(repoDir(cache, 'deepmind/text-mlm'), 'blobs');
  server.announceSize.set('model.safetensors', WEIGHTS.length + 1);
  await t.rejects(snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url }), { name: 'HubError', message: /size mismatch/ });
  server.announceSize.clear();
  t.same(readdirSync(blobs), [sha256(CONFIG)], 'nothing but config.json is left in blobs');

  server.corrupt.add('model.safetensors');
  t.teardown(() => server.corrupt.clear());
  await t.rejects(snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url }), { name: 'HubError', message: /checksum mismatch/ });
  t.same(readdirSync(blobs), [sha256(CONFIG)], 'the corrupt download is removed');
  t.notOk(existsSync(join(repoDir(cache, 'deepmind/text-mlm'), 'snapshots', MLM_SHA, 'model.safetensors')));
  server.corrupt.clear();
  const snapshot = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url });
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS), 'a later call succeeds');
});

t.test('private repositories: 401 without a token, success with options.token or HF_TOKEN; the token never goes to the CDN', async (t) => {
  const cache = await freshCache(t);
  const err = await snapshotDownload('org/private', { cacheDir: cache, endpoint: server.url }).catch((e: unknown) => e);
  t.type(err, HubError);
  t.equal((err as HubError).status, 401);
  t.equal((err as HubError).code, 'ERR_PERCEIVER_HUB');
  t.match((err as Error).message, /HF_TOKEN/);

  const wrong = await snapshotDownload('org/private', { cacheDir: cache, endpoint: server.url, token: 'hf_wrong' }).catch((e: unknown) => e);
  t.match(wrong, { status: 401, message: /token in use.*no access/ });
  t.notOk((wrong as Error).message.includes('hf_wrong'), 'the token is never in a message');

  server.requests.length = 0;
  const snapshot = await snapshotDownload('org/private', { cacheDir: cache, endpoint: server.url, token: server.token });
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS));
  const toHub = server.requests.filter((r) => !r.url.startsWith('/cdn/'));
  const toCdn = server.requests.filter((r) => r.url.startsWith('/cdn/'));
  t.ok(toHub.length > 0 && toHub.every((r) => r.authorization === `Bearer ${server.token}`), 'the Hub gets the token');
  t.ok(toCdn.length > 0 && toCdn.every((r) => r.authorization === undefined), 'the other host does not');

  const cache2 = await freshCache(t);
  withEnv(t, { HF_TOKEN: server.token });
  const viaEnv = await snapshotDownload('org/private', { cacheDir: cache2, endpoint: server.url });
  t.ok(existsSync(join(viaEnv, 'model.safetensors')), 'HF_TOKEN is used');
});

t.test('the token saved by `huggingface-cli login` under HF_HOME is used', async (t) => {
  const home = await freshCache(t);
  await writeFile(join(home, 'token'), `${server.token}\n`);
  withEnv(t, { HF_HOME: home });
  const snapshot = await snapshotDownload('org/private', { endpoint: server.url });
  t.ok(snapshot.startsWith(join(home, 'hub', 'models--org--private')));
});

t.test('404s and repositories that are not checkpoints', async (t) => {
  const cache = await freshCache(t);
  const opts = { cacheDir: cache, endpoint: server.url };
  await t.rejects(snapshotDownload('org/nothing-here', opts), { name: 'HubError', status: 404, message: /no repository "org\/nothing-here"/ });
  await t.rejects(snapshotDownload('org/no-config', opts), { name: 'HubError', message: /no config\.json/ });
  await t.rejects(snapshotDownload('org/no-weights', opts), { name: 'HubError', message: /no weights/ });
  await t.rejects(snapshotDownload('org/missing-shard', opts), { name: 'HubError', message: /names shard "model-00002-of-00002\.safetensors", which the repository does not hold/ });

  // A file the listing names but resolve cannot find.
  server.missing.add('model.safetensors');
  t.teardown(() => server.missing.clear());
  await t.rejects(snapshotDownload('org/plain', opts), { name: 'HubError', status: 404, message: /no file "model\.safetensors" in repository "org\/plain"/ });
});

t.test('hostile ids, revisions, shard names, shas and etags are refused', async (t) => {
  const cache = await freshCache(t);
  const opts = { cacheDir: cache, endpoint: server.url };
  for (const id of ['../etc', 'a/b/c', '/etc/passwd', 'org/..', 'org\\name', 'org--a/b', '', 'org/name@../../x']) {
    await t.rejects(snapshotDownload(id, opts), InvalidArgumentError, `id ${JSON.stringify(id)}`);
  }
  await t.rejects(snapshotDownload('org/plain', { ...opts, revision: '../../refs' }), InvalidArgumentError, 'revision with ..');
  await t.rejects(snapshotDownload('org/plain', { ...opts, revision: '/abs' }), InvalidArgumentError, 'absolute revision');
  await t.rejects(snapshotDownload(42 as unknown as string, opts), InvalidArgumentError, 'not a string');
  await t.rejects(snapshotDownload('org/plain', { ...opts, endpoint: 'file:///etc' }), InvalidArgumentError, 'file: endpoint');
  t.equal(server.requests.length, 0, 'nothing was requested for any of them');

  await t.rejects(snapshotDownload('org/evil-index', opts), { name: 'HubError', message: /not a plain file name/ }, 'shard name with ..');
  t.notOk(existsSync(join(cache, 'evil.safetensors')), 'nothing written outside the cache');
  t.notOk(server.requests.some((r) => r.url.includes('evil.safetensors')), 'the hostile shard was never requested');

  server.shaOverride = '../../../../tmp/x';
  t.teardown(() => (server.shaOverride = undefined));
  await t.rejects(snapshotDownload('org/plain', opts), { name: 'HubError', message: /no valid commit "sha"/ });
  server.shaOverride = undefined;

  server.etagOverride.set('config.json', '"../../escape"');
  t.teardown(() => server.etagOverride.clear());
  await t.rejects(snapshotDownload('org/plain', opts), { name: 'HubError', message: /ETag .* is not a plain name/ });
  t.notOk(existsSync(repoDir(cache, 'org/plain')), 'nothing was written for it');
});

t.test('offline: from the cache without a request, or a clear error', async (t) => {
  const cache = await freshCache(t);
  await t.rejects(snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url, offline: true }), {
    name: 'HubError',
    message: /not in the cache.*offline mode is on/,
  });
  t.equal(server.requests.length, 0);
  const online = await snapshotDownload('org/sharded', { cacheDir: cache, endpoint: server.url });

  server.requests.length = 0;
  t.equal(await snapshotDownload('org/sharded', { cacheDir: cache, endpoint: server.url, offline: true }), online, 'options.offline');
  withEnv(t, { HF_HUB_OFFLINE: '1' });
  t.equal(await snapshotDownload('org/sharded', { cacheDir: cache, endpoint: server.url }), online, 'HF_HUB_OFFLINE=1');
  t.equal(await resolveModelPath('org/sharded', { cacheDir: cache }), online, 'resolveModelPath offline');
  t.equal(await snapshotDownload(`org/sharded@${SHARDED_SHA}`, { cacheDir: cache }), online, 'a commit sha without a ref');
  await t.rejects(snapshotDownload('org/sharded@v2', { cacheDir: cache }), { name: 'HubError', message: /org\/sharded@v2 is not in the cache/ });
  t.equal(server.requests.length, 0, 'offline makes no request');
  t.equal(await snapshotDownload('org/sharded', { cacheDir: cache, offline: false, endpoint: server.url }), online, 'offline: false overrides the environment');
  t.equal(server.requests.length, 1);

  // A snapshot missing a shard is not whole.
  rmSync(join(online, 'model-00002-of-00002.safetensors'));
  await t.rejects(snapshotDownload('org/sharded', { cacheDir: cache }), { name: 'HubError', message: /offline/ });
});

t.test('unreachable Hub: HubError with the cause, or the whole cached snapshot', async (t) => {
  const cache = await freshCache(t);
  const dead = new HubServer();
  await dead.start();
  const deadUrl = dead.url;
  await dead.close();
  const err = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: deadUrl }).catch((e: unknown) => e);
  t.type(err, HubError);
  t.equal((err as HubError).status, undefined);
  t.match((err as Error).message, /cannot reach the Hugging Face Hub/);
  t.ok((err as Error).cause, 'with the cause');

  const snapshot = await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url });
  t.equal(await snapshotDownload('deepmind/text-mlm', { cacheDir: cache, endpoint: deadUrl }), snapshot, 'falls back to the cache');
});

t.test('HF_HOME, HF_HUB_CACHE and HF_ENDPOINT are honoured', async (t) => {
  const home = await freshCache(t);
  withEnv(t, { HF_HOME: home, HF_ENDPOINT: `${server.url}/` });
  const snapshot = await snapshotDownload('org/plain');
  t.equal(snapshot, join(home, 'hub', 'models--org--plain', 'snapshots', server.repos.get('org/plain')!.sha));
  t.ok(server.requests.length > 0, 'HF_ENDPOINT was used');

  const hubCache = await tempDir(t);
  withEnv(t, { HF_HUB_CACHE: hubCache });
  const other = await snapshotDownload('org/plain');
  t.ok(other.startsWith(join(hubCache, 'models--org--plain')), 'HF_HUB_CACHE wins over HF_HOME');

  withEnv(t, { HF_ENDPOINT: 'not a url' });
  await t.rejects(snapshotDownload('org/plain'), { name: 'InvalidArgumentError', argument: 'HF_ENDPOINT' });
});

t.test('a renamed repository: relative redirects are followed', async (t) => {
  const cache = await freshCache(t);
  server.renamed.set('org/old-name', 'org/plain');
  t.teardown(() => server.renamed.clear());
  const snapshot = await snapshotDownload('org/old-name', { cacheDir: cache, endpoint: server.url, token: 'hf_x' });
  t.ok(snapshot.startsWith(join(repoDir(cache, 'org/old-name'), 'snapshots')), 'cached under the name asked for');
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS));
  t.ok(server.requests.filter((r) => r.url.startsWith('/org/plain/')).every((r) => r.authorization === 'Bearer hf_x'), 'same host: the token follows');
});

t.test('concurrent downloads of one repository fetch each file once', async (t) => {
  const cache = await freshCache(t);
  const opts = { cacheDir: cache, endpoint: server.url };
  const [a, b, c] = await Promise.all([snapshotDownload('org/sharded', opts), snapshotDownload('org/sharded', opts), snapshotDownload('org/sharded', opts)]);
  t.equal(a, b);
  t.equal(b, c);
  t.equal(server.count('/cdn/', 'GET'), 2, 'each shard once');
  t.equal((await loadCheckpointWeights(a)).tensors.size, tensors.length);
  const blobs = readdirSync(join(repoDir(cache, 'org/sharded'), 'blobs'));
  t.notOk(blobs.some((f) => f.endsWith('.lock') || f.endsWith('.incomplete') || f.endsWith('.tmp')), 'no leftovers');
});

t.test('locks: another live holder is waited for, a dead one is taken over', async (t) => {
  const cache = await freshCache(t);
  const blobs = join(repoDir(cache, 'org/plain'), 'blobs');
  await mkdir(blobs, { recursive: true });
  const lock = join(blobs, `${sha256(WEIGHTS)}.lock`);
  const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
  await writeFile(lock, `${deadPid}@${hostname()}`);
  const first = await snapshotDownload('org/plain', { cacheDir: cache, endpoint: server.url });
  t.ok(readFileSync(join(first, 'model.safetensors')).equals(WEIGHTS), 'a lock left by a dead process is taken over');
  t.notOk(existsSync(lock));

  const cache2 = await freshCache(t);
  const blobs2 = join(repoDir(cache2, 'org/plain'), 'blobs');
  await mkdir(blobs2, { recursive: true });
  const lock2 = join(blobs2, `${sha256(WEIGHTS)}.lock`);
  await writeFile(lock2, `${process.pid}@${hostname()}`);
  let released = 0;
  setTimeout(() => {
    released = Date.now();
    rmSync(lock2);
  }, 400);
  const second = await snapshotDownload('org/plain', { cacheDir: cache2, endpoint: server.url });
  t.ok(released > 0, 'waited for the holder to release the lock');
  t.ok(readFileSync(join(second, 'model.safetensors')).equals(WEIGHTS));
});

t.test('progress: true writes one updating line per file on a TTY, nothing otherwise', async (t) => {
  const stderr = process.stderr as NodeJS.WriteStream & { isTTY: boolean };
  const wasTTY = stderr.isTTY;
  const written: string[] = [];
  const write = stderr.write;
  stderr.write = ((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  }) as typeof stderr.write;
  t.teardown(() => {
    stderr.write = write;
    stderr.isTTY = wasTTY;
  });

  stderr.isTTY = false;
  await snapshotDownload('org/plain', { cacheDir: await freshCache(t), endpoint: server.url, progress: true });
  t.same(written, [], 'nothing when stderr is not a TTY');

  stderr.isTTY = true;
  await snapshotDownload('org/plain', { cacheDir: await freshCache(t), endpoint: server.url, progress: false });
  t.same(written, [], 'nothing with progress: false');
  await snapshotDownload('org/plain', { cacheDir: await freshCache(t), endpoint: server.url, progress: true });
  stderr.write = write;
  const text = written.join('');
  t.match(text, /\r\x1b\[2Kmodel\.safetensors .*100\.0%.*\/s/, 'bytes, percent and rate');
  t.equal(text.split('\n').filter(Boolean).length, 2, 'one line per file (config.json, model.safetensors)');
  t.ok(text.split('\n').filter(Boolean).every((line) => line.startsWith('\r')), 'each line updates in place');
});

t.test('resolveModelPath: a local folder as is, a Hub id downloaded, anything else refused', async (t) => {
  const cache = await freshCache(t);
  const local = fixtureDir('text-mlm');
  t.equal(await resolveModelPath(local, { cacheDir: cache, endpoint: server.url }), local);
  t.equal(server.requests.length, 0, 'a local folder makes no request');
  const snapshot = await resolveModelPath('deepmind/text-mlm', { cacheDir: cache, endpoint: server.url });
  t.equal(realpathSync(join(snapshot, 'config.json')), join(realpathSync(repoDir(cache, 'deepmind/text-mlm')), 'blobs', sha256(CONFIG)));
  await t.rejects(resolveModelPath('./no/such/folder', { cacheDir: cache, endpoint: server.url }), { name: 'InvalidArgumentError', message: /no folder/ });
  await t.rejects(resolveModelPath('', {}), InvalidArgumentError);
  await t.rejects(resolveModelPath('org/nothing-here', { cacheDir: cache, endpoint: server.url }), { name: 'HubError', status: 404, message: /no local folder/ });
});
