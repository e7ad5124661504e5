/** Worker thread of PerceiverImageProcessor: the exact (torch-identical) resize of large images, off the main thread. */
import { resizeRgb, type ResizeTask } from './image_processor.js';
import { serveTasks } from './worker_pool.js';

serveTasks((task: ResizeTask) => {
  const out = resizeRgb({ data: task.data, width: task.width, height: task.height }, task.size, task.resample);
  return { result: out, transfer: [out.data.buffer as ArrayBuffer] };
});
