/**
 * Media decoding in worker threads, for the batch job (lib/batch/job.ts): `DecodePool` runs the
 * reading, decoding (sharp, audio-decode, ffmpeg's output) and preprocessing (crop, resize,
 * normalisation, tokenization) of each item in one of `workers` threads, so that the main thread is
 * left to the remote reads, the engine's calls and the writes, and decoding overlaps the engine.
 *
 * `pool.builder(mediaInputSpec(model))` is a MediaInputBuilder like createMediaInputBuilder(model)'s:
 * each worker builds the same builder from that plain-data spec (lib/media/media_builder.ts, which
 * loads neither the modeling code nor the native engine), so an item decoded in a worker equals the
 * one decoded on the calling thread bit for bit (test/decode-pool.test.ts checks it).
 *
 * - Errors keep their class across the thread: MediaDecodeError and InvalidArgumentError (a failure
 *   of that item alone, as on the calling thread), BackendUnavailableError and
 *   MissingDependencyError (the machine's); anything else comes back as a PerceiverError with the
 *   error's name, code and message.
 * - Each thread decodes up to TASKS_PER_WORKER items at once: most of an item's time is spent in
 *   sharp's work on libuv's threads or in file reads, and a thread that waited for the main thread
 *   between items would wait for a scheduler slot each time on a busy machine.
 * - A worker that dies while decoding (it exits, throws outside the handler, runs out of heap) is
 *   replaced by the pool (lib/worker_pool.ts), and each item it held is tried once more, alone, on
 *   a thread of its own (so an item that was merely beside the culprit is not blamed); if that one
 *   dies too, the item fails with a MediaDecodeError saying so, and the job goes on. (A native
 *   crash inside sharp or libvips takes the whole process down, threads or not.)
 * - The pool queues what it is given without a bound of its own: the job bounds it, posting at
 *   most its read-ahead of batches at a time (EmbedJobOptions.readAhead).
 * - The job takes the process's pool of its size (sharedDecodePool): its threads start on first
 *   use and stay, idle and not holding the process open (like the image worker's), so successive
 *   jobs (a queue worker's shards) do not pay their start again.
 * - Bytes given to `loadBytes` are copied to the worker: the caller's buffer is never detached, and
 *   the copy is what a retry sends again.
 */
import { availableParallelism } from 'node:os';
import type { Transferable } from 'node:worker_threads';
import { BackendUnavailableError, InvalidArgumentError, MediaDecodeError, MissingDependencyError, PerceiverError } from '../errors.js';
import { Tensor, type DType } from '../tensor.js';
import { WorkerPool, siblingModule } from '../worker_pool.js';
import { mediaInputBuilderOf, type MediaInputBuilder, type MediaInputSpec, type PreparedItem } from './media_builder.js';

/**
 * The default number of decoding threads: the cores but one, which the main thread keeps for the
 * remote reads, the writes and the engine's calls. On the cpu the engine's own pool takes every
 * core while a batch computes and the decoders take them in between; on a GPU the engine needs
 * little of the cpu, and the decoders are what keeps it fed.
 */
export function defaultDecodeWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

/** Most decoding threads accepted (each holds its own copy of the decoders). */
export const MAX_DECODE_WORKERS = 256;

/** Items a decoding thread holds at once (see the module comment). */
const TASKS_PER_WORKER = 8;

/** A tensor as it crosses a thread: its typed array moves (or is copied) with the message. */
interface WireTensor {
  dtype: DType;
  shape: number[];
  data: Tensor['data'];
}

/** One item to decode, in a worker. @internal */
export interface DecodeTask {
  /** Which builder (JSON of the spec): a worker makes each once. */
  specKey: string;
  spec: MediaInputSpec;
  path: string;
  /** When given, decode these bytes (loadBytes) instead of reading `path`; `name` gives the kind. */
  bytes?: Uint8Array;
  name?: string;
}

