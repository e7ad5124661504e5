/**
 * `perceiver-io embed` / `classify` end to end: the CLI (dist/, spawned) on folders of real files,
 * the Parquet it writes read back, and every row checked against the model run here on the same
 * file alone. Also resume (a rerun, and a rerun after SIGKILL mid-run), unreadable files, --strict,
 * shards, several models (--devices cpu,cpu), the no-GPU error and usage errors.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import sharp from 'sharp';
import { AutoModel, inShard, itemId, PerceiverTokenizer, readEmbeddings, readSafetensors, Tensor, writeSafetensors, type EmbeddingRow } from '../lib/index.js';
import { createMediaInputBuilder } from '../lib/media/model_inputs.js';
import { fixtureDir, relativeErrorOf, REPO, tempDir } from './helpers/fixtures.js';

const manifest = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8'));
const BIN = join(REPO, manifest.bin['perceiver-io']);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const SENTENCES = ['The cat sat on the mat.', 'Perceiver IO handles any modality.', 'short', 'Numbers: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15', 'ünïcödé text ✓', 'A line\nand another line'];

async function textFolder(dir: string, count: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const path = join(dir, `${String(i).padStart(4, '0')}.txt`);
    await writeFile(path, `${SENTENCES[i % SENTENCES.length]} (#${i})`);
    paths.push(path);
  }
  return paths;
}

function countIds(rows: EmbeddingRow[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + 1);
  return counts;
}

function assertEachOnce(t: Test, rows: EmbeddingRow[], paths: string[], what: string): void {
  const counts = countIds(rows);
  t.equal(rows.length, paths.length, `${what}: one row per input`);
  t.ok(paths.every((p) => counts.get(itemId(p)) === 1), `${what}: every input exactly once`);
  t.ok(rows.every((r) => r.id === itemId(r.path)), `${what}: id = itemId(path)`);
}

t.test('classify a folder of text files: label, score and embedding per file, as the model gives them', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 7);
  const out = join(dir, 'out');
  const r = await cli(['classify', '--model', fixtureDir('text-classification'), '--out', out, '--batch-size', '3', join(dir, 'in')]);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
  t.match(r.stderr, /7 items: 7 written in 3 parts, 0 already done, 0 unreadable/);
  t.match(r.stderr, /perceiver-io classify: 7\/7 \(100\.0%\), [\d.]+ items\/s, ETA 0s, 0 failed/, 'a plain progress line off a terminal');
  t.equal(r.stdout, '');

  // The schema, read with parquet-wasm + apache-arrow directly.
  const parts = (await readdir(out)).filter((f) => f.endsWith('.parquet'));
  t.same(parts.map((f) => f.replace(/-.*/, '')), ['compact'], 'the 3 batch parts merged into one compacted part (--part-size 128MB by default)');
  const table = tableFromIPC(readParquet(await readFile(join(out, parts[0]!))).intoIPCStream());
  t.same(table.schema.fields.map((f) => `${f.name}:${f.type}`), ['id:Utf8', 'path:Utf8', 'embedding:FixedSizeList[64]<Float32>', 'label:Utf8', 'score:Float32']);

  const rows = await readEmbeddings(out);
  assertEachOnce(t, rows, paths, 'classify');
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const tokenizer = new PerceiverTokenizer();
  const labels = model.config.id2label;
  for (const row of rows) {
    const encoded = tokenizer.call(await readFile(row.path, 'utf8'), { maxLength: model.config.max_position_embeddings, truncation: true });
    const out = await model.forward({ inputs: encoded.inputIds, attentionMask: encoded.attentionMask });
    const logits = Array.from((out.logits as Tensor<'float32'>).data);
    const best = logits.indexOf(Math.max(...logits));
    const probability = 1 / logits.reduce((sum, v) => sum + Math.exp(v - logits[best]!), 0);
    t.equal(row.label, labels[String(best)], `${row.path}: label`);
    t.ok(Math.abs(row.score! - probability) <= 1e-6 * probability, `${row.path}: score ${row.score} = softmax ${probability}`);
    const embedding = await model.embed(encoded.inputIds, { attentionMask: encoded.attentionMask });
    const err = relativeErrorOf(row.embedding, embedding.data);
    t.ok(err <= 1e-6, `${row.path}: embedding relative error ${err.toExponential(2)}`);
  }
});

