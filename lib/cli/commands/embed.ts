/**
 * `perceiver-io embed` and `perceiver-io classify`: their option table and entry. A local run is
 * ../embed.ts; with --queue the work is queued for workers (../worker.ts).
 */
import type { CommandSpec, OptionSpec } from '../spec.js';
import { checkOptional } from '../../optional.js';
import { integerOption, runCommand } from '../spec.js';
import { UsageError } from '../usage.js';

/** Options of a local run that a queued run leaves to the workers. */
const LOCAL_ONLY = ['devices', 'device', 'dtype', 'shard', 'strict'] as const;
/** Options a queued run does not support (remote-read tuning and decode threads are each worker's). */
const NOT_QUEUED = ['concurrency', 'request-timeout-ms', 'read-attempts', 'decode-workers'] as const;
/** Options of a queued run only. */
const QUEUE_ONLY = ['shard-size', 'attempts'] as const;

function embedSpec(task: 'embed' | 'classify'): CommandSpec {
  const options: Record<string, OptionSpec> = {
    model: { type: 'string', value: 'DIR|ID', required: true, help: 'checkpoint folder or Hugging Face Hub id' },
    out: { type: 'string', value: 'DIR', required: true, help: 'folder of Parquet parts, s3://BUCKET/PREFIX, or lancedb://DIR/TABLE (a\nLanceDB table); a rerun skips the ids already there' },
    manifest: { type: 'string', value: 'FILE|URL', help: 'more inputs: one path or URL per line (relative to the file; # comments),\nor .csv / .jsonl / .parquet with a path or url column' },
    'batch-size': { type: 'string', value: 'N', help: 'items per forward and per part (default 16)' },
    devices: { type: 'string', value: 'LIST', default: 'cpu', help: 'comma list (cpu, cuda:0,cuda:1, cpu,cpu) or all: one model each' },
    device: { type: 'string', value: 'DEVICE', help: 'one device (the same as --devices DEVICE)' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision: float32 or bfloat16 on the cpu; also tfloat32,\nfloat16 on CUDA' },
    shard: { type: 'string', value: 'i/N', help: 'only the items of shard i of N (by id)' },
    'decode-workers': { type: 'string', value: 'N', help: 'threads that decode and preprocess the items while the model computes\n(default: the cores but one; 0: on the main thread)' },
    strict: { type: 'boolean', help: 'stop with exit 1 at the first unreadable file (default: skip it)' },
    id: { type: 'string', value: 'path|content', default: 'path', help: 'ids: hash of the absolute path, or SHA-256 of the bytes (moved files are\nnot re-embedded; duplicates embedded once, column paths)' },
    'part-size': { type: 'string', value: 'SIZE', help: 'merge batch parts into parts of about this size (128MB, 64MiB, bytes),\ncrash-safely; with --queue, once every shard is done; 0: never\n(default 128MiB)' },
    's3-endpoint': { type: 'string', value: 'URL', help: 'an S3-compatible store (MinIO, R2, ...) for s3:// inputs and --out;\ncredentials: the AWS chain' },
    concurrency: { type: 'string', value: 'N', help: 'remote reads at once (default 16)' },
    'request-timeout-ms': { type: 'string', value: 'N', help: 'a remote read with no bytes for this long is retried (default 30000)' },
    'read-attempts': { type: 'string', value: 'N', help: 'tries per remote read (default 4); --attempts is tries per queued shard' },
    queue: { type: 'string', value: 'URL', help: 'redis://HOST:PORT: queue the work in shards for `perceiver-io worker`s\nand wait until every shard is done' },
    'shard-size': { type: 'string', value: 'N', help: 'with --queue: items per shard (default 256)' },
    attempts: { type: 'string', value: 'N', help: 'with --queue: tries per shard (default 3); a remote read: --read-attempts' },
  };
  return {
    name: task,
    summary:
      task === 'embed'
        ? 'embed files (mean of the latents) into Parquet parts: id, path, embedding'
        : 'the same for a classification checkpoint, adding label (top-1) and score',
    usage: [`${task} --model DIR|ID --out DIR [options] INPUT...`, `${task} --queue redis://HOST:PORT --model DIR|ID --out DIR [options] INPUT...`],
    description:
      (task === 'embed'
        ? 'Embeds files (the mean of the latents) into Parquet parts with columns id, path, embedding.'
        : 'Classifies files into Parquet parts with columns id, path, embedding, label (top-1) and\nscore (its softmax probability).') +
      '\nINPUT: files, folders (recursive, known media extensions), globs, http(s):// URLs,\ns3://BUCKET/PREFIX (every media key under it), WebDataset .tar shards (local or remote: each\nmedia member). Inputs that name nothing are skipped and counted. Unreadable files are\nskipped and counted (--strict: exit 1 at the first). With --queue, --batch-size goes to the\nworkers and --device/--dtype are theirs to choose.',
    options,
    positionals: true,
  };
}

export const EMBED = embedSpec('embed');
export const CLASSIFY = embedSpec('classify');

export function embedCommand(task: 'embed' | 'classify', args: string[]): Promise<number> {
  return runCommand(task === 'embed' ? EMBED : CLASSIFY, args, async ({ values, positionals, given }) => {
    if (values.queue !== undefined) {
      for (const name of LOCAL_ONLY) {
        if (given.has(name)) throw new UsageError(`--${name} is for a local run; with --queue each worker chooses its own (perceiver-io worker --device ... --dtype ...)`);
      }
      for (const name of NOT_QUEUED) {
        if (given.has(name)) throw new UsageError(`--${name} is for a local run (without --queue)`);
      }
      await checkOptional('bullmq', 'ioredis', 'apache-arrow', 'parquet-wasm');
      return (await import('../worker.js')).runQueuedEmbedCommand(task, values, positionals);
    }
    for (const name of QUEUE_ONLY) {
      if (given.has(name)) throw new UsageError(`--${name} is for a queued run (with --queue)`);
    }
    if (given.has('devices') && given.has('device')) throw new UsageError(`${task} takes --devices or --device, not both`);
    await checkOptional('apache-arrow', 'parquet-wasm');
    const { runEmbedCommand } = await import('../embed.js');
    return runEmbedCommand({
      task,
      model: values.model as string,
      out: values.out as string,
      inputs: positionals,
      manifest: values.manifest as string | undefined,
      batchSize: integerOption(values, 'batch-size'),
      devices: (given.has('device') ? values.device : values.devices) as string,
      dtype: values.dtype as string,
      shard: values.shard as string | undefined,
      decodeWorkers: integerOption(values, 'decode-workers', 0),
      strict: values.strict === true,
      id: values.id as string,
      partSize: values['part-size'] as string | undefined,
      s3Endpoint: values['s3-endpoint'] as string | undefined,
      concurrency: integerOption(values, 'concurrency'),
      requestTimeoutMs: integerOption(values, 'request-timeout-ms'),
      attempts: integerOption(values, 'read-attempts'),
    });
  });
}
