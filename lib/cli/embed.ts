/**
 * `perceiver-io embed` and `perceiver-io classify`: files in, Parquet parts out (see
 * lib/batch/job.ts for what is written and how a rerun resumes).
 *
 * - Unreadable files are reported on stderr, one line each, and skipped; the run exits 0 and its
 *   summary counts them. `--strict` stops at the first one and exits 1.
 * - Files of a kind the model does not read are left out before the job, with one line saying how
 *   many; inputs on the command line that name nothing are skipped and counted (all of them
 *   missing is a usage error).
 * - SIGINT / SIGTERM stop taking new batches; the batches in flight are written, then the run
 *   exits 130 (a rerun carries on). A second signal exits at once.
 * - A second run on the same --out (other than another shard of the same count) exits 1 at once
 *   with OutputLockedError; one with another model than the folder holds, with ModelMismatchError.
 */
import { AutoModel } from '../auto.js';
import { discoverInputs } from '../batch/discover.js';
import { runEmbedJob, modelIdentity, type EmbedTask, type IdKind } from '../batch/job.js';
import { createProgressReporter } from '../batch/progress.js';
import { capabilities } from '../capabilities.js';
import { InvalidArgumentError } from '../errors.js';
import { RemoteReader } from '../io/remote.js';
import { parseLanceOut } from '../batch/lance.js';
import { checkpointFolder, DEVICE_DTYPES, type ComputeDType, type PerceiverModel } from '../modeling/perceiver_model.js';
import { filterByKind, missingLine, skippedLine } from './messages.js';
import { UsageError } from './usage.js';

