/**
 * Queue mode into an S3 prefix (s3rver on 127.0.0.1): the workers write their parts as objects (no
 * shared folder for the output), one is SIGKILLed mid-shard and the other takes the shard over:
 * every item exactly once; once the queue holds no shard of the output, the enqueuer merges the
 * parts into one (crash-safely: lib/batch/compaction.ts); an output prefix a worker is not allowed
 * fails the shard for good.
 */
import t from 'tap';
import { readEmbeddings } from '../lib/batch/job.js';
import { RemoteReader } from '../lib/io/remote.js';
import { partStore, useS3ForOutputs } from '../lib/batch/store.js';
import { assertExactlyOnce, MODEL, runCli, textFiles, twoWorkersOneKilled } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';
import { startS3 } from './helpers/s3.js';

const redis = await startRedis(t);

t.test('s3:// output: workers write objects, one is killed, the enqueuer merges the parts at the end', async (t) => {
  const s3 = await startS3(t);
  await s3.createBucket('out');
  const reader = new RemoteReader({ s3Endpoint: s3.endpoint });
  useS3ForOutputs(reader);
  t.teardown(async () => {
    useS3ForOutputs(undefined);
    await reader.close();
  });
  const inputDir = await textFiles(t, 240);
  const out = 's3://out/embeddings/run';
  const enqueue = ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--shard-size', '60', '--batch-size', '1', inputDir];
  const { survivor, enqueuer } = await twoWorkersOneKilled(t, redis.url, ['--allow-url-prefix', 's3://out/embeddings/', '--s3-endpoint', s3.endpoint], enqueue, 500);
  t.match(enqueuer.stderr(), /every shard of s3:\/\/out\/embeddings\/run is done: merging its small parts/, 'the enqueuer says it merges');
  t.match(enqueuer.stderr(), /240 items: 240 written by 4 shards .* \(1 compacted part\)/, 'into one part');
  await assertExactlyOnce(t, await readEmbeddings(out), inputDir);
  const names = (await partStore(out).list()).map((o) => o.name);
  t.same(names.map((n) => n.replace(/-.*/, '')), ['compact'], `one compacted part and nothing else in the prefix (${names.join(' ')})`);

  const again = await runCli(t, enqueue);
  t.equal(again.code, 0);
  t.match(again.stderr, /240 items: 0 written by 0 shards \(0 queued now\), 240 already done/, 'a rerun finds every item done');
  t.same((await partStore(out).list()).map((o) => o.name), names, 'and leaves the prefix as it was');

  // An output prefix the workers are not allowed: the shard fails for good, nothing is written.
  const refused = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', 's3://out/elsewhere', '--s3-endpoint', s3.endpoint, '--shard-size', '500', inputDir]);
  t.equal(refused.code, 1, 'an output outside the allowed prefixes: exit 1');
  t.match(refused.stderr.trim().split('\n').at(-1)!, /outDir "s3:\/\/out\/elsewhere\/" is outside this worker's allowed roots/, 'naming it');
  t.same((await partStore('s3://out/elsewhere').list()).filter((o) => o.name.endsWith('.parquet')), [], 'no part there');
  survivor.child.kill('SIGTERM');
  t.equal((await survivor.exited).code, 0);
});
