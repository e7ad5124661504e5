/**
 * The Hub client against a broken or hostile endpoint (test/helpers/hub-server.ts with an
 * intercept): answers too large to parse, endless bodies, servers that never answer or stall
 * mid-download. Each ends in a HubError, fast and with bounded memory; timeouts are set short here.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { HubError, MAX_HUB_JSON_BYTES, snapshotDownload } from '../lib/hub/download.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { HubServer, sha256 } from './helpers/hub-server.js';

const HF_VARS = ['HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME', 'HF_HUB_ETAG_TIMEOUT', 'HF_HUB_DOWNLOAD_TIMEOUT'];
const savedEnv = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
for (const k of HF_VARS) delete process.env[k];
t.teardown(() => {
  for (const k of HF_VARS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
});

const CONFIG = readFileSync(join(fixtureDir('text-mlm'), 'config.json'));
const WEIGHTS = readFileSync(join(fixtureDir('text-mlm'), 'model.safetensors'));
const MiB = 2 ** 20;

const server = new HubServer();
await server.start();
t.teardown(() => server.close());
const SHA = server.addRepo('org/model', { files: { 'config.json': CONFIG, 'model.safetensors': WEIGHTS }, lfs: ['model.safetensors'] });

/** Writes `chunk` until `limit` bytes went out or the client went away, respecting backpressure (the server's own memory stays flat). */
function pump(res: ServerResponse, chunk: Buffer, limit = Infinity): void {
  let sent = 0;
  const more = (): void => {
    while (!res.destroyed && sent < limit) {
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once('drain', more);
    }
    if (!res.destroyed) res.end();
  };
  more();
}

/** Answers the requests whose path matches with `answer`, everything else normally, for one test. */
function misbehave(t: Test, match: RegExp, answer: (req: IncomingMessage, res: ServerResponse) => void): void {
  server.intercept = (req, res) => {
    if (!match.test(new URL(req.url ?? '/', 'http://x').pathname)) return false;
    answer(req, res);
    return true;
  };
  t.teardown(() => {
    server.intercept = undefined;
  });
}

interface Outcome {
  error: unknown;
  ms: number;
  /** Largest growth of the process's resident memory while the call ran, in MiB. */
  peakMiB: number;
}

/** Runs `call`, sampling memory every 5 ms. */
async function measure(call: () => Promise<unknown>): Promise<Outcome> {
  (globalThis as { gc?: () => void }).gc?.();
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 5);
  const start = performance.now();
  let error: unknown;
  try {
    await call();
  } catch (err) {
    error = err;
  }
  const ms = performance.now() - start;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { error, ms, peakMiB: (peak - base) / MiB };
}

function expectHubError(t: Test, what: string, o: Outcome, message: RegExp, maxMs = 2000): void {
  t.ok(o.error instanceof HubError, `${what}: HubError (got ${(o.error as Error)?.name}: ${(o.error as Error)?.message})`);
  t.match((o.error as Error)?.message ?? '', message, `${what}: message`);
  t.ok(o.ms < maxMs, `${what}: ${o.ms.toFixed(0)} ms`);
  t.ok(o.peakMiB < 200, `${what}: memory grew by at most ${o.peakMiB.toFixed(0)} MiB`);
}

const API = /^\/api\/models\//;
const fast = { timeoutMs: 300, downloadIdleTimeoutMs: 300, downloadTimeoutMs: 5000 };

t.test('the revision lookup: an answer of 300 MiB, declared or not, and an endless one are cut at the cap', async (t) => {
  const cacheDir = await tempDir(t);
  // Time enough to read the 16 MiB up to the cap on a loaded machine: the cap, not the timeout, ends these.
  const fast = { timeoutMs: 10_000 };
  const filler = Buffer.alloc(MiB, 0x20);
  const head = Buffer.from(`{"sha": "${SHA}", "siblings": [], "pad": "`);

  misbehave(t, API, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(300 * MiB) });
    res.write(head);
    pump(res, filler, 300 * MiB);
  });
  const declared = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'declared 300 MiB', declared, new RegExp(`answer is ${300 * MiB} bytes, more than the ${MAX_HUB_JSON_BYTES} allowed`));

  misbehave(t, API, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no length announced
    res.write(head);
    pump(res, filler, 300 * MiB);
  });
  const undeclared = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, '300 MiB without a length', undeclared, new RegExp(`answer is more than ${MAX_HUB_JSON_BYTES} bytes`));

  misbehave(t, API, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(head);
    pump(res, filler);
  });
  const endless = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'endless body', endless, /more than 16777216 bytes/);
});

t.test('servers that never answer, or stop halfway through an answer, time out', async (t) => {
  const cacheDir = await tempDir(t);
  misbehave(t, API, () => {}); // accepts the request, never answers
  const silent = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'no answer', silent, /looking up org\/model@main: no complete answer from the Hub .* within 300 ms \(options\.timeoutMs/);

  misbehave(t, API, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(`{"sha": "${SHA}", `); // and nothing more
  });
  const stalled = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'answer stalls', stalled, /no complete answer .* within 300 ms/);

  // HEAD of a file.
  misbehave(t, /\/resolve\//, (req, res) => {
    if (req.method !== 'HEAD') res.destroy();
  });
  const head = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'HEAD never answered', head, /org\/model\/config\.json: no complete answer .* within 300 ms/);

  // HF_HUB_ETAG_TIMEOUT (seconds) is the default, as in huggingface_hub.
  misbehave(t, API, () => {});
  process.env.HF_HUB_ETAG_TIMEOUT = '0.25';
  t.teardown(() => void delete process.env.HF_HUB_ETAG_TIMEOUT);
  const fromEnv = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url }));
  expectHubError(t, 'HF_HUB_ETAG_TIMEOUT', fromEnv, /within 250 ms/);
});

