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
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { mediaKindOf } from '../media/kinds.js';
import type { EmbedJobItem } from './job.js';

/** The stable id of a file: 32 hex digits of the SHA-256 of its absolute path. */
export function itemId(path: string): string {
  if (typeof path !== 'string' || path === '') throw new InvalidArgumentError('path', 'a file path', path);
  return createHash('sha256').update(resolve(path)).digest('hex').slice(0, 32);
}

/** Whether an item belongs to shard `index` of `count`: a deterministic split by id. */
export function inShard(id: string, index: number, count: number): boolean {
  if (typeof id !== 'string') throw new InvalidArgumentError('id', 'an item id string (from itemId)', id);
  if (!Number.isSafeInteger(count) || count < 1) throw new InvalidArgumentError('count', 'a positive integer shard count', count);
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) throw new InvalidArgumentError('index', `a shard index from 0 to ${count - 1}`, index);
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
 * by path, so that the same inputs always give the same list in the same order. An input that
 * names nothing (a missing path, a glob without matches) is an InvalidArgumentError.
 */
export async function discoverItems(inputs: string[], options: { manifest?: string } = {}): Promise<EmbedJobItem[]> {
  return (await discover(inputs, options, false)).items;
}

/**
 * discoverItems, except that an input naming nothing is skipped and listed in `missing` (with the
 * error that says why) rather than thrown: the CLI skips and counts such inputs.
 */
export async function discoverInputs(inputs: string[], options: { manifest?: string } = {}): Promise<{ items: EmbedJobItem[]; missing: InvalidArgumentError[] }> {
  return discover(inputs, options, true);
}

async function discover(inputs: string[], options: { manifest?: string }, skipMissing: boolean): Promise<{ items: EmbedJobItem[]; missing: InvalidArgumentError[] }> {
  // Every index, holes included (some() skips the holes of a sparse array, for-of does not).
  if (!Array.isArray(inputs) || Array.from(inputs).some((input) => typeof input !== 'string' || input === '')) {
    throw new InvalidArgumentError('inputs', 'an array of non-empty paths, folders or globs', inputs);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { manifest }', options);
  if (options.manifest !== undefined && (typeof options.manifest !== 'string' || options.manifest === '')) {
    throw new InvalidArgumentError('manifest', 'the path of a manifest file', options.manifest);
  }
  const paths: string[] = [];
  const missing: InvalidArgumentError[] = [];
  for (const input of inputs) {
    try {
      paths.push(...(await filesOfInput(input)));
    } catch (error) {
      if (!skipMissing || !(error instanceof InvalidArgumentError) || error.argument !== 'INPUT') throw error;
      missing.push(error);
    }
  }
  if (options.manifest !== undefined) paths.push(...(await filesOfManifest(options.manifest)));
  const byId = new Map<string, EmbedJobItem>();
  for (const path of paths) {
    const id = itemId(path);
    if (!byId.has(id)) byId.set(id, { id, path });
  }
  return { items: [...byId.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)), missing };
}
