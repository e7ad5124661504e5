/**
 * The queue side of the CLI (see lib/batch/queue.ts):
 *
 *   perceiver-io worker --queue redis://HOST:PORT --allow-root DIR... [--device cpu] [--dtype float32] [--concurrency 1] [--lock-duration-ms 60000] [--allow-url-prefix URL...] [--s3-endpoint URL]
 *   perceiver-io embed|classify --queue redis://HOST:PORT --model DIR|ID --out DIR [--shard-size 256] [--batch-size N] [--attempts 3] [--manifest FILE|URL] [--s3-endpoint URL] INPUT...
 *
 * The worker runs until SIGINT / SIGTERM: the first finishes the shard in progress and exits 0, a
 * second hands it back to the queue at once (another worker restarts it) and exits 0. The enqueuer
 * waits for every shard; SIGINT / SIGTERM stop the waiting only (exit 130; the shards stay queued and
 * the same command waits for them again).
 */
import { BackendUnavailableError, InvalidArgumentError, PerceiverError } from '../errors.js';
import { DEVICE_DTYPES, type ComputeDType } from '../modeling/perceiver_model.js';
import type { EnqueueProgress } from '../batch/queue.js';
import { skippedLine } from './messages.js';
import { UsageError } from './usage.js';

type Values = Record<string, string | boolean | string[] | undefined>;

function integerOption(values: Values, name: string, min: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} wants an integer of at least ${min}, got ${String(raw)}`);
  return n;
}

function requiredString(values: Values, command: string, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`${command} needs --${name}`);
  return value;
}

/** Fails at start, rather than on every shard, when this machine cannot run the device and dtype. */
async function checkDevice(device: string, dtype: string): Promise<void> {
  if (!DEVICE_DTYPES.includes(dtype as ComputeDType)) throw new UsageError(`--dtype wants one of ${DEVICE_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (device !== 'cpu' && !m) throw new UsageError(`--device wants cpu, cuda or cuda:N, got ${JSON.stringify(device)}`);
  if (device === 'cpu') {
    if (dtype !== 'float32') throw new BackendUnavailableError(`dtype '${dtype}' is not supported on the cpu backend (it computes in float32); use --dtype float32 or a CUDA device`);
    return;
  }
  const { capabilities } = await import('../capabilities.js');
  const cuda = capabilities().cuda;
  if (!cuda.available) throw new BackendUnavailableError(`device '${device}' is not available: ${cuda.reason ?? 'unknown reason'}`);
  const index = Number(m![1] ?? 0);
  if (index >= cuda.deviceCount) throw new BackendUnavailableError(`device '${device}' is not available: this machine has ${cuda.deviceCount} CUDA device(s)`);
}

/** `perceiver-io worker` after its options are parsed (lib/cli/commands/worker.ts): resolves the exit code; errors are thrown for main to print on one line. */
export async function runWorkerCommand(values: Values): Promise<number> {
  const queue = requiredString(values, 'worker', 'queue');
  const allowedRoots = (values['allow-root'] as string[] | undefined) ?? [];
  if (allowedRoots.length === 0) {
    throw new UsageError('worker needs --allow-root DIR (repeatable): the folders queued jobs may read and write (models, inputs, outputs); --allow-root / allows any path');
  }
  const device = values.device as string;
  const dtype = values.dtype as string;
  await checkDevice(device, dtype);
  const concurrency = integerOption(values, 'concurrency', 1);
  const lockDurationMs = integerOption(values, 'lock-duration-ms', 1000);

  const { startShardWorker, displayUrl, parseQueueUrl } = await import('../batch/queue.js');
  const { RemoteReader } = await import('../io/remote.js');
  const label = 'perceiver-io worker';
  const log = (line: string) => process.stderr.write(`${label}: ${line}\n`);
  let worker: Awaited<ReturnType<typeof startShardWorker>>;
  let remote: InstanceType<typeof RemoteReader>;
  try {
    remote = new RemoteReader({ s3Endpoint: values['s3-endpoint'] as string | undefined });
    worker = await startShardWorker({
      queue,
      device,
      dtype: dtype as ComputeDType,
      concurrency,
      lockDurationMs,
      allowedRoots,
      allowedUrlPrefixes: values['allow-url-prefix'] as string[] | undefined,
      remote,
      log,
    });
  } catch (error) {
    // A root that is not a folder, a bad URL prefix or endpoint is a mistake on the command line.
    if (error instanceof InvalidArgumentError && ['--allow-root', '--allow-url-prefix', '--s3-endpoint'].includes(error.argument)) throw new UsageError(error.message);
    throw error;
  }

  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      log('finishing the shard in progress, then exiting (signal again to hand it back to the queue now)');
      void worker.close();
    } else if (signals === 2) {
      log('handing the shard in progress back to the queue');
      void worker.close({ release: true });
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await worker.ready;
    log(`taking shards from ${displayUrl(parseQueueUrl(queue))} on ${device} (${dtype}, concurrency ${concurrency ?? 1}), paths allowed under ${allowedRoots.join(', ')}`);
    await worker.closed;
    log('stopped');
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await worker.close().catch(() => {});
    await remote.close();
  }
}

