/**
 * A decoding worker (lib/media/decode_worker.ts) that dies on purpose, for test/decode-pool.test.ts:
 * an item named `die-always*` kills the thread every time; `die-once*` kills it the first time
 * only (a marker file beside the item remembers it, as the thread itself does not survive).
 * Every other item is decoded as the real worker does it.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { handleDecodeTask, type DecodeResult, type DecodeTask } from '../../lib/media/decode_pool.js';
import { serveTasks } from '../../lib/worker_pool.js';

serveTasks<DecodeTask, DecodeResult>((task) => {
  const name = basename(task.path);
  if (name.startsWith('die-always')) process.exit(7);
  if (name.startsWith('die-once') && !existsSync(`${task.path}.died`)) {
    writeFileSync(`${task.path}.died`, '');
    process.exit(7);
  }
  return handleDecodeTask(task);
});
