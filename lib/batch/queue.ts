/**
 * Scale-out of batch embedding over a BullMQ queue in Redis.
 *
 * The enqueuer (`perceiver-io embed --queue redis://HOST:PORT ...`) discovers the items, leaves out
 * those of a kind the model does not read (told from its config alone: lib/batch/model_kinds.ts)
 * and those already in the output, cuts the rest into shards and adds one job per shard; then it
 * waits until every shard is done, and when the queue holds no shard of the output, merges its
 * parts (compactWhenDrained). Workers (`perceiver-io worker --queue ...`, one per GPU, on any
 * machine that sees the same paths, or with s3:// inputs and output any machine with credentials)
 * take a shard, load its model once (cached per model, device and dtype) and write the shard as
 * one Parquet part (a folder or an S3 prefix: lib/batch/store.ts), or into a LanceDB table, one
 * insert-if-absent per batch.
 *
 * Exactly once, with no coordination beyond Redis:
 * - Enqueuers of one output folder decide what to queue one at a time (a Redis lock per folder)
 *   and from one consistent view: the shards pending in the queue are listed first, the parts on
 *   disk read after. A worker writes its part before its shard leaves the queue, so a shard that
 *   finishes between the two reads is in the done set; read the other way round it would be in
 *   neither, and its items would be queued again in new shards under other part names.
 * - Before writing, a worker leaves out the items other parts of the folder already hold (and
 *   checks that they were written by the same model).
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
 *   once the lock expires. A worker renews the lock just before it writes and does not write when
 *   the lock is another's, so a stalled worker does not put back a part that a merge removed.
 *
 * Trust: whoever can write to the Redis database can queue jobs, and a job names the paths the
 * worker reads and writes. A worker therefore takes allowed roots (`--allow-root`) and fails, for
 * good and with PathNotAllowedError as the reason, any shard whose model, output folder or inputs
 * resolve (real paths) outside them, before touching any of them.
 *
 * bullmq and ioredis are imported on first use (the library loads without them). BullMQ would load
 * ioredis itself with `require`, which does not exist in an ES module, so ready-made ioredis
 * clients are passed as its `connection`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, InvalidArgumentError, ModelMismatchError, PathNotAllowedError, PerceiverError, QueueUnavailableError, ShardsFailedError } from '../errors.js';

export { QueueUnavailableError, ShardsFailedError };
import type { ComputeDType, PerceiverModel } from '../modeling/perceiver_model.js';
import type { EmbedFailure, EmbedJobItem, EmbedTask } from './job.js';
import type { IdKind } from './parquet.js';
import { isS3Output } from './store.js';
import type { ModelIdentity } from './model_identity.js';
import type { MediaKind } from '../media/kinds.js';
import { filterByKind } from '../cli/messages.js';
import { requireOptional } from '../optional.js';

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
  /** The checkpoint's identity as the enqueuer saw it (a local folder); a worker that sees another checkpoint there fails the shard. */
  modelId?: string;
  /** What the item ids are (absent: path); `content` items list every path of their bytes. */
  idKind?: IdKind;
  /** Rows go into this table of the LanceDB database `outDir` (a local folder) instead of a part. */
  lanceTable?: string;
}

/** What a worker returns for a shard (kept in Redis with the completed job). */
export interface ShardJobResult {
  written: number;
  /** Items left out because other parts of the folder already held them. */
  skippedDone?: number;
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
  const { Redis } = await requireOptional<typeof import('ioredis')>('ioredis');
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
export function shardJobId(data: Pick<ShardJobData, 'outDir' | 'model' | 'task' | 'items' | 'lanceTable'>): string {
  const key = JSON.stringify([data.lanceTable === undefined ? data.outDir : `lancedb://${data.outDir}/${data.lanceTable}`, data.model, data.task, data.items.map((item) => item.id)]);
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
    (d.batchSize === undefined || (Number.isSafeInteger(d.batchSize) && d.batchSize > 0)) &&
    (d.modelId === undefined || typeof d.modelId === 'string') &&
    (d.idKind === undefined || d.idKind === 'path' || d.idKind === 'content') &&
    (d.lanceTable === undefined || (typeof d.lanceTable === 'string' && /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(d.lanceTable)))
  );
}

