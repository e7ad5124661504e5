/**
 * Parquet output to an S3 prefix (s3rver on 127.0.0.1): parts and compacted parts are objects, the
 * compaction protocol (intent, then part, then removals: no rename on S3) leaves every row visible
 * exactly once when stopped at any step, a run killed with SIGKILL at several moments and rerun
 * writes every item exactly once, two runs on one prefix are refused, and search reads through
 * the same listing.
 */
import t from 'tap';
import { join } from 'node:path';
import { AutoModel, discoverItems, embedItemsToPart, itemId, OutputLockedError, readEmbeddings, runEmbedJob, type CompactionStep } from '../lib/index.js';
import { RemoteReader } from '../lib/io/remote.js';
import { partStore, useS3ForOutputs } from '../lib/batch/store.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { assertEachOnce, rowsPerId, runCliKilledAfterParts, writeTexts } from './helpers/batch-output.js';
import { runCliCommand } from './helpers/child.js';
import { startS3 } from './helpers/s3.js';

const s3 = await startS3(t);
await s3.createBucket('out');
const reader = new RemoteReader({ s3Endpoint: s3.endpoint, backoffMs: 10 });
useS3ForOutputs(reader);
t.teardown(async () => {
  useS3ForOutputs(undefined);
  await reader.close();
});
const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
t.teardown(() => model.dispose());


async function names(prefix: string): Promise<string[]> {
  return (await partStore(prefix).list()).map((o) => o.name).sort();
}

const STEPS: CompactionStep[] = ['written', 'intent', 'committed', 'sources-removed'];

t.test('a compaction on S3 stopped at each step: readers see every row once; the next run finishes it', async (t) => {
  const dir = await tempDir(t);
  const paths = await writeTexts(join(dir, 'in'), 12);
  const ids = paths.map((p) => itemId(p));
  const items = await discoverItems([join(dir, 'in')]);
  for (const stopAt of STEPS) {
    const out = `s3://out/steps-${stopAt}`;
    const crash = new Error(`stopped at ${stopAt}`);
    let stopped = false;
    const onStep = (step: CompactionStep) => {
      if (step === stopAt && !stopped) {
        stopped = true;
        throw crash;
      }
    };
    // Parts of 3 rows are ~3 kB: a 7 kB target merges them in threes while the run goes.
    await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: out, batchSize: 3, partSize: 7000, compactionHooks: { onStep }, remote: reader }), crash, `the run fails at ${stopAt}`);
    const left = await names(out);
    t.equal(left.some((n) => /^\.compact-.*\.json$/.test(n)), stopAt !== 'written', `${stopAt}: an intent object is left iff it was written (${left.join(' ')})`);
    t.equal(left.some((n) => n.startsWith('compact-')), stopAt === 'committed' || stopAt === 'sources-removed', `${stopAt}: the compacted part is there iff it committed`);
    assertEachOnce(t, await readEmbeddings(out), ids, `${stopAt}, after the crash`);

    const rerun = await runEmbedJob({ models: [model], task: 'embed', items, outDir: out, batchSize: 3, partSize: 1 << 20, remote: reader });
    t.equal(rerun.written, 0, `${stopAt}: the rerun embeds nothing again`);
    assertEachOnce(t, await readEmbeddings(out), ids, `${stopAt}, after the rerun`);
    t.same((await names(out)).filter((n) => !n.startsWith('.perceiver-io-lock')).length, 1, `${stopAt}: one object after the rerun merged the prefix (no intent, no lock)`);
    t.same(await names(out), (await names(out)).filter((n) => n.endsWith('.parquet')), `${stopAt}: nothing but parts left`);
  }
});

t.test('two runs on one S3 prefix: the second is refused while the first holds it', async (t) => {
  const dir = await tempDir(t);
  const items = await discoverItems(await writeTexts(join(dir, 'in'), 4));
  const out = 's3://out/locked';
  let second: unknown;
  await runEmbedJob({
    models: [model],
    task: 'embed',
    items,
    outDir: out,
    batchSize: 2,
    remote: reader,
    onProgress: (done) => {
      if (done === 2 && second === undefined) second = runEmbedJob({ models: [model], task: 'embed', items, outDir: out, remote: reader }).catch((error: unknown) => error);
    },
  });
  t.type(await second, OutputLockedError, 'the second run fails with OutputLockedError');
  t.match((await second as Error).message, /s3:\/\/out\/locked\/\.perceiver-io-lock\.s3-[0-9a-f]+/, 'naming the lock object');
  assertEachOnce(t, await readEmbeddings(out), items.map((i) => i.id), 'the first run\'s rows');
  t.same((await names(out)).filter((n) => n.startsWith('.perceiver-io-lock')), [], 'the lock is gone with the run');
  // A lock of a process that is gone (this host, a dead pid) is removed by the next run.
  await partStore(out).write('.perceiver-io-lock.s3-deadbeef', JSON.stringify({ pid: 2 ** 22 + 12345, host: (await import('node:os')).hostname(), started: 'then', scope: 'all', nonce: 'deadbeef' }));
  const after = await runEmbedJob({ models: [model], task: 'embed', items, outDir: out, remote: reader });
  t.equal(after.written, 0, 'a stale lock does not stop the next run');
  t.same((await names(out)).filter((n) => n.startsWith('.perceiver-io-lock')), [], 'and it is removed');
});

