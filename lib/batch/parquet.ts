/**
 * Parquet parts of a batch job: one file per completed batch, written atomically, read back for
 * resuming and for consumers; compacted into larger parts by lib/batch/compaction.ts, whose
 * intent files (`.compact-*.json`) name the parts a committed compacted part replaces: listParts
 * leaves those out, so a reader never sees a row twice (see compaction.ts for the protocol).
 *
 * Schema: `id` (utf8), `path` (utf8), `embedding` (fixed_size_list<float32>[width]), and for
 * classify also `label` (utf8) and `score` (float32); with content ids (`--id content`) also `paths`
 * (list<utf8>: every path that had these bytes when the row was written; `path` is the first of
 * them). The Arrow schema metadata carries
 * `perceiver_io.task`, `perceiver_io.model` (the class), `perceiver_io.width`,
 * `perceiver_io.model_id` (the checkpoint's identity: config and weights) and
 * `perceiver_io.model_source` and `perceiver_io.id_kind` (`path` or `content`; absent: path), so a resumed run can refuse a folder written by another task or
 * another model.
 *
 * A part is written atomically (lib/batch/store.ts): in a folder, to a hidden temporary name and
 * renamed into place; under an S3 prefix, with one PUT. A reader (or a resumed run) sees either the
 * whole part or none of it. A temporary file is created exclusively under a random name
 * (lib/io/temp_file.ts); its name also carries the host and the process id, so a starting run
 * removes only those left by processes that are gone.
 *
 * apache-arrow and parquet-wasm are imported on first use, so the library loads without them.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { requireOptional } from '../optional.js';
import { isS3Output, partStore, storeOf } from './store.js';

export type PartTask = 'embed' | 'classify';

/** Rows of one part, column by column. */
export interface EmbeddingColumns {
  ids: string[];
  paths: string[];
  /** Row-major [rows, width]. */
  embeddings: Float32Array;
  width: number;
  /** Classify only: top-1 label and its softmax probability. */
  labels?: string[];
  scores?: Float32Array;
  /** Content ids only: every path of each row's bytes. */
  allPaths?: string[][];
}

export interface PartMetadata {
  task: PartTask;
  /** The model class, e.g. PerceiverForSequenceClassification. */
  model: string;
  width: number;
  /** The checkpoint's identity (see lib/batch/model_identity.ts); absent in parts of older versions. */
  modelId?: string;
  /** The checkpoint as the run named it (a folder or a Hub id), for messages. */
  modelSource?: string;
  /** What the ids are: hashes of absolute paths (the default) or of the bytes. */
  idKind?: IdKind;
}

/** `path`: 32 hex digits of the SHA-256 of the absolute path; `content`: the SHA-256 of the bytes (64 hex digits). */
export type IdKind = 'path' | 'content';

/** One row read back. */
export interface EmbeddingRow {
  id: string;
  path: string;
  embedding: Float32Array;
  label?: string;
  score?: number;
  /** Content ids only: every path of the row's bytes. */
  paths?: string[];
}

const META_TASK = 'perceiver_io.task';
const META_MODEL = 'perceiver_io.model';
const META_WIDTH = 'perceiver_io.width';
const META_MODEL_ID = 'perceiver_io.model_id';
const META_MODEL_SOURCE = 'perceiver_io.model_source';
const META_ID_KIND = 'perceiver_io.id_kind';

type Arrow = typeof import('apache-arrow');
type ParquetWasm = typeof import('parquet-wasm');

let libraries: Promise<{ arrow: Arrow; parquet: ParquetWasm }> | undefined;

/** apache-arrow and parquet-wasm (its Node build, which instantiates its WebAssembly on load). */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export async function parquetLibraries(): Promise<{ arrow: Arrow; parquet: ParquetWasm }> {
  libraries ??= Promise.all([requireOptional<Arrow>('apache-arrow'), requireOptional<ParquetWasm>('parquet-wasm')]).then(([arrow, parquet]) => ({
    arrow,
    // The Node build is CommonJS; its exports are on `default` as well as named.
    parquet: ((parquet as { default?: ParquetWasm }).default ?? parquet) as ParquetWasm,
  }));
  return libraries;
}

/** Starts loading apache-arrow and parquet-wasm (compiling the WebAssembly) without waiting for it. */
export function preloadParquet(): void {
  parquetLibraries().catch(() => {
    // Reported by the first read or write that needs them.
    libraries = undefined;
  });
}

