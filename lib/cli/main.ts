#!/usr/bin/env node
/**
 * The perceiver-io command line.
 *
 *   perceiver-io infer --model DIR --inputs IN.safetensors --output OUT.safetensors [--device cpu] [--dtype float32]
 *   perceiver-io convert --model DIR [--out DIR] [--force]
 *   perceiver-io serve --model [NAME=]DIR|ID... [--host 127.0.0.1] --port N [--device [NAME=]cpu] [--dtype [NAME=]float32] [--api-key KEY]
 *   perceiver-io embed|classify --model DIR|ID --out DIR [--batch-size N] [--devices LIST] [--shard i/N] [--manifest FILE] [--strict] INPUT...
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
  serve     HTTP service: OpenAI POST /v1/embeddings and GET /v1/models; text-embeddings-inference
            POST /embed ({"inputs"}), POST /predict, GET /info; POST /embed and /classify ({"text"} or
            {"image": "<base64>"}); GET /health (503 until warm), GET /metrics (Prometheus)
            --model DIR|ID          checkpoint folder or Hugging Face Hub id, named by itself;
                                    NAME=DIR|ID names it; repeat for several models (the first is
                                    the default; others by "model" or /models/NAME/...)
            --host 127.0.0.1        address to listen on
            --port N                port (0 picks a free one)
            --device cpu            every model's device; NAME=cuda:0 for one model (repeatable)
            --dtype float32         every model's precision; NAME=float16 for one model (repeatable)
            --api-key KEY           require "Authorization: Bearer KEY" (repeatable; also
                                    PERCEIVER_IO_API_KEY, comma-separated); default: no keys
            --public-routes /health,/metrics  routes open without a key ('' for none)
            --max-text-length N     longest text in tokens (default min(max_position_embeddings, 2048));
                                    longer inputs get 413 unless "truncate": true
            --padding dynamic       dynamic: pad each text to a power of two >= its length; fixed:
                                    pad every text to --max-text-length
            --max-batch-size 16     items per forward
            --max-batch-tokens 16384  tokens (items x padded length) per text forward
            --max-client-batch-size 32  inputs per request; more get 413
            --max-delay-ms 5        longest an item waits for others to batch with
            --max-queue 1024        requests admitted per route, and items queued or in flight per
                                    route and model; beyond, 429 + Retry-After
            --max-body-bytes N      larger bodies get 413 (default 1048576 text, 16777216 image models)
            --max-image-pixels N    images declaring more pixels get 413, undecoded (default 50000000)
            --max-concurrent-decodes N  images decoded at once (default: cores, 1 to 4)
            --headers-timeout-ms 10000, --request-timeout-ms 30000 (whole request received),
            --connection-timeout-ms 60000 (idle socket), --keep-alive-timeout-ms 5000
            --shutdown-timeout-ms 10000  on SIGTERM/SIGINT: drain this long, then close connections
  embed     Embed files (mean of the latents) into Parquet parts: columns id, path, embedding
            perceiver-io embed --model DIR|ID --out DIR [options] INPUT...
            INPUT                   files, folders (recursive, known media extensions) or globs
            --manifest FILE         more inputs: one path per line (relative to the file; # comments)
            --out DIR               folder of Parquet parts; a rerun skips the ids already there
            --batch-size 16         items per forward and per part
            --devices cpu           comma list (cpu, cuda:0,cuda:1, cpu,cpu) or all: one model each
            --dtype float32         compute precision (float32, tfloat32, float16, bfloat16 on CUDA)
            --shard i/N             only the items of shard i of N (by id)
            --strict                stop with exit 1 at the first unreadable file (default: skip it)
  classify  The same for a classification checkpoint, with columns label (top-1) and score
            (its softmax probability) beside id, path and embedding
            With --queue redis://HOST:PORT the work is queued in shards for workers (below) and the
            command waits until every shard is done: --shard-size 256 items per shard,
            --attempts 3 tries per shard; --batch-size goes to the workers
  fill-mask, predict, flow, autoencode
            Task pipelines on single inputs (each has its own --help): fill [MASK]s in a text,
            classify a text or image, optical flow of two images or a video, autoencode a video
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

/** `VALUE` for every model or `NAME=VALUE` for one: the value for `name`, else the general one. */
function perModel(values: string[] | undefined, option: string, names: string[], fallback: string): Map<string, string> {
  const general = values?.filter((v) => !/^[^=]+=/.test(v) || !names.includes(v.slice(0, v.indexOf('=')))) ?? [];
  if (general.length > 1) throw new UsageError(`--${option} is given ${general.length} times for every model; give it once, or as NAME=VALUE per model`);
  const out = new Map(names.map((name) => [name, general[0] ?? fallback]));
  for (const value of values ?? []) {
    const eq = value.indexOf('=');
    if (eq > 0 && names.includes(value.slice(0, eq))) out.set(value.slice(0, eq), value.slice(eq + 1));
  }
  return out;
}

