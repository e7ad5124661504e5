/**
 * Reading batch inputs from `http(s)://` URLs and `s3://bucket/key` objects, one object at a time
 * (nothing downloads the whole collection first).
 *
 * Every request has a timeout (an AbortSignal), and fails for good or is retried with exponential
 * backoff and jitter: network errors, timeouts, HTTP 408, 429 and 5xx are retried, other statuses
 * are not. At most `concurrency` requests run at once (per reader). A failure is a MediaDecodeError
 * naming the URL, so the batch job counts and reports it as one unreadable item and goes on.
 *
 * S3 goes through the AWS SDK v3 (@aws-sdk/client-s3, an optional dependency loaded on first use)
 * with the standard credential chain (environment, shared config and credentials files, SSO, web
 * identity, ECS/EC2 metadata) and region; `endpoint` points it at an S3-compatible store (MinIO,
 * Ceph, R2, s3rver), with path-style addressing. The SDK's own retries are turned off
 * (maxAttempts 1) so that one policy, this one, applies to every kind of input.
 */
import { InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { requireOptional } from '../optional.js';

export interface RemoteOptions {
  /** An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS, from the SDK's configuration). */
  s3Endpoint?: string;
  /** Region for S3 (default: the SDK's configuration, else us-east-1). */
  s3Region?: string;
  /** Requests at once (default 16). */
  concurrency?: number;
  /** Per request, in milliseconds (default 30,000). */
  timeoutMs?: number;
  /** Tries per request (default 4). */
  attempts?: number;
  /** First backoff in milliseconds, doubled each retry (default 250). */
  backoffMs?: number;
  /** Largest object read, in bytes (default 256 MiB). */
  maxBytes?: number;
}

type S3Module = typeof import('@aws-sdk/client-s3');

/** Whether a batch input names a remote object rather than a local path. */
export function isRemote(path: string): boolean {
  return /^(https?|s3):\/\//i.test(path);
}

/** `s3://bucket/key` split; InvalidArgumentError for anything else. */
export function parseS3Url(url: string, argument = 'INPUT'): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/i.exec(url);
  if (!m || m[1] === '') throw new InvalidArgumentError(argument, 's3://BUCKET/KEY-OR-PREFIX', url);
  return { bucket: m[1]!, key: m[2]! };
}

let s3Module: Promise<S3Module> | undefined;

/** @aws-sdk/client-s3, or a MissingDependencyError saying how to install it (lib/optional.ts). */
export async function loadS3(): Promise<S3Module> {
  s3Module ??= requireOptional<S3Module>('@aws-sdk/client-s3').catch((error: unknown) => {
    s3Module = undefined;
    throw error;
  });
  return s3Module;
}

class TransientError extends Error {}

function positive(value: number | undefined, fallback: number, name: string, allowZero = false): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) throw new InvalidArgumentError(name, allowZero ? 'an integer >= 0' : 'a positive integer', value);
  return value;
}

/** Bounded, retried, timed reads of remote objects; one per job. */
export class RemoteReader {
  readonly concurrency: number;
  readonly timeoutMs: number;
  readonly attempts: number;
  readonly backoffMs: number;
  readonly maxBytes: number;
  private readonly s3Endpoint?: string;
  private readonly s3Region?: string;
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private client?: Promise<{ s3: S3Module; client: import('@aws-sdk/client-s3').S3Client }>;

  constructor(options: RemoteOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object', options);
    this.concurrency = positive(options.concurrency, 16, 'concurrency');
    this.timeoutMs = positive(options.timeoutMs, 30_000, 'timeoutMs');
    this.attempts = positive(options.attempts, 4, 'attempts');
    this.backoffMs = positive(options.backoffMs, 250, 'backoffMs', true);
    this.maxBytes = positive(options.maxBytes, 256 * 1024 * 1024, 'maxBytes');
    if (options.s3Endpoint !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(options.s3Endpoint);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new InvalidArgumentError('--s3-endpoint', 'an http(s):// URL of an S3-compatible store', options.s3Endpoint);
      this.s3Endpoint = options.s3Endpoint;
    }
    this.s3Region = options.s3Region;
  }

  /** The S3 client (created on first use). */
  async s3(): Promise<{ s3: S3Module; client: import('@aws-sdk/client-s3').S3Client }> {
    this.client ??= loadS3().then((s3) => ({
      s3,
      client: new s3.S3Client({
        region: this.s3Region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        ...(this.s3Endpoint ? { endpoint: this.s3Endpoint, forcePathStyle: true } : {}),
        maxAttempts: 1,
      }),
    }));
    return this.client;
  }

