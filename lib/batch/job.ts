/**
 * Batch embedding and classification of files into Parquet parts.
 *
 * - embedItemsToPart: one list of items, one loaded model, one part (what a queue worker runs).
 * - runEmbedJob: a whole job (what `perceiver-io embed` / `classify` runs): locks the output folder
 *   (or its shard of it) against other runs (lib/batch/output_lock.ts), skips items already in the
 *   output folder (their ids), takes its shard, feeds batches to one model per device
 *   concurrently, and writes each completed batch as its own part, atomically, so a crash loses at
 *   most the batches in flight and a rerun on the same folder adds no duplicate rows.
 *
 * Every part records the checkpoint's identity (lib/batch/model_identity.ts); a folder holding parts
 * of another model is refused (ModelMismatchError), so resuming never mixes two models' rows. Both
 * runEmbedJob and embedItemsToPart leave out items other parts already hold.
 *
 * Per model the work is a two-stage pipeline: while batch k runs on the model, the next batches
 * (`readAhead` of them, default 2) are read and decoded, so decoding overlaps with compute. The
 * decoding and preprocessing run in the process's pool of worker threads (lib/media/decode_pool.ts;
 * `decodeWorkers`, default the cores but one) shared by the job's models, so the main thread is
 * left to the remote reads, the engine's calls and the writes; `decodeWorkers: 0` decodes on the
 * main thread instead (the same values, bit for bit). At most `readAhead` batches per model are
 * being read and decoded at once, so memory stays bounded however fast the reads are.
 *
 * Embeddings are the mean over the latents of the encoder output (model.embed, pooling 'mean').
 * Classify runs one forward and takes the same mean from its lastHiddenState (the latents) beside
 * the top-1 label of softmax(logits) with its probability, so it keeps the embedding at no cost.
 *
 * A file that cannot be read or decoded, or whose kind the model does not take, is a failure of that
 * item alone: it is reported and skipped, and the rest of its batch is written.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { InvalidArgumentError, MediaDecodeError, ModelMismatchError } from '../errors.js';
import { PerceiverClassificationDecoder } from '../modeling/decoders.js';
import { meanPoolLatents, type PerceiverModel } from '../modeling/perceiver_model.js';
import type { MediaInputBuilder, PreparedItem } from '../media/model_inputs.js';
import type { Tensor } from '../tensor.js';
import { isRemote, RemoteReader } from '../io/remote.js';
import { mediaKindOf } from '../media/kinds.js';
import { inShard } from './discover.js';
import { ShardMemberReader, splitMember } from './webdataset.js';
import type { ModelIdentity } from './model_identity.js';
import { lockOutputFolder } from './output_lock.js';
import { isS3Output, partStore, useS3ForOutputs } from './store.js';
import { checkPartSize, finishCompactions, compactFolder, RunCompactor, type CompactionHooks } from './compaction.js';
import { listParts, preloadParquet, readPartIds, removeStaleTempFiles, withCommittedParts, writeEmbeddingPart, type EmbeddingColumns, type IdKind, type PartMetadata } from './parquet.js';

export { discoverItems, itemId, inShard } from './discover.js';
export { readEmbeddings, listParts, type EmbeddingRow, type PartMetadata, type IdKind } from './parquet.js';
export { compactFolder, compactParts, DEFAULT_PART_SIZE, type CompactionStep } from './compaction.js';
export { modelIdentity, type ModelIdentity } from './model_identity.js';

export interface EmbedJobItem {
  id: string;
  path: string;
  /** Content ids: every path with these bytes (`path` is the first); written as the `paths` column. */
  paths?: string[];
  /** Set by discovery when the item could not be read to compute its id: it fails with this reason. */
  unreadable?: string;
}

export type EmbedTask = 'embed' | 'classify';

export interface EmbedFailure {
  id: string;
  path: string;
  /** One line: why the item was skipped. */
  reason: string;
  /** The error itself (a MediaDecodeError or InvalidArgumentError). */
  error?: unknown;
}

export interface EmbedPartOptions {
  /** Already loaded. */
  model: PerceiverModel<any>;
  task: EmbedTask;
  items: EmbedJobItem[];
  outDir: string;
  /** The part is written atomically as `${outDir}/${partName}.parquet`; rewriting the same partName replaces it. */
  partName: string;
  /** Items per forward (default 16). */
  batchSize?: number;
  /** What the items' ids are (default 'path'): recorded in the part, and a folder of the other kind is refused. */
  idKind?: IdKind;
  /** Write into this table of the LanceDB database `outDir` instead of a part (partName is then unused): each batch one insert-if-absent. */
  lanceTable?: string;
  /** Called just before each write; a throw stops the write (a queue worker checks that it still holds its shard). */
  beforeWrite?: () => Promise<void>;
  /** The checkpoint's identity (modelIdentity(folder)), recorded in the part and checked against the folder's other parts. */
  modelIdentity?: ModelIdentity;
  /** Reads http(s):// and s3:// items; default: one with default settings, closed after the part. */
  remote?: RemoteReader;
  /** Threads that decode the items (default: the cores but one); 0: decode on the calling thread. */
  decodeWorkers?: number;
  /** Batches read and decoded ahead of the one computing (default 2). */
  readAhead?: number;
  onProgress?: (done: number, failed: number) => void;
}