async function openQueue(client: Redis): Promise<Queue<ShardJobData, ShardJobResult>> {
  const { Queue } = await requireOptional<typeof import('bullmq')>('bullmq');
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
  /** Reads remote inputs and manifests while discovering (its S3 endpoint); default settings when absent. */
  remote?: import('../io/remote.js').RemoteReader;
  /**
   * Where the workers write: a folder they all see, `s3://bucket/prefix` (workers need only
   * credentials), or with `lanceTable` the folder of a LanceDB database they all see.
   */
  outDir: string;
  /** A table of the LanceDB database `outDir` instead of Parquet parts (`--out lancedb://DIR/TABLE`). */
  lanceTable?: string;
  /** `path` (default) or `content`: the SHA-256 of the bytes (read here, while discovering). */
  idKind?: IdKind;
  /**
   * Once every shard of the output is done, its small Parquet parts are merged into parts of about
   * this many bytes, crash-safely (lib/batch/compaction.ts); default 128 MiB, 0: never.
   */
  partSize?: number;
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
  /** Starts the line given to onIgnored (default `perceiver-io`). */
  label?: string;
  /**
   * Called once, before queueing, when files of a kind the model does not read were left out:
   * one line such as "perceiver-io embed: 3 images ignored: this model reads text files".
   */
  onIgnored?: (line: string, ignored: number) => void;
  /** Called when the queue holds no more shards of the output and its parts are being merged. */
  onCompacting?: () => void;
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
  /** Items the inputs name, of the kinds the model reads. */
  items: number;
  /** Items left out because the model does not read their kind. */
  ignored: number;
  /** Compacted parts written once the queue held no shard of the output (0 for a LanceDB table, whose fragments are merged in place). */
  compactedParts: number;
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

/**
 * A local checkpoint folder as an absolute path (workers run elsewhere), with its width and
 * identity; a Hub id as it is (the workers download it and check its identity against the parts),
 * with its width. Both with the media kinds the head reads, from the config alone.
 */
async function modelForWorkers(model: string): Promise<{ model: string; width: number; modelId?: string; accepts: readonly MediaKind[]; architecture: string }> {
  if (typeof model !== 'string' || model === '') throw new InvalidArgumentError('--model', 'a checkpoint folder or a Hugging Face Hub id', model);
  const local = existsSync(model);
  const { isHubId } = await import('../hub/download.js');
  if (!local && !isHubId(model)) throw new InvalidArgumentError('--model', 'a checkpoint folder or a Hugging Face Hub id', model, `--model ${JSON.stringify(model)} is neither a folder nor a Hugging Face Hub id`);
  const { checkpointMediaKinds } = await import('./model_kinds.js');
  const { accepts, config } = await checkpointMediaKinds(model);
  const architecture = config.architectures?.[0] ?? '';
  if (!local) return { model, width: config.d_latents, accepts, architecture };
  const folder = resolve(model);
  const { modelIdentity } = await import('./model_identity.js');
  return { model: folder, width: config.d_latents, modelId: (await modelIdentity(folder)).id, accepts, architecture };
}

/**
 * The ids already in the output: its committed parts (checked to be of this task, width, model and
 * id kind), or its LanceDB table's ids (none while the table does not exist: the first worker makes it).
 */
async function readDone(o: { outDir: string; lanceTable?: string; task: EmbedTask; width: number; modelId?: string; model: string; idKind: IdKind; architecture: string }): Promise<Set<string>> {
  if (o.lanceTable === undefined) {
    const { readDoneChecked } = await import('./job.js');
    return readDoneChecked(o.outDir, { task: o.task, width: o.width, modelId: o.modelId, modelSource: o.model, idKind: o.idKind }, '--out');
  }
  const { loadLance, LanceOutput } = await import('./lance.js');
  const { lancedb } = await loadLance();
  const connection = await lancedb.connect(o.outDir);
  try {
    if (!(await connection.tableNames()).includes(o.lanceTable)) return new Set();
  } finally {
    connection.close();
  }
  const lance = await LanceOutput.open(o.outDir, o.lanceTable, { task: o.task, model: o.architecture, width: o.width, modelId: o.modelId, modelSource: o.model, idKind: o.idKind });
  try {
    return await lance.doneIds();
  } finally {
    lance.close();
  }
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
  const s3 = isS3Output(options.outDir);
  const lanceTable = options.lanceTable;
  if (lanceTable !== undefined && (s3 || typeof lanceTable !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(lanceTable))) {
    throw new InvalidArgumentError('--out', 'lancedb://DIR/TABLE with a local DIR and a table name of letters, digits, _ . -', `${options.outDir} table ${String(lanceTable)}`);
  }
  const idKind = options.idKind ?? 'path';
  if (idKind !== 'path' && idKind !== 'content') throw new InvalidArgumentError('--id', "'path' or 'content'", idKind);
  const { checkPartSize } = await import('./compaction.js');
  const partSize = checkPartSize(options.partSize, '--part-size');
  // Workers elsewhere need the same name: an absolute path, or the S3 URL as it is.
  const outDir = s3 ? options.outDir.replace(/\/+$/, '') : resolve(options.outDir);
  const where = lanceTable === undefined ? outDir : `lancedb://${outDir}/${lanceTable}`;
  if (s3 && options.remote) {
    const { useS3ForOutputs } = await import('./store.js');
    useS3ForOutputs(options.remote);
  }

  // Redis first: an unreachable queue fails within seconds, before a long discovery.
  const client = await connectRedis(url);
  const queue = await openQueue(client);
  let talkingToRedis = false; // which errors are Redis's (the rest are thrown as they are)
  let folderLock: { release(): Promise<void> } | undefined;
  let enqueueLock: { release(): Promise<void> } | undefined;
  try {
    const { model, width, modelId, accepts, architecture } = await modelForWorkers(options.model);
    const { discoverItems } = await import('./discover.js');
    const discovered = await discoverItems(options.inputs, { manifest: options.manifest, remote: options.remote, id: idKind });
    // Files of a kind the model does not read are left out here, not sent to fail one by one on the workers.
    const byKind = filterByKind(discovered, accepts, options.label ?? 'perceiver-io');
    const items = byKind.kept;
    if (byKind.line) options.onIgnored?.(byKind.line, byKind.ignored);
    const { makeOutputFolder } = await import('./job.js');
    await makeOutputFolder(outDir, '--out');
    // Enqueuers of one folder may run together (they agree through Redis, below); a local run may not.
    const { lockOutputFolder } = await import('./output_lock.js');
    folderLock = await lockOutputFolder(outDir, { kind: 'queue' });
    const { removeStaleTempFiles } = await import('./parquet.js');
    await removeStaleTempFiles(outDir); // left by workers killed while writing a part

    talkingToRedis = true;
    // Deciding what to queue is one critical section per output folder across enqueuers (a Redis
    // lock), and reads one consistent view: the shards pending in the queue first, then the parts
    // on disk. A worker writes its part before its shard leaves the queue, so a shard that finishes
    // between the two reads is in the done set; read the other way round it would be in neither,
    // and its items would be queued again in new shards (with other neighbours, other part names).
    enqueueLock = await acquireEnqueueLock(client, where, options.signal);
    // Shards still pending for this output (an earlier run, perhaps over other inputs) keep their
    // items: they are waited for rather than sharded again.
    const pendingIds = new Set<string>();
    const claimed = new Set<string>();
    for (const job of await queue.getJobs([...PENDING_STATES])) {
      if (!job?.id || !isShardJobData(job.data) || job.data.outDir !== outDir || job.data.lanceTable !== lanceTable) continue;
      pendingIds.add(job.id);
      for (const item of job.data.items) claimed.add(item.id);
    }
    talkingToRedis = false;
    const done = await readDone({ outDir, lanceTable, task, width, modelId, model, idKind, architecture });
    talkingToRedis = true;
    const todo = items.filter((item) => !done.has(item.id) && !claimed.has(item.id));
    const shards = shardItems(todo, shardSize).map((shardItemsOf): ShardJobData => {
      const data: ShardJobData = { model, task, outDir, partName: shardPartName(shardItemsOf), items: shardItemsOf };
      if (batchSize !== undefined) data.batchSize = batchSize;
      if (modelId !== undefined) data.modelId = modelId;
      if (idKind !== 'path') data.idKind = idKind;
      if (lanceTable !== undefined) data.lanceTable = lanceTable;
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
    await enqueueLock.release();

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
    // The rows written are merged even when a shard failed: they are finished.
    talkingToRedis = true;
    const compactedParts = await compactWhenDrained({ client, queue, outDir, lanceTable, where, partSize, signal: options.signal, onCompacting: options.onCompacting });
    if (failedShards.length > 0) throw new ShardsFailedError(failedShards, waitFor.length);
    return {
      compactedParts,
      items: items.length,
      ignored: byKind.ignored,
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
    await enqueueLock?.release().catch(() => {});
    await folderLock?.release();
    await queue.close().catch(() => {});
    await closeClient(client);
  }
}

/**
 * Once every shard is done: when the queue holds no shard of this output (from any enqueuer) its
 * small parts are merged crash-safely (lib/batch/compaction.ts), or its LanceDB table's fragments.
 * The enqueue lock is held meanwhile, so no enqueuer adds shards to the output until the merge has
 * committed; a shard added before the check keeps the output unmerged until its own enqueuer finds
 * the queue drained. Returns the compacted parts written.
 */
async function compactWhenDrained(o: { client: Redis; queue: Queue<ShardJobData, ShardJobResult>; outDir: string; lanceTable?: string; where: string; partSize: number; signal?: AbortSignal; onCompacting?: () => void }): Promise<number> {
  if (o.partSize === 0 && o.lanceTable === undefined) return 0;
  const lock = await acquireEnqueueLock(o.client, o.where, o.signal);
  try {
    for (const job of await o.queue.getJobs([...PENDING_STATES])) {
      if (job?.id && isShardJobData(job.data) && job.data.outDir === o.outDir && job.data.lanceTable === o.lanceTable) return 0;
    }
    o.onCompacting?.();
    if (o.lanceTable !== undefined) {
      const { loadLance } = await import('./lance.js');
      const { lancedb } = await loadLance();
      const connection = await lancedb.connect(o.outDir);
      try {
        if (!(await connection.tableNames()).includes(o.lanceTable)) return 0;
        const table = await connection.openTable(o.lanceTable);
        try {
          await table.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) });
        } finally {
          table.close();
        }
      } finally {
        connection.close();
      }
      return 0;
    }
    const { compactFolder } = await import('./compaction.js');
    return (await compactFolder(o.outDir, o.partSize)).length;
  } finally {
    await lock.release();
  }
}

/** An enqueuer's Redis lock expires this long after its last renewal, so a killed enqueuer's lock frees itself soon. */
const ENQUEUE_LOCK_MS = 30_000;
/** How long an enqueuer waits for the others' decisions. */
const ENQUEUE_WAIT_MS = 5 * 60_000;

/**
 * The enqueue lock of one output folder: a Redis key set with NX and an expiry, holding a random
 * token, renewed while held; renewed and released only by its holder (compare and act, in one script).
 */
async function acquireEnqueueLock(client: Redis, outDir: string, signal?: AbortSignal): Promise<{ release(): Promise<void> }> {
  const key = `perceiver-io:enqueue-lock:${sha256(outDir)}`;
  const token = randomBytes(16).toString('hex');
  const deadline = performance.now() + ENQUEUE_WAIT_MS;
  while ((await client.set(key, token, 'PX', ENQUEUE_LOCK_MS, 'NX')) !== 'OK') {
    if (signal?.aborted) throw abortError();
    if (performance.now() > deadline) {
      throw new QueueUnavailableError(`other enqueuers of ${outDir} kept the queue's enqueue lock (Redis key ${key}) for over ${ENQUEUE_WAIT_MS / 60_000} minutes`);
    }
    await sleep(100, signal);
  }
  const renew = setInterval(() => {
    client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end", 1, key, token, ENQUEUE_LOCK_MS).catch(() => {});
  }, ENQUEUE_LOCK_MS / 3);
  renew.unref();
  let released = false;
  return {
    release: async () => {
      if (released) return;
      released = true;
      clearInterval(renew);
      await client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end", 1, key, token);
    },
  };
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
  /**
   * The folders jobs may name (the model folder, the output folder, every item): a shard naming a
   * path outside them fails for good with PathNotAllowedError in its job's failure. Real paths are
   * compared (symlinks and `..` resolved). Required: whoever can write to the Redis database can
   * queue jobs, and without roots could make the worker read and write any path it can; `['/']`
   * allows everything explicitly. A Hugging Face Hub id as the model is allowed (it is downloaded
   * into this worker's own cache).
   */
  allowedRoots: string[];
  /**
   * Remote items jobs may name: URL prefixes such as `s3://bucket/` or `https://host/media/`
   * (`--allow-url-prefix`, repeatable). An http(s) or s3 item matching none fails the shard for
   * good with PathNotAllowedError, as a path outside the roots does. Default: none.
   */
  allowedUrlPrefixes?: string[];
  /** Reads the remote items (its S3 endpoint, concurrency, timeouts); default settings when absent. */
  remote?: import('../io/remote.js').RemoteReader;
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

/** Models loaded by a worker, one per (model, device, dtype), with their identity; disposed when it closes. */
class ModelCache {
  readonly #models = new Map<string, Promise<{ model: PerceiverModel<any>; identity: ModelIdentity }>>();

  get(model: string, device: string, dtype: ComputeDType): Promise<{ model: PerceiverModel<any>; identity: ModelIdentity }> {
    const key = JSON.stringify([model, device, dtype]);
    let loading = this.#models.get(key);
    if (!loading) {
      loading = (async () => {
        const [{ AutoModel }, { checkpointFolder }, { modelIdentity }] = await Promise.all([import('../auto.js'), import('../modeling/perceiver_model.js'), import('./model_identity.js')]);
        const folder = await checkpointFolder(model);
        const loaded = await AutoModel.fromPretrained(folder, { device, dtype });
        try {
          return { model: loaded, identity: await modelIdentity(folder, model) };
        } catch (error) {
          await loaded.dispose();
          throw error;
        }
      })();
      this.#models.set(key, loading);
      // A failed load is not kept: the next shard (or the retry) tries again.
      loading.catch(() => this.#models.delete(key));
    }
    return loading;
  }

  async disposeAll(): Promise<void> {
    const loads = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(loads.map(async (loading) => (await loading).model.dispose()));
  }
}

/** The real paths of the allowed roots (each must be an existing folder). */
async function resolveRoots(roots: unknown): Promise<string[]> {
  const expected = 'a non-empty array of existing folders (--allow-root DIR)';
  if (!Array.isArray(roots) || roots.length === 0) throw new InvalidArgumentError('allowedRoots', expected, roots);
  const resolved: string[] = [];
  for (const root of roots) {
    if (typeof root !== 'string' || root === '') throw new InvalidArgumentError('allowedRoots', expected, roots);
    const real = await realpath(root).catch(() => undefined);
    if (!real || !(await stat(real)).isDirectory()) throw new InvalidArgumentError('--allow-root', 'an existing folder', root, `--allow-root ${JSON.stringify(root)} is not an existing folder`);
    resolved.push(real);
  }
  return resolved;
}

/**
 * The real path of `path`, or for a path that does not exist yet (an output folder), the real path
 * of its nearest existing ancestor joined with the rest.
 */
async function realpathOrAncestor(path: string): Promise<string> {
  const rest: string[] = [];
  let current = resolve(path);
  for (;;) {
    try {
      return join(await realpath(current), ...rest.reverse());
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const parent = dirname(current);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === current) throw error;
      // A dangling link exists but has no real path: where a write through it lands is the
      // link's business, so it is not judged by its parent.
      if (await lstat(current).then(() => true, () => false)) throw error;
      rest.push(basename(current));
      current = parent;
    }
  }
}

function isInside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * Allowed URL prefixes, normalized so that a prefix covers whole path segments: `https://host`
 * becomes `https://host/` (and so does not allow `https://host.evil.example/`).
 */
export function normalizeUrlPrefixes(prefixes: unknown): string[] {
  const expected = 'http(s):// or s3:// URL prefixes (--allow-url-prefix)';
  if (prefixes === undefined) return [];
  if (!Array.isArray(prefixes)) throw new InvalidArgumentError('allowedUrlPrefixes', expected, prefixes);
  return prefixes.map((prefix) => {
    if (typeof prefix !== 'string' || !/^(https?|s3):\/\/[^/]+/i.test(prefix)) throw new InvalidArgumentError('--allow-url-prefix', expected, prefix);
    const m = /^([a-z0-9]+:\/\/[^/]+)(.*)$/i.exec(prefix)!;
    return `${m[1]!.toLowerCase()}${m[2] === '' ? '/' : m[2]}`;
  });
}

/** Whether a remote item is under an allowed prefix; `.` and `..` segments are never allowed (S3 keys are not resolved, HTTP paths are). */
function urlAllowed(url: string, prefixes: string[]): boolean {
  const m = /^([a-z0-9]+:\/\/[^/]+)(.*)$/i.exec(url);
  if (!m) return false;
  const path = m[2]!.replace(/[?#].*$/, '');
  if (path.split('/').some((segment) => segment === '.' || segment === '..' || /%2e/i.test(segment))) return false;
  const normal = `${m[1]!.toLowerCase()}${m[2]}`;
  return prefixes.some((prefix) => normal.startsWith(prefix));
}

/** Throws PathNotAllowedError for the first path of the job outside every allowed root (or URL prefix). */
async function checkJobPaths(data: ShardJobData, roots: string[], urlPrefixes: string[] = []): Promise<void> {
  const allowed = [...roots, ...urlPrefixes];
  const check = async (field: string, path: string) => {
    if (/^(https?|s3):\/\//i.test(path)) {
      if (!urlAllowed(path, urlPrefixes)) throw new PathNotAllowedError(field, path, allowed);
      return;
    }
    const real = await realpathOrAncestor(path).catch(() => undefined);
    if (real === undefined || !roots.some((root) => isInside(real, root))) throw new PathNotAllowedError(field, path, allowed);
  };
  const { isHubId } = await import('../hub/download.js');
  // Models are local; an output is a local folder, or an S3 prefix under an allowed URL prefix
  // (a LanceDB database is always a local folder).
  if (/^(https?|s3):\/\//i.test(data.model)) throw new PathNotAllowedError('model', data.model, allowed);
  if (/^https?:\/\//i.test(data.outDir) || (data.lanceTable !== undefined && /^s3:\/\//i.test(data.outDir))) throw new PathNotAllowedError('outDir', data.outDir, allowed);
  if (!isHubId(data.model)) await check('model', data.model);
  // The output prefix itself must be allowed, as an item's key is: `s3://b/out` under `s3://b/out/`.
  await check('outDir', /^s3:\/\//i.test(data.outDir) ? `${data.outDir}/` : data.outDir);
  for (let i = 0; i < data.items.length; i++) await check(`items[${i}].path`, data.items[i]!.path);
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
  const roots = await resolveRoots(options.allowedRoots);
  const urlPrefixes = normalizeUrlPrefixes(options.allowedUrlPrefixes);

  const { Worker, WaitingError, UnrecoverableError } = await requireOptional<typeof import('bullmq')>('bullmq');
  const { embedItemsToPart } = await import('./job.js');
  // s3:// outputs are written with this worker's S3 settings.
  const { useS3ForOutputs } = await import('./store.js');
  if (options.remote) useS3ForOutputs(options.remote);
  const client = await connectRedis(url);
  const models = new ModelCache();
  let releasing = false;

  const processShard = async (job: Job<ShardJobData, ShardJobResult>, token?: string, signal?: AbortSignal): Promise<ShardJobResult> => {
    if (!isShardJobData(job.data)) throw new UnrecoverableError('the job data is not a perceiver-io shard');
    const data = job.data;
    const started = performance.now();
    const stalled = job.stalledCounter > 0 ? `, taken over after ${job.stalledCounter} stalled run${job.stalledCounter === 1 ? '' : 's'}` : '';
    log(`shard ${job.id} (${data.items.length} items, attempt ${job.attemptsMade + 1}${stalled}): started`);
    let loaded: { model: PerceiverModel<any>; identity: ModelIdentity };
    try {
      // Nothing of the job is touched (no model loaded, no file read) before its paths are checked.
      await checkJobPaths(data, roots, urlPrefixes);
      loaded = await models.get(data.model, device, dtype);
    } catch (error) {
      // The same on every worker with these roots and this checkpoint: no point in retrying.
      if (error instanceof PathNotAllowedError || error instanceof ConfigError) throw new UnrecoverableError(error.message.split('\n')[0]);
      throw error;
    }
    if (data.modelId !== undefined && loaded.identity.id !== data.modelId) {
      throw new UnrecoverableError(
        `the checkpoint at ${data.model} on this worker (${loaded.identity.id.slice(0, 23)}) is not the one the shard was queued with (${data.modelId.slice(0, 23)})`,
      );
    }
    let lastReport = 0;
    const work = embedItemsToPart({
      model: loaded.model,
      modelIdentity: loaded.identity,
      task: data.task,
      items: data.items,
      outDir: data.outDir,
      partName: data.partName,
      idKind: data.idKind,
      lanceTable: data.lanceTable,
      batchSize: data.batchSize,
      remote: options.remote,
      // A worker that stalled past its lock (another has the shard now, and the output may have
      // been merged since) must not write: the check is the last thing before each write.
      beforeWrite: async () => {
        if (token === undefined || (await job.extendLock(token, lockDuration)) !== 1) {
          throw new QueueUnavailableError(`shard ${job.id}: this worker no longer holds the shard's lock (it went to another worker); its rows are not written`);
        }
      },
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
      // An invalid job (a model without labels for classify, a bad part name, an output folder of
      // another model) fails the same way on every worker: no point in retrying it.
      if (error instanceof InvalidArgumentError || error instanceof ModelMismatchError) throw new UnrecoverableError(error.message.split('\n')[0]);
      throw error;
    }
    if (result === 'released') {
      work.catch(() => {});
      await job.moveToWait(token);
      log(`shard ${job.id}: released to the queue`);
      throw new WaitingError();
    }
    const seconds = (performance.now() - started) / 1000;
    const skipped = result.skippedDone > 0 ? `, ${result.skippedDone} already in other parts` : '';
    log(`shard ${job.id}: ${result.written} written, ${result.failed.length} failed${skipped} in ${seconds.toFixed(1)} s`);
    return { written: result.written, skippedDone: result.skippedDone, failed: result.failed.map(({ id, path, reason }) => ({ id, path, reason })) };
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
