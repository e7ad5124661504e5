/**
 * HTTP serving (fastify): `GET /health`, `POST /embed`, `POST /classify`, `GET /metrics`.
 *
 * - Bodies are JSON: `{"text": "..."}` for text models (PerceiverTextPreprocessor) or
 *   `{"image": "<base64 of an image file>"}` for image models (PerceiverImagePreprocessor).
 * - Text is tokenized with `padding: 'max_length'` and truncation to one fixed length, so every
 *   request has the same shape and concurrent requests batch together.
 * - /embed runs through a batcher over an adapter whose forward returns mean-pooled latents
 *   (model.embed with pooling 'mean'); /classify through a batcher over the model itself, then
 *   softmax and the top-k labels of config.id2label.
 * - Errors answer `{ "error": message, "code": "ERR_..." }`: InvalidArgumentError 400,
 *   QueueFullError 429, a disposed model or closing server 503, anything else 500. A failing
 *   request never takes the process down.
 * - /metrics: Prometheus text from a registry of this server's own (not prom-client's global one).
 */
import Fastify, { type FastifyError, type FastifyReply, type FastifyRequest } from 'fastify';
import { Counter, Histogram, Registry } from 'prom-client';
import { DisposedError, InvalidArgumentError, PerceiverError } from '../errors.js';
import { PerceiverImageProcessor } from '../image_processor.js';
import { PerceiverClassificationDecoder } from '../modeling/decoders.js';
import type { PerceiverModel } from '../modeling/perceiver_model.js';
import { PerceiverImagePreprocessor, PerceiverTextPreprocessor } from '../modeling/preprocessors.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { CancelledError, QueueFullError, createBatcher, type BatchableModel, type BatchRequest } from './batcher.js';

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
  /** Largest request body, in bytes (default 20 MB). */
  maxBodyBytes?: number;
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
  close(): Promise<void>;
}

const TEXT_LENGTH_CAP = 2048;
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

