/**
 * The BullMQ scale-out, end to end with real parts: a real redis-server, real text files, workers
 * as child processes (`perceiver-io worker`), the enqueuer (`perceiver-io embed --queue`), and the
 * Parquet parts read back. Every item must land exactly once, also when a worker is SIGKILLed in
 * the middle of a shard.
 */
import t from 'tap';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AutoModel } from '../lib/auto.js';
import { readEmbeddings } from '../lib/batch/job.js';
import { createMediaInputBuilder } from '../lib/media/model_inputs.js';
import { Tensor } from '../lib/tensor.js';
import { fixtureDir, relativeError, tempDir } from './helpers/fixtures.js';
import { assertExactlyOnce, MODEL, ROOTS, runCli, startCli, textFiles } from './helpers/queue-cli.js';
import { freePort, startRedis } from './helpers/redis.js';

const redis = await startRedis(t);

t.test('two workers: every item once, embeddings equal to a local model.embed; a rerun does nothing', async (t) => {
  const inputDir = await textFiles(t, 60);
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'embeddings');
  const workers = [0, 1].map(() => startCli(t, ['worker', '--queue', redis.url, ...ROOTS]));
  await Promise.all(workers.map((w) => w.waitFor(/taking shards from/)));

  // --part-size 0: the parts stay as the shards wrote them (the merge at the end is tested below).
  const run = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '7', '--batch-size', '4', '--part-size', '0', inputDir]);
  t.equal(run.code, 0, `enqueuer exits 0 (stderr: ${run.stderr.trim()})`);
  t.match(run.stderr, /9\/9 shards done/, 'progress reaches 9/9 shards');
  t.match(run.stderr, /60 items: 60 written by 9 shards \(9 queued now\), 0 already done, 0 unreadable/, 'summary');

  const rows = await readEmbeddings(out);
  await assertExactlyOnce(t, rows, inputDir);
  t.equal((await readdir(out)).filter((name) => name.endsWith('.parquet')).length, 9, 'one part per shard');

  // The same embeddings as this process gets from the same files with model.embed.
  const model = await AutoModel.fromPretrained(MODEL);
  t.teardown(() => model.dispose());
  const builder = createMediaInputBuilder(model);
  let worst = 0;
  for (const row of rows) {
    const call = builder.collate([await builder.load(row.path)]);
    const local = await model.embed(call.inputs, { attentionMask: call.attentionMask });
    t.equal(row.embedding.length, local.shape[1], 'embedding width');
    worst = Math.max(worst, relativeError(new Tensor('float32', [1, row.embedding.length], row.embedding), local));
  }
  t.ok(worst <= 1e-6, `worst relative error against local model.embed ${worst.toExponential(2)} <= 1e-6`);

  // A rerun on the finished output queues nothing, rewrites nothing and exits 0.
  const before = await Promise.all((await readdir(out)).map(async (name) => `${name}@${(await stat(join(out, name))).mtimeMs}`));
  const again = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '7', '--part-size', '0', inputDir]);
  t.equal(again.code, 0, `rerun exits 0 (stderr: ${again.stderr.trim()})`);
  t.match(again.stderr, /60 items: 0 written by 0 shards \(0 queued now\), 60 already done/, 'rerun: all already done');
  const after = await Promise.all((await readdir(out)).map(async (name) => `${name}@${(await stat(join(out, name))).mtimeMs}`));
  t.same(after.sort(), before.sort(), 'rerun leaves the parts untouched');

  // A shard that fails for good: classify with a checkpoint that has no labels.
  const classifyOut = join(await tempDir(t, 'perceiver-queue-out-'), 'labels');
  const failing = await runCli(t, ['classify', '--queue', redis.url, '--model', fixtureDir('text-mlm'), '--out', classifyOut, '--shard-size', '100', inputDir]);
  t.equal(failing.code, 1, 'failed shards: exit 1');
  const lastLine = failing.stderr.trim().split('\n').at(-1)!;
  t.match(lastLine, /^perceiver-io: 1 of 1 shards failed permanently \(first: shard-[0-9a-f]+: .*classification checkpoint/, `one-line reason: ${lastLine}`);

  // SIGTERM: an idle worker closes its connections and exits 0.
  for (const worker of workers) worker.child.kill('SIGTERM');
  for (const worker of workers) {
    const { code } = await worker.exited;
    t.equal(code, 0, 'worker exits 0 on SIGTERM');
    t.match(worker.stderr(), /stopped/);
  }
  const shardsDone = workers.map((w) => (w.stderr().match(/written, \d+ failed/g) ?? []).length);
  t.equal(shardsDone[0]! + shardsDone[1]!, 9, `the two workers did the 9 embed shards between them (${shardsDone.join(' + ')})`);
});