  private async slot<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await work();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }

  /** Runs `once` (given a timeout signal) up to `attempts` times while it throws TransientError. */
  private async retried<T>(url: string, once: (signal: AbortSignal) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.slot(() => once(AbortSignal.timeout(this.timeoutMs)));
      } catch (error) {
        const transient = error instanceof TransientError || isTransientNetworkError(error);
        const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
        if (!transient) throw error instanceof MediaDecodeError ? error : new MediaDecodeError(url, `cannot read it: ${reason}`, { cause: error });
        if (attempt >= this.attempts) throw new MediaDecodeError(url, `cannot read it after ${attempt} attempt${attempt === 1 ? '' : 's'}: ${reason}`, { cause: error });
        const delay = this.backoffMs * 2 ** (attempt - 1);
        await new Promise((resolve) => setTimeout(resolve, delay / 2 + Math.random() * (delay / 2)));
      }
    }
  }

  /** The bytes of one remote object (http(s) or s3). */
  async read(url: string): Promise<Buffer> {
    if (/^s3:\/\//i.test(url)) return this.readS3(url);
    if (/^https?:\/\//i.test(url)) return this.readHttp(url);
    throw new InvalidArgumentError('url', 'an http(s):// or s3:// URL', url);
  }

  /** A GET that answered 2xx: network failures and 408 / 429 / 5xx are TransientError (retried), other statuses MediaDecodeError. */
  private async fetchOk(url: string, signal: AbortSignal): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(url, { signal, redirect: 'follow' });
    } catch (error) {
      throw new TransientError(describeFetchError(error, this.timeoutMs));
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      const message = `HTTP ${response.status} ${response.statusText}`.trim();
      if (response.status === 408 || response.status === 429 || response.status >= 500) throw new TransientError(message);
      throw new MediaDecodeError(url, `cannot read it: ${message}`);
    }
    return response;
  }

  private async readHttp(url: string): Promise<Buffer> {
    return this.retried(url, async (signal) => {
      const response = await this.fetchOk(url, signal);
      const length = Number(response.headers.get('content-length'));
      if (Number.isFinite(length) && length > this.maxBytes) {
        await response.body?.cancel().catch(() => {});
        throw new MediaDecodeError(url, `it is ${length} bytes, over the limit of ${this.maxBytes}`);
      }
      try {
        return await readLimited(response.body, this.maxBytes, url);
      } catch (error) {
        if (error instanceof MediaDecodeError) throw error;
        throw new TransientError(describeFetchError(error, this.timeoutMs));
      }
    });
  }

  private async readS3(url: string): Promise<Buffer> {
    const { bucket, key } = parseS3Url(url);
    const { s3, client } = await this.s3();
    return this.retried(url, async (signal) => {
      let body;
      try {
        const out = await client.send(new s3.GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
        if (out.ContentLength !== undefined && out.ContentLength > this.maxBytes) {
          (out.Body as { destroy?: () => void } | undefined)?.destroy?.();
          throw new MediaDecodeError(url, `it is ${out.ContentLength} bytes, over the limit of ${this.maxBytes}`);
        }
        body = out.Body as AsyncIterable<Uint8Array> | undefined;
      } catch (error) {
        throw classifyS3Error(error, url, this.timeoutMs);
      }
      if (!body) throw new MediaDecodeError(url, 'cannot read it: the object has no body');
      try {
        return await collect(body, this.maxBytes, url);
      } catch (error) {
        if (error instanceof MediaDecodeError) throw error;
        throw new TransientError(describeFetchError(error, this.timeoutMs));
      }
    });
  }

  /**
   * A remote object as a stream of chunks (for tar shards, which are read once, in order, never
   * whole): the request is retried like `read`; then the stream fails when no bytes come for
   * `timeoutMs` (an idle timeout, not a total one) or the connection breaks.
   */
  async openStream(url: string): Promise<AsyncIterable<Uint8Array>> {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new TransientError(`no bytes for ${this.timeoutMs} ms`)), this.timeoutMs);
    };
    const openOnce = async (both: AbortSignal): Promise<AsyncIterable<Uint8Array>> => {
      if (/^s3:\/\//i.test(url)) {
        const { bucket, key } = parseS3Url(url);
        const { s3, client } = await this.s3();
        try {
          const out = await client.send(new s3.GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: both });
          if (!out.Body) throw new MediaDecodeError(url, 'cannot read it: the object has no body');
          return out.Body as AsyncIterable<Uint8Array> & { destroy?: (error?: Error) => void };
        } catch (error) {
          throw classifyS3Error(error, url, this.timeoutMs);
        }
      }
      if (!/^https?:\/\//i.test(url)) throw new InvalidArgumentError('url', 'an http(s):// or s3:// URL', url);
      const response = await this.fetchOk(url, both);
      if (!response.body) throw new MediaDecodeError(url, 'cannot read it: no body');
      return response.body as unknown as AsyncIterable<Uint8Array>;
    };
    const body = await this.retried(url, async () => {
      // Not the per-request signal of `retried`: it would end the body's stream after timeoutMs
      // in all. The headers get timeoutMs, then the idle timeout takes over.
      const attempt = new AbortController();
      const headersTimer = setTimeout(() => attempt.abort(Object.assign(new Error('timeout'), { name: 'TimeoutError' })), this.timeoutMs);
      const both = AbortSignal.any([attempt.signal, controller.signal]);
      try {
        return await openOnce(both);
      } finally {
        clearTimeout(headersTimer);
      }
    });
    const destroy = (body as { destroy?: (error?: Error) => void }).destroy;
    controller.signal.addEventListener('abort', () => destroy?.call(body, controller.signal.reason as Error), { once: true });
    return (async function* () {
      arm();
      try {
        for await (const chunk of body) {
          arm();
          yield chunk;
        }
      } catch (error) {
        const reason = controller.signal.aborted ? (controller.signal.reason as Error).message : describeFetchError(error, 0);
        throw new MediaDecodeError(url, `the stream broke: ${reason}`, { cause: error });
      } finally {
        clearTimeout(timer);
        if (!controller.signal.aborted) controller.abort(new Error('closed'));
      }
    })();
  }

  /** The keys under `s3://bucket/prefix`, as s3:// URLs, in key order, page by page (1000 keys a request). */
  async *listS3(prefixUrl: string): AsyncGenerator<string> {
    const { bucket, key: prefix } = parseS3Url(prefixUrl);
    const { s3, client } = await this.s3();
    let token: string | undefined;
    do {
      const page = await this.retried(prefixUrl, async (signal) => {
        try {
          return await client.send(new s3.ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: signal });
        } catch (error) {
          throw classifyS3Error(error, prefixUrl, this.timeoutMs);
        }
      });
      for (const object of page.Contents ?? []) if (object.Key) yield `s3://${bucket}/${object.Key}`;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Closes the S3 client's sockets. */
  async close(): Promise<void> {
    const made = this.client;
    this.client = undefined;
    if (made) (await made.catch(() => undefined))?.client.destroy();
  }
}

