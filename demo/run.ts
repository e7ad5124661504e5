/**
 * `npm run demo`: the batch-embedding job end to end on the sample media kept in demo/media/.
 *
 *   node dist/demo/run.js [--out DIR]     (default DIR: demo-out/ in the repository root)
 *
 * 1. Finds every file in demo/media (discoverItems, as `perceiver-io embed` does).
 * 2. Embeds each file with the checkpoint that takes its kind, through runEmbedJob (the code path
 *    of the CLI, so the same Parquet parts and the same resume): text files with
 *    test/fixtures/text-mlm, images and sounds with test/fixtures/multimodal-autoencoding, so that
 *    images and sounds land in one embedding space. Each model writes to its own subfolder of DIR,
 *    since embeddings of different models are not comparable.
 * 3. Reads the Parquet back (readEmbeddings) and prints, for each file, its nearest neighbour by
 *    cosine similarity among the files of the same model, then a summary.
 *
 * The checkpoints are the repository's test fixtures: small models with random weights (no trained
 * Perceiver small enough to keep in a repository exists), so the neighbours show the pipeline at
 * work, not meaning. Everything it needs is in the repository and built by `npm ci`: it runs
 * offline. A rerun on the same DIR embeds nothing (every id is already there) and prints the same
 * neighbours.
 *
 * Output is deterministic apart from the counts of this run and the time on the summary line.
 * Failures print one line on stderr: exit 2 for a usage error, 1 otherwise.
 */
import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AutoModel, discoverItems, mediaKindOf, MULTIMODAL_FRAMES_PER_SECOND, PerceiverError, readEmbeddings, runEmbedJob, type EmbeddingRow, type EmbedJobItem, type MediaKind } from '../lib/index.js';
import { listParts } from '../lib/batch/job.js';

/** dist/demo/run.js -> the repository root. */
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MEDIA = join(REPO, 'demo', 'media');
const DEFAULT_OUT = join(REPO, 'demo-out');

const USAGE = `Usage: npm run demo [-- --out DIR]
       node dist/demo/run.js [--out DIR]

Embeds the sample files of demo/media with two small checkpoints kept in the repository
(test/fixtures/text-mlm for text; test/fixtures/multimodal-autoencoding for images and sounds),
writes the embeddings as Parquet under DIR (default: demo-out/ in the repository root; a rerun
skips the files already there) and prints each file's nearest neighbour by cosine similarity.
The weights are random test fixtures: the neighbours show the pipeline, not meaning.

Options:
  --out DIR    where to write the Parquet parts (one subfolder per model)
  -h, --help   show this help`;

/** One embedding space: a checkpoint and the media kinds it embeds in this demo. */
interface Space {
  /** test/fixtures/<name>, and the output subfolder. */
  name: string;
  title: string;
  kinds: readonly MediaKind[];
}

const SPACES: readonly Space[] = [
  { name: 'text-mlm', title: 'text', kinds: ['text'] },
  // Video is the multimodal model's own kind; demo/media holds none (decoding it needs ffmpeg), but one dropped there is embedded too.
  { name: 'multimodal-autoencoding', title: 'images and sounds', kinds: ['image', 'audio', 'video'] },
];

/** A usage error: printed as one line, exit 2. */
class UsageError extends Error {}

