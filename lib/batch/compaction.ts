/**
 * Compaction of a folder's Parquet parts into parts of about `partSize` bytes, crash-safely.
 *
 * A run writes one small part per batch (so a crash loses at most the batches in flight) and
 * merges them into `compact-*.parquet` parts as they add up to `partSize`, and once more at the
 * end. Readers never see a row twice, whatever the moment a compaction is killed at:
 *
 * 1. The merged part is made in memory.
 * 2. The intent `.compact-<name>.json` is written atomically: it names the part and the source
 *    parts it replaces. An intent whose part is not there has no effect.
 * 3. The part `compact-<name>.parquet` is written atomically (locally a temporary file renamed into
 *    place, on S3 one PUT: lib/batch/store.ts): the commit point. From here on listParts (every
 *    reader, and the resume check) leaves out the sources the intent names.
 * 4. The sources are removed, then 5. the intent.
 *
 * A crash before 3 leaves the sources as the rows (the intent, and locally a temporary file, are
 * removed by the next run); a crash after 3 leaves the compacted part as the rows, and the next run
 * finishes 4 and 5. A reader that listed the sources just before 3 and finds one gone reads the
 * listing again (withCommittedParts). A compacted part that is compacted again names, in its
 * intent, the sources of the first too while that one's intent is still there, so no crash can
 * uncover them. The same protocol runs on a local folder and on an S3 prefix: it needs atomic
 * writes, removals and a listing that sees them, not a rename.
 *
 * One compactor at a time per set of parts: a run compacts only the parts it wrote itself while it
 * runs, and the whole folder only when it holds the folder's `all` lock (lib/batch/output_lock.ts).
 * Intents of live processes are left alone; those of processes that are gone are finished (or
 * dropped, when never committed) by finishCompactions.
 *
 * Written by hand: the protocol is this folder's own (Delta Lake / Iceberg do the same with a
 * transaction log, and neither has a Node writer).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { partStore, storeOf, type PartStore } from './store.js';
import { isIntentName, listParts, metadataOf, parquetBytes, parquetLibraries, processIsAlive, readIntent, readPart, tempTag, type CompactionIntent, type PartMetadata } from './parquet.js';

/** Target size of a compacted part: large enough for few files, small enough to merge in memory. */
export const DEFAULT_PART_SIZE = 128 * 1024 * 1024;

/** The steps of one compaction, in order (for tests that stop it at each). */
export type CompactionStep = 'written' | 'intent' | 'committed' | 'sources-removed' | 'done';

export interface CompactionHooks {
  /** Called after each step; a throw stops the compaction there, as a crash would (nothing is undone). */
  onStep?: (step: CompactionStep, part: string) => void | Promise<void>;
}

/** An intent of another host is judged abandoned after this long untouched (its pid cannot be checked). */
const FOREIGN_INTENT_MS = 24 * 3600 * 1000;

export function checkPartSize(partSize: unknown, argument = 'partSize'): number {
  if (partSize === undefined) return DEFAULT_PART_SIZE;
  if (typeof partSize !== 'number' || !Number.isSafeInteger(partSize) || partSize < 0) throw new InvalidArgumentError(argument, 'a byte count >= 0 (0: never compact)', partSize);
  return partSize;
}

function sameOutput(a: PartMetadata | undefined, b: PartMetadata | undefined): boolean {
  if (!a || !b) return a === b;
  return a.task === b.task && a.width === b.width && a.modelId === b.modelId && (a.idKind ?? 'path') === (b.idKind ?? 'path');
}

/**
 * Merges `sources` (parts of `outDir`, by path) into one new compacted part, with the protocol
 * above; returns its path. Every source must have been written by the same task, model and id kind.
 */
