/**
 * Exactly once under the queue's hard cases, end to end (a real redis-server, workers and
 * enqueuers as child processes): reruns of `embed --queue` overlapping each other and the workers
 * while inputs are added and a worker is killed; and the workers' allowed roots (`--allow-root`),
 * which keep a job queued by anyone who can write to Redis inside the folders the worker was given.
 */
import t from 'tap';
import { cp, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readEmbeddings } from '../lib/batch/job.js';
import { FIXTURES, tempDir } from './helpers/fixtures.js';
import { assertExactlyOnce, MODEL, ROOTS, runCli, startCli, textFiles } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';

const redis = await startRedis(t);

t.test('reruns of embed --queue while workers run, inputs are added and a worker is killed: every item exactly once', async (t) => {
  const inputDir = await textFiles(t, 1000);
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'embeddings');
  const workerArgs = ['worker', '--queue', redis.url, '--lock-duration-ms', '2000', ...ROOTS];
  const victim = startCli(t, workerArgs);
  const workers = [victim, startCli(t, workerArgs)];
  await Promise.all(workers.map((w) => w.waitFor(/taking shards from/)));
  const enqueue = () => startCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '20', '--batch-size', '1', inputDir]);

  // The first run; then rounds of three reruns started together after a file is added, overlapping
  // each other, the earlier runs and the workers' shards; a worker is killed in the middle.
  const runs = [enqueue()];
  await victim.waitFor(/: \d+ written/);
  for (let round = 0; round < 3; round++) {
    await writeFile(join(inputDir, `added-${round}.txt`), `added while running, round ${round}`);
    runs.push(enqueue(), enqueue(), enqueue());
    await Promise.all(runs.slice(-3).map((run) => run.waitFor(/shards done|0 written by 0 shards/)));
    if (round === 1) {
      victim.child.kill('SIGKILL');
      await victim.exited;
      workers.push(startCli(t, workerArgs));
    }
  }
  const exits = await Promise.all(runs.map((run) => run.exited));
  exits.forEach(({ code }, i) => t.equal(code, 0, `enqueuer ${i} exits 0 (${runs[i]!.stderr().trim().split('\n').at(-1)})`));
  t.ok(runs.slice(1).some((run) => /\([1-9]\d* queued now\)/.test(run.stderr())), 'reruns queued the added files');

  const rows = await readEmbeddings(out);
  await assertExactlyOnce(t, rows, inputDir);
  const final = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '100', inputDir]);
  t.match(final.stderr, /1003 items: 0 written by 0 shards \(0 queued now\), 1003 already done/, 'a last rerun finds everything done');

  for (const worker of workers.slice(1)) worker.child.kill('SIGTERM');
  for (const worker of workers.slice(1)) t.equal((await worker.exited).code, 0, 'worker exits 0');
});

t.test('--allow-root: a job naming a path outside the roots fails with the reason, the worker carries on', async (t) => {
  const root = await tempDir(t, 'perceiver-queue-root-');
  const outside = await tempDir(t, 'perceiver-queue-outside-');
  const inside = join(root, 'in');
  await mkdir(inside);
  for (let i = 0; i < 3; i++) await writeFile(join(inside, `doc-${i}.txt`), `inside ${i}`);
  await writeFile(join(outside, 'secret.txt'), 'outside the roots');
  await symlink(outside, join(root, 'escape'));
  const foreignModel = join(outside, 'model');
  await cp(MODEL, foreignModel, { recursive: true });

  const worker = startCli(t, ['worker', '--queue', redis.url, '--allow-root', root, '--allow-root', FIXTURES]);
  await worker.waitFor(/taking shards from .*paths allowed under /);
  const cases: [string, string[], RegExp][] = [
    ['output outside', ['--model', MODEL, '--out', join(outside, 'out'), inside], /outDir ".*out" is outside this worker's allowed roots/],
    ['output through a symlink out of the root', ['--model', MODEL, '--out', join(root, 'escape', 'out'), inside], /outDir ".*escape\/out" is outside/],
    ['an input outside', ['--model', MODEL, '--out', join(root, 'out-a'), join(outside, 'secret.txt')], /items\[0\]\.path ".*secret\.txt" is outside/],
    ['the model outside', ['--model', foreignModel, '--out', join(root, 'out-b'), inside], /model ".*model" is outside/],
  ];
  for (const [what, args, reason] of cases) {
    const run = await runCli(t, ['embed', '--queue', redis.url, ...args]);
    t.equal(run.code, 1, `${what}: the enqueuer exits 1`);
    const last = run.stderr.trim().split('\n').at(-1)!;
    t.match(last, /^perceiver-io: 1 of 1 shards failed permanently/, `${what}: ${last}`);
    t.match(last, reason, `${what}: the job's failure says which path`);
  }
  // The enqueuer (the user) makes the output folder; the worker writes nothing there.
  t.same((await readdir(join(outside, 'out'))), [], 'nothing written outside the roots');
  t.same((await readdir(root)).sort(), ['escape', 'in', 'out-a', 'out-b'].sort(), 'no part written for the refused jobs (only the enqueuers\' folders)');
  t.equal(worker.child.exitCode, null, 'the worker is still running');

  const good = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', join(root, 'out'), inside]);
  t.equal(good.code, 0, `a job inside the roots runs (${good.stderr.trim().split('\n').at(-1)})`);
  t.equal((await readEmbeddings(join(root, 'out'))).length, 3, 'its rows');
  worker.child.kill('SIGTERM');
  t.equal((await worker.exited).code, 0);

  const noRoots = await runCli(t, ['worker', '--queue', redis.url]);
  t.equal(noRoots.code, 2, 'a worker without --allow-root: exit 2');
  t.match(noRoots.stderr, /^perceiver-io: worker needs --allow-root DIR \(repeatable\)/);
  const badRoot = await runCli(t, ['worker', '--queue', redis.url, '--allow-root', join(root, 'missing')]);
  t.equal(badRoot.code, 2, 'a root that is not a folder: exit 2');
  t.match(badRoot.stderr, /--allow-root ".*missing" is not an existing folder/);
});
