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
import { posix } from 'node:path';
import { isRemote, parseS3Url, RemoteReader } from '../io/remote.js';
import { mediaKindOf } from '../media/kinds.js';
import type { EmbedJobItem } from './job.js';
import type { IdKind } from './parquet.js';
import { isTarShard, listShardMembers } from './webdataset.js';

/** SHA-256 of tar members, computed while listing their shard (content ids need no second pass there). */
type KnownHashes = Map<string, string>;

/** Files hashed at once for content ids: enough to keep a disk or network mount busy. */
const HASH_CONCURRENCY = 8;

/** The stable id of a file: 32 hex digits of the SHA-256 of its absolute path (of a URL: the URL as given). */
export function itemId(path: string): string {
  if (typeof path !== 'string' || path === '') throw new InvalidArgumentError('path', 'a file path', path);
  return createHash('sha256').update(isRemote(path) ? path : resolve(path)).digest('hex').slice(0, 32);
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
export async function contentItems(paths: string[], remote?: RemoteReader, known: KnownHashes = new Map()): Promise<EmbedJobItem[]> {
  const hashed = await mapLimit(paths, remote?.concurrency ?? HASH_CONCURRENCY, async (path) => {
    const sha256 = known.get(path);
    if (sha256 !== undefined) return { path, id: sha256 };
    try {
      // A remote object is read here to hash it and again to decode it (see the module comment).
      return { path, id: isRemote(path) ? contentId(await remote!.read(path)) : await fileContentId(path) };
    } catch (error) {
      return { path, unreadable: (error as { reason?: string }).reason ?? `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` };
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

/** The media keys under an s3:// prefix (every key when the prefix is one object's key). */
async function filesOfS3Prefix(prefix: string, remote: RemoteReader, shards: ShardLister): Promise<string[]> {
  const urls: string[] = [];
  for await (const url of remote.listS3(prefix)) {
    if (isTarShard(url)) urls.push(...(await shards(url)));
    else if (url === prefix || mediaKindOf(url) !== undefined) urls.push(url);
  }
  if (urls.length === 0) throw new InvalidArgumentError('INPUT', 'an s3:// prefix with media objects under it', prefix, `no media objects under ${prefix}`);
  return urls;
}

/** The member paths of a tar shard (recording their hashes when content ids are wanted). */
type ShardLister = (shard: string) => Promise<string[]>;

async function filesOfInput(input: string, remote: () => RemoteReader, shards: ShardLister): Promise<string[]> {
  if (isTarShard(input) && (isRemote(input) || (await statOrUndefined(input))?.isFile())) return shards(isRemote(input) ? input : resolve(input));
  if (/^s3:\/\//i.test(input)) return filesOfS3Prefix(input, remote(), shards);
  if (/^https?:\/\//i.test(input)) return [input];
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

/** The column of a tabular manifest that names the items. */
const MANIFEST_COLUMNS = ['path', 'url', 'uri', 'key'];

/**
 * RFC 4180 CSV (quoted fields with "" escapes, commas and newlines inside quotes), header first.
 * Written by hand: no CSV package is a dependency, and a manifest needs only this.
 */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === '') quoted = true;
    else if (c === ',') row.push(field), (field = '');
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  row.push(field);
  if (row.length > 1 || row[0] !== '') rows.push(row);
  return rows;
}

function manifestColumn(columns: string[], manifest: string): number {
  const lower = columns.map((c) => c.trim().toLowerCase());
  const index = lower.findIndex((c) => MANIFEST_COLUMNS.includes(c));
  if (index < 0) throw new InvalidArgumentError('manifest', `a table with a column named ${MANIFEST_COLUMNS.join(', ')}`, manifest, `the manifest ${manifest} has no ${MANIFEST_COLUMNS.join('/')} column (columns: ${columns.join(', ') || 'none'})`);
  return index;
}

/** The entries (paths or URLs, as written) of a manifest's bytes, by its format (by extension). */
async function manifestEntries(manifest: string, bytes: Buffer): Promise<string[]> {
  const name = manifest.replace(/[?#].*$/, '').toLowerCase();
  if (name.endsWith('.parquet')) {
    const { parquetLibraries } = await import('./parquet.js');
    const { arrow, parquet } = await parquetLibraries();
    let table;
    try {
      table = arrow.tableFromIPC(parquet.readParquet(bytes).intoIPCStream());
    } catch (error) {
      throw new InvalidArgumentError('manifest', 'a readable Parquet file', manifest, `the manifest ${manifest} is not readable Parquet (${(error as Error).message.split('\n')[0]})`);
    }
    const column = table.schema.fields[manifestColumn(table.schema.fields.map((f) => f.name), manifest)]!.name;
    return (table.getChild(column)!.toArray() as unknown[]).filter((v): v is string => typeof v === 'string' && v !== '');
  }
  const text = bytes.toString('utf8');
  if (name.endsWith('.csv')) {
    const [header, ...rows] = parseCsv(text);
    const index = manifestColumn(header ?? [], manifest);
    return rows.map((row) => (row[index] ?? '').trim()).filter((v) => v !== '');
  }
  if (name.endsWith('.jsonl') || name.endsWith('.ndjson')) {
    const entries: string[] = [];
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new InvalidArgumentError('manifest', 'one JSON object per line', manifest, `${manifest} line ${i + 1} is not JSON`);
      }
      const key = MANIFEST_COLUMNS.find((k) => typeof record?.[k] === 'string');
      if (!key) throw new InvalidArgumentError('manifest', `objects with a ${MANIFEST_COLUMNS.join('/')} string`, manifest, `${manifest} line ${i + 1} has no ${MANIFEST_COLUMNS.join('/')} string`);
      entries.push(record[key] as string);
    });
    return entries;
  }
  return text
    .split('\n')
    .map((raw) => raw.replace(/\r$/, '').trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** An entry of a remote manifest relative to it: resolved against the manifest's URL. */
function resolveRemote(entry: string, manifest: string): string {
  if (isRemote(entry)) return entry;
  if (/^s3:\/\//i.test(manifest)) {
    const { bucket, key } = parseS3Url(manifest, 'manifest');
    const joined = posix.normalize(posix.join(posix.dirname(`/${key}`), entry));
    return `s3://${bucket}${joined}`;
  }
  return new URL(entry, manifest).href;
}

async function filesOfManifest(manifest: string, remote: () => RemoteReader, shards: ShardLister): Promise<string[]> {
  let bytes: Buffer;
  try {
    bytes = isRemote(manifest) ? await remote().read(manifest) : await readFile(manifest);
  } catch (error) {
    const reason = (error as { reason?: string }).reason ?? (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new InvalidArgumentError('manifest', 'a readable manifest (lines, .csv, .jsonl or .parquet)', manifest, `cannot read the manifest ${manifest}: ${reason}`);
  }
  const entries = await manifestEntries(manifest, bytes);
  const base = dirname(resolve(manifest));
  const files: string[] = [];
  for (const entry of entries) {
    if (isRemote(manifest) || isRemote(entry)) {
      const url = isRemote(manifest) ? resolveRemote(entry, manifest) : entry;
      files.push(...(isTarShard(url) ? await shards(url) : [url]));
      continue;
    }
    const path = resolve(base, entry);
    if (isTarShard(path) && (await statOrUndefined(path))?.isFile()) {
      files.push(...(await shards(path)));
      continue;
    }
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
export async function discoverItems(inputs: string[], options: DiscoverOptions = {}): Promise<EmbedJobItem[]> {
  return (await discover(inputs, options, false)).items;
}

/**
 * discoverItems, except that an input naming nothing is skipped and listed in `missing` (with the
 * error that says why) rather than thrown: the CLI skips and counts such inputs.
 */
export async function discoverInputs(inputs: string[], options: DiscoverOptions = {}): Promise<{ items: EmbedJobItem[]; missing: InvalidArgumentError[] }> {
  return discover(inputs, options, true);
}

/** What to discover besides the inputs (a manifest), how to id items, and the reader for remote inputs. */
export interface DiscoverOptions {
  manifest?: string;
  id?: IdKind;
  remote?: RemoteReader;
}

async function discover(inputs: string[], options: DiscoverOptions, skipMissing: boolean): Promise<{ items: EmbedJobItem[]; missing: InvalidArgumentError[] }> {
  // Every index, holes included (some() skips the holes of a sparse array, for-of does not).
  if (!Array.isArray(inputs) || Array.from(inputs).some((input) => typeof input !== 'string' || input === '')) {
    throw new InvalidArgumentError('inputs', 'an array of non-empty paths, folders or globs', inputs);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object such as { manifest }', options);
  if (options.manifest !== undefined && (typeof options.manifest !== 'string' || options.manifest === '')) {
    throw new InvalidArgumentError('manifest', 'the path of a manifest file', options.manifest);
  }
  if (options.id !== undefined && options.id !== 'path' && options.id !== 'content') throw new InvalidArgumentError('id', "'path' or 'content'", options.id);
  if (options.remote !== undefined && !(options.remote instanceof RemoteReader)) throw new InvalidArgumentError('remote', 'a RemoteReader', options.remote);
  // Remote inputs without a reader get one for the discovery, closed after it.
  let own: RemoteReader | undefined;
  const remote = () => options.remote ?? (own ??= new RemoteReader());
  const known: KnownHashes = new Map();
  const shards: ShardLister = async (shard) => {
    const members = await listShardMembers(shard, remote, options.id === 'content').catch((error: unknown) => {
      throw new InvalidArgumentError('INPUT', 'a readable tar shard', shard, (error as Error).message);
    });
    for (const member of members) if (member.sha256) known.set(member.path, member.sha256);
    return members.map((member) => member.path);
  };
  try {
    const paths: string[] = [];
    const missing: InvalidArgumentError[] = [];
    for (const input of inputs) {
      try {
        paths.push(...(await filesOfInput(input, remote, shards)));
      } catch (error) {
        if (!skipMissing || !(error instanceof InvalidArgumentError) || error.argument !== 'INPUT') throw error;
        missing.push(error);
      }
    }
    if (options.manifest !== undefined) paths.push(...(await filesOfManifest(options.manifest, remote, shards)));
    if (options.id === 'content') return { items: sortByPath(await contentItems([...new Set(paths)], paths.some(isRemote) ? remote() : undefined, known)), missing };
    return { items: itemsOfPaths(paths), missing };
  } finally {
    await own?.close();
  }
}

function itemsOfPaths(paths: string[]): EmbedJobItem[] {
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
