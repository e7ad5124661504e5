/** Reading a small JSON settings file (config.json, preprocessor_config.json) as a JSON object. */
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../errors.js';

/**
 * The file's JSON object; undefined when the file does not exist and `optional` is set. A file that
 * cannot be read, is not JSON or is not an object is a ConfigError naming the file.
 */
export async function readJsonObject(file: string, optional = false): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (optional && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
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
