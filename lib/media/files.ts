/** Reading media files with a size bound, every failure a MediaDecodeError naming the file. */
import { open, stat } from 'node:fs/promises';
import { InvalidArgumentError, MediaDecodeError } from '../errors.js';

/** Checks a path argument: a non-empty string. */
export function checkPath(path: unknown, argument = 'path'): string {
  if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError(argument, 'a non-empty file path', path);
  if (path.includes('\0')) throw new InvalidArgumentError(argument, 'a file path without NUL characters', 'a string containing NUL');
  return path;
}

/** Checks an optional positive integer option. */
export function positiveInteger(value: unknown, argument: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(argument, 'a positive integer', value);
  return value;
}

function reasonOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory, not a file';
  return (error as Error).message ?? String(error);
}

/** The size of a regular file, or a MediaDecodeError saying why it cannot be read. */
export async function regularFileSize(path: string): Promise<number> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new MediaDecodeError(path, reasonOf(error), { cause: error });
  }
  if (!info.isFile()) throw new MediaDecodeError(path, info.isDirectory() ? 'it is a directory, not a file' : 'it is not a regular file');
  return info.size;
}

/**
 * Reads a whole file of at most `maxBytes` bytes. An empty file is an error unless `allowEmpty`;
 * a larger one is refused before anything is read (the limit is the caller's option `optionName`).
 */
export async function readMediaFile(path: string, maxBytes: number, optionName: string, allowEmpty = false): Promise<Buffer> {
  const size = await regularFileSize(path);
  checkSize(path, size, maxBytes, optionName, allowEmpty);
  return readHead(path, size).then((r) => r.bytes);
}

/** The same checks for a file's bytes already in memory (a remote object): `bytes`, or a MediaDecodeError naming `path`. */
export function checkMediaSize(path: string, bytes: Uint8Array, maxBytes: number, optionName: string, allowEmpty = false): Uint8Array {
  checkSize(path, bytes.byteLength, maxBytes, optionName, allowEmpty);
  return bytes;
}

function checkSize(path: string, size: number, maxBytes: number, optionName: string, allowEmpty: boolean): void {
  if (size > maxBytes) throw new MediaDecodeError(path, `the file is ${size} bytes, more than the limit of ${maxBytes} (${optionName})`);
  if (size === 0 && !allowEmpty) throw new MediaDecodeError(path, 'the file is empty');
}

/** Reads at most `limit` bytes from the start of a file; `complete` says whether that was all of it. */
export async function readHead(path: string, limit: number): Promise<{ bytes: Buffer; complete: boolean }> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new MediaDecodeError(path, reasonOf(error), { cause: error });
  }
  try {
    const size = (await handle.stat()).size;
    const want = Math.min(size, limit);
    const bytes = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await handle.read(bytes, got, want - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { bytes: got === want ? bytes : bytes.subarray(0, got), complete: size <= limit };
  } catch (error) {
    throw new MediaDecodeError(path, reasonOf(error), { cause: error });
  } finally {
    await handle.close();
  }
}
