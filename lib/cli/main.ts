#!/usr/bin/env node
/**
 * The perceiver-io command line.
 *
 *   perceiver-io infer --model DIR --inputs IN.safetensors --output OUT.safetensors [--device cpu] [--dtype float32]
 *   perceiver-io convert --model DIR [--out DIR] [--force]
 *   perceiver-io serve --model DIR|ID [--host 127.0.0.1] --port N [--device cpu] [--dtype float32]
 *   perceiver-io embed|classify --model DIR|ID --out DIR|lancedb://DIR/TABLE [--batch-size N] [--devices LIST] [--shard i/N] [--manifest FILE|URL] [--strict] [--id path|content] [--part-size 128MB] [--s3-endpoint URL] INPUT...
 *   perceiver-io search --index OUT --query FILE|TEXT [-k 10]
 *
 * Any failure prints one line on stderr and exits non-zero (2 for a usage error, 1 otherwise):
 * never a stack trace, never a signal.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../native/binding.js';
import { PerceiverError } from '../errors.js';
import { runConvert } from './convert.js';
import { runEmbedCommand } from './embed.js';
import { runInfer } from './infer.js';
import { UsageError } from './usage.js';
import type { ComputeDType } from '../modeling/perceiver_model.js';

const USAGE = `Usage: perceiver-io <command> [options]

Commands:
  infer     Run a checkpoint on tensors from a safetensors file and write its outputs
            --model DIR             Hugging Face checkpoint folder (config.json + model.safetensors)
            --inputs FILE           safetensors with "input" (or "input.<modality>"), optionally
                                    "call.attention_mask" and "call.subsampled_output_points.<modality>"
            --output FILE           safetensors to write: "logits" (or "logits.<modality>") and
                                    "last_hidden_state", float32
            --device cpu            where to run (default cpu)
            --dtype float32         compute precision (default float32)
  convert   Write a checkpoint's weights (e.g. pytorch_model.bin) as model.safetensors
            --model DIR             checkpoint folder
            --out DIR               where to write (default: the same folder)
            --force                 replace an existing model.safetensors
  serve     HTTP service: GET /health, POST /embed and /classify ({"text": ...} or
            {"image": "<base64>"}), GET /metrics (Prometheus); requests are batched
            --model DIR|ID          checkpoint folder or Hugging Face Hub id
            --host 127.0.0.1        address to listen on
            --port N                port (0 picks a free one)
            --device cpu, --dtype float32, --max-batch-size 16, --max-delay-ms 5, --max-queue 1024
  embed     Embed files (mean of the latents) into Parquet parts: columns id, path, embedding
            perceiver-io embed --model DIR|ID --out DIR [options] INPUT...
            INPUT                   files, folders (recursive, known media extensions), globs,
                                    http(s):// URLs, s3://BUCKET/PREFIX (every media key under it),
                                    WebDataset .tar shards (local or remote: each media member)
            --manifest FILE|URL     more inputs: one path or URL per line (relative to the file;
                                    # comments), or .csv / .jsonl / .parquet with a path or url column
            --s3-endpoint URL       an S3-compatible store (MinIO, R2, ...); credentials: the AWS chain
            --concurrency 16, --request-timeout-ms 30000, --attempts 4   remote reads
            --out DIR               folder of Parquet parts, or lancedb://DIR/TABLE (a LanceDB
                                    table); a rerun skips the ids already there
            --batch-size 16         items per forward and per part
            --devices cpu           comma list (cpu, cuda:0,cuda:1, cpu,cpu) or all: one model each
            --dtype float32         compute precision (float32, tfloat32, float16, bfloat16 on CUDA)
            --shard i/N             only the items of shard i of N (by id)
            --strict                stop with exit 1 at the first unreadable file (default: skip it)
            --id path|content       ids: hash of the absolute path (default) or SHA-256 of the bytes
                                    (moved files are not re-embedded; duplicates embedded once, column paths)
            --part-size 128MB       merge batch parts into parts of about this size, crash-safely (0: never)
  classify  The same for a classification checkpoint, with columns label (top-1) and score
            (its softmax probability) beside id, path and embedding
            With --queue redis://HOST:PORT the work is queued in shards for workers (below) and the
            command waits until every shard is done: --shard-size 256 items per shard,
            --attempts 3 tries per shard; --batch-size goes to the workers
  fill-mask, predict, flow, autoencode
            Task pipelines on single inputs (each has its own --help): fill [MASK]s in a text,
            classify a text or image, optical flow of two images or a video, autoencode a video
  search    Nearest rows of an embed/classify output to a query (file or text)
            --index OUT (Parquet folder or lancedb://DIR/TABLE), --query FILE|TEXT, -k 10,
            --model DIR|ID (default: the index's), --json
  worker    Take queued shards and write their parts (model and --out come with each shard)
            --queue redis://HOST:PORT, --allow-root DIR (repeatable, required: the folders jobs
            may read and write), --device cpu|cuda:N, --dtype float32, --concurrency 1,
            --lock-duration-ms 60000 (a dead worker's shard is retried after about this long)

Options:
  -h, --help      show this help
  -v, --version   show the version`;

function version(): string {
  return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE + '\n');
    return command === undefined ? 2 : 0;
  }
  if (command === '-v' || command === '--version') {
    process.stdout.write(version() + '\n');
    return 0;
  }
  if (command === 'infer') return infer(rest);
  if (command === 'convert') return convert(rest);
  if (command === 'serve') return serveCommand(rest);
  // The BullMQ scale-out (lib/cli/worker.ts): loaded only when used.
  if (command === 'worker') return (await import('./worker.js')).runWorkerCommand(rest);
  if (command === 'search') return (await import('./search.js')).runSearchCommand(rest);
  if ((command === 'embed' || command === 'classify') && rest.some((arg) => arg === '--queue' || arg.startsWith('--queue='))) {
    return (await import('./worker.js')).runQueuedEmbedCommand(command, rest, USAGE);
  }
  if (command === 'embed' || command === 'classify') return embedCommand(command, rest);
  if (['fill-mask', 'predict', 'flow', 'autoencode'].includes(command)) return (await import('./pipelines.js')).runPipelineCommand(command, rest);
  throw new UsageError(`unknown command "${command}" (try --help)`);
}

type Options = Record<string, { type: 'string' | 'boolean'; default?: string | boolean; short?: string }>;

function parse(args: string[], options: Options): Record<string, string | boolean | undefined> {
  return parseWithPositionals(args, options, false).values;
}

function parseWithPositionals(args: string[], options: Options, allowPositionals: boolean) {
  try {
    const parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals });
    return { values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function required(values: Record<string, string | boolean | undefined>, command: string, names: string[]): void {
  for (const name of names) {
    if (typeof values[name] !== 'string' || values[name] === '') throw new UsageError(`${command} needs --${name}`);
  }
}

async function infer(args: string[]): Promise<number> {
  const values = parse(args, {
    model: { type: 'string' },
    inputs: { type: 'string' },
    output: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  required(values, 'infer', ['model', 'inputs', 'output']);
  const summary = await runInfer({
    model: values.model as string,
    inputs: values.inputs as string,
    output: values.output as string,
    device: values.device as string,
    dtype: values.dtype as string,
  });
  process.stderr.write(summary + '\n');
  return 0;
}

async function convert(args: string[]): Promise<number> {
  const values = parse(args, { model: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  required(values, 'convert', ['model']);
  const summary = await runConvert({ model: values.model as string, out: values.out as string | undefined, force: values.force === true });
  process.stderr.write(summary + '\n');
  return 0;
}

function positiveInt(values: Record<string, string | boolean | undefined>, name: string, min = 1): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} wants an integer of at least ${min}, got ${String(raw)}`);
  return n;
}

async function serveCommand(args: string[]): Promise<number> {
  const values = parse(args, {
    model: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    'max-batch-size': { type: 'string' },
    'max-delay-ms': { type: 'string' },
    'max-queue': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  required(values, 'serve', ['model', 'port']);
  const port = positiveInt(values, 'port', 0)!;
  const { AutoModel } = await import('../auto.js');
  const { serve } = await import('../serving/server.js');
  const model = await AutoModel.fromPretrained(values.model as string, {
    device: values.device as string,
    dtype: values.dtype as ComputeDType,
    hub: { progress: true },
  });
  const server = await serve(model, {
    host: values.host as string,
    port,
    maxBatchSize: positiveInt(values, 'max-batch-size'),
    maxDelayMs: positiveInt(values, 'max-delay-ms'),
    maxQueue: positiveInt(values, 'max-queue'),
  });
  process.stderr.write(`perceiver-io: serving ${model.constructor.name} on ${server.url}\n`);
  // Runs until a signal; then closes the server (in-flight requests finish) and the model.
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  await model.dispose();
  return 0;
}

async function embedCommand(task: 'embed' | 'classify', args: string[]): Promise<number> {
  const { values, positionals } = parseWithPositionals(
    args,
    {
      model: { type: 'string' },
      out: { type: 'string' },
      manifest: { type: 'string' },
      'batch-size': { type: 'string' },
      devices: { type: 'string' },
      device: { type: 'string' },
      dtype: { type: 'string', default: 'float32' },
      shard: { type: 'string' },
      strict: { type: 'boolean' },
      id: { type: 'string' },
      'part-size': { type: 'string' },
      's3-endpoint': { type: 'string' },
      'request-timeout-ms': { type: 'string' },
      attempts: { type: 'string' },
      concurrency: { type: 'string' },
    },
    true,
  );
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  required(values, task, ['model', 'out']);
  if (values.devices !== undefined && values.device !== undefined) throw new UsageError(`${task} takes --devices or --device, not both`);
  return runEmbedCommand({
    task,
    model: values.model as string,
    out: values.out as string,
    inputs: positionals,
    manifest: values.manifest as string | undefined,
    batchSize: positiveInt(values, 'batch-size'),
    devices: (values.devices ?? values.device ?? 'cpu') as string,
    dtype: values.dtype as string,
    shard: values.shard as string | undefined,
    strict: values.strict === true,
    id: values.id as string | undefined,
    partSize: values['part-size'] as string | undefined,
    s3Endpoint: values['s3-endpoint'] as string | undefined,
    requestTimeoutMs: positiveInt(values, 'request-timeout-ms'),
    attempts: positiveInt(values, 'attempts'),
    concurrency: positiveInt(values, 'concurrency'),
  });
}

function oneLine(error: unknown): string {
  if (error instanceof PerceiverError || error instanceof UsageError) return error.message.split('\n')[0]!;
  if (error instanceof Error) return `${error.name}: ${error.message.split('\n')[0]}`;
  return String(error);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`perceiver-io: ${oneLine(error)}\n`);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  },
);
