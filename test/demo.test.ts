/**
 * `npm run demo` (dist/demo/run.js, spawned as npm runs it): every file of demo/media lands once
 * in the Parquet of the model that takes it, at that model's width; the neighbours it prints are
 * those computed here from the Parquet rows; a second run on the same folder adds no rows and
 * prints the same neighbours; bad options are one line and exit 2.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { itemId, mediaKindOf, readEmbeddings, type EmbeddingRow } from '../lib/index.js';
import { fixtureDir, REPO, tempDir } from './helpers/fixtures.js';

const DEMO = join(REPO, 'dist', 'demo', 'run.js');
const MEDIA = join(REPO, 'demo', 'media');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function demo(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The model (fixture name) each kind of sample goes to, as the demo's brief says. */
const MODEL_OF_KIND: Record<string, string> = { text: 'text-mlm', image: 'multimodal-autoencoding', audio: 'multimodal-autoencoding' };

interface PrintedSpace {
  model: string;
  files: number;
  width: number;
  /** name -> [nearest, cosine as printed] */
  neighbours: Map<string, [string, string]>;
}

/** The sections of the demo's output: a header line per model, then one line per file. */
function parseOutput(stdout: string): Map<string, PrintedSpace> {
  const spaces = new Map<string, PrintedSpace>();
  let current: PrintedSpace | undefined;
  for (const line of stdout.split('\n')) {
    const header = /^[\w ]+: (\d+) files?, \w+ \(test\/fixtures\/([\w-]+)\), (\d+)-d embeddings/.exec(line);
    if (header) {
      current = { model: header[2]!, files: Number(header[1]), width: Number(header[3]), neighbours: new Map() };
      spaces.set(current.model, current);
      continue;
    }
    const neighbour = /^ {2}(\S+)\s+nearest: (\S+)\s+cosine (-?\d+\.\d{6})$/.exec(line);
    if (neighbour && current) current.neighbours.set(neighbour[1]!, [neighbour[2]!, neighbour[3]!]);
  }
  return spaces;
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return dot / Math.sqrt(na * nb);
}

/** The rule the demo states: highest cosine; cosines within 1e-9 of it are a tie, broken by the first name. */
function expectedNeighbours(rows: EmbeddingRow[]): Map<string, [string, string]> {
  const named = rows.map((row) => ({ name: row.path.slice(MEDIA.length + 1), embedding: row.embedding })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out = new Map<string, [string, string]>();
  for (const row of named) {
    const others = named.filter((o) => o.name !== row.name).map((o) => ({ name: o.name, cosine: cosine(row.embedding, o.embedding) }));
    const best = Math.max(...others.map((o) => o.cosine));
    const nearest = others.filter((o) => o.cosine >= best - 1e-9).sort((a, b) => (a.name < b.name ? -1 : 1))[0]!;
    out.set(row.name, [nearest.name, nearest.cosine.toFixed(6)]);
  }
  return out;
}

async function partsIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.parquet')).sort();
}

t.test('embeds demo/media into Parquet, prints the neighbours of the Parquet rows, and resumes', async (t) => {
  const out = join(await tempDir(t), 'out');
  const mediaFiles = (await readdir(MEDIA)).filter((name) => mediaKindOf(name) !== undefined).sort();
  t.ok(mediaFiles.length >= 6, `demo/media holds sample files (${mediaFiles.length})`);
  const expectedPaths = new Map<string, string[]>();
  for (const name of mediaFiles) {
    const model = MODEL_OF_KIND[mediaKindOf(name)!];
    t.ok(model, `${name}: a kind the demo embeds`);
    expectedPaths.set(model!, [...(expectedPaths.get(model!) ?? []), join(MEDIA, name)]);
  }

  const first = await demo(['--out', out]);
  t.equal(first.code, 0, `exit 0 (stderr: ${first.stderr.trim()})`);
  t.match(first.stdout, /random-weight test fixtures/, 'says the weights are random test fixtures');
  t.match(first.stdout, new RegExp(`^Summary: ${mediaFiles.length} items, 2 models, 2 Parquet files; ${mediaFiles.length} embedded by this run, 0 already in `, 'm'), 'summary of the first run');

  const printed = parseOutput(first.stdout);
  t.same([...printed.keys()].sort(), [...expectedPaths.keys()].sort(), 'one section per model');
  const rowsOf = new Map<string, EmbeddingRow[]>();
  const partsOf = new Map<string, string[]>();
  for (const [model, paths] of expectedPaths) {
    const dir = join(out, model);
    const parts = await partsIn(dir);
    t.ok(parts.length >= 1, `${model}: Parquet files written (${parts.join(', ')})`);
    partsOf.set(model, parts);
    const rows = await readEmbeddings(dir);
    rowsOf.set(model, rows);
    t.same(rows.map((r) => r.path).sort(), [...paths].sort(), `${model}: one row per sample file it takes`);
    t.ok(rows.every((r) => r.id === itemId(r.path)), `${model}: ids are itemId(path)`);
    const width = JSON.parse(await readFile(join(fixtureDir(model), 'config.json'), 'utf8')).d_latents as number;
    t.ok(rows.every((r) => r.embedding.length === width && r.embedding.every(Number.isFinite)), `${model}: finite embeddings of width d_latents = ${width}`);

    const section = printed.get(model)!;
    t.equal(section.files, paths.length, `${model}: file count printed`);
    t.equal(section.width, width, `${model}: width printed`);
    t.same([...section.neighbours.entries()], [...expectedNeighbours(rows).entries()], `${model}: printed neighbours and cosines are those of the Parquet rows`);
  }

  const second = await demo(['--out', out]);
  t.equal(second.code, 0, `second run: exit 0 (stderr: ${second.stderr.trim()})`);
  t.match(second.stdout, new RegExp(`^Summary: .*; 0 embedded by this run, ${mediaFiles.length} already in `, 'm'), 'second run: nothing to embed');
  for (const [model, rows] of rowsOf) {
    t.same(await partsIn(join(out, model)), partsOf.get(model), `${model}: second run writes no part`);
    t.equal((await readEmbeddings(join(out, model))).length, rows.length, `${model}: second run adds no rows`);
  }
  const withoutSummary = (stdout: string) => stdout.replace(/^Summary: .*$/m, '');
  t.equal(withoutSummary(second.stdout), withoutSummary(first.stdout), 'second run prints the same neighbours');
});

t.test('bad options: one line on stderr, exit 2', async (t) => {
  const unknown = await demo(['--no-such-option']);
  t.equal(unknown.code, 2, 'unknown option: exit 2');
  t.match(unknown.stderr, /^perceiver-io demo: .*no-such-option.*\n$/, 'unknown option: one line naming it');

  const file = join(await tempDir(t), 'a-file');
  await writeFile(file, 'not a folder');
  const notFolder = await demo(['--out', file]);
  t.equal(notFolder.code, 2, '--out naming a file: exit 2');
  t.match(notFolder.stderr, /^perceiver-io demo: --out wants a folder; .*a-file is a file\n$/, '--out naming a file: one line');
});
