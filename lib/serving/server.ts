/**
 * HTTP serving (fastify) of one or several models, speaking the request shapes embedding clients use:
 *
 * - OpenAI: `POST /v1/embeddings` (`input`, `model`, `encoding_format`, `dimensions`, `user`),
 *   `GET /v1/models`; errors as `{"error": {"message", "type", "code"}}`.
 * - Hugging Face text-embeddings-inference (TEI): `POST /embed` (`inputs`, `normalize` default
 *   true, `truncate` default false, `truncation_direction`), `POST /predict` (`inputs`, `raw_scores`,
 *   `top_k`), `GET /info`.
 * - This service's own bodies, kept: `{"text": ...}` / `{"image": "<base64>"}` on `/embed`
 *   (answered `{"embedding"}`, not normalized, over-long text cut) and `/classify` (`{"labels"}`).
 * - `GET /health` (503 until the warm-up forward has run, or once a model failed), `GET /metrics`.
 * - Several models: each is reached by `/models/NAME/<route>` or by the body's `model` field; a
 *   body naming none goes to the first. With one model any `model` is taken, as TEI does.
 *
 * Inputs: a string or an array of at most maxClientBatchSize strings; texts for text models,
 * base64 image files or data URLs for image models. Items of one request run through the batcher
 * like concurrent requests (split across forwards as its limits say) and are answered in order.
 *
 * Dynamic padding: a text is padded to the power of two (at least 16) at or above its token count,
 * capped at maxTextLength, with the attention mask over the padding; the batcher groups items by
 * that length and budgets a forward by maxBatchTokens (items x padded length), as TEI does. A
 * text's padding depends on its own length only, so its embedding does not depend on what it is
 * batched with. padding 'fixed' pads every text to maxTextLength (the old behaviour).
 *
 * Hostile load (see the README's serve section for the numbers):
 *   - authentication first: with apiKeys, every route but publicRoutes wants `Authorization:
 *     Bearer KEY` (401 otherwise; keys compared in constant time, as SHA-256 digests);
 *   - admission next: an inference request takes a place in its route's queue (maxQueue) as soon
 *     as its headers arrive, before its body is read; with none free it is answered 429 with
 *     `Retry-After` at once. The place is held until the request's work ends. The batcher's queue
 *     counts items: a request whose items do not all fit is answered 429 before any runs.
 *   - bodies over maxBodyBytes are answered 413 (from Content-Length, before reading); bodies over
 *     256 KiB are parsed and base64-decoded in a worker thread;
 *   - texts are cut before tokenizing to what the model can use (body.ts), keeping whether
 *     anything was cut, so that "longer than the model" is still told apart;
 *   - images: the header's width x height is checked against maxImagePixels (413) before decoding;
 *     at most maxConcurrentDecodes are decoded at once, in sharp (off the main thread), the large
 *     resizes in a worker thread (PerceiverImageProcessor);
 *   - timeouts: headersTimeoutMs, requestTimeoutMs (the whole request received), idle
 *     connectionTimeoutMs and keepAliveTimeoutMs; close() drains for at most shutdownTimeoutMs,
 *     then force-closes the connections left.
 * - Errors answer `{ "error": message, "code": "ERR_...", "error_type" }` (OpenAI's shape under
 *   /v1/): InvalidArgumentError 400, unauthorized 401, unknown model 404, too large or too long 413,
 *   QueueFullError 429 (with Retry-After), a disposed or failed model or closing server 503,
 *   anything else 500. A failing request never takes the process down.
 * - /metrics: Prometheus text from a registry of this server's own (not prom-client's global one):
 *   requests and latency by route and status, batch sizes and tokens and queue depth by model,
 *   `perceiver_event_loop_delay_max_seconds`, and the process's default metrics.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import sharp from 'sharp';
import { BackendUnavailableError, DisposedError, InvalidArgumentError, NativeError, PerceiverError } from '../errors.js';
import { DEFAULT_MAX_INPUT_PIXELS, ImageTooLargeError, PerceiverImageProcessor, prepareImageDecoding } from '../image_processor.js';
import { PerceiverClassificationDecoder } from '../modeling/decoders.js';
import type { PerceiverModel } from '../modeling/perceiver_model.js';
import { requireOptional } from '../optional.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { WorkerPool, siblingModule } from '../worker_pool.js';
import { CancelledError, QueueFullError, createBatcher, type BatchableModel, type BatchRequest } from './batcher.js';
import { INLINE_BODY_BYTES, readBody, type BodyInput, type BodyOptions, type BodyTarget, type BodyTask, type ParsedBody } from './body.js';

export interface ServeOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 0: any free port; see RunningServer.url). */
  port?: number;
  /** Batcher: largest batch per forward (default 16). */
  maxBatchSize?: number;
  /** Batcher: longest a request waits for others, in ms (default 5). */
  maxDelayMs?: number;
  /** Batcher: most items queued or in flight per route and model, and most requests admitted per route, before answering 429 (default 1024). */
  maxQueue?: number;
  /** Batcher: most tokens (items x padded length) in one text forward (default 16384, as TEI). */
  maxBatchTokens?: number;
  /** Most inputs in one request (default 32, as TEI); more is answered 413. */
  maxClientBatchSize?: number;
  /** Text models: 'dynamic' (default) pads each text to a power of two at or above its length; 'fixed' pads every text to maxTextLength. */
  padding?: 'dynamic' | 'fixed';
  /** API keys: when given, every route but publicRoutes wants `Authorization: Bearer KEY` (default: none, no authentication). */
  apiKeys?: string[];
  /** Routes open without a key when apiKeys are set (default ['/health', '/metrics']). */
  publicRoutes?: string[];
  /** The name of a single model (default its class name); several models are named by ServedModel.name. */
  modelName?: string;
  /** How many labels /classify returns, best first (default 5, at most the number of labels). */
  topK?: number;
  /** Largest request body, in bytes; larger ones are answered 413 (default 1 MiB for text models, 16 MiB for image models). */
  maxBodyBytes?: number;
  /** Image models: most pixels (width x height, from the file's header) an image may declare; more is answered 413 (default 50 000 000). */
  maxImagePixels?: number;
  /** Image models: most images decoded at once; the others wait, holding their queue place (default: the cores, 1 to 4). */
  maxConcurrentDecodes?: number;
  /** Most milliseconds to receive a request's headers (default 10 000). */
  headersTimeoutMs?: number;
  /** Most milliseconds to receive a whole request, body included (default 30 000). */
  requestTimeoutMs?: number;
  /** A connection with no traffic for this many milliseconds is closed (default 60 000). */
  connectionTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this many milliseconds (default 5 000). */
  keepAliveTimeoutMs?: number;
  /** close() lets requests in flight finish for at most this many milliseconds, then closes their connections (default 10 000). */
  shutdownTimeoutMs?: number;
  /** Text models: the fixed padded length (default min(config.max_position_embeddings, 2048)). */
  maxTextLength?: number;
  /** Image models: how image files are turned into pixels (default: transformers' defaults, 224x224). */
  imageProcessor?: PerceiverImageProcessor;
  /** Whether serve() resolves only once every model has run its warm-up forward (default true); with false it resolves once listening, /health answering 503 until then. */
  awaitReady?: boolean;
  /** Fastify's request logging (default false). */
  logger?: boolean;
}

