/**
 * Dynamic batching for serving: concurrent single-item requests are coalesced into one forward per
 * batch, grouped by shape, with backpressure (a full queue rejects at once with QueueFullError,
 * HTTP 429) and cancellation through an AbortSignal.
 *
 * Design:
 * - Each request is one item (batch dimension exactly 1). Requests are grouped by a shape key: the
 *   modality names, the dtype and shape of every input tensor, and the dtype and shape of the mask
 *   (or its absence). Only requests with the same key are batched together.
 * - A group is dispatched as soon as it holds `maxBatchSize` items, or when its oldest request has
 *   waited `maxDelayMs`, whichever comes first. `close()` dispatches every queued group at once.
 * - Batches run as soon as they are formed: there is no per-key limit on forwards in flight, the
 *   engine serialises where it must. Backpressure is on items: queued plus in-flight items never
 *   exceed `maxQueue`.
 * - A batch's items are concatenated along dim 0 into one new Tensor per input (one copy of the
 *   typed arrays; a batch of one passes the caller's tensors through), one forward runs, and the
 *   outputs (`logits`: a Tensor [B, ...] or a record of them; `lastHiddenState` [B, ...]) are split
 *   back per item along dim 0 (copied, so that every caller owns its own buffers).
 * - Cancellation: a request aborted before dispatch leaves the queue and rejects with
 *   CancelledError; one aborted after dispatch rejects with CancelledError at once, its share of the
 *   result is discarded when the batch ends (it still counts as in flight until then).
 * - A forward that fails (throws or rejects) rejects every live request of that batch with that error.
 */
import { DisposedError, InvalidArgumentError, PerceiverError, describeValue } from '../errors.js';
import { DTYPE_INFO, Tensor, type AnyTypedArray } from '../tensor.js';

/** The queue (queued plus in-flight items) is full; retry later. Maps to HTTP 429. */
export class QueueFullError extends PerceiverError {
  readonly status = 429;
  /** The maxQueue limit that was reached. */
  readonly limit: number;
  constructor(limit: number) {
    super('ERR_PERCEIVER_QUEUE_FULL', `the batcher's queue is full (${limit} requests queued or in flight); retry later`);
    this.limit = limit;
  }
}

/** The request was cancelled through its AbortSignal; `cause` is the signal's reason. */
export class CancelledError extends PerceiverError {
  constructor(message = 'the request was cancelled', options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_CANCELLED', message, options);
  }
}

export interface BatcherOptions {
  /** Largest batch one forward runs (default 16). */
  maxBatchSize?: number;
  /** Longest a request waits for others to join its batch, in milliseconds (default 5). */
  maxDelayMs?: number;
  /** Most items queued plus in flight; beyond it submit rejects with QueueFullError (default 1024). */
  maxQueue?: number;
}

/** One item: every tensor has batch dimension 1. */
export interface BatchRequest {
  inputs: Tensor | Record<string, Tensor>;
  attentionMask?: Tensor;
  signal?: AbortSignal;
}

/** This item's slice of the batch's outputs, batch dimension 1. */
export interface BatchResult {
  logits?: Tensor | Record<string, Tensor>;
  lastHiddenState: Tensor;
}

export interface BatcherStats {
  /** Submits accepted into the queue (including those later cancelled or failed). */
  requests: number;
  /** Forwards started. */
  batches: number;
  /** Histogram of batch sizes: batchSizes[n] = number of forwards run with n items. */
  batchSizes: number[];
  /** Items waiting in the queue now. */
  queued: number;
  /** Items in batches whose forward has not finished yet. */
  inFlight: number;
  /** Submits refused: queue full, or after close(). */
  rejected: number;
  /** Requests cancelled through their signal, before or after dispatch. */
  cancelled: number;
  /** Sum over fulfilled requests of the time from submit to result, in milliseconds. */
  totalLatencyMs: number;
}