t.test('embed text: equal to model.embed, stable ids, a rerun adds nothing; cpu,cpu feeds two models', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 9);
  const out = join(dir, 'out');
  const args = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--batch-size', '2', '--devices', 'cpu,cpu', `${dir}/in/*.txt`];
  const first = await cli(args);
  t.equal(first.code, 0, `exit 0 (stderr: ${first.stderr.trim()})`);
  t.match(first.stderr, /9 items: 9 written in 5 parts, 0 already done, 0 unreadable, 0 left .* on cpu,cpu, engine busy \d+%, (\d+ decode workers?|decoded on the main thread)\)/);
  const rows = await readEmbeddings(out);
  assertEachOnce(t, rows, paths, 'embed');
  t.ok(rows.every((r) => r.label === undefined && r.score === undefined), 'no label or score columns for embed');

  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const tokenizer = new PerceiverTokenizer();
  for (const row of rows) {
    const encoded = tokenizer.call(await readFile(row.path, 'utf8'), { maxLength: 48, truncation: true });
    const expected = await model.embed(encoded.inputIds, { attentionMask: encoded.attentionMask });
    t.equal(row.embedding.length, 64);
    const err = relativeErrorOf(row.embedding, expected.data);
    t.ok(err <= 1e-6, `${row.path}: relative error ${err.toExponential(2)}`);
  }

  const second = await cli(args);
  t.equal(second.code, 0);
  t.match(second.stderr, /9 items: 0 written in 0 parts, 9 already done/);
  const again = await readEmbeddings(out);
  t.same(again.map((r) => r.id).sort(), rows.map((r) => r.id).sort(), 'the same ids, no duplicates');

  // A new file joins; only it is embedded.
  await writeFile(join(dir, 'in', 'late.txt'), 'a late arrival');
  const third = await cli(args);
  t.match(third.stderr, /10 items: 1 written in 1 part, 9 already done/);
  assertEachOnce(t, await readEmbeddings(out), [...paths, join(dir, 'in', 'late.txt')], 'after adding a file');
});

t.test('images: PNGs embedded, a corrupt one skipped with a line and counted; --strict exits 1', async (t) => {
  const dir = await tempDir(t);
  const images = join(dir, 'images');
  await mkdir(images);
  const paths: string[] = [];
  for (let i = 0; i < 5; i++) {
    const width = 9 + 3 * i;
    const height = 12;
    const pixels = Buffer.alloc(width * height * 3);
    for (let j = 0; j < pixels.length; j++) pixels[j] = (j * (7 + i) + 31 * i) % 256;
    const path = join(images, `img${i}.png`);
    await sharp(pixels, { raw: { width, height, channels: 3 } }).png().toFile(path);
    paths.push(path);
  }
  const broken = join(images, 'broken.png');
  await writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\n but then nothing like an image'));

  const out = join(dir, 'out');
  const r = await cli(['embed', '--model', fixtureDir('image-learned'), '--out', out, '--batch-size', '4', images]);
  t.equal(r.code, 0, `exit 0 with an unreadable file (stderr: ${r.stderr.trim()})`);
  const skipped = r.stderr.split('\n').filter((line) => line.includes('skipped'));
  t.equal(skipped.length, 1, 'one line for the one unreadable file');
  t.match(skipped[0], /broken\.png/);
  t.match(r.stderr, /6 items: 5 written in 2 parts, 0 already done, 1 unreadable/);

  const rows = await readEmbeddings(out);
  assertEachOnce(t, rows, paths, 'images');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const builder = createMediaInputBuilder(model);
  for (const row of rows) {
    const call = builder.collate([await builder.load(row.path)]);
    const expected = await model.embed(call.inputs, { attentionMask: call.attentionMask });
    const err = relativeErrorOf(row.embedding, expected.data);
    t.ok(err <= 1e-6, `${row.path}: relative error ${err.toExponential(2)}`);
  }

  // A rerun retries only the unreadable file.
  const rerun = await cli(['embed', '--model', fixtureDir('image-learned'), '--out', out, images]);
  t.match(rerun.stderr, /6 items: 0 written in 0 parts, 5 already done, 1 unreadable/);

  const strict = await cli(['embed', '--model', fixtureDir('image-learned'), '--out', join(dir, 'strict'), '--strict', images]);
  t.equal(strict.code, 1, '--strict: exit 1');
  const errorLines = strict.stderr.split('\n').filter((line) => line.startsWith('perceiver-io: '));
  t.equal(errorLines.length, 1, 'one error line');
  t.match(errorLines[0], /broken\.png/);
  t.notMatch(strict.stderr, /\n\s+at /, 'no stack trace');
});

