/**
 * Scale-out of batch embedding over a BullMQ queue in Redis.
 *
 * The enqueuer (`perceiver-io embed --queue redis://HOST:PORT ...`) discovers the items, leaves out
 * those already in the output folder, cuts the rest into shards and adds one job per shard; then it
 * waits until every shard is done. Workers (`perceiver-io worker --queue ...`, one per GPU, on any
 * machine that sees the same paths) take a shard, load its model once (cached per model, device
 * and dtype) and write the shard as one Parquet part.
 *
 * Exactly once, without coordination beyond BullMQ:
 * - A shard's part name is a hash of its item ids and is written atomically (temporary file, then
 *   rename), so a shard that runs twice (a retry after a failure, a stalled job taken over after its
 *   worker died, or a worker that lost its lock but still finished) replaces its own part instead
 *   of adding rows.
 * - A shard's job id is a hash of (output folder, model, task, item ids), and all shards are added
 *   in one transaction, so re-running the enqueue command adds no duplicate jobs; items already
 *   written are left out before sharding, and items that shards still pending in the queue hold
 *   (say from an earlier run over other inputs) are left out too.
 * - Failed attempts are retried with exponential backoff; a worker that dies mid-shard stops
 *   renewing the shard's lock, and BullMQ's stalled-job check gives the shard to another worker
 *   once the lock expires.
 *
 * bullmq and ioredis are imported on first use (the library loads without them). BullMQ would load
 * ioredis itself with `require`, which does not exist in an ES module, so ready-made ioredis
 * clients are passed as its `connection`.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { InvalidArgumentError, PerceiverError, QueueUnavailableError, ShardsFailedError } from '../errors.js';

export { QueueUnavailableError, ShardsFailedError };
import type { ComputeDType, PerceiverModel } from '../modeling/perceiver_model.js';
import type { EmbedFailure, EmbedJobItem, EmbedTask } from './job.js';

/** One queue per Redis database: jobs carry their model and output folder, so any worker can take any job. */
export const QUEUE_NAME = 'perceiver-io-embed';

/** What a shard's job carries: everything a worker needs, with absolute paths. */
export interface ShardJobData {
  /** A checkpoint folder (absolute) or a Hugging Face Hub id. */
  model: string;
  task: EmbedTask;
  outDir: string;
  /** The part the shard writes, `${outDir}/${partName}.parquet`. */
  partName: string;
  items: EmbedJobItem[];
  batchSize?: number;
}

/** What a worker returns for a shard (kept in Redis with the completed job). */
export interface ShardJobResult {
  written: number;
  /** Items that could not be read or decoded (reported, not written). */
  failed: Omit<EmbedFailure, 'error'>[];
}

// ---------------------------------------------------------------------------------------------
// Connections.