export interface Batcher {
  submit(request: BatchRequest): Promise<BatchResult>;
  /** A snapshot of the counters. */
  readonly stats: BatcherStats;
  /** Rejects new submits (DisposedError), dispatches every queued request and resolves once all have settled. */
  close(): Promise<void>;
}

/** What the batcher needs of a model: PerceiverModel fits. */
export interface BatchableModel {
  forward(call: { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor }): Promise<{ logits?: unknown; lastHiddenState: Tensor }>;
}

interface Pending {
  inputs: Tensor | Record<string, Tensor>;
  attentionMask?: Tensor;
  signal?: AbortSignal;
  onAbort?: () => void;
  enqueuedAt: number;
  /** False once the caller's promise is settled (result, error or cancellation). */
  live: boolean;
  resolve: (result: BatchResult) => void;
  reject: (error: unknown) => void;
}

interface Group {
  key: string;
  items: Pending[];
  timer?: NodeJS.Timeout;
}

const DEFAULTS = { maxBatchSize: 16, maxDelayMs: 5, maxQueue: 1024 } as const;

/**
 * Upper bounds: maxBatchSize sizes the batch-size histogram (an array of maxBatchSize + 1), so a
 * huge one would exhaust the heap and abort the process; maxDelayMs is a setTimeout delay.
 */
const MAXIMA: Partial<Record<keyof BatcherOptions, number>> = { maxBatchSize: 1 << 16, maxDelayMs: 2 ** 31 - 1 };

function positiveInteger(options: BatcherOptions, name: keyof BatcherOptions): number {
  const value = options[name];
  if (value === undefined) return DEFAULTS[name];
  const max = MAXIMA[name] ?? Number.MAX_SAFE_INTEGER;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new InvalidArgumentError(`options.${name}`, `a positive integer up to ${max}`, value);
  }
  return value;
}

function tensorKey(t: Tensor): string {
  return `${t.dtype}[${t.shape.join(',')}]`;
}

function checkItemTensor(value: unknown, argument: string): Tensor {
  if (!(value instanceof Tensor)) throw new InvalidArgumentError(argument, 'a Tensor', value);
  if (value.rank < 1 || value.shape[0] !== 1) {
    throw new InvalidArgumentError(argument, 'a tensor with batch dimension 1 (one item per request)', `shape [${value.shape.join(', ')}]`);
  }
  return value;
}

/** Validates a request and returns its shape key. */
function validate(request: unknown): string {
  if (typeof request !== 'object' || request === null) throw new InvalidArgumentError('request', 'an object such as { inputs, attentionMask, signal }', request);
  const { inputs, attentionMask, signal } = request as BatchRequest;
  let key: string;
  if (inputs instanceof Tensor) {
    key = `T:${tensorKey(checkItemTensor(inputs, 'inputs'))}`;
  } else if (typeof inputs === 'object' && inputs !== null && !Array.isArray(inputs) && !ArrayBuffer.isView(inputs)) {
    const names = Object.keys(inputs).sort();
    if (names.length === 0) throw new InvalidArgumentError('inputs', 'a Tensor or a non-empty object of Tensors keyed by modality', 'an empty object');
    key = `R:${names.map((n) => `${JSON.stringify(n)}=${tensorKey(checkItemTensor(inputs[n], `inputs.${n}`))}`).join(';')}`;
  } else {
    throw new InvalidArgumentError('inputs', 'a Tensor or an object of Tensors keyed by modality', inputs);
  }
  if (attentionMask !== undefined && attentionMask !== null) key += `|M:${tensorKey(checkItemTensor(attentionMask, 'attentionMask'))}`;
  else key += '|M:none';
  if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('signal', 'an AbortSignal', signal);
  return key;
}

/** Concatenates batch-1 tensors of one dtype and shape along dim 0 (a copy; one tensor passes through). */
function concat(tensors: Tensor[]): Tensor {
  const first = tensors[0]!;
  if (tensors.length === 1) return first;
  const n = first.size;
  const out = new DTYPE_INFO[first.dtype].array(n * tensors.length) as AnyTypedArray;
  for (let i = 0; i < tensors.length; i++) (out as Float32Array).set(tensors[i]!.data as Float32Array, i * n);
  return new Tensor(first.dtype, [tensors.length, ...first.shape.slice(1)], out as never);
}