export interface EmbedCommandOptions {
  task: EmbedTask;
  /** Checkpoint folder or Hugging Face Hub id. */
  model: string;
  out: string;
  /** Files, folders and globs. */
  inputs: string[];
  /** A file with one path per line. */
  manifest?: string;
  batchSize?: number;
  /** `cpu`, `cuda:0,cuda:1`, `all`, ... */
  devices: string;
  dtype: string;
  /** `i/N`. */
  shard?: string;
  /** Threads that decode the items (default: the cores but one; 0: the main thread). */
  decodeWorkers?: number;
  strict: boolean;
  /** `path` (default) or `content`. */
  id?: string;
  /** `128MB`, `64MiB`, `500kB`, bytes, or `0` (never compact). */
  partSize?: string;
  /** Remote inputs: an S3-compatible endpoint, requests at once, per-request timeout, tries. */
  s3Endpoint?: string;
  concurrency?: number;
  requestTimeoutMs?: number;
  attempts?: number;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** A size such as `128MB`, `64MiB`, `500kB` or `1048576` (bytes), in bytes. */
export function parseSize(value: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new UsageError(`${option} wants a size such as 128MB, 64MiB, 500kB or a byte count (0: never), got ${JSON.stringify(value)}`);
  return bytes;
}

/** `path` or `content`. */
export function parseIdKind(value: string | undefined): IdKind {
  if (value === undefined || value === 'path') return 'path';
  if (value === 'content') return 'content';
  throw new UsageError(`--id wants path or content, got ${JSON.stringify(value)}`);
}

/**
 * The devices of a `--devices` list: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, repeated as wanted (one
 * model each), or `all`: every CUDA device, or the cpu when there is none.
 */
export function parseDevices(value: string): { devices: string[]; note?: string } {
  const entries = value.split(',').map((entry) => entry.trim());
  if (entries.length === 1 && entries[0] === 'all') {
    const cuda = capabilities().cuda;
    if (cuda.available && cuda.deviceCount > 0) return { devices: Array.from({ length: cuda.deviceCount }, (_, i) => `cuda:${i}`) };
    return { devices: ['cpu'], note: `--devices all: no usable GPU (${cuda.reason ?? 'none found'}), running on the cpu` };
  }
  const devices = entries.map((entry) => {
    if (entry === 'cuda') return 'cuda:0';
    if (entry === 'cpu' || /^cuda:\d+$/.test(entry)) return entry;
    throw new UsageError(`--devices wants a comma list of cpu, cuda or cuda:N, or all; got ${JSON.stringify(entry || value)}`);
  });
  return { devices };
}

/** `i/N` with 0 <= i < N. */
export function parseShard(value: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(value.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(count) || count < 1 || index >= count) {
    throw new UsageError(`--shard wants i/N with 0 <= i < N (e.g. 0/4), got ${JSON.stringify(value)}`);
  }
  return { index, count };
}

/** Runs the command; resolves the exit code. Errors are thrown for the caller to print as one line. */
export async function runEmbedCommand(options: EmbedCommandOptions): Promise<number> {
  const { task } = options;
  const label = `perceiver-io ${task}`;
  if (!DEVICE_DTYPES.includes(options.dtype as ComputeDType)) throw new UsageError(`--dtype wants one of ${DEVICE_DTYPES.join(', ')}, got ${JSON.stringify(options.dtype)}`);
  const { devices, note } = parseDevices(options.devices);
  const shard = options.shard === undefined ? undefined : parseShard(options.shard);
  const idKind = parseIdKind(options.id);
  const partSize = options.partSize === undefined ? undefined : parseSize(options.partSize, '--part-size');
  if (options.inputs.length === 0 && options.manifest === undefined) throw new UsageError(`${task} needs at least one INPUT (a file, folder or glob) or --manifest FILE`);

  let remote: RemoteReader;
  try {
    remote = new RemoteReader({ s3Endpoint: options.s3Endpoint, concurrency: options.concurrency, timeoutMs: options.requestTimeoutMs, attempts: options.attempts });
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  try {
    return await runWithReader(options, remote, { label, devices, note, shard, idKind, partSize });
  } finally {
    await remote.close();
  }
}

async function runWithReader(
  options: EmbedCommandOptions,
  remote: RemoteReader,
  { label, devices, note, shard, idKind, partSize }: { label: string; devices: string[]; note?: string; shard?: { index: number; count: number }; idKind: IdKind; partSize?: number },
): Promise<number> {
  const { task } = options;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(options.out) && !options.out.startsWith('lancedb://') && !/^s3:\/\//i.test(options.out)) {
    throw new UsageError(`--out takes a local folder, s3://BUCKET/PREFIX or lancedb://DIR/TABLE; ${JSON.stringify(options.out)} is none of these`);
  }
  let lanceOut;
  try {
    lanceOut = parseLanceOut(options.out);
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  let discovered;
  try {
    discovered = await discoverInputs(options.inputs, { manifest: options.manifest, id: idKind, remote });
  } catch (error) {
    // An unreadable manifest is a mistake on the command line.
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  const { missing } = discovered;
  let items = discovered.items;
  if (items.length === 0 && missing.length > 0) throw new UsageError(missing.length === 1 ? missing[0]!.message : `none of the inputs names a file: ${missing.map((e) => e.actual).join(', ')}`);
  if (missing.length > 0) process.stderr.write(missingLine(label, missing) + '\n');
  if (note) process.stderr.write(`${label}: ${note}\n`);

  const models: PerceiverModel<any>[] = [];
  const controller = new AbortController();
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) process.exit(130);
    process.stderr.write(`${label}: stopping after the batches in flight (again to quit now)\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = await createProgressReporter({ label });
  try {
    // The folder once (a Hub id is downloaded once); after loading, its identity for the parts and the resume check.
    const folder = await checkpointFolder(options.model, { progress: true });
    for (const device of devices) {
      models.push(await AutoModel.fromPretrained(folder, { device, dtype: options.dtype as ComputeDType }));
    }
    const identity = await modelIdentity(folder, options.model);
    const { createMediaInputBuilder } = await import('../media/model_inputs.js');
    const byKind = filterByKind(items, createMediaInputBuilder(models[0]!).accepts, label);
    items = byKind.kept;
    if (byKind.line) progress.log(byKind.line);
    const result = await runEmbedJob({
      models,
      task,
      items,
      outDir: lanceOut?.dir ?? options.out,
      lanceTable: lanceOut?.table,
      modelIdentity: identity,
      batchSize: options.batchSize,
      shard,
      idKind,
      partSize,
      remote,
      decodeWorkers: options.decodeWorkers,
      strict: options.strict,
      signal: controller.signal,
      onItemFailed: (failure) => progress.log(skippedLine(label, failure)),
      onProgress: (done, failed, total) => {
        if (done === 0) progress.start(total);
        else progress.update(done, failed);
      },
    });
    progress.stop();
    const rate = result.seconds > 0 ? (result.written + result.failed.length) / result.seconds : 0;
    const busy = result.seconds > 0 ? Math.round((100 * result.engineSeconds) / (result.seconds * devices.length)) : 0;
    const shardText = shard ? ` (shard ${shard.index}/${shard.count}: ${result.total - result.otherShards} of ${result.total})` : '';
    process.stderr.write(
      `${label}: ${result.total} items${shardText}: ${result.written} written in ${result.parts} part${result.parts === 1 ? '' : 's'}, ` +
        `${result.skippedDone} already done, ${result.failed.length} unreadable, ` +
        (byKind.ignored ? `${byKind.ignored} ignored (kind), ` : '') +
        (missing.length ? `${missing.length} input${missing.length === 1 ? '' : 's'} not found, ` : '') +
        `${result.todo - result.written - result.failed.length} left -> ${options.out}` +
        `${result.compactedParts > 0 ? ` (${result.compactedParts} compacted part${result.compactedParts === 1 ? '' : 's'})` : ''} ` +
        `(${result.seconds.toFixed(1)} s, ${rate.toFixed(1)} items/s on ${devices.join(',')}, engine busy ${busy}%, ` +
        `${result.decodeWorkers === 0 ? 'decoded on the main thread' : `${result.decodeWorkers} decode worker${result.decodeWorkers === 1 ? '' : 's'}`})\n`,
    );
    return result.interrupted ? 130 : 0;
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(models.map((model) => model.dispose()));
  }
}