/**
 * The committed part files of a folder: `*.parquet`, not hidden, sorted by name, less those that a
 * committed compacted part replaces (named by its intent file, see compaction.ts).
 */
export async function listParts(outDir: string): Promise<string[]> {
  const store = partStore(outDir);
  const objects = await store.list();
  // On S3 the listing carries every object's version: readPartIds takes it from here, not from a
  // HEAD per part (workers check the whole output before each shard).
  if (store.kind === 's3') for (const object of objects) listedVersions.set(store.path(object.name), object.version);
  const names = objects.map((object) => object.name);
  const parts = new Set(names.filter((name) => name.endsWith('.parquet') && !name.startsWith('.')));
  const replaced = new Set<string>();
  for (const name of names) {
    if (!isIntentName(name)) continue;
    const intent = await readIntent(store.path(name));
    // An intent whose part is not there never committed: its sources are the rows.
    if (intent && parts.has(intent.part)) for (const source of intent.sources) replaced.add(source);
  }
  return [...parts]
    .filter((name) => !replaced.has(name))
    .sort()
    .map((name) => store.path(name));
}

/** What a compaction is about to commit (see compaction.ts): `part` replaces `sources` (all file names in the same folder). */
export interface CompactionIntent {
  part: string;
  sources: string[];
  host: string;
  pid: number;
}

const INTENT_NAME = /^\.compact-[A-Za-z0-9_-]+\.json$/;
/** A part's file name: never a path, never hidden (an intent names files to remove). */
const PART_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*\.parquet$/;

export function isIntentName(name: string): boolean {
  return INTENT_NAME.test(name);
}

/** An intent file, or undefined when it is gone (its compaction finished meanwhile). */
export async function readIntent(file: string): Promise<CompactionIntent | undefined> {
  const { store, name } = storeOf(file);
  const bytes = await store.read(name);
  if (bytes === undefined) return undefined;
  const text = bytes.toString('utf8');
  let intent: Partial<CompactionIntent>;
  try {
    intent = JSON.parse(text) as Partial<CompactionIntent>;
  } catch {
    intent = {};
  }
  // Written atomically by compaction.ts: anything else was put there by someone else.
  if (typeof intent.part !== 'string' || !PART_NAME.test(intent.part) || !Array.isArray(intent.sources) || intent.sources.some((s) => typeof s !== 'string' || !PART_NAME.test(s)) || typeof intent.host !== 'string' || typeof intent.pid !== 'number') {
    throw new InvalidArgumentError('outDir', 'compaction intent files written by perceiver-io', file, `${file} is not a compaction intent file written by perceiver-io; move it out of the output folder`);
  }
  return intent as CompactionIntent;
}

/** Put into temporary part names, so a starting run can tell which were left by processes that are gone. */
export function tempTag(): string {
  return `${hostname()}.${process.pid}`;
}

export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes temporary part files left by crashed runs: those of this host whose process is gone, and
 * those of other hosts (a shared folder) untouched for a day. Returns how many were removed.
 */
export async function removeStaleTempFiles(outDir: string): Promise<number> {
  // S3 outputs have none: a PUT is atomic, nothing is staged under another name (lib/batch/store.ts).
  if (isS3Output(outDir)) return 0;
  let names: string[];
  try {
    names = await readdir(outDir);
  } catch {
    return 0;
  }
  const pattern = /^\..+\.(?:parquet|json)\.(.+)\.(\d+)\.[0-9a-f]{32}\.tmp$/;
  let removed = 0;
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const file = join(outDir, name);
    let stale: boolean;
    if (m[1] === hostname()) stale = Number(m[2]) !== process.pid && !processIsAlive(Number(m[2]));
    else stale = Date.now() - (await stat(file).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs > 24 * 3600 * 1000;
    if (stale) {
      await rm(file, { force: true });
      removed++;
    }
  }
  return removed;
}

/** Writes one part atomically to `file` (replacing any part of that name). */
export async function writeEmbeddingPart(file: string, columns: EmbeddingColumns, metadata: PartMetadata): Promise<void> {
  await writePartTable(file, await embeddingTable(columns, metadata));
}

