/** Worker thread of the HTTP service: parses large request bodies (see body.ts) off the main thread. */
import type { Transferable } from 'node:worker_threads';
import { serveTasks } from '../worker_pool.js';
import { readBody, type BodyTask, type ParsedBody } from './body.js';

serveTasks<BodyTask, ParsedBody>((task) => {
  const parsed = readBody(task.bytes, task);
  const transfer: Transferable[] = [];
  if (parsed.kind === 'inputs') {
    parsed.inputs = parsed.inputs.map((input) => {
      if (input.kind !== 'image') return input;
      // Only a buffer of its own may move: a slice of Node's shared pool is copied first.
      const own = input.image.byteOffset === 0 && input.image.byteLength === input.image.buffer.byteLength ? input.image : input.image.slice();
      transfer.push(own.buffer as ArrayBuffer);
      return { kind: 'image', image: own };
    });
  }
  return { result: parsed, transfer };
});
