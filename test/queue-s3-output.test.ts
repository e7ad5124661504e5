/**
 * Queue mode into an S3 prefix (s3rver on 127.0.0.1): the workers write their parts as objects (no
 * shared folder for the output), one is SIGKILLed mid-shard and the other takes the shard over:
 * every item exactly once; once the queue holds no shard of the output, the enqueuer merges the
 * parts into one (crash-safely: lib/batch/compaction.ts); an output prefix a worker is not allowed
 * fails the shard for good.
 */
import t, { type Test } from 'tap';
import { readEmbeddings } from '../lib/batch/job.js';
import { RemoteReader } from '../lib/io/remote.js';
import { partStore, useS3ForOutputs } from '../lib/batch/store.js';
import { join } from 'node:path';
import { assertExactlyOnce, MODEL, ROOTS, runCli, startCli, textFiles, twoWorkersOneKilled } from './helpers/queue-cli.js';
import { REPO } from './helpers/fixtures.js';
import { runNodeScript } from './helpers/child.js';
import { startRedis } from './helpers/redis.js';
import { startS3 } from './helpers/s3.js';

/** A local S3 server with a bucket "out", which this process's outputs (partStore, readEmbeddings) reach until the test ends. */
async function s3Output(t: Test): Promise<Awaited<ReturnType<typeof startS3>>> {
  const s3 = await startS3(t);
  await s3.createBucket('out');
  const reader = new RemoteReader({ s3Endpoint: s3.endpoint });
  useS3ForOutputs(reader);
  t.teardown(async () => {
    useS3ForOutputs(undefined);
    await reader.close();
  });
  return s3;
}

const redis = await startRedis(t);

t.test('s3:// output: workers write objects, one is killed, the enqueuer merges the parts at the end', async (t) => {
  const s3 = await s3Output(t);
  const inputDir = await textFiles(t, 240);
  const out = 's3://out/embeddings/run';
  const enqueue = ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--shard-size', '60', '--batch-size', '1', inputDir];
  const { survivor, enqueuer } = await twoWorkersOneKilled(t, redis.url, ['--allow-url-prefix', 's3://out/embeddings/', '--s3-endpoint', s3.endpoint], enqueue);
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

t.test('a merge of queue output on S3 killed (SIGKILL) before and after its commit: rows once; the next enqueuer finishes it', async (t) => {
  const s3 = await s3Output(t);
  const inputDir = await textFiles(t, 80);
  const out = 's3://out/merge';
  const workerArgs = ['worker', '--queue', redis.url, ...ROOTS, '--allow-url-prefix', 's3://out/', '--s3-endpoint', s3.endpoint];
  const worker = startCli(t, workerArgs);
  await worker.waitFor(/taking shards from/);
  const enqueue = ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--shard-size', '20'];
  const first = await runCli(t, [...enqueue, '--part-size', '0', inputDir]);
  t.equal(first.code, 0, 'the shards are written, not merged (--part-size 0)');
  t.equal((await partStore(out).list()).filter((o) => o.name.startsWith('shard-')).length, 4, 'four shard parts');

  // The merge the enqueuer runs (compactFolder), in a process that kills itself at a step.
  const script = `
    const [dist, endpoint, out, stopAt] = process.argv.slice(1);
    const { compactFolder } = await import(dist + '/lib/batch/compaction.js');
    const { useS3ForOutputs } = await import(dist + '/lib/batch/store.js');
    const { RemoteReader } = await import(dist + '/lib/io/remote.js');
    useS3ForOutputs(new RemoteReader({ s3Endpoint: endpoint }));
    await compactFolder(out, 1 << 30, { onStep: (step) => { if (step === stopAt) process.kill(process.pid, 'SIGKILL'); } });
    console.log('not killed');`;
  // Killed before its commit (the next merge drops the intent and merges again), then after it (the
  // sources are still there, left out by the intent: the next run removes them). Every step on S3,
  // sources-removed included, is stopped in test/s3-output.test.ts.
  for (const stopAt of ['intent', 'committed']) {
    const killed = await runNodeScript(script, [join(REPO, 'dist'), s3.endpoint, out, stopAt], 30_000);
    t.equal(killed.signal, 'SIGKILL', `the merge was killed at ${stopAt}${killed.stdout ? ` (${killed.stdout.trim()})` : ''}`);
    await assertExactlyOnce(t, await readEmbeddings(out), inputDir);
  }
  const left = (await partStore(out).list()).map((o) => o.name);
  t.ok(left.some((n) => n.startsWith('.compact-')) && left.some((n) => n.startsWith('shard-')), `the killed merge left its intent and sources (${left.join(' ')})`);
  const rerun = await runCli(t, [...enqueue, inputDir]);
  t.equal(rerun.code, 0, `the rerun exits 0 (${rerun.stderr.trim().split('\n').at(-1)})`);
  t.match(rerun.stderr, /80 items: 0 written by 0 shards \(0 queued now\), 80 already done/, 'nothing to queue');
  await assertExactlyOnce(t, await readEmbeddings(out), inputDir);
  const names = (await partStore(out).list()).map((o) => o.name);
  t.same(names.map((n) => n.replace(/-.*/, '')), ['compact'], `one merged part, no intent, no source left (${names.join(' ')})`);
  worker.child.kill('SIGTERM');
  t.equal((await worker.exited).code, 0);
});