/** Splits a [B, ...] output into B tensors [1, ...] (copies; B = 1 passes through). */
function split(value: unknown, batch: number, what: string): Tensor[] {
  if (!(value instanceof Tensor) || value.rank < 1 || value.shape[0] !== batch) {
    const got = value instanceof Tensor ? `shape [${value.shape.join(', ')}]` : describeValue(value);
    throw new InvalidArgumentError(`model.forward() ${what}`, `a Tensor with batch dimension ${batch}`, got);
  }
  if (batch === 1) return [value];
  const n = value.size / batch;
  const shape = [1, ...value.shape.slice(1)];
  const parts: Tensor[] = [];
  for (let i = 0; i < batch; i++) parts.push(new Tensor(value.dtype, shape, value.data.slice(i * n, (i + 1) * n) as never));
  return parts;
}

function splitOutputs(output: { logits?: unknown; lastHiddenState: Tensor }, batch: number): BatchResult[] {
  if (typeof output !== 'object' || output === null) throw new InvalidArgumentError('model.forward() output', 'an object with lastHiddenState', output);
  const hidden = split(output.lastHiddenState, batch, 'lastHiddenState');
  const results: BatchResult[] = hidden.map((lastHiddenState) => ({ lastHiddenState }));
  const logits = output.logits;
  if (logits === undefined || logits === null) return results;
  if (logits instanceof Tensor) {
    split(logits, batch, 'logits').forEach((t, i) => (results[i]!.logits = t));
  } else if (typeof logits === 'object') {
    const records: Record<string, Tensor>[] = results.map(() => ({}));
    for (const [name, value] of Object.entries(logits)) split(value, batch, `logits.${name}`).forEach((t, i) => (records[i]![name] = t));
    records.forEach((r, i) => (results[i]!.logits = r));
  } else {
    throw new InvalidArgumentError('model.forward() logits', 'a Tensor or an object of Tensors', logits);
  }
  return results;
}

/**
 * Creates a batcher over a model. Each submit() is one item; concurrent items of the same shape
 * run as one forward. See the module comment for the exact policy.
 */