interface Neighbour {
  /** Paths relative to demo/media. */
  name: string;
  nearest: string;
  cosine: number;
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
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

/**
 * Cosines closer than this are a tie. With random weights the embeddings of inputs the model can
 * barely tell apart differ in the last bits, which another CPU's kernels may round differently;
 * breaking such ties by name keeps the printed neighbours the same on every machine.
 */
const COSINE_TIE = 1e-9;

/**
 * Each row's nearest other row by cosine similarity: the highest cosine, and among cosines within
 * COSINE_TIE of it the first name, so the result depends neither on the order of the Parquet parts
 * nor on rounding. A brute-force scan: a handful of rows needs no index.
 */
function nearestNeighbours(rows: { name: string; embedding: Float32Array }[]): Neighbour[] {
  const sorted = [...rows].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return sorted.flatMap((row, i) => {
    const others = sorted.filter((_, j) => j !== i).map((other) => ({ name: other.name, cosine: cosine(row.embedding, other.embedding) }));
    if (others.length === 0) return [];
    const best = Math.max(...others.map((o) => o.cosine));
    const nearest = others.find((o) => o.cosine >= best - COSINE_TIE)!;
    return [{ name: row.name, nearest: nearest.name, cosine: nearest.cosine }];
  });
}

function parseOptions(argv: string[]): { out: string; help: boolean } {
  try {
    const { values } = parseArgs({ args: argv, options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
    if (values.out === '') throw new UsageError('--out wants a folder path');
    return { out: resolve(values.out ?? DEFAULT_OUT), help: values.help === true };
  } catch (error) {
    throw error instanceof UsageError ? error : new UsageError(`${(error as Error).message} (try --help)`);
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv);
  if (options.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const outInfo = await stat(options.out).catch(() => undefined);
  if (outInfo && !outInfo.isDirectory()) throw new UsageError(`--out wants a folder; ${options.out} is a file`);
  const started = performance.now();
  const print = (line = '') => process.stdout.write(line + '\n');
  // Paths in the repository relative to its root, others absolute.
  const shown = (path: string) => {
    const inRepo = relative(REPO, path);
    return inRepo === '' ? '.' : inRepo.startsWith('..') || isAbsolute(inRepo) ? path : inRepo;
  };

  const items = await discoverItems([MEDIA]);
  const itemsOf = (space: Space): EmbedJobItem[] => items.filter((item) => space.kinds.includes(mediaKindOf(item.path)!));

  print(`perceiver-io demo: ${plural(items.length, 'file')} in demo/media, embedded into Parquet under ${shown(options.out)}`);
  print('Note: both checkpoints are the random-weight test fixtures of test/fixtures (no trained Perceiver');
  print('small enough to keep in a repository exists): the neighbours below show the pipeline at work');
  print('(files -> model -> Parquet -> lookup), not meaning. Untrained, every embedding stays close to');
  print("the model's latent array, so cosines sit near 1.");

  let written = 0;
  let alreadyDone = 0;
  let partFiles = 0;
  let models = 0;
  for (const space of SPACES) {
    const spaceItems = itemsOf(space);
    if (spaceItems.length === 0) continue;
    models++;
    const modelDir = join(REPO, 'test', 'fixtures', space.name);
    const outDir = join(options.out, space.name);
    const model = await AutoModel.fromPretrained(modelDir, { device: 'cpu', dtype: 'float32' });
    const width = model.config.d_latents;
    const modelName = model.constructor.name;
    // What the small fixture sees of each file, so that the output does not overstate it.
    const c = model.config;
    const reads = space.kinds.includes('text')
      ? `the fixture reads the first ${c.max_position_embeddings - 2} bytes of each file: max_position_embeddings ${c.max_position_embeddings}`
      : `the fixture sees ${c.num_frames} frames of ${c.image_size}x${c.image_size} pixels and ${c.num_frames * c.audio_samples_per_frame} audio samples at ${MULTIMODAL_FRAMES_PER_SECOND * c.audio_samples_per_frame} Hz per file`;
    try {
      // strict: the sample files all decode, so one that does not is a broken checkout, not something to skip.
      const result = await runEmbedJob({ models: [model], task: 'embed', items: spaceItems, outDir, strict: true });
      written += result.written;
      alreadyDone += result.skippedDone;
    } finally {
      await model.dispose();
    }

    // Only the rows of the files there now: a folder reused after the samples changed may hold others.
    const ids = new Set(spaceItems.map((item) => item.id));
    const rows = (await readEmbeddings(outDir)).filter((row: EmbeddingRow) => ids.has(row.id));
    const parts = await listParts(outDir);
    partFiles += parts.length;
    const neighbours = nearestNeighbours(rows.map((row) => ({ name: relative(MEDIA, row.path), embedding: row.embedding })));
    const nameWidth = Math.max(...neighbours.map((n) => n.name.length));

    print();
    print(`${space.title}: ${plural(rows.length, 'file')}, ${modelName} (test/fixtures/${space.name}), ${width}-d embeddings, ${plural(parts.length, 'Parquet file')} in ${shown(outDir)}`);
    print(`  (${reads})`);
    for (const n of neighbours) print(`  ${n.name.padEnd(nameWidth)}  nearest: ${n.nearest.padEnd(nameWidth)}  cosine ${n.cosine.toFixed(6)}`);
  }

  const seconds = (performance.now() - started) / 1000;
  print();
  print(
    `Summary: ${plural(items.length, 'item')}, ${plural(models, 'model')}, ${plural(partFiles, 'Parquet file')}; ` +
      `${written} embedded by this run, ${alreadyDone} already in ${shown(options.out)}; ${seconds.toFixed(1)} s`,
  );
  return 0;
}

function oneLine(error: unknown): string {
  if (error instanceof PerceiverError || error instanceof UsageError) return error.message.split('\n')[0]!;
  if (error instanceof Error) return `${error.name}: ${error.message.split('\n')[0]}`;
  return String(error);
}

// `npm run demo | head` closes stdout early: stop there quietly, not with an unhandled 'error' event.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') process.stderr.write(`perceiver-io demo: cannot write the output: ${error.message.split('\n')[0]}\n`);
  process.exit(error.code === 'EPIPE' ? 0 : 1);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`perceiver-io demo: ${oneLine(error)}\n`);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  },
);
