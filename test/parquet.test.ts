/**
 * The building blocks of batch jobs (lib/batch): Parquet parts written atomically and read back
 * with parquet-wasm + apache-arrow, stale temporary files, file discovery with stable ids, shards,
 * embedItemsToPart with a real model, and the progress reporter in both of its modes.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { AutoModel, discoverItems, embedItemsToPart, inShard, InvalidArgumentError, itemId, ModelMismatchError, modelIdentity, readDoneIds, readEmbeddings, PerceiverTokenizer } from '../lib/index.js';
import { readPartIds, removeStaleTempFiles, writeEmbeddingPart } from '../lib/batch/parquet.js';
import { createProgressReporter } from '../lib/batch/progress.js';
import { fixtureDir, relativeErrorOf, tempDir } from './helpers/fixtures.js';

t.test('a part round-trips through Parquet with the documented schema', async (t) => {
  const dir = await tempDir(t);
  const width = 5;
  const embeddings = Float32Array.from({ length: 3 * width }, (_, i) => Math.sin(i) * 1e3);
  const columns = { ids: ['a', 'b', 'c'], paths: ['/x/a.txt', '/x/b.txt', '/x/ü.txt'], width, embeddings, labels: ['cat', 'dog', 'cat'], scores: new Float32Array([0.5, 0.25, 1]) };
  const file = join(dir, 'one.parquet');
  await writeEmbeddingPart(file, columns, { task: 'classify', model: 'Test', width });

  // Read with the libraries directly, not through our reader.
  const table = tableFromIPC(readParquet(await readFile(file)).intoIPCStream());
  t.same(
    table.schema.fields.map((f) => `${f.name}:${f.type}`),
    ['id:Utf8', 'path:Utf8', `embedding:FixedSizeList[${width}]<Float32>`, 'label:Utf8', 'score:Float32'],
    'columns and types',
  );
  t.equal(table.schema.metadata.get('perceiver_io.task'), 'classify');
  t.equal(table.schema.metadata.get('perceiver_io.width'), String(width));
  t.same(table.getChild('id')!.toArray(), columns.ids);
  t.same(table.getChild('path')!.toArray(), columns.paths);
  t.same(Array.from(table.getChild('score')!.toArray() as Float32Array), [0.5, 0.25, 1]);
  for (let i = 0; i < 3; i++) {
    t.same(Array.from(table.getChild('embedding')!.get(i)!.toArray() as Float32Array), Array.from(embeddings.subarray(i * width, (i + 1) * width)), `embedding ${i} bit-exact`);
  }

  const rows = await readEmbeddings(dir);
  t.same(rows.map((r) => [r.id, r.path, r.label, r.score]), [
    ['a', '/x/a.txt', 'cat', 0.5],
    ['b', '/x/b.txt', 'dog', 0.25],
    ['c', '/x/ü.txt', 'cat', 1],
  ]);
  t.ok(rows.every((r) => r.embedding instanceof Float32Array && r.embedding.length === width));
  t.same([...(await readDoneIds(dir))].sort(), ['a', 'b', 'c']);
  t.same((await readPartIds(file)).metadata, { task: 'classify', model: 'Test', width });

  // Rewriting the same name replaces it; nothing temporary is left behind.
  await writeEmbeddingPart(file, { ids: ['d'], paths: ['/d'], width, embeddings: new Float32Array(width) }, { task: 'embed', model: 'Test', width });
  t.same((await readEmbeddings(dir)).map((r) => [r.id, r.label]), [['d', undefined]]);
  t.same(await readdir(dir), ['one.parquet']);
  t.same(await readDoneIds(join(dir, 'missing')), new Set(), 'a folder that does not exist has nothing done');
});

t.test('a corrupt part is a typed error naming it; stale temporary files are removed', async (t) => {
  const dir = await tempDir(t);
  const bad = join(dir, 'bad.parquet');
  await writeFile(bad, 'PAR1 this is not parquet');
  const error = await readDoneIds(dir).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(error, InvalidArgumentError);
  t.match((error as Error).message, /bad\.parquet/);

  // A temporary file of a process that is gone, one of this (live) process, and unrelated names.
  const gone = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => gone.on('exit', resolve));
  const dead = `.part-1.parquet.${hostname()}.${gone.pid}.0123456789abcdef0123456789abcdef.tmp`;
  const live = `.part-2.parquet.${hostname()}.${process.pid}.0123456789abcdef0123456789abcdef.tmp`;
  for (const name of [dead, live, 'notes.tmp']) await writeFile(join(dir, name), 'x');
  t.equal(await removeStaleTempFiles(dir), 1, 'one removed');
  t.same((await readdir(dir)).sort(), [live, 'bad.parquet', 'notes.tmp'].sort());
});

t.test('discovery: files, folders, globs and manifests; sorted, deduplicated, stable ids', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'a', 'b'), { recursive: true });
  await mkdir(join(dir, '.hidden'));
  const files = ['a/one.txt', 'a/b/two.TXT', 'a/b/pic.png', 'a/skip.json', '.hidden/h.txt', 'loose.md'];
  for (const f of files) await writeFile(join(dir, f), 'x');

  const folder = await discoverItems([join(dir, 'a')]);
  t.same(
    folder.map((i) => i.path),
    ['a/b/pic.png', 'a/b/two.TXT', 'a/one.txt'].map((f) => join(dir, f)),
    'a folder: every media file below it, sorted; other extensions and hidden files left out',
  );
  for (const item of folder) t.equal(item.id, createHash('sha256').update(item.path).digest('hex').slice(0, 32), 'id = 32 hex of sha256(absolute path)');
  t.equal(itemId(join(dir, 'a', '..', 'a', 'one.txt')), folder[2]!.id, 'the same file by another spelling has the same id');

  const mixed = await discoverItems([join(dir, 'a', 'one.txt'), join(dir, 'a'), `${dir}/**/*.txt`, join(dir, 'a', 'skip.json')]);
  t.same(
    mixed.map((i) => i.path),
    ['a/b/pic.png', 'a/b/two.TXT', 'a/one.txt', 'a/skip.json'].map((f) => join(dir, f)),
    'deduplicated; an explicit file is taken whatever its extension; globs are case-sensitive',
  );

  const manifest = join(dir, 'list.txt');
  await writeFile(manifest, `# comment\n\na/one.txt\r\n${join(dir, 'loose.md')}\nmissing.txt\na/b\n`);
  const listed = await discoverItems([], { manifest });
  t.same(
    listed.map((i) => i.path),
    ['a/b/pic.png', 'a/b/two.TXT', 'a/one.txt', 'loose.md', 'missing.txt'].map((f) => join(dir, f)),
    'manifest: relative to its folder, comments and blank lines skipped, folders expanded, missing files kept',
  );

  await t.rejects(discoverItems([join(dir, 'nope.txt')]), { name: 'InvalidArgumentError', message: /nope\.txt/ });
  await t.rejects(discoverItems([`${dir}/*.wav`]), { name: 'InvalidArgumentError', message: /matches no media files/ });
  await t.rejects(discoverItems([], { manifest: join(dir, 'none.txt') }), { name: 'InvalidArgumentError', message: /manifest/ });
  await t.rejects(discoverItems('x' as never), InvalidArgumentError);

  // Shards split any set of ids exactly.
  const ids = Array.from({ length: 200 }, (_, i) => itemId(`/data/${i}.txt`));
  for (const count of [1, 2, 3, 7]) {
    const owners = ids.map((id) => Array.from({ length: count }, (_, s) => s).filter((s) => inShard(id, s, count)));
    t.ok(owners.every((o) => o.length === 1), `${count} shards: every id in exactly one`);
  }
});