export function createBatcher(model: BatchableModel, options: BatcherOptions = {}): Batcher {
  if (typeof model !== 'object' || model === null || typeof (model as BatchableModel).forward !== 'function') {
    throw new InvalidArgumentError('model', 'an object with a forward() method, such as a PerceiverModel', model);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  const maxBatchSize = positiveInteger(options, 'maxBatchSize');
  const maxDelayMs = positiveInteger(options, 'maxDelayMs');
  const maxQueue = positiveInteger(options, 'maxQueue');

  const groups = new Map<string, Group>();
  const running = new Set<Promise<void>>();
  let closed = false;
  let closing: Promise<void> | undefined;
  const counters = { requests: 0, batches: 0, queued: 0, inFlight: 0, rejected: 0, cancelled: 0, totalLatencyMs: 0 };
  const batchSizes: number[] = new Array<number>(maxBatchSize + 1).fill(0);

  function detach(item: Pending): void {
    if (item.signal && item.onAbort) item.signal.removeEventListener('abort', item.onAbort);
    item.onAbort = undefined;
  }

  function settle(item: Pending, outcome: { result: BatchResult } | { error: unknown }): void {
    if (!item.live) return;
    item.live = false;
    detach(item);
    if ('result' in outcome) {
      counters.totalLatencyMs += performance.now() - item.enqueuedAt;
      item.resolve(outcome.result);
    } else {
      item.reject(outcome.error);
    }
  }

  function cancelledError(signal: AbortSignal): CancelledError {
    return new CancelledError('the request was cancelled', { cause: signal.reason });
  }

  function schedule(group: Group): void {
    if (group.timer || group.items.length === 0) return;
    const wait = Math.max(0, group.items[0]!.enqueuedAt + maxDelayMs - performance.now());
    group.timer = setTimeout(() => {
      group.timer = undefined;
      flush(group);
    }, wait);
  }

  /** Dispatches a group's items, in batches of at most maxBatchSize, and forgets the group. */
  function flush(group: Group): void {
    if (group.timer) clearTimeout(group.timer);
    group.timer = undefined;
    while (group.items.length > 0) dispatch(group.items.splice(0, maxBatchSize));
    groups.delete(group.key);
  }

  function dispatch(items: Pending[]): void {
    const batch = items.length;
    counters.queued -= batch;
    counters.inFlight += batch;
    counters.batches++;
    batchSizes[batch] = (batchSizes[batch] ?? 0) + 1;
    const run = (async () => {
      const first = items[0]!;
      const inputs =
        first.inputs instanceof Tensor
          ? concat(items.map((it) => it.inputs as Tensor))
          : Object.fromEntries(Object.keys(first.inputs).map((name) => [name, concat(items.map((it) => (it.inputs as Record<string, Tensor>)[name]!))]));
      const call: { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor } = { inputs };
      if (first.attentionMask) call.attentionMask = concat(items.map((it) => it.attentionMask!));
      const output = await model.forward(call);
      return splitOutputs(output, batch);
    })();
    // Capacity is returned before the callers hear back, so stats and backpressure are current
    // when their continuations run.
    const finished = (): void => {
      counters.inFlight -= batch;
      running.delete(tracked);
    };
    const tracked: Promise<void> = run.then(
      (results) => {
        finished();
        items.forEach((item, i) => settle(item, { result: results[i]! }));
      },
      (error: unknown) => {
        finished();
        items.forEach((item) => settle(item, { error }));
      },
    );
    running.add(tracked);
  }

  function submit(request: BatchRequest): Promise<BatchResult> {
    let key: string;
    try {
      key = validate(request);
    } catch (error) {
      return Promise.reject(error);
    }
    if (closed) {
      counters.rejected++;
      return Promise.reject(new DisposedError('the batcher (closed)'));
    }
    const signal = request.signal ?? undefined;
    if (signal?.aborted) {
      counters.cancelled++;
      return Promise.reject(cancelledError(signal));
    }
    if (counters.queued + counters.inFlight + 1 > maxQueue) {
      counters.rejected++;
      return Promise.reject(new QueueFullError(maxQueue));
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const item: Pending = {
        inputs: request.inputs,
        attentionMask: request.attentionMask ?? undefined,
        signal,
        enqueuedAt: performance.now(),
        live: true,
        resolve,
        reject,
      };
      let group = groups.get(key);
      if (!group) {
        group = { key, items: [] };
        groups.set(key, group);
      }
      const home = group;
      if (signal) {
        item.onAbort = () => {
          if (!item.live) return;
          counters.cancelled++;
          const index = home.items.indexOf(item);
          if (index >= 0) {
            // Not dispatched yet: leave the queue.
            home.items.splice(index, 1);
            counters.queued--;
            if (home.items.length === 0) {
              if (home.timer) clearTimeout(home.timer);
              home.timer = undefined;
              if (groups.get(home.key) === home) groups.delete(home.key);
            }
          }
          // Dispatched: the batch runs on, this item's share is discarded.
          settle(item, { error: cancelledError(signal) });
        };
        signal.addEventListener('abort', item.onAbort, { once: true });
      }
      counters.requests++;
      counters.queued++;
      group.items.push(item);
      if (group.items.length >= maxBatchSize) flush(group);
      else schedule(group);
    });
  }

  function close(): Promise<void> {
    if (!closing) {
      closed = true;
      for (const group of [...groups.values()]) flush(group);
      closing = (async () => {
        while (running.size > 0) await Promise.allSettled([...running]);
      })();
    }
    return closing;
  }

  return {
    submit,
    close,
    get stats(): BatcherStats {
      return { ...counters, batchSizes: [...batchSizes] };
    },
  };
}