/** The URL of `--queue`, checked: redis:// or rediss://, with a host. */
export function parseQueueUrl(url: unknown): URL {
  const expected = 'a Redis URL such as redis://HOST:PORT';
  if (typeof url !== 'string' || url === '') throw new InvalidArgumentError('--queue', expected, url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError('--queue', expected, url, `--queue wants ${expected}, got ${JSON.stringify(url)}`);
  }
  if ((parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') || parsed.hostname === '') {
    throw new InvalidArgumentError('--queue', expected, url, `--queue wants ${expected}, got ${JSON.stringify(url)}`);
  }
  return parsed;
}

/** The URL for messages: without its password. */
export function displayUrl(url: URL): string {
  const shown = new URL(url.href);
  if (shown.password) shown.password = '***';
  return shown.href.replace(/\/$/, '');
}

/** Before the first connection: this many retries, so an unreachable Redis fails within seconds. */
const CONNECT_RETRIES = 2;
/** After it: this many reconnect tries (about a minute) before giving up on a Redis that went away. */
const RECONNECT_RETRIES = 30;
const CONNECT_TIMEOUT_MS = 3000;

/**
 * An ioredis client connected to `url`, ready for BullMQ (maxRetriesPerRequest null, as its
 * blocking commands need). Fails with QueueUnavailableError when Redis cannot be reached after a
 * few quick tries; later drops are retried for about a minute, then the client ends (its 'end'
 * event) and pending commands fail.
 */
export async function connectRedis(url: URL): Promise<Redis> {
  const { Redis } = await import('ioredis');
  let everReady = false;
  let lastError: Error | undefined;
  const options: RedisOptions = {
    lazyConnect: true,
    maxRetriesPerRequest: null,
    connectTimeout: CONNECT_TIMEOUT_MS,
    retryStrategy: (times) => {
      if (times > (everReady ? RECONNECT_RETRIES : CONNECT_RETRIES)) return null;
      return everReady ? Math.min(250 * times, 2000) : 250;
    },
  };
  const client = new Redis(url.href, options);
  // Errors surface through the commands that fail (and the 'end' event); without a listener
  // ioredis would print each reconnect error.
  client.on('error', (error: Error) => (lastError = error));
  // BullMQ's worker duplicates the client for its blocking connection; once BullMQ has detached
  // from a duplicate that is still reconnecting, ioredis would print each error with its stack.
  const duplicate = client.duplicate.bind(client);
  client.duplicate = (override?: Partial<RedisOptions>) => {
    const copy = duplicate(override);
    copy.on('error', () => {});
    return copy;
  };
  const ready = new Promise<void>((resolveReady, rejectReady) => {
    client.once('ready', () => {
      everReady = true;
      resolveReady();
    });
    client.once('end', () => rejectReady(lastError ?? new Error('connection closed')));
  });
  client.connect().catch(() => {}); // settled through 'ready' or 'end' above, after the retries
  try {
    await ready;
  } catch (error) {
    // Already ended after its last retry; disconnecting an ended client would keep the process
    // alive for ioredis' disconnect timeout.
    if (client.status !== 'end') client.disconnect();
    const reason = (error as Error).message.split('\n')[0];
    throw new QueueUnavailableError(`cannot connect to Redis at ${displayUrl(url)}: ${reason}`, { cause: error });
  }
  return client;
}

async function closeClient(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// Shards.

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Consecutive runs of `size` items (the last may be shorter). */
export function shardItems(items: EmbedJobItem[], size: number): EmbedJobItem[][] {
  const shards: EmbedJobItem[][] = [];
  for (let i = 0; i < items.length; i += size) shards.push(items.slice(i, i + size));
  return shards;
}

/** The part a shard writes: named by its item ids, so the same shard always writes the same file. */
export function shardPartName(items: EmbedJobItem[]): string {
  return `shard-${sha256(items.map((item) => item.id).join('\n')).slice(0, 32)}`;
}

/** The job id of a shard: the same output, model, task and items always give the same id. */
export function shardJobId(data: Pick<ShardJobData, 'outDir' | 'model' | 'task' | 'items'>): string {
  const key = JSON.stringify([data.outDir, data.model, data.task, data.items.map((item) => item.id)]);
  // BullMQ refuses ids that are integers or contain ':'.
  return `shard-${sha256(key).slice(0, 40)}`;
}

function isShardJobData(data: unknown): data is ShardJobData {
  const d = data as Partial<ShardJobData> | null;
  return (
    typeof d === 'object' &&
    d !== null &&
    typeof d.model === 'string' &&
    (d.task === 'embed' || d.task === 'classify') &&
    typeof d.outDir === 'string' &&
    typeof d.partName === 'string' &&
    Array.isArray(d.items) &&
    (d.batchSize === undefined || (Number.isSafeInteger(d.batchSize) && d.batchSize > 0))
  );
}

async function openQueue(client: Redis): Promise<Queue<ShardJobData, ShardJobResult>> {
  const { Queue } = await import('bullmq');
  const queue = new Queue<ShardJobData, ShardJobResult>(QUEUE_NAME, { connection: client });
  // Connection errors also fail the command that met them; this only keeps the emitter from throwing.
  queue.on('error', () => {});
  return queue;
}

// ---------------------------------------------------------------------------------------------
// The enqueuer.

export interface EnqueueOptions {
  /** redis://HOST:PORT */
  queue: string;
  /** A checkpoint folder or a Hugging Face Hub id, as the workers will see it. */
  model: string;
  task: EmbedTask;
  /** Files, folders or globs (see discoverItems). */
  inputs: string[];
  manifest?: string;
  outDir: string;
  /** Items per shard (default 256). */
  shardSize?: number;
  /** Items per forward on the workers (their default when left out). */
  batchSize?: number;
  /** Tries per shard before it fails for good (default 3). */
  attempts?: number;
  /** First retry delay, doubled at each try (default 2000 ms). */
  backoffMs?: number;
  /** How often the queue is asked about pending shards (default 500 ms). */
  pollMs?: number;
  /** Called once the shards are known, then whenever a shard finishes. */
  onProgress?: (progress: EnqueueProgress) => void;
  /** Stops waiting (the shards stay queued; the same command waits for them again). */
  signal?: AbortSignal;
}

export interface EnqueueProgress {
  shardsDone: number;
  shardsFailed: number;
  shardsTotal: number;
  /** Items written by the finished shards. */
  written: number;
  /** Items the finished shards could not read or decode. */
  failedItems: number;
}

export interface EnqueueResult {
  /** Items the inputs name. */
  items: number;
  /** Of those, already in the output folder before this run. */
  alreadyDone: number;
  /** Shards this run waited for (added now, or still pending from an earlier run). */
  shards: number;
  /** Of those, added by this run. */
  added: number;
  written: number;
  /** Items the workers could not read or decode. */
  failed: ShardJobResult['failed'];
  seconds: number;
}

export const DEFAULT_SHARD_SIZE = 256;
const PENDING_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'] as const;

function positiveInteger(value: unknown, name: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(name, `an integer of at least ${min}`, value);
  return value;
}

/** A local checkpoint folder as an absolute path (workers run elsewhere); a Hub id as it is. */
async function modelForWorkers(model: string): Promise<{ model: string; width?: number }> {
  if (typeof model !== 'string' || model === '') throw new InvalidArgumentError('--model', 'a checkpoint folder or a Hugging Face Hub id', model);
  if (existsSync(model)) {
    const folder = resolve(model);
    const { PerceiverConfig } = await import('../config.js');
    return { model: folder, width: (await PerceiverConfig.fromPretrained(folder)).d_latents };
  }
  const { isHubId } = await import('../hub/download.js');
  if (!isHubId(model)) throw new InvalidArgumentError('--model', 'a checkpoint folder or a Hugging Face Hub id', model, `--model ${JSON.stringify(model)} is neither a folder nor a Hugging Face Hub id`);
  return { model };
}

/** The ids already written to `outDir`, after checking its parts were written by the same task and width. */
async function doneIdsChecked(outDir: string, task: EmbedTask, width: number | undefined): Promise<Set<string>> {
  const { listParts, readPartIds } = await import('./parquet.js');
  const ids = new Set<string>();
  for (const file of await listParts(outDir)) {
    const part = await readPartIds(file);
    const other = part.metadata;
    if (other && (other.task !== task || (width !== undefined && other.width !== width))) {
      throw new InvalidArgumentError(
        '--out',
        `a folder of ${task} parts${width === undefined ? '' : ` of width ${width}`}`,
        file,
        `${outDir} already holds ${other.task} output of width ${other.width} (${file}), not ${task}${width === undefined ? '' : ` of width ${width}`}: use another output folder`,
      );
    }
    for (const id of part.ids) ids.add(id);
  }
  return ids;
}

function abortError(): PerceiverError {
  return new PerceiverError('ERR_PERCEIVER_ABORTED', 'stopped waiting; the shards stay queued and the workers carry on: run the same command again to wait for them');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolveSleep) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolveSleep();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Adds the shards of a job to the queue and waits until every one is done. Resolves with a summary
 * when all succeeded (items that could not be decoded are listed in `failed`); rejects with
 * ShardsFailedError when some failed after all their attempts, QueueUnavailableError when Redis
 * cannot be reached.
 */
export async function enqueueAndWait(options: EnqueueOptions): Promise<EnqueueResult> {
  const started = performance.now();
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object { queue, model, task, inputs, outDir }', options);
  const url = parseQueueUrl(options.queue);
  const { task } = options;
  if (task !== 'embed' && task !== 'classify') throw new InvalidArgumentError('task', "'embed' or 'classify'", task);
  if (typeof options.outDir !== 'string' || options.outDir === '') throw new InvalidArgumentError('--out', 'an output folder', options.outDir);
  const shardSize = positiveInteger(options.shardSize, '--shard-size', DEFAULT_SHARD_SIZE);
  const batchSize = options.batchSize === undefined ? undefined : positiveInteger(options.batchSize, '--batch-size', 1);
  const attempts = positiveInteger(options.attempts, 'attempts', 3);
  const backoffMs = positiveInteger(options.backoffMs, 'backoffMs', 2000, 0);
  const pollMs = positiveInteger(options.pollMs, 'pollMs', 500);
  const outDir = resolve(options.outDir);

  // Redis first: an unreachable queue fails within seconds, before a long discovery.
  const client = await connectRedis(url);
  const queue = await openQueue(client);
  let talkingToRedis = false; // which errors are Redis's (the rest are thrown as they are)
  try {
    const { model, width } = await modelForWorkers(options.model);
    const { discoverItems } = await import('./discover.js');
    const items = await discoverItems(options.inputs, { manifest: options.manifest });
    await mkdir(outDir, { recursive: true });
    const { removeStaleTempFiles } = await import('./parquet.js');
    await removeStaleTempFiles(outDir); // left by workers killed while writing a part
    const done = await doneIdsChecked(outDir, task, width);

    talkingToRedis = true;
    // Shards still pending for this output (an earlier run, perhaps over other inputs) keep their
    // items: they are waited for rather than sharded again.
    const pendingIds = new Set<string>();
    const claimed = new Set<string>();
    for (const job of await queue.getJobs([...PENDING_STATES])) {
      if (!job?.id || !isShardJobData(job.data) || job.data.outDir !== outDir) continue;
      pendingIds.add(job.id);
      for (const item of job.data.items) claimed.add(item.id);
    }
    const todo = items.filter((item) => !done.has(item.id) && !claimed.has(item.id));
    const shards = shardItems(todo, shardSize).map((shardItemsOf): ShardJobData => {
      const data: ShardJobData = { model, task, outDir, partName: shardPartName(shardItemsOf), items: shardItemsOf };
      if (batchSize !== undefined) data.batchSize = batchSize;
      return data;
    });
    const jobIds = shards.map((data) => shardJobId(data));

    // A finished job with the same id means its part was lost (or its items failed): run it again.
    await Promise.all(
      jobIds.map(async (jobId) => {
        const state = await queue.getJobState(jobId);
        if (state === 'completed' || state === 'failed') await queue.remove(jobId);
      }),
    );
    // One transaction: all shards are added or none; ids already queued are left as they are.
    await queue.addBulk(
      shards.map((data, i) => ({
        name: task,
        data,
        opts: {
          jobId: jobIds[i]!,
          attempts,
          backoff: { type: 'exponential', delay: backoffMs },
          // Kept a week, so a re-run (or a look with a queue dashboard) can see what happened.
          removeOnComplete: { age: 7 * 24 * 3600 },
          removeOnFail: { age: 7 * 24 * 3600 },
        },
      })),
    );

    const waitFor = [...new Set([...pendingIds, ...jobIds])];
    const progress: EnqueueProgress = { shardsDone: 0, shardsFailed: 0, shardsTotal: waitFor.length, written: 0, failedItems: 0 };
    const failedItems: ShardJobResult['failed'] = [];
    const failedShards: { jobId: string; reason: string }[] = [];
    options.onProgress?.({ ...progress });

    let open = waitFor;
    while (open.length > 0) {
      if (options.signal?.aborted) throw abortError();
      const stillOpen: string[] = [];
      let changed = false;
      // Asked in slices, so a very large job does not send thousands of commands at once.
      for (let i = 0; i < open.length; i += 256) {
        const slice = open.slice(i, i + 256);
        const states = await Promise.all(slice.map((jobId) => queue.getJobState(jobId)));
        for (let k = 0; k < slice.length; k++) {
          const jobId = slice[k]!;
          const state = states[k];
          if (state === 'completed') {
            const job = (await queue.getJob(jobId)) as Job<ShardJobData, ShardJobResult> | undefined;
            const result = job?.returnvalue;
            progress.written += result?.written ?? 0;
            for (const failure of result?.failed ?? []) failedItems.push(failure);
            progress.failedItems = failedItems.length;
            progress.shardsDone++;
            changed = true;
          } else if (state === 'failed' || state === 'unknown') {
            const job = state === 'failed' ? await queue.getJob(jobId) : undefined;
            const reason = state === 'unknown' ? 'the job was removed from the queue' : (job?.failedReason ?? 'failed').split('\n')[0]!;
            failedShards.push({ jobId, reason });
            progress.shardsFailed++;
            changed = true;
          } else {
            stillOpen.push(jobId);
          }
        }
      }
      open = stillOpen;
      if (changed) options.onProgress?.({ ...progress });
      if (open.length > 0) await sleep(pollMs, options.signal);
    }
    if (failedShards.length > 0) throw new ShardsFailedError(failedShards, waitFor.length);
    return {
      items: items.length,
      alreadyDone: items.filter((item) => done.has(item.id)).length,
      shards: waitFor.length,
      added: jobIds.length,
      written: progress.written,
      failed: failedItems,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (error) {
    throw talkingToRedis ? asQueueError(error, url, client) : error;
  } finally {
    await queue.close().catch(() => {});
    await closeClient(client);
  }
}

/** Errors of a lost connection as QueueUnavailableError; our own typed errors as they are. */
function asQueueError(error: unknown, url: URL, client?: Redis): unknown {
  if (error instanceof PerceiverError) return error;
  if (client?.status === 'end') return new QueueUnavailableError(`lost the connection to Redis at ${displayUrl(url)} and could not reconnect`, { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return new QueueUnavailableError(`Redis at ${displayUrl(url)}: ${message.split('\n')[0]}`, { cause: error });
}

// ---------------------------------------------------------------------------------------------
// The worker.

export interface ShardWorkerOptions {
  /** redis://HOST:PORT */
  queue: string;
  /** Where models run (default cpu). */
  device?: string;
  dtype?: ComputeDType;
  /** Shards processed at once by this worker (default 1). */
  concurrency?: number;
  /**
   * How long a shard's lock lasts without renewal (default 60 000 ms). The worker renews it every
   * half of this while the shard runs, so a shard may take far longer; when the worker dies, the
   * shard goes to another worker once the lock has expired.
   */
  lockDurationMs?: number;
  /** One line per event (shard started, done, failed; connection lost). */
  log?: (line: string) => void;
}

export interface ShardWorker {
  /** Resolves once connected and taking jobs. */
  readonly ready: Promise<void>;
  /**
   * Stops taking shards and closes. By default the shards in progress are finished first; with
   * `release`, they are handed back to the queue at once (another worker restarts them; a part this
   * one might still write is the same file, replaced whole).
   */
  close(options?: { release?: boolean }): Promise<void>;
  /** Resolves when the worker has stopped: after close(), or when Redis is gone for good (rejects then). */
  readonly closed: Promise<void>;
}

/** Models loaded by a worker, one per (model, device, dtype), disposed when it closes. */
class ModelCache {
  readonly #models = new Map<string, Promise<PerceiverModel<any>>>();

  get(model: string, device: string, dtype: ComputeDType): Promise<PerceiverModel<any>> {
    const key = JSON.stringify([model, device, dtype]);
    let loading = this.#models.get(key);
    if (!loading) {
      loading = import('../auto.js').then(({ AutoModel }) => AutoModel.fromPretrained(model, { device, dtype }));
      this.#models.set(key, loading);
      // A failed load is not kept: the next shard (or the retry) tries again.
      loading.catch(() => this.#models.delete(key));
    }
    return loading;
  }

  async disposeAll(): Promise<void> {
    const loads = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(loads.map(async (loading) => (await loading).dispose()));
  }
}

/** Starts a worker that takes shards from the queue at `options.queue` until closed. */
export async function startShardWorker(options: ShardWorkerOptions): Promise<ShardWorker> {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options', 'an object { queue }', options);
  const url = parseQueueUrl(options.queue);
  const device = options.device ?? 'cpu';
  const dtype = options.dtype ?? 'float32';
  const concurrency = positiveInteger(options.concurrency, '--concurrency', 1);
  const lockDuration = positiveInteger(options.lockDurationMs, '--lock-duration-ms', 60_000, 1000);
  const log = options.log ?? (() => {});

  const { Worker, WaitingError, UnrecoverableError } = await import('bullmq');
  const { embedItemsToPart } = await import('./job.js');
  const client = await connectRedis(url);
  const models = new ModelCache();
  let releasing = false;

  const processShard = async (job: Job<ShardJobData, ShardJobResult>, token?: string, signal?: AbortSignal): Promise<ShardJobResult> => {
    if (!isShardJobData(job.data)) throw new UnrecoverableError('the job data is not a perceiver-io shard');
    const data = job.data;
    const started = performance.now();
    const stalled = job.stalledCounter > 0 ? `, taken over after ${job.stalledCounter} stalled run${job.stalledCounter === 1 ? '' : 's'}` : '';
    log(`shard ${job.id} (${data.items.length} items, attempt ${job.attemptsMade + 1}${stalled}): started`);
    const model = await models.get(data.model, device, dtype);
    let lastReport = 0;
    const work = embedItemsToPart({
      model,
      task: data.task,
      items: data.items,
      outDir: data.outDir,
      partName: data.partName,
      batchSize: data.batchSize,
      onProgress: (done, failed) => {
        const now = performance.now();
        if (now - lastReport < 1000 && done < data.items.length) return;
        lastReport = now;
        job.updateProgress({ done, failed, total: data.items.length }).catch(() => {});
      },
    });
    // On release the shard goes back to the queue without waiting for the forward in flight (it
    // cannot be interrupted); its part, if it still gets written, is the same file a rerun writes.
    const released = new Promise<'released'>((resolveReleased) => {
      if (signal?.aborted) resolveReleased('released');
      signal?.addEventListener('abort', () => resolveReleased('released'), { once: true });
    });
    let result: Awaited<typeof work> | 'released';
    try {
      result = await Promise.race([work, released]);
    } catch (error) {
      // An invalid job (a model without labels for classify, a bad part name) fails the same way on
      // every worker: no point in retrying it.
      if (error instanceof InvalidArgumentError) throw new UnrecoverableError(error.message.split('\n')[0]);
      throw error;
    }
    if (result === 'released') {
      work.catch(() => {});
      await job.moveToWait(token);
      log(`shard ${job.id}: released to the queue`);
      throw new WaitingError();
    }
    const seconds = (performance.now() - started) / 1000;
    log(`shard ${job.id}: ${result.written} written, ${result.failed.length} failed in ${seconds.toFixed(1)} s`);
    return { written: result.written, failed: result.failed.map(({ id, path, reason }) => ({ id, path, reason })) };
  };

  const worker: Worker<ShardJobData, ShardJobResult> = new Worker<ShardJobData, ShardJobResult>(QUEUE_NAME, processShard, {
    connection: client,
    concurrency,
    lockDuration,
    // A dead worker's shard is noticed within half a lock duration of its lock expiring.
    stalledInterval: Math.max(500, Math.floor(lockDuration / 2)),
    // A shard may outlive a few dying workers before it counts as failed.
    maxStalledCount: 3,
    autorun: false,
  });

  let lastError = '';
  worker.on('error', (error: Error) => {
    const line = error.message.split('\n')[0]!;
    if (line !== lastError) log(`queue error: ${line}`);
    lastError = line;
  });
  worker.on('failed', (job, error) => {
    if (job && !(error instanceof WaitingError)) log(`shard ${job.id}: attempt ${job.attemptsMade} failed: ${error.message.split('\n')[0]}`);
  });

  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  let rejectClosed!: (error: unknown) => void;
  const closed = new Promise<void>((resolveClosedPromise, rejectClosedPromise) => {
    resolveClosed = resolveClosedPromise;
    rejectClosed = rejectClosedPromise;
  });
  closed.catch(() => {}); // observed by the caller through `closed`

  const shutDown = async (release: boolean, lost?: QueueUnavailableError): Promise<void> => {
    if (release && !releasing) {
      releasing = true;
      worker.cancelAllJobs('released');
    }
    closing ??= (async () => {
      try {
        await worker.close(lost !== undefined);
      } catch {
        // Closing over a lost connection can fail; the models are disposed all the same.
      }
      await models.disposeAll();
      await closeClient(client);
      if (lost) rejectClosed(lost);
      else resolveClosed();
    })();
    return closing;
  };

  // ioredis ends the client once its reconnect tries are spent: Redis is gone, stop for good.
  client.once('end', () => {
    if (!closing) void shutDown(false, new QueueUnavailableError(`lost the connection to Redis at ${displayUrl(url)} and could not reconnect`));
  });

  const running = worker.run();
  running.catch((error: unknown) => {
    if (!closing) void shutDown(false, new QueueUnavailableError(`worker stopped: ${(error as Error).message.split('\n')[0]}`, { cause: error }));
  });
  const ready = worker.waitUntilReady().catch((error: unknown) => {
    throw asQueueError(error, url);
  });

  return {
    ready,
    closed,
    close: ({ release = false } = {}) => shutDown(release),
  };
}
