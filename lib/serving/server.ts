/**
 * HTTP serving (fastify): `GET /health`, `POST /embed`, `POST /classify`, `GET /metrics`.
 *
 * - Bodies are JSON: `{"text": "..."}` for text models (PerceiverTextPreprocessor) or
 *   `{"image": "<base64 of an image file>"}` for image models (PerceiverImagePreprocessor).
 * - Text is tokenized with `padding: 'max_length'` and truncation to one fixed length, so every
 *   request has the same shape and concurrent requests batch together. Only the prefix of the text
 *   that can reach the model is tokenized (body.ts, cutText).
 * - /embed runs through a batcher over an adapter whose forward returns mean-pooled latents
 *   (model.embed with pooling 'mean'); /classify through a batcher over the model itself, then
 *   softmax and the top-k labels of config.id2label.
 * - Hostile load (see the README's serve section for the numbers):
 *   - admission first: a request to /embed or /classify takes a place in its route's queue
 *     (maxQueue) as soon as its headers arrive, before its body is read; with none free it is
 *     answered 429 with `Retry-After` at once. The place is held until the request's work ends.
 *   - bodies over maxBodyBytes are answered 413 (from Content-Length, before reading); bodies over
 *     256 KiB are parsed and base64-decoded in a worker thread;
 *   - images: the header's width x height is checked against maxImagePixels (413) before decoding;
 *     at most maxConcurrentDecodes are decoded at once, in sharp (off the main thread), the large
 *     resizes in a worker thread (PerceiverImageProcessor);
 *   - timeouts: headersTimeoutMs, requestTimeoutMs (the whole request received), idle
 *     connectionTimeoutMs and keepAliveTimeoutMs; close() drains for at most shutdownTimeoutMs,
 *     then force-closes the connections left.
 * - Errors answer `{ "error": message, "code": "ERR_..." }`: InvalidArgumentError 400,
 *   QueueFullError 429 (with Retry-After), too large 413, a disposed model or closing server 503,
 *   anything else 500. A failing request never takes the process down.
 * - /metrics: Prometheus text from a registry of this server's own (not prom-client's global one),
 *   with `perceiver_event_loop_delay_max_seconds`, the worst event-loop delay since the last scrape.
 */
import { availableParallelism } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { DisposedError, InvalidArgumentError, PerceiverError } from '../errors.js';
import { DEFAULT_MAX_INPUT_PIXELS, ImageTooLargeError, PerceiverImageProcessor, prepareImageDecoding } from '../image_processor.js';
import { PerceiverClassificationDecoder } from '../modeling/decoders.js';
import type { PerceiverModel } from '../modeling/perceiver_model.js';
import { PerceiverImagePreprocessor, PerceiverTextPreprocessor } from '../modeling/preprocessors.js';
import { requireOptional } from '../optional.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { WorkerPool, siblingModule } from '../worker_pool.js';
import { CancelledError, QueueFullError, createBatcher, type BatchableModel, type BatchRequest } from './batcher.js';
import { INLINE_BODY_BYTES, readBody, type BodyTask, type ParsedBody } from './body.js';

export interface ServeOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 0: any free port; see RunningServer.url). */
  port?: number;
  /** Batcher: largest batch per forward (default 16). */
  maxBatchSize?: number;
  /** Batcher: longest a request waits for others, in ms (default 5). */
  maxDelayMs?: number;
  /** Batcher: most requests queued or in flight per route before answering 429 (default 1024). */
  maxQueue?: number;
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
  /** Fastify's request logging (default false). */
  logger?: boolean;
}