export interface EmbedPartResult {
  written: number;
  failed: EmbedFailure[];
  /** Items left out because other parts of the folder already hold them. */
  skippedDone: number;
}

export interface EmbedJobOptions {
  /** One loaded model per device; batches are fed to all of them concurrently. */
  models: PerceiverModel<any>[];
  task: EmbedTask;
  /** Every item of the job (see discoverItems); the shard and the items already done are taken out here. */
  items: EmbedJobItem[];
  outDir: string;
  /** Items per forward and per part (default 16). */
  batchSize?: number;
  /**
   * The checkpoint's identity (modelIdentity(folder)): recorded in every part, and a folder holding
   * parts of another identity is refused (ModelMismatchError). Without it, the identity is a hash of
   * the loaded config, which does not tell apart two checkpoints of one architecture.
   */
  modelIdentity?: ModelIdentity;
  /** Only the items of shard `index` of `count` (by id). */
  shard?: { index: number; count: number };
  /** What the items' ids are (see discoverItems' `id`); recorded in the parts, and a folder of the other kind is refused. Default 'path'. */
  idKind?: IdKind;
  /**
   * Target bytes of a part (default 128 MiB; 0: one part per batch, never merged). Batches are
   * written as small parts and merged crash-safely (lib/batch/compaction.ts) as they reach it; an
   * unsharded run also merges the folder's other small parts at the end.
   */
  partSize?: number;
  /** Tests: stop a compaction at a given step. */
  compactionHooks?: CompactionHooks;
  /** Reads http(s):// and s3:// items (bounded, retried, timed); default: one with default settings. */
  remote?: RemoteReader;
  /**
   * Write into this table of the LanceDB database `outDir` (lib/batch/lance.ts) instead of Parquet
   * parts: one atomic insert-if-absent per batch, the table's fragments compacted at the end.
   */
  lanceTable?: string;
  /**
   * Threads that read and decode the items (default: the cores but one, see
   * defaultDecodeWorkers); 0: decode on the calling thread.
   */
  decodeWorkers?: number;
  /**
   * Batches read and decoded ahead of the one computing, per model (default 2): what bounds the
   * items held in memory (at most batchSize x (readAhead + 1) per model).
   */
  readAhead?: number;
  /** Stop at the first item that fails, and throw its error (after writing the batches done). */
  strict?: boolean;
  /** Stops taking new batches; those in flight are finished and written. */
  signal?: AbortSignal;
  /** Called once per failed item, as its batch completes. */
  onItemFailed?: (failure: EmbedFailure) => void;
  /** Called once before the first batch (0, 0, total), then after each batch: items done (written or failed) of `total` to do. */
  onProgress?: (done: number, failed: number, total: number) => void;
}

export interface EmbedJobResult {
  /** Items given. */
  total: number;
  /** Items of other shards. */
  otherShards: number;
  /** Items of this shard already in the output folder. */
  skippedDone: number;
  /** Items this run had to do. */
  todo: number;
  /** Rows written by this run. */
  written: number;
  failed: EmbedFailure[];
  /** Batch parts written by this run. */
  parts: number;
  /** Compacted parts written by this run (each replaces two parts or more). */
  compactedParts: number;
  /** True when the signal stopped the run before every item was done. */
  interrupted: boolean;
  seconds: number;
  /**
   * Seconds the models spent computing batches (summed over models). Over `seconds` times the
   * number of models it is the engine's busy share: near 1 when decoding and I/O keep up.
   */
  engineSeconds: number;
  /** Threads that decoded the items (0: the calling thread). */
  decodeWorkers: number;
  /** The most items being read and decoded at once (at most batchSize x readAhead per model). */
  peakDecoding: number;
}

const DEFAULT_BATCH_SIZE = 16;
const DEFAULT_READ_AHEAD = 2;

interface LoadedBatch {
  ok: { item: EmbedJobItem; prepared: PreparedItem }[];
  failed: EmbedFailure[];
}

interface ComputedBatch {
  columns?: EmbeddingColumns;
  failed: EmbedFailure[];
}

/** Errors that belong to one item (its file, its kind, its content), as opposed to the model or the machine. */
function isItemError(error: unknown): boolean {
  return error instanceof MediaDecodeError || error instanceof InvalidArgumentError;
}

