/**
 * Queue mode over S3 keys: the enqueuer lists an s3:// prefix (s3rver on 127.0.0.1), workers read
 * the objects themselves (no shared folder for the inputs), and a worker takes only the URL
 * prefixes it is given (--allow-url-prefix): a shard naming another bucket, a `..` key or an http
 * URL fails for good with the reason, and the worker carries on.
 */
import t from 'tap';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readEmbeddings } from '../lib/batch/job.js';
import { itemId } from '../lib/index.js';
import { FIXTURES, tempDir } from './helpers/fixtures.js';
import { MODEL, runCli, startCli } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';
import { startS3 } from './helpers/s3.js';

const redis = await startRedis(t);

t.test('workers read S3 keys under their allowed prefixes; other URLs fail the shard for good', async (t) => {
  const s3 = await startS3(t);
  await s3.createBucket('media');
  await s3.createBucket('private');
  const keys = Array.from({ length: 9 }, (_, i) => `ok/doc-${i}.txt`);
  for (const key of keys) await s3.put('media', key, `text of ${key}`);
  await s3.put('private', 'secret.txt', 'not for this worker');
  const root = await tempDir(t, 'perceiver-s3-queue-');

  const worker = startCli(t, ['worker', '--queue', redis.url, '--allow-root', root, '--allow-root', FIXTURES, '--allow-url-prefix', 's3://media/ok/', '--s3-endpoint', s3.endpoint]);
  await worker.waitFor(/taking shards from/);
  const out = join(root, 'out');
  const run = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--shard-size', '4', 's3://media/ok/']);
  t.equal(run.code, 0, `the enqueuer exits 0 (${run.stderr.trim().split('\n').at(-1)})`);
  t.match(run.stderr, /9 items: 9 written by 3 shards/);
  const rows = await readEmbeddings(out);
  t.same(rows.map((r) => r.path).sort(), keys.map((k) => `s3://media/${k}`).sort(), 'every key exactly once');
  t.ok(rows.every((r) => r.id === itemId(r.path)), 'ids are the hashes of the URLs');

  const cases: [string, string, RegExp][] = [
    ['another bucket', 's3://private/secret.txt', /items\[0\]\.path "s3:\/\/private\/secret\.txt" is outside this worker's allowed roots/],
    ['a .. key', 's3://media/ok/../../private/secret.txt', /items\[0\]\.path "s3:\/\/media\/ok\/\.\.\/\.\.\/private\/secret\.txt" is outside/],
    ['an http URL', 'http://127.0.0.1:9/x.txt', /items\[0\]\.path "http:\/\/127\.0\.0\.1:9\/x\.txt" is outside/],
  ];
  for (const [what, input, reason] of cases) {
    // Named in a manifest: URLs there are taken as written (an s3:// INPUT would be listed as a prefix).
    const list = join(root, `${what.replace(/\W/g, '')}.txt`);
    await writeFile(list, `${input}\n`);
    const refused = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', join(root, `out-${what.replace(/\W/g, '')}`), '--s3-endpoint', s3.endpoint, '--manifest', list]);
    t.equal(refused.code, 1, `${what}: the enqueuer exits 1`);
    t.match(refused.stderr.trim().split('\n').at(-1)!, reason, `${what}: the job's failure says which URL`);
  }
  t.equal(worker.child.exitCode, null, 'the worker is still running');
  t.same((await readdir(root)).filter((n) => n.startsWith('out-')).length, 3, 'the refused runs\' folders exist (made by the enqueuer)');
  for (const name of (await readdir(root)).filter((n) => n.startsWith('out-'))) t.same((await readdir(join(root, name))).filter((n) => n.endsWith('.parquet')), [], `${name}: no part written`);
  worker.child.kill('SIGTERM');
  t.equal((await worker.exited).code, 0);

  const badPrefix = await runCli(t, ['worker', '--queue', redis.url, '--allow-root', root, '--allow-url-prefix', 'ftp://x/']);
  t.equal(badPrefix.code, 2);
  t.match(badPrefix.stderr, /--allow-url-prefix/);
});
