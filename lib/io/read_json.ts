/** Reading a small JSON settings file (config.json, preprocessor_config.json) as a JSON object. */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ConfigError } from '../errors.js';

/**
 * Settings files larger than this are refused unread: a config.json with the largest label map
 * PerceiverConfig allows (2^17 labels) is about 8 MB.
 */
export const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;

/**
 * The file's JSON object; undefined when the file does not exist and `optional` is set. A file that
 * cannot be read, is larger than MAX_JSON_FILE_BYTES, is not JSON or is not an object is a
 * ConfigError naming the file.
 */
export async function readJsonObject(file: string, optional = false): Promise<Record<string, unknown> | undefined> {
  let text: string;
  let handle: FileHandle | undefined;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not a regular file).
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    const info = await handle.stat();
    // Not a regular file (a directory, a FIFO, /dev/zero): there is no size to trust, and reading may never end.
    if (!info.isFile()) throw new ConfigError(`cannot read ${file}: not a regular file`);
    const size = info.size;
    if (size > MAX_JSON_FILE_BYTES) throw new ConfigError(`${file} is ${size} bytes, more than the ${MAX_JSON_FILE_BYTES} a settings file may have`);
    text = await handle.readFile('utf8');
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    if (optional && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  } finally {
    await handle?.close();
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(`${file} must hold a JSON object`);
  return json as Record<string, unknown>;
}