function failureOf(item: EmbedJobItem, error: unknown): EmbedFailure {
  const message = error instanceof Error ? error.message : String(error);
  return { id: item.id, path: item.path, reason: message.split('\n')[0]!, error };
}

/**
 * Where remote items and tar shard members are read from: each object is read (lib/io/remote.ts,
 * lib/batch/webdataset.ts) and its bytes handed to the builder's loadBytes (decoded in memory; a
 * video goes through a temporary file of its own for ffmpeg), so at most the batches being decoded
 * are held.
 */
export class RemoteItemLoader {
  private ownReader?: RemoteReader;
  private members?: ShardMemberReader;

  /** `reader`: for remote objects (one with default settings is made when needed); `items`: those the run will load (tar members among them are streamed shard by shard). */
  constructor(private readonly given: RemoteReader | undefined, items: EmbedJobItem[]) {
    const wanted = new Set(items.filter((item) => splitMember(item.path)).map((item) => item.path));
    if (wanted.size > 0) this.members = new ShardMemberReader(() => this.reader(), wanted);
  }

  /** Whether an item is read by this loader rather than from a local file. */
  static handles(path: string): boolean {
    return isRemote(path) || splitMember(path) !== undefined;
  }

  private reader(): RemoteReader {
    return this.given ?? (this.ownReader ??= new RemoteReader());
  }

  async load(builder: MediaInputBuilder, path: string): Promise<PreparedItem> {
    const member = splitMember(path);
    const name = member ? member.member : new URL(path.replace(/^s3:/i, 'https:')).pathname;
    if (mediaKindOf(name) === undefined) throw new MediaDecodeError(path, 'of no known media kind (by its extension)');
    const bytes = member ? await this.members!.read(path) : await this.reader().read(path);
    return builder.loadBytes(bytes, path, name);
  }

  async close(): Promise<void> {
    this.members?.close();
    await this.ownReader?.close();
  }
}

/** Items being read and decoded now, and the most at once (EmbedJobResult.peakDecoding). */
interface DecodingCount {
  now: number;
  peak: number;
}

async function loadBatch(builder: MediaInputBuilder, items: EmbedJobItem[], remote: RemoteItemLoader | undefined, decoding: DecodingCount): Promise<LoadedBatch> {
  decoding.now += items.length;
  decoding.peak = Math.max(decoding.peak, decoding.now);
  const settled = await Promise.allSettled(items.map(async (item) => {
    try {
      if (item.unreadable !== undefined) throw new MediaDecodeError(item.path, item.unreadable);
      if (RemoteItemLoader.handles(item.path)) {
        if (!remote) throw new MediaDecodeError(item.path, 'a remote object or tar member, and the job has no loader for it');
        return await remote.load(builder, item.path);
      }
      return await builder.load(item.path);
    } finally {
      decoding.now--;
    }
  }));
  const batch: LoadedBatch = { ok: [], failed: [] };
  settled.forEach((result, i) => {
    if (result.status === 'fulfilled') batch.ok.push({ item: items[i]!, prepared: result.value });
    else batch.failed.push(failureOf(items[i]!, result.reason));
  });
  return batch;
}

function labelsOf(model: PerceiverModel<any>, count: number): string[] {
  return Array.from({ length: count }, (_, i) => model.config.id2label[String(i)] ?? `LABEL_${i}`);
}

/** Top-1 label and its softmax probability per row of [batch, labels] logits. */
function topLabels(logits: Tensor<'float32'>, names: string[]): { labels: string[]; scores: Float32Array } {
  const [batch, count] = logits.shape as [number, number];
  const labels: string[] = [];
  const scores = new Float32Array(batch);
  for (let b = 0; b < batch; b++) {
    const row = logits.data.subarray(b * count, (b + 1) * count);
    let best = 0;
    for (let i = 1; i < count; i++) if (row[i]! > row[best]!) best = i;
    let sum = 0;
    for (let i = 0; i < count; i++) sum += Math.exp(row[i]! - row[best]!);
    labels.push(names[best]!);
    scores[b] = 1 / sum;
  }
  return { labels, scores };
}

function checkTask(model: PerceiverModel<any>, task: EmbedTask): void {
  if (task !== 'embed' && task !== 'classify') throw new InvalidArgumentError('task', "'embed' or 'classify'", task);
  if (typeof model !== 'object' || model === null || typeof (model as { embed?: unknown }).embed !== 'function' || !model.config) {
    throw new InvalidArgumentError('model', 'a loaded PerceiverModel', model);
  }
  if (task === 'classify' && !(model.decoder instanceof PerceiverClassificationDecoder)) {
    throw new InvalidArgumentError(
      'model',
      'a classification checkpoint',
      model.constructor.name,
      `classify needs a classification checkpoint (PerceiverForSequenceClassification or an image classifier); ${model.constructor.name} has no labels: use embed`,
    );
  }
}

