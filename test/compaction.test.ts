/**
 * Crash-safe compaction of batch parts (lib/batch/compaction.ts) and content ids (--id content):
 * a compaction stopped at each step of its protocol leaves every row visible exactly once, and a
 * rerun finishes it; the CLI killed with SIGKILL at several moments and rerun writes every item
 * exactly once into few parts; content ids embed duplicates once (listed under every path), skip a
 * moved collection and embed an edited file again.
 */
import t from 'tap';
import { cp, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { AutoModel, compactFolder, discoverItems, InvalidArgumentError, itemId, readEmbeddings, runEmbedJob, type CompactionStep } from '../lib/index.js';
import { listParts } from '../lib/batch/parquet.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { assertEachOnce, rowsPerId, runCliKilledAfterParts, writeTexts } from './helpers/batch-output.js';
import { runCliCommand } from './helpers/child.js';

const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
t.teardown(() => model.dispose());


const STEPS: CompactionStep[] = ['written', 'intent', 'committed', 'sources-removed'];

t.test('a compaction stopped at each step: readers see every row once; the next run finishes it', async (t) => {
  for (const stopAt of STEPS) {
    const dir = await tempDir(t);
    const paths = await writeTexts(join(dir, 'in'), 12);
    const ids = paths.map((p) => itemId(p));
    const out = join(dir, 'out');
    const items = await discoverItems([join(dir, 'in')]);
    // Parts of 3 rows are ~3 kB (mostly footer): a 7 kB target merges them in threes while the run goes.
    const crash = new Error(`stopped at ${stopAt}`);
    let stopped = false;
    const onStep = (step: CompactionStep) => {
      if (step === stopAt && !stopped) {
        stopped = true;
        throw crash;
      }
    };
    await t.rejects(runEmbedJob({ models: [model], task: 'embed', items, outDir: out, batchSize: 3, partSize: 7000, compactionHooks: { onStep } }), crash, `the run fails at ${stopAt}`);
    t.ok(stopped, `${stopAt}: the compaction was stopped`);
    const names = await readdir(out);
    t.ok(names.some((n) => /^\.compact-.*\.json$/.test(n)) === (stopAt !== 'written'), `${stopAt}: an intent file is left iff it was written (${names.join(' ')})`);
    assertEachOnce(t, await readEmbeddings(out), ids, `${stopAt}, after the crash`);

    const rerun = await runEmbedJob({ models: [model], task: 'embed', items, outDir: out, batchSize: 3, partSize: 1 << 20 });
    t.equal(rerun.written, 0, `${stopAt}: the rerun embeds nothing again`);
    assertEachOnce(t, await readEmbeddings(out), ids, `${stopAt}, after the rerun`);
    const left = await readdir(out);
    t.same(left.filter((n) => n.endsWith('.parquet')).length, 1, `${stopAt}: one part after the rerun merged the folder`);
    // The "crashed" compaction's temporary file carries this (live) process's pid, which a run never
    // removes (it may be writing it); after a real crash the pid is gone and it is removed.
    const ownTemp = new RegExp(`\\.${process.pid}\\.[0-9a-f]{32}\\.tmp$`);
    t.same(left.filter((n) => n.startsWith('.') && !n.startsWith('.perceiver-io-lock') && !ownTemp.test(n)), [], `${stopAt}: no intent or other temporary file left (${left.join(' ')})`);
  }
});

t.test('an intent file planted to remove other files is refused, and a torn one too', async (t) => {
  const dir = await tempDir(t);
  const paths = await writeTexts(join(dir, 'in'), 4);
  const out = join(dir, 'out');
  await runEmbedJob({ models: [model], task: 'embed', items: await discoverItems(paths), outDir: out, batchSize: 2, partSize: 0 });
  const [part] = await listParts(out);
  await writeFile(join(dir, 'victim.txt'), 'keep me');
  await writeFile(join(out, '.compact-evil.json'), JSON.stringify({ part: part!.split('/').pop(), sources: ['../victim.txt'], host: 'x', pid: 1 }));
  await t.rejects(readEmbeddings(out), InvalidArgumentError, 'a source outside the folder is refused');
  await t.rejects(compactFolder(out, 1 << 20), InvalidArgumentError, 'and never acted on');
  t.equal(await readFile(join(dir, 'victim.txt'), 'utf8'), 'keep me');
  await writeFile(join(out, '.compact-evil.json'), '{"part": "x.parq');
  await t.rejects(readEmbeddings(out), /not a compaction intent file/);
});

const cli = runCliCommand;

t.test('CLI killed (SIGKILL) while writing and compacting, rerun: every item exactly once, in few parts', async (t) => {
  const dir = await tempDir(t);
  const paths = await writeTexts(join(dir, 'in'), 120);
  const ids = paths.map((p) => itemId(p));
  const out = join(dir, 'out');
  const args = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--batch-size', '2', '--part-size', '20kB', join(dir, 'in')];
  // Kill after more and more parts have appeared: during batch writes and during merges.
  for (const afterParts of [2, 5, 9]) {
    await runCliKilledAfterParts(t, args, afterParts, () => readdir(out).catch(() => [] as string[]), 5);
    const rows = await readEmbeddings(out);
    const counts = rowsPerId(rows);
    t.ok([...counts.values()].every((n) => n === 1), `killed after ${afterParts} parts: ${rows.length} rows visible, none twice`);
  }
  const rerun = await cli(args);
  t.equal(rerun.code, 0, `the rerun exits 0 (${rerun.stderr.trim().split('\n').pop()})`);
  assertEachOnce(t, await readEmbeddings(out), ids, 'after kills and a rerun');
  const parts = (await readdir(out)).filter((n) => n.endsWith('.parquet'));
  t.ok(parts.length >= 1 && parts.length <= 5, `${parts.length} parts for 120 items at --part-size 20kB (60 batches)`);
  t.same((await readdir(out)).filter((n) => n.startsWith('.') && !n.startsWith('.perceiver-io-lock')), [], 'no intent or temporary file left');
});

t.test('--id content: duplicates once under every path; a moved collection is not embedded again; an edited file is', async (t) => {
  const dir = await tempDir(t);
  const paths = await writeTexts(join(dir, 'a'), 5);
  // Two copies of 0000.txt and one of 0003.txt elsewhere.
  await mkdir(join(dir, 'a', 'copies'));
  await cp(paths[0]!, join(dir, 'a', 'copies', 'dup0.txt'));
  await cp(paths[0]!, join(dir, 'a', 'copies', 'dup0b.txt'));
  await cp(paths[3]!, join(dir, 'a', 'copies', 'dup3.txt'));
  const out = join(dir, 'out');
  const sha = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

  const first = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--id', 'content', '--batch-size', '2', join(dir, 'a')]);
  t.equal(first.code, 0, first.stderr);
  t.match(first.stderr, /5 items: 5 written/, '8 files, 5 distinct contents, 5 embedded');
  const rows = await readEmbeddings(out);
  assertEachOnce(t, rows, await Promise.all(paths.map(sha)), 'content ids');
  const row0 = rows.find((r) => r.id === createHash('sha256').update(`text number 0, with some words to embed`).digest('hex'))!;
  t.same(row0.paths, [join(dir, 'a', '0000.txt'), join(dir, 'a', 'copies', 'dup0.txt'), join(dir, 'a', 'copies', 'dup0b.txt')].sort(), 'the duplicate row lists every path');
  t.equal(row0.path, row0.paths![0], 'path is the first of them');
  const row1 = rows.find((r) => r.path === paths[1]);
  t.same(row1?.paths, [paths[1]], 'a unique file lists its one path');

  // The embedding of a duplicate is that of its content: the same as embedding the file alone.
  const alone = await model.embed((await (await import('../lib/media/model_inputs.js')).createMediaInputBuilder(model).load(paths[0]!)).inputs as never, { pooling: 'mean' });
  t.ok(Array.from(alone.data).every((v, i) => Math.abs(v - row0.embedding[i]!) <= 1e-5 * Math.max(1, Math.abs(v))), 'the row is the embedding of those bytes');

  // Moved: nothing to do.
  await rename(join(dir, 'a'), join(dir, 'moved'));
  const moved = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--id', 'content', join(dir, 'moved')]);
  t.equal(moved.code, 0, moved.stderr);
  t.match(moved.stderr, /5 items: 0 written in 0 parts, 5 already done/, 'the moved collection is not embedded again');

  // Edited: embedded again under its new content id.
  await writeFile(join(dir, 'moved', '0002.txt'), 'an edited text');
  const edited = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--id', 'content', join(dir, 'moved')]);
  t.match(edited.stderr, /5 items: 1 written in 1 part, 4 already done/, 'only the edited file is embedded');
  const after = await readEmbeddings(out);
  t.equal(after.filter((r) => r.id === (createHash('sha256').update('an edited text').digest('hex'))).length, 1, 'the edited bytes have their row');

  // Path ids into a folder of content ids: refused.
  const mixed = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, join(dir, 'moved')]);
  t.equal(mixed.code, 1);
  t.match(mixed.stderr, /holds parts with content ids .* not path ids: use --id content/);
  const bad = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--id', 'hash', join(dir, 'moved')]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--id wants path or content, got "hash"/);
  const badSize = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--part-size', '12 parsecs', join(dir, 'moved')]);
  t.equal(badSize.code, 2);
  t.match(badSize.stderr, /--part-size wants a size/);
});