async function serveCommand(args: string[]): Promise<number> {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    values = parseArgs({
      args,
      options: {
        help: { type: 'boolean', short: 'h' },
        model: { type: 'string', multiple: true },
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string' },
        device: { type: 'string', multiple: true },
        dtype: { type: 'string', multiple: true },
        'max-text-length': { type: 'string' },
        padding: { type: 'string', default: 'dynamic' },
        'max-batch-size': { type: 'string' },
        'max-batch-tokens': { type: 'string' },
        'max-client-batch-size': { type: 'string' },
        'max-delay-ms': { type: 'string' },
        'max-queue': { type: 'string' },
        'max-body-bytes': { type: 'string' },
        'max-image-pixels': { type: 'string' },
        'max-concurrent-decodes': { type: 'string' },
        'headers-timeout-ms': { type: 'string' },
        'request-timeout-ms': { type: 'string' },
        'connection-timeout-ms': { type: 'string' },
        'keep-alive-timeout-ms': { type: 'string' },
        'shutdown-timeout-ms': { type: 'string' },
        'api-key': { type: 'string', multiple: true },
        'public-routes': { type: 'string', default: '/health,/metrics' },
      },
      strict: true,
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const flat = values as Record<string, string | boolean | undefined>;
  const models = (values.model as string[] | undefined) ?? [];
  if (models.length === 0) throw new UsageError('serve needs --model');
  required(flat, 'serve', ['port']);
  const port = positiveInt(flat, 'port', 0)!;
  const padding = values.padding as string;
  if (padding !== 'dynamic' && padding !== 'fixed') throw new UsageError(`--padding wants dynamic or fixed, got ${padding}`);
  // --model NAME=DIR|ID names a model; a bare DIR|ID is named by itself.
  const specs = models.map((arg) => {
    const m = /^([A-Za-z0-9._-][A-Za-z0-9._\/-]{0,127})=(.+)$/.exec(arg);
    return m ? { name: m[1]!, source: m[2]! } : { name: arg, source: arg };
  });
  const names = specs.map((s) => s.name);
  const duplicate = names.find((name, i) => names.indexOf(name) !== i);
  if (duplicate !== undefined) throw new UsageError(`two models are named ${duplicate}: name them --model NAME=DIR`);
  const devices = perModel(values.device as string[] | undefined, 'device', names, 'cpu');
  const dtypes = perModel(values.dtype as string[] | undefined, 'dtype', names, 'float32');
  // Keys: --api-key (repeatable) and PERCEIVER_IO_API_KEY (comma-separated), which keeps them out of `ps`.
  const flagKeys = ((values['api-key'] as string[] | undefined) ?? []).map((k) => k.trim());
  // An empty --api-key would serve without authentication while the operator believes otherwise.
  if (flagKeys.includes('')) throw new UsageError('--api-key wants a non-empty key');
  const apiKeys = [...flagKeys, ...(process.env.PERCEIVER_IO_API_KEY ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '')];
  const publicRoutes = (values['public-routes'] as string).split(',').map((r) => r.trim()).filter((r) => r !== '');
  const { AutoModel } = await import('../auto.js');
  const { serve } = await import('../serving/server.js');
  const loaded: { name: string; model: Awaited<ReturnType<typeof AutoModel.fromPretrained>> }[] = [];
  try {
    for (const spec of specs) {
      loaded.push({
        name: spec.name,
        model: await AutoModel.fromPretrained(spec.source, { device: devices.get(spec.name)!, dtype: dtypes.get(spec.name) as ComputeDType, hub: { progress: true } }),
      });
    }
  } catch (error) {
    await Promise.allSettled(loaded.map((l) => l.model.dispose()));
    throw error;
  }
  const disposeAll = () => Promise.allSettled(loaded.map((l) => l.model.dispose()));
  let server;
  try {
    server = await serve(loaded, {
      host: flat.host as string,
      port,
      awaitReady: false,
      maxTextLength: positiveInt(flat, 'max-text-length', 3),
      padding,
      maxBatchSize: positiveInt(flat, 'max-batch-size'),
      maxBatchTokens: positiveInt(flat, 'max-batch-tokens'),
      maxClientBatchSize: positiveInt(flat, 'max-client-batch-size'),
      maxDelayMs: positiveInt(flat, 'max-delay-ms'),
      maxQueue: positiveInt(flat, 'max-queue'),
      maxBodyBytes: positiveInt(flat, 'max-body-bytes'),
      maxImagePixels: positiveInt(flat, 'max-image-pixels'),
      maxConcurrentDecodes: positiveInt(flat, 'max-concurrent-decodes'),
      headersTimeoutMs: positiveInt(flat, 'headers-timeout-ms'),
      requestTimeoutMs: positiveInt(flat, 'request-timeout-ms'),
      connectionTimeoutMs: positiveInt(flat, 'connection-timeout-ms'),
      keepAliveTimeoutMs: positiveInt(flat, 'keep-alive-timeout-ms'),
      shutdownTimeoutMs: positiveInt(flat, 'shutdown-timeout-ms', 0),
      apiKeys,
      publicRoutes,
    });
  } catch (error) {
    await disposeAll();
    throw error;
  }
  // "serving CLASS[,CLASS...] on URL (...)": scripts read the URL from this line.
  const described = `${loaded.map((l) => l.model.constructor.name).join(',')} on ${server.url} (${loaded.map((l) => `${JSON.stringify(l.name)} on ${devices.get(l.name)}, ${dtypes.get(l.name)}`).join('; ')})`;
  process.stderr.write(`perceiver-io: listening on ${server.url}, warming up (/health answers 503 until ready)${apiKeys.length > 0 ? `; ${apiKeys.length} API key(s) required` : ''}\n`);
  const stopped = new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  const warm = await Promise.race([server.ready.then(() => true, (error: unknown) => error as Error), stopped.then(() => false)]);
  if (warm instanceof Error) {
    process.stderr.write(`perceiver-io: ${warm.message}\n`);
    await server.close();
    await disposeAll();
    return 1;
  }
  if (warm) {
    process.stderr.write(`perceiver-io: serving ${described}\n`);
    // Runs until a signal; then drains (requests in flight get --shutdown-timeout-ms to finish, then
    // their connections are closed) and disposes of the models. A second signal exits at once.
    await stopped;
  }
  const again = () => process.exit(1);
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  process.stderr.write('perceiver-io: draining\n');
  const { drained } = await server.close();
  process.stderr.write(drained ? 'perceiver-io: drained, exiting\n' : 'perceiver-io: shutdown timeout, connections closed, exiting\n');
  await disposeAll();
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