function concatColumns(parts: EmbeddingColumns[], width: number, task: EmbedTask): EmbeddingColumns {
  const rows = parts.reduce((n, p) => n + p.ids.length, 0);
  const embeddings = new Float32Array(rows * width);
  const scores = task === 'classify' ? new Float32Array(rows) : undefined;
  let offset = 0;
  for (const part of parts) {
    embeddings.set(part.embeddings, offset * width);
    if (scores) scores.set(part.scores!, offset);
    offset += part.ids.length;
  }
  return {
    ids: parts.flatMap((p) => p.ids),
    paths: parts.flatMap((p) => p.paths),
    width,
    embeddings,
    labels: scores ? parts.flatMap((p) => p.labels!) : undefined,
    scores,
    allPaths: parts[0]?.allPaths ? parts.flatMap((p) => p.allPaths!) : undefined,
  };
}

async function computeBatch(model: PerceiverModel<any>, task: EmbedTask, builder: MediaInputBuilder, loaded: LoadedBatch): Promise<ComputedBatch> {
  const run = async (group: LoadedBatch['ok']): Promise<EmbeddingColumns> => {
    const { inputs, attentionMask } = builder.collate(group.map((g) => g.prepared));
    const ids = group.map((g) => g.item.id);
    const paths = group.map((g) => g.item.path);
    const allPaths = group.some((g) => g.item.paths) ? group.map((g) => g.item.paths ?? [g.item.path]) : undefined;
    if (task === 'embed') {
      const pooled = await model.embed(inputs, { attentionMask, pooling: 'mean' });
      return { ids, paths, width: pooled.shape[1]!, embeddings: pooled.data, allPaths };
    }
    const out = await model.forward({ inputs, attentionMask });
    const logits = out.logits as Tensor<'float32'>;
    return { ids, paths, width: out.lastHiddenState.shape[2]!, embeddings: meanPoolLatents(out.lastHiddenState).data, ...topLabels(logits, labelsOf(model, logits.shape[1]!)), allPaths };
  };
  const failed = [...loaded.failed];
  if (loaded.ok.length === 0) return { failed };
  try {
    return { columns: await run(loaded.ok), failed };
  } catch (error) {
    if (!isItemError(error)) throw error;
    // One item spoiled the batch (or the items cannot be stacked): run them one by one, so only the
    // items that fail on their own are skipped.
    if (loaded.ok.length === 1) return { failed: [...failed, failureOf(loaded.ok[0]!.item, error)] };
    const done: EmbeddingColumns[] = [];
    for (const one of loaded.ok) {
      try {
        done.push(await run([one]));
      } catch (itemError) {
        if (!isItemError(itemError)) throw itemError;
        failed.push(failureOf(one.item, itemError));
      }
    }
    return { columns: done.length ? concatColumns(done, done[0]!.width, task) : undefined, failed };
  }
}

/** How runPipeline reads, decodes and counts. */
interface PipelineIo {
  builder: MediaInputBuilder;
  /** Batches read and decoded ahead of the one computing. */
  readAhead: number;
  remote?: RemoteItemLoader;
  decoding: DecodingCount;
  onEngineTime?: (seconds: number) => void;
}

/**
 * Runs batches from `next()` through one model until it returns undefined or `stopped()` is true,
 * reading and decoding up to `readAhead` next batches while the current one computes. Batches are
 * computed and handed to `onBatch` in the order `next()` gave them.
 */
async function runPipeline(
  model: PerceiverModel<any>,
  task: EmbedTask,
  next: () => EmbedJobItem[] | undefined,
  stopped: () => boolean,
  onBatch: (items: EmbedJobItem[], computed: ComputedBatch) => Promise<void>,
  { builder, readAhead, remote, decoding, onEngineTime }: PipelineIo,
): Promise<void> {
  // loadBatch never rejects (failures are per item), so a pending prefetch is never an unhandled rejection.
  const ahead: { items: EmbedJobItem[]; loading: Promise<LoadedBatch> }[] = [];
  const fill = () => {
    while (ahead.length < readAhead && !stopped()) {
      const items = next();
      if (!items) return;
      ahead.push({ items, loading: loadBatch(builder, items, remote, decoding) });
    }
  };
  try {
    fill();
    for (let batch = ahead.shift(); batch; batch = ahead.shift()) {
      const loaded = await batch.loading;
      fill();
      const computeStarted = performance.now();
      const computed = await computeBatch(model, task, builder, loaded);
      onEngineTime?.((performance.now() - computeStarted) / 1000);
      await onBatch(batch.items, computed);
      if (stopped()) return; // the batches read ahead are dropped: the run counts them as not done
    }
  } finally {
    // Once their reads end: nothing of this pipeline is left reading or decoding when it returns.
    await Promise.all(ahead.map((b) => b.loading));
  }
}