type WireError =
  | { type: 'decode'; file: string; reason: string }
  | { type: 'argument'; argument: string; expected: string; actual: string; message: string }
  | { type: 'backend'; message: string }
  | { type: 'missing'; packageName: string; feature: string; install: string }
  | { type: 'other'; name: string; message: string; code?: string };

/** A worker's answer: the item, or its error as plain fields. @internal */
export type DecodeResult =
  | { item: { kind: PreparedItem['kind']; inputs: WireTensor | Record<string, WireTensor>; attentionMask?: WireTensor } }
  | { error: WireError };

function toWire(tensor: Tensor, transfer: Set<ArrayBuffer>): WireTensor {
  const { buffer, byteOffset, byteLength } = tensor.data;
  // Only a buffer the array fills alone moves: one shared with other data (Node's Buffer pool) is copied.
  if (buffer instanceof ArrayBuffer && byteOffset === 0 && byteLength === buffer.byteLength) transfer.add(buffer);
  return { dtype: tensor.dtype, shape: [...tensor.shape], data: tensor.data };
}

function fromWire(wire: WireTensor): Tensor {
  return new Tensor(wire.dtype, wire.shape, wire.data as never);
}

function errorToWire(error: unknown): WireError {
  if (error instanceof MediaDecodeError) return { type: 'decode', file: error.file, reason: error.reason };
  if (error instanceof InvalidArgumentError) return { type: 'argument', argument: error.argument, expected: error.expected, actual: error.actual, message: error.message };
  if (error instanceof BackendUnavailableError) return { type: 'backend', message: error.message };
  if (error instanceof MissingDependencyError) return { type: 'missing', packageName: error.packageName, feature: error.feature, install: error.install };
  const e = error as { name?: unknown; message?: unknown; code?: unknown };
  return { type: 'other', name: String(e?.name ?? 'Error'), message: String(e?.message ?? error), ...(typeof e?.code === 'string' ? { code: e.code } : {}) };
}

function errorFromWire(wire: WireError): Error {
  switch (wire.type) {
    case 'decode':
      return new MediaDecodeError(wire.file, wire.reason);
    case 'argument':
      return new InvalidArgumentError(wire.argument, wire.expected, wire.actual, wire.message);
    case 'backend':
      return new BackendUnavailableError(wire.message);
    case 'missing':
      return new MissingDependencyError(wire.packageName, wire.feature, wire.install);
    default:
      return Object.assign(new PerceiverError(wire.code ?? 'ERR_PERCEIVER_WORKER', wire.message), { name: wire.name });
  }
}

const builders = new Map<string, MediaInputBuilder>();

/** What a decoding worker does with one task (lib/media/decode_worker.ts serves it). @internal */
export async function handleDecodeTask(task: DecodeTask): Promise<{ result: DecodeResult; transfer?: Transferable[] }> {
  let builder = builders.get(task.specKey);
  if (!builder) builders.set(task.specKey, (builder = mediaInputBuilderOf(task.spec)));
  let item: PreparedItem;
  try {
    item = task.bytes ? await builder.loadBytes(task.bytes, task.path, task.name) : await builder.load(task.path);
  } catch (error) {
    return { result: { error: errorToWire(error) } };
  }
  const transfer = new Set<ArrayBuffer>();
  const inputs = item.inputs instanceof Tensor ? toWire(item.inputs, transfer) : Object.fromEntries(Object.entries(item.inputs).map(([name, t]) => [name, toWire(t, transfer)]));
  const attentionMask = item.attentionMask && toWire(item.attentionMask, transfer);
  return { result: { item: { kind: item.kind, inputs, ...(attentionMask ? { attentionMask } : {}) } }, transfer: [...transfer] };
}

/** Checks a number of decoding threads: 0 (decode on the calling thread) up to MAX_DECODE_WORKERS. */
export function checkDecodeWorkers(value: unknown, argument = 'decodeWorkers'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > MAX_DECODE_WORKERS) {
    throw new InvalidArgumentError(argument, `an integer from 0 (decode on the calling thread) to ${MAX_DECODE_WORKERS}`, value);
  }
  return value;
}

const shared = new Map<number, DecodePool>();

