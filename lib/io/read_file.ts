/** One read of a whole weights file, with read failures (ENOENT, EACCES, EISDIR...) as WeightsFormatError naming the path. */
import { promises as fsp } from 'node:fs';
import { WeightsFormatError } from '../errors.js';

export async function readWeightsFile(path: string): Promise<Buffer> {
  try {
    return await fsp.readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeightsFormatError(path, `cannot read the file${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
}