t.test('embedItemsToPart: one part, failures listed, rewriting replaces', async (t) => {
  const dir = await tempDir(t);
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const texts = ['first text', 'a somewhat longer second text, to make padding matter', 'three'];
  const paths: string[] = [];
  for (const [i, text] of texts.entries()) {
    paths.push(join(dir, `t${i}.txt`));
    await writeFile(paths[i]!, text);
  }
  const missing = join(dir, 'missing.txt');
  const items = [...paths, missing].map((path) => ({ id: itemId(path), path }));
  const progress: [number, number][] = [];
  const out = join(dir, 'out');
  const result = await embedItemsToPart({ model, task: 'embed', items, outDir: out, partName: 'job-1', batchSize: 2, onProgress: (d, f) => progress.push([d, f]) });
  t.equal(result.written, 3);
  t.same(result.failed.map((f) => f.path), [missing]);
  t.match(result.failed[0]!.reason, /missing\.txt/);
  t.same(progress, [[2, 0], [4, 1]]);
  t.same(await readdir(out), ['job-1.parquet']);

  const rows = await readEmbeddings(out);
  t.same(rows.map((r) => r.path), paths);
  const tokenizer = new PerceiverTokenizer();
  for (const [i, text] of texts.entries()) {
    const encoded = tokenizer.call(text, { maxLength: 48, truncation: true });
    const expected = await model.embed(encoded.inputIds, { attentionMask: encoded.attentionMask });
    const err = relativeErrorOf(rows[i]!.embedding, expected.data);
    t.ok(err <= 1e-6, `row ${i}: relative error ${err.toExponential(2)} to model.embed alone`);
  }

  const again = await embedItemsToPart({ model, task: 'embed', items: items.slice(0, 1), outDir: out, partName: 'job-1' });
  t.equal(again.written, 1);
  t.same((await readEmbeddings(out)).map((r) => r.path), [paths[0]], 'the part was replaced');

  await t.rejects(embedItemsToPart({ model, task: 'classify', items, outDir: out, partName: 'x' }), { name: 'InvalidArgumentError', message: /classification checkpoint/ });
  await t.rejects(embedItemsToPart({ model, task: 'embed', items, outDir: out, partName: '../x' }), { name: 'InvalidArgumentError', message: /partName/ });
  await t.rejects(embedItemsToPart({ model, task: 'embed', items, outDir: out, partName: 'x', batchSize: 0 }), { name: 'InvalidArgumentError', message: /batchSize/ });
});