function checkItems(items: unknown): asserts items is EmbedJobItem[] {
  if (!Array.isArray(items)) throw new InvalidArgumentError('items', 'an array of { id, path }', items);
  items.forEach((item, i) => {
    const { id, path, paths } = (item ?? {}) as Partial<EmbedJobItem>;
    if (typeof id !== 'string' || id === '' || typeof path !== 'string' || path === '') throw new InvalidArgumentError(`items[${i}]`, '{ id, path } with non-empty strings', item);
    if (paths !== undefined && (!Array.isArray(paths) || paths.length === 0 || paths.some((p) => typeof p !== 'string' || p === ''))) throw new InvalidArgumentError(`items[${i}].paths`, 'a non-empty array of paths', paths);
  });
}

function checkReadAhead(readAhead: unknown): number {
  if (readAhead === undefined) return DEFAULT_READ_AHEAD;
  if (typeof readAhead !== 'number' || !Number.isSafeInteger(readAhead) || readAhead < 1 || readAhead > 64) throw new InvalidArgumentError('readAhead', 'an integer from 1 to 64', readAhead);
  return readAhead;
}

/** The job's decoding threads (the process's pool of that size; none for decodeWorkers 0) and a builder per model that uses them. */
async function decodersFor(models: PerceiverModel<any>[], decodeWorkers: unknown): Promise<{ workers: number; builders: MediaInputBuilder[] }> {
  // Loaded on first use: the media decoders pull in sharp, audio-decode and ffmpeg plumbing.
  const { sharedDecodePool, checkDecodeWorkers, defaultDecodeWorkers } = await import('../media/decode_pool.js');
  const { createMediaInputBuilder, mediaInputSpec } = await import('../media/model_inputs.js');
  const workers = decodeWorkers === undefined ? defaultDecodeWorkers() : checkDecodeWorkers(decodeWorkers);
  if (workers === 0) return { workers, builders: models.map((model) => createMediaInputBuilder(model)) };
  const pool = sharedDecodePool(workers);
  return { workers, builders: models.map((model) => pool.builder(mediaInputSpec(model))) };
}

