/**
 * Worker thread of PerceiverImageProcessor: large images are decoded and cropped (sharp) and
 * resized (the exact, torch-identical kernel) here, off the main thread; only the small result
 * goes back.
 */
import { InvalidArgumentError } from './errors.js';
import { decodeCrop, resizeRgb, type ImageTask, type ImageTaskResult } from './image_processor.js';
import { serveTasks } from './worker_pool.js';

serveTasks<ImageTask, ImageTaskResult>(async (task) => {
  let rgb;
  try {
    rgb = 'rgb' in task ? task.rgb : await decodeCrop(task.bytes, task.name, task.source, task.maxPixels, task.displayed, task.box);
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    return { result: { invalid: { argument: error.argument, expected: error.expected, actual: error.actual, message: error.message } } };
  }
  const out = resizeRgb(rgb, task.size, task.resample);
  return { result: { rgb: out }, transfer: [out.data.buffer as ArrayBuffer] };
});