/** `perceiver-io embed|classify --queue ...` after its options are parsed (lib/cli/commands/embed.ts): resolves the exit code. */
export async function runQueuedEmbedCommand(task: 'embed' | 'classify', values: Values, positionals: string[]): Promise<number> {
  const label = `perceiver-io ${task}`;
  const queue = requiredString(values, task, 'queue');
  const model = requiredString(values, task, 'model');
  const out = requiredString(values, task, 'out');
  const { parseLanceOut } = await import('../batch/lance.js');
  let lanceOut: { dir: string; table: string } | undefined;
  try {
    lanceOut = parseLanceOut(out);
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  if (!lanceOut && !/^s3:\/\//i.test(out) && /^[a-z][a-z0-9+.-]*:\/\//i.test(out)) {
    throw new UsageError(`with --queue, --out is a folder the workers share, s3://BUCKET/PREFIX or lancedb://DIR/TABLE (DIR shared); ${JSON.stringify(out)} is none of these`);
  }
  const { parseIdKind, parseSize } = await import('./embed.js');
  const idKind = parseIdKind(values.id as string | undefined);
  const partSize = values['part-size'] === undefined ? undefined : parseSize(values['part-size'] as string, '--part-size');
  if (positionals.length === 0 && values.manifest === undefined) throw new UsageError(`${task} needs at least one INPUT (a file, folder or glob) or --manifest FILE`);

  const { enqueueAndWait } = await import('../batch/queue.js');
  const { RemoteReader } = await import('../io/remote.js');
  let remote: InstanceType<typeof RemoteReader>;
  try {
    remote = new RemoteReader({ s3Endpoint: values['s3-endpoint'] as string | undefined });
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  // Shards done / total: one line per change (at most one a second, and always the last), or a
  // line redrawn in place on a terminal.
  const tty = process.stderr.isTTY === true;
  let lastLine = -Infinity;
  let pendingLine = '';
  const show = (p: EnqueueProgress, force = false) => {
    const text = `${label}: ${p.shardsDone + p.shardsFailed}/${p.shardsTotal} shards done${p.shardsFailed ? ` (${p.shardsFailed} failed)` : ''}, ${p.written} items written, ${p.failedItems} unreadable`;
    pendingLine = text;
    if (!force && performance.now() - lastLine < 1000) return;
    process.stderr.write(tty ? `\r${text}\x1b[K` : `${text}\n`);
    pendingLine = '';
    lastLine = performance.now();
  };
  let last: EnqueueProgress | undefined;
  const flush = () => {
    if (pendingLine && last) show(last, true);
    if (tty && lastLine > -Infinity) process.stderr.write('\n');
  };
  try {
    const result = await enqueueAndWait({
      queue,
      model,
      task,
      inputs: positionals,
      manifest: values.manifest as string | undefined,
      remote,
      outDir: lanceOut?.dir ?? out,
      lanceTable: lanceOut?.table,
      idKind,
      partSize,
      onCompacting: () => {
        flush();
        lastLine = -Infinity;
        process.stderr.write(`${label}: every shard of ${out} is done: ${lanceOut ? 'merging the table\'s fragments' : 'merging its small parts'}\n`);
      },
      shardSize: integerOption(values, 'shard-size', 1),
      batchSize: integerOption(values, 'batch-size', 1),
      attempts: integerOption(values, 'attempts', 1),
      signal: controller.signal,
      label,
      onIgnored: (line) => process.stderr.write(line + '\n'),
      onProgress: (p) => {
        if (p.shardsTotal === 0) return; // nothing to wait for: the summary says so
        last = p;
        show(p, p.shardsDone + p.shardsFailed === p.shardsTotal);
      },
    });
    flush();
    const shown = result.failed.slice(0, 20);
    for (const failure of shown) process.stderr.write(skippedLine(label, failure) + '\n');
    if (result.failed.length > shown.length) process.stderr.write(`${label}: ... and ${result.failed.length - shown.length} more unreadable files\n`);
    process.stderr.write(
      `${label}: ${result.items} items: ${result.written} written by ${result.shards} shard${result.shards === 1 ? '' : 's'} (${result.added} queued now), ` +
        `${result.alreadyDone} already done, ${result.failed.length} unreadable` +
        (result.ignored ? `, ${result.ignored} ignored (kind)` : '') +
        ` -> ${out}${result.compactedParts > 0 ? ` (${result.compactedParts} compacted part${result.compactedParts === 1 ? '' : 's'})` : ''} (${result.seconds.toFixed(1)} s)\n`,
    );
    return 0;
  } catch (error) {
    flush();
    if (error instanceof PerceiverError && error.code === 'ERR_PERCEIVER_ABORTED') {
      process.stderr.write(`${label}: ${error.message}\n`);
      return 130;
    }
    // A missing input or manifest is a mistake on the command line, as in a local run.
    if (error instanceof InvalidArgumentError && (error.argument === 'INPUT' || error.argument === 'manifest')) throw new UsageError(error.message);
    throw error;
  } finally {
    await remote.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
