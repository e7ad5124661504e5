/** `perceiver-io worker`: its option table and entry (the work is in ../worker.ts). */
import type { CommandSpec } from '../spec.js';
import { checkOptional } from '../../optional.js';
import { runCommand } from '../spec.js';

export const WORKER: CommandSpec = {
  name: 'worker',
  summary: 'take shards queued by embed|classify --queue and write their parts',
  usage: ['worker --queue redis://HOST:PORT --allow-root DIR [options]'],
  description: `Takes shards queued by "perceiver-io embed|classify --queue ..." and writes their Parquet parts
(the model and output come with each shard). Run one per GPU, on any machine that sees the same
paths; with s3:// inputs and an s3://BUCKET/PREFIX output, on any machine with credentials
(--allow-url-prefix must cover both). SIGINT/SIGTERM: finish the shard in progress, then exit; twice: hand it back now.
Whoever can write to the Redis database can queue jobs: the worker reads and writes only under
its --allow-root folders and fails any shard naming a path outside them.`,
  options: {
    queue: { type: 'string', value: 'URL', required: true, help: 'redis://HOST:PORT (or rediss://, with user:password@ and /DB if needed)' },
    'allow-root': { type: 'string', value: 'DIR', multiple: true, help: 'a folder jobs may read and write (required; / allows all)' },
    'allow-url-prefix': { type: 'string', value: 'URL', multiple: true, help: 'remote items and s3:// outputs jobs may name, e.g. s3://bucket/media/ or\nhttps://host/ (default none: a shard naming a URL fails for good)' },
    's3-endpoint': { type: 'string', value: 'URL', help: 'an S3-compatible store for s3:// items and outputs (credentials: the AWS\nchain)' },
    device: { type: 'string', value: 'DEVICE', default: 'cpu', help: 'where to run: cpu, cuda or cuda:N' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision (float32, tfloat32, float16, bfloat16 on CUDA)' },
    concurrency: { type: 'string', value: 'N', help: 'shards at once (default 1)' },
    'lock-duration-ms': { type: 'string', value: 'N', help: "how long a shard's lock lasts without renewal (default 60000): a dead\nworker's shard goes to another worker after about this long" },
  },
};

export function workerCommand(args: string[]): Promise<number> {
  return runCommand(WORKER, args, async ({ values }) => {
    await checkOptional('bullmq', 'ioredis', 'apache-arrow', 'parquet-wasm');
    return (await import('../worker.js')).runWorkerCommand(values);
  });
}
