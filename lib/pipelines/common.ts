/**
 * What every pipeline shares: loading a checkpoint (a folder or a Hub id) for a task, the callable
 * it returns, cancellation and disposal.
 *
 * A pipeline's calls can be cancelled with an AbortSignal (the load options' `signal` for every
 * call, a call's own `signal` for that one). A native forward cannot be stopped halfway, so a
 * cancelled call stops at the next step (between tiles, chunks or frames) and rejects with the
 * signal's reason; nothing it started is left running. `dispose()` cancels calls in flight (they
 * reject with DisposedError), waits for their native work to settle, then releases the model.
 */
import { AutoModel } from '../auto.js';
import { PerceiverConfig } from '../config.js';
import { DisposedError, InvalidArgumentError } from '../errors.js';
import type { HubOptions, HubProgressEvent } from '../hub/download.js';
import { checkpointFolder, type ComputeDType, type Logits, type PerceiverModel } from '../modeling/perceiver_model.js';

export interface PipelineOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** Compute precision ('float32' default; others on CUDA). */
  dtype?: ComputeDType;
  /** Called with each download update of a Hub id (file, bytes received, total). */
  progressCallback?: (event: HubProgressEvent) => void;
  /** Cancels the load, and every call of the pipeline once it is aborted. */
  signal?: AbortSignal;
  /** How a Hub id is fetched (revision, cacheDir, endpoint, token, offline). */
  hub?: Omit<HubOptions, 'progress'>;
}

export interface CallOptions {
  /** Cancels this call. */
  signal?: AbortSignal;
}

/** What every loaded pipeline has besides its call signature. */
export interface PipelineHandle {
  readonly task: string;
  readonly model: PerceiverModel<Logits>;
  /** The checkpoint folder the model came from. */
  readonly folder: string;
  readonly disposed: boolean;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A loaded pipeline: call it with an input; dispose it when done (or `await using`). */
export interface Pipeline<In, Options extends CallOptions, Out> extends PipelineHandle {
  (input: In, options?: Options): Promise<Out>;
}

export function checkSignal(signal: unknown, argument: string): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) throw new InvalidArgumentError(argument, 'an AbortSignal', signal);
  return signal;
}

export function checkObject<T>(value: T | undefined, argument: string): T | Record<string, never> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError(argument, 'an object', value);
  return value;
}

/** A check callable at every step of a call: throws the abort reason, or DisposedError. */
export type StepCheck = () => void;

/** Loads the model of a checkpoint for a task, honouring the signal between steps. */
export async function loadForTask(
  task: string,
  heads: readonly string[],
  model: string,
  options: PipelineOptions,
): Promise<{ folder: string; config: PerceiverConfig; model: PerceiverModel<Logits> }> {
  const o = checkObject(options, 'options') as PipelineOptions;
  const signal = checkSignal(o.signal, 'options.signal');
  if (o.progressCallback !== undefined && typeof o.progressCallback !== 'function') throw new InvalidArgumentError('options.progressCallback', 'a function', o.progressCallback);
  const hub = checkObject(o.hub, 'options.hub') as Omit<HubOptions, 'progress'>;
  signal?.throwIfAborted();
  const folder = await checkpointFolder(model, { ...hub, progress: o.progressCallback });
  signal?.throwIfAborted();
  const config = await PerceiverConfig.fromPretrained(folder);
  // The head is checked before any weight is read.
  requireHead(task, AutoModel.headFor(config).name, heads);
  const loaded = await AutoModel.fromPretrained(folder, { device: o.device, dtype: o.dtype });
  if (signal?.aborted) {
    await loaded.dispose();
    signal.throwIfAborted();
  }
  return { folder, config, model: loaded };
}

/**
 * Wraps a task's run function into the callable pipeline: argument checks, cancellation, in-flight
 * tracking and disposal (which also releases `extra` resources the task holds).
 */
export function makePipeline<In, Options extends CallOptions, Out>(
  task: string,
  folder: string,
  model: PerceiverModel<Logits>,
  loadSignal: AbortSignal | undefined,
  run: (input: In, options: Options, check: StepCheck) => Promise<Out>,
): Pipeline<In, Options, Out> {
  const inFlight = new Set<Promise<unknown>>();
  let disposed = false;
  const call = async (input: In, options?: Options): Promise<Out> => {
    if (disposed) throw new DisposedError(`the ${task} pipeline`);
    const o = checkObject(options, 'options') as Options;
    const signal = checkSignal(o.signal, 'options.signal');
    const check: StepCheck = () => {
      if (disposed) throw new DisposedError(`the ${task} pipeline`);
      loadSignal?.throwIfAborted();
      signal?.throwIfAborted();
    };
    check();
    const running = run(input, o, check).then((out) => {
      check(); // a call cancelled during its last native step still rejects
      return out;
    });
    inFlight.add(running);
    try {
      return await running;
    } finally {
      inFlight.delete(running);
    }
  };
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    await Promise.allSettled([...inFlight]);
    await model.dispose();
  };
  return Object.defineProperties(call, {
    task: { value: task, enumerable: true },
    model: { value: model, enumerable: true },
    folder: { value: folder, enumerable: true },
    disposed: { get: () => disposed, enumerable: true },
    dispose: { value: dispose },
    [Symbol.asyncDispose]: { value: dispose },
  }) as unknown as Pipeline<In, Options, Out>;
}

/** Softmax of one row of logits, in float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** The indices of the k largest values, largest first (ties: lower index first). */
export function topIndices(values: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: values.length }, (_, i) => i);
  idx.sort((a, b) => values[b]! - values[a]! || a - b);
  return idx.slice(0, k);
}

export function checkTopK(value: unknown, fallback: number, max: number): number {
  if (value === undefined) return Math.min(fallback, max);
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw new InvalidArgumentError('options.top_k', 'a positive integer', value);
  return Math.min(value as number, max);
}

export interface LabelScore {
  label: string;
  score: number;
}

/** The top_k labels of one row of classification logits, by config.id2label. */
export function topLabels(config: PerceiverConfig, logits: ArrayLike<number>, topK: number): LabelScore[] {
  const probs = softmax(logits);
  return topIndices(probs, topK).map((i) => ({ label: config.id2label[String(i)] ?? `LABEL_${i}`, score: probs[i]! }));
}

/** Throws an InvalidArgumentError naming the task when the model is not one of the heads it needs. */
export function requireHead(task: string, name: string, heads: readonly string[]): void {
  if (!heads.includes(name)) {
    throw new InvalidArgumentError('model', `a checkpoint of ${heads.join(' or ')} for '${task}'`, name, `'${task}' needs a checkpoint of ${heads.join(' or ')}; this one is ${name}`);
  }
}
