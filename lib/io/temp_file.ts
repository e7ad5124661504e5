/**
 * Temporary files for atomic writes, created so that nobody else can choose where the bytes go.
 *
 * Every writer of the library (safetensors, `infer --output`, `convert`, Parquet parts, Hub
 * downloads) writes to a temporary file next to its target and renames it over the target. A
 * predictable temporary name (`<target>.tmp-<pid>`) opened with `'w'` follows a symlink planted at
 * that name and overwrites whatever it points to. Here the name carries 128 random bits, and the
 * file is opened with O_CREAT | O_EXCL | O_NOFOLLOW: it must not exist (a planted file or link
 * fails the open with EEXIST and another name is drawn), and links are never followed. The final
 * rename replaces the target's directory entry (a symlink at the target is replaced, not followed).
 *
 * Written by hand: write-file-atomic and similar packages name their temporary file after the
 * process id and a counter (predictable) and open it with 'w'.
 */
import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Opened exclusively, never through a link (O_NOFOLLOW is 0 where the platform has none). */
const EXCLUSIVE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);
/** Draws of a new name when one is taken: only a planted file can take a 128-bit random name. */
const NAME_TRIES = 8;

export interface TempFile {
  path: string;
  handle: fsp.FileHandle;
}

export interface TempFileOptions {
  /**
   * Put into the name after the target's name, e.g. `host.pid`, so a cleanup can tell whose
   * temporary files are left; the random part keeps the name unpredictable.
   */
  tag?: string;
  /** File mode before the umask (default 0o666, as `'w'`). */
  mode?: number;
}

/** The hidden temporary name beside `target`: `.<name>[.<tag>].<32 hex>.tmp`. */
export function tempPathFor(target: string, tag?: string): string {
  const random = randomBytes(16).toString('hex');
  return join(dirname(target), `.${basename(target)}${tag ? `.${tag}` : ''}.${random}.tmp`);
}

/**
 * Creates a new, empty temporary file beside `target`, exclusively (O_CREAT | O_EXCL | O_NOFOLLOW)
 * under a random name. The caller writes through `handle` and then calls commitTempFile or
 * discardTempFile.
 */
export async function createTempFile(target: string, options: TempFileOptions = {}): Promise<TempFile> {
  for (let attempt = 1; ; attempt++) {
    const path = tempPathFor(target, options.tag);
    try {
      return { path, handle: await fsp.open(path, EXCLUSIVE_FLAGS, options.mode ?? 0o666) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= NAME_TRIES) throw error;
    }
  }
}

/** Flushes and closes the temporary file and renames it over `target` (atomically, on one filesystem). */
export async function commitTempFile(temp: TempFile, target: string): Promise<void> {
  try {
    // Flushed before the rename, so a crash cannot leave a complete-looking but empty target.
    await temp.handle.sync();
  } finally {
    await temp.handle.close();
  }
  await fsp.rename(temp.path, target);
}

/** Closes (if still open) and removes the temporary file; never throws. */
export async function discardTempFile(temp: TempFile): Promise<void> {
  await temp.handle.close().catch(() => {});
  await fsp.rm(temp.path, { force: true }).catch(() => {});
}

/**
 * Writes `data` to `target` atomically: a reader sees the old file or the whole new one, never a
 * part; the temporary file is created exclusively under a random name (see above) and removed on
 * failure.
 */
export async function writeFileAtomic(target: string, data: Uint8Array | string, options: TempFileOptions = {}): Promise<void> {
  const temp = await createTempFile(target, options);
  try {
    await temp.handle.writeFile(data);
    await commitTempFile(temp, target);
  } catch (error) {
    await discardTempFile(temp);
    throw error;
  }
}
