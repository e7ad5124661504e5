/**
 * The identity of a checkpoint, recorded in every Parquet part so that a resumed run (or a queue
 * worker) never adds rows of one model to a folder that holds another's: two fine-tuned checkpoints
 * of one architecture have the same task and width, and only their weights tell them apart.
 *
 * The identity is `sha256:<hex>` over config.json's bytes and, for every weight file of the folder
 * (model*.safetensors, pytorch_model*.bin and their index files), its name, size and content
 * digest. A file in the Hugging Face cache is a link to `blobs/<etag>`, where the etag is the
 * SHA-256 (LFS files) or git SHA-1 of the content, checked when it was downloaded: the etag stands
 * for the digest, so a Hub checkpoint costs no reading. Other files are hashed once per process
 * (streamed, off the main thread's critical path) and remembered by path, size and mtime.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ConfigError, InvalidArgumentError } from '../errors.js';

export interface ModelIdentity {
  /** `sha256:<64 hex>`. */
  id: string;
  /** What the user named: a Hub id or a folder, for messages. */
  source: string;
}

const WEIGHT_FILE = /^(model|pytorch_model)([-.].*)?\.(safetensors|bin)(\.index\.json)?$/;
const BLOB_NAME = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
const digests = new Map<string, { size: number; mtimeMs: number; digest: string }>();

async function contentDigest(file: string): Promise<string> {
  const real = await fsp.realpath(file);
  const name = basename(real);
  if (BLOB_NAME.test(name) && basename(dirname(real)) === 'blobs') return `etag:${name}`;
  const stat = await fsp.stat(real);
  const known = digests.get(real);
  if (known && known.size === stat.size && known.mtimeMs === stat.mtimeMs) return known.digest;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(real, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  const digest = `sha256:${hash.digest('hex')}`;
  digests.set(real, { size: stat.size, mtimeMs: stat.mtimeMs, digest });
  return digest;
}

/** The identity of the checkpoint in `folder` (a local folder, after any Hub download); `source` is what to call it in messages. */
export async function modelIdentity(folder: string, source: string = folder): Promise<ModelIdentity> {
  if (typeof folder !== 'string' || folder === '') throw new InvalidArgumentError('folder', 'a checkpoint folder', folder);
  let names: string[];
  try {
    names = await fsp.readdir(folder);
  } catch (error) {
    throw new ConfigError(`cannot read the checkpoint folder ${folder}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
  if (!names.includes('config.json')) throw new ConfigError(`${folder} has no config.json`);
  const hash = createHash('sha256');
  const files = ['config.json', ...names.filter((name) => WEIGHT_FILE.test(name)).sort()];
  for (const name of files) {
    const path = join(folder, name);
    const { size } = await fsp.stat(path);
    hash.update(`${name}\0${size}\0${await contentDigest(path)}\n`);
  }
  return { id: `sha256:${hash.digest('hex')}`, source };
}
