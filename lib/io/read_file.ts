/** One read of a whole weights file, with read failures (ENOENT, EACCES, EISDIR...) as WeightsFormatError naming the path. */
import { promises as fsp } from 'node:fs';
import { WeightsFormatError } from '../errors.js';
import { checkPath } from './write_file.js';

export async function readWeightsFile(path: string): Promise<Buffer> {
  // Checked first: the error below names the path, so it must be one.
  checkPath(path);
  try {
    return await fsp.readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeightsFormatError(path, `cannot read the file${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
}