t.test('SIGKILL mid-run loses at most the batch in flight; a rerun completes every item exactly once', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 200);
  const out = join(dir, 'out');
  const args = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--batch-size', '2', join(dir, 'in')];
  const child = spawn(process.execPath, [BIN, ...args], { stdio: 'ignore' });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let partsAtKill = 0;
  for (let waited = 0; waited < 30_000; waited += 10) {
    partsAtKill = (await readdir(out).catch(() => [] as string[])).filter((f) => f.endsWith('.parquet')).length;
    if (partsAtKill >= 5) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  child.kill('SIGKILL');
  const { signal } = await exited;
  t.equal(signal, 'SIGKILL', 'killed while running');
  const survived = await readEmbeddings(out);
  t.ok(survived.length >= 10 && survived.length < paths.length, `${survived.length} rows survived the kill, of ${paths.length}`);
  t.ok(survived.every((r) => r.embedding.length === 64), 'every surviving part is whole');

  const rerun = await cli(args);
  t.equal(rerun.code, 0, `rerun exit 0 (stderr: ${rerun.stderr.trim().split('\n').at(-1)})`);
  t.match(rerun.stderr, new RegExp(`${paths.length} items: ${paths.length - survived.length} written in \\d+ parts, ${survived.length} already done, 0 unreadable, 0 left`));
  assertEachOnce(t, await readEmbeddings(out), paths, 'after the rerun');
  t.same((await readdir(out)).filter((f) => !f.endsWith('.parquet')), [], 'no temporary file left');

  // SIGINT: the batches in flight are finished and written, then exit 130 (a rerun completes, as above).
  const stopOut = join(dir, 'stopped');
  const stopArgs = ['embed', '--model', fixtureDir('text-mlm'), '--out', stopOut, '--batch-size', '2', join(dir, 'in')];
  const stopping = spawn(process.execPath, [BIN, ...stopArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  stopping.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let running = true;
  const stopped = new Promise<number | null>((resolve) =>
    stopping.on('close', (code) => {
      running = false;
      resolve(code);
    }),
  );
  for (let waited = 0; running && waited < 30_000; waited += 10) {
    if ((await readdir(stopOut).catch(() => [] as string[])).filter((f) => f.endsWith('.parquet')).length >= 3) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  stopping.kill('SIGINT');
  t.equal(await stopped, 130, 'SIGINT: exit 130');
  t.match(stderr, /stopping after the batches in flight/);
  const partial = await readEmbeddings(stopOut);
  t.ok(partial.length > 0 && partial.length < paths.length, `${partial.length} rows written before stopping`);
  t.match(stderr, new RegExp(`${paths.length} items: ${partial.length} written in \\d+ parts, 0 already done, 0 unreadable, ${paths.length - partial.length} left`), 'the summary says what is left');
  t.equal(countIds(partial).size, partial.length, 'no duplicates');
});

t.test('--shard 0/2 and 1/2 into one folder cover every item exactly once', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 16);
  const listFile = join(dir, 'list.txt');
  // The manifest: relative paths, a comment, a blank line.
  await writeFile(listFile, `# inputs\n\n${paths.map((p) => `in/${p.split('/').at(-1)}`).join('\n')}\n`);
  const out = join(dir, 'out');
  const base = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--batch-size', '4', '--manifest', listFile];
  const [zero, one] = await Promise.all([cli([...base, '--shard', '0/2']), cli([...base, '--shard', '1/2'])]);
  t.equal(zero.code, 0, `shard 0 exit 0 (${zero.stderr.trim()})`);
  t.equal(one.code, 0, `shard 1 exit 0 (${one.stderr.trim()})`);
  const rows = await readEmbeddings(out);
  assertEachOnce(t, rows, paths, 'two shards');
  const inZero = paths.filter((p) => inShard(itemId(p), 0, 2)).length;
  t.ok(inZero > 0 && inZero < paths.length, `both shards have items (${inZero} and ${paths.length - inZero})`);
  t.match(zero.stderr, new RegExp(`16 items \\(shard 0/2: ${inZero} of 16\\): ${inZero} written`));
  t.match(one.stderr, new RegExp(`16 items \\(shard 1/2: ${paths.length - inZero} of 16\\): ${paths.length - inZero} written`));
  const rerun = await cli([...base, '--shard', '1/2']);
  t.match(rerun.stderr, /: 0 written in 0 parts/, 'a shard rerun adds nothing');
});

