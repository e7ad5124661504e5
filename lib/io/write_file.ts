/**
 * The checks and the failure type shared by the library's file writers (flow, pictures, audio,
 * safetensors): a path argument is a non-empty string without NUL (Node throws a TypeError on one),
 * and a file-system failure of the write (a folder at the path, a missing parent, no permission)
 * comes out as a FileWriteError naming the path.
 */
import { writeFile } from 'node:fs/promises';
import { FileWriteError, InvalidArgumentError, PerceiverError } from '../errors.js';

/** Throws InvalidArgumentError unless `path` can name a file: a non-empty string without NUL. */
export function checkPath(path: unknown, argument = 'path', expected = 'a file path'): asserts path is string {
  if (typeof path !== 'string' || path === '' || path.includes('\0')) throw new InvalidArgumentError(argument, `${expected} (a non-empty string without NUL)`, path);
}

/**
 * Runs one write of `path`; a failure of it becomes a FileWriteError naming the path (the failure
 * is its cause). A PerceiverError passes through: it already says what went wrong.
 */
export async function asFileWrite<T>(path: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (error instanceof PerceiverError) throw error;
    throw new FileWriteError(path, error);
  }
}

/** writeFile, with its failures as FileWriteError. */
export async function writeFileChecked(path: string, data: Uint8Array | string): Promise<void> {
  await asFileWrite(path, () => writeFile(path, data));
}