function isTransientNetworkError(error: unknown): boolean {
  const name = (error as { name?: string })?.name;
  return name === 'TimeoutError' || name === 'AbortError';
}

function describeFetchError(error: unknown, timeoutMs: number): string {
  if (isTransientNetworkError(error)) return `no answer within ${timeoutMs} ms`;
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

/** S3 errors: throttling, 5xx, timeouts and network errors are transient; NoSuchKey, AccessDenied and the like are not. */
function classifyS3Error(error: unknown, url: string, timeoutMs: number): Error {
  if (error instanceof MediaDecodeError || error instanceof TransientError) return error;
  const e = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; code?: string };
  const status = e.$metadata?.httpStatusCode;
  const message = `${e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${(e.message ?? '').split('\n')[0]}`;
  if (isTransientNetworkError(error)) return new TransientError(`no answer within ${timeoutMs} ms`);
  if (e.$retryable || status === undefined || status === 408 || status === 429 || status >= 500 || /ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|socket hang up/i.test(`${e.code} ${e.message}`)) return new TransientError(message);
  if (e.name === 'CredentialsProviderError') return new MediaDecodeError(url, `cannot read it: no AWS credentials found (${message})`);
  return new MediaDecodeError(url, `cannot read it: ${message}`);
}

async function readLimited(body: ReadableStream<Uint8Array> | null, maxBytes: number, url: string): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  return collect(body as unknown as AsyncIterable<Uint8Array>, maxBytes, url);
}

async function collect(body: AsyncIterable<Uint8Array>, maxBytes: number, url: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new MediaDecodeError(url, `it is over the limit of ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