t.test('errors: one line, exit 2 for usage, exit 1 for what cannot run', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 2);
  const out = join(dir, 'out');
  const model = fixtureDir('text-mlm');
  const cases: [string, string[], number, RegExp][] = [
    ['no --out', ['embed', '--model', model, paths[0]!], 2, /embed needs --out/],
    ['no --model', ['classify', '--out', out, paths[0]!], 2, /classify needs --model/],
    ['no input', ['embed', '--model', model, '--out', out], 2, /at least one INPUT/],
    ['missing input', ['embed', '--model', model, '--out', out, join(dir, 'nope.txt')], 2, /nope\.txt/],
    ['glob without matches', ['embed', '--model', model, '--out', out, `${dir}/*.flac`], 2, /matches no media files/],
    ['missing manifest', ['embed', '--model', model, '--out', out, '--manifest', join(dir, 'none.txt')], 2, /manifest/],
    ['bad --shard', ['embed', '--model', model, '--out', out, '--shard', '2/2', paths[0]!], 2, /--shard wants i\/N/],
    ['bad --batch-size', ['embed', '--model', model, '--out', out, '--batch-size', '0', paths[0]!], 2, /--batch-size/],
    ['bad --devices', ['embed', '--model', model, '--out', out, '--devices', 'cpu,tpu', paths[0]!], 2, /--devices .*"tpu"/],
    ['bad --dtype', ['embed', '--model', model, '--out', out, '--dtype', 'int4', paths[0]!], 2, /--dtype/],
    ['unknown option', ['embed', '--model', model, '--out', out, '--fast', paths[0]!], 2, /fast/],
    ['no GPU', ['embed', '--model', model, '--out', out, '--devices', 'cuda:0', paths[0]!], 1, /cuda:0.*not available/],
    ['classify without labels', ['classify', '--model', model, '--out', out, paths[0]!], 1, /classify needs a classification checkpoint/],
    ['missing model', ['embed', '--model', join(dir, 'no-model'), '--out', out, paths[0]!], 1, /config\.json/],
  ];
  const runs = await Promise.all(cases.map(([, args]) => cli(args)));
  cases.forEach(([what, , status, message], i) => {
    const r = runs[i]!;
    t.equal(r.signal, null, `${what}: no signal`);
    t.equal(r.code, status, `${what}: exit ${status}`);
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, `${what}: one line (${r.stderr.trim()})`);
    t.match(lines[0], /^perceiver-io: /, `${what}: prefixed`);
    t.match(lines[0], message, `${what}: says what`);
  });
  t.same(await readdir(out).catch(() => []), [], 'nothing written by a failed run');

  const all = await cli(['embed', '--model', model, '--out', join(dir, 'all'), '--devices', 'all', paths[1]!]);
  t.equal(all.code, 0, '--devices all runs without a GPU');
  t.match(all.stderr, /--devices all: no usable GPU \(.*\), running on the cpu/);

  // embed output of one width, then classify (another task) into the same folder: refused.
  t.equal((await cli(['embed', '--model', model, '--out', out, paths[0]!])).code, 0);
  const mixed = await cli(['classify', '--model', fixtureDir('text-classification'), '--out', out, paths[0]!]);
  t.equal(mixed.code, 1);
  t.match(mixed.stderr, /already holds embed output of width 64 .*not classify/);
});