/** One model of several, with settings of its own. */
export interface ServedModel {
  /** What clients call it: `model` in bodies, /models/NAME/... (letters, digits, '.', '_', '-', '/'). */
  name: string;
  model: PerceiverModel<any>;
  /** Overrides ServeOptions.maxTextLength for this model. */
  maxTextLength?: number;
  /** Overrides ServeOptions.imageProcessor for this model. */
  imageProcessor?: PerceiverImageProcessor;
}

export interface RunningServer {
  /** e.g. http://127.0.0.1:41234 */
  url: string;
  /** Settles when every model has run its warm-up forward (/health turns 200); rejects if one failed. */
  ready: Promise<void>;
  /**
   * Stops accepting connections, answers new requests on open ones 503, lets the requests in flight
   * finish for at most shutdownTimeoutMs, then closes every connection left and the batchers.
   * Resolves with whether everything drained in time.
   */
  close(): Promise<{ drained: boolean }>;
}

const TEXT_LENGTH_CAP = 2048;
const DEFAULT_TEXT_BODY_BYTES = 1024 * 1024;
const DEFAULT_IMAGE_BODY_BYTES = 16 * 1024 * 1024;
/** Seconds a 429 answer asks the client to wait (Retry-After). */
const RETRY_AFTER_S = 1;
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const TOKEN_BUCKETS = [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/** Dynamic padding: the shortest padded length (a multiple the kernels handle well). */
const MIN_PADDED_LENGTH = 16;
const VERSION = '0.1.0';

/** OpenAI's error type for a status. */
function openAiType(status: number): string {
  return status === 401 ? 'authentication_error' : status === 404 ? 'not_found_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error';
}

/** TEI's error_type for a status. */
function teiType(status: number): string {
  return status === 401 ? 'Unauthorized' : status === 429 ? 'Overloaded' : status === 503 ? 'Unhealthy' : status >= 500 ? 'Backend' : 'Validation';
}

/** A 4xx/5xx answer with a stable code. */
class HttpError extends PerceiverError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

function optionalInteger(options: ServeOptions, name: keyof ServeOptions, min: number): number | undefined {
  const value = options[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(`options.${name}`, min === 0 ? 'a non-negative integer' : 'a positive integer', value);
  }
  return value;
}

/** Status and JSON body for any error a handler (or fastify itself) raised. */
function errorResponse(error: unknown): { status: number; body: { error: string; code: string } } {
  if (error instanceof HttpError) return { status: error.status, body: { error: error.message, code: error.code } };
  if (error instanceof QueueFullError) return { status: 429, body: { error: error.message, code: error.code } };
  if (error instanceof ImageTooLargeError) return { status: 413, body: { error: error.message, code: error.code } };
  if (error instanceof InvalidArgumentError) return { status: 400, body: { error: error.message, code: error.code } };
  if (error instanceof DisposedError) return { status: 503, body: { error: error.message, code: error.code } };
  if (error instanceof CancelledError) return { status: 499, body: { error: error.message, code: error.code } };
  if (error instanceof PerceiverError) return { status: 500, body: { error: error.message, code: error.code } };
  // Fastify's own errors (bad JSON, body too large, wrong content type) carry a 4xx statusCode.
  const fst = error as Partial<FastifyError> | undefined;
  const statusCode = typeof fst?.statusCode === 'number' ? fst.statusCode : 500;
  if (statusCode >= 400 && statusCode < 500) {
    const code =
      fst?.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? 'ERR_PERCEIVER_BODY_TOO_LARGE'
        : fst?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? 'ERR_PERCEIVER_UNSUPPORTED_MEDIA_TYPE'
          : fst?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || fst?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || error instanceof SyntaxError
            ? 'ERR_PERCEIVER_INVALID_JSON'
            : 'ERR_PERCEIVER_BAD_REQUEST';
    return { status: statusCode, body: { error: fst?.message ?? 'bad request', code } };
  }
  return { status: 500, body: { error: 'internal server error', code: 'ERR_PERCEIVER_INTERNAL' } };
}

function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** A counting semaphore: at most `size` holders; the others wait in order. */
class Semaphore {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

/** Body parsing in worker threads, shared by every server of the process. */
let bodyPool: WorkerPool<BodyTask, ParsedBody> | undefined;

function bodyWorkers(): WorkerPool<BodyTask, ParsedBody> {
  bodyPool ??= new WorkerPool<BodyTask, ParsedBody>(siblingModule(import.meta.url, 'body_worker'));
  return bodyPool;
}

/** The SHA-256 digest of a key: equal-length buffers for timingSafeEqual, whatever the keys' lengths. */
function keyDigest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

/** A text model's input for one text: ids and mask padded to `length`. */
function paddedIds(ids: number[], length: number): { inputIds: Tensor; attentionMask: Tensor } {
  const inputIds = new BigInt64Array(length);
  const mask = new BigInt64Array(length);
  // Ids are small non-negative integers: the low 32-bit word of each little-endian int64 is enough.
  const ids32 = new Int32Array(inputIds.buffer);
  const mask32 = new Int32Array(mask.buffer);
  for (let j = 0; j < ids.length; j++) {
    ids32[2 * j] = ids[j]!;
    mask32[2 * j] = 1;
  }
  return { inputIds: new Tensor('int64', [1, length], inputIds), attentionMask: new Tensor('int64', [1, length], mask) };
}

/** The padded length of a sequence of `count` tokens: the power of two at or above it, at least MIN_PADDED_LENGTH, at most `cap`. */
export function paddedLength(count: number, cap: number): number {
  let length = MIN_PADDED_LENGTH;
  while (length < count) length *= 2;
  return Math.min(length, cap);
}

type Modality = 'text' | 'image';
type HealthState = 'loading' | 'ready' | 'failed' | 'disposed';

/** Everything the routes need of one served model. */
interface Endpoint {
  name: string;
  model: PerceiverModel<any>;
  className: string;
  modality: Modality;
  textLength: number;
  textCodeUnits: number;
  imageProcessor?: PerceiverImageProcessor;
  canClassify: boolean;
  labels: string[];
  embedBatcher: ReturnType<typeof createBatcher>;
  classifyBatcher: ReturnType<typeof createBatcher>;
  state: Exclude<HealthState, 'disposed'>;
  /** Why the model is unusable, once it is. */
  failure?: string;
}

/** One item ready for the batcher, with its real token count (usage). */
interface PreparedItem {
  request: Pick<BatchRequest, 'inputs' | 'attentionMask' | 'tokens'>;
  promptTokens: number;
}

const NAME_PATTERN = /^[A-Za-z0-9._\/-]{1,128}$/;

/** Serves one model, or several by name, over HTTP until close(). */
export async function serve(models: PerceiverModel<any> | ServedModel[], options: ServeOptions = {}): Promise<RunningServer> {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  // Optional packages (lib/optional.ts): a MissingDependencyError before anything is started.
  const [{ default: Fastify }, { Counter, Gauge, Histogram, Registry, collectDefaultMetrics }] = await Promise.all([requireOptional<typeof import('fastify')>('fastify'), requireOptional<typeof import('prom-client')>('prom-client')]);
  const specs: ServedModel[] = Array.isArray(models) ? models : [{ name: options.modelName ?? (models as { constructor?: { name?: string } })?.constructor?.name ?? 'model', model: models }];
  if (specs.length === 0) throw new InvalidArgumentError('models', 'a loaded PerceiverModel or a non-empty array of { name, model }', 'an empty array');
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '') throw new InvalidArgumentError('options.host', 'a host name or address', host);
  const port = optionalInteger(options, 'port', 0) ?? 0;
  if (port > 65535) throw new InvalidArgumentError('options.port', 'a port from 0 to 65535', port);
  const topK = optionalInteger(options, 'topK', 1) ?? 5;
  const maxQueue = optionalInteger(options, 'maxQueue', 1) ?? 1024;
  const maxBatchSize = optionalInteger(options, 'maxBatchSize', 1) ?? 16;
  const maxBatchTokens = optionalInteger(options, 'maxBatchTokens', 1) ?? 16384;
  const maxClientBatchSize = optionalInteger(options, 'maxClientBatchSize', 1) ?? Math.min(32, maxQueue);
  if (maxClientBatchSize > maxQueue) throw new InvalidArgumentError('options.maxClientBatchSize', `at most maxQueue (${maxQueue}): a larger request could never be queued`, maxClientBatchSize);
  const maxImagePixels = optionalInteger(options, 'maxImagePixels', 1) ?? DEFAULT_MAX_INPUT_PIXELS;
  const maxConcurrentDecodes = optionalInteger(options, 'maxConcurrentDecodes', 1) ?? Math.max(1, Math.min(4, availableParallelism()));
  const headersTimeoutMs = optionalInteger(options, 'headersTimeoutMs', 1) ?? 10_000;
  const requestTimeoutMs = optionalInteger(options, 'requestTimeoutMs', 1) ?? 30_000;
  const connectionTimeoutMs = optionalInteger(options, 'connectionTimeoutMs', 1) ?? 60_000;
  const keepAliveTimeoutMs = optionalInteger(options, 'keepAliveTimeoutMs', 1) ?? 5_000;
  const shutdownTimeoutMs = optionalInteger(options, 'shutdownTimeoutMs', 0) ?? 10_000;
  const padding = options.padding ?? 'dynamic';
  if (padding !== 'dynamic' && padding !== 'fixed') throw new InvalidArgumentError('options.padding', "'dynamic' or 'fixed'", padding);
  const apiKeys = options.apiKeys ?? [];
  if (!Array.isArray(apiKeys) || apiKeys.some((key) => typeof key !== 'string' || key.length < 1)) {
    throw new InvalidArgumentError('options.apiKeys', 'an array of non-empty strings', apiKeys);
  }
  const keyDigests = apiKeys.map(keyDigest);
  const publicRoutes = new Set(options.publicRoutes ?? ['/health', '/metrics']);
  if (!Array.isArray(options.publicRoutes ?? []) || [...publicRoutes].some((route) => typeof route !== 'string' || !route.startsWith('/'))) {
    throw new InvalidArgumentError('options.publicRoutes', "an array of routes such as '/health'", options.publicRoutes);
  }
  const batcherOptions = { maxBatchSize, maxDelayMs: options.maxDelayMs, maxQueue, maxBatchTokens };
  const longestSpecial = Math.max(...[...new PerceiverTokenizer().specialTokens.keys()].map((literal) => literal.length));
  const tokenizer = new PerceiverTokenizer();
  const clsId = tokenizer.specialTokens.get('[CLS]')!;
  const sepId = tokenizer.specialTokens.get('[SEP]')!;

  // Metrics, on a registry of this server's own.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'perceiver_requests_total', help: 'HTTP requests answered, by route, status code and model', labelNames: ['route', 'status', 'model'] as const, registers: [registry] });
  const batchSize = new Histogram({ name: 'perceiver_batch_size', help: 'Items per model forward', labelNames: ['route', 'model'] as const, buckets: BATCH_BUCKETS, registers: [registry] });
  const batchTokens = new Histogram({ name: 'perceiver_batch_tokens', help: 'Tokens (items x padded length) per text model forward', labelNames: ['route', 'model'] as const, buckets: TOKEN_BUCKETS, registers: [registry] });
  const duration = new Histogram({
    name: 'perceiver_request_duration_seconds',
    help: 'Time from request to response, in seconds, by route and status code',
    labelNames: ['route', 'status'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });

  const endpoints = new Map<string, Endpoint>();
  for (const [i, spec] of specs.entries()) {
    if (typeof spec !== 'object' || spec === null) throw new InvalidArgumentError(`models[${i}]`, 'an object { name, model }', spec);
    const model = spec.model;
    if (typeof model !== 'object' || model === null || typeof (model as { forward?: unknown }).forward !== 'function' || !model.config) {
      throw new InvalidArgumentError(Array.isArray(models) ? `models[${i}].model` : 'model', 'a loaded PerceiverModel', model);
    }
    if (typeof spec.name !== 'string' || !NAME_PATTERN.test(spec.name)) {
      throw new InvalidArgumentError(Array.isArray(models) ? `models[${i}].name` : 'options.modelName', "1 to 128 letters, digits, '.', '_', '-' or '/'", spec.name);
    }
    if (endpoints.has(spec.name)) throw new InvalidArgumentError(`models[${i}].name`, 'a name no other model has', spec.name);
    const className = model.constructor.name;
    const modality: Modality | undefined =
      model.inputPreprocessor?.inputKind === 'text' || model.inputPreprocessor?.inputKind === 'image' ? model.inputPreprocessor.inputKind : undefined;
    if (modality === undefined) {
      throw new InvalidArgumentError(
        Array.isArray(models) ? `models[${i}].model` : 'model',
        'a model that takes text (PerceiverTextPreprocessor) or images (PerceiverImagePreprocessor): only those can be served',
        `${className} (${model.inputPreprocessor?.constructor.name ?? 'no input preprocessor'})`,
      );
    }
    const maxTextLength = spec.maxTextLength ?? options.maxTextLength;
    if (maxTextLength !== undefined && (typeof maxTextLength !== 'number' || !Number.isSafeInteger(maxTextLength) || maxTextLength < 3)) {
      throw new InvalidArgumentError('maxTextLength', 'an integer of at least 3 (room for [CLS], one token and [SEP])', maxTextLength);
    }
    const textLength = Math.min(maxTextLength ?? TEXT_LENGTH_CAP, model.config.max_position_embeddings);
    const imageProcessor = spec.imageProcessor ?? options.imageProcessor;
    if (imageProcessor !== undefined && !(imageProcessor instanceof PerceiverImageProcessor)) {
      throw new InvalidArgumentError('imageProcessor', 'a PerceiverImageProcessor', imageProcessor);
    }
    const name = spec.name;
    const observe = (route: string, inputs: BatchRequest['inputs']): void => {
      const shape = (inputs instanceof Tensor ? inputs : Object.values(inputs)[0]!).shape;
      batchSize.observe({ route, model: name }, shape[0] ?? 1);
      if (modality === 'text') batchTokens.observe({ route, model: name }, (shape[0] ?? 1) * (shape[1] ?? 1));
    };
    let endpoint: Endpoint;
    /** Marks the model unusable when the engine itself failed (not for a bad input or a full device). */
    const watch = async <T>(work: () => Promise<T>): Promise<T> => {
      try {
        return await work();
      } catch (error) {
        if (error instanceof NativeError || error instanceof BackendUnavailableError) {
          endpoint.state = 'failed';
          endpoint.failure = error.message;
        }
        throw error;
      }
    };
    endpoint = {
      name,
      model,
      className,
      modality,
      textLength,
      // Each token of a text comes from at most one UTF-16 code unit (a byte of its UTF-8) or from
      // the literal of a special token (e.g. "[MASK]", 6 units). A literal cut by the end of a part
      // can only span its last units, so a part of longest * (textLength + 1) units tokenizes to
      // more than textLength tokens whenever the whole text does: the cut never hides an over-long text.
      textCodeUnits: longestSpecial * (textLength + 1),
      imageProcessor: modality === 'image' ? (imageProcessor ?? new PerceiverImageProcessor()) : undefined,
      canClassify: model.decoder instanceof PerceiverClassificationDecoder,
      labels: Array.from({ length: model.config.num_labels }, (_, i) => model.config.id2label[String(i)] ?? `LABEL_${i}`),
      embedBatcher: createBatcher(
        {
          forward: (call) =>
            watch(async () => {
              observe('/embed', call.inputs);
              return { lastHiddenState: await model.embed(call.inputs, { attentionMask: call.attentionMask, pooling: 'mean' }) };
            }),
        },
        batcherOptions,
      ),
      classifyBatcher: createBatcher(
        {
          forward: (call) =>
            watch(async () => {
              observe('/classify', call.inputs);
              return (await model.forward(call)) as Awaited<ReturnType<BatchableModel['forward']>>;
            }),
        },
        batcherOptions,
      ),
      state: 'loading',
    };
    endpoints.set(name, endpoint);
  }
  const defaultEndpoint = endpoints.values().next().value!;
  const bodyTargets: Record<string, BodyTarget> = Object.fromEntries([...endpoints.values()].map((e) => [e.name, { modality: e.modality, textCodeUnits: e.textCodeUnits }]));
  const maxBodyBytes = optionalInteger(options, 'maxBodyBytes', 1) ?? ([...endpoints.values()].some((e) => e.modality === 'image') ? DEFAULT_IMAGE_BODY_BYTES : DEFAULT_TEXT_BODY_BYTES);
  const decodeSlots = new Semaphore(maxConcurrentDecodes);
  const allBatchers = () => [...endpoints.values()].flatMap((e) => [e.embedBatcher, e.classifyBatcher]);

  new Gauge({
    name: 'perceiver_queue_depth',
    help: 'Items queued or in a forward, by model and route',
    labelNames: ['model', 'route'] as const,
    registers: [registry],
    collect() {
      for (const e of endpoints.values()) {
        for (const [route, batcher] of [['/embed', e.embedBatcher], ['/classify', e.classifyBatcher]] as const) {
          const { queued, inFlight } = batcher.stats;
          this.set({ model: e.name, route }, queued + inFlight);
        }
      }
    },
  });
  // The event loop's worst delay since the last scrape: the figure every guard above exists to keep small.
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  new Gauge({
    name: 'perceiver_event_loop_delay_max_seconds',
    help: 'Longest event-loop delay since the previous scrape (sampled every 5 ms), in seconds',
    registers: [registry],
    collect() {
      this.set(loopDelay.max / 1e9);
      loopDelay.reset();
    },
  });

  function healthOf(e: Endpoint): HealthState {
    return e.model.disposed ? 'disposed' : e.state;
  }

  /** A text as the model's input: refused (413) when longer than the model unless `truncate`. */
  function prepareText(e: Endpoint, input: Extract<BodyInput, { kind: 'text' }>, where: string, truncate: boolean, keepEnd: boolean): PreparedItem {
    // Without special tokens, the ids of the (already cut) text: at most 4 * textCodeUnits bytes.
    let ids = tokenizer.encode(input.text, { addSpecialTokens: false });
    const room = e.textLength - 2;
    if (input.cut || ids.length > room) {
      if (!truncate) {
        const count = input.cut ? `more than ${e.textLength}` : String(ids.length + 2);
        throw new HttpError(413, 'ERR_PERCEIVER_INPUT_TOO_LONG', `${where} is ${count} tokens long; ${e.name} takes at most ${e.textLength} (special tokens included): shorten it, or send "truncate": true`);
      }
      ids = keepEnd ? ids.slice(ids.length - room) : ids.slice(0, room);
    }
    const sequence = [clsId, ...ids, sepId];
    const length = padding === 'fixed' ? e.textLength : paddedLength(sequence.length, e.textLength);
    const { inputIds, attentionMask } = paddedIds(sequence, length);
    return { request: { inputs: inputIds, attentionMask, tokens: length }, promptTokens: sequence.length };
  }

  async function prepareImage(e: Endpoint, input: Extract<BodyInput, { kind: 'image' }>, signal: AbortSignal): Promise<PreparedItem> {
    const release = await decodeSlots.acquire();
    try {
      // A client that left while waiting for a slot costs no decoding.
      if (signal.aborted) throw new CancelledError('the request was cancelled', { cause: signal.reason });
      // A Buffer, never a string: a string would be read as a file path.
      const pixels = await e.imageProcessor!.preprocess(Buffer.from(input.image.buffer, input.image.byteOffset, input.image.byteLength), { maxInputPixels: maxImagePixels });
      return { request: { inputs: pixels }, promptTokens: 0 };
    } finally {
      release();
    }
  }

  /** The checked body of a request, or the error it carries. */
  function parsedBody(body: unknown): Extract<ParsedBody, { kind: 'inputs' }> {
    const parsed = body as ParsedBody | undefined;
    // No body at all (fastify parses none without Content-Length or Transfer-Encoding).
    if (parsed === undefined) throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', 'no body: send application/json {"inputs": ...}, {"input": ...}, {"text": ...} or {"image": "<base64>"}');
    if (parsed.kind === 'error') throw new HttpError(parsed.status, parsed.code, parsed.message);
    return parsed;
  }

  /**
   * Runs every input of a body through a batcher, in order. The items are prepared first (a bad
   * one refuses the whole request before any runs), then all are queued at once or none (429).
   */
  async function runItems(
    e: Endpoint,
    body: Extract<ParsedBody, { kind: 'inputs' }>,
    which: 'embed' | 'classify',
    truncateByDefault: boolean,
    signal: AbortSignal,
  ): Promise<{ results: Tensor[]; promptTokens: number }> {
    if (healthOf(e) === 'failed') throw new HttpError(503, 'ERR_PERCEIVER_MODEL_FAILED', `${e.name} is unusable: ${e.failure ?? 'its engine failed'}`);
    const truncate = body.options.truncate ?? truncateByDefault;
    const keepEnd = body.options.truncationDirection === 'left';
    const prepared: PreparedItem[] = [];
    for (const [i, input] of body.inputs.entries()) {
      const where = body.batched ? `"${body.key}"[${i}]` : `"${body.key}"`;
      if (input.kind !== e.modality) {
        throw new HttpError(400, 'ERR_PERCEIVER_WRONG_MODALITY', `${e.name} (${e.className}) is ${e.modality === 'text' ? 'a text model: send text, not an image' : 'an image model: send the base64 of an image file, not text'} (${where})`);
      }
      prepared.push(input.kind === 'text' ? prepareText(e, input, where, truncate, keepEnd) : await prepareImage(e, input, signal));
    }
    const batcher = which === 'embed' ? e.embedBatcher : e.classifyBatcher;
    const { queued, inFlight } = batcher.stats;
    if (queued + inFlight + prepared.length > maxQueue) throw new QueueFullError(maxQueue);
    // Submitted in one tick: no other request can take the room checked above.
    const pending = prepared.map((item) => batcher.submit({ ...item.request, signal }));
    const settled = await Promise.allSettled(pending);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const results = settled.map((s) => {
      const { lastHiddenState, logits } = (s as PromiseFulfilledResult<Awaited<(typeof pending)[number]>>).value;
      return which === 'embed' ? lastHiddenState : (logits as Tensor);
    });
    return { results, promptTokens: prepared.reduce((sum, item) => sum + item.promptTokens, 0) };
  }

  /** Refuses `dimensions` other than the embeddings' size (mean-pooled latents: d_latents), before any work. */
  function checkDimensions(e: Endpoint, options: BodyOptions): void {
    const size = e.model.config.d_latents;
    if (options.dimensions !== undefined && options.dimensions !== size) {
      throw new HttpError(400, 'ERR_PERCEIVER_DIMENSIONS_UNSUPPORTED', `"dimensions": ${options.dimensions} is not supported: ${e.name}'s embeddings have ${size} dimensions and are not shortened (leave "dimensions" out, or send ${size})`);
    }
  }

  function embeddingValues(tensor: Tensor, options: BodyOptions, normalizeByDefault: boolean): Float32Array {
    const values = tensor.toFloat32();
    if (options.normalize ?? normalizeByDefault) {
      let sum = 0;
      for (const v of values) sum += v * v;
      const norm = Math.sqrt(sum);
      if (norm > 0) for (let i = 0; i < values.length; i++) values[i]! /= norm;
    }
    return values;
  }

  function scoresOf(e: Endpoint, logits: Tensor, raw: boolean, k: number): { label: string; score: number }[] {
    if (!(logits instanceof Tensor) || logits.size !== e.labels.length) {
      throw new PerceiverError('ERR_PERCEIVER_INTERNAL', `the model's logits do not match its ${e.labels.length} labels`);
    }
    const values = logits.toFloat32();
    const scores = raw ? Float64Array.from(values) : softmax(values);
    const order = Array.from(scores.keys()).sort((a, b) => scores[b]! - scores[a]!);
    return order.slice(0, Math.min(k, e.labels.length)).map((i) => ({ label: e.labels[i]!, score: scores[i]! }));
  }

  /** An AbortSignal that fires when the client goes away before the answer is sent. */
  function clientGone(reply: FastifyReply): AbortSignal {
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort(new Error('the client closed the connection'));
    });
    return controller.signal;
  }

  const app = Fastify({
    logger: options.logger === true,
    bodyLimit: maxBodyBytes,
    connectionTimeout: connectionTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    requestTimeout: requestTimeoutMs,
    // Node checks the headers and request timeouts this often (its default, 30 s, would let a slow
    // client hold a request for up to twice the timeout).
    http: { headersTimeout: headersTimeoutMs, connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(headersTimeoutMs, requestTimeoutMs) / 4))) },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });

  /** The model a request's URL names (/models/NAME/...), or undefined. */
  const urlModel = (request: FastifyRequest): string | undefined => (request.params as { model?: string } | undefined)?.model;

  // JSON bodies: ours, not fastify's parser, so that large ones are parsed off the main thread and
  // only the part of a text the model can use is kept. text/plain is not accepted (415).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (request: FastifyRequest, bytes: Buffer) => {
    const target = urlModel(request);
    if (target !== undefined && !endpoints.has(target)) return { kind: 'error', status: 404, code: 'ERR_PERCEIVER_MODEL_NOT_FOUND', message: `no model named ${JSON.stringify(target)} is served here` } satisfies ParsedBody;
    const task = { targets: bodyTargets, target, fallback: defaultEndpoint.name, maxItems: maxClientBatchSize };
    if (bytes.length <= INLINE_BODY_BYTES) return readBody(bytes, task);
    // Move the bytes to the worker without a copy on this thread when they own their memory.
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : Buffer.from(bytes);
    return bodyWorkers().run({ bytes: own, ...task }, [own.buffer as ArrayBuffer]);
  });

  /** The route a request matched without the /models/NAME prefix (e.g. '/embed'), for auth and metrics. */
  const routeOf = (request: FastifyRequest): string => (request.routeOptions.url ?? 'unmatched').replace(/^\/models\/:model/, '');
  const isOpenAi = (request: FastifyRequest): boolean => routeOf(request).startsWith('/v1/') || request.url.startsWith('/v1/');

  const sendError = (request: FastifyRequest, reply: FastifyReply, status: number, body: { error: string; code: string }): FastifyReply => {
    if (status === 429) void reply.header('retry-after', String(RETRY_AFTER_S));
    // A body refused for its size is not read to its end: the connection closes after the answer.
    if (status === 413) void reply.header('connection', 'close');
    const payload = isOpenAi(request)
      ? { error: { message: body.error, type: openAiType(status), code: body.code, param: null } }
      : { ...body, error_type: teiType(status) };
    return reply.status(status).type('application/json').send(payload);
  };

  // Authentication, before admission and before the body is read.
  if (keyDigests.length > 0) {
    app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      if (publicRoutes.has(routeOf(request)) || (request.routeOptions.url === undefined && publicRoutes.has(request.url))) return;
      const header = request.headers.authorization;
      const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      if (match) {
        const digest = keyDigest(match[1]!);
        // Every key is compared, in constant time: neither the key nor its position leaks.
        let found = false;
        for (const expected of keyDigests) found = timingSafeEqual(digest, expected) || found;
        if (found) return;
      }
      void reply.header('www-authenticate', 'Bearer');
      void reply.header('connection', 'close');
      return sendError(request, reply, 401, { error: match ? 'the API key is not valid' : 'an API key is required: send "Authorization: Bearer KEY"', code: 'ERR_PERCEIVER_UNAUTHORIZED' });
    });
  }

  /**
   * Admission, before the body is read: a place in the route's queue, or 429 at once. The place is
   * held until the handler's work ends (a client that leaves early does not free it while its
   * image is still being decoded), or until the connection closes if the handler never started.
   */
  const admitted = new Map<string, number>();
  const places = new WeakMap<FastifyRequest, { started: boolean; release: () => void }>();
  const admit = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const route = request.routeOptions.url!;
    const count = admitted.get(route) ?? 0;
    if (count >= maxQueue) {
      const error = new QueueFullError(maxQueue);
      void reply.header('connection', 'close');
      sendError(request, reply, 429, { error: error.message, code: error.code });
      return reply as never;
    }
    admitted.set(route, count + 1);
    let released = false;
    const place = {
      started: false,
      release: () => {
        if (released) return;
        released = true;
        admitted.set(route, admitted.get(route)! - 1);
      },
    };
    places.set(request, place);
    reply.raw.once('close', () => {
      if (!place.started) place.release();
    });
  };
  /** Runs a handler's work holding the request's place. */
  const holding = async <T>(request: FastifyRequest, work: () => Promise<T>): Promise<T> => {
    const place = places.get(request);
    if (place) place.started = true;
    try {
      return await work();
    } finally {
      place?.release();
    }
  };

  /** Which model served a request, for the metrics' label. */
  const servedBy = new WeakMap<FastifyRequest, string>();

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = errorResponse(error);
    return sendError(request, reply, status, body);
  });
  app.setNotFoundHandler((request, reply) => {
    return sendError(request, reply, 404, { error: `no route ${request.method} ${request.url}`, code: 'ERR_PERCEIVER_NOT_FOUND' });
  });
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ? routeOf(request) : 'unmatched';
    const status = String(reply.statusCode);
    requests.inc({ route, status, model: servedBy.get(request) ?? '' });
    duration.observe({ route, status }, reply.elapsedTime / 1000);
  });

  app.get('/health', async (_request, reply) => {
    const states = Object.fromEntries([...endpoints.values()].map((e) => [e.name, healthOf(e)]));
    const ok = Object.values(states).every((state) => state === 'ready');
    const overall = ok ? 'ok' : Object.values(states).some((state) => state === 'loading') && Object.values(states).every((state) => state === 'ready' || state === 'loading') ? 'loading' : 'unavailable';
    return reply.status(ok ? 200 : 503).send({ status: overall, model: defaultEndpoint.className, models: states });
  });

  app.get('/metrics', async (_request, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [...endpoints.values()].map((e) => ({ id: e.name, object: 'model', created: 0, owned_by: 'perceiver-io' })),
  }));

  /** The endpoint a request goes to: its URL's model, else the one its body chose. */
  const endpointOf = (request: FastifyRequest, body?: Extract<ParsedBody, { kind: 'inputs' }>): Endpoint => {
    const name = urlModel(request) ?? body?.target ?? defaultEndpoint.name;
    const e = endpoints.get(name);
    if (!e) throw new HttpError(404, 'ERR_PERCEIVER_MODEL_NOT_FOUND', `no model named ${JSON.stringify(name)} is served here; the models are ${[...endpoints.keys()].map((n) => JSON.stringify(n)).join(', ')}`);
    servedBy.set(request, e.name);
    return e;
  };

  for (const prefix of ['', '/models/:model']) {
    app.get(`${prefix}/info`, async (request) => {
      const e = endpointOf(request);
      return {
        model_id: e.name,
        model_sha: null,
        model_class: e.className,
        model_dtype: String((e.model as { dtype?: string }).dtype ?? 'float32'),
        model_device: String((e.model as { device?: string }).device ?? 'cpu'),
        model_type: e.canClassify
          ? { classifier: { id2label: Object.fromEntries(e.labels.map((l, i) => [String(i), l])), label2id: Object.fromEntries(e.labels.map((l, i) => [l, i])) } }
          : { embedding: { pooling: 'mean' } },
        modality: e.modality,
        max_input_length: e.modality === 'text' ? e.textLength : null,
        padding,
        max_concurrent_requests: maxQueue,
        max_batch_tokens: maxBatchTokens,
        max_batch_requests: maxBatchSize,
        max_client_batch_size: maxClientBatchSize,
        auto_truncate: false,
        state: healthOf(e),
        models: [...endpoints.keys()],
        version: VERSION,
      };
    });

    // This service's /embed, and TEI's: `{"inputs"}` is answered as TEI does (an array of arrays,
    // normalized by default, over-long refused); `{"text"}` / `{"image"}` as before.
    app.post(`${prefix}/embed`, { onRequest: admit }, async (request, reply) =>
      holding(request, async () => {
        const body = parsedBody(request.body);
        const e = endpointOf(request, body);
        const tei = body.key === 'input' || body.key === 'inputs';
        checkDimensions(e, body.options);
        const { results } = await runItems(e, body, 'embed', !tei, clientGone(reply));
        const vectors = results.map((t) => Array.from(embeddingValues(t, body.options, tei)));
        if (tei) return vectors;
        return body.batched ? { embeddings: vectors } : { embedding: vectors[0] };
      }),
    );

    app.post(`${prefix}/v1/embeddings`, { onRequest: admit }, async (request, reply) =>
      holding(request, async () => {
        const body = parsedBody(request.body);
        if (body.key !== 'input') throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', `OpenAI's embeddings take "input" (a string or an array of strings), not "${body.key}"`);
        const e = endpointOf(request, body);
        checkDimensions(e, body.options);
        const { results, promptTokens } = await runItems(e, body, 'embed', false, clientGone(reply));
        const base64 = body.options.encodingFormat === 'base64';
        return {
          object: 'list',
          data: results.map((t, index) => {
            const values = embeddingValues(t, body.options, true);
            // base64: the float32 values' little-endian bytes, as OpenAI's clients decode them.
            return { object: 'embedding', index, embedding: base64 ? Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64') : Array.from(values) };
          }),
          model: e.name,
          usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
        };
      }),
    );

    const classify = (teiShape: boolean) => async (request: FastifyRequest, reply: FastifyReply) =>
      holding(request, async () => {
        const body = parsedBody(request.body);
        const e = endpointOf(request, body);
        if (!e.canClassify) {
          throw new HttpError(400, 'ERR_PERCEIVER_NOT_A_CLASSIFIER', `${e.name} (${e.className}) has no classification output (it is not a sequence or image classifier); use /embed`);
        }
        const tei = teiShape || body.key === 'input' || body.key === 'inputs';
        const { results } = await runItems(e, body, 'classify', !tei, clientGone(reply));
        // TEI answers every label unless top_k says otherwise; /classify keeps its topK default.
        const k = body.options.topK ?? (teiShape ? e.labels.length : topK);
        const answers = results.map((logits) => scoresOf(e, logits, body.options.rawScores === true, k));
        if (teiShape) return body.batched ? answers : answers[0];
        return body.batched ? { results: answers.map((labels) => ({ labels })) } : { labels: answers[0] };
      });
    app.post(`${prefix}/classify`, { onRequest: admit }, classify(false));
    app.post(`${prefix}/predict`, { onRequest: admit }, classify(true));
  }

  /** One forward per model through its batcher, so that /health turns 200 only once the engine has answered. */
  async function warmUp(e: Endpoint): Promise<void> {
    try {
      let item: PreparedItem;
      if (e.modality === 'text') {
        item = prepareText(e, { kind: 'text', text: 'warm-up', cut: false }, 'warm-up', true, false);
      } else {
        const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 127, g: 127, b: 127 } } }).png().toBuffer();
        item = await prepareImage(e, { kind: 'image', image: png }, new AbortController().signal);
      }
      await e.embedBatcher.submit(item.request);
      if (e.state === 'loading') e.state = 'ready';
    } catch (error) {
      e.state = 'failed';
      e.failure ??= `the warm-up forward failed: ${(error as Error)?.message ?? String(error)}`;
      throw new PerceiverError('ERR_PERCEIVER_WARM_UP', `${e.name}: ${e.failure}`, { cause: error });
    }
  }

  try {
    // Threads and native libraries start now, not inside the first requests.
    bodyWorkers().start();
    if ([...endpoints.values()].some((e) => e.modality === 'image')) await prepareImageDecoding();
    await app.listen({ host, port });
  } catch (error) {
    loopDelay.disable();
    await Promise.allSettled([app.close(), ...allBatchers().map((b) => b.close())]);
    throw error;
  }
  const address = app.server.address();
  const boundPort = typeof address === 'object' && address !== null ? address.port : port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  const ready = Promise.all([...endpoints.values()].map(warmUp)).then(() => undefined);
  // A failed warm-up is reported by /health and by `ready` to whoever awaits it; never unhandled.
  ready.catch(() => undefined);
  if (options.awaitReady !== false) {
    try {
      await ready;
    } catch (error) {
      loopDelay.disable();
      await Promise.allSettled([app.close(), ...allBatchers().map((b) => b.close())]);
      throw error;
    }
  }

  let closing: Promise<{ drained: boolean }> | undefined;
  return {
    url: `http://${urlHost}:${boundPort}`,
    ready,
    close(): Promise<{ drained: boolean }> {
      closing ??= (async () => {
        // Stop accepting; idle keep-alive connections close now (forceCloseConnections 'idle'),
        // new requests on busy ones get 503 (return503OnClosing). The requests in flight have
        // shutdownTimeoutMs to finish; then every connection left is destroyed.
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), shutdownTimeoutMs);
        });
        const closed = app.close().then(() => true);
        try {
          const drained = await Promise.race([closed, deadline]);
          if (!drained) {
            app.server.closeAllConnections();
            await closed;
          }
          return { drained };
        } finally {
          clearTimeout(timer);
          loopDelay.disable();
          await Promise.allSettled(allBatchers().map((b) => b.close()));
        }
      })();
      return closing;
    },
  };
}
