/** Worker thread of the HTTP service: parses large request bodies (see body.ts) off the main thread. */
import type { Transferable } from 'node:worker_threads';
import { serveTasks } from '../worker_pool.js';
import { readBody, type BodyTask, type ParsedBody } from './body.js';

serveTasks<BodyTask, ParsedBody>((task) => {
  const parsed = readBody(task.bytes, task.textCodeUnits);
  const transfer: Transferable[] = [];
  if (parsed.kind === 'image') {
    // Only a buffer of its own may move: a slice of Node's shared pool is copied first.
    const own = parsed.image.byteOffset === 0 && parsed.image.byteLength === parsed.image.buffer.byteLength ? parsed.image : parsed.image.slice();
    transfer.push(own.buffer as ArrayBuffer);
    return { result: { kind: 'image', image: own }, transfer };
  }
  return { result: parsed };
});