t.test('two runs on one --out: the second is refused while the first writes; every item once; a stale lock is recovered', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 300);
  const out = join(dir, 'out');
  const args = ['embed', '--model', fixtureDir('text-mlm'), '--out', out, '--batch-size', '1', join(dir, 'in')];
  const first = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let firstErr = '';
  first.stderr.on('data', (chunk: Buffer) => (firstErr += chunk.toString()));
  const firstDone = new Promise<number | null>((resolve) => first.on('close', (code) => resolve(code)));
  t.teardown(() => void first.kill('SIGKILL'));
  for (let waited = 0; waited < 30_000; waited += 10) {
    if ((await readdir(out).catch(() => [] as string[])).some((f) => f.endsWith('.parquet'))) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const [second, shardRun] = await Promise.all([cli(args), cli([...args, '--shard', '0/2'])]);
  t.equal(first.exitCode, null, 'the first run was still writing meanwhile');
  t.equal(second.code, 1, 'the second run exits 1');
  const lines = second.stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line (${second.stderr.trim()})`);
  t.match(lines[0], new RegExp(`^perceiver-io: .*out is being written by another run: pid ${first.pid} on .*, started .*\\.perceiver-io-lock\\.all\\); wait for it to finish, or use another --out$`));
  t.equal(shardRun.code, 1, 'a shard run is refused too');
  t.match(shardRun.stderr, /is being written by another run \(all\)/);
  t.equal(await firstDone, 0, `the first run completes (${firstErr.trim().split('\n').at(-1)})`);
  assertEachOnce(t, await readEmbeddings(out), paths, 'one writer');
  t.same((await readdir(out)).filter((f) => !f.endsWith('.parquet')), [], 'the lock is gone after the run');

  // A run killed with SIGKILL leaves its lock; the next run recovers it (its pid is gone).
  await writeFile(join(dir, 'in', 'late.txt'), 'added after the kill');
  const killed = spawn(process.execPath, [BIN, ...args], { stdio: 'ignore' });
  const killedExit = new Promise((resolve) => killed.on('exit', resolve));
  for (let waited = 0; waited < 30_000; waited += 10) {
    if ((await readdir(out)).includes('.perceiver-io-lock.all')) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  killed.kill('SIGKILL');
  await killedExit;
  t.ok((await readdir(out)).includes('.perceiver-io-lock.all'), 'the killed run left its lock');
  const after = await cli(args);
  t.equal(after.code, 0, `the next run recovers the stale lock (${after.stderr.trim().split('\n').at(-1)})`);
  assertEachOnce(t, await readEmbeddings(out), [...paths, join(dir, 'in', 'late.txt')], 'after the recovery');
  t.same((await readdir(out)).filter((f) => !f.endsWith('.parquet')), [], 'no lock or marker left');
});

t.test('resuming with another checkpoint of the same width is refused, naming both; a byte-identical copy resumes', async (t) => {
  const dir = await tempDir(t);
  const paths = await textFolder(join(dir, 'in'), 4);
  const out = join(dir, 'out');
  const source = fixtureDir('text-mlm');
  // Another checkpoint: same config, one weight changed.
  const other = join(dir, 'other-mlm');
  await mkdir(other);
  await writeFile(join(other, 'config.json'), await readFile(join(source, 'config.json')));
  const { tensors } = await readSafetensors(join(source, 'model.safetensors'));
  const changed = new Map(tensors);
  const [name, tensor] = [...tensors].find(([, v]) => v.dtype === 'float32')!;
  const data = Float32Array.from(tensor.data as Float32Array);
  data[0] = data[0]! + 0.5;
  changed.set(name, new Tensor('float32', tensor.shape, data));
  await writeSafetensors(join(other, 'model.safetensors'), changed);
  // A copy of the same checkpoint in another folder: the same identity.
  const copy = join(dir, 'copy-mlm');
  await mkdir(copy);
  for (const file of ['config.json', 'model.safetensors']) await writeFile(join(copy, file), await readFile(join(source, file)));

  const first = await cli(['embed', '--model', source, '--out', out, ...paths.slice(0, 2)]);
  t.equal(first.code, 0, `first run (${first.stderr.trim().split('\n').at(-1)})`);
  const mixed = await cli(['embed', '--model', other, '--out', out, ...paths]);
  t.equal(mixed.code, 1, 'another checkpoint: exit 1');
  const lines = mixed.stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line (${mixed.stderr.trim()})`);
  t.match(lines[0], new RegExp(`already holds output of the model ${source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(sha256:[0-9a-f]{16}, in .*\\.parquet\\), not of ${other.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(sha256:[0-9a-f]{16}\\)`));
  t.equal((await readEmbeddings(out)).length, 2, 'nothing added by the refused run');

  const resumed = await cli(['embed', '--model', copy, '--out', out, ...paths]);
  t.equal(resumed.code, 0, `a byte-identical copy resumes (${resumed.stderr.trim()})`);
  t.match(resumed.stderr, /4 items: 2 written in 1 part, 2 already done/);
  assertEachOnce(t, await readEmbeddings(out), paths, 'resumed with the copy');
});