t.test('a lookup that times out falls back to a whole cached snapshot, as an unreachable Hub does', async (t) => {
  const cacheDir = await tempDir(t);
  const snapshot = await snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast });
  misbehave(t, API, () => {});
  const start = performance.now();
  t.equal(await snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }), snapshot);
  t.ok(performance.now() - start < 2000, 'after the timeout');
});

t.test('downloads: a stall is an idle timeout, a trickle the total timeout; what arrived is kept and resumed', async (t) => {
  const cacheDir = await tempDir(t);
  const blob = join(cacheDir, 'models--org--model', 'blobs', sha256(WEIGHTS));
  misbehave(t, /^\/cdn\//, (req, res) => {
    res.writeHead(200, { 'content-length': String(WEIGHTS.length), etag: `"${sha256(WEIGHTS)}"` });
    if (req.method === 'HEAD') return void res.end();
    res.write(WEIGHTS.subarray(0, 1000)); // then nothing
  });
  const stalled = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'stalled download', stalled, /model\.safetensors: the download was stopped because the Hub sent nothing for 300 ms \(options\.downloadIdleTimeoutMs/);
  t.equal(statSync(`${blob}.incomplete`).size, 1000, 'the 1000 bytes that came are kept');

  misbehave(t, /^\/cdn\//, (req, res) => {
    res.writeHead(200, { 'content-length': String(WEIGHTS.length), etag: `"${sha256(WEIGHTS)}"` });
    if (req.method === 'HEAD') return void res.end();
    let at = 0;
    const drip = setInterval(() => {
      if (res.destroyed || at >= WEIGHTS.length) return void clearInterval(drip);
      res.write(WEIGHTS.subarray(at, at + 10));
      at += 10;
    }, 20);
    res.on('close', () => clearInterval(drip));
  });
  server.ignoreRange = true; // the drip starts over; the point is the total timeout
  t.teardown(() => void (server.ignoreRange = false));
  const trickle = await measure(() => snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast, downloadTimeoutMs: 400 }));
  expectHubError(t, 'trickling download', trickle, /the download was stopped because it took more than 400 ms in all \(options\.downloadTimeoutMs\)/);

  server.intercept = undefined;
  server.ignoreRange = false;
  const snapshot = await snapshotDownload('org/model', { cacheDir, endpoint: server.url, ...fast });
  t.ok(readFileSync(join(snapshot, 'model.safetensors')).equals(WEIGHTS), 'a later call completes it');
  t.notOk(existsSync(`${blob}.incomplete`));
});

t.test('JSON files announced larger than their cap are refused before downloading', async (t) => {
  const cacheDir = await tempDir(t);
  const repo = 'org/huge-index';
  server.addRepo(repo, { files: { 'config.json': CONFIG, 'model.safetensors.index.json': Buffer.from('{}'), 'model.safetensors': WEIGHTS } });
  server.announceSize.set('model.safetensors.index.json', 300 * MiB);
  t.teardown(() => void server.announceSize.delete('model.safetensors.index.json'));
  const before = server.count(`/${repo}/resolve/`, 'GET');
  const o = await measure(() => snapshotDownload(repo, { cacheDir, endpoint: server.url, ...fast }));
  expectHubError(t, 'index announced at 300 MiB', o, /model\.safetensors\.index\.json: the Hub announces 314572800 bytes, more than the 16777216/);
  t.equal(server.count(`/${repo}/resolve/`, 'GET') - before, 1, 'only config.json was downloaded');
});

t.test('timeouts must be positive numbers of milliseconds (or seconds in the environment)', async (t) => {
  const cacheDir = await tempDir(t);
  for (const bad of [0, -1, Number.NaN, '10', 2 ** 31]) {
    await t.rejects(snapshotDownload('org/model', { cacheDir, endpoint: server.url, timeoutMs: bad as number }), { name: InvalidArgumentError.name, argument: 'options.timeoutMs' });
  }
  await t.rejects(snapshotDownload('org/model', { cacheDir, endpoint: server.url, downloadIdleTimeoutMs: -5 }), { name: InvalidArgumentError.name, argument: 'options.downloadIdleTimeoutMs' });
  await t.rejects(snapshotDownload('org/model', { cacheDir, endpoint: server.url, downloadTimeoutMs: 0 }), { name: InvalidArgumentError.name, argument: 'options.downloadTimeoutMs' });
  process.env.HF_HUB_DOWNLOAD_TIMEOUT = 'soon';
  t.teardown(() => void delete process.env.HF_HUB_DOWNLOAD_TIMEOUT);
  await t.rejects(snapshotDownload('org/model', { cacheDir, endpoint: server.url }), { name: InvalidArgumentError.name, argument: 'HF_HUB_DOWNLOAD_TIMEOUT' });
});