/** The Arrow table of one part's rows, with the run's metadata in its schema. */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export async function embeddingTable(columns: EmbeddingColumns, metadata: PartMetadata): Promise<import('apache-arrow').Table> {
  const rows = columns.ids.length;
  if (columns.paths.length !== rows || columns.embeddings.length !== rows * columns.width || (columns.allPaths !== undefined && columns.allPaths.length !== rows)) {
    throw new InvalidArgumentError('columns', `${rows} paths and ${rows} x ${columns.width} embedding values`, `${columns.paths.length} paths and ${columns.embeddings.length} values`);
  }
  const { arrow } = await parquetLibraries();
  const item = new arrow.Field('item', new arrow.Float32(), false);
  const values = arrow.makeData({ type: new arrow.Float32(), length: rows * columns.width, data: columns.embeddings });
  const embedding = arrow.makeVector(arrow.makeData({ type: new arrow.FixedSizeList(columns.width, item), length: rows, nullCount: 0, child: values }));
  const vectors: Record<string, import('apache-arrow').Vector> = {
    id: arrow.vectorFromArray(columns.ids, new arrow.Utf8()),
    path: arrow.vectorFromArray(columns.paths, new arrow.Utf8()),
    embedding,
  };
  if (columns.labels && columns.scores) {
    vectors.label = arrow.vectorFromArray(columns.labels, new arrow.Utf8());
    vectors.score = arrow.makeVector(columns.scores);
  }
  if (columns.allPaths) vectors.paths = arrow.vectorFromArray(columns.allPaths, new arrow.List(new arrow.Field('item', new arrow.Utf8(), true)));
  const plain = new arrow.Table(vectors);
  return new arrow.Table(new arrow.Schema(plain.schema.fields, schemaMetadataOf(metadata)), plain.batches);
}

function schemaMetadataOf(metadata: PartMetadata): Map<string, string> {
  const schemaMetadata = new Map([
    [META_TASK, metadata.task],
    [META_MODEL, metadata.model],
    [META_WIDTH, String(metadata.width)],
  ]);
  if (metadata.modelId !== undefined) schemaMetadata.set(META_MODEL_ID, metadata.modelId);
  if (metadata.modelSource !== undefined) schemaMetadata.set(META_MODEL_SOURCE, metadata.modelSource);
  if (metadata.idKind !== undefined && metadata.idKind !== 'path') schemaMetadata.set(META_ID_KIND, metadata.idKind);
  return schemaMetadata;
}

/** The Parquet bytes of a table (ZSTD). */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export async function parquetBytes(table: import('apache-arrow').Table): Promise<Uint8Array> {
  const { arrow, parquet } = await parquetLibraries();
  const wasmTable = parquet.Table.fromIPCStream(arrow.tableToIPC(table, 'stream'));
  const properties = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.ZSTD).build();
  return parquet.writeParquet(wasmTable, properties);
}

/** Writes a table as one part, atomically. */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export async function writePartTable(file: string, table: import('apache-arrow').Table): Promise<void> {
  const { store, name } = storeOf(file);
  await store.write(name, await parquetBytes(table), tempTag());
}

/** Thrown inside this module when a listed part disappears before it is read (a compaction replaced it). */
export class PartVanishedError extends Error {}

/** One part as an Arrow table. PartVanishedError when the file is gone. */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export async function readPart(file: string): Promise<import('apache-arrow').Table> {
  const { arrow, parquet } = await parquetLibraries();
  const { store, name } = storeOf(file);
  const bytes = await store.read(name);
  if (bytes === undefined) throw new PartVanishedError(file);
  try {
    // Whole parts are read: parquet-wasm 0.8's readParquet does not apply its `columns` option
    // (every column comes back).
    return arrow.tableFromIPC(parquet.readParquet(bytes).intoIPCStream());
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new InvalidArgumentError('outDir', 'a folder whose .parquet files are readable Parquet parts', file, `${file} is not a readable Parquet part (${reason.split('\n')[0]}); move it out of the output folder`);
  }
}

/** Listing and reading a folder's parts again when a part listed vanished (a compaction committed meanwhile). */
export async function withCommittedParts<T>(outDir: string, read: (files: string[]) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read(await listParts(outDir));
    } catch (error) {
      if (!(error instanceof PartVanishedError) || attempt >= 20) {
        if (error instanceof PartVanishedError) throw new InvalidArgumentError('outDir', 'a folder whose parts stay in place while read', outDir, `${outDir}: parts kept vanishing while being read (${error.message})`);
        throw error;
      }
    }
  }
}