function checkBatchSize(batchSize: unknown): number {
  if (batchSize === undefined) return DEFAULT_BATCH_SIZE;
  if (typeof batchSize !== 'number' || !Number.isSafeInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError('batchSize', 'a positive integer', batchSize);
  return batchSize;
}

/** What every part of a run records: its task, model class and width, and the checkpoint's identity. */
function metadataFor(model: PerceiverModel<any>, task: EmbedTask, identity: ModelIdentity | undefined, idKind: IdKind = 'path'): PartMetadata {
  if (idKind !== 'path' && idKind !== 'content') throw new InvalidArgumentError('idKind', "'path' or 'content'", idKind);
  if (identity !== undefined && (typeof identity !== 'object' || identity === null || typeof identity.id !== 'string' || identity.id === '' || typeof identity.source !== 'string')) {
    throw new InvalidArgumentError('modelIdentity', 'an object { id, source } from modelIdentity(folder)', identity);
  }
  const { id, source } = identity ?? { id: `config-sha256:${createHash('sha256').update(JSON.stringify(model.config)).digest('hex')}`, source: model.constructor.name };
  return { task, model: model.constructor.name, width: model.config.d_latents, modelId: id, modelSource: source, idKind };
}

/** What a run expects of the parts already in its folder: its task, and its width and model identity when known. */
export interface ExpectedOutput {
  task: EmbedTask;
  width?: number;
  modelId?: string;
  modelSource?: string;
  /** Absent: not checked. */
  idKind?: IdKind;
}

/**
 * The ids already written to `outDir` (its parts but `exceptFile`), after checking that every part
 * was written by the same task, width and model: InvalidArgumentError (naming `argument`) for
 * another task or width, ModelMismatchError for another checkpoint.
 */
export async function readDoneChecked(outDir: string, expected: ExpectedOutput, argument = 'outDir', exceptFile?: string): Promise<Set<string>> {
  return withCommittedParts(outDir, (files) => readDoneOf(outDir, files, expected, argument, exceptFile));
}

async function readDoneOf(outDir: string, files: string[], expected: ExpectedOutput, argument: string, exceptFile?: string): Promise<Set<string>> {
  const ids = new Set<string>();
  const widthText = expected.width === undefined ? '' : ` of width ${expected.width}`;
  for (const file of files) {
    if (file === exceptFile) continue;
    const part = await readPartIds(file);
    const other = part.metadata;
    if (other && (other.task !== expected.task || (expected.width !== undefined && other.width !== expected.width))) {
      throw new InvalidArgumentError(
        argument,
        `a folder of ${expected.task} parts${widthText}`,
        file,
        `${outDir} already holds ${other.task} output of width ${other.width} (${file}), not ${expected.task}${widthText}: use another output folder`,
      );
    }
    if (other && expected.modelId !== undefined && other.modelId !== expected.modelId) {
      throw new ModelMismatchError(
        outDir,
        { id: other.modelId ?? 'none recorded', source: other.modelSource ?? `${other.model} (written without a model identity)`, file },
        { id: expected.modelId, source: expected.modelSource ?? expected.modelId },
      );
    }
    if (other && expected.idKind !== undefined && (other.idKind ?? 'path') !== expected.idKind) {
      throw new InvalidArgumentError(
        argument,
        `a folder of parts with ${expected.idKind} ids`,
        file,
        `${outDir} holds parts with ${other.idKind ?? 'path'} ids (${file}), not ${expected.idKind} ids: use --id ${other.idKind ?? 'path'} or another output folder`,
      );
    }
    for (const id of part.ids) ids.add(id);
  }
  return ids;
}

/** Embeds (or classifies) items with one model and writes them as one part. */
export async function embedItemsToPart(options: EmbedPartOptions): Promise<EmbedPartResult> {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object { model, task, items, outDir, partName }', options);
  const { model, task, outDir, partName, onProgress } = options;
  checkTask(model, task);
  checkItems(options.items);
  const batchSize = checkBatchSize(options.batchSize);
  if (typeof outDir !== 'string' || outDir === '') throw new InvalidArgumentError('outDir', 'a folder path', outDir);
  if (typeof partName !== 'string' || !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(partName)) {
    throw new InvalidArgumentError('partName', 'a file name of letters, digits, ".", "_" and "-", not starting with "."', partName);
  }
  const readAhead = checkReadAhead(options.readAhead);
  const decoders = await decodersFor([model], options.decodeWorkers);
  const builder = decoders.builders[0]!;
  const metadata = metadataFor(model, task, options.modelIdentity, options.idKind);
  if (options.lanceTable !== undefined) return embedItemsToLance(options, builder, metadata, readAhead, batchSize);
  return embedPart(options, builder, metadata, readAhead, batchSize);
}

async function embedPart(
  { model, task, outDir, partName, onProgress, ...options }: EmbedPartOptions,
  builder: MediaInputBuilder,
  metadata: PartMetadata,
  readAhead: number,
  batchSize: number,
): Promise<EmbedPartResult> {
  const file = partStore(outDir).path(`${partName}.parquet`);
  // Items another part already holds are left out, so that a shard queued twice with other
  // neighbours (or one whose items a local run wrote meanwhile) adds no second row. This part's own
  // earlier version does not count: it is replaced whole.
  const alreadyDone = await readDoneChecked(outDir, metadata, 'outDir', file);
  const items = options.items.filter((item) => !alreadyDone.has(item.id));
  let skippedDone = options.items.length - items.length;
  const columns: EmbeddingColumns[] = [];
  const failed: EmbedFailure[] = [];
  let done = 0;
  let offset = 0;
  const next = () => (offset < items.length ? items.slice(offset, (offset += batchSize)) : undefined);
  const remote = items.some((item) => RemoteItemLoader.handles(item.path)) ? new RemoteItemLoader(options.remote, items) : undefined;
  try {
    const onBatch = async (batch: EmbedJobItem[], computed: ComputedBatch) => {
      if (computed.columns) columns.push(computed.columns);
      failed.push(...computed.failed);
      done += batch.length;
      onProgress?.(done, failed.length);
    };
    await runPipeline(model, task, next, () => false, onBatch, { builder, readAhead, remote, decoding: { now: 0, peak: 0 } });
  } finally {
    await remote?.close();
  }
  await makeOutputFolder(outDir);
  let all = columns.length === 0 ? undefined : concatColumns(columns, columns[0]!.width, task);
  if (all) {
    // Checked again just before writing (a stat per part: the parts read above are cached), so
    // rows another writer added while this shard computed are not written a second time.
    const doneNow = await readDoneChecked(outDir, metadata, 'outDir', file);
    const kept = all.ids.flatMap((id, row) => (doneNow.has(id) ? [] : [row]));
    skippedDone += all.ids.length - kept.length;
    all = kept.length === 0 ? undefined : kept.length === all.ids.length ? all : selectRows(all, kept);
  }
  if (!all) {
    await partStore(outDir).remove(`${partName}.parquet`);
    return { written: 0, failed, skippedDone };
  }
  await options.beforeWrite?.();
  await writeEmbeddingPart(file, all, metadata);
  return { written: all.ids.length, failed, skippedDone };
}

/**
 * embedItemsToPart into a LanceDB table: the ids already there are left out, and the rows go in
 * with one insert-if-absent (lib/batch/lance.ts), so a shard run twice adds nothing the second time.
 */
async function embedItemsToLance(options: EmbedPartOptions, builder: MediaInputBuilder, metadata: PartMetadata, readAhead: number, batchSize: number): Promise<EmbedPartResult> {
  const { LanceOutput } = await import('./lance.js');
  const lance = await LanceOutput.open(options.outDir, options.lanceTable!, metadata);
  try {
    const alreadyDone = await lance.doneIds();
    const items = options.items.filter((item) => !alreadyDone.has(item.id));
    const result: EmbedPartResult = { written: 0, failed: [], skippedDone: options.items.length - items.length };
    let offset = 0;
    let done = 0;
    const next = () => (offset < items.length ? items.slice(offset, (offset += batchSize)) : undefined);
    const remote = items.some((item) => RemoteItemLoader.handles(item.path)) ? new RemoteItemLoader(options.remote, items) : undefined;
    try {
      const onBatch = async (batch: EmbedJobItem[], computed: ComputedBatch) => {
        if (computed.columns) {
          await options.beforeWrite?.();
          const inserted = await lance.write(computed.columns);
          result.written += inserted;
          result.skippedDone += computed.columns.ids.length - inserted;
        }
        result.failed.push(...computed.failed);
        done += batch.length;
        options.onProgress?.(done, result.failed.length);
      };
      await runPipeline(options.model, options.task, next, () => false, onBatch, { builder, readAhead, remote, decoding: { now: 0, peak: 0 } });
    } finally {
      await remote?.close();
    }
    return result;
  } finally {
    lance.close();
  }
}

/** The given rows of `columns`, in that order. */
function selectRows(columns: EmbeddingColumns, rows: number[]): EmbeddingColumns {
  const { width } = columns;
  const embeddings = new Float32Array(rows.length * width);
  rows.forEach((row, i) => embeddings.set(columns.embeddings.subarray(row * width, (row + 1) * width), i * width));
  return {
    ids: rows.map((row) => columns.ids[row]!),
    paths: rows.map((row) => columns.paths[row]!),
    width,
    embeddings,
    labels: columns.labels && rows.map((row) => columns.labels![row]!),
    scores: columns.scores && Float32Array.from(rows, (row) => columns.scores![row]!),
    allPaths: columns.allPaths && rows.map((row) => columns.allPaths![row]!),
  };
}

/** Creates the output folder (and its parents), or checks that an S3 output answers; otherwise an InvalidArgumentError naming `argument`. */
export async function makeOutputFolder(outDir: string, argument = 'outDir'): Promise<void> {
  await partStore(outDir).prepare(argument);
}

/** The ids already written to a folder's parts. */
export async function readDoneIds(outDir: string): Promise<Set<string>> {
  if (typeof outDir !== 'string' || outDir === '') throw new InvalidArgumentError('outDir', 'a folder path', outDir);
  return withCommittedParts(outDir, async (files) => {
    const ids = new Set<string>();
    for (const file of files) for (const id of (await readPartIds(file)).ids) ids.add(id);
    return ids;
  });
}

/** A whole job: shard, resume, one pipeline per model, one part per batch. */
export async function runEmbedJob(options: EmbedJobOptions): Promise<EmbedJobResult> {
  const started = performance.now();
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object { models, task, items, outDir }', options);
  const { models, task, items, outDir, shard, strict = false, signal, onItemFailed, onProgress } = options;
  const partSize = checkPartSize(options.partSize);
  if (!Array.isArray(models) || models.length === 0) throw new InvalidArgumentError('models', 'a non-empty array of loaded models', models);
  for (const model of models) checkTask(model, task);
  checkItems(items);
  const batchSize = checkBatchSize(options.batchSize);
  const readAhead = checkReadAhead(options.readAhead);
  if (typeof outDir !== 'string' || outDir === '') throw new InvalidArgumentError('outDir', 'a folder path', outDir);
  if (shard !== undefined) {
    const { index, count } = shard ?? {};
    if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(index) || index < 0 || index >= count) {
      throw new InvalidArgumentError('shard', '{ index, count } with 0 <= index < count', shard);
    }
  }
  const widths = new Set(models.map((m) => m.config.d_latents));
  if (widths.size > 1) throw new InvalidArgumentError('models', 'copies of one checkpoint', `models of embedding widths ${[...widths].join(', ')}`);
  // Checked here, before the folder is touched.
  const decoders = await decodersFor(models, options.decodeWorkers);

  // The first part write should not wait for the WebAssembly to compile.
  preloadParquet();
  if (isS3Output(outDir) && options.remote) useS3ForOutputs(options.remote);
  await makeOutputFolder(outDir);
  // One writer per folder (or per shard of it): two runs would both see the same items as not done.
  const lock = await lockOutputFolder(outDir, shard ? { kind: 'shard', index: shard.index, count: shard.count } : { kind: 'all' });
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const metadata = metadataFor(models[0]!, task, options.modelIdentity, options.idKind);
    let lance: import('./lance.js').LanceOutput | undefined;
    let done: Set<string>;
    if (options.lanceTable !== undefined) {
      const { LanceOutput } = await import('./lance.js');
      lance = await LanceOutput.open(outDir, options.lanceTable, metadata);
      const opened = lance;
      cleanups.push(async () => opened.close());
      done = await lance.doneIds();
    } else {
      await removeStaleTempFiles(outDir);
      await finishCompactions(outDir);
      done = await readDoneChecked(outDir, metadata);
    }

    const mine = shard ? items.filter((item) => inShard(item.id, shard.index, shard.count)) : items;
    const todo = mine.filter((item) => !done.has(item.id));
    const result: EmbedJobResult = {
      total: items.length,
      otherShards: items.length - mine.length,
      skippedDone: mine.length - todo.length,
      todo: todo.length,
      written: 0,
      failed: [],
      parts: 0,
      compactedParts: 0,
      interrupted: false,
      seconds: 0,
      engineSeconds: 0,
      decodeWorkers: 0,
      peakDecoding: 0,
    };

    // Unique per run, so parts of earlier runs and of other shards writing to the same folder never collide.
    const runTag = `part-${Date.now().toString(36)}-${process.pid}-${randomBytes(3).toString('hex')}${shard ? `-shard${shard.index}of${shard.count}` : ''}`;
    let sequence = 0;
    let offset = 0;
    let processed = 0;
    let strictError: unknown;
    let fatal = false;
    const stopped = () => fatal || strictError !== undefined || signal?.aborted === true;
    const next = () => (!stopped() && offset < todo.length ? todo.slice(offset, (offset += batchSize)) : undefined);
    result.decodeWorkers = decoders.workers;
    const decoding: DecodingCount = { now: 0, peak: 0 };
    const compactor = new RunCompactor(outDir, partSize, options.compactionHooks);
    const remote = todo.some((item) => RemoteItemLoader.handles(item.path)) ? new RemoteItemLoader(options.remote, todo) : undefined;
    cleanups.push(async () => remote?.close());
    onProgress?.(0, 0, todo.length);

    const onBatch = async (batch: EmbedJobItem[], computed: ComputedBatch) => {
      if (computed.columns && lance) {
        // Ids already in the table (another shard's run) are left out by the insert itself.
        result.written += await lance.write(computed.columns);
        result.parts++;
      } else if (computed.columns) {
        const file = partStore(outDir).path(`${runTag}-${String(sequence++).padStart(6, '0')}.parquet`);
        await writeEmbeddingPart(file, computed.columns, metadata);
        result.written += computed.columns.ids.length;
        result.parts++;
        await compactor.add(file);
      }
      for (const failure of computed.failed) {
        result.failed.push(failure);
        if (strict) strictError ??= failure.error ?? new InvalidArgumentError('INPUT', 'a readable media file', failure.path, `${failure.path}: ${failure.reason}`);
        else onItemFailed?.(failure);
      }
      processed += batch.length;
      onProgress?.(processed, result.failed.length, todo.length);
    };

    const settled = await Promise.allSettled(
      models.map((model, i) =>
        runPipeline(model, task, next, stopped, onBatch, { builder: decoders.builders[i]!, readAhead, remote, decoding, onEngineTime: (seconds) => (result.engineSeconds += seconds) }).catch((error: unknown) => {
          fatal = true; // the other models finish their batch in flight and stop
          throw error;
        }),
      ),
    );
    // The parts written are merged even when a batch failed: they hold finished rows.
    await compactor.finish();
    result.compactedParts = compactor.compactions;
    if (lance) {
      if (result.parts > 0) await lance.optimize();
    } else if (!shard && partSize > 0) {
      // The only writer of the whole folder merges the small parts of earlier runs too.
      result.compactedParts += (await compactFolder(outDir, partSize, options.compactionHooks)).length;
    }
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw failure.reason;
    if (strictError !== undefined) throw strictError;
    result.interrupted = processed < todo.length;
    result.peakDecoding = decoding.peak;
    result.seconds = (performance.now() - started) / 1000;
    return result;
  } finally {
    for (const cleanup of cleanups) await cleanup();
    await lock.release();
  }
}
