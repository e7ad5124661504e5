/** `perceiver-io serve`: its option table and entry. */
import type { ComputeDType } from '../../modeling/perceiver_model.js';
import type { CommandSpec, OptionValues } from '../spec.js';
import { checkOptional } from '../../optional.js';
import { integerOption, runCommand } from '../spec.js';
import { UsageError } from '../usage.js';

export const SERVE: CommandSpec = {
  name: 'serve',
  summary: 'HTTP service: OpenAI /v1/embeddings, TEI /embed /predict /info, /health, /metrics',
  usage: ['serve --model [NAME=]DIR|ID [--model ...] --port N [options]'],
  description: `HTTP service: OpenAI POST /v1/embeddings and GET /v1/models; text-embeddings-inference
POST /embed ({"inputs"}), POST /predict, GET /info; POST /embed and /classify ({"text"} or
{"image": "<base64>"}); GET /health (503 until warm), GET /metrics (Prometheus). Requests are
batched; several models are served by name (the body's "model" or /models/NAME/...).
SIGTERM/SIGINT drain, then exit.`,
  options: {
    model: {
      type: 'string',
      value: '[NAME=]DIR|ID',
      multiple: true,
      required: true,
      help: 'checkpoint folder or Hugging Face Hub id, named by itself; NAME=DIR|ID names it;\nrepeat for several models (the first is the default)',
    },
    host: { type: 'string', value: 'ADDRESS', default: '127.0.0.1', help: 'address to listen on' },
    port: { type: 'string', value: 'N', required: true, help: 'port (0 picks a free one)' },
    device: { type: 'string', value: '[NAME=]DEVICE', multiple: true, default: 'cpu', help: "every model's device (cpu, cuda, cuda:N); NAME=cuda:0 for one model" },
    dtype: { type: 'string', value: '[NAME=]DTYPE', multiple: true, default: 'float32', help: "every model's compute precision; NAME=bfloat16 for one model" },
    'api-key': { type: 'string', value: 'KEY', multiple: true, help: 'require "Authorization: Bearer KEY" on inference routes (also\nPERCEIVER_IO_API_KEY, comma-separated; default: no keys)' },
    'public-routes': { type: 'string', value: 'LIST', default: '/health,/metrics', help: "routes open without a key ('' for none)" },
    'max-text-length': { type: 'string', value: 'N', help: "longest text in tokens (default min(max_position_embeddings, 2048));\nlonger inputs get 413 unless \"truncate\": true" },
    padding: { type: 'string', value: 'dynamic|fixed', default: 'dynamic', help: 'dynamic: pad each text to a power of two >= its length; fixed: pad\nevery text to --max-text-length' },
    'max-batch-size': { type: 'string', value: 'N', help: 'items per forward (default 16)' },
    'max-batch-tokens': { type: 'string', value: 'N', help: 'tokens (items x padded length) per text forward (default 16384)' },
    'max-client-batch-size': { type: 'string', value: 'N', help: 'inputs per request; more get 413 (default 32)' },
    'max-delay-ms': { type: 'string', value: 'N', help: 'longest an item waits for others to batch with (default 5)' },
    'max-queue': { type: 'string', value: 'N', help: 'requests admitted per route, and items queued or in flight per route\nand model; beyond, 429 + Retry-After (default 1024)' },
    'max-body-bytes': { type: 'string', value: 'N', help: 'larger bodies get 413 (default 1048576 text, 16777216 image models)' },
    'max-image-pixels': { type: 'string', value: 'N', help: 'images declaring more pixels get 413, undecoded (default 50000000)' },
    'max-concurrent-decodes': { type: 'string', value: 'N', help: 'images decoded at once (default: cores, 1 to 4)' },
    'headers-timeout-ms': { type: 'string', value: 'N', help: 'request headers received within (default 10000)' },
    'request-timeout-ms': { type: 'string', value: 'N', help: 'whole request received within (default 30000)' },
    'connection-timeout-ms': { type: 'string', value: 'N', help: 'idle socket closed after (default 60000)' },
    'keep-alive-timeout-ms': { type: 'string', value: 'N', help: 'idle keep-alive connection closed after (default 5000)' },
    'shutdown-timeout-ms': { type: 'string', value: 'N', help: 'on SIGTERM/SIGINT: drain this long, then close connections\n(default 10000)' },
  },
};

/** A per-model option: one VALUE for every model, and NAME=VALUE for one. */
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

function listOf(values: OptionValues, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

export function serveCommand(args: string[]): Promise<number> {
  return runCommand(SERVE, args, async ({ values, given }) => {
    const port = integerOption(values, 'port', 0)!;
    const padding = values.padding as string;
    if (padding !== 'dynamic' && padding !== 'fixed') throw new UsageError(`--padding wants dynamic or fixed, got ${padding}`);
    // --model NAME=DIR|ID names a model; a bare DIR|ID is named by itself.
    const specs = listOf(values, 'model').map((arg) => {
      const m = /^([A-Za-z0-9._-][A-Za-z0-9._\/-]{0,127})=(.+)$/.exec(arg);
      return m ? { name: m[1]!, source: m[2]! } : { name: arg, source: arg };
    });
    const names = specs.map((s) => s.name);
    const duplicate = names.find((name, i) => names.indexOf(name) !== i);
    if (duplicate !== undefined) throw new UsageError(`two models are named ${duplicate}: name them --model NAME=DIR`);
    const devices = perModel(given.has('device') ? listOf(values, 'device') : undefined, 'device', names, 'cpu');
    const dtypes = perModel(given.has('dtype') ? listOf(values, 'dtype') : undefined, 'dtype', names, 'float32');
    // Keys: --api-key (repeatable) and PERCEIVER_IO_API_KEY (comma-separated), which keeps them out of `ps`.
    const flagKeys = listOf(values, 'api-key').map((k) => k.trim());
    // An empty --api-key would serve without authentication while the operator believes otherwise.
    if (flagKeys.includes('')) throw new UsageError('--api-key wants a non-empty key');
    const apiKeys = [...flagKeys, ...(process.env.PERCEIVER_IO_API_KEY ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '')];
    const publicRoutes = (values['public-routes'] as string).split(',').map((r) => r.trim()).filter((r) => r !== '');
    await checkOptional('fastify', 'prom-client');
    const { AutoModel } = await import('../../auto.js');
    const { serve } = await import('../../serving/server.js');
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
        host: values.host as string,
        port,
        awaitReady: false,
        maxTextLength: integerOption(values, 'max-text-length', 3),
        padding,
        maxBatchSize: integerOption(values, 'max-batch-size'),
        maxBatchTokens: integerOption(values, 'max-batch-tokens'),
        maxClientBatchSize: integerOption(values, 'max-client-batch-size'),
        maxDelayMs: integerOption(values, 'max-delay-ms'),
        maxQueue: integerOption(values, 'max-queue'),
        maxBodyBytes: integerOption(values, 'max-body-bytes'),
        maxImagePixels: integerOption(values, 'max-image-pixels'),
        maxConcurrentDecodes: integerOption(values, 'max-concurrent-decodes'),
        headersTimeoutMs: integerOption(values, 'headers-timeout-ms'),
        requestTimeoutMs: integerOption(values, 'request-timeout-ms'),
        connectionTimeoutMs: integerOption(values, 'connection-timeout-ms'),
        keepAliveTimeoutMs: integerOption(values, 'keep-alive-timeout-ms'),
        shutdownTimeoutMs: integerOption(values, 'shutdown-timeout-ms', 0),
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
  });
}
