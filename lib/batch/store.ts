/**
 * Where a batch job's output lives: a local folder, or an S3 prefix (`s3://bucket/prefix`). Parts,
 * compaction intents and locks are named objects in it; everything above this module (parts,
 * compaction, resume, search, locks) goes through these few operations, so one protocol serves both.
 *
 * What the protocol needs of a store, and how each gives it:
 * - `write` is atomic: a reader sees the whole object or none of it. Locally: a temporary file,
 *   then a rename (lib/io/temp_file.ts). On S3 a PUT is atomic by itself (an object appears whole
 *   when the request completes; a killed upload leaves nothing), so nothing is staged: S3 has no
 *   rename, and the compaction protocol (lib/batch/compaction.ts) needs none, only the order
 *   intent, then part, then removals.
 * - `list` after a write or removal sees it (S3 has been strongly consistent since December 2020;
 *   MinIO and s3rver are too).
 * - `read` of an object that is gone answers undefined (a reader then lists again).
 * S3 has no exclusive create on every store (s3rver has no conditional PUT), so nothing here
 * depends on one: locks on S3 take unique names and look at each other (lib/batch/output_lock.ts).
 *
 * The S3 client is the RemoteReader's (its endpoint, region and the AWS credential chain); a job
 * or worker names it with useS3ForOutputs, else one with the SDK's defaults is made. Requests are
 * retried with backoff on throttling, 5xx and network errors, each under the reader's timeout.
 */
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, OutputStoreError } from '../errors.js';
import { writeFileAtomic } from '../io/temp_file.js';
import { parseS3Url, RemoteReader } from '../io/remote.js';

/** One object of a store. */
export interface StoredObject {
  name: string;
  size: number;
  mtimeMs: number;
  /** Changes whenever the object is written again (local: inode, size and mtime; S3: the ETag). */
  version: string;
}

export interface PartStore {
  /** The folder or `s3://bucket/prefix` as given (without a trailing slash). */
  readonly root: string;
  readonly kind: 'local' | 's3';
  /** The full path (or URL) of an object of this store. */
  path(name: string): string;
  /** The objects directly in the store, by name; none when it does not exist yet. */
  list(): Promise<StoredObject[]>;
  /** An object's bytes, or undefined when it is not there. */
  read(name: string): Promise<Buffer | undefined>;
  /** An object's size, time and version, or undefined when it is not there. */
  stat(name: string): Promise<StoredObject | undefined>;
  /** Writes an object atomically (whole or not at all), replacing one of that name. `tag` marks local temporary files (lib/io/temp_file.ts). */
  write(name: string, data: Uint8Array | string, tag?: string): Promise<void>;
  /** Removes an object; nothing when it is not there. */
  remove(name: string): Promise<void>;
  /** Makes the folder (local); checks that the bucket answers (S3). InvalidArgumentError naming `argument` otherwise. */
  prepare(argument: string): Promise<void>;
}

/** Whether an output names an S3 prefix. */
export function isS3Output(root: string): boolean {
  return /^s3:\/\//i.test(root);
}

let outputReader: RemoteReader | undefined;
let defaultReader: RemoteReader | undefined;

/**
 * The reader whose S3 client (endpoint, region, credentials) writes and reads `s3://` outputs in
 * this process, until another is given; undefined goes back to the SDK's defaults.
 */
export function useS3ForOutputs(reader: RemoteReader | undefined): void {
  if (reader !== undefined && !(reader instanceof RemoteReader)) throw new InvalidArgumentError('reader', 'a RemoteReader', reader);
  outputReader = reader;
}

function s3Reader(): RemoteReader {
  return outputReader ?? (defaultReader ??= new RemoteReader());
}

/** The store of an output: a local folder or `s3://bucket/prefix`. */
export function partStore(root: string): PartStore {
  if (typeof root !== 'string' || root === '') throw new InvalidArgumentError('outDir', 'a folder path or s3://BUCKET/PREFIX', root);
  return isS3Output(root) ? new S3Store(root.replace(/\/+$/, '')) : new LocalStore(root);
}

/** The store an object's full path belongs to, and its name there. */
export function storeOf(path: string): { store: PartStore; name: string } {
  const cut = path.lastIndexOf('/');
  if (cut <= 0 || cut === path.length - 1) throw new InvalidArgumentError('file', 'a path of an object in an output folder or S3 prefix', path);
  return { store: partStore(path.slice(0, cut)), name: path.slice(cut + 1) };
}

class LocalStore implements PartStore {
  readonly kind = 'local';
  constructor(readonly root: string) {}

  path(name: string): string {
    return join(this.root, name);
  }

