/**
 * The optional packages: the service (fastify, prom-client), the queue (bullmq, ioredis), Parquet
 * output (apache-arrow, parquet-wasm), LanceDB output (@lancedb/lancedb), s3:// inputs
 * (@aws-sdk/client-s3) and audio decoding (audio-decode). The library's core installs
 * and loads without them; each feature loads its packages here when first used, and a missing one
 * is a MissingDependencyError naming the package, the feature and the install command.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MissingDependencyError } from './errors.js';
import { packageRoot } from './native/binding.js';

export type OptionalPackage = 'fastify' | 'prom-client' | 'bullmq' | 'ioredis' | 'apache-arrow' | 'parquet-wasm' | '@lancedb/lancedb' | '@aws-sdk/client-s3' | 'audio-decode';

/** What each optional package is for, as the error says it. */
export const OPTIONAL_FEATURES: Readonly<Record<OptionalPackage, string>> = Object.freeze({
  fastify: 'The HTTP service (serve, perceiver-io serve)',
  'prom-client': 'The HTTP service (serve, perceiver-io serve)',
  bullmq: 'The queue (enqueueAndWait, startShardWorker, perceiver-io worker, embed|classify --queue)',
  ioredis: 'The queue (enqueueAndWait, startShardWorker, perceiver-io worker, embed|classify --queue)',
  'apache-arrow': 'Parquet output (runEmbedJob, readEmbeddings, perceiver-io embed|classify)',
  'parquet-wasm': 'Parquet output (runEmbedJob, readEmbeddings, perceiver-io embed|classify)',
  '@lancedb/lancedb': 'LanceDB output (runEmbedJob lanceTable, perceiver-io embed|classify --out lancedb://DIR/TABLE, perceiver-io search)',
  '@aws-sdk/client-s3': 's3:// inputs and manifests (RemoteReader, perceiver-io embed|classify|worker)',
  'audio-decode': 'Decoding audio files',
});

/** `npm install NAME@RANGE`, with the range this package was tested with (package.json's optionalDependencies). */
function installCommand(name: OptionalPackage): string {
  let range: string | undefined;
  try {
    range = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).optionalDependencies?.[name];
  } catch {
    // No readable package.json: the name alone still installs a version.
  }
  return `npm install ${name}${typeof range === 'string' ? `@"${range}"` : ''}`;
}

/** Whether `error` says that `name` itself (not something it imports) cannot be found. */
function isNotFound(error: unknown, name: string): boolean {
  const e = error as NodeJS.ErrnoException | undefined;
  return (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && typeof e.message === 'string' && e.message.includes(`'${name}'`);
}

/** Imports an optional package; MissingDependencyError when it is not installed. */
export async function requireOptional<T>(name: OptionalPackage): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (error) {
    if (isNotFound(error, name)) throw new MissingDependencyError(name, OPTIONAL_FEATURES[name], installCommand(name), { cause: error });
    throw error;
  }
}

/** Loads the packages a command needs before it starts any work (a model load, a download). */
export async function checkOptional(...names: OptionalPackage[]): Promise<void> {
  await Promise.all(names.map((name) => requireOptional(name)));
}
