/** `perceiver-io serve`: its option table and entry. */
import type { ComputeDType } from '../../modeling/perceiver_model.js';
import type { CommandSpec } from '../spec.js';
import { checkOptional } from '../../optional.js';
import { integerOption, runCommand } from '../spec.js';

export const SERVE: CommandSpec = {
  name: 'serve',
  summary: 'HTTP service: /health, /embed, /classify, /metrics; requests are batched',
  usage: ['serve --model DIR|ID --port N [options]'],
  description: `HTTP service: GET /health, POST /embed and /classify ({"text": ...} or {"image": "<base64>"}),
GET /metrics (Prometheus); requests are batched. SIGTERM/SIGINT drain, then exit.`,
  options: {
    model: { type: 'string', value: 'DIR|ID', required: true, help: 'checkpoint folder or Hugging Face Hub id' },
    host: { type: 'string', value: 'ADDRESS', default: '127.0.0.1', help: 'address to listen on' },
    port: { type: 'string', value: 'N', required: true, help: 'port (0 picks a free one)' },
    device: { type: 'string', value: 'DEVICE', default: 'cpu', help: 'where to run: cpu, cuda or cuda:N' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision' },
    'max-batch-size': { type: 'string', value: 'N', help: 'requests per forward (default 16)' },
    'max-delay-ms': { type: 'string', value: 'N', help: 'longest wait for a batch to fill (default 5)' },
    'max-queue': { type: 'string', value: 'N', help: 'requests per route queued or in flight; beyond, 429 + Retry-After\n(default 1024)' },
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

export function serveCommand(args: string[]): Promise<number> {
  return runCommand(SERVE, args, async ({ values }) => {
    const port = integerOption(values, 'port', 0)!;
    await checkOptional('fastify', 'prom-client');
    const { AutoModel } = await import('../../auto.js');
    const { serve } = await import('../../serving/server.js');
    const model = await AutoModel.fromPretrained(values.model as string, {
      device: values.device as string,
      dtype: values.dtype as ComputeDType,
      hub: { progress: true },
    });
    const server = await serve(model, {
      host: values.host as string,
      port,
      maxBatchSize: integerOption(values, 'max-batch-size'),
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
    });
    process.stderr.write(`perceiver-io: serving ${model.constructor.name} on ${server.url}\n`);
    // Runs until a signal; then drains (requests in flight get --shutdown-timeout-ms to finish, then
    // their connections are closed) and disposes of the model. A second signal exits at once.
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    const again = () => process.exit(1);
    process.once('SIGINT', again);
    process.once('SIGTERM', again);
    process.stderr.write('perceiver-io: draining\n');
    const { drained } = await server.close();
    process.stderr.write(drained ? 'perceiver-io: drained, exiting\n' : 'perceiver-io: shutdown timeout, connections closed, exiting\n');
    await model.dispose();
    return 0;
  });
}