  async list(): Promise<StoredObject[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new InvalidArgumentError('outDir', 'a readable folder', this.root, `cannot read the output folder ${this.root}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    const objects: StoredObject[] = [];
    for (const name of names) {
      const object = await this.stat(name);
      if (object) objects.push(object);
    }
    return objects;
  }

  async read(name: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new InvalidArgumentError('outDir', 'a folder of readable files', this.path(name), `cannot read ${this.path(name)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    const info = await stat(this.path(name)).catch(() => undefined);
    if (!info || !info.isFile()) return undefined;
    return { name, size: info.size, mtimeMs: info.mtimeMs, version: `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}` };
  }

  async write(name: string, data: Uint8Array | string, tag?: string): Promise<void> {
    await writeFileAtomic(this.path(name), data, { tag });
  }

  async remove(name: string): Promise<void> {
    await rm(this.path(name), { force: true });
  }

  async prepare(argument: string): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      throw new InvalidArgumentError(argument, 'a folder that exists or can be created', this.root, `cannot create the output folder ${this.root} (${code})`);
    }
  }
}

class S3Store implements PartStore {
  readonly kind = 's3';
  private readonly bucket: string;
  /** The key prefix of the store's objects: `prefix/`, or empty at the bucket's root. */
  private readonly prefix: string;

  constructor(readonly root: string) {
    const { bucket, key } = parseS3Url(root, 'outDir');
    if (key.split('/').some((segment) => segment === '.' || segment === '..')) throw new InvalidArgumentError('outDir', 's3://BUCKET/PREFIX without . or .. segments', root);
    this.bucket = bucket;
    this.prefix = key === '' ? '' : `${key}/`;
  }

  path(name: string): string {
    return `${this.root}/${name}`;
  }

  /** Runs one request with the reader's timeout, retried with backoff while the failure is transient. */
  private async send<T>(what: string, name: string, request: (s3: typeof import('@aws-sdk/client-s3'), client: import('@aws-sdk/client-s3').S3Client, signal: AbortSignal) => Promise<T>): Promise<T> {
    const reader = s3Reader();
    const { s3, client } = await reader.s3();
    for (let attempt = 1; ; attempt++) {
      try {
        return await request(s3, client, AbortSignal.timeout(reader.timeoutMs));
      } catch (error) {
        const e = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
        const status = e.$metadata?.httpStatusCode;
        const transient = e.name !== 'CredentialsProviderError' && (e.name === 'TimeoutError' || e.name === 'AbortError' || e.$retryable !== undefined || status === undefined || status === 408 || status === 429 || status >= 500);
        const reason = `${e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${(e.message ?? String(error)).split('\n')[0]}`;
        if (!transient || attempt >= reader.attempts) {
          throw new OutputStoreError(`cannot ${what} ${this.path(name)}${transient ? ` after ${attempt} attempts` : ''}: ${reason}`, { cause: error });
        }
        const delay = reader.backoffMs * 2 ** (attempt - 1);
        await new Promise((resolve) => setTimeout(resolve, delay / 2 + Math.random() * (delay / 2)));
      }
    }
  }

  async list(): Promise<StoredObject[]> {
    const objects: StoredObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.send('list', '', (s3, client, abortSignal) =>
        client.send(new s3.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, Delimiter: '/', ContinuationToken: token }), { abortSignal }),
      );
      for (const object of page.Contents ?? []) {
        const name = object.Key?.slice(this.prefix.length);
        if (!name || name.includes('/')) continue;
        objects.push({ name, size: object.Size ?? 0, mtimeMs: object.LastModified?.getTime() ?? 0, version: `${object.ETag ?? ''}:${object.Size ?? 0}` });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return objects;
  }

  async read(name: string): Promise<Buffer | undefined> {
    try {
      return await this.send('read', name, async (s3, client, abortSignal) => {
        const out = await client.send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + name }), { abortSignal });
        const chunks: Uint8Array[] = [];
        for await (const chunk of out.Body as AsyncIterable<Uint8Array>) chunks.push(chunk);
        return Buffer.concat(chunks);
      });
    } catch (error) {
      if (isNotFound((error as { cause?: unknown }).cause)) return undefined;
      throw error;
    }
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    try {
      const head = await this.send('look up', name, (s3, client, abortSignal) => client.send(new s3.HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + name }), { abortSignal }));
      return { name, size: head.ContentLength ?? 0, mtimeMs: head.LastModified?.getTime() ?? 0, version: `${head.ETag ?? ''}:${head.ContentLength ?? 0}` };
    } catch (error) {
      if (isNotFound((error as { cause?: unknown }).cause)) return undefined;
      throw error;
    }
  }

  async write(name: string, data: Uint8Array | string): Promise<void> {
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    await this.send('write', name, (s3, client, abortSignal) => client.send(new s3.PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + name, Body: body, ContentLength: body.byteLength }), { abortSignal }));
  }

  async remove(name: string): Promise<void> {
    await this.send('remove', name, (s3, client, abortSignal) => client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + name }), { abortSignal }));
  }

  async prepare(argument: string): Promise<void> {
    try {
      await this.list();
    } catch (error) {
      throw new InvalidArgumentError(argument, 'an S3 prefix this process can list and write', this.root, `cannot use ${this.root} as the output: ${(error as Error).message}`);
    }
  }
}

function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