t.test('embedItemsToPart leaves out items other parts hold, records the model identity and refuses another model', async (t) => {
  const dir = await tempDir(t);
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const paths: string[] = [];
  for (let i = 0; i < 4; i++) {
    paths.push(join(dir, `t${i}.txt`));
    await writeFile(paths[i]!, `text number ${i}`);
  }
  const items = paths.map((path) => ({ id: itemId(path), path }));
  const out = join(dir, 'out');
  const identity = await modelIdentity(fixtureDir('text-mlm'), 'text-mlm');
  t.match(identity.id, /^sha256:[0-9a-f]{64}$/);
  t.same(await modelIdentity(fixtureDir('text-mlm')), { id: identity.id, source: fixtureDir('text-mlm') }, 'the same files give the same identity');
  t.not((await modelIdentity(fixtureDir('text-classification'))).id, identity.id, 'another checkpoint another');

  // A shard of items 0-1, then an overlapping shard of items 1-3 (queued with other neighbours).
  const first = await embedItemsToPart({ model, modelIdentity: identity, task: 'embed', items: items.slice(0, 2), outDir: out, partName: 'shard-a' });
  t.same([first.written, first.skippedDone], [2, 0]);
  const second = await embedItemsToPart({ model, modelIdentity: identity, task: 'embed', items: items.slice(1), outDir: out, partName: 'shard-b' });
  t.same([second.written, second.skippedDone], [2, 1], 'the item shard-a holds is left out');
  const rows = await readEmbeddings(out);
  t.same(rows.map((r) => r.id).sort(), items.map((i) => i.id).sort(), 'every item once');
  t.same((await readPartIds(join(out, 'shard-b.parquet'))).metadata, { task: 'embed', model: 'PerceiverForMaskedLM', width: 64, modelId: identity.id, modelSource: 'text-mlm' }, 'the identity is in the part');

  // Rerunning shard-b replaces it (its own earlier rows do not count as done).
  const rerun = await embedItemsToPart({ model, modelIdentity: identity, task: 'embed', items: items.slice(1), outDir: out, partName: 'shard-b' });
  t.same([rerun.written, rerun.skippedDone], [2, 1]);
  t.equal((await readEmbeddings(out)).length, 4, 'still every item once');

  // Another writer adds a part holding item 3 while this shard computes: the check just before
  // writing leaves that row out.
  await rm(join(out, 'shard-a.parquet'));
  await rm(join(out, 'shard-b.parquet'));
  let raced: Promise<void> | undefined;
  const racing = Object.create(model) as typeof model;
  racing.embed = (async (...args: Parameters<typeof model.embed>) => {
    raced ??= writeEmbeddingPart(join(out, 'other-writer.parquet'), { ids: [items[3]!.id], paths: [items[3]!.path], width: 64, embeddings: new Float32Array(64) }, { task: 'embed', model: 'PerceiverForMaskedLM', width: 64, modelId: identity.id, modelSource: 'text-mlm' });
    await raced;
    return model.embed(...args);
  }) as typeof model.embed;
  const overlapped = await embedItemsToPart({ model: racing, modelIdentity: identity, task: 'embed', items, outDir: out, partName: 'shard-d', batchSize: 1 });
  t.same([overlapped.written, overlapped.skippedDone], [3, 1], 'the row the other writer added meanwhile is left out');
  t.same((await readPartIds(join(out, 'shard-d.parquet'))).ids, items.slice(0, 3).map((i) => i.id));
  const byId = new Map((await readEmbeddings(out)).map((r) => [r.id, r]));
  t.equal(byId.size, 4, 'every item once');
  const direct = await embedItemsToPart({ model, modelIdentity: identity, task: 'embed', items: items.slice(1, 2), outDir: join(dir, 'direct'), partName: 'one' });
  t.equal(direct.written, 1);
  t.same(Array.from(byId.get(items[1]!.id)!.embedding), Array.from((await readEmbeddings(join(dir, 'direct')))[0]!.embedding), 'the kept rows are the right rows');

  const other = { id: `sha256:${'0'.repeat(64)}`, source: 'some/other-checkpoint' };
  const mismatch = await embedItemsToPart({ model, modelIdentity: other, task: 'embed', items, outDir: out, partName: 'shard-c' }).catch((e: unknown) => e);
  t.type(mismatch, ModelMismatchError);
  t.match((mismatch as Error).message, /already holds output of the model text-mlm \(sha256:[0-9a-f]{16}, in .*\.parquet\), not of some\/other-checkpoint \(sha256:0{16}\)/);
  t.same((mismatch as ModelMismatchError).existing.id, identity.id);
  t.notOk((await readdir(out)).includes('shard-c.parquet'), 'nothing written');
  await t.rejects(embedItemsToPart({ model, modelIdentity: { id: 5 } as never, task: 'embed', items, outDir: out, partName: 'x' }), { name: 'InvalidArgumentError', message: /modelIdentity/ });
});