export async function compactParts(outDir: string, sources: string[], hooks: CompactionHooks = {}): Promise<string> {
  if (sources.length < 2) throw new InvalidArgumentError('sources', 'two or more parts to merge', sources);
  const { arrow } = await parquetLibraries();
  const names = sources.map((file) => basename(file));
  const tables = [];
  let metadata: PartMetadata | undefined;
  for (const file of sources) {
    const table = await readPart(file);
    const own = metadataOf(table, file);
    if (tables.length === 0) metadata = own;
    else if (!sameOutput(metadata, own)) throw new InvalidArgumentError('sources', 'parts of one task, model and id kind', file, `${file} was written by another task, model or id kind than ${sources[0]}: not merged`);
    tables.push(table);
  }
  // Sources that are themselves compacted parts whose own sources may still be there: those are
  // replaced too, or a crash after step 3 would uncover them once the intent naming them is gone.
  const store = partStore(outDir);
  const replaced = new Set(names);
  for (const { name: entry } of await store.list()) {
    if (!isIntentName(entry)) continue;
    const intent = await readIntent(store.path(entry));
    if (intent && replaced.has(intent.part)) for (const source of intent.sources) replaced.add(source);
  }
  const first = tables[0]!;
  const merged = new arrow.Table(first.schema, tables.flatMap((table) => table.batches));
  const name = `compact-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  const partName = `${name}.parquet`;
  const intentName = `.${name}.json`;
  const target = store.path(partName);
  // A hook's throw stands for a crash at that step: nothing is cleaned up after it.
  let crashed = false;
  const step = async (s: CompactionStep) => {
    try {
      await hooks.onStep?.(s, target);
    } catch (error) {
      crashed = true;
      throw error;
    }
  };

  const bytes = await parquetBytes(merged);
  try {
    await step('written');
    const intent: CompactionIntent = { part: partName, sources: [...replaced].sort(), host: hostname(), pid: process.pid };
    await store.write(intentName, JSON.stringify(intent), tempTag());
    await step('intent');
    // The commit point: an atomic write (a rename into place locally, one PUT on S3).
    await store.write(partName, bytes, tempTag());
  } catch (error) {
    if (!crashed) await store.remove(intentName).catch(() => {});
    throw error;
  }
  await step('committed');
  await removeSources(store, [...replaced]);
  await step('sources-removed');
  await store.remove(intentName);
  await step('done');
  return target;
}

async function removeSources(store: PartStore, sources: string[]): Promise<void> {
  for (const source of sources) await store.remove(source);
}

/**
 * Finishes the compactions of processes that are gone: a committed one (its part is there) has its
 * sources and intent removed; one that never committed has its intent removed (a local temporary
 * part is removed by removeStaleTempFiles). Intents of live processes are left alone. Returns how
 * many intents were settled.
 */
export async function finishCompactions(outDir: string): Promise<number> {
  const store = partStore(outDir);
  let entries;
  try {
    entries = await store.list();
  } catch {
    return 0;
  }
  let settled = 0;
  for (const entry of entries) {
    if (!isIntentName(entry.name)) continue;
    const intent = await readIntent(store.path(entry.name));
    if (!intent) continue;
    let abandoned: boolean;
    if (intent.host === hostname()) abandoned = intent.pid === process.pid || !processIsAlive(intent.pid);
    else abandoned = Date.now() - entry.mtimeMs > FOREIGN_INTENT_MS;
    if (!abandoned) continue;
    const committed = (await store.stat(intent.part)) !== undefined;
    if (committed) await removeSources(store, intent.sources);
    await store.remove(entry.name);
    settled++;
  }
  return settled;
}

/**
 * Groups parts (in name order) for compaction: parts already `partSize` or larger stay as they are;
 * the others are taken in order until a group reaches `partSize`. With `final`, the last group is
 * kept too when it has two parts or more.
 */
export function planCompaction(parts: { file: string; size: number }[], partSize: number, final: boolean): string[][] {
  if (partSize <= 0) return [];
  const groups: string[][] = [];
  let group: string[] = [];
  let bytes = 0;
  for (const part of parts) {
    if (part.size >= partSize) continue;
    group.push(part.file);
    bytes += part.size;
    if (bytes >= partSize) {
      if (group.length >= 2) groups.push(group);
      group = [];
      bytes = 0;
    }
  }
  if (final && group.length >= 2) groups.push(group);
  return groups;
}

async function sizesOf(files: string[]): Promise<{ file: string; size: number }[]> {
  const sized = [];
  for (const file of files) {
    const { store, name } = storeOf(file);
    const info = await store.stat(name);
    if (info) sized.push({ file, size: info.size });
  }
  return sized;
}

/**
 * Compacts every committed part of a folder smaller than `partSize`. The caller must be the only
 * writer of the folder (hold its `all` lock). Returns the compacted parts written.
 */
export async function compactFolder(outDir: string, partSize: number, hooks: CompactionHooks = {}): Promise<string[]> {
  await finishCompactions(outDir);
  const groups = planCompaction(await sizesOf(await listParts(outDir)), partSize, true);
  const written = [];
  for (const group of groups) written.push(await compactParts(outDir, group, hooks));
  return written;
}

/**
 * The compaction of one run's own parts while it runs: `add` each part as it is written; groups that
 * reach `partSize` are merged in the background, one at a time; `finish` merges what is left.
 */
export class RunCompactor {
  private pending: { file: string; size: number }[] = [];
  private chain: Promise<void> = Promise.resolve();
  private error: unknown;
  compactions = 0;

  constructor(
    private readonly outDir: string,
    private readonly partSize: number,
    private readonly hooks: CompactionHooks = {},
  ) {}

  async add(file: string): Promise<void> {
    if (this.partSize <= 0) return;
    const [info] = await sizesOf([file]);
    if (info) this.pending.push(info);
    this.schedule(false);
  }

  private schedule(final: boolean): void {
    const groups = planCompaction(this.pending, this.partSize, final);
    if (groups.length === 0) return;
    const taken = new Set(groups.flat());
    this.pending = this.pending.filter((part) => !taken.has(part.file));
    for (const group of groups) {
      this.chain = this.chain.then(async () => {
        if (this.error !== undefined) return;
        try {
          const merged = await compactParts(this.outDir, group, this.hooks);
          this.compactions++;
          const [info] = await sizesOf([merged]);
          // A merged part still under the target takes part in the final merge.
          if (info && info.size < this.partSize) this.pending.push(info);
        } catch (error) {
          this.error = error;
        }
      });
    }
  }

  /** Waits for the merges under way, merges the rest (unless `final` is false), and throws the first merge error. */
  async finish(final = true): Promise<void> {
    await this.chain;
    if (final && this.error === undefined) {
      this.schedule(true);
      await this.chain;
    }
    if (this.error !== undefined) throw this.error;
  }
}