/** The metadata a part was written with (undefined for a part without perceiver-io metadata). */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export function metadataOf(table: import('apache-arrow').Table, file: string): PartMetadata | undefined {
  const meta = table.schema.metadata;
  const task = meta.get(META_TASK);
  if (task === undefined) return undefined;
  if (task !== 'embed' && task !== 'classify') throw new InvalidArgumentError('outDir', 'parts written by embed or classify', `${file}: task ${task}`);
  const metadata: PartMetadata = { task, model: meta.get(META_MODEL) ?? '', width: Number(meta.get(META_WIDTH)) };
  const modelId = meta.get(META_MODEL_ID);
  const modelSource = meta.get(META_MODEL_SOURCE);
  if (modelId !== undefined) metadata.modelId = modelId;
  if (modelSource !== undefined) metadata.modelSource = modelSource;
  const idKind = meta.get(META_ID_KIND);
  if (idKind !== undefined && idKind !== 'path' && idKind !== 'content') throw new InvalidArgumentError('outDir', 'parts with path or content ids', `${file}: id kind ${idKind}`);
  if (idKind !== undefined) metadata.idKind = idKind;
  return metadata;
}

function idColumn(table: import('apache-arrow').Table, file: string): string[] {
  const ids = table.getChild('id');
  if (!ids) throw new InvalidArgumentError('outDir', 'Parquet parts with an "id" column', `${file} without one`);
  return ids.toArray() as string[];
}

/**
 * Parts read by readPartIds, by path, with the version they had (inode, size and mtime in a folder,
 * the ETag on S3): parts are written whole (a rewrite is a new inode, or a new ETag), so a part
 * whose version matches is the same part. A queue worker checks the whole output before each
 * shard; this keeps that to a stat (or a HEAD) per part.
 */
const partIdsCache = new Map<string, { key: string; ids: string[]; metadata?: PartMetadata }>();
/** The versions of S3 parts in their output's latest listing (listParts): a read is as of that listing. */
const listedVersions = new Map<string, string>();

/** The ids of one part and what wrote it (undefined for a part without perceiver-io metadata). */
export async function readPartIds(file: string): Promise<{ ids: string[]; metadata?: PartMetadata }> {
  const { store, name } = storeOf(file);
  const key = listedVersions.get(file) ?? (await store.stat(name))?.version ?? '';
  const known = partIdsCache.get(file);
  if (known && key !== '' && known.key === key) return { ids: known.ids, metadata: known.metadata };
  const table = await readPart(file);
  const part = { ids: idColumn(table, file), metadata: metadataOf(table, file) };
  if (key !== '') partIdsCache.set(file, { key, ...part });
  return part;
}

/** Every row of every committed part of a folder, part by part in name order. */
export async function readEmbeddings(outDir: string): Promise<EmbeddingRow[]> {
  if (typeof outDir !== 'string' || outDir === '') throw new InvalidArgumentError('outDir', 'a folder path', outDir);
  return withCommittedParts(outDir, async (files) => {
    const rows: EmbeddingRow[] = [];
    for (const file of files) rows.push(...rowsOf(await readPart(file), file));
    return rows;
  });
}

/** The rows of one part's table. */
/** @internal Arrow-typed: left out of the published declarations (see tsconfig.build.json). */
export function rowsOf(table: import('apache-arrow').Table, file: string): EmbeddingRow[] {
  const rows: EmbeddingRow[] = [];
  const ids = idColumn(table, file);
  const paths = table.getChild('path');
  const embedding = table.getChild('embedding');
  if (!paths || !embedding) throw new InvalidArgumentError('outDir', 'Parquet parts with "path" and "embedding" columns', file);
  const labels = table.getChild('label');
  const scores = table.getChild('score');
  const allPaths = table.getChild('paths');
  for (let i = 0; i < ids.length; i++) {
    const row: EmbeddingRow = { id: ids[i]!, path: paths.get(i) as string, embedding: Float32Array.from((embedding.get(i) as import('apache-arrow').Vector).toArray() as Float32Array) };
    if (labels) row.label = labels.get(i) as string;
    if (scores) row.score = scores.get(i) as number;
    if (allPaths) row.paths = [...((allPaths.get(i) as import('apache-arrow').Vector | null)?.toArray() ?? [])] as string[];
    rows.push(row);
  }
  return rows;
}