/** The process's pool of `workers` threads (1 to MAX_DECODE_WORKERS), made on first use and kept until closed. */
export function sharedDecodePool(workers: number): DecodePool {
  let pool = shared.get(workers);
  if (!pool) shared.set(workers, (pool = new DecodePool(workers)));
  return pool;
}

/** Worker threads that read and decode media items; see the module comment. */
export class DecodePool {
  private readonly pool: WorkerPool<DecodeTask, DecodeResult>;
  /** Retries: one item at a time on a thread of its own, made on the first death. */
  private isolated?: WorkerPool<DecodeTask, DecodeResult>;
  private readonly workers: number;
  private readonly workerModule: URL;
  private closed = false;

  /**
   * @param workers threads (1 to MAX_DECODE_WORKERS; default defaultDecodeWorkers()); they start on first use
   * @param workerModule the worker's module (tests give one that dies on purpose)
   */
  constructor(workers = defaultDecodeWorkers(), workerModule: URL = siblingModule(import.meta.url, 'decode_worker')) {
    if (checkDecodeWorkers(workers, 'workers') < 1) throw new InvalidArgumentError('workers', `an integer from 1 to ${MAX_DECODE_WORKERS}`, workers);
    this.pool = new WorkerPool<DecodeTask, DecodeResult>(workerModule, workers, TASKS_PER_WORKER);
    this.workers = workers;
    this.workerModule = workerModule;
  }

  /** The builder of a spec (mediaInputSpec(model, options)) whose load and loadBytes run in this pool's threads; collate runs on the calling thread. */
  builder(spec: MediaInputSpec): MediaInputBuilder {
    const specKey = JSON.stringify(spec);
    const local = mediaInputBuilderOf(spec);
    return {
      accepts: local.accepts,
      collate: (items) => local.collate(items),
      load: (path) => this.decode({ specKey, spec, path }),
      loadBytes: (bytes, path, name) => {
        if (!(bytes instanceof Uint8Array)) return Promise.reject(new InvalidArgumentError('bytes', 'a Uint8Array of the file', bytes));
        return this.decode({ specKey, spec, path, bytes, name });
      },
    };
  }

  /** Stops the threads; items still queued are rejected. A shared pool closed is made anew by the next sharedDecodePool. */
  async close(): Promise<void> {
    if (shared.get(this.workers) === this) shared.delete(this.workers);
    this.closed = true;
    await Promise.all([this.pool.close(), this.isolated?.close()]);
  }

  private async decode(task: DecodeTask): Promise<PreparedItem> {
    let answer: DecodeResult;
    try {
      answer = await this.post(this.pool, task);
    } catch (error) {
      if ((error as PerceiverError).code !== 'ERR_PERCEIVER_WORKER' || this.closed) throw error;
      // The worker died holding the item (the handler answers every error it sees): once more, alone.
      this.isolated ??= new WorkerPool<DecodeTask, DecodeResult>(this.workerModule, 1, 1);
      try {
        answer = await this.post(this.isolated, task);
      } catch (again) {
        if ((again as PerceiverError).code !== 'ERR_PERCEIVER_WORKER') throw again;
        throw new MediaDecodeError(task.path, `the decoding worker thread died on it twice (${(again as Error).message})`, { cause: again });
      }
    }
    if ('error' in answer) throw errorFromWire(answer.error);
    const { kind, inputs, attentionMask } = answer.item;
    return {
      kind,
      path: task.path,
      inputs: 'dtype' in inputs ? fromWire(inputs as WireTensor) : Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, fromWire(t)])),
      ...(attentionMask ? { attentionMask: fromWire(attentionMask) } : {}),
    };
  }

  /** Posts a task; the bytes go as a fresh copy each time, moved rather than cloned. */
  private post(pool: WorkerPool<DecodeTask, DecodeResult>, task: DecodeTask): Promise<DecodeResult> {
    if (!task.bytes) return pool.run(task);
    const bytes = new Uint8Array(task.bytes);
    return pool.run({ ...task, bytes }, [bytes.buffer]);
  }
}