t.test('CLI to s3:// killed (SIGKILL) while writing and compacting, rerun: every item exactly once; search reads it', async (t) => {
  const dir = await tempDir(t);
  const paths = await writeTexts(join(dir, 'in'), 60);
  const ids = paths.map((p) => itemId(p));
  const out = 's3://out/killed';
  const args = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--s3-endpoint', s3.endpoint, '--batch-size', '2', '--part-size', '20kB', join(dir, 'in')];
  for (const afterParts of [3, 8]) {
    await runCliKilledAfterParts(t, args, afterParts, () => names(out), 20);
    const rows = await readEmbeddings(out);
    const counts = rowsPerId(rows);
    t.ok(rows.length > 0 && [...counts.values()].every((n) => n === 1), `killed after ${afterParts} parts: ${rows.length} rows visible, none twice`);
  }
  const rerun = await runCliCommand(args);
  t.equal(rerun.code, 0, `the rerun exits 0 (${rerun.stderr.trim().split('\n').pop()})`);
  assertEachOnce(t, await readEmbeddings(out), ids, 'after kills and a rerun');
  const left = await names(out);
  const parts = left.filter((n) => n.endsWith('.parquet'));
  t.ok(parts.length >= 1 && parts.length <= 4, `${parts.length} parts for 60 items at --part-size 20kB (30 batches)`);
  t.same(left.filter((n) => !n.endsWith('.parquet')), [], 'no intent or lock left');

  const search = await runCliCommand(['search', '--index', out, '--s3-endpoint', s3.endpoint, '--query', paths[7]!, '-k', '3', '--json']);
  t.equal(search.code, 0, `search exits 0 (${search.stderr.trim()})`);
  const hits = search.stdout.trim().split('\n').map((line) => JSON.parse(line) as { rank: number; path: string; score: number });
  t.equal(hits.length, 3, 'three hits');
  t.equal(hits[0]!.path, paths[7], 'the query file itself comes first');
  t.ok(hits[0]!.score > 0.999, `with cosine 1 (${hits[0]!.score})`);
});

t.test('s3:// outputs: bad prefixes and a missing bucket are typed errors', async (t) => {
  const dir = await tempDir(t);
  const items = await discoverItems(await writeTexts(join(dir, 'in'), 1));
  await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: 's3://out/a/../b', remote: reader }), { name: 'InvalidArgumentError', argument: 'outDir' });
  await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: 's3://no-such-bucket/x', remote: reader }), { name: 'InvalidArgumentError', message: /cannot use s3:\/\/no-such-bucket\/x as the output: .*NoSuchBucket/ });
  const cli = await runCliCommand(['embed', '--model', fixtureDir('text-mlm'), '--out', 'ftp://x/y', join(dir, 'in')]);
  t.equal(cli.code, 2, 'another scheme is a usage error');
  t.match(cli.stderr, /--out takes a local folder, s3:\/\/BUCKET\/PREFIX or lancedb:\/\/DIR\/TABLE/);
});

t.test('embedItemsToPart: a beforeWrite that throws (a worker that lost its shard) writes nothing', async (t) => {
  const dir = await tempDir(t);
  const items = await discoverItems(await writeTexts(join(dir, 'in'), 3));
  const lost = new Error('lost the lock');
  for (const out of ['s3://out/guarded', join(dir, 'guarded')]) {
    await t.rejects(embedItemsToPart({ model, task: 'embed', items, outDir: out, partName: 'shard-x', beforeWrite: async () => { throw lost; } }), lost, `${out}: the write is stopped`);
    t.same(await readEmbeddings(out), [], `${out}: no rows`);
    const written = await embedItemsToPart({ model, task: 'embed', items, outDir: out, partName: 'shard-x', beforeWrite: async () => {} });
    t.equal(written.written, 3, `${out}: with the lock held, the part is written`);
  }
});