t.test('a worker SIGKILLed mid-shard: the other finishes it, every item once', async (t) => {
  // Slow enough shards: about a second each on the CPU (batches of one item).
  const inputDir = await textFiles(t, 4000);
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'labels');
  // A short lock, so the dead worker's shard is taken over within a few seconds.
  const workerArgs = ['worker', '--queue', redis.url, '--lock-duration-ms', '2000', ...ROOTS];
  const victim = startCli(t, workerArgs);
  const survivor = startCli(t, workerArgs);
  await Promise.all([victim, survivor].map((w) => w.waitFor(/taking shards from/)));

  const enqueuer = startCli(t, ['classify', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '1000', '--batch-size', '1', inputDir]);
  const [, shardId] = await victim.waitFor(/shard (shard-[0-9a-f]+) \(1000 items, attempt 1\): started/);
  victim.child.kill('SIGKILL');
  const killed = await victim.exited;
  t.equal(killed.signal, 'SIGKILL', 'the victim was killed');
  t.notMatch(victim.stderr(), new RegExp(`${shardId}: \\d+ written`), `the victim died before finishing ${shardId}`);

  const { code } = await enqueuer.exited;
  t.equal(code, 0, `enqueuer exits 0 (stderr: ${enqueuer.stderr().trim()})`);
  t.match(enqueuer.stderr(), /4\/4 shards done/, 'every shard done');
  t.match(survivor.stderr(), new RegExp(`${shardId} \\(1000 items, attempt 1, taken over after 1 stalled run\\): started`), `the survivor took ${shardId} over once its lock expired`);
  t.match(survivor.stderr(), new RegExp(`${shardId}: 1000 written`), `the survivor wrote ${shardId}`);

  const rows = await readEmbeddings(out);
  await assertExactlyOnce(t, rows, inputDir);
  t.ok(
    rows.every((row) => /^LABEL_[012]$/.test(row.label ?? '') && row.score! > 0 && row.score! <= 1),
    'classify rows carry a label and its probability',
  );
  t.match(enqueuer.stderr(), /-> \S+ \(1 compacted part\)/, 'once the queue drained, the enqueuer merged the parts');
  t.same((await readdir(out)).filter((name) => !name.startsWith('.perceiver-io-lock')).map((name) => name.replace(/-.*/, '')), ['compact'], 'into one part, nothing else left');

  survivor.child.kill('SIGTERM');
  t.equal((await survivor.exited).code, 0, 'survivor exits 0 on SIGTERM');
});

t.test('SIGTERM finishes the shard in progress; a second SIGTERM hands it back; a restarted worker does the rest', async (t) => {
  const inputDir = await textFiles(t, 3000);
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'embeddings');
  const finisher = startCli(t, ['worker', '--queue', redis.url, ...ROOTS]);
  const releaser = startCli(t, ['worker', '--queue', redis.url, ...ROOTS]);
  await Promise.all([finisher, releaser].map((w) => w.waitFor(/taking shards from/)));
  const enqueuer = startCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '1000', '--batch-size', '1', inputDir]);

  const [[, finished], [, released]] = await Promise.all([finisher, releaser].map((w) => w.waitFor(/shard (shard-[0-9a-f]+) \(1000 items, attempt 1\): started/)));
  finisher.child.kill('SIGTERM');
  releaser.child.kill('SIGTERM');
  await releaser.waitFor(/finishing the shard in progress/);
  releaser.child.kill('SIGTERM');

  t.equal((await finisher.exited).code, 0, 'finisher exits 0');
  t.match(finisher.stderr(), new RegExp(`${finished}: 1000 written`), 'finisher wrote its shard before exiting');
  t.equal((finisher.stderr().match(/: started/g) ?? []).length, 1, 'finisher took no new shard after SIGTERM');
  t.equal((await releaser.exited).code, 0, 'releaser exits 0');
  t.match(releaser.stderr(), new RegExp(`${released}: released to the queue`), 'releaser handed its shard back');
  t.notMatch(releaser.stderr(), /\d+ written/, 'releaser wrote nothing');

  // Nobody is left: the enqueuer waits. A restarted worker does the released shard and the rest.
  t.equal(enqueuer.child.exitCode, null, 'the enqueuer is still waiting');
  const restarted = startCli(t, ['worker', '--queue', redis.url, ...ROOTS]);
  const { code } = await enqueuer.exited;
  t.equal(code, 0, `enqueuer exits 0 (stderr: ${enqueuer.stderr().trim()})`);
  t.match(restarted.stderr(), new RegExp(`${released}: 1000 written`), 'the restarted worker did the released shard');
  await assertExactlyOnce(t, await readEmbeddings(out), inputDir);

  restarted.child.kill('SIGINT');
  t.equal((await restarted.exited).code, 0, 'restarted worker exits 0 on SIGINT');
});

t.test('unreachable Redis or a bad URL: one typed line, exit 1, no hang', async (t) => {
  const inputDir = await textFiles(t, 3);
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'none');
  const nobody = `redis://127.0.0.1:${await freePort()}`;
  const cases: [string, string[], RegExp][] = [
    ['enqueue, nothing listening', ['embed', '--queue', nobody, '--model', MODEL, '--out', out, inputDir], /^perceiver-io: cannot connect to Redis at redis:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/],
    ['worker, nothing listening', ['worker', '--queue', nobody, ...ROOTS], /^perceiver-io: cannot connect to Redis at redis:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/],
    ['enqueue, not a Redis URL', ['embed', '--queue', 'http://127.0.0.1:6379', '--model', MODEL, '--out', out, inputDir], /^perceiver-io: --queue wants a Redis URL such as redis:\/\/HOST:PORT, got "http:\/\/127\.0\.0\.1:6379"$/],
    ['worker, not a URL', ['worker', '--queue', 'localhost', ...ROOTS], /^perceiver-io: --queue wants a Redis URL/],
  ];
  for (const [what, args, message] of cases) {
    const r = await runCli(t, args, 30_000);
    t.equal(r.code, 1, `${what}: exit 1`);
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, `${what}: one line (${r.stderr.trim()})`);
    t.match(lines[0], message, `${what}: says why`);
    t.ok(r.seconds < 10, `${what}: fails fast (${r.seconds.toFixed(1)} s)`);
  }
});