export interface RunningServer {
  /** e.g. http://127.0.0.1:41234 */
  url: string;
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
const ADMITTED_ROUTES = ['/embed', '/classify'] as const;
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

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

/** Serves a loaded model over HTTP until close(). */
export async function serve(model: PerceiverModel<any>, options: ServeOptions = {}): Promise<RunningServer> {
  if (typeof model !== 'object' || model === null || typeof (model as { forward?: unknown }).forward !== 'function' || !model.config) {
    throw new InvalidArgumentError('model', 'a loaded PerceiverModel', model);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  // Optional packages (lib/optional.ts): a MissingDependencyError before anything is started.
  const [{ default: Fastify }, { Counter, Gauge, Histogram, Registry }] = await Promise.all([requireOptional<typeof import('fastify')>('fastify'), requireOptional<typeof import('prom-client')>('prom-client')]);
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '') throw new InvalidArgumentError('options.host', 'a host name or address', host);
  const port = optionalInteger(options, 'port', 0) ?? 0;
  if (port > 65535) throw new InvalidArgumentError('options.port', 'a port from 0 to 65535', port);
  const topK = optionalInteger(options, 'topK', 1) ?? 5;
  const maxQueue = optionalInteger(options, 'maxQueue', 1) ?? 1024;
  const maxImagePixels = optionalInteger(options, 'maxImagePixels', 1) ?? DEFAULT_MAX_INPUT_PIXELS;
  const maxConcurrentDecodes = optionalInteger(options, 'maxConcurrentDecodes', 1) ?? Math.max(1, Math.min(4, availableParallelism()));
  const headersTimeoutMs = optionalInteger(options, 'headersTimeoutMs', 1) ?? 10_000;
  const requestTimeoutMs = optionalInteger(options, 'requestTimeoutMs', 1) ?? 30_000;
  const connectionTimeoutMs = optionalInteger(options, 'connectionTimeoutMs', 1) ?? 60_000;
  const keepAliveTimeoutMs = optionalInteger(options, 'keepAliveTimeoutMs', 1) ?? 5_000;
  const shutdownTimeoutMs = optionalInteger(options, 'shutdownTimeoutMs', 0) ?? 10_000;
  const batcherOptions = { maxBatchSize: options.maxBatchSize, maxDelayMs: options.maxDelayMs, maxQueue };
  if (options.imageProcessor !== undefined && !(options.imageProcessor instanceof PerceiverImageProcessor)) {
    throw new InvalidArgumentError('options.imageProcessor', 'a PerceiverImageProcessor', options.imageProcessor);
  }

  const config = model.config;
  const modelName = model.constructor.name;
  const modality: 'text' | 'image' | undefined =
    model.inputPreprocessor instanceof PerceiverTextPreprocessor ? 'text' : model.inputPreprocessor instanceof PerceiverImagePreprocessor ? 'image' : undefined;
  const maxBodyBytes = optionalInteger(options, 'maxBodyBytes', 1) ?? (modality === 'image' ? DEFAULT_IMAGE_BODY_BYTES : DEFAULT_TEXT_BODY_BYTES);
  const textLength = optionalInteger(options, 'maxTextLength', 1) ?? Math.min(config.max_position_embeddings, TEXT_LENGTH_CAP);
  const tokenizer = modality === 'text' ? new PerceiverTokenizer({ modelMaxLength: textLength }) : undefined;
  // Each token of a text comes from at most one UTF-16 code unit (a byte of its UTF-8) or from the
  // literal of a special token (e.g. "[MASK]", 6 units). A literal cut by the end of a prefix can
  // only span its last units, so a prefix of longest * (textLength + 1) units tokenizes to the same
  // first textLength tokens as the whole text: nothing past it can change the model's input.
  const longestSpecial = Math.max(...[...new PerceiverTokenizer().specialTokens.keys()].map((literal) => literal.length));
  const textCodeUnits = longestSpecial * (textLength + 1);
  const imageProcessor = modality === 'image' ? (options.imageProcessor ?? new PerceiverImageProcessor()) : undefined;
  const decodeSlots = new Semaphore(maxConcurrentDecodes);
  const canClassify = model.decoder instanceof PerceiverClassificationDecoder;
  const labels = Array.from({ length: config.num_labels }, (_, i) => config.id2label[String(i)] ?? `LABEL_${i}`);

  // Metrics, on a registry of this server's own.
  const registry = new Registry();
  const requests = new Counter({ name: 'perceiver_requests_total', help: 'HTTP requests answered, by route and status code', labelNames: ['route', 'status'] as const, registers: [registry] });
  const batchSize = new Histogram({ name: 'perceiver_batch_size', help: 'Items per model forward', labelNames: ['route'] as const, buckets: BATCH_BUCKETS, registers: [registry] });
  const duration = new Histogram({
    name: 'perceiver_request_duration_seconds',
    help: 'Time from request to response, in seconds',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
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

  const firstDim = (inputs: BatchRequest['inputs']): number => (inputs instanceof Tensor ? inputs : Object.values(inputs)[0]!).shape[0] ?? 1;
  const classifyModel: BatchableModel = {
    forward: (call) => {
      batchSize.observe({ route: '/classify' }, firstDim(call.inputs));
      return model.forward(call) as ReturnType<BatchableModel['forward']>;
    },
  };
  const embedModel: BatchableModel = {
    forward: async (call) => {
      batchSize.observe({ route: '/embed' }, firstDim(call.inputs));
      return { lastHiddenState: await model.embed(call.inputs, { attentionMask: call.attentionMask, pooling: 'mean' }) };
    },
  };
  const classifyBatcher = createBatcher(classifyModel, batcherOptions);
  const embedBatcher = createBatcher(embedModel, batcherOptions);

  /** A parsed body's input as one batch-1 request. */
  async function toRequest(body: unknown, signal: AbortSignal): Promise<Pick<BatchRequest, 'inputs' | 'attentionMask'>> {
    const parsed = body as ParsedBody | undefined;
    // No body at all (fastify parses none without Content-Length or Transfer-Encoding).
    if (parsed === undefined) throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', 'no body: send application/json {"text": "..."} or {"image": "<base64>"}');
    if (parsed.kind === 'error') throw new HttpError(parsed.status, parsed.code, parsed.message);
    if (modality === undefined) throw new HttpError(400, 'ERR_PERCEIVER_UNSUPPORTED_MODALITY', `${modelName} takes neither text nor images; it cannot be served over this API`);
    if (parsed.kind === 'text') {
      if (modality !== 'text') throw new HttpError(400, 'ERR_PERCEIVER_WRONG_MODALITY', `${modelName} is an image model: send {"image": "<base64 of an image file>"}, not text`);
      const encoded = tokenizer!.call(parsed.text, { padding: 'max_length', maxLength: textLength, truncation: true });
      return { inputs: encoded.inputIds, attentionMask: encoded.attentionMask };
    }
    if (modality !== 'image') throw new HttpError(400, 'ERR_PERCEIVER_WRONG_MODALITY', `${modelName} is a text model: send {"text": "..."}, not an image`);
    const release = await decodeSlots.acquire();
    try {
      // A client that left while waiting for a slot costs no decoding.
      if (signal.aborted) throw new CancelledError('the request was cancelled', { cause: signal.reason });
      // A Buffer, never a string: a string would be read as a file path.
      return { inputs: await imageProcessor!.preprocess(Buffer.from(parsed.image.buffer, parsed.image.byteOffset, parsed.image.byteLength), { maxInputPixels: maxImagePixels }) };
    } finally {
      release();
    }
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

  // JSON bodies: ours, not fastify's parser, so that large ones are parsed off the main thread and
  // only the part of a text the model can use is kept. text/plain is not accepted (415).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (_request: FastifyRequest, bytes: Buffer) => {
    if (bytes.length <= INLINE_BODY_BYTES) return readBody(bytes, textCodeUnits);
    // Move the bytes to the worker without a copy on this thread when they own their memory.
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : Buffer.from(bytes);
    return bodyWorkers().run({ bytes: own, textCodeUnits }, [own.buffer as ArrayBuffer]);
  });

  /**
   * Admission, before the body is read: a place in the route's queue, or 429 at once. The place is
   * held until the handler's work ends (a client that leaves early does not free it while its
   * image is still being decoded), or until the connection closes if the handler never started.
   */
  const admitted: Record<string, number> = Object.fromEntries(ADMITTED_ROUTES.map((route) => [route, 0]));
  const places = new WeakMap<FastifyRequest, { started: boolean; release: () => void }>();
  const admit = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const route = request.routeOptions.url!;
    if (admitted[route]! >= maxQueue) {
      const error = new QueueFullError(maxQueue);
      void reply.status(429).header('retry-after', String(RETRY_AFTER_S)).header('connection', 'close').send({ error: error.message, code: error.code });
      return reply;
    }
    admitted[route]!++;
    let released = false;
    const place = {
      started: false,
      release: () => {
        if (released) return;
        released = true;
        admitted[route]!--;
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

  app.setErrorHandler((error, _request, reply) => {
    const { status, body } = errorResponse(error);
    if (status === 429) void reply.header('retry-after', String(RETRY_AFTER_S));
    // A body refused for its size is not read to its end: the connection closes after the answer.
    if (status === 413) void reply.header('connection', 'close');
    void reply.status(status).type('application/json').send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: `no route ${request.method} ${request.url}`, code: 'ERR_PERCEIVER_NOT_FOUND' });
  });
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ route, status: String(reply.statusCode) });
    duration.observe({ route }, reply.elapsedTime / 1000);
  });

  app.get('/health', async (_request, reply) => {
    if (model.disposed) return reply.status(503).send({ status: 'unavailable', model: modelName });
    return { status: 'ok', model: modelName };
  });

  app.get('/metrics', async (_request, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });

  app.post('/embed', { onRequest: admit }, async (request, reply) =>
    holding(request, async () => {
      const signal = clientGone(reply);
      const item = await toRequest(request.body, signal);
      const result = await embedBatcher.submit({ ...item, signal });
      return { embedding: Array.from(result.lastHiddenState.toFloat32()) };
    }),
  );

  app.post('/classify', { onRequest: admit }, async (request, reply) =>
    holding(request, async () => {
      if (!canClassify) {
        throw new HttpError(400, 'ERR_PERCEIVER_NOT_A_CLASSIFIER', `${modelName} has no classification output (it is not a sequence or image classifier); use /embed`);
      }
      const signal = clientGone(reply);
      const item = await toRequest(request.body, signal);
      const result = await classifyBatcher.submit({ ...item, signal });
      const logits = result.logits;
      if (!(logits instanceof Tensor) || logits.size !== labels.length) {
        throw new PerceiverError('ERR_PERCEIVER_INTERNAL', `the model's logits do not match its ${labels.length} labels`);
      }
      const probs = softmax(logits.toFloat32());
      const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]!);
      return { labels: order.slice(0, Math.min(topK, labels.length)).map((i) => ({ label: labels[i]!, score: probs[i]! })) };
    }),
  );

  try {
    // Threads and native libraries start now, not inside the first requests.
    bodyWorkers().start();
    if (modality === 'image') await prepareImageDecoding();
    await app.listen({ host, port });
  } catch (error) {
    loopDelay.disable();
    await Promise.allSettled([app.close(), classifyBatcher.close(), embedBatcher.close()]);
    throw error;
  }
  const address = app.server.address();
  const boundPort = typeof address === 'object' && address !== null ? address.port : port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;

  let closing: Promise<{ drained: boolean }> | undefined;
  return {
    url: `http://${urlHost}:${boundPort}`,
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
          await Promise.allSettled([classifyBatcher.close(), embedBatcher.close()]);
        }
      })();
      return closing;
    },
  };
}