t.test('progress: plain lines off a terminal, a bar with rate and ETA on one', async (t) => {
  const capture = (isTTY: boolean) => {
    const stream = Object.assign(new PassThrough(), { isTTY, columns: 120 });
    let text = '';
    stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
    return { stream, text: () => text };
  };

  const plain = capture(false);
  const reporter = await createProgressReporter({ label: 'job', stream: plain.stream, intervalMs: 60_000 });
  reporter.start(10);
  reporter.update(2, 0);
  reporter.update(4, 1); // within the interval: no line
  reporter.log('job: skipped x');
  reporter.update(10, 1);
  reporter.stop();
  const lines = plain.text().trim().split('\n');
  t.equal(lines.length, 3, 'first update, the logged line, the last state');
  t.match(lines[0], /^job: 2\/10 \(20\.0%\), [\d.]+ items\/s, ETA \w+, 0 failed$/);
  t.equal(lines[1], 'job: skipped x');
  t.match(lines[2], /^job: 10\/10 \(100\.0%\), [\d.]+ items\/s, ETA 0s, 1 failed$/);
  t.notMatch(plain.text(), /\x1b/, 'no terminal codes');

  const tty = capture(true);
  const bar = await createProgressReporter({ label: 'job', stream: tty.stream });
  bar.start(8);
  bar.update(3, 1);
  bar.update(8, 1);
  bar.stop();
  t.match(tty.text(), /job .*8\/8 \| [\d.]+ items\/s \| ETA \S+ \| 1 failed/, 'bar with count, rate, ETA and failures');
  t.match(tty.text(), /\x1b\[/, 'drawn with terminal codes');
});
