/** Worker thread of DecodePool (lib/media/decode_pool.ts): reads and decodes one media item per task. */
import { serveTasks } from '../worker_pool.js';
import { handleDecodeTask, type DecodeResult, type DecodeTask } from './decode_pool.js';

serveTasks<DecodeTask, DecodeResult>(handleDecodeTask);