/** Serves a loaded model over HTTP until close(). */
export async function serve(model: PerceiverModel<any>, options: ServeOptions = {}): Promise<RunningServer> {
  if (typeof model !== 'object' || model === null || typeof (model as { forward?: unknown }).forward !== 'function' || !model.config) {
    throw new InvalidArgumentError('model', 'a loaded PerceiverModel', model);
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
  const host = options.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '') throw new InvalidArgumentError('options.host', 'a host name or address', host);
  const port = optionalInteger(options, 'port', 0) ?? 0;
  if (port > 65535) throw new InvalidArgumentError('options.port', 'a port from 0 to 65535', port);
  const topK = optionalInteger(options, 'topK', 1) ?? 5;
  const maxBodyBytes = optionalInteger(options, 'maxBodyBytes', 1) ?? 20 * 1024 * 1024;
  const batcherOptions = { maxBatchSize: options.maxBatchSize, maxDelayMs: options.maxDelayMs, maxQueue: options.maxQueue };
  if (options.imageProcessor !== undefined && !(options.imageProcessor instanceof PerceiverImageProcessor)) {
    throw new InvalidArgumentError('options.imageProcessor', 'a PerceiverImageProcessor', options.imageProcessor);
  }

  const config = model.config;
  const modelName = model.constructor.name;
  const modality: 'text' | 'image' | undefined =
    model.inputPreprocessor instanceof PerceiverTextPreprocessor ? 'text' : model.inputPreprocessor instanceof PerceiverImagePreprocessor ? 'image' : undefined;
  const textLength = optionalInteger(options, 'maxTextLength', 1) ?? Math.min(config.max_position_embeddings, TEXT_LENGTH_CAP);
  const tokenizer = modality === 'text' ? new PerceiverTokenizer({ modelMaxLength: textLength }) : undefined;
  const imageProcessor = modality === 'image' ? (options.imageProcessor ?? new PerceiverImageProcessor()) : undefined;
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

  /** The body's input as one batch-1 request. */
  async function toRequest(body: unknown): Promise<Pick<BatchRequest, 'inputs' | 'attentionMask'>> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', 'the body must be a JSON object: {"text": "..."} or {"image": "<base64>"}');
    }
    const { text, image } = body as { text?: unknown; image?: unknown };
    if (text !== undefined && image !== undefined) throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', 'give either "text" or "image", not both');
    if (text === undefined && image === undefined) {
      throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', `the body has neither "text" nor "image" (this ${modality ?? ''} model takes ${modality === 'image' ? '{"image": "<base64 of an image file>"}' : '{"text": "..."}'})`);
    }
    if (modality === undefined) throw new HttpError(400, 'ERR_PERCEIVER_UNSUPPORTED_MODALITY', `${modelName} takes neither text nor images; it cannot be served over this API`);
    if (text !== undefined) {
      if (modality !== 'text') throw new HttpError(400, 'ERR_PERCEIVER_WRONG_MODALITY', `${modelName} is an image model: send {"image": "<base64 of an image file>"}, not text`);
      if (typeof text !== 'string') throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', `"text" must be a string, got ${typeof text === 'object' ? (text === null ? 'null' : Array.isArray(text) ? 'an array' : 'an object') : typeof text}`);
      const encoded = tokenizer!.call(text, { padding: 'max_length', maxLength: textLength, truncation: true });
      return { inputs: encoded.inputIds, attentionMask: encoded.attentionMask };
    }
    if (modality !== 'image') throw new HttpError(400, 'ERR_PERCEIVER_WRONG_MODALITY', `${modelName} is a text model: send {"text": "..."}, not an image`);
    if (typeof image !== 'string') throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', '"image" must be a string: the base64 of an image file');
    const b64 = image.replace(/^data:[^,]*;base64,/, '').replace(/\s+/g, '');
    if (b64 === '' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', '"image" is not valid base64');
    const bytes = Buffer.from(b64, 'base64');
    if (bytes.length === 0) throw new HttpError(400, 'ERR_PERCEIVER_BAD_REQUEST', '"image" decodes to no bytes');
    // A Buffer, never a string: a string would be read as a file path.
    return { inputs: await imageProcessor!.preprocess(bytes) };
  }

  /** An AbortSignal that fires when the client goes away before the answer is sent. */
  function clientGone(reply: FastifyReply): AbortSignal {
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort(new Error('the client closed the connection'));
    });
    return controller.signal;
  }

  const app = Fastify({ logger: options.logger === true, bodyLimit: maxBodyBytes });

  app.setErrorHandler((error, _request, reply) => {
    const { status, body } = errorResponse(error);
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

  app.post('/embed', async (request, reply) => {
    const item = await toRequest(request.body);
    const result = await embedBatcher.submit({ ...item, signal: clientGone(reply) });
    return { embedding: Array.from(result.lastHiddenState.toFloat32()) };
  });

  app.post('/classify', async (request, reply) => {
    if (!canClassify) {
      throw new HttpError(400, 'ERR_PERCEIVER_NOT_A_CLASSIFIER', `${modelName} has no classification output (it is not a sequence or image classifier); use /embed`);
    }
    const item = await toRequest(request.body);
    const result = await classifyBatcher.submit({ ...item, signal: clientGone(reply) });
    const logits = result.logits;
    if (!(logits instanceof Tensor) || logits.size !== labels.length) {
      throw new PerceiverError('ERR_PERCEIVER_INTERNAL', `the model's logits do not match its ${labels.length} labels`);
    }
    const probs = softmax(logits.toFloat32());
    const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]!);
    return { labels: order.slice(0, Math.min(topK, labels.length)).map((i) => ({ label: labels[i]!, score: probs[i]! })) };
  });

  try {
    await app.listen({ host, port });
  } catch (error) {
    await Promise.allSettled([app.close(), classifyBatcher.close(), embedBatcher.close()]);
    throw error;
  }
  const address = app.server.address();
  const boundPort = typeof address === 'object' && address !== null ? address.port : port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${boundPort}`,
    close(): Promise<void> {
      closing ??= (async () => {
        // Stop accepting and let the requests in flight finish (the batchers still run them), then
        // close the batchers. Idle keep-alive connections are closed by fastify.
        try {
          await app.close();
        } finally {
          await Promise.allSettled([classifyBatcher.close(), embedBatcher.close()]);
        }
      })();
      return closing;
    },
  };
}
