/**
 * Which files a batch job runs on, and the stable id of each.
 *
 * - An input is a file (taken as it is), a folder (every file below it, recursively, whose media
 *   kind is known: see lib/media/kinds.ts; hidden files and folders are left out) or a glob
 *   (tinyglobby syntax; the files it matches, with the same kind filter as folders).
 * - A manifest lists one path per line; relative paths are relative to the manifest's folder,
 *   blank lines and lines starting with `#` are ignored. A line is a literal path, never a glob; a
 *   line naming a folder is expanded like a folder input. A line naming a missing file is kept as
 *   an item: the run reports it as unreadable, the same as any file it cannot decode.
 * - The id of an item is the first 32 hex digits (128 bits) of the SHA-256 of its absolute path,
 *   so it is stable across runs, machines that mount the data at the same place, and shards.
 *   Moving the data to another path gives new ids.
 * - With content ids (`id: 'content'`, `--id content`) the id is the SHA-256 of the file's bytes
 *   (64 hex digits): moving the collection keeps every id (a rerun embeds nothing), an edited file
 *   gets a new id (embedded again; the row of its old bytes stays), and files with the same bytes
 *   are one item, embedded once, whose `paths` lists every one of them. The files are read once to
 *   hash them (streamed, a few at a time) and again to decode them; a file that changes in between
 *   is written under the id of the bytes hashed. A file that cannot be read keeps its path id and
 *   fails in the run like any unreadable file.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { mediaKindOf } from '../media/kinds.js';
import type { EmbedJobItem } from './job.js';
import type { IdKind } from './parquet.js';

/** Files hashed at once for content ids: enough to keep a disk or network mount busy. */
const HASH_CONCURRENCY = 8;

/** The stable id of a file: 32 hex digits of the SHA-256 of its absolute path. */
export function itemId(path: string): string {
  return createHash('sha256').update(resolve(path)).digest('hex').slice(0, 32);
}

/** The content id of bytes: the SHA-256, 64 hex digits. */
export function contentId(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The content id of a file, streamed. */
export async function fileContentId(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Runs `work` on every element, at most `limit` at once, results in order. */
export async function mapLimit<T, R>(values: T[], limit: number, work: (value: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(values.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, values.length) }, async () => {
    while (next < values.length) {
      const index = next++;
      results[index] = await work(values[index]!, index);
    }
  });
  await Promise.all(runners);
  return results;
}

/** Items of content ids: one per distinct content, listing every path that has it; unreadable files keep a path id. */
export async function contentItems(paths: string[]): Promise<EmbedJobItem[]> {
  const hashed = await mapLimit(paths, HASH_CONCURRENCY, async (path) => {
    try {
      return { path, id: await fileContentId(path) };
    } catch (error) {
      return { path, unreadable: `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` };
    }
  });
  const byId = new Map<string, EmbedJobItem>();
  for (const entry of hashed) {
    if (entry.id === undefined) {
      byId.set(`path:${entry.path}`, { id: itemId(entry.path), path: entry.path, unreadable: entry.unreadable });
      continue;
    }
    const known = byId.get(entry.id);
    if (known) known.paths!.push(entry.path);
    else byId.set(entry.id, { id: entry.id, path: entry.path, paths: [entry.path] });
  }
  const items = [...byId.values()];
  for (const item of items) if (item.paths) item.paths.sort();
  for (const item of items) if (item.paths) item.path = item.paths[0]!;
  return items;
}

/** Whether an item belongs to shard `index` of `count`: a deterministic split by id. */
export function inShard(id: string, index: number, count: number): boolean {
  return Number.parseInt(id.slice(0, 8), 16) % count === index;
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

/** Files under a folder or matching a glob, absolute, limited to known media kinds. */
async function expand(pattern: string, cwd: string): Promise<string[]> {
  const { glob } = await import('tinyglobby');
  const files = await glob(pattern, { cwd, absolute: true, onlyFiles: true, dot: false, followSymbolicLinks: true, expandDirectories: false });
  return files.filter((file) => mediaKindOf(file) !== undefined);
}

async function filesOfInput(input: string): Promise<string[]> {
  const info = await statOrUndefined(input);
  if (info?.isDirectory()) return expand('**/*', resolve(input));
  if (info) return [resolve(input)];
  const { isDynamicPattern } = await import('tinyglobby');
  if (isDynamicPattern(input)) {
    const files = await expand(input, process.cwd());
    if (files.length === 0) throw new InvalidArgumentError('INPUT', 'a file, a folder or a glob that matches media files', input, `the glob ${JSON.stringify(input)} matches no media files`);
    return files;
  }
  throw new InvalidArgumentError('INPUT', 'an existing file or folder, or a glob', input, `${JSON.stringify(input)} is neither a file, a folder nor a glob that matches files`);
}

async function filesOfManifest(manifest: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(manifest, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError('manifest', 'a readable text file with one path per line', manifest, `cannot read the manifest ${manifest}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const base = dirname(resolve(manifest));
  const files: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const path = resolve(base, line);
    const info = await statOrUndefined(path);
    if (info?.isDirectory()) files.push(...(await expand('**/*', path)));
    else files.push(path);
  }
  return files;
}

/**
 * The items of a job: every file the inputs and the manifest name, deduplicated by id and sorted
 * by path, so that the same inputs always give the same list in the same order.
 */
export async function discoverItems(inputs: string[], options: { manifest?: string; id?: IdKind } = {}): Promise<EmbedJobItem[]> {
  if (!Array.isArray(inputs) || inputs.some((input) => typeof input !== 'string' || input === '')) {
    throw new InvalidArgumentError('inputs', 'an array of non-empty paths, folders or globs', inputs);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { manifest }', options);
  if (options.manifest !== undefined && (typeof options.manifest !== 'string' || options.manifest === '')) {
    throw new InvalidArgumentError('manifest', 'the path of a manifest file', options.manifest);
  }
  if (options.id !== undefined && options.id !== 'path' && options.id !== 'content') throw new InvalidArgumentError('id', "'path' or 'content'", options.id);
  const paths: string[] = [];
  for (const input of inputs) paths.push(...(await filesOfInput(input)));
  if (options.manifest !== undefined) paths.push(...(await filesOfManifest(options.manifest)));
  if (options.id === 'content') return sortByPath(await contentItems([...new Set(paths)]));
  const byId = new Map<string, EmbedJobItem>();
  for (const path of paths) {
    const id = itemId(path);
    if (!byId.has(id)) byId.set(id, { id, path });
  }
  return sortByPath([...byId.values()]);
}

function sortByPath(items: EmbedJobItem[]): EmbedJobItem[] {
  return items.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
